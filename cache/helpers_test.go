package cache

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// clock is an injectable clock that starts on a whole second, so Date
// fields (whole seconds) and response times agree. It is atomic, not
// locked: a mutex taken on every reading would order the goroutines of a
// test (handler, origin, fills) and hide their data races from -race.
type clock struct {
	ns atomic.Int64 // Unix nanoseconds
}

func newClock() *clock {
	c := new(clock)
	c.ns.Store(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano())
	return c
}

func (c *clock) Now() time.Time { return time.Unix(0, c.ns.Load()).UTC() }

func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// date renders the clock for a Date field.
func (c *clock) date() string { return c.Now().Format(http.TimeFormat) }

// origin is a fake next handler that counts its calls.
type origin struct {
	calls    atomic.Int32
	fn       func(w http.ResponseWriter, r *http.Request) error
	mu       sync.Mutex
	latest   *http.Request    // the last request seen
	byMethod map[string]int32 // requests seen, by method
}

func (o *origin) ServeHTTP(w http.ResponseWriter, r *http.Request) error {
	o.calls.Add(1)
	o.mu.Lock()
	// Only counts and the last request are kept, not every request: a
	// benchmark's origin sees millions, and keeping them would measure a
	// growing heap rather than the handler.
	o.latest = r
	if o.byMethod == nil {
		o.byMethod = make(map[string]int32)
	}
	o.byMethod[r.Method]++
	o.mu.Unlock()
	return o.fn(w, r)
}

func (o *origin) last() *http.Request {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.latest
}

// trailerOrigin answers "body" with fields and then a trailer field name:
// value, announced in a Trailer field, or not (set with http.TrailerPrefix,
// as reverse_proxy sets the trailers an upstream did not announce).
func trailerOrigin(announced bool, name, value string, fields ...string) *origin {
	return &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		h := w.Header()
		for i := 0; i+1 < len(fields); i += 2 {
			h.Set(fields[i], fields[i+1])
		}
		if announced {
			h.Set("Trailer", name)
		}
		_, _ = io.WriteString(w, "body")
		if announced {
			h.Set(name, value)
		} else {
			h.Set(http.TrailerPrefix+name, value)
		}
		return nil
	}}
}

// static answers every request with status, header fields and body; the
// Date field is the clock's time unless given.
func static(c *clock, status int, body string, fields ...string) *origin {
	return &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		h := w.Header()
		for i := 0; i+1 < len(fields); i += 2 {
			h.Add(fields[i], fields[i+1])
		}
		if h.Get("Date") == "" {
			h.Set("Date", c.date())
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
		return nil
	}}
}

var testCacheSeq atomic.Int64

// newTestHandler provisions a handler with its own store (a unique
// cache_name), the given config and clock, and a silent logger.
func newTestHandler(t testing.TB, cfg Config, c *clock) *Handler {
	t.Helper()
	if cfg.CacheName == "" {
		cfg.CacheName = fmt.Sprintf("test-%d", testCacheSeq.Add(1))
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	h := &Handler{Config: cfg, logger: zap.NewNop()}
	if c != nil {
		h.now = c.Now
	}
	if err := h.Provision(ctx); err != nil {
		t.Fatalf("Provision: %v", err)
	}
	h.logger = zap.NewNop()
	t.Cleanup(func() {
		h.bg.wait()
		cancel()
		_ = h.Cleanup()
	})
	return h
}

// newUnloadableHandler is newTestHandler with a config life the test ends
// with unload, as a reload or a stop would.
func newUnloadableHandler(t testing.TB, cfg Config, c *clock) (h *Handler, unload context.CancelFunc) {
	t.Helper()
	h = newTestHandler(t, cfg, c)
	life, unload := context.WithCancel(context.Background())
	t.Cleanup(unload)
	h.ctx.Context = life
	h.life = h.ctx
	return h, unload
}

// newRequest makes a request prepared as Caddy's server does (with a
// replacer and vars in its context); fields are name, value pairs.
func newRequest(method, target string, fields ...string) *http.Request {
	r := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(fields); i += 2 {
		r.Header.Add(fields[i], fields[i+1])
	}
	return caddyhttp.PrepareRequest(r, caddy.NewReplacer(), nil, nil)
}

// serve runs r through h and next, waits for ristretto to apply the
// sets, and returns the recorded response.
func serve(t testing.TB, h *Handler, next caddyhttp.Handler, r *http.Request) *httptest.ResponseRecorder {
	t.Helper()
	w := httptest.NewRecorder()
	if err := h.ServeHTTP(w, r, next); err != nil {
		t.Fatalf("ServeHTTP %s %s: %v", r.Method, r.URL, err)
	}
	h.store.wait()
	return w
}

func get(t testing.TB, h *Handler, next caddyhttp.Handler, target string, fields ...string) *httptest.ResponseRecorder {
	t.Helper()
	return serve(t, h, next, newRequest(http.MethodGet, target, fields...))
}

// wantStatus checks the Cache-Status of w contains every one of parts
// (e.g. "hit", "fwd=uri-miss") and none of not.
func wantStatus(t testing.TB, w *httptest.ResponseRecorder, parts []string, not ...string) {
	t.Helper()
	cs := w.Header().Get("Cache-Status")
	for _, p := range parts {
		if !hasParam(cs, p) {
			t.Errorf("Cache-Status %q lacks %q", cs, p)
		}
	}
	for _, p := range not {
		if hasParam(cs, p) {
			t.Errorf("Cache-Status %q has %q", cs, p)
		}
	}
}

// hasParam reports whether the last member of the Cache-Status value cs
// has the parameter p (or starts with it, for p ending in '=').
func hasParam(cs, p string) bool {
	if i := strings.LastIndex(cs, ", "); i >= 0 {
		cs = cs[i+2:]
	}
	for _, part := range strings.Split(cs, ";") {
		part = strings.TrimSpace(part)
		if part == p || strings.HasSuffix(p, "=") && strings.HasPrefix(part, p) {
			return true
		}
	}
	return false
}

// until polls cond until it holds or a deadline passes (for work done by
// goroutines the test cannot join).
func until(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// untilValue receives from ch, failing the test if nothing comes within
// the same time until allows (a guard against a hang, not a timing).
func untilValue[T any](t testing.TB, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// writer is a ResponseWriter that records every status (1xx included)
// with the header it went with, the slices it was given, flushes, and can fail writes.
type writer struct {
	h        http.Header
	codes    []int
	sent     []http.Header // a copy of h with each status
	body     []byte
	chunks   [][]byte
	flushes  int
	failFrom int // fail writes once this many bytes went through (0: never)
	onWrite  func()
}

func newWriter() *writer { return &writer{h: make(http.Header)} }

func (w *writer) Header() http.Header { return w.h }
func (w *writer) WriteHeader(code int) {
	w.codes = append(w.codes, code)
	w.sent = append(w.sent, w.h.Clone())
}
func (w *writer) Write(p []byte) (int, error) {
	if w.failFrom > 0 && len(w.body) >= w.failFrom {
		return 0, io.ErrClosedPipe
	}
	w.chunks = append(w.chunks, p)
	w.body = append(w.body, p...)
	if w.onWrite != nil {
		w.onWrite()
	}
	return len(p), nil
}
func (w *writer) Flush() { w.flushes++ }

func unsafeData(b []byte) *byte { return unsafe.SliceData(b) }

// mustBody is a body newBody or seal returned, which must have had room.
func mustBody(b *body, ok bool) *body {
	if !ok {
		panic("arena: no room for a body")
	}
	return b
}

// bodyOf copies p into a new body of a (one reference, the caller's).
func (a *arena) bodyOf(p []byte) *body {
	b := mustBody(a.newBody(len(p)))
	if b != nil {
		_, _ = b.Write(p)
	}
	return b
}

// full reports whether every byte of b has been written (growing:
// whether its limit is reached).
func (b *body) full() bool {
	if b != nil && b.limit > 0 {
		return b.w >= b.limit
	}
	return b == nil || b.w == b.n
}

// mmapAvailable reports whether the arena can map memory here (without
// it, every body lives on the heap).
var mmapAvailable = func() bool {
	b, err := mapChunk(1 << minChunkShift)
	if err != nil {
		return false
	}
	unmapChunk(b)
	return true
}()

// raceEnabled is set by race_test.go when built with -race; allocation
// assertions are skipped then.
var raceEnabled bool

// keyOf is the URL cache key h makes for r.
func keyOf(t testing.TB, h *Handler, r *http.Request) string {
	t.Helper()
	key, ok := h.appendKey(nil, r)
	if !ok {
		t.Fatalf("no key for %s", r.URL)
	}
	return string(key)
}
