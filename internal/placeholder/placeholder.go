// Package placeholder checks the placeholder templates that configure
// per-request keys (response_cache's key, lb_policy affinity's keys). A
// template that cannot vary from request to request (no placeholder, an
// unclosed brace, which Caddy's replacer leaves as literal text) would make
// every request share one cache entry or one upstream, so it is an error
// when the config is loaded rather than a silent constant.
package placeholder

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// Expand expands Caddyfile shorthands (`{path}`, `{header.X-User}`, ...)
// as the Caddyfile adapter does, for templates written in JSON, where
// they would otherwise be unknown placeholders.
func Expand(template string) string {
	seg := caddyfile.Segment{{Text: template}}
	httpcaddyfile.NewShorthandReplacer().ApplyToSegment(&seg)
	return seg[0].Text
}

// Canonical returns template expanded (see Expand), with the header names
// in its request header placeholders written as Caddy's replacer looks
// them up (http.CanonicalHeaderKey): two templates that always resolve
// alike then compare equal, as `{header.X-User}` and
// `{http.request.header.x-user}` do. template must be well formed (see
// Check).
func Canonical(template string) string {
	const prefix = "http.request.header."
	s := Expand(template)
	var b strings.Builder
	from := 0 // what of s is copied to b
	_ = scan(s, func(name string) {
		field, ok := strings.CutPrefix(name, prefix)
		if !ok || field == http.CanonicalHeaderKey(field) {
			return
		}
		at := from + strings.Index(s[from:], "{"+name+"}") + 1 + len(prefix)
		b.WriteString(s[from:at])
		b.WriteString(http.CanonicalHeaderKey(field))
		from = at + len(field)
	})
	if from == 0 {
		return s
	}
	b.WriteString(s[from:])
	return b.String()
}

// Names returns the names of the placeholders in template, which must be
// well formed (see Check).
func Names(template string) []string {
	var names []string
	_ = scan(template, func(name string) { names = append(names, name) })
	return names
}

// Check reports why template cannot be a per-request key: it has no
// placeholder, an unclosed `{`, a stray `}` or an empty `{}`. A backslash
// escapes a brace, as in Caddy's replacer.
func Check(template string) error {
	n := 0
	if err := scan(template, func(string) { n++ }); err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("%q has no placeholder, so it is the same for every request", template)
	}
	return nil
}

// Balanced reports an unclosed `{`, a stray `}`, an empty `{}` or a
// backslash in a placeholder in s, as Check does, without quoting s: for
// secrets, which Caddy's replacer would otherwise take in part literally.
func Balanced(s string) error {
	if err := scan(s, func(string) {}); err != nil {
		e := err.(*syntaxError)
		return fmt.Errorf("has %s at offset %d%s", e.problem, e.offset, e.note)
	}
	return nil
}

// syntaxError is a template scan cannot read as Caddy's replacer would
// be meant to.
type syntaxError struct {
	template, problem string
	offset            int
	note              string // after the offset
}

func (e *syntaxError) Error() string {
	return fmt.Sprintf("%q has %s at offset %d%s", e.template, e.problem, e.offset, e.note)
}

func scan(s string, placeholder func(name string)) error {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			if i+1 < len(s) && (s[i+1] == '{' || s[i+1] == '}') {
				i++ // an escaped brace; Caddy's replacer looks only at the byte before a brace
			}
		case '}':
			return &syntaxError{s, "a } without a matching {", i, ""}
		case '{':
			end := strings.IndexAny(s[i+1:], "{}")
			if end < 0 || s[i+1+end] == '{' {
				return &syntaxError{s, "an unclosed {", i, ", which would be taken literally"}
			}
			if end == 0 {
				return &syntaxError{s, "an empty placeholder {}", i, ""}
			}
			if strings.Contains(s[i+1:i+1+end], `\`) {
				// Caddy reads "\}" inside a placeholder as an escaped
				// brace and may then find the placeholder unclosed.
				return &syntaxError{s, "a backslash in the placeholder", i, ""}
			}
			placeholder(s[i+1 : i+1+end])
			i += end + 1
		}
	}
	return nil
}

// CheckKey reports why template, with its shorthands expanded, cannot be
// a per-request key: Check's reasons; placeholders that are all the same
// for every request (environment, system, files, time: Caddy's global
// ones); one whose last part is empty ({http.request.header.}, what
// `{header.{$VAR}}` becomes with VAR unset; see namedFamilies), which
// Caddy knows and answers with nothing; {http.request.header.Host}, which
// is always empty; a snippet's argument ({args[0]}) where no import
// replaced it; the response's status, size and timings
// (http.response.*, but for the header fields handlers before may have
// set; http.intercept.*), read before there is a response; the clock
// (time.*), the request's ID and duration (perRequest) and the client's
// port, which move keys between requests; or one under
// http.request. that
// Caddy does not know, a typo that would be the same (unknown) for every
// request. Placeholders that other handlers set (vars, regexp captures,
// map outputs, other modules') can only be checked per request.
func CheckKey(template string) error {
	if err := Check(template); err != nil {
		return err
	}
	names := Names(template)
	for _, name := range names {
		// Before the test below, which takes {time.now.unix} alone for
		// a constant.
		if strings.HasPrefix(name, "time.") {
			return fmt.Errorf("%q names {%s}, which changes with the clock, not with the request: requests moments apart would get different keys (a cache would store entries nobody finds again, a sticky client would move between upstreams); key on the request only, and bound how long responses are kept with default_ttl or the origin's Cache-Control", template, name)
		}
		if strings.HasPrefix(name, "args[") || strings.HasPrefix(name, "args.") {
			return fmt.Errorf("%q names {%s}, a snippet's argument, which the Caddyfile replaces only inside a snippet it imports (`import name arg ...`); anywhere else it stays as written, a placeholder nothing sets, the same for every request", template, name)
		}
	}
	global := caddy.NewReplacer()
	varies := false
	for _, name := range names {
		if _, ok := global.Get(name); !ok {
			varies = true
			break
		}
	}
	if !varies {
		return fmt.Errorf("%q names only placeholders that do not depend on the request (%s), so it is the same for every request; name a part of the request, such as {uri} or {header.X-User}", template, "{"+strings.Join(names, "}, {")+"}")
	}
	repl := sampleReplacer()
	for _, name := range names {
		if strings.TrimSpace(name) != name || strings.ContainsAny(name, " \t") && !inNamedFamily(name) {
			return fmt.Errorf("%q names {%s}, with white space in the name, which Caddy looks up as written: no placeholder has it", template, name)
		}
		if !known(repl, name) && known(repl, strings.ToLower(name)) {
			return fmt.Errorf("%q names {%s}, which Caddy does not know: placeholder names are case-sensitive (lower case, but for the field, cookie or parameter named at their end), as in {%s}", template, name, strings.ToLower(name))
		}
		if strings.EqualFold(name, "http.request.header.Host") {
			return fmt.Errorf("%q names {%s}, which is empty for every request (Go moves Host out of the request's header fields); use {http.request.host} or {http.request.hostport}", template, name)
		}
		if strings.HasPrefix(name, "http.response.") && !strings.HasPrefix(name, "http.response.header.") ||
			strings.HasPrefix(name, "http.intercept.") {
			// (Response header fields are those handlers before set.)
			return fmt.Errorf("%q names {%s}, a placeholder of the response, which does not exist yet when the key is read", template, name)
		}
		if name == "http.request.remote" || name == "http.request.remote.port" {
			return fmt.Errorf("%q names {%s}, which holds the client's port, new for each of its connections (a cache would store entries nobody finds again, a sticky client would move between upstreams); for the client's address use {client_ip} (after trusted_proxies) or {remote_host}", template, name)
		}
		if perRequest[name] {
			return fmt.Errorf("%q names {%s}, which is new for every request, even the same client's repeat of the same request (a cache would store entries nobody finds again, a sticky client would move between upstreams); key on what repeats, such as {uri}, {client_ip} or a cookie", template, name)
		}
		if namedFamilies[name] {
			return fmt.Errorf("%q names {%s}, whose last part is empty (an unset {$VAR}?), so it is empty for every request", template, name)
		}
		if strings.HasPrefix(name, "$") {
			return fmt.Errorf("%q names {%s}, the Caddyfile's syntax for an environment variable, which a JSON config does not expand: no placeholder has that name, so it is the same for every request; write the variable's value in the key", template, name)
		}
		if bits, ok := strings.CutPrefix(name, "http.request.remote.host/"); ok {
			if err := checkPrefixBits(bits); err != nil {
				return fmt.Errorf("%q names {%s}: %w", template, name, err)
			}
		}
		if !strings.HasPrefix(name, "http.request.") || strings.HasPrefix(name, "http.request.body") {
			continue // the body is read per request
		}
		if !known(repl, name) {
			return fmt.Errorf("%q names {%s}, which Caddy does not know (a typo would give every request the same key)", template, name)
		}
	}
	return nil
}

// Body returns the first placeholder of the request's body that
// template, which must be well formed, names, or "".
func Body(template string) string {
	for _, name := range Names(template) {
		if name == "http.request.body" || name == "http.request.body_base64" {
			return name
		}
	}
	return ""
}

// AfterProxy returns the names in template, which must be well formed,
// that reverse_proxy sets (http.reverse_proxy.*): they have a value only
// where a reverse_proxy has run for the request before the key is read
// (in its handle_response routes, after forward_auth), so they are
// warned of, not rejected.
func AfterProxy(template string) []string {
	var names []string
	for _, name := range Names(template) {
		if strings.HasPrefix(name, "http.reverse_proxy.") {
			names = append(names, name)
		}
	}
	return names
}

// checkPrefixBits checks the bits of {http.request.remote.host/V4,V6} (or
// /N for both), which Caddy answers with the client address's prefix of
// that length, or with nothing when the length does not fit the address:
// every such client would then have the same, empty, key.
//
// A single N from 33 to 128 is left to IPv6OnlyPrefixes: right where every
// client comes over IPv6.
func checkPrefixBits(bits string) error {
	v4, v6, both := strings.Cut(bits, ",")
	if !both {
		v6 = v4
	}
	n4, err4 := strconv.Atoi(v4)
	n6, err6 := strconv.Atoi(v6)
	switch {
	case !both && (err4 != nil || n4 < 0 || n4 > 128):
		return fmt.Errorf("the prefix length '/%s' is no N from 0 to 32 for IPv4 and to 128 for IPv6 (/V4,V6 gives each its own, such as /24,64): every client's key would be empty, the same for all", bits)
	case err4 != nil || n4 < 0 || n4 > 32 && both:
		return fmt.Errorf("the IPv4 prefix length '%s' is not a number from 0 to 32: every IPv4 client's key would be empty, the same for all", v4)
	case err6 != nil || n6 < 0 || n6 > 128:
		return fmt.Errorf("the IPv6 prefix length '%s' is not a number from 0 to 128: every IPv6 client's key would be empty, the same for all", v6)
	case n4 == 0 && n6 == 0:
		return fmt.Errorf("the prefix length '/%s' keeps no bit of the client's address: every client's key would be the same", bits)
	}
	return nil
}

// IPv6OnlyPrefixes returns the names in template, which must be well
// formed, of client address prefixes whose one length, past 32, fits IPv6
// addresses only ({http.request.remote.host/64}): Caddy answers IPv4
// clients with nothing, one key for them all. Right where every client
// comes over IPv6, so warned of, not rejected.
func IPv6OnlyPrefixes(template string) []string {
	return addressPrefixes(template, func(v4, _ string, both bool) bool {
		n, err := strconv.Atoi(v4)
		return !both && err == nil && n > 32 && n <= 128
	})
}

// ZeroPrefixes returns the names in template, which must be well formed,
// of client address prefixes that keep no bit of one family's addresses
// ({http.request.remote.host/0,64}): every client of that family has the
// same prefix, "0.0.0.0/0" or "::/0". Right where no client comes over
// that family, so warned of, not rejected.
func ZeroPrefixes(template string) []string {
	return addressPrefixes(template, func(v4, v6 string, both bool) bool {
		return both && (isZero(v4) || isZero(v6))
	})
}

// addressPrefixes returns the names in template of client address
// prefixes ({http.request.remote.host/V4,V6}, or /N: v4 then, and both
// false) whose lengths match.
func addressPrefixes(template string, match func(v4, v6 string, both bool) bool) []string {
	var names []string
	for _, name := range Names(template) {
		bits, ok := strings.CutPrefix(name, "http.request.remote.host/")
		if !ok {
			continue
		}
		if v4, v6, both := strings.Cut(bits, ","); match(v4, v6, both) {
			names = append(names, name)
		}
	}
	return names
}

func isZero(s string) bool { n, err := strconv.Atoi(s); return err == nil && n == 0 }

// perRequest are the request placeholders whose value is new for every
// request: its ID and the time it has taken so far.
var perRequest = map[string]bool{
	"http.request.uuid":        true,
	"http.request.duration":    true,
	"http.request.duration_ms": true,
	"http.vars.uuid":           true, // where {http.request.uuid} keeps it
	"http.vars.start_time":     true, // when the request began (PrepareRequest)
	"http.error.id":            true, // an error's own ID
	"http.vars.trace_id":       true, // the tracing directive's, per request
	"http.vars.span_id":        true,
	"http.time_until_shutdown": true,
}

// inNamedFamily reports whether name ends with a part the user names (a
// query parameter, a variable...), which may hold any character.
func inNamedFamily(name string) bool {
	for prefix := range namedFamilies {
		if strings.HasPrefix(name, prefix) {
			return true
		}
	}
	return false
}

// namedFamilies are the placeholders whose last part names a field, a
// cookie, a query parameter or a variable, with that part empty: what
// `{header.{$VAR}}` becomes with VAR unset. Caddy knows them, and answers
// with nothing. (A name may itself end with a dot: {header.X-Foo.}.)
var namedFamilies = map[string]bool{ // Caddy's prefixes (caddyhttp/replacer.go)
	"http.request.cookie.":        true,
	"http.request.header.":        true,
	"http.request.host.labels.":   true,
	"http.request.uri.path.":      true,
	"http.request.uri.query.":     true,
	"http.request.orig_uri.path.": true,
	"http.response.header.":       true,
	"http.vars.":                  true,
}

// sampleReplacer is the replacer of a plain GET, with Caddy's request
// placeholders.
func sampleReplacer() *caddy.Replacer {
	sample := &http.Request{
		Method: http.MethodGet, URL: &url.URL{Path: "/"}, Header: make(http.Header), Host: "example.com",
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, RemoteAddr: "192.0.2.1:1234",
	}
	local := context.WithValue(context.Background(), http.LocalAddrContextKey, net.Addr(&net.TCPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 443}))
	repl := caddy.NewReplacer()
	caddyhttp.PrepareRequest(sample.WithContext(local), repl, nil, nil)
	return repl
}

// known looks name up in repl; a provider that panics on the sample
// request counts as knowing it (it is then checked per request), not as
// a typo.
func known(repl *caddy.Replacer, name string) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = true
		}
	}()
	_, ok = repl.Get(name)
	return ok
}

// Misspelt returns the names in template, which must be well formed, that
// look like a misspelt Caddyfile shorthand for a part of the request
// ({remote_ip}, {headers.X-User}, {query_user}): neither under http. nor
// Caddy's global placeholders, and named like a part of the request.
// Other such names are those map and plugins set ({tenant},
// {geoip2.country_code}); these are not errors either, as a handler may
// set any name, but worth a warning when the config loads.
func Misspelt(template string) []string {
	global := caddy.NewReplacer()
	var out []string
	for _, name := range Names(template) {
		if strings.HasPrefix(name, "http.") || strings.HasPrefix(name, "file.") {
			continue
		}
		if _, ok := global.Get(name); ok {
			continue
		}
		first, _, _ := strings.Cut(name, ".")
		first, _, _ = strings.Cut(strings.ToLower(first), "_")
		first, _, _ = strings.Cut(first, "-")
		if requestParts[first] {
			out = append(out, name)
		}
	}
	return out
}

// requestParts are words a name for a part of the request begins with
// (up to a dot or an underscore): Caddy's shorthands and their likely
// misspellings.
var requestParts = map[string]bool{
	"header": true, "headers": true, "cookie": true, "cookies": true, "query": true, "queries": true,
	"querys": true, "remote": true, "client": true, "clientip": true, "ip": true, "host": true,
	"hostname": true, "hostport": true, "uri": true, "url": true, "path": true, "method": true,
	"scheme": true, "request": true, "req": true, "label": true, "labels": true, "tls": true,
}

// NamesNoURL reports whether template, with its shorthands expanded,
// names only Caddy's own placeholders and none of them holds a part of
// the request's URL (uri, path, query): as a cache key it would give
// every URL of a host one entry per value. Other names (vars, map
// outputs, regexp captures, plugins') may hold one, so a template with
// any of them is not reported.
func NamesNoURL(template string) bool {
	global := caddy.NewReplacer()
	names := Names(template)
	for _, name := range names {
		if strings.HasPrefix(name, "http.request.uri") || strings.HasPrefix(name, "http.request.orig_uri") {
			return false
		}
		if _, ok := global.Get(name); !ok && !strings.HasPrefix(name, "http.request.") {
			return false
		}
	}
	return len(names) > 0
}
