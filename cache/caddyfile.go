package cache

import (
	"math/big"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/dustin/go-humanize"

	"github.com/f06cdff9/caddy-affinity-cache/internal/placeholder"
)

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	response_cache [<matcher>] {
//	    max_size       <size>      # total bytes held, e.g. 256MiB
//	    max_item_size  <size>      # larger responses are streamed, not stored
//	    key            <template>  # placeholders; "scheme://host:port " is always prepended
//	    default_ttl    <duration>  # freshness when the response gives none (see Config.DefaultTTL)
//	    heuristic_max  <duration>|off  # longest heuristic (Last-Modified) freshness; default 24h; off: none
//	    stale_while_revalidate <duration>|off  # default and cap; off: never
//	    stale_if_error         <duration>|off
//	    cache_name     <name>      # the identifier in Cache-Status
//	    coalesce       on|off      # default on
//	    min_uses       auto|<n>    # store on the n-th miss of a URL; default auto
//	    targeted_field <field>|off # default CDN-Cache-Control
//	    status_key     on|off      # add key= to Cache-Status; default off
//	}
//
// The matcher is handled by the Caddyfile adapter before this runs.
// Every option may appear once.
func (c *Config) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume directive name
	if d.NextArg() {
		return d.Errf("response_cache takes no arguments besides a matcher, got '%s'; put options in a block", d.Val())
	}
	seen := make(map[string]bool)
	var itemSizeAt caddyfile.Token // where max_item_size was given, for the check against max_size
	prev := ""
	for d.NextBlock(0) {
		opt := d.Val()
		if opt == "{" && prev != "" {
			return d.Errf("%s takes no block", prev)
		}
		prev = opt
		if seen[opt] {
			return d.Errf("option '%s' given more than once", opt)
		}
		seen[opt] = true
		switch opt {
		case "max_size":
			n, err := parseSize(d)
			if err != nil {
				return err
			}
			if err := checkMaxSize(n); err != nil {
				return d.Errf("%v", err)
			}
			c.MaxSize = n
		case "max_item_size":
			n, err := parseSize(d)
			if err != nil {
				return err
			}
			if n == 0 {
				return d.Errf("max_item_size must be at least 1 byte, got '%s'", d.Val())
			}
			c.MaxItemSize = n
			itemSizeAt = d.Token()
		case "key":
			arg, err := singleArg(d)
			if err != nil {
				return err
			}
			if err := checkKey(placeholder.Expand(arg)); err != nil {
				return d.Errf("key: %v", err)
			}
			c.Key = arg
		case "default_ttl":
			dur, err := parseDuration(d)
			if err != nil {
				return err
			}
			c.DefaultTTL = dur
		case "heuristic_max":
			dur, err := parseDurationOrOff(d, "the heuristic", ", 24h", "for no heuristic freshness")
			if err != nil {
				return err
			}
			c.HeuristicMax = dur
		case "stale_while_revalidate":
			dur, err := parseStaleWindow(d)
			if err != nil {
				return err
			}
			c.StaleWhileRevalidate = dur
		case "stale_if_error":
			dur, err := parseStaleWindow(d)
			if err != nil {
				return err
			}
			c.StaleIfError = dur
		case "cache_name":
			arg, err := singleArg(d)
			if err != nil {
				return err
			}
			if !isToken(arg) {
				return d.Errf("cache_name must be a structured-field token (a letter or *, then letters, digits or !#$%%&'*+-.^_`|~:/), got '%s'", arg)
			}
			c.CacheName = arg
		case "coalesce":
			arg, err := singleArg(d)
			if err != nil {
				return err
			}
			on, err := parseOnOff(d, "coalesce", arg)
			if err != nil {
				return err
			}
			c.Coalesce = &on
		case "min_uses":
			arg, err := singleArg(d)
			if err != nil {
				return err
			}
			if strings.EqualFold(arg, "auto") { // in any case, as on and off are
				c.MinUses = 0
				break
			}
			n, err := strconv.Atoi(arg)
			if err != nil || n < 1 || n > maxMinUses || arg[0] == '+' {
				return d.Errf("min_uses must be auto or a whole number from 1 to %d, got '%s'", maxMinUses, arg)
			}
			c.MinUses = n
		case "targeted_field":
			arg, err := singleArg(d)
			if err != nil {
				return err
			}
			if strings.EqualFold(arg, "off") {
				arg = "-"
			} else if !isFieldName(arg) {
				return d.Errf("targeted_field must be a header field name or off, got '%s'", arg)
			} else if err := checkTargetedField(arg); err != nil {
				return d.Errf("%v", err)
			}
			c.TargetedField = arg
		case "status_key":
			// No bare form: Caddy expands an unset {$VAR} to nothing before
			// it reads the tokens, and `status_key {$SHOW_KEYS}` must not
			// turn keys (which may hold a session cookie) on.
			if !d.NextArg() {
				return d.Err("status_key needs on or off (an unset {$VAR} leaves none; keys are off by default)")
			}
			on, err := parseOnOff(d, "status_key", d.Val())
			if err != nil {
				return err
			}
			if d.NextArg() {
				return d.Errf("status_key takes one value (on or off), got another: '%s'", d.Val())
			}
			c.StatusKey = on
		default:
			return d.Errf("unrecognized option '%s'", opt)
		}
	}
	if c.MaxSize == 0 && c.MaxItemSize > defaultMaxSize {
		return errAt(itemSizeAt, "max_item_size %s must not be larger than max_size (%s, the default)", SizeString(c.MaxItemSize), SizeString(defaultMaxSize))
	}
	if c.MaxSize > 0 && c.MaxItemSize > c.MaxSize {
		return errAt(itemSizeAt, "max_item_size %s must not be larger than max_size %s", SizeString(c.MaxItemSize), SizeString(c.MaxSize))
	}
	return nil
}

// errAt is an error at tok, with its file, line and import chain, as
// Dispenser.Errf gives one at the current token: for a check that can be
// made only once the block has been read.
func errAt(tok caddyfile.Token, format string, args ...any) error {
	d := caddyfile.NewDispenser([]caddyfile.Token{tok})
	d.Next()
	return d.Errf(format, args...)
}

// singleArg returns the one argument of the current option.
func singleArg(d *caddyfile.Dispenser) (string, error) {
	opt := d.Val()
	if !d.NextArg() {
		return "", d.Errf("%s needs a value (an unset {$VAR} leaves none)", opt)
	}
	val := d.Val()
	if d.NextArg() {
		return "", d.Errf("%s takes one value, got another: '%s'", opt, d.Val())
	}
	return val, nil
}

func parseSize(d *caddyfile.Dispenser) (int64, error) {
	opt := d.Val()
	arg, err := singleArg(d)
	if err != nil {
		return 0, err
	}
	if strings.HasPrefix(arg, "-") {
		return 0, d.Errf("%s must be positive, got '%s'", opt, arg)
	}
	if strings.Contains(arg, ",") && !thousands.MatchString(arg) {
		// humanize drops commas wherever they are: 1,5GiB would be 15GiB.
		return 0, d.Errf("%s: '%s' has a comma that does not separate thousands; write a fraction with a point (1.5GiB)", opt, arg)
	}
	unit := strings.TrimLeft(arg, "0123456789., ")
	n, err := humanize.ParseBytes(arg)
	if err != nil {
		if exact, ok := bigBytes(arg, unit); ok {
			if exact.Cmp(new(big.Int).SetUint64(maxMaxSize)) > 0 {
				return 0, tooLarge(d, opt, arg) // more bytes than 64 bits hold
			}
			if _, huge := hugeUnits[strings.ToLower(strings.TrimSpace(unit))]; huge {
				return exact.Int64(), nil // a few GB written in zettabytes
			}
		}
		return 0, d.Errf("%s: invalid size '%s' (use e.g. 64MiB or 1048576)", opt, arg)
	}
	if strings.Contains(arg, ".") {
		// humanize multiplies in floating point and drops what is left:
		// 4.1MB came out a byte short, 0.0001GiB a fraction of a byte
		// less than what was written.
		exact, whole := wholeBytes(arg, unit)
		if !whole {
			return 0, d.Errf("%s: '%s' is not a whole number of bytes", opt, arg)
		}
		n = exact
	}
	if n > maxMaxSize {
		return 0, tooLarge(d, opt, arg)
	}
	return int64(n), nil
}

// tooLarge is the error for a size past max_size's limit (and so
// max_item_size's).
func tooLarge(d *caddyfile.Dispenser, opt, arg string) error {
	if opt == "max_size" {
		return d.Errf("max_size must be at most 512GiB, got '%s'; run more cache nodes behind lb_policy affinity to hold more", arg)
	}
	return d.Errf("%s must be at most 512GiB (and at most max_size), got '%s'", opt, arg)
}

// thousands matches a size whose commas separate groups of three digits
// (2,500.5MiB, 1,048,576), the only commas a size may have; not after a
// leading 0 (0,500MiB is a decimal comma).
var thousands = regexp.MustCompile(`^[1-9][0-9]{0,2}(,[0-9]{3})+(\.[0-9]+)? *[A-Za-z]*$`)

// wholeBytes returns the bytes arg, a number with a fraction and a unit
// (0.5KiB, 4.1MB), stands for, computed exactly, and whether they are a
// whole number (0.0001GiB is not).
func wholeBytes(arg, unit string) (uint64, bool) {
	n, ok := bigBytes(arg, unit)
	if !ok || !n.IsUint64() {
		return 0, false
	}
	return n.Uint64(), true
}

// bigBytes returns the whole number of bytes arg, a number and a unit,
// stands for, computed exactly, or false when it is no whole number (or
// not a number and a unit humanize knows).
func bigBytes(arg, unit string) (*big.Int, bool) {
	num := strings.ReplaceAll(strings.TrimSpace(strings.TrimSuffix(arg, unit)), ",", "")
	r, ok := new(big.Rat).SetString(num)
	if !ok || r.Sign() < 0 || strings.ContainsAny(num, "eE/") {
		return nil, false
	}
	var per big.Int
	if n, err := humanize.ParseBytes("1" + unit); err == nil {
		per.SetUint64(n)
	} else if huge, ok := hugeUnits[strings.ToLower(strings.TrimSpace(unit))]; ok {
		per.Exp(big.NewInt(huge.base), big.NewInt(huge.exp), nil)
	} else {
		return nil, false
	}
	r.Mul(r, new(big.Rat).SetInt(&per))
	if !r.IsInt() {
		return nil, false
	}
	return r.Num(), true
}

// hugeUnits are the units humanize knows but cannot take, as one of them
// is past 64 bits: zetta- and yottabytes, as base^exp bytes.
var hugeUnits = map[string]struct{ base, exp int64 }{
	"z": {10, 21}, "zb": {10, 21}, "zi": {2, 70}, "zib": {2, 70},
	"y": {10, 24}, "yb": {10, 24}, "yi": {2, 80}, "yib": {2, 80},
}

func parseDuration(d *caddyfile.Dispenser) (caddy.Duration, error) {
	opt := d.Val()
	arg, err := singleArg(d)
	if err != nil {
		return 0, err
	}
	return durationArg(d, opt, arg)
}

// durationArg parses arg, the argument of the option opt, as a duration
// that is not negative.
func durationArg(d *caddyfile.Dispenser, opt, arg string) (caddy.Duration, error) {
	dur, err := caddy.ParseDuration(arg)
	if err != nil && tooLong(arg) || err == nil && dur > maxDuration {
		return 0, d.Errf("%s: duration '%s' is too long: Go's durations end at about 292 years (2562047h)", opt, arg)
	}
	if err != nil {
		return 0, d.Errf("%s: invalid duration '%s' (use e.g. 30s, 5m, 1d): %v", opt, arg, err)
	}
	if dur < 0 {
		return 0, d.Errf("%s must not be negative, got '%s'", opt, arg)
	}
	return caddy.Duration(dur), nil
}

// parseDurationOrOff parses the argument of an option that takes a
// positive duration or off (durationOff in JSON): heuristic_max (off: no
// heuristic freshness), stale_while_revalidate and stale_if_error (off:
// never serve stale that way, whatever the response or request asks).
// Zero is refused: in JSON it is the default, which a 0 written here
// would not read as; what names what off turns off, byDefault what 0
// means, and offMeans what off does, for the error.
func parseDurationOrOff(d *caddyfile.Dispenser, what, byDefault, offMeans string) (caddy.Duration, error) {
	opt := d.Val()
	arg, err := singleArg(d)
	if err != nil {
		return 0, err
	}
	if strings.EqualFold(arg, "off") {
		return durationOff, nil
	}
	dur, err := durationArg(d, opt, arg)
	if err == nil && dur == 0 {
		return 0, d.Errf("%s %s would not turn %s off (0 is the default%s); write '%s off' %s, or a positive duration to cap it", opt, arg, what, byDefault, opt, offMeans)
	}
	return dur, err
}

// parseStaleWindow parses the argument of stale_while_revalidate or
// stale_if_error (see parseDurationOrOff).
func parseStaleWindow(d *caddyfile.Dispenser) (caddy.Duration, error) {
	return parseDurationOrOff(d, "it", ": the response's own window, uncapped", "to never serve stale that way")
}

// maxDuration is the longest duration a Caddyfile option takes: whole
// hours short of Go's last one, 2^63-1 ns, which the adapted JSON could
// not give back (Caddy carries it through a float64, which rounds it up
// to 2^63, past int64).
const maxDuration = 2562047 * time.Hour

// durationOff is the JSON value of heuristic_max, stale_while_revalidate
// or stale_if_error off (any negative value is).
const durationOff = caddy.Duration(-1)

// tooLong reports whether arg is a well-formed duration, a number and a
// unit, that overflows time.Duration.
func tooLong(arg string) bool {
	num := strings.TrimRight(arg, "abcdefghijklmnopqrstuvwxyzµ")
	unit := arg[len(num):]
	switch unit {
	case "ns", "us", "µs", "ms", "s", "m", "h", "d":
	default:
		return false
	}
	f, err := strconv.ParseFloat(num, 64)
	return err == nil && f > 0 && !strings.ContainsAny(num, "eE+-xXpP_")
}

// parseOnOff reads on|off (or true|false), in any case, as targeted_field's
// off and the affinity cookie's options are.
func parseOnOff(d *caddyfile.Dispenser, opt, arg string) (bool, error) {
	switch strings.ToLower(arg) {
	case "on", "true":
		return true, nil
	case "off", "false":
		return false, nil
	}
	return false, d.Errf("%s must be on or off, got '%s'", opt, arg)
}
