package cache

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestArenaRecordingBudget(t *testing.T) {
	a := newArena(8 << 20) // a budget of 1 MiB
	if a.recordLimit != 1<<20 {
		t.Fatalf("recording budget of an 8 MiB cache = %d, want 1 MiB", a.recordLimit)
	}
	if !a.reserve(2<<20, 0, nil) {
		t.Fatal("a body larger than the budget was refused while nothing else was recorded")
	}
	if a.reserve(1, 0, nil) {
		t.Fatal("a body was reserved past the budget while another was recorded")
	}
	a.unreserve(2 << 20)
	if !a.reserve(600<<10, 0, nil) || !a.reserve(424<<10, 0, nil) {
		t.Fatal("bodies that fit in the budget together were refused")
	}
	if a.reserve(1, 0, nil) {
		t.Fatal("a body was reserved past a full budget")
	}
	if a.reserve(100<<10, 0, awaitedResponse(false)) {
		t.Fatal("a body nobody waits for was reserved past a full budget")
	}
	if !a.reserve(100<<10, 0, awaitedResponse(true)) {
		t.Fatal("a body others wait for was refused")
	}
	// Those others wait for take at most a second budget.
	if !a.reserve(924<<10, 0, awaitedResponse(true)) {
		t.Fatal("a body others wait for was refused within twice the budget")
	}
	if a.reserve(1, 0, awaitedResponse(true)) {
		t.Fatal("a body others wait for was reserved past twice the budget")
	}
	st := a.stats()
	if st.Recording != 2<<20 || st.RecordingLimit != 1<<20 || st.RecordingRefusals != 4 {
		t.Errorf("stats: recording %d, limit %d, refusals %d; want %d, %d, 4", st.Recording, st.RecordingLimit, st.RecordingRefusals, 2<<20, 1<<20)
	}
	// A body that grows is alone while nobody else holds any budget.
	g := newArena(8 << 20)
	if !g.reserve(1<<20, 0, nil) || !g.reserve(16<<10, 1<<20, nil) {
		t.Fatal("a body growing past the budget alone was refused")
	}
	g.unreserve(1<<20 + 16<<10)
	if !g.reserve(10, 0, nil) || !g.reserve(1<<20-10, 0, nil) {
		t.Fatal("two bodies filling the budget exactly were refused")
	}
	if g.reserve(16<<10, 1<<20-10, nil) {
		t.Fatal("a body grew past the budget while another held some of it")
	}
	var none *arena
	if !none.reserve(1<<40, 0, nil) {
		t.Error("a nil arena (no store) refused a body")
	}
}

// awaitedResponse says whether others wait for a response.
type awaitedResponse bool

func (a awaitedResponse) awaited() bool { return bool(a) }

// budgetOrigin serves /slow (declared length, its rest held until more
// is closed) and, at once, any other /<n>[u] as n bytes (u: of unknown
// length, in 8 KiB writes).
func budgetOrigin(c *clock, slowSize int, more <-chan struct{}) *origin {
	return &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		hd := w.Header()
		hd.Set("Cache-Control", "max-age=60")
		hd.Set("Date", c.date())
		name := strings.TrimPrefix(r.URL.Path, "/")
		if name == "slow" {
			hd.Set("Content-Length", strconv.Itoa(slowSize))
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, strings.Repeat("s", 1024))
			<-more
			_, err := io.WriteString(w, strings.Repeat("s", slowSize-1024))
			return err
		}
		unknown := strings.HasSuffix(name, "u")
		n, _ := strconv.Atoi(strings.TrimSuffix(name, "u"))
		body := strings.Repeat(name[:1], n)
		if !unknown {
			hd.Set("Content-Length", strconv.Itoa(n))
			_, err := io.WriteString(w, body)
			return err
		}
		for len(body) > 0 {
			k := min(len(body), 8<<10)
			if _, err := io.WriteString(w, body[:k]); err != nil {
				return err
			}
			body = body[k:]
		}
		return nil
	}}
}

// TestRecordingBudgetBoundsConcurrentFills: responses being recorded take
// at most an eighth of max_size at once; a storable miss that would pass
// it while others are recorded is streamed whole to its client and not
// stored (60 concurrent misses of 8 MiB into a 64 MiB cache took 520 MB
// of RSS), and the next miss of its URL is stored.
func TestRecordingBudgetBoundsConcurrentFills(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{MaxSize: 1 << 20}, c) // budget and max_item_size 128 KiB
	s := h.store.(*store)
	more := make(chan struct{})
	o := budgetOrigin(c, 100<<10, more)

	slow := serveAsync(h, newSyncWriter(), newRequest(http.MethodGet, "http://example.com/slow"), o)
	until(t, "the slow fill to reserve its length", func() bool { return s.bodies.recording.Load() == 100<<10 })

	// 10 KiB fits beside it; 60 KiB does not, declared or not.
	wantStatus(t, get(t, h, o, "http://example.com/10240"), []string{"fwd=uri-miss"}, "detail=recording-budget")
	wantStatus(t, get(t, h, o, "http://example.com/10240"), []string{"hit"})
	for _, target := range []string{"http://example.com/61440", "http://example.com/61440u"} {
		w := get(t, h, o, target)
		name := strings.TrimPrefix(target, "http://example.com/")
		n, _ := strconv.Atoi(strings.TrimSuffix(name, "u"))
		if w.Code != http.StatusOK || w.Body.String() != strings.Repeat(name[:1], n) {
			t.Errorf("%s over the budget: %d, %d bytes; want 200 with its %d bytes", target, w.Code, w.Body.Len(), n)
		}
		if strings.HasSuffix(name, "u") {
			wantStatus(t, w, []string{"fwd=uri-miss"}) // refused after its header
		} else {
			wantStatus(t, w, []string{"fwd=uri-miss", "detail=recording-budget"})
		}
		if got := s.bodies.recording.Load(); got != 100<<10 {
			t.Errorf("after %s the budget holds %d bytes, want the slow fill's %d", target, got, 100<<10)
		}
	}
	if st := s.bodies.stats(); st.RecordingRefusals != 2 {
		t.Errorf("recording refusals = %d, want 2", st.RecordingRefusals)
	}

	close(more)
	if v := untilValue(t, "the slow fill to end", slow); v != nil {
		t.Fatalf("slow fill panicked: %v", v)
	}
	s.wait()
	if got := s.bodies.recording.Load(); got != 0 {
		t.Errorf("with nothing in flight the budget holds %d bytes", got)
	}
	// Not stored, nor marked uncacheable: the next misses are stored.
	for _, target := range []string{"http://example.com/61440", "http://example.com/61440u"} {
		wantStatus(t, get(t, h, o, target), []string{"fwd=uri-miss"}, "detail=recording-budget")
		wantStatus(t, get(t, h, o, target), []string{"hit"})
	}
	wantStatus(t, get(t, h, o, "http://example.com/slow"), []string{"hit"})
}

// TestRecordingBudgetYieldsToWaiters: a response others wait for is
// recorded whatever the budget, so a crowd on one new URL still makes one
// origin request, whether its length is declared or not.
func TestRecordingBudgetYieldsToWaiters(t *testing.T) {
	for _, declared := range []bool{true, false} {
		t.Run(map[bool]string{true: "declared", false: "unknown length"}[declared], func(t *testing.T) {
			testRecordingBudgetYieldsToWaiters(t, declared)
		})
	}
}

// budgetHeldBySlowFill returns a handler of a 1 MiB cache (a budget of
// 128 KiB) of which a fill of 100 KiB that does not end before the test
// holds 100 KiB.
func budgetHeldBySlowFill(t *testing.T) (*clock, *Handler, *store) {
	t.Helper()
	c := newClock()
	h := newTestHandler(t, Config{MaxSize: 1 << 20}, c)
	s := h.store.(*store)
	hold := make(chan struct{})
	t.Cleanup(func() { close(hold) })
	go func() {
		_ = h.ServeHTTP(newSyncWriter(), newRequest(http.MethodGet, "http://example.com/slow"), budgetOrigin(c, 100<<10, hold))
	}()
	until(t, "the slow fill to reserve its length", func() bool { return s.bodies.recording.Load() == 100<<10 })
	return c, h, s
}

// lengthDropper leaves out the Content-Length its handler declares.
type lengthDropper struct{ http.ResponseWriter }

func (w lengthDropper) WriteHeader(code int) {
	w.Header().Del("Content-Length")
	w.ResponseWriter.WriteHeader(code)
}

func (w lengthDropper) Write(p []byte) (int, error) {
	w.Header().Del("Content-Length")
	return w.ResponseWriter.Write(p)
}

func (w lengthDropper) Flush() { w.ResponseWriter.(http.Flusher).Flush() }

func testRecordingBudgetYieldsToWaiters(t *testing.T, declared bool) {
	c, h, s := budgetHeldBySlowFill(t)

	o := newGatedOrigin(c, strings.Repeat("g", 30<<10), strings.Repeat("h", 30<<10))
	if !declared {
		fn := o.fn
		o.fn = func(w http.ResponseWriter, r *http.Request) error { return fn(lengthDropper{w}, r) }
	}
	target := "http://example.com/crowd"
	leader, waiter := newSyncWriter(), newSyncWriter()
	leaderDone, waiterDone := leadAndWait(t, h, o, target, leader, waiter, newRequest(http.MethodGet, target))
	close(o.start)
	close(o.more)
	for _, done := range []<-chan any{leaderDone, waiterDone} {
		if v := untilValue(t, "a request of the crowd to end", done); v != nil {
			t.Fatalf("panicked: %v", v)
		}
	}
	want := strings.Repeat("g", 30<<10) + strings.Repeat("h", 30<<10)
	for name, w := range map[string]*syncWriter{"leader": leader, "waiter": waiter} {
		if code, body := w.got(); code != http.StatusOK || body != want {
			t.Errorf("%s got %d, %d bytes; want 200 with the %d bytes", name, code, len(body), len(want))
		}
	}
	if !hasParam(waiter.field("Cache-Status"), "collapsed") {
		t.Errorf("waiter's Cache-Status %q: want collapsed", waiter.field("Cache-Status"))
	}
	if n := o.calls.Load(); n != 1 {
		t.Errorf("origin requests for the crowd = %d, want 1", n)
	}
	if st := s.bodies.stats(); st.RecordingRefusals != 0 {
		t.Errorf("recording refusals = %d, want 0", st.RecordingRefusals)
	}
	s.wait()
	wantStatus(t, get(t, h, o, target), []string{"hit"})
}

// TestRecordingBudgetAloneUnknownLength: a response alone in flight is
// recorded past the budget, up to max_item_size, also when its length is
// unknown and it reserves as it grows (its own reservation is not
// another's): with max_item_size over the budget, and with defaults whose
// budget is not a whole number of 16 KiB pieces.
func TestRecordingBudgetAloneUnknownLength(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		n    int
	}{
		{"max_item_size over the budget", Config{MaxSize: 1 << 20, MaxItemSize: 512 << 10}, 300 << 10},
		{"max_size 1000000", Config{MaxSize: 1000000}, 120000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, tc.cfg, c)
			o := budgetOrigin(c, 0, nil)
			target := fmt.Sprintf("http://example.com/%du", tc.n) // of unknown length
			if w := get(t, h, o, target); w.Body.Len() != tc.n {
				t.Fatalf("client got %d bytes, want %d", w.Body.Len(), tc.n)
			}
			if st := h.store.(*store).bodies.stats(); st.RecordingRefusals != 0 {
				t.Errorf("recording refusals = %d for a response alone in flight, want 0", st.RecordingRefusals)
			}
			wantStatus(t, get(t, h, o, target), []string{"hit"})
		})
	}
}

// leadUnknownLength starts a miss of http://example.com/crowd through h,
// whose origin o answers 8 KiB of unknown length and holds the other
// 30 KiB until o.more is closed, and returns once the leader's client has
// the first 8 KiB.
func leadUnknownLength(t *testing.T, c *clock, h *Handler) (o *gatedOrigin, target string, leader *syncWriter, leaderDone <-chan any) {
	t.Helper()
	o = newGatedOrigin(c, strings.Repeat("g", 8<<10), strings.Repeat("h", 30<<10))
	fn := o.fn
	o.fn = func(w http.ResponseWriter, r *http.Request) error { return fn(lengthDropper{w}, r) }
	target = "http://example.com/crowd"
	leader = newSyncWriter()
	leaderDone = serveAsync(h, leader, newRequest(http.MethodGet, target), o)
	until(t, "the leader to reach the origin", func() bool { return o.calls.Load() == 1 })
	close(o.start)
	until(t, "the leader's client to get the first part", func() bool { _, b := leader.got(); return len(b) == 8<<10 })
	return o, target, leader, leaderDone
}

// TestRecordingBudgetWaitersJoiningAfterTheHeader: requests that join the
// flight of a response of unknown length after its header count when it
// would pass the budget, so a crowd still makes one origin request.
func TestRecordingBudgetWaitersJoiningAfterTheHeader(t *testing.T) {
	c, h, s := budgetHeldBySlowFill(t)
	o, target, leader, leaderDone := leadUnknownLength(t, c, h)
	const n = 5
	writers := []*syncWriter{leader}
	dones := []<-chan any{leaderDone}
	for range n {
		w := newSyncWriter()
		writers = append(writers, w)
		dones = append(dones, serveAsync(h, w, newRequest(http.MethodGet, target), o))
	}
	until(t, "the crowd to wait", func() bool { return h.flights.waiting(target) == n })
	close(o.more)
	for _, d := range dones {
		if v := untilValue(t, "a request of the crowd to end", d); v != nil {
			t.Fatalf("panicked: %v", v)
		}
	}
	want := strings.Repeat("g", 8<<10) + strings.Repeat("h", 30<<10)
	for i, w := range writers {
		if code, body := w.got(); code != http.StatusOK || body != want {
			t.Errorf("client %d got %d, %d bytes; want 200 with %d", i, code, len(body), len(want))
		}
	}
	if got := o.calls.Load(); got != 1 {
		t.Errorf("origin requests for the crowd = %d, want 1 (refusals %d)", got, s.bodies.stats().RecordingRefusals)
	}
}

// TestRecordingBudgetIsGivenBack runs, concurrently into a small cache
// whose budget is mostly taken, misses of declared and unknown length
// with 304s that do not select (asked again), 502s, responses that break
// off (http.ErrAbortHandler), Range, conditional and HEAD requests and
// background refreshes: once all end, nothing of the budget is reserved.
func TestRecordingBudgetIsGivenBack(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{MaxSize: 512 << 10, StaleIfError: 3600_000_000_000}, c)
	s := h.store.(*store)
	var seq atomic.Int64
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		k := seq.Add(1)
		n, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/o/"))
		size := 1000 + n%9*9000
		hdr := w.Header()
		hdr.Set("Date", c.date())
		hdr.Set("Etag", fmt.Sprintf(`"%d-%d"`, n, k%3))
		hdr.Set("Cache-Control", "max-age=1, stale-while-revalidate=5")
		if r.Header.Get("If-None-Match") != "" && k%2 == 0 {
			w.WriteHeader(http.StatusNotModified)
			return nil
		}
		if k%5 == 0 {
			w.WriteHeader(http.StatusBadGateway)
			return nil
		}
		if n%2 == 0 {
			hdr.Set("Content-Length", strconv.Itoa(size))
		}
		w.WriteHeader(http.StatusOK)
		b := strings.Repeat("x", size)
		for len(b) > 0 {
			m := min(len(b), 4096)
			if _, err := io.WriteString(w, b[:m]); err != nil {
				return err
			}
			b = b[m:]
			if k%7 == 0 && len(b) < size/2 {
				panic(http.ErrAbortHandler)
			}
		}
		return nil
	}}
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 300 {
				target := fmt.Sprintf("http://example.com/o/%d", (g*31+i)%40)
				var f []string
				switch i % 4 {
				case 1:
					f = []string{"If-None-Match", `"x"`}
				case 2:
					f = []string{"Range", "bytes=0-"}
				case 3:
					f = []string{"Range", "bytes=5-10"}
				}
				r := newRequest(http.MethodGet, target, f...)
				if i%11 == 0 {
					r = newRequest(http.MethodHead, target)
				}
				func() {
					defer func() { _ = recover() }() // the origin's aborts
					_ = h.ServeHTTP(newSyncWriter(), r, o)
				}()
				if i%50 == 0 {
					c.Advance(2 * time.Second)
				}
			}
		})
	}
	wg.Wait()
	h.bg.wait()
	s.wait()
	st := s.bodies.stats()
	if st.RecordingRefusals == 0 {
		t.Error("no response was refused: the run did not test the budget")
	}
	if st.Recording != 0 {
		t.Errorf("%d bytes of the budget reserved with nothing in flight (%d refusals)", st.Recording, st.RecordingRefusals)
	}
}

// TestRecordingBudgetWaiterThatLeftDoesNotCount: a response of unknown
// length that would pass the budget is refused when the requests that
// joined its flight have left: it is recorded past the budget only for
// requests that still wait for it.
func TestRecordingBudgetWaiterThatLeftDoesNotCount(t *testing.T) {
	c, h, s := budgetHeldBySlowFill(t)
	o, target, leader, leaderDone := leadUnknownLength(t, c, h)

	ctx, cancel := context.WithCancel(context.Background())
	waiterDone := serveAsync(h, newSyncWriter(), newRequest(http.MethodGet, target).WithContext(ctx), o)
	until(t, "the waiter to join", func() bool { return h.flights.waiting(target) == 1 })
	cancel()
	untilValue(t, "the waiter to leave", waiterDone)
	close(o.more) // 30 KiB more: 100 + 48 KiB pass the 128 KiB budget
	if v := untilValue(t, "the leader to end", leaderDone); v != nil {
		t.Fatalf("panicked: %v", v)
	}
	if code, body := leader.got(); code != http.StatusOK || len(body) != 38<<10 {
		t.Errorf("leader's client got %d, %d bytes; want 200 with %d", code, len(body), 38<<10)
	}
	if st := s.bodies.stats(); st.RecordingRefusals != 1 {
		t.Errorf("recording refusals = %d, want 1: nobody waited when the fill grew past the budget", st.RecordingRefusals)
	}
}

// TestRecordingBudgetCrowdsDoNotLiftIt: responses others wait for are
// recorded past the budget only up to twice it; past that, a crowd's
// leader is refused too and its waiters ask the origin themselves, so
// that a burst with a waiter on every URL stays bounded (60 URLs asked
// twice at once into a 64 MiB cache peaked at 720 MB).
func TestRecordingBudgetCrowdsDoNotLiftIt(t *testing.T) {
	c, h, s := budgetHeldBySlowFill(t) // 100 of 128 KiB
	const part = 30 << 10
	var origins []*gatedOrigin
	var done []<-chan any
	var writers []*syncWriter
	for i := range 3 {
		o := newGatedOrigin(c, strings.Repeat("a", part), strings.Repeat("b", part))
		target := fmt.Sprintf("http://example.com/crowd%d", i)
		leader, waiter := newSyncWriter(), newSyncWriter()
		leaderDone, waiterDone := leadAndWait(t, h, o, target, leader, waiter, newRequest(http.MethodGet, target))
		close(o.start) // the header: 60 KiB to reserve
		until(t, "the leader's client to get the first part", func() bool { _, b := leader.got(); return len(b) >= part })
		origins = append(origins, o)
		done = append(done, leaderDone, waiterDone)
		writers = append(writers, leader, waiter)
	}
	// 100 + 60 + 60 fit in twice the budget (256 KiB); the third crowd's
	// 60 do not (nor, once its waiter asks itself, its waiter's).
	if st := s.bodies.stats(); st.Recording != 220<<10 || st.RecordingRefusals < 1 {
		t.Errorf("recording %d KiB with %d refusals; want 220 KiB and at least 1", st.Recording>>10, st.RecordingRefusals)
	}
	for _, o := range origins {
		close(o.more)
	}
	for _, d := range done {
		if v := untilValue(t, "a request of the crowds to end", d); v != nil {
			t.Fatalf("panicked: %v", v)
		}
	}
	want := strings.Repeat("a", part) + strings.Repeat("b", part)
	for i, w := range writers {
		if code, body := w.got(); code != http.StatusOK || body != want {
			t.Errorf("client %d got %d, %d bytes; want 200 with %d", i, code, len(body), len(want))
		}
	}
	if n := origins[2].calls.Load(); n != 2 {
		t.Errorf("origin requests of the refused crowd = %d, want 2 (its waiter asks itself)", n)
	}
	if st := s.bodies.stats(); st.RecordingRefusals != 2 {
		t.Errorf("recording refusals = %d, want 2 (the third leader, then its waiter's own miss)", st.RecordingRefusals)
	}
}
