package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/cespare/xxhash/v2"
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
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestRevalidationDoesNotBringBackWhatIsGone: a HEAD's 200 or a 304 that
// arrives after the stored response was invalidated (POST), purged or
// replaced by a newer one does not store the old body again.
func TestRevalidationDoesNotBringBackWhatIsGone(t *testing.T) {
	for _, method := range []string{http.MethodHead, http.MethodGet} {
		for _, during := range []string{"post", "purge", "newer"} {
			t.Run(method+" "+during, func(t *testing.T) {
				c := newClock()
				h := newTestHandler(t, Config{}, c)
				const url = "http://example.com/gone"
				get(t, h, static(c, 200, "v1 body", "Cache-Control", "max-age=60", "Etag", `"v1"`), url)
				c.Advance(2 * time.Minute)
				reached, release := make(chan struct{}), make(chan struct{})
				slow := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
					w.Header().Set("Cache-Control", "max-age=600")
					w.Header().Set("Etag", `"v1"`)
					close(reached)
					<-release
					if r.Method == http.MethodGet {
						w.WriteHeader(http.StatusNotModified)
					}
					return nil
				}}
				done := make(chan struct{})
				go func() {
					defer close(done)
					_ = h.ServeHTTP(newWriter(), newRequest(method, url), slow)
				}()
				<-reached
				switch during {
				case "post":
					serve(t, h, static(c, 204, ""), newRequest(http.MethodPost, url))
				case "purge":
					h.store.purgeKey(keyOf(t, h, newRequest(http.MethodGet, url)))
				case "newer":
					// In a goroutine: before neverCollapsed, this no-cache
					// GET waited for the slow revalidation of the GET case.
					stored := make(chan struct{})
					go func() {
						defer close(stored)
						_ = h.ServeHTTP(newWriter(), newRequest(http.MethodGet, url, "Cache-Control", "no-cache"),
							static(c, 200, "v2 body", "Cache-Control", "max-age=600", "Etag", `"v2"`))
					}()
					untilValue(t, "the newer response", stored)
					h.store.wait()
				}
				close(release)
				<-done
				h.store.wait()
				w := get(t, h, static(c, 500, ""), url, "Cache-Control", "only-if-cached")
				want := http.StatusGatewayTimeout
				if during == "newer" {
					want = http.StatusOK
				}
				if w.Code != want || want == http.StatusOK && w.Body.String() != "v2 body" {
					t.Errorf("after the late answer: %d %q %s, want %d", w.Code, w.Body.String(), w.Header().Get("Cache-Status"), want)
				}
			})
		}
	}
}

// validating answers a conditional request with ETag etag with a 304 and
// anything else with a 200 carrying body.
func validating(c *clock, etag, body string, fields ...string) *origin {
	return &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		for i := 0; i+1 < len(fields); i += 2 {
			w.Header().Set(fields[i], fields[i+1])
		}
		w.Header().Set("Date", c.date())
		w.Header().Set("Etag", etag)
		if r.Header.Get("If-None-Match") == etag {
			w.WriteHeader(http.StatusNotModified)
			return nil
		}
		_, _ = w.Write([]byte(body))
		return nil
	}}
}

func TestRevalidation304(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	o := validating(c, `"v1"`, "payload", "Cache-Control", "max-age=60", "X-Version", "1")
	get(t, h, o, "http://example.com/v")
	c.Advance(2 * time.Minute)
	o2 := validating(c, `"v1"`, "payload", "Cache-Control", "max-age=60", "X-Version", "2")
	w := get(t, h, o2, "http://example.com/v", "Accept", "text/html")
	if inm := o2.last().Header.Get("If-None-Match"); inm != `"v1"` {
		t.Errorf("revalidation If-None-Match %q, want the stored ETag", inm)
	}
	if w.Code != 200 || w.Body.String() != "payload" {
		t.Fatalf("revalidated answer %d %q, want the stored 200", w.Code, w.Body.String())
	}
	wantStatus(t, w, []string{"fwd=stale", "fwd-status=304", "ttl=60"})
	if got := w.Header().Get("X-Version"); got != "2" {
		t.Errorf("X-Version %q: the 304's fields were not applied", got)
	}
	if got := w.Header().Get("Age"); got != "0" {
		t.Errorf("Age %q after revalidation, want 0", got)
	}
	c.Advance(10 * time.Second)
	w = get(t, h, o2, "http://example.com/v")
	wantStatus(t, w, []string{"hit", "ttl=50"})
	if w.Header().Get("X-Version") != "2" || w.Body.String() != "payload" {
		t.Errorf("updated entry: X-Version %q body %q", w.Header().Get("X-Version"), w.Body.String())
	}
	if n := o.calls.Load() + o2.calls.Load(); n != 2 {
		t.Errorf("origin called %d times, want 2", n)
	}
}

// movedOn answers like an origin serving etag and body (max-age=60) that
// answers every conditional request with a 304, whatever it asked about.
func movedOn(etag, body string) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Etag", etag)
		if r.Header.Get("If-None-Match") != "" {
			w.WriteHeader(http.StatusNotModified)
			return nil
		}
		_, _ = io.WriteString(w, body)
		return nil
	}
}

// TestNoCacheWithETagIsRevalidated: a response with no-cache and an ETag
// but no lifetime is stored, and every use of it is a conditional request
// whose 304 lets the cache send the stored body.
func TestNoCacheWithETagIsRevalidated(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("Etag", `"a"`)
		if r.Header.Get("If-None-Match") == `"a"` {
			w.WriteHeader(http.StatusNotModified)
			return nil
		}
		_, _ = io.WriteString(w, "page")
		return nil
	}}
	const url = "http://example.com/nc"
	wantStatus(t, get(t, h, o, url), []string{"fwd=uri-miss", "fwd-status=200"})
	for i := range 2 {
		w := get(t, h, o, url)
		if w.Code != 200 || w.Body.String() != "page" {
			t.Fatalf("use %d: %d %q", i, w.Code, w.Body.String())
		}
		wantStatus(t, w, []string{"fwd=stale", "fwd-status=304"})
		if inm := o.last().Header.Get("If-None-Match"); inm != `"a"` {
			t.Errorf("use %d went out with If-None-Match %q, want the stored tag", i, inm)
		}
	}
	if n := o.calls.Load(); n != 3 {
		t.Errorf("origin asked %d times, want 3 (every use validated)", n)
	}
	if w := get(t, h, o, url, "Cache-Control", "only-if-cached"); w.Code != http.StatusGatewayTimeout {
		t.Errorf("only-if-cached: %d, want 504 (no use without validation)", w.Code)
	}
	if w := get(t, h, o, url, "If-None-Match", `"a"`); w.Code != http.StatusNotModified {
		t.Errorf("the client's conditional request: %d, want 304", w.Code)
	}
}

// TestNoCacheUsesDoNotWait: concurrent uses of a response that must be
// validated on every use each send their own conditional request at once;
// none waits for another's, whose answer it could not use.
func TestNoCacheUsesDoNotWait(t *testing.T) {
	for _, tc := range []struct{ name, cc, clientCC string }{
		{"stored no-cache", "no-cache", ""},
		{"stored max-age=0", "max-age=0", ""},
		{"client no-cache", "max-age=60", "no-cache"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{}, c)
			const url = "http://example.com/each"
			var atOrigin atomic.Int32
			release := make(chan struct{})
			o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
				w.Header().Set("Cache-Control", tc.cc)
				w.Header().Set("Etag", `"a"`)
				if r.Header.Get("If-None-Match") == `"a"` {
					atOrigin.Add(1)
					<-release
					w.WriteHeader(http.StatusNotModified)
					return nil
				}
				_, _ = io.WriteString(w, "page")
				return nil
			}}
			get(t, h, o, url)
			const clients = 4
			var wg sync.WaitGroup
			for range clients {
				wg.Go(func() {
					_ = h.ServeHTTP(newWriter(), newRequest(http.MethodGet, url, "Cache-Control", tc.clientCC), o)
				})
			}
			until(t, "every use to reach the origin", func() bool { return atOrigin.Load() == clients })
			close(release)
			wg.Wait()
		})
	}
}

// TestRevalidation304OtherValidator: a 304 whose ETag is not the stored
// one cannot refresh the stored response (RFC 9111 §4.3.4); the cache
// drops it and sends the client's request again, unconditionally.
func TestRevalidation304OtherValidator(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	get(t, h, static(c, 200, "old body", "Cache-Control", "max-age=60", "Etag", `"v1"`), "http://example.com/ov")
	c.Advance(2 * time.Minute)
	// An origin (or a pool of replicas) that has moved on to v2 and
	// answers every conditional request with a 304 for it.
	o := &origin{fn: movedOn(`"v2"`, "new body")}
	w := get(t, h, o, "http://example.com/ov")
	if w.Code != 200 || w.Body.String() != "new body" || w.Header().Get("Etag") != `"v2"` {
		t.Fatalf("answer %d %q ETag %q, want the v2 200", w.Code, w.Body.String(), w.Header().Get("Etag"))
	}
	wantStatus(t, w, []string{"fwd=stale", "fwd-status=200"})
	if n := o.calls.Load(); n != 2 {
		t.Errorf("origin called %d times, want 2 (the 304, then the request as it came)", n)
	}
	if inm := o.last().Header.Get("If-None-Match"); inm != "" {
		t.Errorf("second request had If-None-Match %q", inm)
	}
	h.store.wait()
	w = get(t, h, o, "http://example.com/ov", "If-None-Match", `"v2"`)
	if w.Code != http.StatusNotModified {
		t.Errorf("conditional request for v2: %d, want 304 from the stored v2", w.Code)
	}
	wantStatus(t, w, []string{"hit"})
	if w = get(t, h, o, "http://example.com/ov"); w.Body.String() != "new body" {
		t.Errorf("stored body %q, want the v2 body", w.Body.String())
	}
	// A no-store request asked again stores nothing.
	c.Advance(2 * time.Minute)
	o.fn = movedOn(`"v9"`, "v9 body")
	if w = get(t, h, o, "http://example.com/ov", "Cache-Control", "no-store"); w.Body.String() != "v9 body" {
		t.Errorf("no-store request asked again: %q", w.Body.String())
	}
	h.store.wait()
	if w = get(t, h, o, "http://example.com/ov", "Cache-Control", "only-if-cached"); w.Code != http.StatusGatewayTimeout {
		t.Errorf("after a no-store request: %d %s, want nothing stored", w.Code, w.Header().Get("Cache-Status"))
	}
	get(t, h, o, "http://example.com/ov") // v9 stored
	// The client's own preconditions and Range go out on the second try.
	o3 := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Etag", `"v3"`)
		if r.Header.Get("If-None-Match") == `"v9"` {
			w.WriteHeader(http.StatusNotModified)
			return nil
		}
		w.Header().Set("Content-Range", "bytes 0-2/8")
		w.WriteHeader(http.StatusPartialContent)
		_, _ = io.WriteString(w, r.Header.Get("Range"))
		return nil
	}}
	c.Advance(2 * time.Minute)
	w = get(t, h, o3, "http://example.com/ov", "Range", "bytes=0-2", "If-None-Match", `"v7"`)
	if w.Code != http.StatusPartialContent || w.Body.String() != "bytes=0-2" {
		t.Errorf("ranged retry: %d %q", w.Code, w.Body.String())
	}
	if got := o3.last().Header.Get("If-None-Match"); got != `"v7"` {
		t.Errorf("retry If-None-Match %q, want the client's", got)
	}
}

// TestRevalidationKeepsTheStoredTag: a 304 whose ETag names the stored
// response in the origin's own form refreshes it, and the entry keeps its
// tag. Caddy's encode appends -gzip to the 200's tag and strips it from
// the conditional request, leaving the 304's alone; nginx weakens the tag
// of a response it compresses, not of its 304.
func TestRevalidationKeepsTheStoredTag(t *testing.T) {
	for _, tc := range []struct{ name, stored string }{
		{"behind encode", `"v1-gzip"`},
		{"weakened by nginx", `W/"v1"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{}, c)
			get(t, h, static(c, 200, "gz", "Cache-Control", "max-age=60", "Etag", tc.stored, "Content-Encoding", "gzip"), "http://example.com/enc")
			c.Advance(2 * time.Minute)
			o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
				w.Header().Set("Cache-Control", "max-age=60")
				w.Header().Set("Etag", `"v1"`)
				w.WriteHeader(http.StatusNotModified)
				return nil
			}}
			w := get(t, h, o, "http://example.com/enc")
			wantStatus(t, w, []string{"fwd=stale", "fwd-status=304", "ttl=60"})
			if o.calls.Load() != 1 || w.Body.String() != "gz" || w.Header().Get("Etag") != tc.stored {
				t.Errorf("origin calls %d, body %q, ETag %q: want one 304 and the stored entry with its tag", o.calls.Load(), w.Body.String(), w.Header().Get("Etag"))
			}
		})
	}
}

// TestRevalidation304WithoutDate: a 304 without Date is dated when it is
// received (RFC 9110 §6.6.1), so the refreshed entry is fresh, not aged
// from the old Date.
func TestRevalidation304WithoutDate(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	get(t, h, validating(c, `"v1"`, "payload", "Cache-Control", "max-age=60"), "http://example.com/nd")
	c.Advance(2 * time.Minute)
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Etag", `"v1"`)
		w.Header().Set("Cache-Control", "max-age=60")
		w.WriteHeader(http.StatusNotModified)
		return nil
	}}
	w := get(t, h, o, "http://example.com/nd")
	wantStatus(t, w, []string{"fwd=stale", "fwd-status=304", "ttl=60"})
	if age, date := w.Header().Get("Age"), w.Header().Get("Date"); age != "0" || date != c.date() {
		t.Errorf("Age %q Date %q, want 0 and %q", age, date, c.date())
	}
	c.Advance(10 * time.Second)
	wantStatus(t, get(t, h, o, "http://example.com/nd"), []string{"hit", "ttl=50"})
}

func TestRevalidationClientConditional(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	o := validating(c, `"v1"`, "payload", "Cache-Control", "max-age=60")
	get(t, h, o, "http://example.com/cc")
	c.Advance(2 * time.Minute)
	w := get(t, h, o, "http://example.com/cc", "If-None-Match", `"v1"`)
	if w.Code != http.StatusNotModified || w.Body.Len() != 0 {
		t.Errorf("answer %d %q, want 304", w.Code, w.Body.String())
	}
	wantStatus(t, w, []string{"fwd=stale", "fwd-status=304"})
}

func TestRevalidation200Replaces(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	o := validating(c, `"v1"`, "old", "Cache-Control", "max-age=60")
	get(t, h, o, "http://example.com/rep")
	c.Advance(2 * time.Minute)
	o2 := validating(c, `"v2"`, "new", "Cache-Control", "max-age=60")
	w := get(t, h, o2, "http://example.com/rep")
	if w.Body.String() != "new" {
		t.Fatalf("body %q, want new", w.Body.String())
	}
	wantStatus(t, w, []string{"fwd=stale", "fwd-status=200"})
	if inm := o2.last().Header.Get("If-None-Match"); inm != `"v1"` {
		t.Errorf("If-None-Match %q, want the stored ETag", inm)
	}
	w = get(t, h, o2, "http://example.com/rep")
	wantStatus(t, w, []string{"hit"})
	if w.Body.String() != "new" {
		t.Errorf("body %q after replacement", w.Body.String())
	}
}

func TestRevalidationSendsStoredVaryFields(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	o := validating(c, `"v"`, "x", "Cache-Control", "max-age=60", "Vary", "Accept-Language")
	get(t, h, o, "http://example.com/sv", "Accept-Language", "fr,  de")
	c.Advance(2 * time.Minute)
	get(t, h, o, "http://example.com/sv", "Accept-Language", "fr, de")
	if got := o.last().Header.Get("Accept-Language"); got != "fr,  de" {
		t.Errorf("revalidation Accept-Language %q, want the stored request's", got)
	}
}

func TestStaleWhileRevalidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    Config
		cc     string
		age    time.Duration
		served bool // served stale without waiting
	}{
		{name: "directive", cc: "max-age=60, stale-while-revalidate=30", age: 70 * time.Second, served: true},
		{name: "directive expired", cc: "max-age=60, stale-while-revalidate=30", age: 100 * time.Second},
		{name: "config default", cfg: Config{StaleWhileRevalidate: caddy.Duration(30 * time.Second)}, cc: "max-age=60", age: 70 * time.Second, served: true},
		{name: "config caps", cfg: Config{StaleWhileRevalidate: caddy.Duration(5 * time.Second)}, cc: "max-age=60, stale-while-revalidate=30", age: 70 * time.Second},
		{name: "must-revalidate", cc: "max-age=60, stale-while-revalidate=30, must-revalidate", age: 70 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, tc.cfg, c)
			o := validating(c, `"s"`, "body", "Cache-Control", tc.cc)
			get(t, h, o, "http://example.com/swr")
			c.Advance(tc.age)
			w := get(t, h, o, "http://example.com/swr")
			h.bg.wait()
			h.store.wait()
			if got := hasParam(w.Header().Get("Cache-Status"), "hit"); got != tc.served {
				t.Fatalf("served from cache = %v, want %v (Cache-Status %q)", got, tc.served, w.Header().Get("Cache-Status"))
			}
			if n := o.calls.Load(); n != 2 {
				t.Errorf("origin called %d times, want 2", n)
			}
			if tc.served {
				wantStatus(t, w, []string{"ttl=-10", "detail=stale-while-revalidate"})
				// The background refresh reset the entry.
				wantStatus(t, get(t, h, o, "http://example.com/swr"), []string{"hit", "ttl=60"})
			}
		})
	}
}

// TestStaleWhileRevalidateFailureIsLogged: a background refresh that
// cannot reach the origin, or gets a server error, is a warning with the
// error or status: its client had the stale response, and nobody else
// hears of it (a review found the 5xx unlogged). A 5xx within
// stale-if-error is no different: the refresh served no one, so it is not
// logged as a stale-if-error answer (a review found it was, and the
// backoff's warning left out). A good one at debug only.
func TestStaleWhileRevalidateFailureIsLogged(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cc     string
		status int // the refresh's answer; 0: the origin is unreachable
		want   string
	}{
		{"unreachable", "max-age=60, stale-while-revalidate=30", 0, "background revalidation failed"},
		{"500", "max-age=60, stale-while-revalidate=30", 500, "background revalidation failed"},
		{"500 under stale-if-error", "max-age=60, stale-while-revalidate=30, stale-if-error=60", 500, "background revalidation failed"},
		{"200", "max-age=60, stale-while-revalidate=30", 200, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{}, c)
			core, logs := observer.New(zapcore.WarnLevel)
			h.logger = zap.New(core)
			get(t, h, static(c, 200, "body", "Cache-Control", tc.cc), "http://example.com/swr")
			c.Advance(70 * time.Second)
			o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
				if tc.status == 0 {
					return errors.New("dial tcp: connection refused")
				}
				w.Header().Set("Cache-Control", tc.cc)
				w.WriteHeader(tc.status)
				return nil
			}}
			wantStatus(t, get(t, h, o, "http://example.com/swr"), []string{"hit", "detail=stale-while-revalidate"})
			h.bg.wait()
			var got []string
			for _, l := range logs.All() {
				got = append(got, l.Message)
			}
			if tc.want == "" && len(got) > 0 || tc.want != "" && (len(got) != 1 || !strings.Contains(got[0], tc.want)) {
				t.Errorf("logged %q, want one line with %q", got, tc.want)
			}
		})
	}
}

// TestStaleWhileRevalidateRequestsThatStartNoRefresh: a request with
// no-store, or with only-if-cached, is served the stale entry within
// stale-while-revalidate but starts no refresh: its only point is to
// store, which no-store forbids (RFC 9111 §5.2.1.5), and it would reach
// the origin for a client that asked for a stored response only
// (§5.2.1.7; a review saw the origin asked). The next request starts it.
func TestStaleWhileRevalidateRequestsThatStartNoRefresh(t *testing.T) {
	for _, directive := range []string{"no-store", "only-if-cached"} {
		t.Run(directive, func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{}, c)
			o := validating(c, `"s"`, "body", "Cache-Control", "max-age=60, stale-while-revalidate=30")
			const url = "http://example.com/swr"
			get(t, h, o, url)
			c.Advance(70 * time.Second)
			w := get(t, h, o, url, "Cache-Control", directive)
			h.bg.wait()
			h.store.wait()
			wantStatus(t, w, []string{"hit", "ttl=-10", "detail=stale-while-revalidate"})
			if n := o.calls.Load(); n != 1 {
				t.Errorf("origin called %d times after the %s request, want 1 (no refresh)", n, directive)
			}
			wantStatus(t, get(t, h, o, url), []string{"hit", "detail=stale-while-revalidate"})
			h.bg.wait()
			h.store.wait()
			if n := o.calls.Load(); n != 2 {
				t.Errorf("origin called %d times after the next request, want 2 (its refresh)", n)
			}
			wantStatus(t, get(t, h, o, url), []string{"hit", "ttl=60"})
		})
	}
}

// TestStaleWhileRevalidateRefreshesTheGET: whatever request finds the
// entry stale (a HEAD, a Range, the client's own precondition), the
// background request is a plain GET that refreshes the stored response.
func TestStaleWhileRevalidateRefreshesTheGET(t *testing.T) {
	for _, tc := range []struct {
		name     string
		validate bool // the stored response has an ETag
		method   string
		fields   []string
	}{
		{"HEAD", true, http.MethodHead, nil},
		{"HEAD without validator", false, http.MethodHead, nil},
		{"Range without validator", false, http.MethodGet, []string{"Range", "bytes=0-1"}},
		{"If-None-Match without validator", false, http.MethodGet, []string{"If-None-Match", `"other"`}},
		{"If-Modified-Since", true, http.MethodGet, []string{"If-Modified-Since", "Fri, 02 Jan 2026 03:00:00 GMT"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{}, c)
			cc := "max-age=60, stale-while-revalidate=600"
			o := static(c, 200, "0123456789", "Cache-Control", cc)
			if tc.validate {
				o = validating(c, `"s"`, "0123456789", "Cache-Control", cc)
			}
			get(t, h, o, "http://example.com/swrg")
			c.Advance(70 * time.Second)
			w := serve(t, h, o, newRequest(tc.method, "http://example.com/swrg", tc.fields...))
			wantStatus(t, w, []string{"hit", "detail=stale-while-revalidate"})
			h.bg.wait()
			h.store.wait()
			bg := o.last()
			if bg.Method != http.MethodGet || bg.Header.Get("Range") != "" || bg.Header.Get("If-Modified-Since") != "" {
				t.Errorf("background request %s with Range %q, If-Modified-Since %q", bg.Method, bg.Header.Get("Range"), bg.Header.Get("If-Modified-Since"))
			}
			if inm := bg.Header.Get("If-None-Match"); tc.validate && inm != `"s"` || !tc.validate && inm != "" {
				t.Errorf("background If-None-Match %q", inm)
			}
			wantStatus(t, get(t, h, o, "http://example.com/swrg"), []string{"hit", "ttl=60"})
		})
	}
}

// TestStaleWhileRevalidateKeepsTheRequestsState: the background refresh
// goes through the handlers after the cache with what those before it set
// (a site's root in vars, a replacer value such as a map output, the URI
// before a rewrite), so it makes the response the client's request made,
// not one from the process's working directory or the rewritten path; and
// what it sets stays its own.
func TestStaleWhileRevalidateKeepsTheRequestsState(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		w.Header().Set("Cache-Control", "max-age=60, stale-while-revalidate=600")
		_, _ = io.WriteString(w, repl.ReplaceAll("root={http.vars.root} tenant={tenant} orig={http.request.orig_uri.path} path={http.request.uri.path}", "-"))
		caddyhttp.SetVar(r.Context(), "root", "/set/after/the/cache")
		repl.Set("tenant", "set-after")
		return nil
	}}
	// The client's request, as the handlers before the cache leave it: a
	// root, a map output, and a rewrite (handle_path /app/*).
	client := func() *http.Request {
		r := newRequest(http.MethodGet, "http://example.com/app/page")
		caddyhttp.SetVar(r.Context(), "root", "/srv/site")
		r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer).Set("tenant", "acme")
		r.URL.Path = "/page"
		return r
	}
	want := "root=/srv/site tenant=acme orig=/app/page path=/page"
	if w := serve(t, h, o, client()); w.Body.String() != want {
		t.Fatalf("miss: %q, want %q", w.Body.String(), want)
	}
	c.Advance(70 * time.Second)
	// The first refresh asks for {tenant}, which only the client's request
	// knows: its answer is not stored; the next refresh reads the client's
	// tenant before it starts.
	r := client()
	for i := range 2 {
		w := serve(t, h, o, r)
		wantStatus(t, w, []string{"hit", "detail=stale-while-revalidate"})
		h.bg.wait()
		h.store.wait()
		if n := o.calls.Load(); n != int32(2+i) {
			t.Fatalf("origin called %d times, want %d (the background refreshes)", n, 2+i)
		}
	}
	w := serve(t, h, o, client())
	wantStatus(t, w, []string{"hit", "ttl=60"})
	if w.Body.String() != want {
		t.Errorf("after the background refresh: %q, want %q", w.Body.String(), want)
	}
	// What the refresh set did not reach the client's request.
	if root := caddyhttp.GetVar(r.Context(), "root"); root != "/srv/site" {
		t.Errorf("the client's root became %v", root)
	}
	if v, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer).GetString("tenant"); v != "acme" {
		t.Errorf("the client's tenant became %q", v)
	}
}

// TestStaleWhileRevalidateLeavesTheClientsReplacerAlone: a refresh never
// asks the client's replacer from its own goroutine. Its providers run on
// the client's request: a map output whose source reads
// {http.request.uuid} writes the client's vars and log fields, which
// Caddy reads as it logs the client (a data race; a fatal concurrent map
// write). A value only the client's request has is read on the client's
// goroutine, by the refreshes after the one that first asked for it.
func TestStaleWhileRevalidateLeavesTheClientsReplacerAlone(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	var refreshing atomic.Bool
	start := make(chan struct{}, 4)
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		if refreshing.Load() {
			<-start // after the client's ServeHTTP returned
		}
		repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		w.Header().Set("Cache-Control", "max-age=60, stale-while-revalidate=600")
		_, _ = io.WriteString(w, repl.ReplaceAll("tier={tier}", "-"))
		return nil
	}}
	var returned, late atomic.Bool
	client := func() *http.Request {
		r := newRequest(http.MethodGet, "http://example.com/tiered")
		// map {client_ip} {tier}: a provider on the client's replacer.
		r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer).Map(func(key string) (any, bool) {
			if key != "tier" {
				return nil, false
			}
			if returned.Load() {
				late.Store(true)
			}
			return "gold", true
		})
		return r
	}
	if w := serve(t, h, o, client()); w.Body.String() != "tier=gold" {
		t.Fatalf("miss: %q", w.Body.String())
	}
	c.Advance(70 * time.Second)
	refreshing.Store(true)
	for i := range 2 {
		returned.Store(false)
		w := httptest.NewRecorder()
		if err := h.ServeHTTP(w, client(), o); err != nil {
			t.Fatal(err)
		}
		returned.Store(true)
		start <- struct{}{}
		wantStatus(t, w, []string{"hit", "detail=stale-while-revalidate"})
		h.bg.wait()
		h.store.wait()
		if late.Load() {
			t.Fatalf("refresh %d asked the client's replacer after the client's request was over", i+1)
		}
	}
	refreshing.Store(false)
	w := serve(t, h, o, client())
	wantStatus(t, w, []string{"hit", "ttl=60"})
	if w.Body.String() != "tier=gold" {
		t.Errorf("after the refreshes: %q, want the client's tier", w.Body.String())
	}
}

// TestStaleWhileRevalidateHasItsOwnRequest: the background refresh's
// placeholders read its own request (a GET, as the handlers after the
// cache rewrite it: uri strip_prefix), not the client's HEAD with a Range;
// and it writes nothing of the client's request: no request ID in its
// vars, no log fields, and it has no hold on the client's connection
// (idle timeouts), which may be serving another request by then.
func TestStaleWhileRevalidateHasItsOwnRequest(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	var bgIdleWriter *caddyhttp.IdleTimeoutWriter
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		r.URL.Path = strings.TrimPrefix(r.URL.Path, "/api") // uri strip_prefix /api
		repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		_, bgIdleWriter = caddyhttp.IdleTimeoutsFromContext(r.Context())
		_ = repl.ReplaceAll("{http.request.uuid}", "") // sets the request's ID var and log field
		w.Header().Set("Cache-Control", "max-age=60, stale-while-revalidate=600")
		_, _ = io.WriteString(w, repl.ReplaceAll("path={http.request.uri.path} method={http.request.method} range={http.request.header.Range}", "-"))
		return nil
	}}
	want := "path=/page method=GET range=-"
	if w := serve(t, h, o, newRequest(http.MethodGet, "http://example.com/api/page")); w.Body.String() != want {
		t.Fatalf("miss: %q, want %q", w.Body.String(), want)
	}
	c.Advance(70 * time.Second)
	client := newRequest(http.MethodHead, "http://example.com/api/page", "Range", "bytes=0-1")
	clientWriter := &caddyhttp.IdleTimeoutWriter{}
	client = client.WithContext(caddyhttp.ContextWithIdleTimeouts(client.Context(), nil, clientWriter))
	wantStatus(t, serve(t, h, o, client), []string{"hit", "detail=stale-while-revalidate"})
	h.bg.wait()
	h.store.wait()
	if w := serve(t, h, o, newRequest(http.MethodGet, "http://example.com/api/page")); w.Body.String() != want {
		t.Errorf("after the background refresh every client gets %q, want %q", w.Body.String(), want)
	}
	if id := caddyhttp.GetVar(client.Context(), "uuid"); id != nil {
		t.Errorf("the refresh set the client's request ID var: %v", id)
	}
	if bgIdleWriter != nil {
		t.Errorf("the refresh holds the client's idle-timeout writer")
	}
}

// TestStaleWhileRevalidateSurvivesReload: a background refresh in flight
// when the config is unloaded (a reload) completes and stores its answer,
// rather than being cut off; and one that reverse_proxy aborts (it panics
// with http.ErrAbortHandler) is not reported as a panic.
func TestStaleWhileRevalidateSurvivesReload(t *testing.T) {
	c := newClock()
	h, unload := newUnloadableHandler(t, Config{}, c)
	core, logs := observer.New(zapcore.DebugLevel)
	h.logger = zap.New(core)
	const url = "http://example.com/swr-reload"
	get(t, h, static(c, 200, "v1", "Cache-Control", "max-age=60, stale-while-revalidate=600"), url)
	c.Advance(2 * time.Minute)
	reached, release := make(chan struct{}), make(chan struct{})
	var abort atomic.Bool
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		close(reached)
		<-release
		if abort.Load() {
			panic(http.ErrAbortHandler)
		}
		select { // a refresh ended by the unload ends within this
		case <-r.Context().Done():
			return r.Context().Err()
		case <-time.After(50 * time.Millisecond):
		}
		w.Header().Set("Cache-Control", "max-age=600, stale-while-revalidate=6000")
		w.Header().Set("Date", c.date())
		_, _ = io.WriteString(w, "v2")
		return nil
	}}
	wantStatus(t, get(t, h, o, url), []string{"hit", "detail=stale-while-revalidate"})
	<-reached
	unload()
	close(release)
	h.bg.wait()
	h.store.wait()
	if w := get(t, h, o, url, "Cache-Control", "only-if-cached"); w.Body.String() != "v2" {
		t.Fatalf("after a reload during the refresh: %d %q %s, want the refreshed v2", w.Code, w.Body.String(), w.Header().Get("Cache-Status"))
	}

	c.Advance(20 * time.Minute)
	reached, release = make(chan struct{}), make(chan struct{})
	abort.Store(true)
	get(t, h, o, url)
	<-reached
	close(release)
	h.bg.wait()
	if n := logs.FilterMessage("background revalidation panicked").Len(); n != 0 {
		t.Errorf("an aborted refresh was logged as a panic (%d times)", n)
	}
	aborted := logs.FilterMessageSnippet("background revalidation failed").FilterField(zap.Error(errRefreshAborted))
	if n := aborted.FilterLevelExact(zapcore.WarnLevel).Len(); n != 1 {
		t.Errorf("aborted refresh warned about %d times, want 1 (a failure of the origin)", n)
	}
}

func TestStaleWhileRevalidateOncePerKey(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	o := static(c, 200, "body", "Cache-Control", "max-age=60, stale-while-revalidate=600")
	get(t, h, o, "http://example.com/once")
	release := make(chan struct{})
	inner := o.fn
	o.fn = func(w http.ResponseWriter, r *http.Request) error {
		if r.Context().Err() != nil {
			t.Error("background request context already done")
		}
		<-release
		return inner(w, r)
	}
	c.Advance(2 * time.Minute)
	for i := 0; i < 5; i++ {
		// The client's own context ends with its request; the refresh must not.
		ctx, cancel := context.WithCancel(context.Background())
		r := newRequest(http.MethodGet, "http://example.com/once").WithContext(ctx)
		w := httptest.NewRecorder()
		if err := h.ServeHTTP(w, r, o); err != nil {
			t.Fatal(err)
		}
		cancel()
		wantStatus(t, w, []string{"hit", "detail=stale-while-revalidate"})
	}
	close(release)
	h.bg.wait()
	if n := o.calls.Load(); n != 2 {
		t.Errorf("origin called %d times, want 2 (one fill, one background refresh)", n)
	}
}

// TestAskAgainKeepsItsOwnAffinityCookieOut: a 304 that does not select the
// stored response sends the request again, with the vars of before the
// first send; lb_policy affinity then issues a new cookie (a client
// without one), declared in the send's own vars. That cookie was taken for
// the origin's Set-Cookie (the first send's was looked for), so the 200 was
// not stored, and the key's requests without cookies were hinted
// uncacheable.
func TestAskAgainKeepsItsOwnAffinityCookieOut(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	var n atomic.Int32
	etag := `"v1"`
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		cookie := "lb_affinity=id" + strings.Repeat("x", int(n.Add(1))) + ".mac; Path=/; HttpOnly"
		w.Header().Add("Set-Cookie", cookie)
		caddyhttp.SetVar(r.Context(), ProxySetCookieVar, cookie)
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Date", c.date())
		if r.Header.Get("If-None-Match") != "" {
			w.Header().Set("Etag", `"other"`) // selects nothing stored
			w.WriteHeader(http.StatusNotModified)
			return nil
		}
		w.Header().Set("Etag", etag)
		_, _ = io.WriteString(w, "body "+etag)
		return nil
	}}
	const url = "http://example.com/aff"
	get(t, h, o, url)
	c.Advance(2 * time.Minute)
	etag = `"v2"`
	if w := get(t, h, o, url); w.Body.String() != `body "v2"` || len(w.Header()["Set-Cookie"]) != 1 {
		t.Fatalf("revalidation answered %q with Set-Cookie %q, want the new body and the retry's cookie", w.Body.String(), w.Header()["Set-Cookie"])
	}
	calls := o.calls.Load()
	if w := get(t, h, o, url); o.calls.Load() != calls {
		t.Errorf("the 200 of the request sent again was not stored: the next request went to the origin (Cache-Status %q)", w.Header().Get("Cache-Status"))
	}
}

// TestAuthorizedRevalidationKeepsTheSharedEntry: a 304 to a client whose
// request has Authorization refreshes nothing (not storable for that
// request, RFC 9111 §3.5) and leaves the stored response to the others, as
// a 200 to it does; it dropped it.
func TestAuthorizedRevalidationKeepsTheSharedEntry(t *testing.T) {
	for _, second := range []int{http.StatusNotModified, http.StatusOK} {
		t.Run(http.StatusText(second), func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{}, c)
			const url = "http://example.com/shared"
			get(t, h, static(c, 200, "payload", "Cache-Control", "max-age=60", "Etag", `"v1"`), url)
			c.Advance(2 * time.Minute)
			o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
				w.Header().Set("Etag", `"v1"`)
				w.Header().Set("Cache-Control", "max-age=60")
				w.Header().Set("Date", c.date())
				if second == http.StatusNotModified && r.Header.Get("If-None-Match") == `"v1"` {
					w.WriteHeader(http.StatusNotModified)
					return nil
				}
				_, _ = io.WriteString(w, "payload")
				return nil
			}}
			if w := get(t, h, o, url, "Authorization", "Bearer x"); w.Code != 200 || w.Body.String() != "payload" {
				t.Fatalf("authorized revalidation: %d %q", w.Code, w.Body.String())
			}
			w := get(t, h, static(c, 500, ""), url, "Cache-Control", "max-stale")
			if w.Code != 200 || w.Body.String() != "payload" {
				t.Errorf("after an authorized client's %d, another's max-stale request got %d %q (%s): the shared entry is gone", second, w.Code, w.Body.String(), w.Header().Get("Cache-Status"))
			}
		})
	}
}

// TestRevalidation304KeepsTheStoredCoding: a 304 (weakly matching) that
// names another Content-Encoding does not relabel the stored body, whose
// bytes are in the stored coding (RFC 9111 §3.2 lets a cache keep the
// fields its stored response depends on).
func TestRevalidation304KeepsTheStoredCoding(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	const url = "http://example.com/ce"
	get(t, h, static(c, 200, "plain text", "Cache-Control", "max-age=60", "Etag", `W/"v1"`), url)
	c.Advance(2 * time.Minute)
	get(t, h, static(c, 304, "", "Cache-Control", "max-age=60", "Etag", `W/"v1"`, "Content-Encoding", "gzip"), url)
	w := get(t, h, static(c, 500, ""), url)
	if ce := w.Header().Get("Content-Encoding"); ce != "" || !hasParam(w.Header().Get("Cache-Status"), "hit") {
		t.Errorf("hit: %q labelled Content-Encoding %q (Cache-Status %q), want the stored identity body as stored", w.Body.String(), ce, w.Header().Get("Cache-Status"))
	}
}

// TestLogsKeepCredentialsOut: the lines that name a cache key
// (stale-if-error answers, a failing background refresh and its end, and
// the debug lines of refreshes) do not carry what a key template reads
// from a cookie or a credential, nor the request values a variant's key
// holds (Vary: Authorization): a custom key is logged as its hash, with
// the line's host and URI; the default key, the URL, as is; a variant's
// values as a hash of its key (reviews found an Authorization value in
// warn lines, then in debug lines).
func TestLogsKeepCredentialsOut(t *testing.T) {
	const secret = "s3cr3t-token"
	for _, tc := range []struct {
		name, key string
		vary      bool
	}{
		{"custom key", "{http.request.header.Authorization} {http.request.orig_uri}", false},
		{"default key, varying on Authorization", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{Key: tc.key, MinUses: 1}, c)
			core, logs := observer.New(zapcore.DebugLevel)
			h.logger = zap.New(core)
			const cc = "public, max-age=60, stale-while-revalidate=30, stale-if-error=300"
			fields := []string{"Cache-Control", cc}
			if tc.vary {
				fields = append(fields, "Vary", "Authorization")
			}
			const url = "http://example.com/account"
			auth := []string{"Authorization", "Bearer " + secret}
			get(t, h, static(c, 200, "body", fields...), url, auth...)
			c.Advance(70 * time.Second)
			fail := true
			o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
				if fail {
					return errors.New("dial tcp: connection refused")
				}
				for i := 0; i+1 < len(fields); i += 2 {
					w.Header().Set(fields[i], fields[i+1])
				}
				w.WriteHeader(http.StatusOK)
				return nil
			}}
			// A failing background refresh (warn), one that succeeds
			// again (info), then a stale-if-error answer (warn).
			wantStatus(t, get(t, h, o, url, auth...), []string{"hit", "detail=stale-while-revalidate"})
			h.bg.wait()
			fail = false
			c.Advance(2 * time.Second)
			wantStatus(t, get(t, h, o, url, auth...), []string{"hit", "detail=stale-while-revalidate"})
			h.bg.wait()
			h.store.wait()
			fail = true
			c.Advance(100 * time.Second)
			wantStatus(t, get(t, h, o, url, auth...), []string{"detail=stale-if-error"})
			msgs, keyed, variantLines := map[string]bool{}, 0, 0
			for _, l := range logs.All() {
				m := l.ContextMap()
				if line := fmt.Sprint(m); strings.Contains(line, secret) {
					t.Errorf("%s line %q carries the credential: %s", l.Level, l.Message, line)
				}
				key, hasKey := m["key"]
				_, hashed := m["key_hash"]
				if !hasKey && !hashed {
					continue
				}
				keyed++
				if uri, _ := m["uri"].(string); l.Level > zapcore.DebugLevel && (m["host"] != "example.com" || !strings.HasSuffix(uri, "/account")) {
					t.Errorf("line %q: host %v, uri %v; want the request's", l.Message, m["host"], m["uri"])
				}
				if custom := tc.key != ""; custom && (!hashed || hasKey) || !custom && (hashed || key != url) {
					t.Errorf("line %q: key %v, key_hash %v", l.Message, key, m["key_hash"])
				}
				if _, ok := m["variant_hash"]; ok && !tc.vary {
					t.Errorf("line %q: variant_hash %v without a variant", l.Message, m["variant_hash"])
				} else if ok {
					variantLines++
				}
				if l.Level > zapcore.DebugLevel {
					msgs[l.Message] = true
				}
			}
			if tc.vary && variantLines == 0 {
				t.Errorf("no line names the variant by its hash")
			}
			if keyed <= len(msgs) {
				t.Errorf("%d lines name the key; want debug lines among them", keyed)
			}
			if len(msgs) != 3 {
				t.Errorf("logged %v; want a refresh's failure, the end of its streak and a stale-if-error answer", msgs)
			}
		})
	}
}

// TestRevalidationPassesNamedFields: the fields a qualified no-cache or
// private names are not stored, but those the 304 carries go to the
// client whose request it validated (RFC 9111 §5.2.2.4, §5.2.2.7), not
// to the next hit (a review: a Set-Cookie the 304 set for its client,
// under private="Set-Cookie", was dropped).
func TestRevalidationPassesNamedFields(t *testing.T) {
	for _, cc := range []string{`max-age=1, private="Set-Cookie, X-User"`, `max-age=1, no-cache="set-cookie", private="X-User"`} {
		t.Run(cc, func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{MinUses: 1}, c)
			o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
				w.Header().Set("Date", c.date())
				w.Header().Set("ETag", `"v1"`)
				w.Header().Set("Cache-Control", cc)
				if r.Header.Get("If-None-Match") != "" {
					w.Header().Set("Set-Cookie", "sid=from304")
					w.Header().Set("X-User", "u304")
					w.WriteHeader(http.StatusNotModified)
					return nil
				}
				w.Header().Set("Set-Cookie", "sid=first")
				w.Header().Set("X-User", "u1")
				_, _ = io.WriteString(w, "body")
				return nil
			}}
			const url = "http://example.com/named"
			if w := get(t, h, o, url); w.Header().Get("Set-Cookie") != "sid=first" {
				t.Errorf("the miss's own cookie: %q", w.Header()["Set-Cookie"])
			}
			h.store.wait()
			c.Advance(2 * time.Second)
			w := get(t, h, o, url)
			wantStatus(t, w, []string{"fwd=stale", "fwd-status=304"})
			if got := w.Header()["Set-Cookie"]; len(got) != 1 || got[0] != "sid=from304" {
				t.Errorf("the revalidating client's Set-Cookie %q, want its 304's", got)
			}
			if got := w.Header()["X-User"]; len(got) != 1 || got[0] != "u304" {
				t.Errorf("the revalidating client's X-User %q, want its 304's", got)
			}
			h.store.wait()
			w = get(t, h, o, url)
			wantStatus(t, w, []string{"hit"})
			if got := w.Header()["Set-Cookie"]; got != nil || w.Header()["X-User"] != nil {
				t.Errorf("a hit carries %q, %q", got, w.Header()["X-User"])
			}
		})
	}
}

// TestStaleIfErrorLinesArePaced: while the origin is down, the warnings of
// stale-if-error answers come at most one a second, each counting the
// answers not logged since the last (a review: one line per request,
// 26,842 lines in 5 s).
func TestStaleIfErrorLinesArePaced(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{MinUses: 1}, c)
	core, logs := observer.New(zapcore.WarnLevel)
	h.logger = zap.New(core)
	const url = "http://example.com/a"
	get(t, h, static(c, 200, "body", "Cache-Control", "max-age=1, stale-if-error=600"), url)
	c.Advance(2 * time.Second)
	down := &origin{fn: func(http.ResponseWriter, *http.Request) error { return errors.New("dial tcp: connection refused") }}
	for second := range 3 {
		for range 5 {
			wantStatus(t, get(t, h, down, url), []string{"detail=stale-if-error"})
			c.Advance(100 * time.Millisecond)
		}
		if second < 2 {
			c.Advance(500 * time.Millisecond) // 1 s after the first of the five
		}
	}
	var unlogged []int64
	for _, l := range logs.All() {
		n, _ := l.ContextMap()["unlogged"].(int64)
		unlogged = append(unlogged, n)
	}
	if want := []int64{0, 4, 4}; !slices.Equal(unlogged, want) {
		t.Errorf("lines' unlogged counts %v, want %v: one line a second", unlogged, want)
	}
}

// TestLogHashIsKeyed: the hashes log lines show for keys (key_hash,
// variant_hash) match each other within a process but are not a hash
// anyone can compute from a guess of the key (a review: xxhash of the
// key confirmed a guessed Bearer token).
func TestLogHashIsKeyed(t *testing.T) {
	const key = "http://example.com/account\x0013:Authorization19:Bearer s3cr3t-token"
	got := logHash(key)
	if got != logHash(key) || got == logHash(key+"x") || len(got) != 16 {
		t.Fatalf("logHash = %q; want 16 hex digits, the same for the same key only", got)
	}
	plain := sha256.Sum256([]byte(key))
	for _, guess := range []string{strconv.FormatUint(xxhash.Sum64String(key), 16), hex.EncodeToString(plain[:8])} {
		if got == guess {
			t.Errorf("logHash = %q, an unkeyed hash of the key", got)
		}
	}
}
