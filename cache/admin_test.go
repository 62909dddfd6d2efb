package cache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestAdminPurge(t *testing.T) {
	url := func(p string) string {
		if strings.HasPrefix(p, "http") {
			return p
		}
		return "http://example.com" + p
	}
	c := newClock()
	h := newTestHandler(t, Config{CacheName: "admin-test"}, c)
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Date", c.date())
		w.Header().Set("Surrogate-Key", "all "+strings.Trim(r.URL.Path, "/"))
		_, _ = w.Write([]byte(r.URL.Path))
		return nil
	}}
	fill := func() {
		for _, p := range []string{"/a", "/a/b", "/c", "/d%2Fe?q=%2f", "http://example.com:8080/a", "http://example.community/a"} {
			get(t, h, o, url(p))
		}
	}
	api := AdminAPI{}
	others := []string{"http://example.com:8080/a", "http://example.community/a"}
	for _, tc := range []struct {
		name   string
		body   string
		purged int
		missed []string
		hit    []string
	}{
		{name: "key", body: `{"key":"http://example.com/a"}`, purged: 1, missed: []string{"/a"}, hit: []string{"/a/b", "/c"}},
		{name: "prefix", body: `{"cache":"admin-test","prefix":"http://example.com/a"}`, purged: 2, missed: []string{"/a", "/a/b"}, hit: []string{"/c"}},
		{name: "tag", body: "{\"tag\":\"c\"}\n", purged: 1, missed: []string{"/c"}, hit: []string{"/a"}},
		// Spelt as a client may send it: the cache's key has the host
		// lower-cased, no default port and the path's escapes upper-cased
		// (not the query's, which it keeps as sent).
		{name: "key as a client spells it", body: `{"key":"HTTP://Example.COM:80/d%2fe?q=%2f"}`, purged: 1, missed: []string{"/d%2Fe?q=%2f"}, hit: []string{"/a"}},
		{name: "prefix as a client spells it", body: `{"prefix":"http://EXAMPLE.com/d%2f"}`, purged: 1, missed: []string{"/d%2Fe?q=%2f"}, hit: []string{"/a"}},
		// A prefix ending with the default port names that origin only,
		// not the hosts and ports its spelling without the port begins.
		{name: "prefix of an origin with its default port", body: `{"prefix":"http://EXAMPLE.com:80"}`, purged: 4, missed: []string{"/a", "/a/b", "/c", "/d%2Fe?q=%2f"}, hit: others},
		{name: "prefix of an origin", body: `{"prefix":"http://example.com:8080/"}`, purged: 1, missed: others[:1], hit: []string{"/a", others[1]}},
		{name: "all", body: `{"cache":"admin-test","all":true}`, purged: 6, missed: append([]string{"/a", "/a/b", "/c", "/d%2Fe?q=%2f"}, others...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fill()
			w := httptest.NewRecorder()
			r := httptest.NewRequest(http.MethodPost, "/response_cache/purge", strings.NewReader(tc.body))
			if err := api.handlePurge(w, r); err != nil {
				t.Fatalf("purge: %v", err)
			}
			var resp PurgeResponse
			if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
				t.Fatalf("decoding %q: %v", w.Body.String(), err)
			}
			// Other tests' caches may be live too; these keys, prefixes
			// and tags are only in ours.
			if resp.Purged != tc.purged || resp.Caches < 1 {
				t.Errorf("response %+v, want %d purged", resp, tc.purged)
			}
			h.store.wait()
			for _, p := range tc.missed {
				wantStatus(t, get(t, h, o, url(p)), []string{"fwd=uri-miss"})
			}
			for _, p := range tc.hit {
				wantStatus(t, get(t, h, o, url(p)), []string{"hit"})
			}
		})
	}
}

// TestAdminPurgeKeysWithListener: keys of requests that came in on
// another port than Host names carry '#' and that port; a purge spells
// them as the cache does, and a prefix ending at an origin's default
// port covers them.
func TestAdminPurgeKeysWithListener(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{CacheName: "admin-listener"}, c)
	o := static(c, 200, "page", "Cache-Control", "max-age=60")
	on := func(target string, port int) *http.Request {
		r := newRequest(http.MethodGet, target)
		return r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}))
	}
	mapped := func() *http.Request { return on("http://example.net:8080/a", 80) } // a port mapping
	portless := func() *http.Request { return on("http://example.net/b", 8080) }
	api := AdminAPI{}
	for _, tc := range []struct {
		name, body string
		missed     func() *http.Request
		hit        func() *http.Request
	}{
		{"key", `{"key":"HTTP://Example.NET:8080#80/a"}`, mapped, portless},
		{"prefix of the origin with its default port", `{"prefix":"http://example.net:80"}`, portless, mapped},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, r := range []*http.Request{mapped(), portless()} {
				serve(t, h, o, r)
			}
			w := httptest.NewRecorder()
			if err := api.handlePurge(w, httptest.NewRequest(http.MethodPost, "/response_cache/purge", strings.NewReader(tc.body))); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(w.Body.String(), `"purged":1`) {
				t.Errorf("purge %s: %s, want 1 purged", tc.body, w.Body.String())
			}
			h.store.wait()
			wantStatus(t, serve(t, h, o, tc.missed()), []string{"fwd=uri-miss"})
			wantStatus(t, serve(t, h, o, tc.hit()), []string{"hit"})
		})
	}
}

func TestAdminErrors(t *testing.T) {
	newTestHandler(t, Config{CacheName: "admin-errors"}, newClock())
	api := AdminAPI{}
	for _, tc := range []struct {
		name, method, path, body string
		code                     int
		allow                    string // on a 405 (RFC 9110 §15.5.6)
		msg                      string // in the error, where given
	}{
		{name: "empty", method: "POST", path: "/response_cache/purge", body: " \n", code: 400, msg: "the request body is empty; send a JSON object naming one of key, prefix or tag, or all"},
		{name: "purge GET", method: "GET", path: "/response_cache/purge", code: 405, allow: "POST"},
		{name: "bad json", method: "POST", path: "/response_cache/purge", body: `{`, code: 400},
		{name: "unknown field", method: "POST", path: "/response_cache/purge", body: `{"keys":"x"}`, code: 400},
		{name: "nothing", method: "POST", path: "/response_cache/purge", body: `{}`, code: 400},
		{name: "empty prefix", method: "POST", path: "/response_cache/purge", body: `{"prefix":""}`, code: 400},
		{name: "a path for a key", method: "POST", path: "/response_cache/purge", body: `{"key":"/report"}`, code: 400},
		{name: "a path for a prefix", method: "POST", path: "/response_cache/purge", body: `{"prefix":"/"}`, code: 400},
		{name: "two", method: "POST", path: "/response_cache/purge", body: `{"key":"a","all":true}`, code: 400},
		{name: "trailing data", method: "POST", path: "/response_cache/purge", body: `{"all":true} garbage`, code: 400},
		{name: "stray brace", method: "POST", path: "/response_cache/purge", body: `{"all":true}}`, code: 400},
		{name: "two objects", method: "POST", path: "/response_cache/purge", body: `{"key":"a"}{"all":true}`, code: 400},
		{name: "too large", method: "POST", path: "/response_cache/purge", body: `{"key":"` + strings.Repeat("a", maxPurgeBody) + `"}`, code: 413},
		{name: "unknown cache", method: "POST", path: "/response_cache/purge", body: `{"cache":"nope","all":true}`, code: 404},
		// Bodies that name one thing, but one no entry can have.
		{name: "a field in upper case", method: "POST", path: "/response_cache/purge", body: `{"KEY":"http://example.com/a"}`, code: 400},
		{name: "a field twice", method: "POST", path: "/response_cache/purge", body: `{"key":"http://example.com/a","key":"http://example.com/b"}`, code: 400},
		{name: "white space before a key", method: "POST", path: "/response_cache/purge", body: `{"key":" http://example.com/a"}`, code: 400},
		{name: "another scheme", method: "POST", path: "/response_cache/purge", body: `{"prefix":"gopher://example.com/"}`, code: 400},
		{name: "a key without a host", method: "POST", path: "/response_cache/purge", body: `{"key":"https://"}`, code: 400},
		{name: "a tag of white space", method: "POST", path: "/response_cache/purge", body: `{"tag":"   "}`, code: 400},
		{name: "a tag too long to be indexed", method: "POST", path: "/response_cache/purge", body: `{"tag":"` + strings.Repeat("t", maxTagLength+1) + `"}`, code: 400},
		{name: "stats POST", method: "POST", path: "/response_cache/stats", code: 405, allow: "GET, HEAD"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var handler caddy.AdminHandler
			for _, rt := range api.Routes() {
				if rt.Pattern == tc.path {
					handler = rt.Handler
				}
			}
			r := httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body))
			w := httptest.NewRecorder()
			err := handler.ServeHTTP(w, r)
			if got := w.Header().Get("Allow"); got != tc.allow {
				t.Errorf("Allow %q, want %q", got, tc.allow)
			}
			var apiErr caddy.APIError
			if !errors.As(err, &apiErr) || apiErr.HTTPStatus != tc.code {
				t.Errorf("error %v, want an APIError with status %d", err, tc.code)
			}
			if err != nil && !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %v, want it to say %q", err, tc.msg)
			}
		})
	}
}

// TestPurgeKeyWithRawUTF8Path: a key typed with a raw UTF-8 path, as a
// browser shows it, finds the entry the cache keyed with the path
// escaped, as it escapes a request's; a longest tag is accepted.
func TestPurgeKeyWithRawUTF8Path(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{CacheName: "admin-utf8"}, c)
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Cache-Control", "max-age=60")
		if r.URL.Path == "/f" {
			w.Header().Set("Surrogate-Key", strings.Repeat("t", maxTagLength))
		}
		_, _ = w.Write([]byte("x"))
		return nil
	}}
	core, logs := observer.New(zapcore.InfoLevel)
	api := AdminAPI{logger: zap.New(core)}
	get(t, h, o, "http://example.com/p/100%20off") // not to be purged by the prefix /p/100%
	for _, tc := range []struct{ body, url string }{
		{`{"cache":"admin-utf8","key":"http://example.com/c/café"}`, "http://example.com/c/caf%C3%A9"},
		{`{"cache":"admin-utf8","prefix":"http://example.com/d/é"}`, "http://example.com/d/%c3%a9/x"},
		// As a browser sends it: the UTF-8 escaped, the parentheses not.
		{`{"cache":"admin-utf8","key":"http://example.com/wiki/Café_(film)!"}`, "http://example.com/wiki/Caf%C3%A9_(film)!"},
		{`{"cache":"admin-utf8","key":"http://example.com/g/100%"}`, "http://example.com/g/100%25"},
		// As a client that sent the path raw is keyed: Go escapes all of it.
		{`{"cache":"admin-utf8","key":"http://example.com/wiki/Tea_(hot)|x"}`, "http://example.com/wiki/Tea_(hot)|x"},
		// A prefix ending within an escape.
		{`{"cache":"admin-utf8","prefix":"http://example.com/caf%c"}`, "http://example.com/caf%C3%A9"},
		// A lone % beside a raw byte: both spellings, the raw-sent one
		// (/wiki/Tea_%28hot%29%7C100%25) too.
		{`{"cache":"admin-utf8","key":"http://example.com/wiki/Tea_(hot)|100%"}`, "http://example.com/wiki/Tea_(hot)|100%25"},
		// A lone % ending a prefix is a literal one: /p/100%25 only, not
		// /p/100%20off, filled before.
		{`{"cache":"admin-utf8","prefix":"http://example.com/p/100%"}`, "http://example.com/p/100%25"},
		{`{"cache":"admin-utf8","tag":"` + strings.Repeat("t", maxTagLength) + `"}`, "http://example.com/f"},
	} {
		get(t, h, o, tc.url)
		wantStatus(t, get(t, h, o, tc.url), []string{"hit"})
		w := httptest.NewRecorder()
		if err := api.handlePurge(w, httptest.NewRequest(http.MethodPost, "/response_cache/purge", strings.NewReader(tc.body))); err != nil {
			t.Fatalf("purge %s: %v", tc.body, err)
		}
		var resp PurgeResponse
		if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil || resp.Purged != 1 {
			t.Errorf("purge %s: %s; want 1 purged", tc.body, w.Body)
		}
		h.store.wait()
		wantStatus(t, get(t, h, o, tc.url), []string{"fwd=uri-miss"})
	}
	// Each purge is logged, with what it named and what it did.
	entries := logs.FilterMessage("purged").All()
	if len(entries) != 9 {
		t.Fatalf("%d purges logged, want 9", len(entries))
	}
	if f := entries[0].ContextMap(); f["cache"] != "admin-utf8" || f["key"] != "http://example.com/c/café" || f["purged"] != int64(1) || f["caches"] != int64(1) {
		t.Errorf("purge logged with %v", f)
	}
}

// TestPurgeCustomKeyEndingWithASpace: a custom key whose template ends
// with a placeholder the request lacks ends with a space, as status_key
// shows it; a purge names it so, and a prefix with the space keeps
// /c2's entries.
func TestPurgeCustomKeyEndingWithASpace(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{CacheName: "admin-custom", Key: "{http.request.uri.path} {http.request.header.X-Tenant}"}, c)
	o := static(c, 200, "x", "Cache-Control", "max-age=60")
	for _, u := range []string{"http://example.com/c", "http://example.com/c2"} {
		get(t, h, o, u)
		wantStatus(t, get(t, h, o, u), []string{"hit"})
	}
	for _, body := range []string{`{"cache":"admin-custom","prefix":"http://example.com /c "}`, `{"cache":"admin-custom","key":"http://example.com /c "}`} {
		w := httptest.NewRecorder()
		if err := (AdminAPI{}).handlePurge(w, httptest.NewRequest(http.MethodPost, "/response_cache/purge", strings.NewReader(body))); err != nil {
			t.Fatalf("purge %s: %v", body, err)
		}
		h.store.wait()
		wantStatus(t, get(t, h, o, "http://example.com/c"), []string{"fwd=uri-miss"})
		wantStatus(t, get(t, h, o, "http://example.com/c2"), []string{"hit"})
	}
}

func TestAdminStats(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{CacheName: "admin-stats"}, c)
	get(t, h, static(c, 200, "s", "Cache-Control", "max-age=60"), "http://example.com/s")
	w := httptest.NewRecorder()
	if err := (AdminAPI{}).handleStats(w, httptest.NewRequest(http.MethodGet, "/response_cache/stats", nil)); err != nil {
		t.Fatal(err)
	}
	var stats []storeStats
	if err := json.Unmarshal(w.Body.Bytes(), &stats); err != nil {
		t.Fatalf("decoding %q: %v", w.Body.String(), err)
	}
	for _, s := range stats {
		if s.Cache == "admin-stats" {
			if s.Entries != 1 || s.Bytes <= 0 || s.MaxBytes != defaultMaxSize || s.Stores != 1 {
				t.Errorf("stats %+v", s)
			}
			return
		}
	}
	t.Errorf("no stats for admin-stats in %s", w.Body.String())
}

// TestPurgeReachesTheURLOnEveryPort: a purge or an unsafe method's
// invalidation names a URL; the copies of it received on other ports
// than Host names (keys with '#' and the port), and those keyed by the
// other spelling of its default port, go too, and a prefix without a
// listener mark covers them; a key or prefix with a mark names that port's
// only. On a tier, the nodes' keys are the front's URLs received on the
// node's port: purged by the front's URL.
func TestPurgeReachesTheURLOnEveryPort(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{CacheName: "purge-ports"}, c)
	o := static(c, 200, "page", "Cache-Control", "max-age=60")
	on := func(method, target string, port int) *http.Request {
		r := newRequest(method, target)
		if port == 0 {
			return r
		}
		return r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}))
	}
	ports := []int{0, 8101, 8102}
	// :443 too: an http node behind a front that ends TLS gets the Host
	// of a client naming https's default port (a review: such entries
	// escaped purges and POSTs).
	origins := []string{"http://a.test", "http://a.test:80", "http://a.test:443"}
	paths := []string{"/p/1", "/p/2", "/q"}
	fill := func() {
		for _, port := range ports {
			for _, og := range origins {
				for _, p := range paths {
					serve(t, h, o, on(http.MethodGet, og+p, port))
				}
			}
		}
	}
	want := func(name string, missed []string, onPort int) {
		t.Helper()
		for _, port := range ports {
			for _, og := range origins {
				for _, p := range paths {
					w := serve(t, h, o, on(http.MethodGet, og+p, port))
					miss := slices.Contains(missed, p) && (onPort == 0 || onPort == port)
					if hit := hasParam(w.Header().Get("Cache-Status"), "hit"); hit == miss {
						t.Errorf("%s: %s%s on port %d: %s", name, og, p, port, w.Header().Get("Cache-Status"))
					}
				}
			}
		}
	}
	api := AdminAPI{}
	for _, tc := range []struct {
		name, body string
		purged     int
		missed     []string
		onPort     int
	}{
		{"key", `{"key":"http://a.test/p/1"}`, 9, []string{"/p/1"}, 0},
		{"key with the default port", `{"key":"http://A.test:80/p/1"}`, 9, []string{"/p/1"}, 0},
		{"key with https's default port", `{"key":"http://a.test:443/p/1"}`, 9, []string{"/p/1"}, 0},
		{"key with a listener", `{"key":"http://a.test#8102/p/2"}`, 3, []string{"/p/2"}, 8102},
		{"prefix", `{"prefix":"http://a.test/p/"}`, 18, []string{"/p/1", "/p/2"}, 0},
		{"prefix with a listener", `{"prefix":"http://a.test:80#8101/p/"}`, 6, []string{"/p/1", "/p/2"}, 8101},
		{"prefix ending at https's default port", `{"prefix":"http://a.test:443"}`, 27, []string{"/p/1", "/p/2", "/q"}, 0},
	} {
		fill()
		w := httptest.NewRecorder()
		if err := api.handlePurge(w, httptest.NewRequest(http.MethodPost, "/response_cache/purge", strings.NewReader(tc.body))); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(w.Body.String(), fmt.Sprintf(`"purged":%d,`, tc.purged)) {
			t.Errorf("%s: %s, want %d purged", tc.name, w.Body.String(), tc.purged)
		}
		h.store.wait()
		want(tc.name, tc.missed, tc.onPort)
	}
	for _, og := range origins {
		fill()
		serve(t, h, o, on(http.MethodPost, og+"/q", 8101))
		h.store.wait()
		want("POST to "+og, []string{"/q"}, 0)
	}
}

// TestPurgeDuringTheFirstFillOnAPort: a purge that comes while the
// store's first response received on a listener port is being fetched
// keeps it out, as for any other fill: the port is noted when the fill
// begins, not when it is stored (a review stored it).
func TestPurgeDuringTheFirstFillOnAPort(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{CacheName: "purge-first-port", MinUses: 1}, c)
	started, release := make(chan struct{}), make(chan struct{})
	start := sync.OnceFunc(func() { close(started) })
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Cache-Control", "max-age=60")
		start()
		<-release
		_, _ = io.WriteString(w, "page")
		return nil
	}}
	on := func(target string) *http.Request {
		r := newRequest(http.MethodGet, target)
		return r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8102}))
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		w := httptest.NewRecorder()
		_ = h.ServeHTTP(w, on("http://a.test/slow"), o)
	}()
	<-started
	w := httptest.NewRecorder()
	if err := (AdminAPI{}).handlePurge(w, httptest.NewRequest(http.MethodPost, "/response_cache/purge", strings.NewReader(`{"key":"http://a.test/slow"}`))); err != nil {
		t.Fatal(err)
	}
	close(release)
	<-done
	h.store.wait()
	wantStatus(t, serve(t, h, o, on("http://a.test/slow")), []string{"fwd=uri-miss"})
}

// FuzzAdminPurge: whatever body a purge request carries, the handler
// answers it (a 200 with counts, or an APIError of a status the README
// lists), never panics, and leaves the store serving.
func FuzzAdminPurge(f *testing.F) {
	for _, seed := range []string{
		`{"key":"http://example.com/a"}`, `{"prefix":"http://example.com/"}`, `{"tag":"t"}`, `{"all":true}`,
		`{"cache":"admin-fuzz","key":"HTTP://Example.COM:80/d%2fe?q=%2f"}`, `{"prefix":"http://EXAMPLE.com/d%2"}`,
		`{"key":"http://[::1]:8080/x#80"}`, `{"key":"http://a.test#8080/a"}`, `{`, `{}`, `{"key":"a","all":true}`,
		`{"prefix":"https://xn--nxasmq6b.example/\u00e9"}`,
	} {
		f.Add(seed)
	}
	c := newClock()
	h := newTestHandler(f, Config{CacheName: "admin-fuzz"}, c)
	o := static(c, 200, "x", "Cache-Control", "max-age=60", "Surrogate-Key", "t")
	api := AdminAPI{}
	f.Fuzz(func(t *testing.T, body string) {
		get(t, h, o, "http://example.com/a")
		w := httptest.NewRecorder()
		err := api.handlePurge(w, httptest.NewRequest(http.MethodPost, "/response_cache/purge", strings.NewReader(body)))
		var apiErr caddy.APIError
		switch {
		case err == nil:
			var res struct{ Purged, Caches int }
			if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &res) != nil || res.Caches < 1 {
				t.Fatalf("purge %q: %d %q", body, w.Code, w.Body.String())
			}
		case !errors.As(err, &apiErr) || !slices.Contains([]int{400, 404, 413}, apiErr.HTTPStatus):
			t.Fatalf("purge %q: %v, want an APIError of 400, 404 or 413", body, err)
		}
		if r := get(t, h, o, "http://example.com/b"); r.Code != http.StatusOK || r.Body.String() != "x" {
			t.Fatalf("after purge %q the cache answered %d %q", body, r.Code, r.Body.String())
		}
	})
}

// TestPurgeKeyAsShown: a key copied from Cache-Status (status_key), which
// shows the raw bytes of a query or a custom key's part percent-encoded
// and a quote escaped, purges the entry; a twin the client sent escaped
// shows the same key, and goes too.
func TestPurgeKeyAsShown(t *testing.T) {
	c := newClock()
	o := static(c, 200, "x", "Cache-Control", "max-age=60")
	for _, tc := range []struct {
		name, key string
		urls      []string // the first is shown; all show the same key
		header    string   // X-Tenant
	}{
		{name: "raw UTF-8 query", urls: []string{"http://example.com/q?name=caf\xc3\xa9"}},
		{name: "raw and escaped twins", urls: []string{"http://example.com/q?name=caf\xc3\xa9", "http://example.com/q?name=caf%C3%A9"}},
		{name: "custom key with raw UTF-8 and a quote", key: "{http.request.header.X-Tenant} {http.request.uri.path}", header: "caf\xc3\xa9 \"a\"", urls: []string{"http://example.com/p"}},
		// Sent escaped (a browser's UTF-8) beside a raw backslash, shown
		// escaped: only the backslash's escape is to be undone.
		{name: "escaped UTF-8 and a raw backslash", urls: []string{"http://example.com/q?a=%C3%A9&p=C:\\dir"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := fmt.Sprintf("admin-shown-%d", testCacheSeq.Add(1))
			h := newTestHandler(t, Config{CacheName: name, Key: tc.key, StatusKey: true, MinUses: 1}, c)
			req := func(u string) *http.Request {
				r := newRequest(http.MethodGet, u)
				if tc.header != "" {
					r.Header.Set("X-Tenant", tc.header)
				}
				return r
			}
			var shown string
			for i, u := range tc.urls {
				serve(t, h, o, req(u))
				h.store.wait()
				w := serve(t, h, o, req(u))
				wantStatus(t, w, []string{"hit"})
				cs := w.Header().Get("Cache-Status")
				_, k, ok := strings.Cut(cs, `key="`)
				if !ok || !strings.HasSuffix(k, `"`) {
					t.Fatalf("Cache-Status %q shows no key", cs)
				}
				k = strings.TrimSuffix(k, `"`)
				if i == 0 {
					shown = k
				} else if k != shown {
					t.Fatalf("%s shows key %q, %s %q", u, k, tc.urls[0], shown)
				}
			}
			body, _ := json.Marshal(PurgeRequest{Cache: name, Key: shown})
			w := httptest.NewRecorder()
			if err := (AdminAPI{}).handlePurge(w, httptest.NewRequest(http.MethodPost, "/response_cache/purge", strings.NewReader(string(body)))); err != nil {
				t.Fatalf("purge %s: %v", body, err)
			}
			if want := fmt.Sprintf(`"purged":%d`, len(tc.urls)); !strings.Contains(w.Body.String(), want) {
				t.Errorf("purge of the shown key %q: %s; want %s", shown, w.Body.String(), want)
			}
			h.store.wait()
			for _, u := range tc.urls {
				wantStatus(t, serve(t, h, o, req(u)), []string{"fwd=uri-miss"})
			}
		})
	}
}
