package placeholder

import (
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		in    string
		err   string // "" for none
		names []string
	}{
		{in: "{http.request.uri}", names: []string{"http.request.uri"}},
		{in: "a{x}b{y}c", names: []string{"x", "y"}},
		{in: `\{literal\} {x}`, names: []string{"x"}},
		{in: "no placeholder", err: "no placeholder"},
		{in: `\{escaped\}`, err: "no placeholder"},
		{in: "", err: "no placeholder"},
		{in: "{http.request.header.X-User", err: "unclosed {"},
		{in: "user{", err: "unclosed {"},
		{in: "{a{b}", err: "unclosed {"},
		{in: "x}{", err: "} without a matching {"},
		{in: "{a}}", err: "} without a matching {"},
		{in: "{}", err: "empty placeholder"},
		{in: `a\\{x}`, err: "} without a matching {"},      // Caddy: "\{" is an escaped brace
		{in: `{x\}y`, err: "backslash in the placeholder"}, // Caddy: unclosed
		{in: `\a{x}`, names: []string{"x"}},
	} {
		err := Check(tc.in)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("Check(%q) = %v", tc.in, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("Check(%q) = %v, want an error with %q", tc.in, err, tc.err)
		case tc.err == "" && !slices.Equal(Names(tc.in), tc.names):
			t.Errorf("Names(%q) = %q, want %q", tc.in, Names(tc.in), tc.names)
		}
	}
}

func TestExpand(t *testing.T) {
	for in, want := range map[string]string{
		"{path}":                  "{http.request.uri.path}",
		"{header.X-User}":         "{http.request.header.X-User}",
		"{client_ip}/{query}":     "{http.vars.client_ip}/{http.request.uri.query}",
		"{http.request.uri.path}": "{http.request.uri.path}",
	} {
		if got := Expand(in); got != want {
			t.Errorf("Expand(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCanonical(t *testing.T) {
	for in, want := range map[string]string{
		"{header.x-user}":                         "{http.request.header.X-User}",
		"{http.request.header.X-USER}/{path}":     "{http.request.header.X-User}/{http.request.uri.path}",
		"a{header.x-a}b{header.X-B}c{header.x_c}": "a{http.request.header.X-A}b{http.request.header.X-B}c{http.request.header.X_c}",
		"{http.request.cookie.sid}":               "{http.request.cookie.sid}",  // cookie names keep their case
		"{http.request.uri.query.Q}":              "{http.request.uri.query.Q}", // as do query parameters
		`\{http.request.header.x\}{header.y}`:     `\{http.request.header.x\}{http.request.header.Y}`,
	} {
		if got := Canonical(in); got != want {
			t.Errorf("Canonical(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzCheck(f *testing.F) {
	for _, s := range []string{"{a}", "a{b", "}{", `\{x\}{y}`, "{}", "{a}{b}"} {
		f.Add(s)
	}
	f.Add(`a\\{x}`)
	f.Add(`{x\}y`)
	f.Fuzz(func(t *testing.T, s string) {
		if Check(s) != nil {
			return
		}
		names := Names(s)
		if len(names) == 0 {
			t.Fatalf("Check(%q) passed with no placeholder", s)
		}
		for _, n := range names {
			if n == "" || strings.ContainsAny(n, "{}") {
				t.Fatalf("Check(%q) passed with placeholder %q", s, n)
			}
		}
		// Reference: the placeholders Caddy's replacer looks up.
		var asked []string
		r := caddy.NewEmptyReplacer()
		r.Map(func(k string) (any, bool) { asked = append(asked, k); return "", true })
		r.ReplaceAll(s, "")
		if !slices.Equal(asked, names) {
			t.Fatalf("Check(%q) passed with placeholders %q; Caddy's replacer reads %q", s, names, asked)
		}
	})
}

// TestCheckKey: a key must depend on the request, and its http.request.
// placeholders must be ones Caddy knows.
func TestCheckKey(t *testing.T) {
	for _, tc := range []struct{ in, err string }{
		{in: "{http.request.uri}"},
		{in: "{http.request.header.X-User}"},
		{in: "{http.request.cookie.session}"},
		{in: "{http.request.remote.host}"},
		{in: "{env.HOME}{http.request.uri}"},
		{in: "{http.vars.tenant}"},                     // set by another handler
		{in: "{http.reverse_proxy.upstream.hostport}"}, // set by an earlier proxy, if any: warned of
		{in: "{time.now.unix_ms} {http.request.uri}", err: "changes with the clock"},
		{in: "{http.request.uri}{time.now.year}", err: "changes with the clock"},
		{in: "{http.request.uuid} {http.request.uri}", err: "new for every request"},
		{in: "{http.request.uri}{http.request.duration}", err: "new for every request"},
		{in: "{http.request.duration_ms}", err: "new for every request"},
		{in: "{http.request.uuid.x}", err: "which Caddy does not know"},
		{in: "{http.request.remote}", err: "new for each of its connections"},
		{in: "{http.request.host}{http.request.remote.port}", err: "new for each of its connections"},
		{in: "{http.request.remote.host}"},
		{in: "{http.request.remote.host/24}"},
		{in: "{http.request.remote.host/24,64}"},
		{in: "{http.request.remote.host/0,128}"},
		{in: "{http.request.remote.host/0}", err: "keeps no bit of the client's address"}, // a review: one key for all
		{in: "{http.request.remote.host/0,0}", err: "keeps no bit of the client's address"},
		{in: "{http.request.remote.host/64}"}, // right for IPv6 clients (IPv6OnlyPrefixes warns)
		{in: "{http.request.remote.host/129}", err: "the prefix length '/129' is no N from 0 to 32 for IPv4 and to 128 for IPv6"},
		{in: "{http.request.remote.host/x}", err: "every client's key would be empty"}, // a review: every client random
		{in: "{http.request.remote.host/-1}", err: "the prefix length '/-1' is no N"},
		{in: "{http.request.remote.host/33,64}", err: "the IPv4 prefix length '33' is not a number from 0 to 32"},
		{in: "{http.request.remote.host/24,129}", err: "the IPv6 prefix length '129' is not a number from 0 to 128"},
		{in: "{http.request.remote.host/,64}", err: "the IPv4 prefix length '' is not a number from 0 to 32"},
		{in: "{$AFFINITY_KEY}", err: "the Caddyfile's syntax for an environment variable, which a JSON config does not expand"}, // a review: JSON took it
		{in: "{http.request.uri} {$TENANT}", err: "names {$TENANT}"},
		{in: "{http.regexp.name.1}"}, // a matcher's capture
		{in: "{http.request.tls.client.fingerprint}"},
		{in: "{http.request.tls.client.san.dns_names.0} {http.request.tls.server_name}"},
		{in: "{http.request.tls.client.fingerprnt} {http.request.uri}", err: "which Caddy does not know"}, // a review: accepted
		{in: "{http.request.tls.clinet.fingerprint}", err: "which Caddy does not know"},
		{in: "no placeholder", err: "no placeholder"},
		{in: "{env.HOME}", err: "do not depend on the request"},
		{in: "{system.hostname}", err: "do not depend on the request"},
		{in: "{env.HOME}-{system.os}", err: "{env.HOME}, {system.os}"},
		{in: "{time.now.unix}", err: "changes with the clock"},
		{in: "{http.vars.start_time}{http.request.uri}", err: "new for every request"},
		{in: "{http.vars.uuid}", err: "new for every request"},
		{in: "{http.error.id}", err: "new for every request"},
		{in: "{http.vars.span_id}{http.request.uri}", err: "new for every request"},
		{in: "{http.vars.trace_id}", err: "new for every request"},
		{in: "{http.time_until_shutdown}{http.request.uri}", err: "new for every request"},
		{in: "{http.request.uri.pth}", err: "which Caddy does not know"},
		{in: "{http.request.hedaer.X}", err: "which Caddy does not know"},
		// `{header.{$VAR}}` with VAR unset: known to Caddy, empty for all.
		{in: "{http.request.header.}", err: "whose last part is empty"},
		{in: "{http.request.cookie.}", err: "whose last part is empty"},
		{in: "{http.request.uri.query.}", err: "whose last part is empty"},
		{in: "{http.vars.}-{http.request.uri}", err: "whose last part is empty"},
		{in: "{http.request.header.X-Foo.}"}, // a field name may end with a dot
		{in: "{http.request.header.Host}", err: "use {http.request.host}"},
		{in: "{http.request.header.host}{http.request.uri}", err: "empty for every request"},
		{in: "{http.response.header.X-Shard}"}, // set by a handler before
		{in: "{http.intercept.status}{http.request.uri}", err: "a placeholder of the response"},
		{in: "{http.response.status}{http.request.uri}", err: "a placeholder of the response"},
		{in: "{http.request.uri.query.a.}"},
		{in: "{ http.request.header.X-User }", err: `names { http.request.header.X-User }, with white space in the name`},
		{in: "{http.request.header.X-User }", err: "with white space in the name"},
		{in: "{tenant id}", err: "with white space in the name"},
		{in: "{http.request.uri.query.a b}"}, // ?a+b=x
		{in: "{http.vars.a b}"},
		{in: "{http.request.uri.query.a }", err: "with white space in the name"},
		{in: "{Http.Request.Uri}", err: "placeholder names are case-sensitive (lower case, but for the field, cookie or parameter named at their end), as in {http.request.uri}"},
		{in: "{http.request.Header.X-User}", err: "case-sensitive"},
		{in: "{ENV.HOME}{http.request.uri}", err: "case-sensitive"},
		{in: "{http.request.cookie.SID}"},  // cookie names are case-sensitive
		{in: "{http.request.uri.query.Q}"}, // so are parameters
		{in: "{http.vars.UserID}"},         // and variables
		{in: "{Tenant}{http.request.uri}"}, // a map's output
		// A snippet's argument outside an import (an audit: random picks).
		{in: "{args[0]}", err: "names {args[0]}, a snippet's argument, which the Caddyfile replaces only inside a snippet it imports"},
		{in: "{args[:]} {http.request.uri}", err: "a snippet's argument"},
		{in: "{args.0}", err: "a snippet's argument"},
		{in: "{http.vars.args[0]}"}, // a variable may have any name
	} {
		err := CheckKey(tc.in)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("CheckKey(%q) = %v", tc.in, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("CheckKey(%q) = %v, want an error with %q", tc.in, err, tc.err)
		}
	}
}

func TestMisspelt(t *testing.T) {
	for in, want := range map[string][]string{
		"{http.request.uri}":                      nil,
		"{http.vars.client_ip}":                   nil,
		"{env.HOME}{http.request.uri}":            nil,
		"{system.hostname}{http.request.uri}":     nil,
		"{file./no/such/file}{http.request.uri}":  nil,
		"{tenant}":                                nil, // a map's output
		"{geoip2.country_code}{http.request.uri}": nil, // a plugin's
		"{remote_ip}":                             {"remote_ip"},
		"{headers.X-User}-{http.request.uri}":     {"headers.X-User"},
		"{Query_user}":                            {"Query_user"},
		"{client_ip.v4}":                          {"client_ip.v4"},
		"{client-ip}":                             {"client-ip"},
		"{Header-X-User}":                         {"Header-X-User"},
	} {
		if got := Misspelt(in); !slices.Equal(got, want) {
			t.Errorf("Misspelt(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNamesNoURL(t *testing.T) {
	for in, want := range map[string]bool{
		"{http.request.method}":                         true,
		"{http.request.header.X-Tenant}":                true,
		"{http.request.uri.query.zz}":                   false, // a part of the query: the user's choice
		"{http.request.method} {http.request.uri}":      false,
		"{http.request.uri.path}":                       false,
		"{http.request.orig_uri}":                       false,
		"{http.request.uri.path.file.base}":             false,
		"{http.request.header.X-Proto} {env.HOME}":      true,
		"{http.vars.route}":                             false, // may hold one
		"{tenant}":                                      false, // a map's output
		"{http.request.cookie.sid}{http.regexp.p.1}":    false,
		"{http.request.host}{http.request.remote.host}": true,
	} {
		if got := NamesNoURL(in); got != want {
			t.Errorf("NamesNoURL(%q) = %v, want %v", in, got, want)
		}
	}
}

// TestIPv6OnlyPrefixes: a single prefix length past 32 is named (IPv4
// clients all get an empty key), one that fits both or a pair is not.
func TestIPv6OnlyPrefixes(t *testing.T) {
	for in, want := range map[string]string{
		"{http.request.remote.host/64}":                   "http.request.remote.host/64",
		"{http.request.uri}{http.request.remote.host/33}": "http.request.remote.host/33",
		"{http.request.remote.host/32}":                   "",
		"{http.request.remote.host/24,64}":                "",
		"{http.request.remote.host}":                      "",
	} {
		got := strings.Join(IPv6OnlyPrefixes(in), " ")
		if got != want {
			t.Errorf("IPv6OnlyPrefixes(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestZeroPrefixes: a pair of prefix lengths with a 0 is named (every
// client of that family gets one key); others are not.
func TestZeroPrefixes(t *testing.T) {
	for in, want := range map[string]string{
		"{http.request.remote.host/0,64}":                   "http.request.remote.host/0,64",
		"{http.request.uri}{http.request.remote.host/24,0}": "http.request.remote.host/24,0",
		"{http.request.remote.host/+0,64}":                  "http.request.remote.host/+0,64",
		"{http.request.remote.host/24,64}":                  "",
		"{http.request.remote.host/64}":                     "",
		"{http.request.remote.host}{http.request.uri.path}": "",
	} {
		got := strings.Join(ZeroPrefixes(in), " ")
		if got != want {
			t.Errorf("ZeroPrefixes(%q) = %q, want %q", in, got, want)
		}
	}
}
