package cache

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
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
		ttl    int      // the hit's ttl, when stored and not 0
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
		// Two max-ages from two sources are no conflict: the shorter
		// counts (a review found the README's example storing nothing).
		{name: "a longer max-age than the origin's", preset: []string{"Cache-Control", "public, max-age=3600"}, origin: []string{"Cache-Control", "public, max-age=60"},
			stored: true, cc: []string{"public, max-age=3600", "public, max-age=60"}, ttl: 60},
		{name: "a shorter max-age than the origin's", preset: []string{"Cache-Control", "max-age=30"}, origin: []string{"Cache-Control", "max-age=60, s-maxage=120"},
			stored: true, cc: []string{"max-age=30", "max-age=60, s-maxage=120"}, ttl: 120},
		{name: "a shorter s-maxage than the origin's", preset: []string{"Cache-Control", "s-maxage=30"}, origin: []string{"Cache-Control", "max-age=60, s-maxage=120"},
			stored: true, cc: []string{"s-maxage=30", "max-age=60, s-maxage=120"}, ttl: 30},
		{name: "the origin's own conflict stays one", preset: []string{"Cache-Control", "max-age=30"}, origin: []string{"Cache-Control", "max-age=60, max-age=90"},
			cc: []string{"max-age=30", "max-age=60, max-age=90"}},
		// The origin repeating a line set before the cache (shown once).
		{name: "lines repeated by the origin", preset: []string{"Cache-Control", "public", "Cache-Control", "max-age=60"},
			origin: []string{"Cache-Control", "public", "Cache-Control", "max-age=3600"},
			stored: true, cc: []string{"public", "max-age=60", "max-age=3600"}, ttl: 60},
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
			if want := fmt.Sprintf("ttl=%d", tc.ttl); tc.ttl != 0 && !hasParam(w.Header().Get("Cache-Status"), want) {
				t.Errorf("hit %s, want %s", w.Header().Get("Cache-Status"), want)
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

// TestPresetPrivateRequestLeavesSharedEntry: a request whose handlers
// mark it private (header @loggedin Cache-Control "private, no-store")
// and that carries a user's cookie, on a stale entry stored for others,
// gets its own answer, but what the origin tells it (a 304 with a field
// for that user, a page made for her) never reaches the shared entry
// (a security review: her page, then her field, served to everyone): in
// the foreground her 304 answers her and the entry stays as it was, for
// the next request to revalidate; within a stale-while-revalidate window
// she gets the stale entry and starts no refresh, which the next request
// does. Her own caching fields come first in what she gets.
func TestPresetPrivateRequestLeavesSharedEntry(t *testing.T) {
	for _, private := range [][]string{{"Cache-Control", "private, no-store"}, {"Cache-Control", "private"}, {"CDN-Cache-Control", "no-store"}} {
		for _, tc := range []struct {
			name, cc string
			wantCS   []string // the private request's
			calls    int32    // the origin's, after it
		}{
			{"foreground", "max-age=2", []string{"fwd=stale", "fwd-status=304"}, 2},
			{"stale-while-revalidate", "max-age=2, stale-while-revalidate=60", []string{"hit", "detail=stale-while-revalidate"}, 1},
		} {
			t.Run(private[0]+" "+private[1]+", "+tc.name, func(t *testing.T) {
				c := newClock()
				h := newTestHandler(t, Config{}, c)
				var calls atomic.Int32
				o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
					calls.Add(1)
					who := "anonymous"
					if ck, err := r.Cookie("session"); err == nil {
						who = ck.Value
					}
					w.Header().Set("Cache-Control", tc.cc)
					w.Header().Set("Date", c.date())
					w.Header().Set("Etag", `"v1"`)
					w.Header().Set("X-Who", who)
					if r.Header.Get("If-None-Match") == `"v1"` {
						w.WriteHeader(http.StatusNotModified)
						return nil
					}
					_, _ = io.WriteString(w, "page for "+who)
					return nil
				}}
				const url = "http://example.com/page"
				presetting(t, h, o, url)
				c.Advance(3 * time.Second)
				w := presettingRequest(t, h, o, newRequest(http.MethodGet, url, "Cookie", "session=alice"), private...)
				wantStatus(t, w, tc.wantCS)
				if got := w.Header().Values(private[0]); len(got) == 0 || got[0] != private[1] {
					t.Errorf("the private request's %s %q, want its own first", private[0], got)
				}
				h.bg.wait()
				h.store.wait()
				if n := calls.Load(); n != tc.calls {
					t.Errorf("origin called %d times by then, want %d", n, tc.calls)
				}
				// The next anonymous request finds the entry as it was:
				// stale, and revalidates it, in the foreground or behind.
				w = presetting(t, h, o, url)
				if tc.name == "foreground" {
					wantStatus(t, w, []string{"fwd=stale", "fwd-status=304", "ttl=2"})
				} else {
					wantStatus(t, w, []string{"hit", "detail=stale-while-revalidate"})
				}
				h.bg.wait()
				h.store.wait()
				w = presetting(t, h, o, url)
				wantStatus(t, w, []string{"hit", "ttl=2"})
				if got := w.Header().Get("X-Who"); got != "anonymous" || w.Body.String() != "page for anonymous" {
					t.Errorf("an anonymous hit got X-Who %q and %q, want the anonymous page", got, w.Body.String())
				}
				if got, want := w.Header().Values("Cache-Control"), []string{tc.cc}; !slices.Equal(got, want) {
					t.Errorf("an anonymous hit's Cache-Control %q, want %q", got, want)
				}
			})
		}
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

// presettingRequest is presetting for a request of the caller's.
func presettingRequest(t *testing.T, h *Handler, next caddyhttp.Handler, r *http.Request, preset ...string) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	for i := 0; i+1 < len(preset); i += 2 {
		w.Header().Add(preset[i], preset[i+1])
	}
	if err := h.ServeHTTP(w, r, next); err != nil {
		t.Fatal(err)
	}
	h.store.wait()
	return w
}

// TestPresetDoesNotStoreProvokedError: `header /static/*
// Cache-Control "public, max-age=3600"` before the cache makes a static
// file the origin sends without Cache-Control cacheable, but not the 431
// one client provokes for its URL with a 9 KB header field (nginx's and
// Node's limit is 8 KB; Caddy takes 1 MB): stored, it would answer every
// other client for an hour.
func TestPresetDoesNotStoreProvokedError(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Date", c.date())
		if len(r.Header.Get("X-Junk")) > 8<<10 {
			w.WriteHeader(http.StatusRequestHeaderFieldsTooLarge)
			_, _ = w.Write([]byte("431 Request Header Fields Too Large"))
			return nil
		}
		_, _ = w.Write([]byte("console.log('app')"))
		return nil
	}}
	const url = "http://example.com/static/app.js"
	preset := []string{"Cache-Control", "public, max-age=3600"}
	attacker := presettingRequest(t, h, o, newRequest(http.MethodGet, url, "X-Junk", strings.Repeat("a", 9000)), preset...)
	if attacker.Code != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("attacker got %d, want the origin's 431", attacker.Code)
	}
	wantStatus(t, attacker, []string{"fwd=uri-miss", "fwd-status=431"})
	victim := presetting(t, h, o, url, preset...)
	if victim.Code != http.StatusOK || victim.Body.String() != "console.log('app')" {
		t.Fatalf("victim got %d %q (%s): the 431 another client provoked was stored", victim.Code, victim.Body.String(), victim.Header().Get("Cache-Status"))
	}
	wantStatus(t, victim, []string{"fwd=uri-miss", "fwd-status=200"})
	w := presetting(t, h, o, url, preset...)
	wantStatus(t, w, []string{"hit", "ttl=3600"})
	if w.Code != http.StatusOK {
		t.Errorf("third request got %d, want the stored 200", w.Code)
	}
}

// TestPresetFreshnessByStatus: the caching fields set before the cache
// count in full only for the statuses of OperatorFreshness (200, 203, 204,
// 206, 300, 301, 308, 404, 405, 410). For any other they only restrict: a
// response is stored when the origin's own fields allow it, for no longer
// than they say, and not when a field set before the cache forbids it.
// default_ttl follows the same rule.
func TestPresetFreshnessByStatus(t *testing.T) {
	const hour = "public, max-age=3600"
	ttl := Config{DefaultTTL: caddy.Duration(time.Minute)}
	for _, tc := range []struct {
		name   string
		cfg    Config
		status int
		preset []string
		origin []string
		ttl    string // the hit's Cache-Status ttl; "" when not a hit
	}{
		// Freshness set before the cache alone stores none of these.
		{name: "400", status: 400, preset: []string{"Cache-Control", hour}},
		{name: "413", status: 413, preset: []string{"Cache-Control", hour}},
		{name: "414", status: 414, preset: []string{"Cache-Control", hour}},
		{name: "431", status: 431, preset: []string{"Cache-Control", hour}},
		{name: "500", status: 500, preset: []string{"Cache-Control", hour}},
		{name: "501", status: 501, preset: []string{"Cache-Control", hour}},
		{name: "503 s-maxage", status: 503, preset: []string{"Cache-Control", "s-maxage=3600"}},
		{name: "302", status: 302, preset: []string{"Cache-Control", hour}, origin: []string{"Location", "/login"}},
		{name: "431 CDN-Cache-Control", status: 431, preset: []string{"CDN-Cache-Control", "max-age=3600"}},
		{name: "431 Expires", status: 431, preset: []string{"Expires", "Fri, 02 Jan 2026 04:04:05 GMT"}},
		{name: "431 Last-Modified from the origin", status: 431, preset: []string{"Cache-Control", "public"},
			origin: []string{"Last-Modified", "Thu, 01 Jan 2026 03:04:05 GMT"}},
		{name: "500 public and default_ttl", cfg: ttl, status: 500, preset: []string{"Cache-Control", "public"}},
		// default_ttl likewise.
		{name: "414 default_ttl", cfg: ttl, status: 414},
		{name: "501 default_ttl", cfg: ttl, status: 501},
		{name: "404 default_ttl", cfg: ttl, status: 404, ttl: "60"},
		{name: "500 public from the origin and default_ttl", cfg: ttl, status: 500, origin: []string{"Cache-Control", "public"}, ttl: "60"},
		// The statuses of OperatorFreshness are stored as set.
		{name: "200", status: 200, preset: []string{"Cache-Control", hour}, ttl: "3600"},
		{name: "301", status: 301, preset: []string{"Cache-Control", hour}, origin: []string{"Location", "/new"}, ttl: "3600"},
		{name: "404", status: 404, preset: []string{"Cache-Control", hour}, ttl: "3600"},
		{name: "410", status: 410, preset: []string{"Cache-Control", hour}, ttl: "3600"},
		{name: "404 public and default_ttl", cfg: ttl, status: 404, preset: []string{"Cache-Control", "public"}, ttl: "60"},
		// The origin's own freshness is obeyed, for no longer with what
		// is set before the cache, and what restricts still does.
		{name: "500 origin max-age", status: 500, origin: []string{"Cache-Control", "max-age=60"}, ttl: "60"},
		{name: "500 origin Expires, longer max-age set", status: 500, preset: []string{"Cache-Control", hour},
			origin: []string{"Expires", "Fri, 02 Jan 2026 03:05:05 GMT"}, ttl: "60"},
		{name: "500 origin Expires, shorter max-age set", status: 500, preset: []string{"Cache-Control", "max-age=10"},
			origin: []string{"Expires", "Fri, 02 Jan 2026 03:05:05 GMT"}, ttl: "10"},
		{name: "500 origin max-age, no-store set", status: 500, preset: []string{"Cache-Control", "no-store"},
			origin: []string{"Cache-Control", "max-age=60"}},
		{name: "500 origin max-age, private set", status: 500, preset: []string{"Cache-Control", "private"},
			origin: []string{"Cache-Control", "max-age=60"}},
		{name: "500 origin max-age, no-cache set", status: 500, preset: []string{"Cache-Control", "no-cache"},
			origin: []string{"Cache-Control", "max-age=60"}},
		{name: "404 origin max-age, no-store set", status: 404, preset: []string{"Cache-Control", "no-store"},
			origin: []string{"Cache-Control", "max-age=60"}},
		{name: "200 origin max-age, private set", status: 200, preset: []string{"Cache-Control", "private"},
			origin: []string{"Cache-Control", "max-age=60"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock() // 2026-01-02 03:04:05 UTC
			h := newTestHandler(t, tc.cfg, c)
			o := static(c, tc.status, "body", tc.origin...)
			const url = "http://example.com/static/x"
			w := presetting(t, h, o, url, tc.preset...)
			wantStatus(t, w, []string{"fwd=uri-miss", "fwd-status=" + strconv.Itoa(tc.status)})
			w = presetting(t, h, o, url, tc.preset...)
			if tc.ttl == "" {
				wantStatus(t, w, []string{"fwd-status=" + strconv.Itoa(tc.status)}, "hit")
				return
			}
			wantStatus(t, w, []string{"hit", "ttl=" + tc.ttl})
			if w.Code != tc.status {
				t.Errorf("hit answered %d, want %d", w.Code, tc.status)
			}
		})
	}
}

// TestPresetFreshnessOfErrorOnRefresh: a 304 that refreshes a stored
// error (stored because the origin's Expires allowed it) judges it by
// the same rule as the miss did: the max-age set before the cache does
// not make it fresh for longer than the origin's Expires.
func TestPresetFreshnessOfErrorOnRefresh(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Date", c.date())
		w.Header().Set("Expires", c.Now().Add(time.Minute).Format(http.TimeFormat))
		w.Header().Set("Etag", `"e1"`)
		if r.Header.Get("If-None-Match") == `"e1"` {
			w.WriteHeader(http.StatusNotModified)
			return nil
		}
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte("error page"))
		return nil
	}}
	const url = "http://example.com/static/y"
	preset := []string{"Cache-Control", "public, max-age=3600"}
	presetting(t, h, o, url, preset...)
	wantStatus(t, presetting(t, h, o, url, preset...), []string{"hit", "ttl=60"})
	c.Advance(2 * time.Minute)
	wantStatus(t, presetting(t, h, o, url, preset...), []string{"fwd=stale", "fwd-status=304", "ttl=60"})
	w := presetting(t, h, o, url, preset...)
	wantStatus(t, w, []string{"hit", "ttl=60"})
	if w.Code != http.StatusInternalServerError {
		t.Errorf("hit answered %d, want the stored 500", w.Code)
	}
}

// TestPresetVary: a Vary that a handler before the cache set (`header
// /v/* Vary Cookie`) selects variants as the origin's own would: another
// cookie is a vary-miss, not a hit of someone else's response (found by a
// review), and the client gets the field on misses and hits.
func TestPresetVary(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{MinUses: 1}, c)
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Vary", "Accept-Language")
		_, err := fmt.Fprintf(w, "for %s", r.Header.Get("Cookie"))
		return err
	}}
	const url = "http://example.com/v/page"
	get := func(cookie string) *httptest.ResponseRecorder {
		r := newRequest(http.MethodGet, url, "Cookie", cookie)
		return presettingRequest(t, h, o, r, "Vary", "Cookie")
	}
	for i, step := range []struct{ cookie, status, body string }{
		{"user=alice", "fwd=uri-miss", "for user=alice"},
		{"user=bob", "fwd=vary-miss", "for user=bob"},
		{"user=alice", "hit", "for user=alice"},
		{"user=bob", "hit", "for user=bob"},
	} {
		w := get(step.cookie)
		if w.Body.String() != step.body || !hasParam(w.Header().Get("Cache-Status"), step.status) {
			t.Errorf("request %d (%s): %q, %s; want %q, %s", i, step.cookie, w.Body.String(), w.Header().Get("Cache-Status"), step.body, step.status)
		}
		if got := w.Header().Values("Vary"); !slices.Equal(got, []string{"Cookie", "Accept-Language"}) {
			t.Errorf("request %d: Vary %q, want the one set before the cache, then the origin's", i, got)
		}
	}
}

// TestPresetDoesNotMendTheTargetedField: an invalid CDN-Cache-Control from
// the origin stays invalid (stale) whatever Cache-Control handlers before
// the cache set: only Cache-Control's two sources are mended.
func TestPresetDoesNotMendTheTargetedField(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{TargetedField: "CDN-Cache-Control"}, c)
	o := static(c, 200, "body", "Cache-Control", "max-age=60", "CDN-Cache-Control", "max-age=-1")
	const url = "http://example.com/t"
	presetting(t, h, o, url, "Cache-Control", "max-age=3600")
	if w := presetting(t, h, o, url, "Cache-Control", "max-age=3600"); hasParam(w.Header().Get("Cache-Status"), "hit") {
		t.Errorf("an invalid CDN-Cache-Control was mended: %s", w.Header().Get("Cache-Status"))
	}
}

// TestPresetPrivateRequestNeitherStoresNorDrops: what a request marked
// private before the cache (header @loggedin Cache-Control private, with
// the user's cookie) gets from the origin is hers alone (a review of the
// fix above): not stored, even when the origin's CDN-Cache-Control, which
// replaces Cache-Control for the cache, allows it; and it drops nothing
// stored for the others (her HEAD, her 206, her 304 with a Set-Cookie,
// her 304 that does not select the stored response), whose next request
// finds the entry and revalidates it.
func TestPresetPrivateRequestNeitherStoresNorDrops(t *testing.T) {
	private := []string{"Cache-Control", "private"}
	for _, tc := range []struct {
		name     string
		stored   bool // an anonymous request stored the URL before
		method   string
		fields   []string                  // of her request, besides the cookie
		personal func(http.ResponseWriter) // what the origin adds for her
		notMod   bool                      // the origin answers her conditional 304
	}{
		{name: "her miss, CDN-Cache-Control from the origin", method: http.MethodGet},
		{name: "her 200 on a stale entry, CDN-Cache-Control", stored: true, method: http.MethodGet},
		{name: "her HEAD on a stale entry", stored: true, method: http.MethodHead},
		{name: "her Range on a stale entry", stored: true, method: http.MethodGet, fields: []string{"Range", "bytes=0-3"}},
		{name: "her 304 with a Set-Cookie", stored: true, method: http.MethodGet, notMod: true,
			personal: func(w http.ResponseWriter) {
				w.Header().Set("Etag", `"v1"`) // selecting the stored response
				w.Header().Set("Set-Cookie", "session=alice2")
			}},
		{name: "her 304 with her own tag (not selecting)", stored: true, method: http.MethodGet, notMod: true,
			personal: func(w http.ResponseWriter) { w.Header().Set("Etag", `"v1-alice"`) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{MinUses: 1}, c)
			o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
				who, etag := "anonymous", `"v1"`
				if ck, err := r.Cookie("session"); err == nil {
					who, etag = ck.Value, `"v1-`+ck.Value+`"`
				}
				body := "page for " + who
				w.Header().Set("Cache-Control", "max-age=2")
				w.Header().Set("CDN-Cache-Control", "max-age=2")
				w.Header().Set("Date", c.date())
				w.Header().Set("Etag", etag)
				w.Header().Set("X-Who", who)
				if who != "anonymous" && tc.personal != nil {
					tc.personal(w)
				}
				switch {
				case r.Header.Get("If-None-Match") != "" && (tc.notMod || r.Header.Get("If-None-Match") == etag):
					w.WriteHeader(http.StatusNotModified)
				case r.Header.Get("Range") == "bytes=0-3":
					w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-3/%d", len(body)))
					w.WriteHeader(http.StatusPartialContent)
					_, _ = io.WriteString(w, body[:4])
				case r.Method == http.MethodHead:
					w.Header().Set("Content-Length", strconv.Itoa(len(body)))
				default:
					_, _ = io.WriteString(w, body)
				}
				return nil
			}}
			const url = "http://example.com/page"
			if tc.stored {
				presetting(t, h, o, url)
				c.Advance(3 * time.Second)
			}
			presettingRequest(t, h, o, newRequest(tc.method, url, append([]string{"Cookie", "session=alice"}, tc.fields...)...), private...)
			h.bg.wait()
			w := presetting(t, h, o, url)
			if tc.stored {
				// Still there, stale: revalidated, not fetched as a miss.
				wantStatus(t, w, []string{"fwd=stale"})
			} else {
				wantStatus(t, w, []string{"fwd=uri-miss"})
			}
			if got := w.Header().Get("X-Who"); got != "anonymous" || w.Body.String() != "page for anonymous" {
				t.Errorf("anonymous request got X-Who %q and %q", got, w.Body.String())
			}
		})
	}
}

// TestPrivateRevalidationLeadsNoFlight: a revalidation marked private
// before the cache goes alone: anonymous requests for the same stale entry
// meanwhile coalesce among themselves (a review: they waited on hers, then
// each went to the origin, which her answer could not serve them).
func TestPrivateRevalidationLeadsNoFlight(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	release := make(chan struct{})
	var calls atomic.Int32
	var block atomic.Bool
	inner := validating(c, `"v1"`, "page", "Cache-Control", "max-age=2")
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		calls.Add(1)
		if block.Load() {
			<-release
		}
		return inner.fn(w, r)
	}}
	const url = "http://example.com/page"
	presetting(t, h, o, url)
	c.Advance(3 * time.Second)
	block.Store(true)
	done := make(chan struct{})
	go func() {
		defer close(done)
		w := httptest.NewRecorder()
		w.Header().Set("Cache-Control", "private")
		_ = h.ServeHTTP(w, newRequest(http.MethodGet, url, "Cookie", "session=alice"), o)
	}()
	until(t, "her revalidation at the origin", func() bool { return calls.Load() == 2 })
	key := keyOf(t, h, newRequest(http.MethodGet, url))
	out := burst(t, h, o, release, 5, url, "anonymous requests to wait on one of theirs", func() bool { return h.flights.waiting(key) == 4 })
	<-done
	if n := calls.Load(); n != 3 {
		t.Errorf("origin called %d times, want 3 (the store, hers, one for the anonymous five)", n)
	}
	for _, w := range out {
		if w.Code != http.StatusOK || w.Body.String() != "page" {
			t.Errorf("anonymous answer %d %q", w.Code, w.Body.String())
		}
	}
}

// TestPrivateMissLeadsNoFlight: a miss marked private before the cache
// leads no flight (its answer is never stored): anonymous requests that
// come meanwhile coalesce among themselves, where they waited on hers and
// then each went to the origin (a review: 6 origin calls, now 2).
func TestPrivateMissLeadsNoFlight(t *testing.T) {
	for _, cdn := range []bool{false, true} {
		t.Run(map[bool]string{false: "origin Cache-Control only", true: "origin CDN-Cache-Control too"}[cdn], func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{MinUses: 1}, c)
			release := make(chan struct{})
			var calls atomic.Int32
			var block atomic.Bool
			block.Store(true)
			o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
				calls.Add(1)
				who := "anonymous"
				if ck, err := r.Cookie("session"); err == nil {
					who = ck.Value
				}
				if block.Load() {
					<-release
				}
				w.Header().Set("Cache-Control", "max-age=60")
				if cdn {
					w.Header().Set("CDN-Cache-Control", "max-age=60")
				}
				w.Header().Set("Date", c.date())
				_, _ = io.WriteString(w, "page for "+who)
				return nil
			}}
			const url = "http://example.com/page"
			done := make(chan *httptest.ResponseRecorder)
			go func() {
				w := httptest.NewRecorder()
				w.Header().Set("Cache-Control", "private")
				_ = h.ServeHTTP(w, newRequest(http.MethodGet, url, "Cookie", "session=alice"), o)
				done <- w
			}()
			until(t, "her miss at the origin", func() bool { return calls.Load() == 1 })
			key := keyOf(t, h, newRequest(http.MethodGet, url))
			out := burst(t, h, o, release, 5, url, "anonymous requests placed", func() bool { return h.flights.waiting(key) == 5 || h.flights.waiting(key) == 4 && calls.Load() == 2 })
			if her := <-done; her.Body.String() != "page for alice" {
				t.Errorf("she got %q", her.Body.String())
			}
			for _, w := range out {
				if w.Body.String() != "page for anonymous" {
					t.Errorf("anonymous got %q", w.Body.String())
				}
			}
			if n := calls.Load(); n > 2 {
				t.Errorf("origin called %d times, want 2 (hers, one for the anonymous five)", n)
			}
		})
	}
}

// TestPrivateWithoutCookieDropsAndHintsNothing: a request marked private
// before the cache by something other than a cookie (remote_ip, a header)
// neither drops the shared entry with its unstorable 200 nor hints its
// URL for everyone with its miss (a review).
func TestPrivateWithoutCookieDropsAndHintsNothing(t *testing.T) {
	for _, cdn := range []bool{false, true} {
		t.Run(map[bool]string{false: "origin Cache-Control only", true: "origin CDN-Cache-Control too"}[cdn], func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{MinUses: 1}, c)
			o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
				who := "anonymous"
				if r.Header.Get("X-Staff") != "" {
					who = "staff"
				}
				w.Header().Set("Cache-Control", "max-age=2")
				if cdn {
					w.Header().Set("CDN-Cache-Control", "max-age=2")
				}
				w.Header().Set("Date", c.date())
				w.Header().Set("Etag", `"`+who+`"`)
				_, _ = io.WriteString(w, "page for "+who)
				return nil
			}}
			const url = "http://example.com/page"
			presetting(t, h, o, url)
			c.Advance(3 * time.Second)
			if w := presettingRequest(t, h, o, newRequest(http.MethodGet, url, "X-Staff", "1"), "Cache-Control", "private"); w.Body.String() != "page for staff" {
				t.Errorf("she got %q", w.Body.String())
			}
			wantStatus(t, presetting(t, h, o, url), []string{"fwd=stale"})
			// Her plain miss of another URL.
			const url2 = "http://example.com/other"
			presettingRequest(t, h, o, newRequest(http.MethodGet, url2, "X-Staff", "1"), "Cache-Control", "private")
			if hinted(t, h, url2) {
				t.Errorf("her miss hinted %s for everyone", url2)
			}
		})
	}
}

// TestPrivateConditionalGoesAsItCame: a conditional GET marked private or
// no-store before the cache is sent with its conditionals (its answer is
// never stored, so fetching it whole would only cost the origin a full
// body where a 304 does): every time, not only once a hint says so (a
// review of 3261f74 saw none of five go as they came).
func TestPrivateConditionalGoesAsItCame(t *testing.T) {
	for _, mark := range []string{"no-store", "private"} {
		t.Run(mark, func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{MinUses: 1}, c)
			inner := validating(c, `"v1"`, "page", "Cache-Control", "max-age=60")
			var conditional atomic.Int32
			o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
				if r.Header.Get("If-None-Match") != "" {
					conditional.Add(1)
				}
				return inner.fn(w, r)
			}}
			for i := range 5 {
				w := presettingRequest(t, h, o, newRequest(http.MethodGet, "http://example.com/a", "If-None-Match", `"v1"`), "Cache-Control", mark)
				if w.Code != http.StatusNotModified {
					t.Errorf("request %d: status %d, want 304", i, w.Code)
				}
			}
			if n := conditional.Load(); n != 5 {
				t.Errorf("the origin got If-None-Match on %d of 5 requests, want all", n)
			}
		})
	}
}
