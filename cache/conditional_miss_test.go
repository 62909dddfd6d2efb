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
)

// validatorOrigin answers with a storable 200 carrying ETag "v1" and a
// Last-Modified an hour before the clock, or with a 304 when the request
// it gets is conditional and matches (as an origin would).
func validatorOrigin(c *clock, fields ...string) *origin {
	lastModified := c.Now().Add(-time.Hour).Format(http.TimeFormat)
	return &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		h := w.Header()
		h.Set("Etag", `"v1"`)
		h.Set("Last-Modified", lastModified)
		h.Set("Date", c.date())
		h.Set("Cache-Control", "max-age=60")
		for i := 0; i+1 < len(fields); i += 2 {
			if fields[i+1] == "" {
				h.Del(fields[i])
			} else {
				h.Set(fields[i], fields[i+1])
			}
		}
		if ClientNotModified(r, h) {
			w.WriteHeader(http.StatusNotModified)
			return nil
		}
		h.Set("Content-Length", "4")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "body")
		return nil
	}}
}

// TestConditionalMissFetchesWhole: a conditional GET that misses goes to
// the origin without If-None-Match and If-Modified-Since, the 200 is
// stored, and the client gets a 304 when the 200 satisfies its
// conditional (the 200 otherwise).
func TestConditionalMissFetchesWhole(t *testing.T) {
	c := newClock()
	hourAgo := c.Now().Add(-time.Hour).Format(http.TimeFormat)
	earlier := c.Now().Add(-2 * time.Hour).Format(http.TimeFormat)
	for _, tc := range []struct {
		name   string
		fields []string // the client's conditional
		origin []string // more fields of the origin's 200 ("": none)
		want   int      // the client's status; 200 when 0
	}{
		{name: "If-None-Match matching", fields: []string{"If-None-Match", `"v1"`}, want: 304},
		{name: "If-None-Match weakly matching", fields: []string{"If-None-Match", `"v0", W/"v1"`}, want: 304},
		{name: "If-None-Match star", fields: []string{"If-None-Match", "*"}, want: 304},
		{name: "If-None-Match other", fields: []string{"If-None-Match", `"v0"`}},
		{name: "If-Modified-Since matching", fields: []string{"If-Modified-Since", hourAgo}, want: 304},
		{name: "If-Modified-Since older", fields: []string{"If-Modified-Since", earlier}},
		// If-None-Match takes precedence (RFC 9110 §13.2.2).
		{name: "If-None-Match other, If-Modified-Since matching", fields: []string{"If-None-Match", `"v0"`, "If-Modified-Since", hourAgo}},
		// Against no Last-Modified, If-Modified-Since is the origin's to
		// ignore: the 200 goes.
		{name: "If-Modified-Since, no Last-Modified", fields: []string{"If-Modified-Since", c.date()}, origin: []string{"Last-Modified", ""}},
		// If-None-Match before Range (RFC 9110 §13.2.2): a Range for the
		// whole body goes without it (see missRequest), and the client
		// gets the 304, or the 200 as a 206.
		{name: "whole Range, If-None-Match matching", fields: []string{"Range", "bytes=0-", "If-None-Match", `"v1"`}, want: 304},
		{name: "whole Range, If-None-Match other", fields: []string{"Range", "bytes=0-", "If-None-Match", `"v0"`}, want: 206},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestHandler(t, Config{}, c)
			o := validatorOrigin(c, tc.origin...)
			const url = "http://example.com/page"
			w := get(t, h, o, url, tc.fields...)
			sent := o.last().Header
			if sent.Get("If-None-Match") != "" || sent.Get("If-Modified-Since") != "" {
				t.Errorf("the miss went out conditional: If-None-Match %q, If-Modified-Since %q", sent.Get("If-None-Match"), sent.Get("If-Modified-Since"))
			}
			wantStatus(t, w, []string{"fwd=uri-miss", "fwd-status=200"})
			switch tc.want {
			case http.StatusNotModified:
				if w.Code != http.StatusNotModified || w.Body.Len() != 0 {
					t.Errorf("client got %d with %d body bytes, want a 304 without a body", w.Code, w.Body.Len())
				}
				if w.Header().Get("Content-Length") != "" || w.Header().Get("Etag") != `"v1"` {
					t.Errorf("304 fields: Content-Length %q, ETag %q; want none and the 200's", w.Header().Get("Content-Length"), w.Header().Get("Etag"))
				}
			case http.StatusPartialContent:
				if w.Code != tc.want || w.Body.String() != "body" || w.Header().Get("Content-Range") != "bytes 0-3/4" {
					t.Errorf("client got %d %q (Content-Range %q), want the 200 as a 206", w.Code, w.Body.String(), w.Header().Get("Content-Range"))
				}
			default:
				if w.Code != http.StatusOK || w.Body.String() != "body" {
					t.Errorf("client got %d %q, want the 200", w.Code, w.Body.String())
				}
			}
			w = get(t, h, o, url)
			wantStatus(t, w, []string{"hit"})
			if w.Code != http.StatusOK || w.Body.String() != "body" {
				t.Errorf("the hit after it: %d %q", w.Code, w.Body.String())
			}
			if n := o.calls.Load(); n != 1 {
				t.Errorf("origin called %d times, want 1", n)
			}
		})
	}
}

// TestConditionalMissAsItCame: a conditional miss whose answer will not be
// stored, or with preconditions the cache leaves to the origin, goes as
// it came, and the client gets the origin's 304.
func TestConditionalMissAsItCame(t *testing.T) {
	c := newClock()
	for _, tc := range []struct {
		name   string
		config Config
		fields []string
		before func(t *testing.T, h *Handler, o *origin) // requests before the conditional one
	}{
		{name: "If-Match", fields: []string{"If-Match", `"v1"`}},
		{name: "If-Unmodified-Since", fields: []string{"If-Unmodified-Since", c.date()}},
		{name: "Authorization", fields: []string{"Authorization", "Bearer x"}},
		{name: "request no-store", fields: []string{"Cache-Control", "no-store"}},
		{name: "min_uses", config: Config{MinUses: 2}},
		{name: "hinted uncacheable", before: func(t *testing.T, h *Handler, o *origin) {
			private := static(c, 200, "mine", "Cache-Control", "private")
			get(t, h, private, "http://example.com/page")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestHandler(t, tc.config, c)
			o := validatorOrigin(c)
			if tc.before != nil {
				tc.before(t, h, o)
			}
			w := get(t, h, o, "http://example.com/page", append([]string{"If-None-Match", `"v1"`}, tc.fields...)...)
			if inm := o.last().Header.Get("If-None-Match"); inm != `"v1"` {
				t.Errorf("the miss went out with If-None-Match %q, want the client's", inm)
			}
			if w.Code != http.StatusNotModified {
				t.Errorf("client got %d, want the origin's 304", w.Code)
			}
			wantStatus(t, w, []string{"fwd-status=304"}, "stored")
		})
	}
}

// TestConditionalMissNotStorable: the 200 a conditional miss fetched whole
// turns out not storable (the URL's first response): the client still gets
// a 304, without the body, and the URL's next conditional misses go as they
// came.
func TestConditionalMissNotStorable(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	o := validatorOrigin(c, "Cache-Control", "private")
	const url = "http://example.com/account"
	w := get(t, h, o, url, "If-None-Match", `"v1"`)
	if o.last().Header.Get("If-None-Match") != "" {
		t.Error("the first miss went out conditional")
	}
	if w.Code != http.StatusNotModified || w.Body.Len() != 0 {
		t.Errorf("client got %d with %d body bytes, want a 304 without a body", w.Code, w.Body.Len())
	}
	wantStatus(t, w, []string{"fwd-status=200"}, "stored")
	w = get(t, h, o, url, "If-None-Match", `"v1"`)
	if o.last().Header.Get("If-None-Match") != `"v1"` || w.Code != http.StatusNotModified {
		t.Errorf("the next miss: origin saw If-None-Match %q, client got %d; want the client's and the origin's 304", o.last().Header.Get("If-None-Match"), w.Code)
	}
}

// proxyLike answers as reverse_proxy does: the header, then the body in
// chunks, flushed; a write error after the header aborts the handler
// (panic(http.ErrAbortHandler)). It records how much was written.
type proxyLike struct {
	origin
	written atomic.Int64
}

func newProxyLike(size int, release <-chan struct{}, fields ...string) *proxyLike {
	p := &proxyLike{}
	chunk := []byte(strings.Repeat("x", 1024))
	p.fn = func(w http.ResponseWriter, r *http.Request) error {
		for i := 0; i+1 < len(fields); i += 2 {
			w.Header().Set(fields[i], fields[i+1])
		}
		w.Header().Set("Content-Length", strconv.Itoa(size))
		w.WriteHeader(http.StatusOK)
		for n := 0; n < size; n += len(chunk) {
			if n == len(chunk) && release != nil {
				<-release
			}
			k, err := w.Write(chunk[:min(len(chunk), size-n)])
			if err != nil {
				p.written.Add(int64(k))
				panic(http.ErrAbortHandler)
			}
			_ = http.NewResponseController(w).Flush()
			p.written.Add(int64(k)) // after the flush: a test reading it may read the writer
		}
		return nil
	}
	return p
}

// TestConditionalMissNotStored: a conditional miss fetched whole whose 200
// will not be stored (larger than max_item_size; with Set-Cookie) gives
// the client its 304 at once and cleanly: the cache reads no more of the
// body, and the handler ends without reverse_proxy's abort reaching the
// client (which would reset its finished response). The key's next
// conditional miss goes as it came.
func TestConditionalMissNotStored(t *testing.T) {
	for _, tc := range []struct {
		name   string
		size   int
		fields []string
	}{
		{"larger than max_item_size", 64 << 10, []string{"Etag", `"big"`, "Cache-Control", "max-age=60"}},
		{"Set-Cookie", 4 << 10, []string{"Etag", `"big"`, "Cache-Control", "max-age=60", "Set-Cookie", "s=1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestHandler(t, Config{MaxItemSize: 16 << 10}, newClock())
			o := newProxyLike(tc.size, nil, tc.fields...)
			w := newWriter()
			if err := h.ServeHTTP(w, newRequest(http.MethodGet, "http://example.com/big", "If-None-Match", `"big"`), o); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(w.codes, []int{http.StatusNotModified}) || len(w.body) != 0 || w.flushes == 0 {
				t.Errorf("client got %v with %d body bytes and %d flushes, want a 304 flushed, no body", w.codes, len(w.body), w.flushes)
			}
			if n := o.written.Load(); n > 1024 {
				t.Errorf("the origin wrote %d bytes, want the cache to stop at the first", n)
			}
			if inm := o.last().Header.Get("If-None-Match"); inm != "" {
				t.Errorf("the first miss went out with If-None-Match %q", inm)
			}
			get(t, h, o, "http://example.com/big", "If-None-Match", `"big"`)
			if inm := o.last().Header.Get("If-None-Match"); inm != `"big"` {
				t.Errorf("the next conditional miss went out with If-None-Match %q, want the client's", inm)
			}
		})
	}
}

// TestConditionalMiss304BeforeTheBody: the client's 304 is flushed at the
// origin's header, not when the body being stored ends; a body the origin
// then breaks off ends the request cleanly, and nothing is stored.
func TestConditionalMiss304BeforeTheBody(t *testing.T) {
	h := newTestHandler(t, Config{}, newClock())
	release := make(chan struct{})
	o := newProxyLike(8<<10, release, "Etag", `"v1"`, "Cache-Control", "max-age=60")
	w := newWriter()
	done := make(chan error, 1)
	go func() {
		done <- h.ServeHTTP(w, newRequest(http.MethodGet, "http://example.com/slow", "If-None-Match", `"v1"`), o)
	}()
	until(t, "the origin's first chunk", func() bool { return o.written.Load() >= 1024 })
	if !slices.Equal(w.codes, []int{http.StatusNotModified}) || w.flushes == 0 {
		t.Errorf("while the body comes: client got %v, %d flushes; want the 304 flushed", w.codes, w.flushes)
	}
	close(release)
	if err := untilValue(t, "the request to end", done); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, get(t, h, o, "http://example.com/slow"), []string{"hit"})

	broken := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Etag", `"v1"`)
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Content-Length", "8192")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(make([]byte, 1024))
		panic(http.ErrAbortHandler) // as reverse_proxy does when the origin's body breaks off
	}}
	w = newWriter()
	if err := h.ServeHTTP(w, newRequest(http.MethodGet, "http://example.com/broken", "If-None-Match", `"v1"`), broken); err != nil {
		t.Fatal(err)
	}
	h.store.wait()
	if !slices.Equal(w.codes, []int{http.StatusNotModified}) {
		t.Errorf("broken body: client got %v, want its 304", w.codes)
	}
	if e := h.store.get(keyHash([]byte("http://example.com/broken?")), []byte("http://example.com/broken?")); e != nil {
		t.Error("a broken body was stored")
	}
}

// TestConditionalMissLeadsAFill: concurrent misses behind a conditional
// one are answered from the 200 it fetched: one origin request.
func TestConditionalMissLeadsAFill(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	release := make(chan struct{})
	inner := validatorOrigin(c)
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		<-release
		return inner.fn(w, r)
	}}
	const url = "http://example.com/hot"
	lead := httptest.NewRecorder()
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := h.ServeHTTP(lead, newRequest(http.MethodGet, url, "If-None-Match", `"v1"`), o); err != nil {
			t.Error(err)
		}
	})
	until(t, "the conditional miss to reach the origin", func() bool { return o.calls.Load() == 1 })
	out := make([]*httptest.ResponseRecorder, 8)
	for i := range out {
		out[i] = httptest.NewRecorder()
		wg.Go(func() {
			if err := h.ServeHTTP(out[i], newRequest(http.MethodGet, url), o); err != nil {
				t.Error(err)
			}
		})
	}
	key := keyOf(t, h, newRequest(http.MethodGet, url))
	until(t, "the misses to wait for the first", func() bool { return h.flights.waiting(key) == len(out) })
	close(release)
	wg.Wait()
	if n := o.calls.Load(); n != 1 {
		t.Errorf("origin called %d times, want 1", n)
	}
	if lead.Code != http.StatusNotModified {
		t.Errorf("the conditional request got %d, want 304", lead.Code)
	}
	for i, w := range out {
		if w.Code != http.StatusOK || w.Body.String() != "body" || !hasParam(w.Header().Get("Cache-Status"), "collapsed") {
			t.Errorf("waiter %d: %d %q %q, want the collapsed 200", i, w.Code, w.Body.String(), w.Header().Get("Cache-Status"))
		}
	}
}

// TestRevalidationAnswersTheClientsConditional: a stale entry's
// revalidation (the cache's conditional, without the client's) gets a new
// 200 whose ETag the client already has: the client gets a 304.
func TestRevalidationAnswersTheClientsConditional(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	tag := `"v1"`
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Etag", tag)
		w.Header().Set("Cache-Control", "max-age=10")
		w.Header().Set("Date", c.date())
		if r.Header.Get("If-None-Match") == tag {
			w.WriteHeader(http.StatusNotModified)
			return nil
		}
		_, _ = io.WriteString(w, "version "+tag)
		return nil
	}}
	const url = "http://example.com/doc"
	get(t, h, o, url)
	c.Advance(20 * time.Second)
	tag = `"v2"`
	w := get(t, h, o, url, "If-None-Match", `"v2"`)
	if inm := o.last().Header.Get("If-None-Match"); inm != `"v1"` {
		t.Errorf("revalidation If-None-Match %q, want the stored tag alone", inm)
	}
	if w.Code != http.StatusNotModified || w.Body.Len() != 0 {
		t.Errorf("client got %d with %q, want a 304: the new version is the one it has", w.Code, w.Body.String())
	}
	wantStatus(t, w, []string{"fwd=stale", "fwd-status=200"})
	if w := get(t, h, o, url); w.Body.String() != `version "v2"` {
		t.Errorf("stored after the revalidation: %q", w.Body.String())
	}
}

// TestConditionalMissAfterAskAgain: a revalidation whose 304 does not
// select the stored response sends the client's request again (askAgain);
// its 200 satisfies the client's own conditional and is not stored
// (Set-Cookie): the client gets a clean 304, not reverse_proxy's abort.
// (The origin honours only If-Modified-Since, with a content-hash ETag.)
func TestConditionalMissAfterAskAgain(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	lm := c.Now().Add(-time.Hour).Format(http.TimeFormat)
	etag, cookie := `"v1"`, false
	chunk := []byte(strings.Repeat("x", 1024))
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Etag", etag)
		w.Header().Set("Last-Modified", lm)
		w.Header().Set("Date", c.date())
		w.Header().Set("Cache-Control", "max-age=10")
		if r.Header.Get("If-Modified-Since") != "" {
			w.WriteHeader(http.StatusNotModified)
			return nil
		}
		if cookie {
			w.Header().Set("Set-Cookie", "s=1")
		}
		w.Header().Set("Content-Length", strconv.Itoa(4*len(chunk)))
		w.WriteHeader(http.StatusOK)
		for range 4 {
			if _, err := w.Write(chunk); err != nil {
				panic(http.ErrAbortHandler) // as reverse_proxy does
			}
		}
		return nil
	}}
	const url = "http://example.com/a"
	get(t, h, o, url)
	c.Advance(20 * time.Second)
	etag, cookie = `"v2"`, true
	w := newWriter()
	func() {
		defer func() {
			if v := recover(); v != nil {
				t.Fatalf("panic %v reached the server after the client got %v", v, w.codes)
			}
		}()
		if err := h.ServeHTTP(w, newRequest(http.MethodGet, url, "If-None-Match", `"v2"`), o); err != nil {
			t.Fatal(err)
		}
	}()
	if !slices.Equal(w.codes, []int{http.StatusNotModified}) {
		t.Errorf("client got %v, want a 304", w.codes)
	}
}

// TestConditionalMissAsIsCleared: a purge, like a stored response, clears
// the key's mark that its conditional misses go as they came.
func TestConditionalMissAsIsCleared(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	const url = "http://example.com/p"
	get(t, h, validatorOrigin(c, "Cache-Control", "no-store"), url, "If-None-Match", `"v1"`) // not stored: marked
	h.store.purgeKey(keyOf(t, h, newRequest(http.MethodGet, url)))
	o := validatorOrigin(c)
	get(t, h, o, url, "If-None-Match", `"v1"`)
	if inm := o.last().Header.Get("If-None-Match"); inm != "" {
		t.Errorf("after the purge the conditional miss went out with If-None-Match %q", inm)
	}
	wantStatus(t, get(t, h, o, url, "If-None-Match", `"v1"`), []string{"hit"})
}

// TestConditionalMissAsIsNotAfterAnError: a server error to a conditional
// miss fetched whole is not stored, but may pass (a review: a 503 while the
// origin restarted kept the URL's conditional misses going as they came,
// and nothing stored, for two minutes after it was back): the next
// conditional miss is fetched whole again and stored.
func TestConditionalMissAsIsNotAfterAnError(t *testing.T) {
	for _, status := range []int{http.StatusServiceUnavailable, http.StatusBadGateway} {
		c := newClock()
		h := newTestHandler(t, Config{}, c)
		url := "http://example.com/e" + strconv.Itoa(status)
		get(t, h, static(c, status, "down"), url, "If-None-Match", `"v1"`)
		o := validatorOrigin(c)
		get(t, h, o, url, "If-None-Match", `"v1"`)
		if inm := o.last().Header.Get("If-None-Match"); inm != "" {
			t.Errorf("after a %d the conditional miss went out with If-None-Match %q", status, inm)
		}
		wantStatus(t, get(t, h, o, url, "If-None-Match", `"v1"`), []string{"hit"})
	}
}

// TestConditionalMissOwnPreset: a request with a cookie whose handlers
// before the cache mark it private (header @loggedin Cache-Control
// private) is not stored, but tells nothing of the URL's other requests:
// the next anonymous conditional miss is fetched whole and stored.
func TestConditionalMissOwnPreset(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	o := validatorOrigin(c)
	const url = "http://example.com/q"
	w := newWriter()
	w.Header().Set("Cache-Control", "private")
	if err := h.ServeHTTP(w, newRequest(http.MethodGet, url, "If-None-Match", `"v1"`, "Cookie", "session=1"), o); err != nil {
		t.Fatal(err)
	}
	h.store.wait()
	get(t, h, o, url, "If-None-Match", `"v1"`)
	if inm := o.last().Header.Get("If-None-Match"); inm != "" {
		t.Errorf("the anonymous conditional miss went out with If-None-Match %q", inm)
	}
	wantStatus(t, get(t, h, o, url, "If-None-Match", `"v1"`), []string{"hit"})
}

// TestConditionalMissOwnPresetVaryStar: a response that is not storable
// for anyone (Vary: *) marks its URL whatever caching fields the request's
// handlers set: its next conditional miss goes as it came.
func TestConditionalMissOwnPresetVaryStar(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	o := validatorOrigin(c, "Vary", "*")
	const url = "http://example.com/v"
	for range 2 {
		w := newWriter()
		w.Header().Set("Cache-Control", "max-age=60")
		if err := h.ServeHTTP(w, newRequest(http.MethodGet, url, "If-None-Match", `"v1"`, "Cookie", "a=1"), o); err != nil {
			t.Fatal(err)
		}
		h.store.wait()
	}
	if inm := o.last().Header.Get("If-None-Match"); inm != `"v1"` {
		t.Errorf("the second conditional miss went out with If-None-Match %q, want the client's", inm)
	}
}

// TestNotModifiedCarriesNoContentFields: the 304s the cache makes itself,
// for a conditional miss and for a hit, leave out the fields that describe
// the content (RFC 9110 §15.4.5) and keep those that guide caches, as
// Go's file server does (Last-Modified only without an ETag).
func TestNotModifiedCarriesNoContentFields(t *testing.T) {
	c := newClock()
	content := []string{"Content-Type", "Content-Encoding", "Content-Language", "Content-Digest", "Content-Md5"}
	kept := []string{"Etag", "Cache-Control", "Date", "Content-Location", "Content-Disposition", "X-App"}
	content = append(content, "Last-Modified") // with an ETag, of no use to guide an update
	h := newTestHandler(t, Config{}, c)
	o := validatorOrigin(c, "Content-Type", "text/plain", "Content-Encoding", "br", "Content-Language", "de",
		"Content-Digest", "sha-256=:AAAA:", "Content-Md5", "AAAA", "Content-Location", "/page.de",
		"Content-Disposition", `attachment; filename="a.txt"`, "X-App", "1")
	const url = "http://example.com/page"
	for _, step := range []struct{ name, status string }{{"conditional miss", "fwd=uri-miss"}, {"hit", "hit"}} {
		w := get(t, h, o, url, "If-None-Match", `"v1"`)
		if w.Code != http.StatusNotModified {
			t.Fatalf("%s: status %d, want 304", step.name, w.Code)
		}
		wantStatus(t, w, []string{step.status})
		for _, f := range append(content, "Content-Length") {
			if v, ok := w.Header()[f]; ok {
				t.Errorf("%s: 304 carries %s: %q", step.name, f, v)
			}
		}
		for _, f := range kept {
			if w.Header().Get(f) == "" {
				t.Errorf("%s: 304 lacks %s", step.name, f)
			}
		}
	}
	if n := o.calls.Load(); n != 1 {
		t.Errorf("origin asked %d times, want 1", n)
	}
	// The stored response keeps them all.
	w := get(t, h, o, url)
	for _, f := range content {
		if w.Header().Get(f) == "" {
			t.Errorf("the stored 200 lost %s", f)
		}
	}
	// Without an ETag, Last-Modified is what guides an update.
	undated := validatorOrigin(c, "Etag", "")
	get(t, h, undated, url+"?lm")
	since := c.Now().Format(http.TimeFormat)
	if w := get(t, h, undated, url+"?lm", "If-Modified-Since", since); w.Code != http.StatusNotModified || w.Header().Get("Last-Modified") == "" {
		t.Errorf("304 without an ETag: %d, Last-Modified %q, want it kept", w.Code, w.Header().Get("Last-Modified"))
	}
}

// TestConditionalMissAsItCameByClass: a logged-in user's conditional
// miss answered `private` sends the next conditional misses of requests
// with a cookie as they came, but not anonymous ones: their answer may be
// stored, so they are fetched whole, stored, and coalesce (sent as they
// came, they would wait for each other's 304 and then go again).
func TestConditionalMissAsItCameByClass(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	lastModified := c.Now().Add(-time.Hour).Format(http.TimeFormat)
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		hdr := w.Header()
		hdr.Set("Etag", `"v1"`)
		hdr.Set("Last-Modified", lastModified)
		hdr.Set("Cache-Control", "max-age=60")
		if r.Header.Get("Cookie") != "" {
			hdr.Set("Cache-Control", "no-store, private")
		}
		if ClientNotModified(r, hdr) {
			w.WriteHeader(http.StatusNotModified)
			return nil
		}
		_, _ = io.WriteString(w, "body")
		return nil
	}}
	const url = "http://example.com/wp"
	inm := []string{"If-None-Match", `"v1"`}
	get(t, h, o, url, append(inm, "Cookie", "session=alice")...)
	get(t, h, o, url, append(inm, "Cookie", "session=bob")...)
	if o.last().Header.Get("If-None-Match") != `"v1"` {
		t.Error("another logged-in user's conditional miss was fetched whole again")
	}
	w := get(t, h, o, url, inm...)
	if o.last().Header.Get("If-None-Match") != "" || w.Code != http.StatusNotModified {
		t.Errorf("an anonymous conditional miss: origin saw If-None-Match %q, client got %d; want it fetched whole and a 304 from the cache", o.last().Header.Get("If-None-Match"), w.Code)
	}
	wantStatus(t, get(t, h, o, url), []string{"hit"})
}

// TestConditionalMissAsItCameNoHint: a class's conditional misses go as
// they came after one was fetched whole in vain, even when its answer
// hinted nothing (a 404 tells nothing of coalescing).
func TestConditionalMissAsItCameNoHint(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Etag", `"v1"`)
		w.Header().Set("Cache-Control", "private")
		w.WriteHeader(http.StatusNotFound)
		return nil
	}}
	const url = "http://example.com/gone"
	cond := []string{"If-None-Match", `"v1"`, "Cookie", "session=alice"}
	get(t, h, o, url, cond...)
	if o.last().Header.Get("If-None-Match") != "" {
		t.Fatal("the first conditional miss was not fetched whole")
	}
	get(t, h, o, url, cond...)
	if o.last().Header.Get("If-None-Match") != `"v1"` {
		t.Error("the next conditional miss of the class was fetched whole again")
	}
	get(t, h, o, url, "If-None-Match", `"v1"`)
	if o.last().Header.Get("If-None-Match") != "" {
		t.Error("an anonymous conditional miss went as it came")
	}
}

// TestClientConditionalsOnOther2xx: the cache evaluates a client's
// If-None-Match against every 2xx it would answer with (RFC 9110
// §13.2.1), not only a 200: a stored 203 or 204 answers a matching
// conditional with a 304, on the miss that stores it (whose request went
// without the conditional) and on hits.
func TestClientConditionalsOnOther2xx(t *testing.T) {
	c := newClock()
	for _, status := range []int{http.StatusNonAuthoritativeInfo, http.StatusNoContent} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			body := "body"
			if status == http.StatusNoContent {
				body = ""
			}
			o := static(c, status, body, "Cache-Control", "max-age=60", "Etag", `"v1"`)
			h := newTestHandler(t, Config{}, c)
			const url = "http://example.com/thing"
			w := get(t, h, o, url, "If-None-Match", `"v1"`)
			if inm := o.last().Header.Get("If-None-Match"); inm != "" {
				t.Fatalf("the miss went out with If-None-Match %q", inm)
			}
			wantStatus(t, w, []string{"fwd=uri-miss", "fwd-status=" + strconv.Itoa(status)})
			if w.Code != http.StatusNotModified || w.Body.Len() != 0 {
				t.Errorf("conditional miss: %d with %d body bytes, want a 304 without a body", w.Code, w.Body.Len())
			}
			w = get(t, h, o, url, "If-None-Match", `"v1"`)
			wantStatus(t, w, []string{"hit"})
			if w.Code != http.StatusNotModified || w.Body.Len() != 0 || w.Header().Get("Etag") != `"v1"` {
				t.Errorf("conditional hit: %d with %d body bytes, ETag %q; want a 304 without a body, with the ETag", w.Code, w.Body.Len(), w.Header().Get("Etag"))
			}
			w = get(t, h, o, url, "If-None-Match", `"v0"`)
			wantStatus(t, w, []string{"hit"})
			if w.Code != status || w.Body.String() != body {
				t.Errorf("hit not matching: %d %q, want %d %q", w.Code, w.Body.String(), status, body)
			}
			if n := o.calls.Load(); n != 1 {
				t.Errorf("origin called %d times, want 1", n)
			}
		})
	}
}

// TestRangeRevalidationEvaluatesClientConditional: a stale entry's
// revalidation for a Range request carries the entry's validators, not
// the client's; when the origin answers with a 206 of a newer version
// the client's If-None-Match or If-Modified-Since matches, the client
// gets a 304 (RFC 9110 §13.2.2: those come before Range), and the 206
// when they do not match.
func TestRangeRevalidationEvaluatesClientConditional(t *testing.T) {
	c := newClock()
	for _, tc := range []struct {
		name   string
		fields []string
		want   int
	}{
		{name: "If-None-Match of the new version", fields: []string{"If-None-Match", `"v2"`}, want: http.StatusNotModified},
		{name: "If-None-Match of another", fields: []string{"If-None-Match", `"v0"`}, want: http.StatusPartialContent},
		{name: "If-Modified-Since of the new version", fields: []string{"If-Modified-Since", "NEW"}, want: http.StatusNotModified},
		{name: "If-Modified-Since before it", fields: []string{"If-Modified-Since", "OLD"}, want: http.StatusPartialContent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var version atomic.Int32
			version.Store(1)
			modified := func() time.Time { return c.Now().Add(-time.Hour).Truncate(time.Second) }
			o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
				v := strconv.Itoa(int(version.Load()))
				w.Header().Set("Cache-Control", "max-age=60")
				w.Header().Set("Etag", `"v`+v+`"`)
				http.ServeContent(w, r, "", modified(), strings.NewReader("version "+v+" of the content"))
				return nil
			}}
			h := newTestHandler(t, Config{}, c)
			const url = "http://example.com/file"
			if w := get(t, h, o, url); w.Code != http.StatusOK {
				t.Fatalf("first request: %d", w.Code)
			}
			c.Advance(2 * time.Minute)
			version.Store(2)
			fields := slices.Clone(tc.fields)
			switch fields[1] {
			case "NEW":
				fields[1] = modified().Format(http.TimeFormat)
			case "OLD":
				fields[1] = modified().Add(-time.Hour).Format(http.TimeFormat)
			}
			w := get(t, h, o, url, append(fields, "Range", "bytes=0-6")...)
			if inm := o.last().Header.Get("If-None-Match"); inm != `"v1"` {
				t.Errorf("the revalidation went with If-None-Match %q, want the entry's", inm)
			}
			wantStatus(t, w, []string{"fwd=stale", "fwd-status=206"})
			if w.Code != tc.want {
				t.Fatalf("client got %d, want %d", w.Code, tc.want)
			}
			if tc.want == http.StatusNotModified {
				if w.Body.Len() != 0 || w.Header().Get("Content-Range") != "" || w.Header().Get("Etag") != `"v2"` {
					t.Errorf("304: %d body bytes, Content-Range %q, ETag %q; want none, none, the new version's", w.Body.Len(), w.Header().Get("Content-Range"), w.Header().Get("Etag"))
				}
			} else if w.Body.String() != "version" || w.Header().Get("Content-Range") == "" {
				t.Errorf("206: %q, Content-Range %q", w.Body.String(), w.Header().Get("Content-Range"))
			}
		})
	}
}

// TestNotModifiedAnnouncesNoTrailer: the 304 the cache makes of an
// origin's 200 with trailers (not stored), announced or not
// (reverse_proxy sets those it did not announce with http.TrailerPrefix),
// has no Trailer field and no trailers: a 304 has no content, and no
// trailer section (RFC 9110 §6.5); net/http's HTTP/2 server would send
// them after the 304, which the cache flushed without ending the stream.
func TestNotModifiedAnnouncesNoTrailer(t *testing.T) {
	c := newClock()
	for _, announced := range []bool{true, false} {
		t.Run(fmt.Sprintf("announced=%v", announced), func(t *testing.T) {
			o := trailerOrigin(announced, "X-Checksum", "abc", "Cache-Control", "max-age=60", "Etag", `"v1"`)
			h := newTestHandler(t, Config{}, c)
			w := get(t, h, o, "http://example.com/t", "If-None-Match", `"v1"`)
			if w.Code != http.StatusNotModified {
				t.Fatalf("client got %d, want a 304", w.Code)
			}
			if tr := w.Header().Values("Trailer"); len(tr) > 0 {
				t.Errorf("the 304 announces trailers: Trailer %q", tr)
			}
			if tr := w.Result().Trailer; len(tr) > 0 {
				t.Errorf("the 304 has trailers: %q", tr)
			}
		})
	}
}
