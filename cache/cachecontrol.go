package cache

import (
	"net/http"
	"net/textproto"
	"strings"
	"time"
)

// maxDelta is the value a cache must use for a delta-seconds value
// it cannot represent (RFC 9111 §1.2.2): 2^31 seconds.
const maxDelta = 2147483648 * time.Second

// ResponseControl is a response's parsed Cache-Control (RFC 9111 §5.2.2,
// RFC 5861), or its targeted field (RFC 9213) when that was present and
// valid. Durations are -1 when the directive is absent.
//
// Conflicting directives resolve to the most restrictive reading (RFC 9111
// §4.2.1): a bare no-cache or private wins over its qualified form, public
// does not undo private, a repeated stale-while-revalidate or
// stale-if-error keeps the smallest staleWindow.
type ResponseControl struct {
	MaxAge, SMaxAge                    time.Duration
	StaleWhileRevalidate, StaleIfError time.Duration
	NoStore, NoCache, Private, Public  bool
	MustRevalidate, ProxyRevalidate    bool
	MustUnderstand, Immutable          bool
	NoCacheFields, PrivateFields       []string // qualified no-cache="F" / private="F": strip F before storing
	Invalid                            bool     // a freshness directive was duplicated or malformed: treat as stale
	Targeted                           bool     // parsed from the targeted field, not Cache-Control
}

// ParseResponseControl parses h's Cache-Control, or the targeted field
// named targetedField (e.g. "CDN-Cache-Control"; "" or "-" for none) when
// that is present and parses as an RFC 8941 dictionary.
//
// Directive names are case-insensitive, arguments may be tokens or quoted
// strings, and the directives of all Cache-Control field lines count as one
// list. Unknown extensions are ignored. A max-age or s-maxage whose value
// is not a non-negative integer, or that appears twice with different
// values, sets Invalid (RFC 9111 §4.2.1 encourages treating such a
// response as stale). Values too large to represent become 2^31 seconds
// (§1.2.2).
func ParseResponseControl(h http.Header, targetedField string) ResponseControl {
	if targetedField != "" && targetedField != "-" {
		if rc, ok := parseTargeted(h, targetedField); ok {
			return rc
		}
	}
	rc := ResponseControl{MaxAge: -1, SMaxAge: -1, StaleWhileRevalidate: -1, StaleIfError: -1}
	qualifiedNoCache, qualifiedPrivate := false, false
	forEachDirective(h["Cache-Control"], func(name, arg string, hasArg bool) {
		switch name {
		case "max-age":
			setFreshness(&rc.MaxAge, &rc.Invalid, arg, hasArg)
		case "s-maxage":
			setFreshness(&rc.SMaxAge, &rc.Invalid, arg, hasArg)
		case "stale-while-revalidate":
			setWindow(&rc.StaleWhileRevalidate, arg, hasArg)
		case "stale-if-error":
			setWindow(&rc.StaleIfError, arg, hasArg)
		case "no-store":
			rc.NoStore = true
		case "no-cache":
			if fields := directiveFields(arg, hasArg); fields != nil {
				qualifiedNoCache = true
				rc.NoCacheFields = appendNewFields(rc.NoCacheFields, fields)
			} else {
				rc.NoCache = true
			}
		case "private":
			if fields := directiveFields(arg, hasArg); fields != nil {
				qualifiedPrivate = true
				rc.PrivateFields = appendNewFields(rc.PrivateFields, fields)
			} else {
				rc.Private = true
			}
		case "public":
			rc.Public = true
		case "must-revalidate":
			rc.MustRevalidate = true
		case "proxy-revalidate":
			rc.ProxyRevalidate = true
		case "must-understand":
			rc.MustUnderstand = true
		case "immutable":
			rc.Immutable = true
		}
	})
	// The bare forms are stricter than the qualified ones: with both, the
	// whole response is no-cache / private and the field lists are moot.
	if rc.NoCache || !qualifiedNoCache {
		rc.NoCacheFields = nil
	}
	if rc.Private || !qualifiedPrivate {
		rc.PrivateFields = nil
	}
	return rc
}

// MayServeStale reports whether a stale copy may ever be served without
// revalidation (false under must-revalidate, proxy-revalidate, s-maxage,
// no-cache; RFC 9111 §4.2.4, §5.2.2), whether they come from Cache-Control
// or from a targeted field, where they mean the same (RFC 9213 §2.1).
func (rc ResponseControl) MayServeStale() bool {
	if rc.MustRevalidate || rc.ProxyRevalidate || rc.NoCache {
		return false
	}
	return rc.SMaxAge < 0
}

// MustRevalidateShared reports whether a shared cache that cannot
// revalidate a stale copy must answer 504 rather than pass on the error
// (must-revalidate, proxy-revalidate, and s-maxage, which implies
// proxy-revalidate, in a targeted field too; RFC 9111 §5.2.2.2, §5.2.2.8,
// §5.2.2.10, RFC 9213 §2.1).
func (rc ResponseControl) MustRevalidateShared() bool {
	return rc.MustRevalidate || rc.ProxyRevalidate || rc.SMaxAge >= 0
}

// RequestControl is a request's parsed Cache-Control (RFC 9111 §5.2.1),
// with Pragma: no-cache honoured when Cache-Control is absent. Durations
// are -1 when absent; MaxStale is MaxStaleAny for a bare max-stale.
type RequestControl struct {
	MaxAge, MaxStale, MinFresh, StaleIfError time.Duration
	NoCache, NoStore, OnlyIfCached           bool
	// OriginPreconditions is set (by the handler, not by parsing) when the
	// request has If-Match or If-Unmodified-Since, which only the origin
	// evaluates: no stored response answers it, stale-if-error included.
	OriginPreconditions bool
}

// MaxStaleAny is RequestControl.MaxStale for max-stale without a value.
const MaxStaleAny = time.Duration(1<<63 - 1)

// ParseRequestControl parses the request directives in h: max-age,
// max-stale[=N], min-fresh, no-cache, no-store, only-if-cached and the RFC
// 5861 stale-if-error. A directive with an invalid value is ignored;
// repeated directives keep the most restrictive value (smallest max-age,
// max-stale and stale-if-error, largest min-fresh). Pragma: no-cache counts
// as no-cache only when there is no Cache-Control field (RFC 9111 §5.4).
func ParseRequestControl(h http.Header) RequestControl {
	rc := RequestControl{MaxAge: -1, MaxStale: -1, MinFresh: -1, StaleIfError: -1}
	lines, ok := h["Cache-Control"]
	if !ok {
		forEachDirective(h["Pragma"], func(name, _ string, _ bool) {
			if name == "no-cache" {
				rc.NoCache = true
			}
		})
		return rc
	}
	forEachDirective(lines, func(name, arg string, hasArg bool) {
		switch name {
		case "max-age":
			if d, ok := parseDeltaSeconds(arg); ok && hasArg {
				rc.MaxAge = minPresent(rc.MaxAge, d)
			}
		case "max-stale":
			if !hasArg {
				rc.MaxStale = minPresent(rc.MaxStale, MaxStaleAny)
			} else if d, ok := parseDeltaSeconds(arg); ok {
				rc.MaxStale = minPresent(rc.MaxStale, d)
			}
		case "min-fresh":
			if d, ok := parseDeltaSeconds(arg); ok && hasArg {
				rc.MinFresh = max(rc.MinFresh, d)
			}
		case "stale-if-error":
			if d, ok := parseDeltaSeconds(arg); ok && hasArg {
				rc.StaleIfError = minPresent(rc.StaleIfError, d)
			}
		case "no-cache":
			rc.NoCache = true
		case "no-store":
			rc.NoStore = true
		case "only-if-cached":
			rc.OnlyIfCached = true
		}
	})
	return rc
}

// setFreshness records a max-age or s-maxage value; a malformed value or a
// second, different value marks the response invalid (stale).
func setFreshness(dst *time.Duration, invalid *bool, arg string, hasArg bool) {
	d, ok := parseDeltaSeconds(arg)
	if !ok || !hasArg {
		*invalid = true
		return
	}
	if *dst >= 0 && *dst != d {
		*invalid = true
	}
	if *dst < 0 || d < *dst {
		*dst = d
	}
}

// setWindow records a stale-while-revalidate or stale-if-error staleWindow. An
// unusable value allows no stale serving (0) rather than the configured
// default; repeats keep the smallest.
func setWindow(dst *time.Duration, arg string, hasArg bool) {
	d, ok := parseDeltaSeconds(arg)
	if !ok || !hasArg {
		d = 0
	}
	*dst = minPresent(*dst, d)
}

// minPresent is min where -1 means absent.
func minPresent(cur, d time.Duration) time.Duration {
	if cur < 0 || d < cur {
		return d
	}
	return cur
}

// parseDeltaSeconds parses delta-seconds (RFC 9111 §1.2.2): one or more digits;
// values beyond 2^31 saturate there.
func parseDeltaSeconds(s string) (time.Duration, bool) {
	if s == "" {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		if n <= int64(maxDelta/time.Second) {
			n = n*10 + int64(c-'0')
		}
	}
	if n > int64(maxDelta/time.Second) {
		return maxDelta, true
	}
	return time.Duration(n) * time.Second, true
}

// directiveFields returns the canonical field names of a qualified no-cache or
// private argument, or nil for the bare form. An argument naming no field
// counts as the bare (stricter) form.
func directiveFields(arg string, hasArg bool) []string {
	if !hasArg || strings.IndexByte(arg, 0) >= 0 {
		return nil
	}
	var out []string
	for f := range strings.SplitSeq(arg, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, textproto.CanonicalMIMEHeaderKey(f))
		}
	}
	return out
}

// appendNewFields appends fields not already in dst.
func appendNewFields(dst, fields []string) []string {
	for _, f := range fields {
		found := false
		for _, d := range dst {
			if d == f {
				found = true
				break
			}
		}
		if !found {
			dst = append(dst, f)
		}
	}
	return dst
}

// forEachDirective calls fn for every directive of a comma-separated
// directive list spread over lines (RFC 9111 §5.2): name lowercased,
// argument unquoted, hasArg true when "=" was present. Empty list members
// are skipped; a malformed member is reported with its best-effort name so
// freshness directives can be marked invalid.
func forEachDirective(lines []string, fn func(name, arg string, hasArg bool)) {
	for _, line := range lines {
		i := 0
		for i < len(line) {
			// Skip OWS and empty list members.
			for i < len(line) && (line[i] == ' ' || line[i] == '\t' || line[i] == ',') {
				i++
			}
			if i >= len(line) {
				break
			}
			start := i
			for i < len(line) && line[i] != '=' && line[i] != ',' {
				i++
			}
			name := asciiLower(strings.TrimRight(line[start:i], " \t"))
			if i >= len(line) || line[i] == ',' {
				fn(name, "", false)
				continue
			}
			i++ // '='
			for i < len(line) && (line[i] == ' ' || line[i] == '\t') {
				i++
			}
			var arg string
			if i < len(line) && line[i] == '"' {
				var ok bool
				arg, i, ok = readQuotedString(line, i)
				if !ok {
					arg = "\x00" // unterminated quoted string: never a valid value
				}
				// Anything between the closing quote and the next comma
				// makes the value malformed.
				j := i
				for j < len(line) && (line[j] == ' ' || line[j] == '\t') {
					j++
				}
				if j < len(line) && line[j] != ',' {
					arg = "\x00"
					for j < len(line) && line[j] != ',' {
						j++
					}
				}
				i = j
			} else {
				s := i
				for i < len(line) && line[i] != ',' {
					i++
				}
				arg = strings.TrimRight(line[s:i], " \t")
			}
			fn(name, arg, true)
		}
	}
}

// readQuotedString reads the quoted-string starting at s[i] == '"' (RFC 9110
// §5.6.4) and returns its content, the index after the closing quote, and
// whether it was terminated.
func readQuotedString(s string, i int) (string, int, bool) {
	i++ // opening quote
	start := i
	for j := i; j < len(s); j++ {
		switch s[j] {
		case '"':
			return s[start:j], j + 1, true
		case '\\':
			// Slow path: rebuild without the escapes.
			var b strings.Builder
			b.WriteString(s[start:j])
			for ; j < len(s); j++ {
				c := s[j]
				if c == '\\' && j+1 < len(s) {
					j++
					b.WriteByte(s[j])
					continue
				}
				if c == '"' {
					return b.String(), j + 1, true
				}
				b.WriteByte(c)
			}
			return b.String(), len(s), false
		}
	}
	return s[start:], len(s), false
}

// asciiLower lowercases the ASCII letters of s, without allocating when
// it has none in upper case. Only ASCII folds: directive names are
// tokens (RFC 9110 §5.6.2), and strings.ToLower would turn "PUBL\u0130C"
// into "public" (U+0130 lower-cases to 'i').
func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if c := b[j]; 'A' <= c && c <= 'Z' {
					b[j] = c + 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}
