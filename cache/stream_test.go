package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// syncWriter is a ResponseWriter safe to read from another goroutine
// while a handler writes to it.
type syncWriter struct {
	mu     sync.Mutex
	h      http.Header
	sent   http.Header // the header as it was at WriteHeader
	code   int
	body   []byte
	writes int
	// flushed lists how much of the body each Flush found written.
	flushed []int
}

func newSyncWriter() *syncWriter { return &syncWriter{h: make(http.Header)} }

func (w *syncWriter) Header() http.Header { return w.h }
func (w *syncWriter) WriteHeader(code int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.code == 0 {
		w.code, w.sent = code, w.h.Clone()
	}
}
func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.code == 0 {
		w.code, w.sent = http.StatusOK, w.h.Clone()
	}
	w.body = append(w.body, p...)
	w.writes++
	return len(p), nil
}
func (w *syncWriter) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.flushed = append(w.flushed, len(w.body))
}

func (w *syncWriter) flushes() []int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.flushed)
}

func (w *syncWriter) got() (code int, body string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.code, string(w.body)
}

func (w *syncWriter) field(name string) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.sent.Get(name)
}

// gatedOrigin answers its first request with a body of declared length in
// two parts: the header and first part once start is closed, the second
// once more is closed; then end, if set, ends the response (to break it
// off, say). Later requests get the whole body at once.
type gatedOrigin struct {
	*origin
	start, more chan struct{}
	first, rest string
	end         func(w http.ResponseWriter) error
	// flushFirst makes it flush after the first part, as reverse_proxy
	// does after each write of a body of unknown length.
	flushFirst bool
}

func newGatedOrigin(c *clock, first, rest string) *gatedOrigin {
	g := &gatedOrigin{origin: &origin{}, start: make(chan struct{}), more: make(chan struct{}), first: first, rest: rest}
	g.fn = func(w http.ResponseWriter, r *http.Request) error {
		hd := w.Header()
		hd.Set("Cache-Control", "max-age=60")
		hd.Set("Date", c.date())
		hd.Set("Content-Length", strconv.Itoa(len(g.first)+len(g.rest)))
		if g.calls.Load() > 1 {
			_, err := io.WriteString(w, g.first+g.rest)
			return err
		}
		<-g.start
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, g.first)
		if g.flushFirst {
			_ = http.NewResponseController(w).Flush()
		}
		<-g.more
		if g.end != nil {
			return g.end(w)
		}
		_, err := io.WriteString(w, g.rest)
		return err
	}
	return g
}

// serveAsync runs h on r in the background; the channel gets what the
// handler panicked with (nil when it returned).
func serveAsync(h *Handler, w http.ResponseWriter, r *http.Request, o caddyhttp.Handler) <-chan any {
	done := make(chan any, 1)
	go func() {
		defer func() { done <- recover() }()
		_ = h.ServeHTTP(w, r, o)
	}()
	return done
}

// leadAndWait starts a GET of target through h with writer leader and,
// once it has reached o, the request waiter (writing to w), once it waits
// for the leader; it returns what each ends with (see serveAsync).
func leadAndWait(t *testing.T, h *Handler, o *gatedOrigin, target string, leader, w http.ResponseWriter, waiter *http.Request) (leaderDone, waiterDone <-chan any) {
	t.Helper()
	leaderDone = serveAsync(h, leader, newRequest(http.MethodGet, target), o)
	until(t, "the leader to reach the origin", func() bool { return o.calls.Load() == 1 })
	waiterDone = serveAsync(h, w, waiter, o)
	until(t, "a request to wait for the leader", func() bool { return h.flights.waiting(target) == 1 })
	return leaderDone, waiterDone
}

// TestWaitersReadAFillAsItArrives: the requests that wait for a miss's
// response, and those that come while its body arrives, get the body as
// it arrives (with a declared length), not at its end: a large object
// from a slow origin kept them waiting for all of it, and past the wait
// bound sent each to the origin for the whole object.
func TestWaitersReadAFillAsItArrives(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	const target = "http://example.com/video"
	first, rest := "the first part, ", "and the rest"
	o := newGatedOrigin(c, first, rest)
	leader, early := newSyncWriter(), newSyncWriter()
	leaderDone, earlyDone := leadAndWait(t, h, o, target, leader, early, newRequest(http.MethodGet, target))
	close(o.start)

	// The origin has sent its first part and waits: the waiter has it.
	until(t, "the waiter to get the first part", func() bool { _, b := early.got(); return b == first })
	// A request that comes now reads the same fill, from its start.
	late := newSyncWriter()
	lateDone := serveAsync(h, late, newRequest(http.MethodGet, target), o)
	until(t, "the later request to get the first part", func() bool { _, b := late.got(); return b == first })
	close(o.more)
	for _, done := range []<-chan any{leaderDone, earlyDone, lateDone} {
		if p := <-done; p != nil {
			t.Fatalf("a request panicked: %v", p)
		}
	}
	for name, w := range map[string]*syncWriter{"leader": leader, "waiter": early, "later request": late} {
		if code, b := w.got(); code != http.StatusOK || b != first+rest {
			t.Errorf("%s got %d %q", name, code, b)
		}
	}
	for name, w := range map[string]*syncWriter{"waiter": early, "later request": late} {
		cs := w.field("Cache-Status")
		// Not stored yet when its header went out: it does not say so.
		if !hasParam(cs, "collapsed") || !hasParam(cs, "fwd=uri-miss") || hasParam(cs, "stored") {
			t.Errorf("%s: Cache-Status %q", name, cs)
		}
		if cl := w.field("Content-Length"); cl != strconv.Itoa(len(first+rest)) {
			t.Errorf("%s: Content-Length %q", name, cl)
		}
	}
	if n := o.calls.Load(); n != 1 {
		t.Errorf("origin called %d times, want 1", n)
	}
	h.store.wait()
	w := get(t, h, o, target)
	wantStatus(t, w, []string{"hit"})
	if w.Body.String() != first+rest {
		t.Errorf("hit body %q", w.Body.String())
	}
	if n := o.calls.Load(); n != 1 {
		t.Errorf("origin called %d times, want 1", n)
	}
}

// TestFillReadersFlushWhereTheOriginDid: the leader's client and the
// requests reading its body as it arrives flush where the handler after
// the cache flushed, and nowhere else. They flushed each time they had
// caught up with the origin, so that behind encode every piece of a body
// written slowly ended a compressed block (a review measured a 100 KB page
// whose gzip took 11.5 KB without the cache come out at 107 KB on its
// miss) and net/http could not set a Content-Length on a small one.
func TestFillReadersFlushWhereTheOriginDid(t *testing.T) {
	for _, flush := range []bool{false, true} {
		t.Run(fmt.Sprintf("origin flushes %v", flush), func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{}, c)
			const target = "http://example.com/page"
			first, rest := "the first part, ", "and the rest"
			o := newGatedOrigin(c, first, rest)
			o.flushFirst = flush
			leader, waiter := newSyncWriter(), newSyncWriter()
			leaderDone, waiterDone := leadAndWait(t, h, o, target, leader, waiter, newRequest(http.MethodGet, target))
			close(o.start)
			var want []int
			if flush {
				want = []int{len(first)}
				until(t, "both to flush the first part", func() bool {
					return slices.Equal(leader.flushes(), want) && slices.Equal(waiter.flushes(), want)
				})
			} else {
				until(t, "both to get the first part", func() bool {
					_, l := leader.got()
					_, w := waiter.got()
					return l == first && w == first
				})
				// They have caught up with the origin, which waits.
				time.Sleep(50 * time.Millisecond)
			}
			close(o.more)
			untilValue(t, "the leader to return", leaderDone)
			untilValue(t, "the waiter to return", waiterDone)
			for name, w := range map[string]*syncWriter{"leader": leader, "waiter": waiter} {
				if _, b := w.got(); b != first+rest {
					t.Errorf("%s got %q", name, b)
				}
				if got := w.flushes(); !slices.Equal(got, want) {
					t.Errorf("%s flushed after %v bytes, want %v", name, got, want)
				}
			}
		})
	}
}

// TestFillThatBreaksOffEndsItsReaders: when the origin breaks off a body
// that waiters read as it arrives, their responses are aborted (as
// reverse_proxy aborts its own), never completed with what another
// response left in the arena; nothing is stored, and the next request
// asks the origin.
func TestFillThatBreaksOffEndsItsReaders(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	const target = "http://example.com/broken"
	first := "only this much"
	o := newGatedOrigin(c, first, " and never the rest")
	o.end = func(http.ResponseWriter) error { return errors.New("origin connection reset") }
	waiter := newSyncWriter()
	leaderDone, waiterDone := leadAndWait(t, h, o, target, newSyncWriter(), waiter, newRequest(http.MethodGet, target))
	close(o.start)
	until(t, "the waiter to get the first part", func() bool { _, b := waiter.got(); return b == first })
	close(o.more)
	untilValue(t, "the leader to return", leaderDone)
	if p := untilValue(t, "the waiter to return", waiterDone); p != http.ErrAbortHandler {
		t.Errorf("waiter of a broken fill ended with %v, want a panic with http.ErrAbortHandler", p)
	}
	if _, b := waiter.got(); b != first {
		t.Errorf("waiter got %q", b)
	}
	h.store.wait()
	w := get(t, h, o, target)
	wantStatus(t, w, []string{"fwd=uri-miss"}, "hit")
	if n := o.calls.Load(); n != 2 {
		t.Errorf("origin called %d times, want 2", n)
	}
}

// TestFillReaderWhoseClientLeaves: a waiter reading an arriving body
// returns when its client goes, without waiting for the rest, and the
// fill goes on for the others.
func TestFillReaderWhoseClientLeaves(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	const target = "http://example.com/leaves"
	o := newGatedOrigin(c, "first, ", "rest")
	ctx, cancel := context.WithCancel(context.Background())
	leader, waiter := newSyncWriter(), newSyncWriter()
	leaderDone, waiterDone := leadAndWait(t, h, o, target, leader, waiter, newRequest(http.MethodGet, target).WithContext(ctx))
	close(o.start)
	until(t, "the waiter to get the first part", func() bool { _, b := waiter.got(); return b == "first, " })
	cancel()
	if p := untilValue(t, "the waiter to return", waiterDone); p != nil {
		t.Errorf("waiter panicked: %v", p)
	}
	close(o.more)
	<-leaderDone
	if _, b := leader.got(); b != "first, rest" {
		t.Errorf("leader got %q", b)
	}
	h.store.wait()
	wantStatus(t, get(t, h, o, target), []string{"hit"})
}

// TestSlowLeaderDoesNotHoldUpTheFill: the leader's own client reading
// slowly (or not at all) does not slow the fill the others read: its body
// is recorded at the origin's pace, and the leader's client gets it at
// its own. A leader that stopped reading held every waiter for the
// coalescing bound, then sent each to the origin.
func TestSlowLeaderDoesNotHoldUpTheFill(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	const target = "http://example.com/slow-reader"
	first, rest := "the first part, ", "and the rest"
	o := newGatedOrigin(c, first, rest)
	leader := newStallingWriter(0) // reads nothing until released
	waiter := newSyncWriter()
	leaderDone, waiterDone := leadAndWait(t, h, o, target, leader, waiter, newRequest(http.MethodGet, target))
	close(o.start)
	close(o.more)
	if p := untilValue(t, "the waiter to get the whole body while the leader's client reads nothing", waiterDone); p != nil {
		t.Fatalf("waiter panicked: %v", p)
	}
	if _, b := waiter.got(); b != first+rest {
		t.Errorf("waiter got %q", b)
	}
	select {
	case <-leaderDone:
		t.Fatal("the leader returned before its client got the body")
	default:
	}
	close(leader.release)
	if p := untilValue(t, "the leader to return", leaderDone); p != nil {
		t.Fatalf("leader panicked: %v", p)
	}
	if code, b := leader.got(); code != http.StatusOK || b != first+rest {
		t.Errorf("leader got %d %q", code, b)
	}
	h.store.wait()
	wantStatus(t, get(t, h, o, target), []string{"hit"})
	if n := o.calls.Load(); n != 1 {
		t.Errorf("origin called %d times, want 1", n)
	}
}

// TestBrokenFillEndsItsFlightAtOnce: once a fill breaks off, the requests
// that come next start a flight of their own, even while its first
// client (reading slowly) still gets what arrived: they joined the broken
// flight and each asked the origin alone.
func TestBrokenFillEndsItsFlightAtOnce(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	const target = "http://example.com/broken-slow-reader"
	o := newGatedOrigin(c, "first part", " and the rest")
	o.end = func(http.ResponseWriter) error { panic(http.ErrAbortHandler) }
	again := make(chan struct{})
	gated := o.fn
	o.fn = func(w http.ResponseWriter, r *http.Request) error {
		if o.calls.Load() > 1 {
			<-again
		}
		return gated(w, r)
	}
	leader := newStallingWriter(0) // reads nothing until released
	leaderDone := serveAsync(h, leader, newRequest(http.MethodGet, target), o)
	until(t, "the leader to reach the origin", func() bool { return o.calls.Load() == 1 })
	close(o.start)
	close(o.more)
	until(t, "the fill to break off", func() bool {
		h.flights.mu.Lock()
		defer h.flights.mu.Unlock()
		f := h.flights.m[target]
		return f == nil || f.e != nil && f.e.body.filling() != nil && f.e.body.filling().broken()
	})
	var next [5]<-chan any
	for i := range next {
		next[i] = serveAsync(h, newSyncWriter(), newRequest(http.MethodGet, target), o)
	}
	until(t, "one new origin request, the others waiting for it", func() bool {
		return o.calls.Load() == 2 && h.flights.waiting(target) == len(next)-1
	})
	close(again)
	for _, done := range next {
		if p := untilValue(t, "a request to return", done); p != nil {
			t.Errorf("request panicked: %v", p)
		}
	}
	close(leader.release)
	if p := untilValue(t, "the leader to return", leaderDone); p != http.ErrAbortHandler {
		t.Errorf("leader ended with %v, want its response aborted", p)
	}
	if n := o.calls.Load(); n != 2 {
		t.Errorf("origin called %d times, want 2", n)
	}
}

// TestStalledFillIsNotJoined: a request that comes when a fill's body has
// not advanced for the coalescing bound asks the origin (leading a flight
// of its own) rather than wait on an origin that may never go on, as it
// would have past the bound before waiters read fills as they arrive.
func TestStalledFillIsNotJoined(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	const target = "http://example.com/stalls"
	o := newGatedOrigin(c, "first, ", "rest")
	leaderDone := serveAsync(h, newSyncWriter(), newRequest(http.MethodGet, target), o)
	until(t, "the leader to reach the origin", func() bool { return o.calls.Load() == 1 })
	close(o.start)
	reader := newSyncWriter()
	readerDone := serveAsync(h, reader, newRequest(http.MethodGet, target), o)
	until(t, "a request to read the arriving body", func() bool { _, b := reader.got(); return b == "first, " })

	c.Advance(h.coalesceWait + time.Second) // and the origin sends nothing more
	// The requests that come now: one asks the origin, the others wait
	// for its answer.
	again := make(chan struct{})
	gated := o.fn
	o.fn = func(w http.ResponseWriter, r *http.Request) error {
		if o.calls.Load() > 1 {
			<-again
		}
		return gated(w, r)
	}
	late := make([]*syncWriter, 3)
	lateDone := make([]<-chan any, len(late))
	for i := range late {
		late[i] = newSyncWriter()
		lateDone[i] = serveAsync(h, late[i], newRequest(http.MethodGet, target), o)
	}
	until(t, "one new origin request, the others waiting for it", func() bool {
		return o.calls.Load() == 2 && h.flights.waiting(target) == len(late)-1
	})
	close(again)
	for i, w := range late {
		if p := untilValue(t, "a request after the stall to be answered", lateDone[i]); p != nil {
			t.Fatalf("panicked: %v", p)
		}
		if _, b := w.got(); b != "first, rest" {
			t.Errorf("request after the stall got %q", b)
		}
	}
	close(o.more)
	for _, done := range []<-chan any{leaderDone, readerDone} {
		if p := untilValue(t, "the first fill's requests to end", done); p != nil {
			t.Errorf("panicked: %v", p)
		}
	}
	if _, b := reader.got(); b != "first, rest" {
		t.Errorf("reader got %q", b)
	}
}

// TestBrokenFillLeavesTheVariantRecord: a miss whose response varies on
// other fields than the stored ones, and breaks off, leaves the URL's
// variant record as it was: it used to store its new record at the
// header, orphaning the variants stored under the old one.
func TestBrokenFillLeavesTheVariantRecord(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	const target = "http://example.com/varies"
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Date", c.date())
		if r.Header.Get("Accept-Encoding") == "gzip" {
			w.Header().Set("Vary", "Accept-Encoding")
			_, err := io.WriteString(w, "gzip variant")
			return err
		}
		w.Header().Set("Vary", "Accept-Language")
		w.Header().Set("Content-Length", "100")
		_, _ = io.WriteString(w, "part of it")
		return errors.New("origin connection reset")
	}}
	get(t, h, o, target, "Accept-Encoding", "gzip")
	h.store.wait()
	wantStatus(t, get(t, h, o, target, "Accept-Encoding", "gzip"), []string{"hit"})

	if p := <-serveAsync(h, newSyncWriter(), newRequest(http.MethodGet, target, "Accept-Encoding", "br"), o); p != nil {
		t.Fatalf("panicked: %v", p)
	}
	h.store.wait()
	w := get(t, h, o, target, "Accept-Encoding", "gzip")
	wantStatus(t, w, []string{"hit"})
	if w.Body.String() != "gzip variant" {
		t.Errorf("body %q", w.Body.String())
	}
}

// TestFillOutlivesItsClientForItsReadersAfterAReload: after a config
// reload, a fill ends with its client, as a plain reverse_proxy request
// does, but not while requests read its body as it arrives: they are
// requests of the old config too, and were cut off (curl: 512 KiB of 2
// MiB, then "partial file"). The last of them to leave ends it.
func TestFillOutlivesItsClientForItsReadersAfterAReload(t *testing.T) {
	t.Run("reader reads it all", func(t *testing.T) { testFillAfterAReload(t, false, false) })
	t.Run("reader leaves too", func(t *testing.T) { testFillAfterAReload(t, true, false) })
	// A waiter that has the fill but has not begun to write it (its
	// header not yet written) is a reader too.
	t.Run("reader about to read", func(t *testing.T) { testFillAfterAReload(t, false, true) })
}

// gatedHeaderWriter blocks its first WriteHeader, once entered is closed,
// until release is closed.
type gatedHeaderWriter struct {
	*syncWriter
	entered, release chan struct{}
	once             sync.Once
}

func (w *gatedHeaderWriter) WriteHeader(code int) {
	w.once.Do(func() { close(w.entered); <-w.release })
	w.syncWriter.WriteHeader(code)
}

func testFillAfterAReload(t *testing.T, readerLeaves, aboutToRead bool) {
	c := newClock()
	h, unload := newUnloadableHandler(t, Config{}, c)
	const target = "http://example.com/reload"
	more := make(chan struct{})
	var moreOnce sync.Once
	defer moreOnce.Do(func() { close(more) })
	var cancelled atomic.Bool
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Date", c.date())
		w.Header().Set("Content-Length", strconv.Itoa(len("first, rest")))
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "first, ")
		select { // as reverse_proxy, whose upstream request ends with its context
		case <-more:
		case <-r.Context().Done():
			cancelled.Store(true)
			return r.Context().Err()
		}
		_, err := io.WriteString(w, "rest")
		return err
	}}
	ctx, leave := context.WithCancel(context.Background())
	leaderDone := serveAsync(h, newSyncWriter(), newRequest(http.MethodGet, target).WithContext(ctx), o)
	until(t, "the leader to reach the origin", func() bool { return o.calls.Load() == 1 })
	waiterCtx, waiterLeaves := context.WithCancel(context.Background())
	defer waiterLeaves()
	waiter := newSyncWriter()
	gated := &gatedHeaderWriter{syncWriter: waiter, entered: make(chan struct{}), release: make(chan struct{})}
	var w http.ResponseWriter = waiter
	if aboutToRead {
		w = gated
		defer close(gated.release)
	}
	waiterDone := serveAsync(h, w, newRequest(http.MethodGet, target).WithContext(waiterCtx), o)
	if aboutToRead {
		untilValue(t, "the waiter to take the fill", gated.entered)
	} else {
		until(t, "the waiter to get the first part", func() bool { _, b := waiter.got(); return b == "first, " })
	}

	unload() // a reload: the old config's fills end with their clients
	until(t, "the unload", func() bool { h.fills.mu.Lock(); defer h.fills.mu.Unlock(); return h.fills.unloaded })
	leave() // the leader's client goes
	orphaned := func() bool {
		h.flights.mu.Lock()
		defer h.flights.mu.Unlock()
		f := h.flights.m[target]
		return f != nil && f.e != nil && f.e.body.filling() != nil && f.e.body.filling().end.Load() != nil
	}
	until(t, "the fill to see its client gone", func() bool { return cancelled.Load() || orphaned() })
	if readerLeaves {
		waiterLeaves()
		until(t, "the origin request to end with the last reader", cancelled.Load)
		untilValue(t, "the waiter to return", waiterDone)
		<-leaderDone
		return
	}
	if aboutToRead {
		gated.release <- struct{}{} // (the deferred close ends nothing more)
	}
	moreOnce.Do(func() { close(more) })
	if p := untilValue(t, "the waiter to return", waiterDone); p != nil {
		t.Errorf("waiter panicked: %v", p)
	}
	if code, b := waiter.got(); code != http.StatusOK || b != "first, rest" {
		t.Errorf("waiter got %d %q; want 200 %q", code, b, "first, rest")
	}
	<-leaderDone
	if cancelled.Load() {
		t.Error("the origin request was cancelled while a request read its body")
	}
}

// TestWaitersGetUnannouncedTrailers: trailer fields that no Trailer field
// announced (an HTTP/2 origin's gRPC-style status, which reverse_proxy sets
// under http.TrailerPrefix after the body) reach the waiters that read
// the body as it arrived, as they reach the leader's client; they got the
// body without them. Such a response is not stored.
func TestWaitersGetUnannouncedTrailers(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	o := newGatedOrigin(c, "0123456789", "abcdefghij")
	o.end = func(w http.ResponseWriter) error {
		_, err := io.WriteString(w, o.rest)
		w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
		w.Header().Set(http.TrailerPrefix+"Set-Cookie", "sid=leader")
		return err
	}
	const target = "http://example.com/trailers"
	leader, waiter := newSyncWriter(), newSyncWriter()
	leaderDone, waiterDone := leadAndWait(t, h, o, target, leader, waiter, newRequest(http.MethodGet, target))
	// A second waiter begins to write only once the leader's handler has
	// returned: it reads the whole body at once, and the trailer fields
	// with it.
	late := &gatedWriter{syncWriter: newSyncWriter(), gate: make(chan struct{})}
	lateDone := serveAsync(h, late, newRequest(http.MethodGet, target), o)
	until(t, "a second request to wait", func() bool { return h.flights.waiting(target) == 2 })
	close(o.start)
	until(t, "the waiter to read the first part", func() bool { _, b := waiter.got(); return b == o.first })
	close(o.more)
	if p := <-leaderDone; p != nil {
		t.Fatalf("leader panicked: %v", p)
	}
	close(late.gate)
	for _, done := range []<-chan any{waiterDone, lateDone} {
		if p := <-done; p != nil {
			t.Fatalf("waiter panicked: %v", p)
		}
	}
	for name, w := range map[string]*syncWriter{"leader's client": leader, "waiter": waiter, "late waiter": late.syncWriter} {
		if _, b := w.got(); b != o.first+o.rest || w.Header().Get(http.TrailerPrefix+"Grpc-Status") != "0" {
			t.Errorf("%s: body %q, trailer Grpc-Status %q; want the whole body and \"0\"", name, b, w.Header().Get(http.TrailerPrefix+"Grpc-Status"))
		}
	}
	// A trailer Set-Cookie is the leader's client's, as a header one is.
	for name, w := range map[string]*syncWriter{"leader's client": leader, "waiter": waiter, "late waiter": late.syncWriter} {
		if got, want := w.Header().Get(http.TrailerPrefix+"Set-Cookie"), map[bool]string{true: "sid=leader"}[w == leader]; got != want {
			t.Errorf("%s: trailer Set-Cookie %q, want %q", name, got, want)
		}
	}
	if !hasParam(waiter.field("Cache-Status"), "collapsed") {
		t.Errorf("waiter's Cache-Status %q, want collapsed", waiter.field("Cache-Status"))
	}
	get(t, h, o, target)
	if n := o.calls.Load(); n != 2 {
		t.Errorf("origin requests: %d, want 2 (a response with trailers is not stored)", n)
	}
}

// gatedWriter is a syncWriter whose WriteHeader waits for gate.
type gatedWriter struct {
	*syncWriter
	gate chan struct{}
}

func (w *gatedWriter) WriteHeader(code int) {
	<-w.gate
	w.syncWriter.WriteHeader(code)
}
