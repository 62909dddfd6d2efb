package cache

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// invWriter takes the first allow bytes, then holds every Write until
// release is closed (then panics, if panics) or the client leaves (gone).
type invWriter struct {
	*syncWriter
	allow   int
	release chan struct{}
	gone    <-chan struct{}
	panics  bool
	stalled atomic.Bool
}

func (w *invWriter) Write(p []byte) (int, error) {
	if _, b := w.got(); len(b)+len(p) > w.allow {
		w.stalled.Store(true)
		select {
		case <-w.release:
			if w.panics {
				panic("client writer broke")
			}
		case <-w.gone:
			return 0, errors.New("client gone")
		}
	}
	return w.syncWriter.Write(p)
}

// invSpec is the origin's response in TestEveryRecordingPathLeavesNothingBehind.
type invSpec struct {
	status   int
	declare  int // Content-Length sent; -1 for none
	cc       string
	etag     string
	trailer  bool // an unannounced trailer after the body
	breakOff bool // panic(http.ErrAbortHandler) after the body
}

// invEnv is one case's handler, origin, client and waiter.
type invEnv struct {
	t        *testing.T
	h        *Handler
	c        *clock
	o        *origin
	sent     *atomic.Int64
	body     []byte
	gate     chan struct{}
	gateAt   int
	target   string
	client   *invWriter
	leave    context.CancelFunc
	unload   context.CancelFunc
	done     <-chan any
	waiter   *syncWriter
	waitDone <-chan any
	fillers  []*body
}

// startWaiter starts a second request for the case's URL, once it reads
// the published fill, or waits for the flight.
func (e *invEnv) startWaiter(published bool) {
	e.waiter = newSyncWriter()
	e.waitDone = serveAsync(e.h, e.waiter, newRequest(http.MethodGet, e.target), e.o)
	if published {
		until(e.t, "the waiter to read the fill", func() bool { _, b := e.waiter.got(); return len(b) == e.gateAt })
	} else {
		until(e.t, "the waiter to wait", func() bool { return e.h.flights.waiting(e.target) == 1 })
	}
}

// fillArena takes every free block of the arena (given back after the case).
func (e *invEnv) fillArena() {
	a := arenaOf(e.h)
	for {
		b, ok := a.newBody(64 << 10)
		if !ok {
			return
		}
		e.fillers = append(e.fillers, b)
	}
}

// TestEveryRecordingPathLeavesNothingBehind runs a response through every
// path a recording can take with a client that stops reading (stored,
// past max_item_size, budget refused, lead budget taken, client gone,
// origin break-off, writer panic, trailers, no room, ranges, HEAD,
// conditionals, stale-if-error, background refresh, longer than
// declared, store closed, unload), and checks what each leaves: no
// recording or lead budget held, no release past zero, client and waiter
// bodies in order, a stored body at one reference, and an empty arena
// once the entry is dropped (a third review of the client's writer).
func TestEveryRecordingPathLeavesNothingBehind(t *testing.T) {
	unknown := invSpec{status: 200, declare: -1, cc: "max-age=60"}
	declared := invSpec{status: 200, declare: 150000, cc: "max-age=60"}
	with := func(s invSpec, f func(*invSpec)) invSpec { f(&s); return s }
	for _, tc := range []struct {
		name      string
		cfg       Config
		spec      invSpec
		method    string
		fields    []string
		allow     int  // client bytes before it stalls (0: never stalls)
		panics    bool // the client's writer panics once released
		prep      func(e *invEnv)
		mid       func(e *invEnv) // once the client stalled and the origin reached the gate
		waitEnd   bool            // let the origin end before the client is released
		coupled   bool            // no writer: the origin waits for the client
		after     func(e *invEnv)
		wantPanic any
		wantFull  bool // the client gets the whole body
		stored    int  // 1: the entry is stored; 0: not; -1: do not check
		waiterOK  bool // the waiter gets the whole body
	}{
		{name: "unknown/stored", spec: unknown, allow: 40000, waitEnd: true, wantFull: true, stored: 1},
		{name: "unknown/stored/released-early", spec: unknown, allow: 40000, wantFull: true, stored: 1},
		{name: "declared/coalesce-off/stored", cfg: Config{Coalesce: new(false)}, spec: declared, allow: 40000, waitEnd: true, wantFull: true, stored: 1},
		{name: "declared/published-waiter", spec: declared, allow: 40000, mid: func(e *invEnv) { e.startWaiter(true) }, waitEnd: true, wantFull: true, stored: 1, waiterOK: true},
		{name: "unknown/waiter", spec: unknown, allow: 40000, mid: func(e *invEnv) { e.startWaiter(false) }, waitEnd: true, wantFull: true, stored: 1, waiterOK: true},
		{name: "unknown/past-max-item-size", cfg: Config{MaxSize: 8 << 20, MaxItemSize: 128 << 10}, spec: unknown, allow: 40000, wantFull: true},
		{name: "unknown/past-max-item-size/waiter", cfg: Config{MaxSize: 8 << 20, MaxItemSize: 128 << 10}, spec: unknown, allow: 40000, mid: func(e *invEnv) { e.startWaiter(false) }, wantFull: true, waiterOK: true},
		{name: "declared/over-max-item-size", cfg: Config{MaxSize: 8 << 20, MaxItemSize: 128 << 10}, spec: declared, allow: 40000, coupled: true, wantFull: true},
		{name: "unknown/budget-refused-midway", spec: unknown, allow: 40000, mid: func(e *invEnv) { a := arenaOf(e.h); a.recording.Add(2 * a.recordLimit) },
			after: func(e *invEnv) { a := arenaOf(e.h); a.recording.Add(-2 * a.recordLimit) }, wantFull: true},
		{name: "declared/budget-refused-at-header", spec: declared, allow: 40000, prep: func(e *invEnv) { a := arenaOf(e.h); a.recording.Add(2 * a.recordLimit) },
			after: func(e *invEnv) { a := arenaOf(e.h); a.recording.Add(-2 * a.recordLimit) }, coupled: true, wantFull: true},
		{name: "unknown/lead-budget-taken", cfg: Config{MaxSize: 1 << 20, MaxItemSize: 1 << 20}, spec: unknown, allow: 40000, coupled: true, wantFull: true, stored: 1},
		{name: "unknown/client-gone", spec: unknown, allow: 40000, mid: func(e *invEnv) { e.leave() }, waitEnd: true, stored: -1},
		{name: "declared/client-gone", cfg: Config{Coalesce: new(false)}, spec: declared, allow: 40000, mid: func(e *invEnv) { e.leave() }, waitEnd: true, stored: -1},
		{name: "unknown/past-max-item-size/client-gone", cfg: Config{MaxSize: 8 << 20, MaxItemSize: 128 << 10}, spec: unknown, allow: 40000, mid: func(e *invEnv) { e.leave() }},
		{name: "unknown/break-off", spec: with(unknown, func(s *invSpec) { s.breakOff = true }), allow: 40000, waitEnd: true, wantPanic: http.ErrAbortHandler, wantFull: true},
		{name: "unknown/break-off/waiter", spec: with(unknown, func(s *invSpec) { s.breakOff = true }), allow: 40000, mid: func(e *invEnv) { e.startWaiter(false) }, waitEnd: true, wantPanic: http.ErrAbortHandler, wantFull: true},
		{name: "declared/break-off/waiter", spec: with(declared, func(s *invSpec) { s.declare = 200000; s.breakOff = true }), allow: 40000, mid: func(e *invEnv) { e.startWaiter(true) }, waitEnd: true, wantPanic: http.ErrAbortHandler},
		{name: "declared/complete-then-abort/waiter", spec: with(declared, func(s *invSpec) { s.breakOff = true }), allow: 40000, mid: func(e *invEnv) { e.startWaiter(true) }, waitEnd: true, wantPanic: http.ErrAbortHandler, wantFull: true, waiterOK: true},
		{name: "unknown/writer-panic/stored", spec: unknown, allow: 40000, panics: true, waitEnd: true, wantPanic: "client writer broke", stored: 1},
		{name: "unknown/writer-panic/recording", spec: unknown, allow: 40000, panics: true, wantPanic: "client writer broke", stored: -1},
		// A review: dropBody skipped its release when the writer's panic
		// came back through recouple, and the pieces stayed in the arena.
		{name: "unknown/break-off/writer-panic", spec: with(unknown, func(s *invSpec) { s.breakOff = true }), allow: 40000, panics: true, waitEnd: true, wantPanic: "client writer broke", stored: -1},
		{name: "declared/writer-panic", cfg: Config{Coalesce: new(false)}, spec: declared, allow: 40000, panics: true, waitEnd: true, wantPanic: "client writer broke", stored: 1},
		{name: "declared/writer-panic/published-waiter", spec: declared, allow: 40000, panics: true, mid: func(e *invEnv) { e.startWaiter(true) }, waitEnd: true, wantPanic: "client writer broke", stored: 1, waiterOK: true},
		{name: "unknown/trailers", spec: with(unknown, func(s *invSpec) { s.trailer = true }), allow: 40000, waitEnd: true, wantFull: true},
		{name: "unknown/trailers/waiter", spec: with(unknown, func(s *invSpec) { s.trailer = true }), allow: 40000, mid: func(e *invEnv) { e.startWaiter(false) }, waitEnd: true, wantFull: true, waiterOK: true},
		{name: "declared/trailers/published-waiter", spec: with(declared, func(s *invSpec) { s.trailer = true }), allow: 40000, mid: func(e *invEnv) { e.startWaiter(true) }, waitEnd: true, wantFull: true, waiterOK: true},
		{name: "unknown/no-room", cfg: Config{MaxSize: 4 << 20}, spec: unknown, allow: 40000, mid: func(e *invEnv) { e.fillArena() }, waitEnd: true, wantFull: true,
			after: func(e *invEnv) {
				for _, b := range e.fillers {
					b.release()
				}
			}},
		{name: "unknown/no-room/waiter", cfg: Config{MaxSize: 4 << 20}, spec: unknown, allow: 40000, mid: func(e *invEnv) { e.startWaiter(false); e.fillArena() }, waitEnd: true, wantFull: true, waiterOK: true,
			after: func(e *invEnv) {
				for _, b := range e.fillers {
					b.release()
				}
			}},
		{name: "unknown/range-whole", spec: unknown, fields: []string{"Range", "bytes=0-"}, allow: 40000, waitEnd: true, wantFull: true, stored: 1},
		{name: "unknown/range-part-ignored", spec: unknown, fields: []string{"Range", "bytes=0-99"}, allow: 40000, waitEnd: true, wantFull: true, stored: 1},
		{name: "head", spec: unknown, method: http.MethodHead, allow: 40000, coupled: true, wantFull: true},
		{name: "unknown/if-none-match", spec: with(unknown, func(s *invSpec) { s.etag = `"v1"` }), fields: []string{"If-None-Match", `"v1"`}, stored: -1},
		{name: "unknown/stale-if-error", spec: with(unknown, func(s *invSpec) { s.status = 500 }), stored: -1,
			prep: func(e *invEnv) {
				get(e.t, e.h, static(e.c, 200, "old", "Cache-Control", "max-age=1, stale-if-error=600"), e.target)
				e.h.store.wait()
				e.c.Advance(2 * time.Second)
			}},
		{name: "unknown/background-refresh", spec: unknown, stored: -1,
			prep: func(e *invEnv) {
				get(e.t, e.h, static(e.c, 200, "old", "Cache-Control", "max-age=1, stale-while-revalidate=600"), e.target)
				e.h.store.wait()
				e.c.Advance(2 * time.Second)
			}},
		{name: "declared/longer-than-declared", cfg: Config{Coalesce: new(false)}, spec: with(declared, func(s *invSpec) { s.declare = 120000 }), allow: 40000, stored: -1},
		{name: "declared/longer-than-declared/published-waiter", spec: with(declared, func(s *invSpec) { s.declare = 120000 }), allow: 40000, mid: func(e *invEnv) { e.startWaiter(true) }, stored: -1},
		{name: "unknown/store-closed-midway", spec: unknown, allow: 40000, mid: func(e *invEnv) { _ = e.h.store.(*store).Destruct() }, waitEnd: true, wantFull: true, stored: -1},
		{name: "declared/store-closed-midway/waiter", spec: declared, allow: 40000, mid: func(e *invEnv) { e.startWaiter(true); _ = e.h.store.(*store).Destruct() }, waitEnd: true, wantFull: true, stored: -1, waiterOK: true},
		{name: "unknown/unloaded-midway", spec: unknown, allow: 40000, mid: func(e *invEnv) { e.unload() }, waitEnd: true, wantFull: true, stored: 1},
		{name: "unknown/unloaded-then-gone", spec: unknown, allow: 40000, mid: func(e *invEnv) { e.unload(); e.leave() }, stored: -1},
		{name: "declared/unloaded-then-gone/waiter", spec: declared, allow: 40000, mid: func(e *invEnv) { e.startWaiter(true); e.unload(); e.leave() }, waitEnd: true, stored: -1, waiterOK: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			releasesBefore := overReleases.Load()
			c := newClock()
			h, unload := newUnloadableHandler(t, tc.cfg, c)
			e := &invEnv{t: t, h: h, c: c, body: bodyOf(150000), gate: make(chan struct{}), gateAt: 100000, unload: unload,
				target: "http://example.com/inv/" + strings.ReplaceAll(tc.name, "/", "-"), sent: new(atomic.Int64)}
			s := tc.spec
			e.o = &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
				hd := w.Header()
				hd.Set("Cache-Control", s.cc)
				hd.Set("Date", c.date())
				if s.etag != "" {
					hd.Set("Etag", s.etag)
				}
				if s.declare >= 0 {
					hd.Set("Content-Length", strconv.Itoa(s.declare))
				}
				w.WriteHeader(s.status)
				rc := http.NewResponseController(w)
				for off := 0; off < len(e.body); off += 10000 {
					if off == e.gateAt {
						<-e.gate
					}
					if _, err := w.Write(e.body[off : off+10000]); err != nil {
						return err
					}
					_ = rc.Flush()
					e.sent.Store(int64(off + 10000))
				}
				if s.trailer {
					hd.Set(http.TrailerPrefix+"X-Checksum", "abc")
				}
				if s.breakOff {
					panic(http.ErrAbortHandler)
				}
				return nil
			}}
			var ctx context.Context
			ctx, e.leave = context.WithCancel(context.Background())
			defer e.leave()
			e.client = &invWriter{syncWriter: newSyncWriter(), allow: tc.allow, release: make(chan struct{}), gone: ctx.Done(), panics: tc.panics}
			if tc.allow == 0 {
				e.client.allow = 1 << 30
			}
			if tc.prep != nil {
				tc.prep(e)
			}
			method := tc.method
			if method == "" {
				method = http.MethodGet
			}
			e.done = serveAsync(h, e.client, newRequest(method, e.target, tc.fields...).WithContext(ctx), e.o)
			if tc.allow != 0 {
				until(t, "the client to stall and the origin to reach the gate", func() bool {
					return e.client.stalled.Load() && (tc.coupled || e.sent.Load() == int64(e.gateAt))
				})
			}
			if tc.mid != nil {
				tc.mid(e)
			}
			close(e.gate)
			if tc.waitEnd {
				until(t, "the origin to end", func() bool { return e.sent.Load() == int64(len(e.body)) })
				within(2*time.Second, func() bool { return arenaOf(h).stats().Recording == 0 })
			}
			close(e.client.release)
			p := untilValue(t, "the handler to return", e.done)
			if p != tc.wantPanic {
				t.Errorf("handler ended with %v, want %v", p, tc.wantPanic)
			}
			if code, got := e.client.got(); tc.allow != 0 && code == http.StatusOK && method == http.MethodGet && !strings.HasPrefix(string(e.body), got) {
				t.Errorf("the client got %d bytes, not a prefix of the body", len(got))
			} else if tc.wantFull && got != string(e.body) {
				t.Errorf("the client got %d bytes of %d", len(got), len(e.body))
			}
			if e.waitDone != nil {
				if p := untilValue(t, "the waiter to return", e.waitDone); p != nil && tc.waiterOK {
					t.Errorf("waiter panicked: %v", p)
				}
				if _, got := e.waiter.got(); tc.waiterOK && got != string(e.body) {
					t.Errorf("the waiter got %d bytes of %d", len(got), len(e.body))
				} else if !strings.HasPrefix(string(e.body), got) {
					t.Errorf("the waiter got %d bytes, not a prefix of the body", len(got))
				}
			}
			code, got := e.client.got()
			t.Logf("client: %d, %d bytes, %s; origin calls %d", code, len(got), e.client.field("Cache-Status"), e.o.calls.Load())
			h.bg.wait()
			h.store.wait()
			t.Logf("after: origin calls %d, sent %d", e.o.calls.Load(), e.sent.Load())
			if tc.after != nil {
				tc.after(e)
			}
			until(t, "the budgets to be given back", func() bool {
				st := arenaOf(h).stats()
				return st.Recording == 0 && st.Leading == 0
			})
			if n := overReleases.Load() - releasesBefore; n != 0 {
				t.Errorf("%d releases past zero", n)
			}
			st := h.store.(*store)
			key := keyOf(t, h, newRequest(http.MethodGet, e.target))
			if en := st.get(keyHash([]byte(key)), []byte(key)); en != nil {
				if tc.stored == 0 {
					t.Errorf("stored, want not")
				}
				if n := en.body.refs.Load(); n != 1 {
					t.Errorf("the stored body holds %d references, want 1", n)
				}
				st.dropIfStored(en)
				h.store.wait()
			} else if tc.stored == 1 {
				t.Errorf("not stored")
			}
			if !within(3*time.Second, func() bool { s := arenaOf(h).stats(); return s.Used == 0 && s.FallbackBytes == 0 }) {
				t.Errorf("arena holds bodies once everything is over: %+v", arenaOf(h).stats())
			}
		})
	}
}

// TestAskAgainTrailersLetWaitersGoAtOnce: as
// TestUnannouncedTrailersLetWaitersGoAtOnce, for the response of a send
// again (askAgain: a 304 that did not select the stored response).
func TestAskAgainTrailersLetWaitersGoAtOnce(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	data := bodyOf(150000)
	gate := make(chan struct{})
	var stored atomic.Bool
	var sent atomic.Int64
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		hd := w.Header()
		hd.Set("Date", c.date())
		if !stored.Load() {
			hd.Set("Cache-Control", "max-age=1")
			hd.Set("Etag", `"v1"`)
			_, err := w.Write([]byte("old"))
			return err
		}
		hd.Set("Cache-Control", "max-age=60")
		hd.Set("Etag", `"v2"`)
		if r.Header.Get("If-None-Match") != "" {
			w.WriteHeader(http.StatusNotModified) // does not select v1: asked again
			return nil
		}
		rc := http.NewResponseController(w)
		for off := 0; off < len(data); off += 10000 {
			if off == 100000 && gate != nil {
				<-gate
			}
			if _, err := w.Write(data[off : off+10000]); err != nil {
				return err
			}
			_ = rc.Flush()
			sent.Store(int64(off + 10000))
		}
		hd.Set(http.TrailerPrefix+"X-Checksum", "abc")
		return nil
	}}
	const target = "http://example.com/ask-again-trailers"
	get(t, h, o, target)
	stored.Store(true)
	c.Advance(2 * time.Second)
	leader := newStallingWriter(40000)
	leaderDone := serveAsync(h, leader, newRequest(http.MethodGet, target), o)
	until(t, "the origin to have sent 100000 bytes", func() bool { return sent.Load() == 100000 })
	waiterDone := serveAsync(h, newSyncWriter(), newRequest(http.MethodGet, target), o)
	until(t, "a request to wait for the leader", func() bool { return h.flights.waiting(target) == 1 })
	close(gate)
	until(t, "the origin to end", func() bool { return sent.Load() == 150000 })
	if !within(3*time.Second, func() bool { return arenaOf(h).stats().Recording == 0 }) {
		t.Errorf("the recording budget holds %d bytes of an unstorable response while its client reads nothing", arenaOf(h).stats().Recording)
	}
	if !within(3*time.Second, func() bool { return h.flights.waiting(target) == 0 }) {
		t.Error("the waiter still waits for the leader's client once the response ended unstorable")
	}
	close(leader.release)
	untilValue(t, "the waiter's response", waiterDone)
	untilValue(t, "the leader's response", leaderDone)
	checkNoLeftovers(t, h)
}
