package cache

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestWaitersOfA204WithContentLength: an origin answers a 204 carrying
// a (forbidden, RFC 9110 §8.6) non-zero Content-Length. reverse_proxy
// copies the field; net/http reads no body for a 204 and sends the client
// a clean 204. Through the cache, the leader's fill is sized by the field,
// never filled, and fails at the end: a waiter that read it is aborted
// (an empty reply on HTTP/1.1), where plain reverse_proxy answers 204.
func TestWaitersOfA204WithContentLength(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	const target = "http://example.com/nocontent"
	o := newGatedOrigin(c, "", "")
	o.fn = func(w http.ResponseWriter, r *http.Request) error {
		hd := w.Header()
		hd.Set("Cache-Control", "max-age=60")
		hd.Set("Date", c.date())
		hd.Set("Content-Length", "5")
		hd.Set("Via", "1.1 Caddy")
		<-o.start
		w.WriteHeader(http.StatusNoContent)
		<-o.more // reverse_proxy copying an empty body: no bytes, no error
		return nil
	}
	waiter, leader := newSyncWriter(), newSyncWriter()
	leaderDone, waiterDone := leadAndWait(t, h, o, target, leader, waiter, newRequest(http.MethodGet, target))
	close(o.start)
	until(t, "the leader to get its header", func() bool { code, _ := leader.got(); return code != 0 })
	time.Sleep(20 * time.Millisecond) // the waiter takes what the leader published
	close(o.more)
	if p := untilValue(t, "the leader to return", leaderDone); p != nil {
		t.Errorf("leader panicked: %v", p)
	}
	if p := untilValue(t, "the waiter to return", waiterDone); p != nil {
		t.Errorf("waiter of a 204 ended with panic %v; plain reverse_proxy sends a complete 204", p)
	}
	if code, _ := waiter.got(); code != http.StatusNoContent {
		t.Errorf("waiter got %d", code)
	}
}

// TestStaleIfErrorWhenTheErrorBodyBreaksOff: a stale entry within its
// stale-if-error window; the origin answers 500 and breaks its body off
// (reverse_proxy panics with http.ErrAbortHandler, as it does for any body
// that ends short). The cache decides at the 500's header to answer with
// the stored response, and the client gets it: the panic went through,
// and the client got no response at all (HTTP/1.1: the connection closed,
// curl's "Empty reply from server"; a review), where plain reverse_proxy
// would have sent the 500. Nor does the cache read on an error body
// nobody reads past errorBodyRead: an endless one's writes fail there
// (an error page is read to its end, see
// TestStaleIfErrorKeepsTheOriginConnection).
func TestStaleIfErrorWhenTheErrorBodyBreaksOff(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	const target = "http://example.com/sie"
	var broken, endless atomic.Bool
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		hd := w.Header()
		hd.Set("Date", c.date())
		hd.Set("Via", "1.1 Caddy")
		if !broken.Load() {
			hd.Set("Cache-Control", "max-age=1, stale-if-error=600")
			hd.Set("Content-Length", "6")
			_, _ = io.WriteString(w, "stored")
			return nil
		}
		if endless.Load() {
			w.WriteHeader(http.StatusInternalServerError)
			chunk := make([]byte, 8<<10)
			for n := 0; ; n += len(chunk) {
				if _, err := w.Write(chunk); err != nil {
					if n > errorBodyRead+len(chunk) {
						t.Errorf("the endless error body was read for %d bytes", n)
					}
					panic(http.ErrAbortHandler)
				}
				if n > 4*errorBodyRead {
					t.Fatal("the endless error body is read on")
				}
			}
		}
		hd.Set("Content-Length", "100")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, "half of an error page")
		panic(http.ErrAbortHandler) // reverse_proxy: "aborting with incomplete response"
	}}
	get(t, h, o, target)
	c.Advance(2 * time.Second)
	broken.Store(true)
	w := newWriter()
	var p any
	func() {
		defer func() { p = recover() }()
		_ = h.ServeHTTP(w, newRequest(http.MethodGet, target), o)
	}()
	if p != nil {
		t.Errorf("ServeHTTP panicked with %v having written %v: the client gets no response; want the stale 200 (stale-if-error)", p, w.codes)
	}
	if len(w.codes) != 1 || w.codes[0] != http.StatusOK || string(w.body) != "stored" {
		t.Errorf("client got %v %q, want 200 \"stored\"", w.codes, w.body)
	}
	endless.Store(true)
	if w := get(t, h, o, target); w.Code != http.StatusOK || w.Body.String() != "stored" {
		t.Errorf("with an endless error body: %d %q, want the stored 200", w.Code, w.Body.String())
	}
}

// TestRevalidation304LeavesContentRangeOut: a 304 that (against RFC 9110
// §15.4.5) carries Content-Range updates the stored 200 with it: every
// later hit is a 200 with a 100-byte body and "Content-Range: bytes
// 0-9/10", a field that describes another message (RFC 9111 §3.2 names
// Content-Range among the fields a cache may leave out of the update).
func TestRevalidation304LeavesContentRangeOut(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	const target = "http://example.com/cr"
	var revalidated atomic.Bool
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		hd := w.Header()
		hd.Set("Date", c.date())
		hd.Set("Etag", `"v1"`)
		if !revalidated.Load() {
			hd.Set("Cache-Control", "max-age=1")
			hd.Set("Content-Length", "100")
			_, _ = io.WriteString(w, strings.Repeat("x", 100))
			return nil
		}
		hd.Set("Cache-Control", "max-age=60")
		hd.Set("Content-Range", "bytes 0-9/10")
		w.WriteHeader(http.StatusNotModified)
		return nil
	}}
	get(t, h, o, target)
	c.Advance(2 * time.Second)
	revalidated.Store(true)
	get(t, h, o, target)
	w := get(t, h, o, target)
	wantStatus(t, w, []string{"hit"})
	if w.Code != http.StatusOK || w.Body.Len() != 100 {
		t.Fatalf("hit: %d, %d bytes", w.Code, w.Body.Len())
	}
	if cr := w.Header().Get("Content-Range"); cr != "" {
		t.Errorf("a 200 hit of 100 bytes carries Content-Range %q from the 304", cr)
	}
}
