package cache

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// hintOrigin answers with the header fields its answer function gives
// for each request, and holds the requests carrying X-Hold until the
// test lets one go.
type hintOrigin struct {
	*origin
	gate chan struct{}
	mu   sync.Mutex
	// answer returns the status and fields for r; set by the test.
	answer func(r *http.Request) (int, []string)
	// body, when set, returns the body for r (else "body").
	body func(r *http.Request) string
}

func newHintOrigin() *hintOrigin {
	o := &hintOrigin{gate: make(chan struct{})}
	o.answer = func(*http.Request) (int, []string) { return 200, nil }
	o.origin = &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		if r.Header.Get("X-Hold") != "" {
			<-o.gate
		}
		o.mu.Lock()
		status, fields := o.answer(r)
		body := "body"
		if o.body != nil {
			body = o.body(r)
		}
		o.mu.Unlock()
		for i := 0; i+1 < len(fields); i += 2 {
			w.Header().Add(fields[i], fields[i+1])
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
		return nil
	}}
	return o
}

// always makes o answer every request with status and fields.
func (o *hintOrigin) always(status int, fields ...string) {
	o.answerWith(func(*http.Request) (int, []string) { return status, fields })
}

// hinted reports whether h holds its hint for url's key.
func hinted(t *testing.T, h *Handler, url string) bool {
	t.Helper()
	return h.hints.has(keyHash([]byte(keyOf(t, h, newRequest(http.MethodGet, url)))), h.hintGen, h.now)
}

func (o *hintOrigin) answerWith(f func(r *http.Request) (int, []string)) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.answer = f
}

// anyWaiting reports whether a request waits on any flight of g.
func (g *flightGroup) anyWaiting() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, f := range g.m {
		if f.waiters.Load() > 0 {
			return true
		}
	}
	return false
}

// concurrentPair sends a request the origin holds and, while it is held,
// a second one for the same URL with the same fields, and reports whether
// the second reached the origin without waiting for the first.
func concurrentPair(t *testing.T, h *Handler, o *hintOrigin, url string, fields ...string) bool {
	t.Helper()
	before := o.calls.Load()
	first := make(chan struct{})
	go func() {
		defer close(first)
		_ = h.ServeHTTP(httptest.NewRecorder(), newRequest(http.MethodGet, url, append([]string{"X-Hold", "1"}, fields...)...), o)
	}()
	until(t, "the first request to reach the origin", func() bool { return o.calls.Load() == before+1 })
	second := make(chan struct{})
	go func() {
		defer close(second)
		_ = h.ServeHTTP(httptest.NewRecorder(), newRequest(http.MethodGet, url, fields...), o)
	}()
	until(t, "the second request to reach the origin or wait for the first", func() bool {
		return o.calls.Load() == before+2 || h.flights.anyWaiting()
	})
	reached := o.calls.Load() == before+2
	o.gate <- struct{}{}
	<-first
	<-second
	h.store.wait()
	return reached
}

// TestUncacheableKeysSkipCoalescing: once a key's response was not
// storable for a reason of its own, its concurrent requests go to the
// origin at once, rather than each waiting for another's response header
// to learn it must (twice the time to first byte), until a response is
// stored under the key or hintTTL passes.
func TestUncacheableKeysSkipCoalescing(t *testing.T) {
	for _, tc := range []struct {
		name   string
		fields []string
	}{
		{"no freshness", nil},
		{"private", []string{"Cache-Control", "private, max-age=60"}},
		{"no-store", []string{"Cache-Control", "no-store"}},
		{"Vary: *", []string{"Cache-Control", "max-age=60", "Vary", "*"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{}, c)
			o := newHintOrigin()
			const url = "http://example.com/api"
			o.always(500) // neither stored nor hinted
			if concurrentPair(t, h, o, url) {
				t.Fatal("with no hint, the second request did not wait for the first")
			}
			if hinted(t, h, url) {
				t.Fatal("a 500 hinted its key")
			}
			o.always(200, tc.fields...)
			get(t, h, o, url)
			if !concurrentPair(t, h, o, url) {
				t.Error("after an uncacheable response, a request waited for another's")
			}
			c.Advance(hintTTL - time.Second)
			if !concurrentPair(t, h, o, url) { // each response renews the hint
				t.Error("within hintTTL of the last uncacheable response, a request waited for another's")
			}
			c.Advance(hintTTL)
			o.always(200, "Cache-Control", "max-age=60")
			if concurrentPair(t, h, o, url) {
				t.Error("past hintTTL, a request did not wait for the fill")
			}
		})
	}
}

// TestStoringClearsTheHint: a storable response under a hinted key is
// stored, and its next miss coalesces again.
func TestStoringClearsTheHint(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	o := newHintOrigin()
	const url = "http://example.com/page"
	o.always(200, "Cache-Control", "private")
	get(t, h, o, url)
	o.always(200, "Cache-Control", "max-age=60")
	if !concurrentPair(t, h, o, url) {
		t.Fatal("after a private response, a request waited for another's")
	}
	wantStatus(t, get(t, h, o, url), []string{"hit"})
	if hinted(t, h, url) {
		t.Error("the stored response left the hint in place")
	}
	h.store.purgeKey(keyOf(t, h, newRequest(http.MethodGet, url)))
	if concurrentPair(t, h, o, url) {
		t.Error("after the stored response was purged, a miss did not wait for the fill")
	}
}

// TestHintsOnlyFromTheResponse: a response that is not storable for a
// reason that may lie with the request, the traffic or a passing error
// leaves the key's next misses coalescing.
func TestHintsOnlyFromTheResponse(t *testing.T) {
	for _, tc := range []struct {
		name    string
		config  Config
		status  int
		fields  []string
		request []string
	}{
		{name: "server error", status: 503},
		{name: "too many requests", status: 429},
		{name: "not found", status: 404, fields: []string{"Cache-Control", "private"}},
		{name: "authorization", status: 200, fields: []string{"Cache-Control", "private"}, request: []string{"Authorization", "Bearer x"}},
		// (A cookie set or an Authorization hints the requests like its
		// own: TestCredentialClassHints; the pair here has neither.)
		{name: "set-cookie", status: 200, fields: []string{"Cache-Control", "max-age=60", "Set-Cookie", "s=1"}, request: []string{"Cookie", "s=0"}},
		{name: "private with set-cookie", status: 200, fields: []string{"Cache-Control", "private", "Set-Cookie", "s=1"}, request: []string{"Cookie", "s=0"}},
		{name: "min_uses", config: Config{MinUses: 2}, status: 200, fields: []string{"Cache-Control", "max-age=60"}},
		// A conditional miss goes as it came only when its answer would
		// not be stored anyway (see fetchWhole): here, for min_uses.
		{name: "client's conditional", config: Config{MinUses: 2}, status: 200, fields: []string{"Cache-Control", "max-age=60"}, request: []string{"If-None-Match", `"v1"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, tc.config, c)
			o := newHintOrigin()
			url := "http://example.com/x"
			o.answerWith(func(r *http.Request) (int, []string) {
				if r.Header.Get("If-None-Match") != "" {
					return http.StatusNotModified, []string{"Etag", `"v1"`}
				}
				return tc.status, tc.fields
			})
			get(t, h, o, url, tc.request...)
			if hinted(t, h, url) {
				t.Fatal("the response left a hint")
			}
			o.always(200, "Cache-Control", "max-age=60")
			if concurrentPair(t, h, o, url) {
				t.Error("the next miss did not wait for the fill")
			}
		})
	}
}

// TestHintsAreNotForRevalidations: a stale entry's revalidations
// coalesce whatever the hints say: its URL was storable, and its refresh
// is what keeps a popular URL from stampeding the origin when it expires.
func TestHintsAreNotForRevalidations(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	o := newHintOrigin()
	const url = "http://example.com/popular"
	o.answerWith(func(*http.Request) (int, []string) {
		return 200, []string{"Cache-Control", "max-age=10", "Etag", `"v1"`}
	})
	get(t, h, o, url)
	// A hint set after the entry was stored, as by a private response to
	// a request that missed while the entry was being filled.
	h.hints.set(keyHash([]byte(keyOf(t, h, newRequest(http.MethodGet, url)))), h.hintGen, c.Now())
	c.Advance(20 * time.Second)
	if concurrentPair(t, h, o, url) {
		t.Error("a hint made a revalidation of a stale entry skip coalescing")
	}
	if got := o.last().Header.Get("If-None-Match"); got != `"v1"` {
		t.Errorf("the origin's last request was not the revalidation (If-None-Match %q)", got)
	}
}

// TestHintsAreByVariant: with a URL's variants known, a private response
// for one variant hints only that variant's key; another variant's
// misses still coalesce.
func TestHintsAreByVariant(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	o := newHintOrigin()
	const url = "http://example.com/home"
	o.answerWith(func(r *http.Request) (int, []string) {
		if r.Header.Get("X-User") == "bob" {
			return 200, []string{"Cache-Control", "private", "Vary", "X-User"}
		}
		return 200, []string{"Cache-Control", "max-age=60", "Vary", "X-User"}
	})
	get(t, h, o, url, "X-User", "ann")
	wantStatus(t, get(t, h, o, url, "X-User", "ann"), []string{"hit"})
	get(t, h, o, url, "X-User", "bob")
	if !concurrentPair(t, h, o, url, "X-User", "bob") {
		t.Error("after a private response for a variant, its requests waited for one another")
	}
	if hinted(t, h, url) {
		t.Error("a variant's private response hinted its URL's key")
	}
	if concurrentPair(t, h, o, url, "X-User", "cat") {
		t.Error("another variant's misses did not coalesce")
	}
}

// TestPurgesClearHints: a purge by key clears that key's hint, one by
// prefix or tag every hint (they keep no keys).
func TestPurgesClearHints(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	o := newHintOrigin()
	urls := []string{"http://example.com/a", "http://example.com/b"}
	hashes := make([]uint64, len(urls))
	hintAll := func() {
		t.Helper()
		for i, u := range urls {
			get(t, h, o, u)
			hashes[i] = keyHash([]byte(keyOf(t, h, newRequest(http.MethodGet, u))))
			if !h.hints.has(hashes[i], h.hintGen, c.Now) {
				t.Fatalf("%s: no hint after a response without freshness", u)
			}
		}
	}
	hintAll()
	h.store.purgeKey(keyOf(t, h, newRequest(http.MethodGet, urls[0])))
	if h.hints.has(hashes[0], h.hintGen, c.Now) || !h.hints.has(hashes[1], h.hintGen, c.Now) {
		t.Error("a purge by key did not clear exactly its key's hint")
	}
	for name, purge := range map[string]func(){
		"prefix": func() { h.store.purgePrefix("http://example.com/") },
		"tag":    func() { h.store.purgeTag("t") },
		"all":    func() { h.store.purgeAll() },
	} {
		hintAll()
		purge()
		for i := range urls {
			if h.hints.has(hashes[i], h.hintGen, c.Now) {
				t.Errorf("purge by %s left the hint of %s", name, urls[i])
			}
		}
	}
}

func TestUncacheableHintsExpire(t *testing.T) {
	var u uncacheableHints
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := func(t time.Time) func() time.Time { return func() time.Time { return t } }
	for _, h := range []uint64{0xdeadbeefcafef00d, 1 << 40, 12345 << 32, 7} {
		u.set(h, 7, now)
		if !u.has(h, 7, clock(now)) || !u.has(h, 7, clock(now.Add(hintTTL-time.Second))) {
			t.Errorf("%x: no hint within its TTL", h)
		}
		for _, later := range []time.Duration{hintTTL, hintTTL + time.Hour, 1 << 24 * time.Second, 1 << 32 * time.Second} {
			if u.has(h, 7, clock(now.Add(later))) {
				t.Errorf("%x: hint %v later", h, later)
			}
		}
		if u.has(h^(1<<50), 7, clock(now)) {
			t.Errorf("%x: another hash in the same slot has the hint", h)
		}
		if u.has(h, 8, clock(now)) {
			t.Errorf("%x: another handler's generation has the hint", h)
		}
		u.clear(h ^ (1 << 50))
		if !u.has(h, 7, clock(now)) {
			t.Errorf("%x: clearing another hash in the same slot cleared the hint", h)
		}
		u.clear(h)
		if u.has(h, 7, clock(now)) {
			t.Errorf("%x: hint after clear", h)
		}
	}
	var called atomic.Bool
	if u.has(1, 7, func() time.Time { called.Store(true); return now }) || called.Load() {
		t.Error("an empty slot read the clock or had a hint")
	}
	u.set(1, 7, time.Unix(0, 0)) // a clock before hintEpoch: no hint
	if u.has(1, 7, clock(time.Unix(0, 0))) {
		t.Error("a hint from before hintEpoch")
	}
}

// TestVaryingPrivateResponseWithoutRecordHintsNoURL: a logged-in user's
// `private, Vary: Cookie` response, while the URL has no variant record
// (cold cache, after a purge or the record's eviction), must not stop the
// anonymous misses of the URL, which fly under the URL key, from
// coalescing on their (storable) fill.
func TestVaryingPrivateResponseWithoutRecordHintsNoURL(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	o := newHintOrigin()
	const url = "http://example.com/home"
	o.answerWith(func(r *http.Request) (int, []string) {
		if r.Header.Get("Cookie") != "" {
			return 200, []string{"Cache-Control", "private", "Vary", "Cookie"}
		}
		return 200, []string{"Cache-Control", "public, max-age=60", "Vary", "Cookie"}
	})
	check := func(when string) {
		t.Helper()
		get(t, h, o, url, "Cookie", "session=bob")
		if concurrentPair(t, h, o, url) {
			t.Errorf("%s: after a logged-in user's private variant, anonymous misses of the URL skipped coalescing", when)
		}
	}
	check("cold cache")
	wantStatus(t, get(t, h, o, url), []string{"hit"})
	h.store.purgeAll()
	check("after a purge")
}

// TestReloadedConfigIgnoresOldHints: the store, and its hints, outlive a
// config reload, and the old config's handlers go on answering (and
// finding responses not storable) until the new one takes over. After
// the old config found a URL without Cache-Control not storable, a new
// one with default_ttl stores it; its misses must coalesce on the first
// one's fill, not all go to the origin.
func TestReloadedConfigIgnoresOldHints(t *testing.T) {
	c := newClock()
	old := newTestHandler(t, Config{CacheName: "reload-hints"}, c)
	o := newHintOrigin()
	const url = "http://example.com/api"
	get(t, old, o, url) // no Cache-Control: not storable, hinted
	reloaded := newTestHandler(t, Config{CacheName: "reload-hints", DefaultTTL: caddy.Duration(time.Minute)}, c)
	if reloaded.store != old.store {
		t.Fatal("the handlers do not share a store")
	}
	get(t, old, o, url) // the old config, still serving, hints again
	if !concurrentPair(t, old, o, url) {
		t.Error("the old config's handler lost its own hint")
	}
	if concurrentPair(t, reloaded, o, url) {
		t.Error("a miss the reloaded config stores did not wait for the first one's fill")
	}
	wantStatus(t, get(t, reloaded, o, url), []string{"hit"})
}

// TestPrivateResponseVaryingOnMoreHintsNoSharedVariant: with the URL's
// record varying on Accept-Encoding (the anonymous responses'), a
// logged-in user's `private, Vary: Cookie, Accept-Encoding` response (as
// Django sends once the session is read) flies under the same variant as
// the anonymous requests: it must not hint that variant.
func TestPrivateResponseVaryingOnMoreHintsNoSharedVariant(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	o := newHintOrigin()
	const url = "http://example.com/home"
	o.answerWith(func(r *http.Request) (int, []string) {
		if r.Header.Get("Cookie") != "" {
			return 200, []string{"Cache-Control", "private", "Vary", "Cookie, Accept-Encoding"}
		}
		return 200, []string{"Cache-Control", "public, max-age=60", "Vary", "Accept-Encoding"}
	})
	get(t, h, o, url, "Accept-Encoding", "gzip")
	wantStatus(t, get(t, h, o, url, "Accept-Encoding", "gzip"), []string{"hit"})
	get(t, h, o, url, "Accept-Encoding", "br", "Cookie", "sessionid=bob")
	if concurrentPair(t, h, o, url, "Accept-Encoding", "br") {
		t.Error("after a logged-in user's private response, anonymous misses of its variant skipped coalescing")
	}
}

// TestRevalidationsSetNoHint: a stale entry's revalidation answered
// `private` leaves no hint: its URL was storable.
func TestRevalidationsSetNoHint(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	o := newHintOrigin()
	const url = "http://example.com/popular"
	o.always(200, "Cache-Control", "max-age=10")
	get(t, h, o, url)
	c.Advance(20 * time.Second)
	o.always(200, "Cache-Control", "private")
	// With a cookie, so that the entry is kept: dropping it clears the
	// key's hints, which would hide one the revalidation set.
	wantStatus(t, get(t, h, o, url, "Cookie", "s=1"), []string{"fwd=stale"})
	if hinted(t, h, url) {
		t.Error("a revalidation's private response left a hint")
	}
}

// TestCompressedUncacheableResponsesHint: a response not storable that
// varies on Accept-Encoding alone (as encode makes every response it may
// compress) hints its URL all the same.
func TestCompressedUncacheableResponsesHint(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	o := newHintOrigin()
	const url = "http://example.com/api/items"
	o.always(200, "Vary", "Accept-Encoding")
	get(t, h, o, url, "Accept-Encoding", "gzip")
	if !concurrentPair(t, h, o, url, "Accept-Encoding", "gzip") {
		t.Error("after a response without freshness varying on Accept-Encoding, a request waited for another's")
	}
}

// TestVaryingUncacheableResponsesHint: a response not storable that
// varies on a field the key does not tell apart hints its key when the
// request did not carry that field (it got what every request without
// it gets) and the answer is not `private` (meant for its requester
// alone), or when the field is Origin (CORS middleware varies every
// response on it, storable or not; Rails answers APIs `private`); not
// when the request carried another such field (an API key: its answer
// may be its own), but for a request with a cookie, which hints the
// requests with one.
func TestVaryingUncacheableResponsesHint(t *testing.T) {
	const crossOrigin = "https://app.example.com"
	for _, tc := range []struct {
		name    string
		cc      string
		vary    string
		request []string
		hints   bool
	}{
		{"CORS, cross-origin request", "no-store", "Origin, Accept-Encoding", []string{"Origin", crossOrigin, "Accept-Encoding", "gzip"}, true},
		{"CORS, same-origin request", "", "Origin", nil, true},
		{"CORS, private (Rails)", "max-age=0, private, must-revalidate", "Origin", []string{"Origin", crossOrigin}, true},
		{"Vary: Cookie, anonymous request", "no-store", "Cookie", nil, true},
		{"Vary: Cookie, anonymous request, private", "private", "Cookie", nil, false},
		// Logged-in requests hint the requests with credentials
		// (TestCredentialClassHints), as the pair here.
		{"Vary: Cookie, logged-in request", "no-store", "Cookie", []string{"Cookie", "session=bob"}, true},
		{"Vary: Cookie, Origin, logged-in request", "no-store", "Cookie, Origin", []string{"Cookie", "session=bob", "Origin", crossOrigin}, true},
		{"Vary: Cookie, logged-in request, private", "private", "Cookie", []string{"Cookie", "session=bob"}, true},
		{"Vary: Cookie, Accept-Language, logged-in request", "", "Cookie, Accept-Language", []string{"Cookie", "session=bob", "Accept-Language", "fr"}, true},
		{"Vary: Accept-Language, logged-in request", "", "Accept-Language", []string{"Cookie", "session=bob", "Accept-Language", "fr"}, true},
		{"API key, request without it", "no-store", "X-Api-Key", []string{"Origin", crossOrigin}, true},
		{"API key, request without it, private", "private", "X-Api-Key", nil, false},
		{"API key, request with it", "no-store", "x-api-key", []string{"X-Api-Key", "k1"}, false},
		{"API key, request with it empty", "no-store", "X-Api-Key", []string{"X-Api-Key", ""}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{}, c)
			o := newHintOrigin()
			const url = "http://example.com/api/items"
			fields := []string{"Vary", tc.vary}
			if tc.cc != "" {
				fields = append(fields, "Cache-Control", tc.cc)
			}
			o.always(200, fields...)
			get(t, h, o, url, tc.request...)
			if got := concurrentPair(t, h, o, url, tc.request...); got != tc.hints {
				t.Errorf("after a response (%s) with Vary: %s, the next request skipped coalescing: %v, want %v", tc.cc, tc.vary, got, tc.hints)
			}
		})
	}
}

// TestVariantOfCORSAPIHints: once the URL's responses are known to vary
// (a variant record), a variant's miss answered `no-store` under a Vary
// naming Origin too hints that variant, as on a cold cache.
func TestVariantOfCORSAPIHints(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	o := newHintOrigin()
	const url = "http://example.com/api/items"
	o.always(200, "Cache-Control", "max-age=60", "Vary", "Accept-Encoding")
	get(t, h, o, url, "Accept-Encoding", "gzip")
	wantStatus(t, get(t, h, o, url, "Accept-Encoding", "gzip"), []string{"hit"})
	o.always(200, "Cache-Control", "no-store", "Vary", "Accept-Encoding, Origin")
	cors := []string{"Accept-Encoding", "br", "Origin", "https://app.example.com"}
	wantStatus(t, get(t, h, o, url, cors...), []string{"fwd=vary-miss"})
	if !concurrentPair(t, h, o, url, cors...) {
		t.Error("after a variant's no-store answer varying on Origin, its next request waited for another's")
	}
}

// TestPrivateAnswersHintNoOthers: a `private` answer to a request
// without a field the response varies on (or with a cookie, under
// `Vary: Cookie, *`) was meant for its requester alone: it must not stop
// the other requests of its key, whose answers are storable, from
// coalescing; whichever reason decides first that it is not stored
// (no-store comes before private; a targeted field overrides
// Cache-Control).
func TestPrivateAnswersHintNoOthers(t *testing.T) {
	apiKey := func(r *http.Request) bool { return r.Header.Get("X-Api-Key") != "" }
	cookie := func(r *http.Request) bool { return r.Header.Get("Cookie") != "" }
	for _, tc := range []struct {
		name     string
		targeted string
		// own tells the requests answered private (with private's
		// fields) from the others (answered public, with shared's).
		own             func(r *http.Request) bool
		private, shared []string
		first, pair     []string // the first request's fields, the pair's
	}{
		{"keyless request", "", func(r *http.Request) bool { return !apiKey(r) },
			[]string{"Cache-Control", "private", "Vary", "X-Api-Key"}, []string{"Vary", "X-Api-Key"},
			nil, []string{"X-Api-Key", "k1"}},
		{"keyless request, private and no-store", "", func(r *http.Request) bool { return !apiKey(r) },
			[]string{"Cache-Control", "private, no-store", "Vary", "X-Api-Key"}, []string{"Vary", "X-Api-Key"},
			nil, []string{"X-Api-Key", "k1"}},
		{"keyless request, Django's never_cache", "", func(r *http.Request) bool { return !apiKey(r) },
			[]string{"Cache-Control", "max-age=0, no-cache, no-store, must-revalidate, private", "Vary", "X-Api-Key"}, []string{"Vary", "X-Api-Key"},
			nil, []string{"X-Api-Key", "k1"}},
		{"keyless request, CDN-Cache-Control: no-store", "CDN-Cache-Control", func(r *http.Request) bool { return !apiKey(r) },
			[]string{"Cache-Control", "private", "CDN-Cache-Control", "no-store", "Vary", "X-Api-Key"}, []string{"Vary", "X-Api-Key"},
			nil, []string{"X-Api-Key", "k1"}},
		{"logged-in request, Vary: Cookie, *", "", cookie,
			[]string{"Cache-Control", "private", "Vary", "Cookie, *"}, []string{"Vary", "Cookie"},
			[]string{"Cookie", "session=bob"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{TargetedField: tc.targeted}, c)
			o := newHintOrigin()
			const url = "http://example.com/api/catalog"
			o.answerWith(func(r *http.Request) (int, []string) {
				if tc.own(r) {
					return 200, tc.private
				}
				return 200, append([]string{"Cache-Control", "public, max-age=60"}, tc.shared...)
			})
			get(t, h, o, url, tc.first...)
			if concurrentPair(t, h, o, url, tc.pair...) {
				t.Error("after another request's private answer, misses whose answers are storable skipped coalescing")
			}
		})
	}
}

// TestRevalidationAnsweredForAnotherOriginKeepsTheEntry: a shared
// variant's revalidation by a partner site's request, answered `private`
// under a Vary naming Origin (which the variant's key does not tell
// apart), must neither drop the entry (the other clients would lose it,
// and its stale-if-error with it) nor, at each expiry, hint the variant
// so that its misses stop coalescing.
func TestRevalidationAnsweredForAnotherOriginKeepsTheEntry(t *testing.T) {
	const partner = "https://partner.example.com"
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	o := newHintOrigin()
	const url = "http://example.com/page"
	down := false
	o.answerWith(func(r *http.Request) (int, []string) {
		if r.Header.Get("Origin") != "" {
			return 200, []string{"Cache-Control", "private", "Vary", "Accept-Encoding, Origin", "Access-Control-Allow-Origin", partner}
		}
		if down {
			return 503, nil
		}
		return 200, []string{"Cache-Control", "max-age=10, stale-if-error=3600", "Vary", "Accept-Encoding", "Etag", `"v1"`}
	})
	get(t, h, o, url, "Accept-Encoding", "gzip")
	for cycle := 1; cycle <= 3; cycle++ {
		c.Advance(30 * time.Second)
		wantStatus(t, get(t, h, o, url, "Accept-Encoding", "gzip", "Origin", partner), []string{"fwd=stale"})
		get(t, h, o, url, "Accept-Encoding", "gzip", "Origin", partner)
		if concurrentPair(t, h, o, url, "Accept-Encoding", "gzip") {
			t.Errorf("expiry %d: the shared variant's misses skipped coalescing", cycle)
		}
		wantStatus(t, get(t, h, o, url, "Accept-Encoding", "gzip"), []string{"hit"})
	}
	c.Advance(30 * time.Second)
	get(t, h, o, url, "Accept-Encoding", "gzip", "Origin", partner)
	o.mu.Lock()
	down = true
	o.mu.Unlock()
	if w := get(t, h, o, url, "Accept-Encoding", "gzip"); w.Code != 200 {
		t.Errorf("during an outage the shared variant's client got %d (Cache-Status %q): a partner's private answer dropped the entry", w.Code, w.Header().Get("Cache-Status"))
	}
}

// TestNoLongerStorableDropsTheEntry: a stored URL whose origin now
// answers uncacheably (a deploy dropped its Cache-Control) loses its
// entry at the first revalidation, so that its next misses are hinted
// rather than each revalidating, coalesced, for as long as the entry
// stays; not when the revalidation carried a cookie (its user's answer).
func TestNoLongerStorableDropsTheEntry(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	o := newHintOrigin()
	const url = "http://example.com/was-cached"
	o.always(200, "Cache-Control", "max-age=1")
	get(t, h, o, url)
	c.Advance(5 * time.Second)
	o.answerWith(func(r *http.Request) (int, []string) {
		if r.Header.Get("Cookie") != "" {
			return 200, []string{"Cache-Control", "private"}
		}
		return 200, nil
	})
	wantStatus(t, get(t, h, o, url, "Cookie", "s=1"), []string{"fwd=stale", "fwd-status=200"})
	wantStatus(t, get(t, h, o, url), []string{"fwd=stale", "fwd-status=200"}) // kept after the cookie's answer
	wantStatus(t, get(t, h, o, url), []string{"fwd=uri-miss"})                // dropped after the anonymous one
	if !concurrentPair(t, h, o, url) {
		t.Error("after the entry was dropped and a miss answered uncacheably, a request waited for another's")
	}
}

// TestForcedRevalidationKeepsTheSharedEntry: one cookie-less client's
// forced revalidation of a fresh entry (a reload: max-age=0, a hard
// reload: no-cache) answered `private` for that client alone (an API key,
// a client certificate, its address: nothing the cache sees as a
// credential) must not evict the response every other client shares.
func TestForcedRevalidationKeepsTheSharedEntry(t *testing.T) {
	for _, cc := range []string{"no-cache", "max-age=0"} {
		t.Run(cc, func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{}, c)
			o := newHintOrigin()
			const url = "http://example.com/catalog"
			o.answerWith(func(r *http.Request) (int, []string) {
				if r.Header.Get("X-Api-Key") != "" {
					return 200, []string{"Cache-Control", "private"}
				}
				return 200, []string{"Cache-Control", "public, max-age=600", "Etag", `"v1"`}
			})
			get(t, h, o, url)
			c.Advance(time.Second)
			wantStatus(t, get(t, h, o, url, "X-Api-Key", "k", "Cache-Control", cc), []string{"fwd=request"})
			before := o.calls.Load()
			wantStatus(t, get(t, h, o, url), []string{"hit"})
			if n := o.calls.Load() - before; n != 0 {
				t.Errorf("one client's private answer evicted the fresh shared entry: %d origin request(s) for an anonymous GET", n)
			}
		})
	}
}

// TestUncacheableBackgroundRefreshKeepsServingStale: with
// stale_while_revalidate, a background refresh answered no-store once (a
// deploy's bad instance) must not take the entry clients are being served
// from: kept, they get it at once while the next refresh tries again;
// dropped, every request waits for the origin (and, hinted, stampedes it).
func TestUncacheableBackgroundRefreshKeepsServingStale(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{StaleWhileRevalidate: caddy.Duration(time.Hour)}, c)
	o := newHintOrigin()
	const url = "http://example.com/popular"
	o.always(200, "Cache-Control", "max-age=1")
	get(t, h, o, url)
	c.Advance(5 * time.Second)
	o.always(200, "Cache-Control", "no-store")
	wantStatus(t, get(t, h, o, url), []string{"hit"}) // stale, refreshed in the background
	h.bg.wait()
	o.always(200, "Cache-Control", "max-age=1")
	wantStatus(t, get(t, h, o, url), []string{"hit"}) // still within stale_while_revalidate
	h.bg.wait()
}

// TestReloadOf256HandlersIgnoresOldHints: a config with 256
// response_cache handlers (a snippet imported by 256 sites) gives each
// handler, at every reload, the generation its predecessor had: the
// predecessor's hints (still being set until the switch) are the new
// handler's, as before generations. Simulated here by the 255 other
// handlers provisioned between the two.
func TestReloadOf256HandlersIgnoresOldHints(t *testing.T) {
	c := newClock()
	old := newTestHandler(t, Config{CacheName: "reload-hints-256"}, c)
	o := newHintOrigin()
	const url = "http://example.com/api"
	for range 255 {
		nextHintGeneration() // the config's other handlers
	}
	reloaded := newTestHandler(t, Config{CacheName: "reload-hints-256", DefaultTTL: caddy.Duration(time.Minute)}, c)
	get(t, old, o, url) // the old config, still serving, hints
	if concurrentPair(t, reloaded, o, url) {
		t.Errorf("the reloaded handler (generation %d) took the old one's hint (generation %d)", reloaded.hintGen, old.hintGen)
	}
}

// TestForcedRevalidationWithinSWRKeepsTheEntry: within the
// stale-while-revalidate window the entry is what every other client is
// served (README: "nor a stale-while-revalidate refresh ... the entry keeps
// being served until its window ends"); one client's forced revalidation
// (a browser reload: max-age=0; no-cache) answered private for that client
// alone must not drop it, any more than for a fresh entry.
func TestForcedRevalidationWithinSWRKeepsTheEntry(t *testing.T) {
	for _, cc := range []string{"no-cache", "max-age=0"} {
		t.Run(cc, func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{StaleWhileRevalidate: caddy.Duration(time.Hour)}, c)
			o := newHintOrigin()
			const url = "http://example.com/catalog"
			o.answerWith(func(r *http.Request) (int, []string) {
				if r.Header.Get("X-Api-Key") != "" {
					return 200, []string{"Cache-Control", "private"}
				}
				return 200, []string{"Cache-Control", "public, max-age=1", "Etag", `"v1"`}
			})
			get(t, h, o, url)
			c.Advance(5 * time.Second) // stale, well within the window
			get(t, h, o, url, "X-Api-Key", "k", "Cache-Control", cc)
			wantStatus(t, get(t, h, o, url), []string{"hit", "detail=stale-while-revalidate"})
			h.bg.wait()
		})
	}
}

// TestUncacheableRevalidationKeepsANewerEntry: a stale entry's
// revalidation answered private must drop the entry it revalidated, not
// the newer response another request stored under the key while it was
// at the origin (refresh and freshen check store.has(old) for this).
func TestUncacheableRevalidationKeepsANewerEntry(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	o := newHintOrigin()
	const url = "http://example.com/page"
	o.answerWith(func(r *http.Request) (int, []string) {
		if r.Header.Get("X-Api-Key") != "" {
			return 200, []string{"Cache-Control", "private"}
		}
		return 200, []string{"Cache-Control", "public, max-age=1", "Etag", `"v1"`}
	})
	get(t, h, o, url)
	c.Advance(5 * time.Second) // stale
	o.answerWith(func(r *http.Request) (int, []string) {
		if r.Header.Get("X-Api-Key") != "" {
			return 200, []string{"Cache-Control", "private"}
		}
		return 200, []string{"Cache-Control", "public, max-age=600", "Etag", `"v2"`}
	})
	before := o.calls.Load()
	done := make(chan struct{})
	go func() { // held at the origin
		defer close(done)
		_ = h.ServeHTTP(httptest.NewRecorder(), newRequest(http.MethodGet, url, "X-Hold", "1", "X-Api-Key", "k", "Cache-Control", "no-cache"), o)
	}()
	until(t, "the held revalidation to reach the origin", func() bool { return o.calls.Load() == before+1 })
	wantStatus(t, get(t, h, o, url), []string{"fwd=stale"}) // stores v2, fresh for 600 s
	wantStatus(t, get(t, h, o, url), []string{"hit"})
	o.gate <- struct{}{}
	<-done
	before = o.calls.Load()
	wantStatus(t, get(t, h, o, url), []string{"hit"})
	if n := o.calls.Load() - before; n != 0 {
		t.Errorf("the old entry's private revalidation dropped the newer fresh entry: %d origin request(s)", n)
	}
}

// TestNoLongerStorableVariantKeyedByOriginDropsTheEntry: on a
// revalidation a field the variant's key tells apart does not keep the
// entry: a variant keyed by Origin whose revalidation is answered
// no-store under Vary: Origin is dropped.
func TestNoLongerStorableVariantKeyedByOriginDropsTheEntry(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	o := newHintOrigin()
	const url = "http://example.com/api/items"
	const site = "https://app.example.com"
	o.always(200, "Cache-Control", "max-age=1", "Vary", "Origin")
	get(t, h, o, url, "Origin", site)
	wantStatus(t, get(t, h, o, url, "Origin", site), []string{"hit"})
	c.Advance(5 * time.Second)
	o.always(200, "Cache-Control", "no-store", "Vary", "Origin")
	wantStatus(t, get(t, h, o, url, "Origin", site), []string{"fwd=stale"})
	wantStatus(t, get(t, h, o, url, "Origin", site), []string{"fwd=vary-miss"})
}

// TestResponsesFoundUnstorableLateHint: a response storable at its header
// that turns out not to be, too large for max_item_size (declared or
// not) or ending with trailer fields no Trailer field announced, hints
// its key, so that the next bursts of requests for it do not each wait
// for the leader's body (a review found three clients of a slow 1 MiB
// body getting their first byte when the first had passed max_item_size).
func TestResponsesFoundUnstorableLateHint(t *testing.T) {
	big := strings.Repeat("b", 1024)
	for _, tc := range []struct {
		name   string
		fn     func(w http.ResponseWriter)
		hint   bool
		preset []string // fields handlers before the cache set
		sent   []string // request fields besides X-Tenant: a
	}{
		{"too large, declared", func(w http.ResponseWriter) {
			w.Header().Set("Content-Length", strconv.Itoa(len(big)))
			_, _ = io.WriteString(w, big)
		}, true, nil, nil},
		{"too large, chunked", func(w http.ResponseWriter) {
			_, _ = io.WriteString(w, big[:16])
			_, _ = io.WriteString(w, big[16:])
		}, true, nil, nil},
		{"undeclared trailers", func(w http.ResponseWriter) {
			_, _ = io.WriteString(w, "small")
			w.Header().Set(http.TrailerPrefix+"Checksum", "xyz")
		}, true, nil, nil},
		{"too large, varying on a field the request sent", func(w http.ResponseWriter) {
			w.Header().Set("Vary", "X-Tenant")
			_, _ = io.WriteString(w, big)
		}, false, nil, nil},
		{"too large, varying on that field by a handler before the cache", func(w http.ResponseWriter) {
			_, _ = io.WriteString(w, big)
		}, false, []string{"Vary", "X-Tenant"}, nil},
		{"too large for a request accepting no compression, varying on Accept-Encoding (the gzip body may fit)", func(w http.ResponseWriter) {
			w.Header().Set("Vary", "Accept-Encoding")
			_, _ = io.WriteString(w, big)
		}, false, nil, nil},
		{"too large uncompressed for a request accepting gzip, varying on Accept-Encoding", func(w http.ResponseWriter) {
			w.Header().Set("Vary", "Accept-Encoding")
			_, _ = io.WriteString(w, big)
		}, true, nil, []string{"Accept-Encoding", "gzip, br"}},
		{"too large gzip for a request accepting no compression, varying on Accept-Encoding (identity is larger)", func(w http.ResponseWriter) {
			w.Header().Set("Vary", "Accept-Encoding")
			w.Header().Set("Content-Encoding", "gzip")
			_, _ = io.WriteString(w, big)
		}, true, nil, nil},
		{"undeclared trailers for a request accepting no compression, varying on Accept-Encoding (not a matter of size)", func(w http.ResponseWriter) {
			w.Header().Set("Vary", "Accept-Encoding")
			_, _ = io.WriteString(w, "small")
			w.Header().Set(http.TrailerPrefix+"Checksum", "xyz")
		}, true, nil, nil},
		{"too large, a 404 (an error that may pass)", func(w http.ResponseWriter) {
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, big)
		}, false, nil, nil},
		{"too large, varying on Origin (CORS: same body)", func(w http.ResponseWriter) {
			w.Header().Set("Vary", "Origin")
			w.Header().Set("Access-Control-Allow-Origin", "https://app.test")
			_, _ = io.WriteString(w, big)
		}, true, nil, []string{"Origin", "https://app.test"}},
		{"stored", func(w http.ResponseWriter) {
			_, _ = io.WriteString(w, "small")
		}, false, nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{MaxItemSize: 512}, c)
			o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
				w.Header().Set("Cache-Control", "max-age=60")
				w.Header().Set("Date", c.date())
				tc.fn(w)
				return nil
			}}
			const url = "http://example.com/late"
			w := httptest.NewRecorder()
			for i := 0; i+1 < len(tc.preset); i += 2 {
				w.Header().Set(tc.preset[i], tc.preset[i+1])
			}
			if err := h.ServeHTTP(w, newRequest(http.MethodGet, url, append([]string{"X-Tenant", "a"}, tc.sent...)...), o); err != nil || w.Code != 200 && w.Code != http.StatusNotFound {
				t.Fatalf("status %d, error %v", w.Code, err)
			}
			h.store.wait()
			if got := hinted(t, h, url); got != tc.hint {
				t.Errorf("hinted = %v, want %v (Cache-Status %q)", got, tc.hint, w.Header().Get("Cache-Status"))
			}
		})
	}
}

// TestTooLargeVariantHintsItsVariant: once a URL's responses are known to
// vary on Accept-Encoding, an identity response too large to store hints
// the identity variant's key: its next misses stop waiting for one
// another, while gzip requests, whose smaller body is stored, keep
// coalescing.
func TestTooLargeVariantHintsItsVariant(t *testing.T) {
	h := newTestHandler(t, Config{MaxItemSize: 512}, newClock())
	o := newHintOrigin()
	o.always(200, "Cache-Control", "max-age=60", "Vary", "Accept-Encoding")
	o.body = func(r *http.Request) string {
		if r.Header.Get("Accept-Encoding") == "gzip" {
			return "small"
		}
		return strings.Repeat("i", 1024)
	}
	const url = "http://example.com/variant-size"
	get(t, h, o, url, "Accept-Encoding", "gzip")
	wantStatus(t, get(t, h, o, url, "Accept-Encoding", "gzip"), []string{"hit"})
	get(t, h, o, url, "Accept-Encoding", "identity")
	if !concurrentPair(t, h, o, url, "Accept-Encoding", "identity") {
		t.Error("after a too-large identity response, identity requests waited for one another")
	}
	if hinted(t, h, url) {
		t.Error("a variant's too-large response hinted its URL's key")
	}
	if concurrentPair(t, h, o, url, "Accept-Encoding", "deflate") {
		t.Error("another variant's misses did not coalesce")
	}
}

// TestCredentialClassHints: a response not storable for a reason that may
// lie with the request's credentials (a cookie set, Authorization, a
// logged-in user's answer varying on Cookie) hints the requests like its
// own, with credentials or without: their concurrent misses go to the
// origin at once (a long poll answered `no-store` with a renewed session
// cookie must not hold the other users' polls until it ends, then send
// them again), while the other class's still coalesce, until a response
// is stored under the key.
func TestCredentialClassHints(t *testing.T) {
	alice, bob := []string{"Cookie", "session=alice"}, []string{"Cookie", "session=bob"}
	for _, tc := range []struct {
		name          string
		fields        []string
		first         []string // the request answered so
		like, another []string // a pair like the first request's, and one of the other class
	}{
		{"long poll renewing its session", []string{"Cache-Control", "no-store, no-cache, must-revalidate", "Set-Cookie", "session=alice2"}, alice, bob, nil},
		{"logged-in page under Vary: Cookie", []string{"Vary", "Cookie"}, alice, bob, nil},
		{"session renewed on a public page", []string{"Cache-Control", "public, max-age=60", "Set-Cookie", "session=alice2"}, alice, bob, nil},
		{"first visit's cookie", []string{"Cache-Control", "max-age=60", "Set-Cookie", "visitor=1"}, nil, nil, alice},
		{"API key", []string{"Cache-Control", "max-age=60"}, []string{"Authorization", "Bearer a"}, []string{"Authorization", "Bearer b"}, nil},
		// An API client's answer says nothing of browsers'.
		{"API key, then a browser", []string{"Cache-Control", "max-age=60"}, []string{"Authorization", "Bearer a"}, []string{"Authorization", "Bearer b"}, []string{"Cookie", "_ga=GA1.2.3"}},
		// WordPress's logged-in pages: private, no Vary, no cookie set.
		{"logged-in page without Vary", []string{"Cache-Control", "no-cache, must-revalidate, max-age=0, no-store, private"}, alice, bob, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{}, c)
			o := newHintOrigin()
			const url = "http://example.com/poll"
			o.always(200, tc.fields...)
			get(t, h, o, url, tc.first...)
			if hinted(t, h, url) {
				t.Fatal("the response hinted every request of its key")
			}
			if !concurrentPair(t, h, o, url, tc.like...) {
				t.Error("a request like the first waited for another's")
			}
			o.always(200, "Cache-Control", "max-age=60")
			if concurrentPair(t, h, o, url, tc.another...) {
				t.Error("a request of the other class did not wait for the fill")
			}
			// That fill was stored, which ends the class's hint too.
			r := newRequest(http.MethodGet, url, tc.like...)
			if h.hints.skips(keyHash([]byte(keyOf(t, h, r))), r, h.hintGen, h.now) {
				t.Error("a response stored under the key left the hint of the requests like the first")
			}
			// And a purge, which ends the stored response.
			h.store.purgeKey(keyOf(t, h, newRequest(http.MethodGet, url)))
			if concurrentPair(t, h, o, url, tc.like...) {
				t.Error("after a response was stored under the key, a request like the first did not wait for the fill")
			}
		})
	}
}

// TestPurgeClearsClassHints: a purge of a key ends its classes' hints,
// with nothing stored under it in between.
func TestPurgeClearsClassHints(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	o := newHintOrigin()
	const url = "http://example.com/poll"
	cookie := []string{"Cookie", "session=alice"}
	o.always(200, "Cache-Control", "no-store", "Set-Cookie", "session=alice2")
	get(t, h, o, url, cookie...)
	r := newRequest(http.MethodGet, url, cookie...)
	hash := keyHash([]byte(keyOf(t, h, r)))
	if !h.hints.skips(hash, r, h.hintGen, h.now) {
		t.Fatal("no hint for the requests with a cookie")
	}
	h.store.purgeKey(keyOf(t, h, r))
	if h.hints.skips(hash, r, h.hintGen, h.now) {
		t.Error("a purge left the hint of the requests with a cookie")
	}
}

// TestTooLargeForACookieHintsItsClass: a response found too large to
// store (its body of unknown length past max_item_size) for a request with
// a cookie hints the requests with one; anonymous misses, whose answer
// may fit, still coalesce.
func TestTooLargeForACookieHintsItsClass(t *testing.T) {
	h := newTestHandler(t, Config{MaxItemSize: 512}, newClock())
	o := newHintOrigin()
	o.always(200, "Cache-Control", "max-age=60")
	o.body = func(r *http.Request) string {
		if r.Header.Get("Cookie") != "" {
			return strings.Repeat("u", 1024) // a logged-in user's larger page
		}
		return "small"
	}
	const url = "http://example.com/large-for-users"
	cookie := []string{"Cookie", "session=alice"}
	get(t, h, o, url, cookie...)
	if hinted(t, h, url) {
		t.Error("a too-large answer to a request with a cookie hinted every request of its key")
	}
	if !concurrentPair(t, h, o, url, "Cookie", "session=bob") {
		t.Error("after a too-large answer to a request with a cookie, requests with one waited for one another")
	}
	if concurrentPair(t, h, o, url) {
		t.Error("anonymous misses did not coalesce")
	}
}

// TestUnstoredScopeByRequest: a response found unstorable late to an
// anonymous request hints every request of its key, those with a cookie
// too, and the affinity policy's own cookie does not make it a cookie
// answer; one to a request with a cookie hints its class whatever its
// Vary (a logged-in user's answer varies on what the key does not show).
func TestUnstoredScopeByRequest(t *testing.T) {
	for _, tc := range []struct {
		name       string
		fields     []string // the large answer's
		first      []string // the request answered so
		key, class bool     // the hints expected
	}{
		{"anonymous", []string{"Cache-Control", "max-age=60"}, nil, true, false},
		{"anonymous, with the affinity cookie set", []string{"Cache-Control", "max-age=60", "Set-Cookie", "lb=abc"}, nil, true, false},
		{"anonymous, with a session cookie set", []string{"Cache-Control", "max-age=60", "Set-Cookie", "session=s1"}, nil, false, true},
		{"logged in, varying on a field it carried", []string{"Cache-Control", "max-age=60", "Vary", "Accept-Language"}, []string{"Cookie", "session=s1", "Accept-Language", "fr"}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestHandler(t, Config{MaxItemSize: 512}, newClock())
			o := newHintOrigin()
			o.always(200, tc.fields...)
			o.body = func(*http.Request) string { return strings.Repeat("b", 1024) }
			const url = "http://example.com/big"
			r := newRequest(http.MethodGet, url, tc.first...)
			caddyhttp.SetVar(r.Context(), ProxySetCookieVar, "lb=abc")
			serve(t, h, o, r)
			h.store.wait()
			hash := keyHash([]byte(keyOf(t, h, r)))
			if got := h.hints.has(hash, h.hintGen, h.now); got != tc.key {
				t.Errorf("key-wide hint %v, want %v", got, tc.key)
			}
			if got := h.hints.has(hintClass(hash, r), h.hintGen, h.now); got != tc.class {
				t.Errorf("class hint %v, want %v", got, tc.class)
			}
			// A key-wide hint reaches requests with a cookie too.
			if tc.key && !h.hints.skips(hash, newRequest(http.MethodGet, url, "Cookie", "session=s2"), h.hintGen, h.now) {
				t.Error("a key-wide hint does not reach requests with a cookie")
			}
		})
	}
}
