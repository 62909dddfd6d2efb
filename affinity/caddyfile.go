package affinity

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/f06cdff9/caddy-affinity-cache/internal/placeholder"
)

// UnmarshalCaddyfile sets up the policy from Caddyfile tokens. Syntax:
//
//	lb_policy affinity [<key>...] {
//		key        <placeholder>...
//		algorithm  rendezvous|ring|maglev|compat
//		weight     <dial> <n>
//		bound      <factor>
//		bound_floor <requests>
//		cookie     [<name>] {
//			secret     <secret>
//			previous_secrets <secret>...
//			max_age    <duration>
//			path       <path>
//			domain     <domain>
//			secure     [on|off]
//			http_only  [on|off]
//			same_site  lax|strict|none
//		}
//		fallback   <policy> [<args>...] [{ ... }]
//	}
//
// Keys given inline and with `key` (which may repeat) are tried in the
// order written. `weight` repeats, once per upstream dial address. The
// other options may appear once each; `cookie` and `fallback` exclude each
// other, as do `algorithm compat` and `weight`.
//
// Errors begin with "lb_policy affinity:", so that they are not taken for
// reverse_proxy's own.
func (s *AffinitySelection) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	err := s.unmarshalCaddyfile(d)
	if err != nil && !strings.HasPrefix(err.Error(), errPrefix) { // not again for an affinity fallback's
		err = fmt.Errorf("%s%w", errPrefix, err)
	}
	return err
}

const errPrefix = "lb_policy affinity: "

func (s *AffinitySelection) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume policy name
	if err := s.addKeys(d, d.RemainingArgs()); err != nil {
		return err
	}

	seen := make(map[string]bool)
	prev := ""
	var floorAt *caddyfile.Dispenser // at bound_floor, for an error found after the block
	for d.NextBlock(0) {
		opt := d.Val()
		if opt == "{" && prev != "" {
			return d.Errf("%s takes no block", prev)
		}
		prev = opt
		switch opt {
		case "algorithm", "bound", "bound_floor", "cookie", "fallback":
			if seen[opt] {
				return d.Errf("%s already specified", opt)
			}
			seen[opt] = true
		}
		switch opt {
		case "key":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return argsErr(d, "key <template>...")
			}
			if err := s.addKeys(d, args); err != nil {
				return err
			}

		case "algorithm":
			if !d.NextArg() {
				return argsErr(d, "algorithm rendezvous|maglev|ring|compat")
			}
			// Keywords are case-insensitive here, as the others are
			// (on/off, same_site Lax); the JSON holds the canonical name.
			alg, err := ParseAlgorithm(strings.ToLower(d.Val()))
			if err != nil {
				_, err = ParseAlgorithm(d.Val()) // the message quotes it as written
				return d.Errf("algorithm: %v", err)
			}
			if alg == Compat && len(s.Weights) > 0 {
				return d.Err("algorithm compat does not support weights")
			}
			if d.NextArg() {
				return argsErr(d, "algorithm rendezvous|maglev|ring|compat")
			}
			s.Algorithm = string(alg)
			if alg == Ring {
				if err := ringWeights(s.Weights); err != nil {
					return d.Err(err.Error())
				}
			}

		case "weight":
			args := d.RemainingArgs()
			if len(args) == 1 {
				return d.Errf("weight needs an upstream and a number, got only '%s' (an unset {$VAR} leaves nothing); syntax: weight <upstream> <n>", args[0])
			}
			if len(args) != 2 {
				return argsErr(d, "weight <upstream> <n>")
			}
			if strings.TrimSpace(args[0]) == "" {
				return d.Errf("weight needs an upstream, got '%s' (an unset {$VAR}?): name the upstream as on the reverse_proxy line", args[0])
			}
			dial, ns := weightDial(args[0]), args[1]
			n, err := strconv.Atoi(ns)
			if err != nil || n < 1 || n > MaxWeight {
				return d.Errf("invalid weight '%s' for %s: must be an integer from 1 to %d", ns, dial, MaxWeight)
			}
			if _, dup := s.Weights[dial]; dup {
				return d.Errf("weight for %s already specified", dial)
			}
			if s.Algorithm == string(Compat) {
				return d.Err("algorithm compat does not support weights")
			}
			if s.Weights == nil {
				s.Weights = make(map[string]int)
			}
			s.Weights[dial] = n
			if s.Algorithm == string(Ring) {
				if err := ringWeights(s.Weights); err != nil {
					return d.Err(err.Error())
				}
			}

		case "bound":
			if !d.NextArg() {
				return argsErr(d, "bound <factor>")
			}
			f, err := strconv.ParseFloat(d.Val(), 64)
			if err != nil || !isDecimal(d.Val()) {
				return d.Errf("invalid bound '%s': must be a plain decimal number >= 1, such as 1.25", d.Val())
			}
			if err := checkBound(f); err != nil || f == 0 {
				return d.Errf("invalid bound '%s': must be a number >= 1", d.Val())
			}
			if d.NextArg() {
				return argsErr(d, "bound <factor>")
			}
			s.Bound = f

		case "bound_floor":
			if !d.NextArg() {
				return argsErr(d, "bound_floor <requests>")
			}
			n, err := strconv.Atoi(d.Val())
			if err != nil || n < 1 || n > maxBoundFloor {
				return d.Errf("invalid bound_floor '%s': must be a whole number from 1 to %d, such as 8", d.Val(), maxBoundFloor)
			}
			if d.NextArg() {
				return argsErr(d, "bound_floor <requests>")
			}
			s.BoundFloor = n
			floorAt = caddyfile.NewDispenser([]caddyfile.Token{d.Token()})
			floorAt.Next()

		case "cookie":
			if seen["fallback"] {
				return d.Err("cookie and fallback exclude each other: with a cookie, every request has a key")
			}
			at := caddyfile.NewDispenser([]caddyfile.Token{d.Token()})
			at.Next()
			c, err := unmarshalCookie(d)
			if err != nil {
				return err
			}
			for _, k := range s.Keys {
				if err := c.notKeyedBy(placeholder.Expand(k)); err != nil {
					return at.Err(err.Error())
				}
			}
			s.Cookie = c

		case "fallback":
			if seen["cookie"] {
				return d.Err("cookie and fallback exclude each other: with a cookie, every request has a key")
			}
			if !d.NextArg() {
				return argsErr(d, "fallback <policy> [{ ... }]")
			}
			raw, err := loadFallbackPolicy(d)
			if err != nil {
				return err
			}
			s.FallbackRaw = raw

		default:
			return d.Errf("unrecognized option '%s'", opt)
		}
	}
	if err := checkBoundFloor(s.BoundFloor, s.Bound); err != nil {
		if floorAt == nil {
			floorAt = d
		}
		return floorAt.Errf("%v", err) // the bound_floor line, not the block's end
	}
	return nil
}

// addKeys adds keys, reporting a bad one at its line.
func (s *AffinitySelection) addKeys(d *caddyfile.Dispenser, keys []string) error {
	for _, k := range keys {
		expanded := placeholder.Expand(k)
		if err := checkKey(expanded); err != nil {
			return d.Errf("key: %v", err)
		}
		if s.Cookie != nil {
			if err := s.Cookie.notKeyedBy(expanded); err != nil {
				return d.Err(err.Error())
			}
		}
		// Compare as Validate does, shorthands expanded and header names
		// canonical: {client_ip} and {http.vars.client_ip} are one key,
		// as are {header.x-user} and {header.X-User}.
		same := placeholder.Canonical(k)
		if i := slices.IndexFunc(s.Keys, func(have string) bool { return placeholder.Canonical(have) == same }); i >= 0 {
			return d.Err(keyTwice(k, s.Keys[i]))
		}
		s.Keys = append(s.Keys, k)
	}
	return nil
}

// unmarshalCookie parses `cookie [<name>] { ... }`; d is on `cookie`.
func unmarshalCookie(d *caddyfile.Dispenser) (*CookieConfig, error) {
	c := new(CookieConfig)
	// `cookie`'s token, to report what the block lacks or a conflict in
	// it at that line, with the import chain as Caddy gives it.
	at := caddyfile.NewDispenser([]caddyfile.Token{d.Token()})
	at.Next()
	args := d.RemainingArgs()
	switch len(args) {
	case 0:
	case 1:
		c.Name = args[0]
		if c.Name == "" {
			return nil, d.Err("cookie name must not be empty (leave it out for the default, " + defaultCookieName + ")")
		}
		if err := checkCookieField("name", c.Name); err != nil {
			return nil, d.Errf("%v", err)
		}
	default:
		return nil, argsErr(d, "cookie [<name>] { ... }")
	}
	seen := make(map[string]bool)
	prev := ""
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if opt == "{" && prev != "" {
			return nil, d.Errf("cookie %s takes no block", prev)
		}
		prev = opt
		if seen[opt] {
			return nil, d.Errf("cookie %s already specified", opt)
		}
		seen[opt] = true
		switch opt {
		case "previous_secrets":
			c.PreviousSecrets = d.RemainingArgs()
			if len(c.PreviousSecrets) == 0 {
				return nil, argsErr(d, "cookie previous_secrets <secret>...")
			}
			for i, p := range c.PreviousSecrets {
				if err := checkSecret(fmt.Sprintf("previous_secrets[%d]", i), p); err != nil {
					return nil, d.Err(err.Error())
				}
			}
		case "secret", "path", "domain", "same_site", "max_age":
			if !d.NextArg() {
				if opt == "secret" {
					return nil, d.Err("cookie secret needs a value (an unset {$VAR} leaves none)")
				}
				return nil, argsErr(d, "cookie "+opt+" <value>")
			}
			v := d.Val()
			if d.NextArg() {
				return nil, argsErr(d, "cookie "+opt+" <value>")
			}
			if v == "" && opt == "secret" {
				return nil, d.Err("cookie secret must not be empty")
			}
			if v == "" {
				return nil, d.Errf("cookie %s must not be empty (leave the option out for its default)", opt)
			}
			switch opt {
			case "secret":
				if err := checkSecret("secret", v); err != nil {
					return nil, d.Err(err.Error())
				}
				c.Secret = v
			case "path":
				if err := checkCookieField(opt, v); err != nil {
					return nil, d.Errf("%v", err)
				}
				c.Path = v
			case "domain":
				if err := checkCookieField(opt, v); err != nil {
					return nil, d.Errf("%v", err)
				}
				c.Domain = v
			case "same_site":
				if _, err := parseSameSite(v); err != nil {
					return nil, d.Errf("cookie %v", err)
				}
				c.SameSite = v
			case "max_age":
				dur, err := caddy.ParseDuration(v)
				if err != nil {
					return nil, d.Errf("invalid cookie max_age '%s': want a duration such as 720h or 30d, at most 2562047h", v)
				}
				if dur < 0 {
					return nil, d.Errf("invalid cookie max_age '%s': must not be negative", v)
				}
				if dur == 0 {
					// In JSON 0 is the default; here it would read as
					// Max-Age=0, which browsers take as "delete now".
					return nil, d.Errf("invalid cookie max_age '%s': leave max_age out for a cookie that lasts as long as the browser session (the default), or give a duration such as 720h", v)
				}
				if dur > maxDuration {
					return nil, d.Errf("invalid cookie max_age '%s': must be at most 2562047h (Go's durations end there)", v)
				}
				c.MaxAge = caddy.Duration(dur)
			}

		case "secure", "http_only":
			on := true
			if d.NextArg() {
				switch strings.ToLower(d.Val()) { // as same_site's values
				case "on", "true":
				case "off", "false":
					on = false
				default:
					return nil, d.Errf("invalid cookie %s '%s': want on or off", opt, d.Val())
				}
				if d.NextArg() {
					return nil, argsErr(d, "cookie "+opt+" [on|off]")
				}
			}
			if opt == "secure" {
				c.Secure = &on
			} else {
				c.HTTPOnly = &on
			}

		default:
			return nil, d.Errf("unrecognized cookie option '%s'", opt)
		}
	}
	if c.Secret == "" {
		return nil, at.Err("cookie requires a secret (add `secret <text or placeholder>` to its block)")
	}
	if err := c.validate(); err != nil {
		return nil, at.WrapErr(err) // a conflict within the block
	}
	return c, nil
}

// loadFallbackPolicy parses the fallback policy named by the current token,
// with its arguments and block, as Caddy's own hash policies do.
func loadFallbackPolicy(d *caddyfile.Dispenser) (json.RawMessage, error) {
	name := d.Val()
	modID := "http.reverse_proxy.selection_policies." + name
	mod, err := caddy.GetModule(modID)
	if err != nil {
		return nil, d.Errf("getting module named '%s': %v", modID, err)
	}
	unm, ok := mod.New().(caddyfile.Unmarshaler)
	if !ok {
		return nil, d.Errf("module %s is not a Caddyfile unmarshaler", modID)
	}
	// As caddyfile.UnmarshalModule, but what the policy leaves unread (a
	// block that Caddy's random or first ignore) is an error, not dropped.
	seg := caddyfile.NewDispenser(withEmptyBlock(d, d.NextSegment()))
	if err := unm.UnmarshalCaddyfile(seg); err != nil {
		// Named, so that the fallback's errors ("invalid weight value")
		// are not taken for affinity's own options.
		return nil, fmt.Errorf("fallback %s: %s", name, strings.TrimPrefix(err.Error(), errPrefix))
	}
	// Only if the policy read its name: one that reads nothing (a
	// third-party policy without options) cannot be judged.
	if seg.Next() && seg.Prev() && seg.Next() {
		return nil, seg.Errf("fallback %s: unexpected '%s' (the policy reads no more than that)", name, seg.Val())
	}
	sel, ok := unm.(reverseproxy.Selector)
	if !ok {
		return nil, d.Errf("module %s (%T) is not a reverseproxy.Selector", modID, unm)
	}
	return caddyconfig.JSONModuleObject(sel, "policy", name, nil), nil
}

// withEmptyBlock returns tokens, d's last NextSegment, with the empty
// block after its line that NextSegment leaves out (it keeps a block only
// once a token is inside): a policy that reads a block (Caddy's cookie,
// header and query, for their own fallback) takes it; for one that reads
// none (random, first) it is left unread, an error. d has then just read
// the block's "}", right after its "{", while tokens has no block.
func withEmptyBlock(d *caddyfile.Dispenser, tokens caddyfile.Segment) caddyfile.Segment {
	if len(tokens) == 0 || tokens[len(tokens)-1].Text == "}" || d.Val() != "}" {
		return tokens
	}
	end := d.Token()
	if !d.Prev() {
		return tokens
	}
	open := d.Token()
	d.Next()
	if open.Text != "{" {
		return tokens
	}
	return append(tokens, open, end)
}

// maxDuration is the longest duration the Caddyfile takes: whole hours
// short of Go's last one, 2^63-1 ns, which the adapted JSON could not give
// back (Caddy carries it through a float64, which rounds it up past int64).
// A cookie's Max-Age says at most 68 years of it.
const maxDuration = 2562047 * time.Hour

// argsErr reports a wrong number of arguments, with the syntax of the
// option being parsed (which it names).
func argsErr(d *caddyfile.Dispenser, syntax string) error {
	return d.Errf("wrong number of arguments; syntax: %s", syntax)
}

// isDecimal reports whether s is a plain decimal number (digits, at most
// one point), not the rest of Go's float syntax (1_5, 0x1p1, 1e3, Inf).
func isDecimal(s string) bool {
	digits, points := 0, 0
	for _, c := range s {
		switch {
		case c >= '0' && c <= '9':
			digits++
		case c == '.':
			points++
		default:
			return false
		}
	}
	return digits > 0 && points <= 1
}

// weightDial returns the dial address reverse_proxy's Caddyfile makes of
// an upstream written as a weight names it (http://10.0.0.1:8080,
// https://app, app, ::1, unix+h2c//run/app.sock), so that an upstream
// copied from the reverse_proxy line matches its dial: the port a scheme
// or a bare host implies is added (80, or 443 for https), the scheme and
// any user info dropped, unix+h2c read as unix. A placeholder, or what
// does not parse, is kept as written.
func weightDial(s string) string {
	if strings.Contains(s, "{") {
		return s
	}
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" {
			return s
		}
		// (Without a host, http://:8080, the dial is :8080.)
		port := u.Port()
		if port == "" {
			switch u.Scheme {
			case "http", "h2c":
				port = "80"
			case "https":
				port = "443"
			default:
				return s
			}
		}
		return net.JoinHostPort(u.Hostname(), port)
	}
	network, host, port, err := caddy.SplitNetworkAddress(s)
	if err != nil {
		host = s
	}
	if network == "unix+h2c" {
		network = "unix"
	}
	if port == "" && !caddy.IsUnixNetwork(network) && !caddy.IsFdNetwork(network) {
		port = "80"
	}
	if network != "" {
		return caddy.JoinNetworkAddress(network, host, port)
	}
	return net.JoinHostPort(host, port)
}
