package cache

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// presetting runs next with fields set on the client's response first,
// as Caddy's header directive (ordered before response_cache) does.
func presetting(t *testing.T, h *Handler, next caddyhttp.Handler, target string, preset ...string) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	for i := 0; i+1 < len(preset); i += 2 {
		w.Header().Add(preset[i], preset[i+1])
	}
	if err := h.ServeHTTP(w, newRequest(http.MethodGet, target), next); err != nil {
		t.Fatal(err)
	}
	h.store.wait()
	return w
}

// TestPresetCachingFields: Cache-Control, Expires and CDN-Cache-Control
// that a handler before the cache set (`header`) count as the response's,
// with the origin's own, in the lines the client gets through
// reverse_proxy alone: the set ones first.
func TestPresetCachingFields(t *testing.T) {
	for _, tc := range []struct {
		name   string
		preset []string
		origin []string // the origin's fields
		stored bool
		cc     []string // the client's Cache-Control lines, on the miss and on a hit
	}{
		{name: "private keeps it out", preset: []string{"Cache-Control", "private, no-store"}, origin: []string{"Cache-Control", "max-age=60"},
			cc: []string{"private, no-store", "max-age=60"}},
		{name: "public max-age makes it storable", preset: []string{"Cache-Control", "public, max-age=3600"},
			stored: true, cc: []string{"public, max-age=3600"}},
		{name: "the same line once", preset: []string{"Cache-Control", "max-age=60"}, origin: []string{"Cache-Control", "max-age=60"},
			stored: true, cc: []string{"max-age=60"}},
		{name: "CDN-Cache-Control no-store", preset: []string{"CDN-Cache-Control", "no-store"}, origin: []string{"Cache-Control", "max-age=60"},
			cc: []string{"max-age=60"}},
		{name: "other fields do not count", preset: []string{"X-Frame-Options", "DENY"}, origin: []string{"Cache-Control", "max-age=60"},
			stored: true, cc: []string{"max-age=60"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{}, c)
			o := static(c, 200, "body", tc.origin...)
			const url = "http://example.com/p"
			w := presetting(t, h, o, url, tc.preset...)
			if got := w.Header().Values("Cache-Control"); !slices.Equal(got, tc.cc) {
				t.Errorf("miss: Cache-Control %q, want %q", got, tc.cc)
			}
			w = presetting(t, h, o, url, tc.preset...)
			if hit := hasParam(w.Header().Get("Cache-Status"), "hit"); hit != tc.stored {
				t.Fatalf("second request: hit %v, want %v (%s)", hit, tc.stored, w.Header().Get("Cache-Status"))
			}
			if got := w.Header().Values("Cache-Control"); !slices.Equal(got, tc.cc) {
				t.Errorf("second request: Cache-Control %q, want %q", got, tc.cc)
			}
		})
	}
}

// TestPresetCachingFieldsAcrossRefreshes: the set fields stay with the
// stored response through 304s, with Cache-Control (which replaces the
// stored one) and without, in a stale-while-revalidate refresh (which runs
// without the handlers before the cache: it keeps what its request had)
// and in the foreground.
func TestPresetCachingFieldsAcrossRefreshes(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	var mu sync.Mutex
	cc304 := "max-age=10"
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Etag", `"v1"`)
		w.Header().Set("Date", c.date())
		if r.Header.Get("If-None-Match") == `"v1"` {
			mu.Lock()
			if cc304 != "" {
				w.Header().Set("Cache-Control", cc304)
			}
			mu.Unlock()
			w.WriteHeader(http.StatusNotModified)
			return nil
		}
		w.Header().Set("Cache-Control", "max-age=10")
		_, _ = w.Write([]byte("body"))
		return nil
	}}
	const url = "http://example.com/r"
	preset := []string{"Cache-Control", "stale-while-revalidate=30"}
	presetting(t, h, o, url, preset...)
	for i := range 2 {
		c.Advance(20 * time.Second) // stale, within stale-while-revalidate
		wantStatus(t, presetting(t, h, o, url, preset...), []string{"hit", "detail=stale-while-revalidate"})
		h.bg.wait()
		h.store.wait()
		w := presetting(t, h, o, url, preset...)
		wantStatus(t, w, []string{"hit", "ttl=10"})
		if got, want := w.Header().Values("Cache-Control"), []string{"stale-while-revalidate=30", "max-age=10"}; !slices.Equal(got, want) {
			t.Errorf("after refresh %d: Cache-Control %q, want %q", i+1, got, want)
		}
	}
	mu.Lock()
	cc304 = ""
	mu.Unlock()
	c.Advance(45 * time.Second) // past stale-while-revalidate: a foreground revalidation
	wantStatus(t, presetting(t, h, o, url, preset...), []string{"fwd=stale", "fwd-status=304"})
	wantStatus(t, presetting(t, h, o, url, preset...), []string{"hit", "ttl=10"})
	if n := o.calls.Load(); n != 4 {
		t.Errorf("origin called %d times, want 4", n)
	}
}

// TestPresetCachingFieldsOnHits: a hit's request whose handlers before the
// cache set other caching fields than the request that stored the response
// (a matcher on the request: a logged-in user's responses marked private)
// gets its own first, then the stored ones, as through reverse_proxy.
func TestPresetCachingFieldsOnHits(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	o := static(c, 200, "body", "Cache-Control", "max-age=60")
	const url = "http://example.com/page"
	presetting(t, h, o, url)
	w := presetting(t, h, o, url, "Cache-Control", "private")
	wantStatus(t, w, []string{"hit"})
	if got, want := w.Header().Values("Cache-Control"), []string{"private", "max-age=60"}; !slices.Equal(got, want) {
		t.Errorf("hit: Cache-Control %q, want %q", got, want)
	}
	w = presetting(t, h, o, url, "Expires", "0")
	if got := w.Header().Values("Expires"); !slices.Equal(got, []string{"0"}) {
		t.Errorf("hit: Expires %q, want the one set before the cache", got)
	}
}

// TestPresetPrivateRequestRevalidatesSharedEntry: a request whose handlers
// mark it private (header @loggedin Cache-Control "private, no-store")
// revalidates a stale entry stored for others: the 304 refreshes the
// entry, judged by the fields of the request that stored it, in the
// foreground and in a stale-while-revalidate refresh; the request itself
// gets its own fields first.
func TestPresetPrivateRequestRevalidatesSharedEntry(t *testing.T) {
	private := []string{"Cache-Control", "private, no-store"}
	for _, tc := range []struct {
		name, cc string
		wantCS   []string
	}{
		{"foreground", "max-age=2", []string{"fwd=stale", "fwd-status=304"}},
		{"stale-while-revalidate", "max-age=2, stale-while-revalidate=60", []string{"hit", "detail=stale-while-revalidate"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{}, c)
			o := validating(c, `"v1"`, "body", "Cache-Control", tc.cc)
			const url = "http://example.com/page"
			presetting(t, h, o, url)
			c.Advance(3 * time.Second)
			w := presetting(t, h, o, url, private...)
			wantStatus(t, w, tc.wantCS)
			if got := w.Header().Values("Cache-Control"); len(got) == 0 || got[0] != "private, no-store" {
				t.Errorf("the private request's Cache-Control %q, want its own first", got)
			}
			h.bg.wait()
			h.store.wait()
			w = presetting(t, h, o, url)
			wantStatus(t, w, []string{"hit", "ttl=2"})
			if got, want := w.Header().Values("Cache-Control"), []string{tc.cc}; !slices.Equal(got, want) {
				t.Errorf("an anonymous hit's Cache-Control %q, want %q", got, want)
			}
		})
	}
}

// TestPresetBackgroundRefreshNewResponse: a stale-while-revalidate refresh
// (which runs without the handlers before the cache) that gets a new 200
// judges it with the fields of the request that stored the entry: a
// response made cacheable by header alone stays cached.
func TestPresetBackgroundRefreshNewResponse(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	var n atomic.Int32
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Date", c.date())
		_, _ = fmt.Fprintf(w, "version %d", n.Add(1))
		return nil
	}}
	const url = "http://example.com/static/app.js"
	preset := []string{"Cache-Control", "public, max-age=10, stale-while-revalidate=60"}
	presetting(t, h, o, url, preset...)
	c.Advance(20 * time.Second)
	wantStatus(t, presetting(t, h, o, url, preset...), []string{"hit", "detail=stale-while-revalidate"})
	h.bg.wait()
	h.store.wait()
	w := presetting(t, h, o, url, preset...)
	wantStatus(t, w, []string{"hit", "ttl=10"})
	if w.Body.String() != "version 2" {
		t.Errorf("after the refresh: %q, want the new version", w.Body.String())
	}
}
