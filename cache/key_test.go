package cache

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"
	"unicode"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// TestDefaultKeyMatchesTemplate: the default key is what DefaultKey's
// template gives, except that the path is as the request forwarded
// upstream carries it, hex digits upper-cased (want).
func TestDefaultKeyMatchesTemplate(t *testing.T) {
	h := &Handler{Config: Config{Key: DefaultKey}}
	for _, tc := range []struct {
		name, target, host string
		tls                bool
		want               string // when not the template's
	}{
		{name: "plain", target: "/a/b?x=1&y=2", host: "example.com"},
		{name: "no query", target: "/a", host: "example.com"},
		{name: "port", target: "/a?q", host: "example.com:8080"},
		{name: "tls", target: "/", host: "example.com", tls: true},
		{name: "ipv6", target: "/v6", host: "[::1]:8443"},
		{name: "escaped path", target: "/a%20b?c=%2F", host: "example.com"},
		{name: "encoded slash", target: "/enc/a%2Fb", host: "example.com"},
		{name: "encoded question mark", target: "/q%3Fy?z", host: "example.com"},
		{name: "empty query", target: "/canon?", host: "example.com"},
		{name: "lower-case hex", target: "/caf%c3%a9", host: "example.com", want: "http://example.com/caf%C3%A9"},
		{name: "raw UTF-8", target: "/café", host: "example.com", want: "http://example.com/caf%C3%A9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, tc.target, nil)
			r.Host = tc.host
			if tc.tls {
				r.TLS = &tls.ConnectionState{}
			}
			repl := caddy.NewReplacer()
			r = caddyhttp.PrepareRequest(r, repl, nil, nil)
			want := repl.ReplaceAll(DefaultKey, "")
			if tc.want != "" {
				want = tc.want
			}
			if got := keyOf(t, h, r); got != want {
				t.Errorf("key %q, template gives %q", got, want)
			}
			// A rewrite after the request arrived does not change it.
			r.URL.Path, r.URL.RawQuery = "/index.php", "rewritten"
			if got := keyOf(t, h, r); got != want {
				t.Errorf("key after a rewrite %q, want the original URI's %q", got, want)
			}
		})
	}
}

func TestKeyLowercasesHost(t *testing.T) {
	h := &Handler{Config: Config{Key: DefaultKey}}
	r := httptest.NewRequest(http.MethodGet, "/A?B", nil)
	r.Host = "ExAmple.COM"
	if got, want := keyOf(t, h, r), "http://example.com/A?B"; got != want {
		t.Errorf("key %q, want %q", got, want)
	}
}

// TestHostCaseReachesTheOriginAsKeyed: the key folds the host's case, so
// the origin gets the host lower-cased too. An origin that routes on Host
// byte for byte (Go's ServeMux with a host pattern) answered Host:
// APP.TEST with its fallback page, which was stored for app.test and
// served to its next clients (a review); a hit and a revalidation alike
// go with the key's host, and the client's request keeps its own.
func TestHostCaseReachesTheOriginAsKeyed(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{MinUses: 1}, c)
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Cache-Control", "max-age=60")
		if r.Host == "app.test" {
			_, err := io.WriteString(w, "tenant page")
			return err
		}
		_, err := io.WriteString(w, "fallback for "+r.Host)
		return err
	}}
	attack := newRequest(http.MethodGet, "http://app.test/home")
	attack.Host = "APP.TEST"
	if w := serve(t, h, o, attack); w.Body.String() != "tenant page" {
		t.Errorf("Host: APP.TEST got %q, want the tenant page (the origin saw %q)", w.Body.String(), o.last().Host)
	}
	if attack.Host != "APP.TEST" {
		t.Errorf("the client's request now says Host %q", attack.Host)
	}
	w := get(t, h, o, "http://app.test/home")
	wantStatus(t, w, []string{"hit"})
	if w.Body.String() != "tenant page" {
		t.Errorf("the next client got %q, want the tenant page", w.Body.String())
	}
}

// TestHostPlaceholderAfterTheCacheIsLowered: handlers after the cache
// that read the host from placeholders (reverse_proxy's header_up Host
// {host}) get it lower-cased too, or Host: APP.TEST would still reach the
// origin and its answer be stored for app.test (a review).
func TestHostPlaceholderAfterTheCacheIsLowered(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{MinUses: 1}, c)
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		host, _ := repl.GetString("http.request.host")
		hostport, _ := repl.GetString("http.request.hostport")
		w.Header().Set("Cache-Control", "max-age=60")
		if host == "app.test" && hostport == "app.test:8080" {
			_, err := io.WriteString(w, "home")
			return err
		}
		_, err := io.WriteString(w, "fallback for "+hostport)
		return err
	})
	attack := newRequest(http.MethodGet, "http://app.test:8080/home")
	attack.Host = "APP.TEST:8080"
	if w := serve(t, h, next, attack); w.Body.String() != "home" {
		t.Errorf("Host: APP.TEST:8080 got %q, want home", w.Body.String())
	}
	if w := get(t, h, next, "http://app.test:8080/home"); w.Body.String() != "home" {
		t.Errorf("app.test got %q, want home", w.Body.String())
	}
}

// TestKeySpellsTheDefaultPortAsSent: a.test:80 and a.test are one URI
// over http (RFC 9110 §4.2.3), but not one Host to the origin, which
// builds links from it; and behind a proxy that ends TLS, :80 is no
// default port to the clients (a review stored a redirect to
// https://shop.test:80/new for everyone by sending Host: shop.test:80 to
// an http node). So each spelling has its own entry, and an unsafe
// method on one invalidates the other's.
func TestKeySpellsTheDefaultPortAsSent(t *testing.T) {
	h := &Handler{Config: Config{Key: DefaultKey}}
	for _, tc := range []struct {
		host string
		tls  bool
		want string
	}{
		{"a.test:80", false, "http://a.test:80/p"},
		{"a.test", false, "http://a.test/p"},
		{"a.test:443", true, "https://a.test:443/p"},
		{"a.test:443", false, "http://a.test:443/p"},
		{"a.test:80", true, "https://a.test:80/p"},
		{"a.test:8080", false, "http://a.test:8080/p"},
		{"[::1]:80", false, "http://[::1]:80/p"},
	} {
		r := httptest.NewRequest(http.MethodGet, "/p", nil)
		r.Host = tc.host
		if tc.tls {
			r.TLS = &tls.ConnectionState{}
		}
		if got := keyOf(t, h, r); got != tc.want {
			t.Errorf("Host %q (TLS %v): key %q, want %q", tc.host, tc.tls, got, tc.want)
		}
	}
	c := newClock()
	hc := newTestHandler(t, Config{}, c)
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Location", "https://"+r.Host+"/new")
		return nil
	}}
	get(t, hc, o, "http://a.test:80/q")
	if w := get(t, hc, o, "http://a.test/q"); w.Header().Get("Location") != "https://a.test/new" {
		t.Errorf("Host a.test after Host a.test:80: Location %q (%s)", w.Header().Get("Location"), w.Header().Get("Cache-Status"))
	}
	wantStatus(t, get(t, hc, o, "http://a.test/q"), []string{"hit"})
	serve(t, hc, static(c, 204, ""), newRequest(http.MethodPost, "http://a.test/q"))
	wantStatus(t, get(t, hc, o, "http://a.test:80/q"), []string{"fwd=uri-miss"})
	wantStatus(t, get(t, hc, o, "http://a.test/q"), []string{"fwd=uri-miss"})
}

// TestKeyOfAnEmptyPath: an absolute-form target without a path (GET
// http://a.test HTTP/1.1) is /, as reverse_proxy sends it and purges name
// it (a review found it keyed without its /).
func TestKeyOfAnEmptyPath(t *testing.T) {
	h := &Handler{Config: Config{Key: DefaultKey}}
	r := httptest.NewRequest(http.MethodGet, "http://a.test", nil)
	r.URL.Path, r.URL.RawPath = "", ""
	if got := keyOf(t, h, r); got != "http://a.test/" {
		t.Errorf("key %q, want http://a.test/", got)
	}
}

// TestKeyKeepsPercentEncoding: URIs that differ only in what their
// percent-encoding hides (an encoded / or ?) are other resources to the
// origin, and get their own entries; an unsafe method on one leaves the
// other stored.
func TestKeyKeepsPercentEncoding(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Cache-Control", "max-age=60")
		_, _ = io.WriteString(w, "target "+r.URL.RequestURI())
		return nil
	}}
	pairs := [][2]string{{"/enc/a%2Fb", "/enc/a/b"}, {"/q%3Fy?z", "/q?y?z"}, {"/canon?", "/canon"}}
	for range 2 {
		for _, pair := range pairs {
			for _, target := range pair {
				if w := get(t, h, o, "http://example.com"+target); w.Body.String() != "target "+target {
					t.Errorf("GET %s: %q (%s)", target, w.Body.String(), w.Header().Get("Cache-Status"))
				}
			}
		}
	}
	if n := o.calls.Load(); n != 6 {
		t.Errorf("origin called %d times, want 6 (one per URI)", n)
	}
	post := static(c, 204, "")
	serve(t, h, post, newRequest(http.MethodPost, "http://example.com/enc/a%2Fb"))
	wantStatus(t, get(t, h, o, "http://example.com/enc/a/b"), []string{"hit"})
	wantStatus(t, get(t, h, o, "http://example.com/enc/a%2Fb"), []string{"fwd=uri-miss"})
	// A Location with an encoded slash invalidates that URI, not its decoded twin.
	get(t, h, o, "http://example.com/enc/a%2Fb")
	serve(t, h, static(c, 201, "", "Location", "/enc/a%2Fb"), newRequest(http.MethodPost, "http://example.com/new"))
	wantStatus(t, get(t, h, o, "http://example.com/enc/a%2Fb"), []string{"fwd=uri-miss"})
	wantStatus(t, get(t, h, o, "http://example.com/enc/a/b"), []string{"hit"})
}

// TestKeyIsTheOriginalURI: requests rewritten to one path before the cache
// (handle_path, try_files to an index) keep their own entries.
func TestKeyIsTheOriginalURI(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Cache-Control", "max-age=60")
		orig, _ := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request)
		_, _ = io.WriteString(w, "page for "+orig.URL.Path)
		return nil
	}}
	rewritten := func(target string) *http.Request {
		r := newRequest(http.MethodGet, target)
		r.URL.Path, r.URL.RawQuery = "/index.php", ""
		return r
	}
	for range 2 {
		for _, p := range []string{"/blog/post-1", "/about"} {
			w := serve(t, h, o, rewritten("http://example.com"+p))
			if w.Body.String() != "page for "+p {
				t.Errorf("%s: %q (%s)", p, w.Body.String(), w.Header().Get("Cache-Status"))
			}
		}
	}
	if n := o.calls.Load(); n != 2 {
		t.Errorf("origin called %d times, want 2", n)
	}
}

// TestCustomKeyUnknownPlaceholderBypasses: a request for which a custom
// key names an unknown placeholder is not cached, rather than sharing the
// entry of every other such request.
func TestCustomKeyUnknownPlaceholderBypasses(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{Key: "{http.request.uri.path}/{tenant}"}, c)
	o := static(c, 200, "x", "Cache-Control", "max-age=60")
	for range 2 {
		w := get(t, h, o, "http://example.com/t")
		wantStatus(t, w, []string{"fwd=bypass", "fwd-status=200"})
	}
	r := newRequest(http.MethodGet, "http://example.com/t")
	r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer).Set("tenant", "acme")
	serve(t, h, o, r)
	r = newRequest(http.MethodGet, "http://example.com/t")
	r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer).Set("tenant", "acme")
	wantStatus(t, serve(t, h, o, r), []string{"hit"})
	// JSON may use Caddyfile shorthands.
	h2 := newTestHandler(t, Config{Key: "{path}"}, c)
	if got := keyOf(t, h2, newRequest(http.MethodGet, "http://example.com/s?q")); got != "http://example.com /s" {
		t.Errorf("key {path}: %q", got)
	}
}

func TestCustomKeyTemplate(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{Key: "{http.request.uri.path}"}, c)
	o := static(c, 200, "shared", "Cache-Control", "max-age=60")
	r := newRequest(http.MethodGet, "http://example.com/p?x=1")
	if got, want := keyOf(t, h, r), "http://example.com /p"; got != want {
		t.Fatalf("custom key %q, want %q (scheme://host and a space prepended)", got, want)
	}
	get(t, h, o, "http://example.com/p?x=1")
	w := get(t, h, o, "http://example.com/p?x=2")
	wantStatus(t, w, []string{"hit"})
	if n := o.calls.Load(); n != 1 {
		t.Errorf("origin called %d times, want 1: the query is not in the key", n)
	}
	w = get(t, h, o, "http://other.example/p?x=1")
	wantStatus(t, w, []string{"fwd=uri-miss"})
}

// TestCustomKeyKeepsOriginsApart: whatever a custom key expands to, no
// Host and template can spell another Host's key (Host a.testx with an
// empty header is not Host a.test with the header "x"), and no Host can
// hold the byte that ends the origin.
func TestCustomKeyKeepsOriginsApart(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{Key: "{http.request.header.X-K}{uri}"}, c)
	keyFor := func(host, xk, target string) string {
		r := newRequest(http.MethodGet, "http://example.com"+target)
		r.Host = host // as a server may let it through, unchecked
		if xk != "" {
			r.Header.Set("X-K", xk)
		}
		return keyOf(t, h, r)
	}
	for _, tc := range []struct{ a, b [3]string }{
		{[3]string{"a.testx", "", "/p"}, [3]string{"a.test", "x", "/p"}},
		{[3]string{"a.test", "", "/p"}, [3]string{"a.test", "/p", ""}},
		{[3]string{"a.test", " /p", "/q"}, [3]string{"a.test ", "/p", "/q"}},
		{[3]string{"a.test/p", "", "/q"}, [3]string{"a.test", "/p", "/q"}},
		{[3]string{"a.test%2Fp", "", "/q"}, [3]string{"a.test/p", "", "/q"}},
		{[3]string{"a.test?", "", "/q"}, [3]string{"a.test", "?", "/q"}},
	} {
		ka, kb := keyFor(tc.a[0], tc.a[1], tc.a[2]), keyFor(tc.b[0], tc.b[1], tc.b[2])
		if ka == kb {
			t.Errorf("Host %q X-K %q %s and Host %q X-K %q %s share the key %q", tc.a[0], tc.a[1], tc.a[2], tc.b[0], tc.b[1], tc.b[2], ka)
		}
	}
	// Served: the second host's request is a miss, not the first's response.
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Cache-Control", "max-age=60")
		_, _ = io.WriteString(w, "for "+r.Host)
		return nil
	}}
	get(t, h, o, "http://a.testx/p")
	if w := get(t, h, o, "http://a.test/p", "X-K", "x"); w.Body.String() != "for a.test" {
		t.Errorf("a.test got %q (%s)", w.Body.String(), w.Header().Get("Cache-Status"))
	}
	if got := keyFor("a.test", "/k", "/p"); got != "http://a.test /k/p" {
		t.Errorf("key %q, want %q", got, "http://a.test /k/p")
	}
	if got := keyFor("a.test", "k", "/p"); got != "http://a.test k/p" {
		t.Errorf("key %q, want %q", got, "http://a.test k/p")
	}
}

// TestCustomKeyIsNoVariantKey: a custom key built from a placeholder that
// decodes (%00 is a NUL) cannot spell another URL's variant key, so an
// attacker's response (one that varies on nothing) is not served as that
// variant.
func TestCustomKeyIsNoVariantKey(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{Key: "{query.u}", MinUses: 1}, c)
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Cache-Control", "max-age=60")
		if r.URL.Query().Get("u") == "x" {
			w.Header().Set("Vary", "Accept-Encoding")
		}
		_, _ = io.WriteString(w, "for u="+r.URL.Query().Get("u"))
		return nil
	}}
	get(t, h, o, "http://example.com/?u=x", "Accept-Encoding", "gzip") // the victim's record
	gen := strconv.FormatUint(generations.Load(), 10)
	br := VaryKey([]string{"Accept-Encoding"}, http.Header{"Accept-Encoding": {"br"}})
	// What the attacker would have the origin answer under the key of
	// ?u=x's br variant, in the variant key's layout before and after it
	// began with a NUL.
	for _, forged := range []string{"x\x00" + gen + "\x00" + br, "\x00" + gen + "\x00http://example.com x\x00" + br} {
		get(t, h, o, "http://example.com/?u="+url.QueryEscape(forged))
	}
	if w := get(t, h, o, "http://example.com/?u=x", "Accept-Encoding", "br"); w.Body.String() != "for u=x" {
		t.Errorf("the br variant of ?u=x got %q (%s): the attacker's response", w.Body.String(), w.Header().Get("Cache-Status"))
	}
	if k := appendVariantKey(nil, []byte("http://example.com x"), 1, br); k[0] != 0 {
		t.Errorf("variant key %q does not begin with a NUL, which no URL key begins with", k)
	}
}

// TestCustomKeyIsNoDefaultKey: blocks sharing a store, one keyed by a
// custom template whose value is a path, one by the default key, do not
// share entries: handle_path /static/* with key {path} stores
// /static/app.js, and the app's /app.js is another resource.
func TestCustomKeyIsNoDefaultKey(t *testing.T) {
	c := newClock()
	custom := newTestHandler(t, Config{CacheName: "shared-keys", Key: "{path}"}, c)
	def := newTestHandler(t, Config{CacheName: "shared-keys"}, c)
	answer := func(what string) *origin {
		return &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
			w.Header().Set("Cache-Control", "max-age=60")
			_, _ = io.WriteString(w, what+" "+r.URL.Path)
			return nil
		}}
	}
	r := newRequest(http.MethodGet, "http://example.com/static/app.js")
	r.URL.Path = "/app.js" // what handle_path leaves
	serve(t, custom, answer("static file"), r)
	if w := get(t, def, answer("app page"), "http://example.com/app.js"); w.Body.String() != "app page /app.js" {
		t.Errorf("GET /app.js got %q (%s): the static file's entry", w.Body.String(), w.Header().Get("Cache-Status"))
	}
}

func TestGetAndHeadShareKey(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	o := static(c, 200, "hello", "Cache-Control", "max-age=60")
	get(t, h, o, "http://example.com/x")
	w := serve(t, h, o, newRequest(http.MethodHead, "http://example.com/x"))
	wantStatus(t, w, []string{"hit"})
	if w.Body.Len() != 0 {
		t.Errorf("HEAD hit has a body: %q", w.Body.String())
	}
	if cl := w.Header().Get("Content-Length"); cl != "5" {
		t.Errorf("HEAD Content-Length %q, want 5", cl)
	}
	if n := o.calls.Load(); n != 1 {
		t.Errorf("origin called %d times, want 1", n)
	}
}

// TestAppendPath: the key's path is the path the request forwarded
// upstream carries (net/url's EscapedPath) with hex digits upper-cased,
// so targets an origin's router can tell apart (an encoded / or ? against
// a real one) never share a key.
func TestAppendPath(t *testing.T) {
	for _, tc := range []struct{ sent, want string }{
		{"/plain/path", "/plain/path"},
		{"/caf%C3%A9", "/caf%C3%A9"},
		{"/caf%c3%a9", "/caf%C3%A9"},
		{"/caf\xc3\xa9", "/caf%C3%A9"},
		{"/%7Euser/%41", "/%7Euser/%41"},
		{"/a%2Fb", "/a%2Fb"},
		{"/a%2fb", "/a%2Fb"},
		{"/q%3Fy", "/q%3Fy"},
		{"/a!b", "/a!b"},
		{"/a%21b", "/a%21b"},
		{"/a b", "/a%20b"},
		{"/a%20b", "/a%20b"},
		{"/$&+,:;=@", "/$&+,:;=@"},
		// A raw byte that needs encoding makes net/url escape the decoded
		// path, whose %2F is then a real /: so must the key.
		{"/files/a%7C%2Fb", "/files/a%7C%2Fb"},
		{"/files/a|%2Fb", "/files/a%7C/b"},
		{"/caf\xc3\xa9%2Fmenu", "/caf%C3%A9/menu"},
		{"*", "*"},
	} {
		u, err := url.ParseRequestURI(tc.sent)
		if err != nil {
			t.Fatalf("%q: %v", tc.sent, err)
		}
		if got := string(appendPath(nil, u)); got != tc.want {
			t.Errorf("%q: %q, want %q", tc.sent, got, tc.want)
		}
		if got := upperHexOf(u.EscapedPath()); got != tc.want {
			t.Errorf("%q: EscapedPath gives %q, want %q", tc.sent, got, tc.want)
		}
	}
}

// upperHexOf is s with the hex digits of its %XX escapes upper-cased,
// written apart from appendPath.
func upperHexOf(s string) string {
	b := []byte(s)
	for i := 0; i+2 < len(b); i++ {
		if b[i] == '%' {
			b[i+1], b[i+2] = byte(unicode.ToUpper(rune(b[i+1]))), byte(unicode.ToUpper(rune(b[i+2])))
			i += 2
		}
	}
	return string(b)
}

// TestKeyOrigin: the key's origin is the one the client named in Host,
// which reverse_proxy forwards and origins build links from, followed by
// '#' and the port the connection came in on when Host names another.
// Security reviews stored origin B's page under site A's key (two sites
// on ports 19080 and 19081 sharing the default store) by sending Host:
// a.test:19080 to port 19081, and, keyed by the listener's port alone, a
// redirect to http://app.test:1/new for every client of app.test by
// sending Host: app.test:1.
func TestKeyOrigin(t *testing.T) {
	at := func(host string, local net.Addr, secure bool) *http.Request {
		r := newRequest(http.MethodGet, "http://"+host+"/page")
		r.Host = host
		if secure {
			r.TLS = &tls.ConnectionState{}
		}
		if local != nil {
			r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, local))
		}
		return r
	}
	tcp := func(port int) net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port} }
	for _, tc := range []struct {
		name string
		r    *http.Request
		want string
	}{
		{"Host naming the listener's port", at("A.test:19080", tcp(19080), false), "http://a.test:19080/page"},
		{"Host without a port, on the default port", at("a.test", tcp(80), false), "http://a.test/page"},
		{"Host naming the default port, on it", at("a.test:80", tcp(80), false), "http://a.test:80/page"},
		{"HTTPS on 443", at("a.test", tcp(443), true), "https://a.test/page"},
		// The origin sees Host as sent: a request naming another port
		// (or none, on a port that is not the default) is not one naming
		// the listener's, and a site's response must not answer another
		// site's requests in a store they share.
		{"Host naming another port", at("a.test:1", tcp(19080), false), "http://a.test:1#19080/page"},
		{"Host naming another site's port", at("a.test:19080", tcp(19081), false), "http://a.test:19080#19081/page"},
		{"Host with an empty port", at("a.test:", tcp(80), false), "http://a.test:#80/page"},
		{"Host with a port in other digits", at("a.test:080", tcp(80), false), "http://a.test:080#80/page"},
		{"Host without a port, on another port", at("a.test", tcp(19081), false), "http://a.test#19081/page"},
		{"Host naming port 80, on another port", at("a.test:80", tcp(8080), false), "http://a.test:80#8080/page"},
		{"a port mapping (8080 to 80)", at("a.test:8080", tcp(80), false), "http://a.test:8080#80/page"},
		{"HTTPS, a port mapping (8443 to 443)", at("a.test:8443", tcp(443), true), "https://a.test:8443#443/page"},
		{"HTTP/3", at("a.test", &net.UDPAddr{Port: 8443}, true), "https://a.test#8443/page"},
		{"HTTP/3 on the Host's port", at("a.test:8443", &net.UDPAddr{Port: 8443}, true), "https://a.test:8443/page"},
		{"IPv6", at("[::1]:19080", tcp(19081), false), "http://[::1]:19080#19081/page"},
		{"IPv6 on its port", at("[::1]:19081", tcp(19081), false), "http://[::1]:19081/page"},
		{"no listener: Host's port", at("a.test:8080", nil, false), "http://a.test:8080/page"},
		{"no listener: Host's default port", at("a.test:80", nil, false), "http://a.test:80/page"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestHandler(t, Config{}, newClock())
			got, ok := h.appendKey(nil, tc.r)
			if !ok || string(got) != tc.want {
				t.Errorf("key %q (%v), want %q", got, ok, tc.want)
			}
		})
	}
}
