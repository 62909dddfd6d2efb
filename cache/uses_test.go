package cache

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
)

func TestUseSketchCounts(t *testing.T) {
	s := newUseSketch(1 << 10)
	h := keyHash([]byte("http://example.com/a?"))
	for want := 1; want <= maxMinUses; want++ {
		if got := s.add(h); got != want {
			t.Fatalf("use %d counted as %d", want, got)
		}
	}
	if got := s.add(h); got != maxMinUses {
		t.Errorf("a full counter counted %d, want it to stay at %d", got, maxMinUses)
	}
	if got := s.add(keyHash([]byte("http://example.com/b?"))); got != 1 {
		t.Errorf("another URL's first use counted as %d", got)
	}
}

// TestUseSketchFirstUsesLookFirst fills the window with distinct URLs and
// counts how many of another window's worth look used before.
func TestUseSketchFirstUsesLookFirst(t *testing.T) {
	const items = 1 << 14
	s := newUseSketch(items)
	for i := range items / 2 {
		s.add(keyHash([]byte("http://example.com/seen/" + strconv.Itoa(i))))
	}
	wrong := 0
	for i := range items/2 - 1 { // the window stays open
		if s.add(keyHash([]byte("http://example.com/new/"+strconv.Itoa(i)))) > 1 {
			wrong++
		}
	}
	t.Logf("%d of %d first uses looked like repeats", wrong, items/2-1)
	// Two rows of 16 counters an item: about 1 in 270 collide with a
	// full window, fewer while it fills.
	if limit := items / 200; wrong > limit {
		t.Errorf("%d of %d first uses looked like repeats, want at most %d", wrong, items/2-1, limit)
	}
}

func TestUseSketchAges(t *testing.T) {
	const items = 1 << 10
	s := newUseSketch(items)
	old := keyHash([]byte("http://example.com/old?"))
	s.add(old)
	s.add(old)
	s.add(old) // 3
	for i := range items {
		s.add(keyHash([]byte("http://example.com/other/" + strconv.Itoa(i))))
	}
	// One window later the count was halved to 1: this use makes 2.
	if got := s.add(old); got != 2 {
		t.Errorf("after a window, three uses and one more counted %d, want 2", got)
	}
	for i := range 2 * items {
		s.add(keyHash([]byte("http://example.com/more/" + strconv.Itoa(i))))
	}
	if got := s.add(old); got != 1 {
		t.Errorf("after three windows, the URL counted %d, want 1 (forgotten)", got)
	}
}

func TestUseSketchConcurrentAdds(t *testing.T) {
	s := newUseSketch(1 << 20) // a window no test reaches: no halving
	h := keyHash([]byte("http://example.com/hot?"))
	var wg sync.WaitGroup
	seen := make([][]int, 4)
	for g := range seen {
		wg.Go(func() {
			for range 3 {
				seen[g] = append(seen[g], s.add(h))
			}
		})
	}
	wg.Wait()
	// Lock-free counting loses no use: the next one is the thirteenth.
	// (Two adds racing over both rows may each see the lower of two
	// counts; what one returns is never more than the uses so far.)
	if got := s.add(h); got != 13 {
		t.Errorf("after 12 concurrent uses the next counted %d, want 13", got)
	}
	for _, ns := range seen {
		for _, n := range ns {
			if n < 1 || n > 12 {
				t.Errorf("a concurrent use counted %d, want 1 to 12 (all: %v)", n, seen)
			}
		}
	}
}

func TestMinUses(t *testing.T) {
	for _, uses := range []int{2, 3} {
		t.Run(strconv.Itoa(uses), func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{MinUses: uses}, c)
			o := static(c, 200, "body", "Cache-Control", "max-age=60")
			for i := 1; i < uses; i++ {
				w := get(t, h, o, "http://example.com/m")
				wantStatus(t, w, []string{"fwd=uri-miss", "fwd-status=200", "detail=min-uses"})
				if w.Body.String() != "body" {
					t.Fatalf("miss %d body %q", i, w.Body.String())
				}
				if st := h.store.stats(); st.Entries != 0 || st.Stores != 0 {
					t.Fatalf("after miss %d of %d the store holds %d (stores %d)", i, uses, st.Entries, st.Stores)
				}
			}
			w := get(t, h, o, "http://example.com/m")
			wantStatus(t, w, []string{"fwd=uri-miss", "fwd-status=200"}, "detail=min-uses")
			w = get(t, h, o, "http://example.com/m")
			wantStatus(t, w, []string{"hit", "ttl=60"})
			if n := o.calls.Load(); int(n) != uses {
				t.Errorf("origin called %d times, want %d", n, uses)
			}
			// Another URL starts from its own count.
			wantStatus(t, get(t, h, o, "http://example.com/other"), []string{"fwd=uri-miss", "detail=min-uses"})
		})
	}
}

// TestMinUsesAfterTheStoreClosed: a request still served by a handler
// whose store has closed (its config was unloaded, a reload resized the
// cache) goes to the origin as a plain miss: the counts are gone with the
// store.
func TestMinUsesAfterTheStoreClosed(t *testing.T) {
	c := newClock()
	for _, minUses := range []int{0, 2} {
		h := newTestHandler(t, Config{MinUses: minUses}, c)
		o := static(c, 200, "ok", "Cache-Control", "max-age=60")
		get(t, h, o, "http://example.com/closed")
		if err := h.store.(*store).Destruct(); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			w := get(t, h, o, "http://example.com/closed")
			if w.Code != 200 || w.Body.String() != "ok" {
				t.Fatalf("min_uses %d after close: %d %q", minUses, w.Code, w.Body)
			}
			wantStatus(t, w, []string{"fwd=uri-miss"}, "detail=min-uses")
		}
	}
}

func TestMinUsesSaysNothingOfUnstorable(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{MinUses: 2}, c)
	o := static(c, 200, "private", "Cache-Control", "no-store")
	w := get(t, h, o, "http://example.com/ns")
	wantStatus(t, w, []string{"fwd=uri-miss", "fwd-status=200"}, "detail=min-uses")
}

// TestMinUsesCoalesced: misses min_uses will not store are not
// coalesced (leading a flight would cost each of them a fill context); the
// first that reaches min_uses leads, and the rest of a burst are answered
// from it. The use counts are a sketch's, each the lesser of two counters
// that concurrent misses may pass in different orders: a burst of first
// misses sends min_uses to 2×min_uses-1 requests to the origin.
func TestMinUsesCoalesced(t *testing.T) {
	const n = 20
	for _, minUses := range []int{2, 3} {
		t.Run(strconv.Itoa(minUses), func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{MinUses: minUses}, c)
			release := make(chan struct{})
			o := blocking(c, release, "shared", "Cache-Control", "max-age=60")
			key := keyOf(t, h, newRequest(http.MethodGet, "http://example.com/cold"))
			out := burst(t, h, o, release, n, "http://example.com/cold", "every miss to wait or reach the origin",
				func() bool { return h.flights.waiting(key)+int(o.calls.Load()) == n })
			calls := int(o.calls.Load())
			if calls < minUses || calls > 2*minUses-1 {
				t.Errorf("origin called %d times for %d concurrent first misses under min_uses %d, want %d to %d", calls, n, minUses, minUses, 2*minUses-1)
			}
			skipped, collapsed := 0, 0
			for _, w := range out {
				if w.Code != 200 || w.Body.String() != "shared" {
					t.Fatalf("answer %d %q", w.Code, w.Body.String())
				}
				st := w.Header().Get("Cache-Status")
				if hasParam(st, "detail=min-uses") {
					skipped++
				}
				if hasParam(st, "collapsed") {
					collapsed++
				}
			}
			if skipped != calls-1 || collapsed != n-calls {
				t.Errorf("%d misses streamed for min_uses and %d collapsed, want %d and %d", skipped, collapsed, calls-1, n-calls)
			}
			wantStatus(t, get(t, h, o, "http://example.com/cold"), []string{"hit"})
		})
	}
}

// TestMinUsesRevalidates: a stale entry is refreshed (304) or replaced
// (200) whatever its URL's count.
func TestMinUsesRevalidates(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status string
		origin func(c *clock) *origin
	}{
		{"304", "fwd-status=304", func(c *clock) *origin { return validating(c, `"v"`, "body", "Cache-Control", "max-age=60") }},
		{"200", "fwd-status=200", func(c *clock) *origin { return static(c, 200, "body", "Cache-Control", "max-age=60", "Etag", `"v"`) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{MinUses: 2}, c)
			o := tc.origin(c)
			get(t, h, o, "http://example.com/r")
			get(t, h, o, "http://example.com/r")
			wantStatus(t, get(t, h, o, "http://example.com/r"), []string{"hit"})
			forgotten := newUseSketch(1 << 10)
			h.uses = func() *useSketch { return forgotten }
			c.Advance(2 * time.Minute)
			w := get(t, h, o, "http://example.com/r")
			wantStatus(t, w, []string{"fwd=stale", tc.status}, "detail=min-uses")
			wantStatus(t, get(t, h, o, "http://example.com/r"), []string{"hit", "ttl=60"})
		})
	}
}

func TestFirstUseStats(t *testing.T) {
	var a firstUseStats
	a.record(firstUseMin-1, 0)
	if a.wasteful() {
		t.Fatalf("wasteful after %d offers, want at least %d counted first", firstUseMin-1, firstUseMin)
	}
	a.record(1, 0)
	if !a.wasteful() {
		t.Fatal("not wasteful after 64 offers none of which was used")
	}
	// Most first uses are skipped while wasteful; one in probeEvery is
	// still stored.
	probes := 0
	for range 10 * probeEvery {
		if !a.skipFirstUse() {
			probes++
		}
	}
	if probes != 10 {
		t.Errorf("%d probes in %d first uses, want 10", probes, 10*probeEvery)
	}
	// One use in usefulEvery offers is enough to store first misses.
	a.record(0, firstUseMin/usefulEvery)
	if a.wasteful() || a.skipFirstUse() {
		t.Errorf("wasteful with %d of %d offers used", firstUseMin/usefulEvery, firstUseMin)
	}
	// The counts are halved as they go: old uses weigh less and less.
	for range 2 * firstUseWindow {
		a.record(1, 0)
	}
	if !a.wasteful() {
		t.Error("still not wasteful after two windows of offers never used")
	}
	if o, _ := a.load(); o >= firstUseWindow || o < firstUseWindow/2 {
		t.Errorf("%d offers counted, want them halved to stay within [%d, %d)", o, firstUseWindow/2, firstUseWindow)
	}
}

// TestFirstUsesCounted: the store counts the entries stored on a first
// miss, and the first time a later request finds each (whatever it then
// does with it).
func TestFirstUsesCounted(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	o := static(c, 200, "body", "Cache-Control", "max-age=60")
	for i := range 10 {
		get(t, h, o, fmt.Sprintf("http://example.com/f/%d", i))
	}
	h.store.wait()
	for range 3 {
		for i := range 4 {
			wantStatus(t, get(t, h, o, fmt.Sprintf("http://example.com/f/%d", i)), []string{"hit"})
		}
	}
	c.Advance(2 * time.Minute) // a stale entry found and revalidated was used too
	wantStatus(t, get(t, h, o, "http://example.com/f/9"), []string{"fwd=stale"})
	if r := h.store.stats().FirstMisses; r != (firstUseReport{Stored: 10, Used: 5}) {
		t.Errorf("stats report %+v, want 10 stored and 5 used, not skipping", r)
	}
}

// TestMinUsesAuto: by default a first miss is stored, until almost none
// of the entries stored on a first miss are found again in a store that
// is nearly full; then first misses are streamed (but one in
// probeEvery), second misses stored, and min_uses 1 still stores every
// first miss.
func TestMinUsesAuto(t *testing.T) {
	c := newClock()
	// Room for a few hundred entries: the URLs asked for once fill it.
	h := newTestHandler(t, Config{MaxSize: 1 << 20}, c)
	o := static(c, 200, "body", "Cache-Control", "max-age=60")
	// URLs asked for twice: each entry stored on the first miss is used.
	for i := range 2 * firstUseMin {
		u := fmt.Sprintf("http://example.com/twice/%d", i)
		wantStatus(t, get(t, h, o, u), []string{"fwd=uri-miss", "fwd-status=200"}, "detail=min-uses")
		h.store.wait()
		wantStatus(t, get(t, h, o, u), []string{"hit"})
	}
	// URLs asked for once: after enough of them (the uses above weigh
	// less each window), first misses are skipped.
	skipped, last := 0, ""
	for i := range 3 * firstUseWindow {
		u := fmt.Sprintf("http://example.com/once/%d", i)
		w := get(t, h, o, u)
		if w.Body.String() != "body" {
			t.Fatalf("first miss %d body %q", i, w.Body.String())
		}
		if hasParam(w.Header().Get("Cache-Status"), "detail=min-uses") {
			skipped, last = skipped+1, u
		}
	}
	if skipped == 0 {
		t.Fatal("no first miss skipped after a window of entries never used")
	}
	// Once skipping, all but the probes are skipped.
	stores := h.store.stats().Stores
	skipped = 0
	for i := range 4 * probeEvery {
		if hasParam(get(t, h, o, fmt.Sprintf("http://example.com/more/%d", i)).Header().Get("Cache-Status"), "detail=min-uses") {
			skipped++
		}
	}
	if stored := h.store.stats().Stores - stores; skipped != 4*probeEvery-4 || stored != 4 {
		t.Errorf("while skipping: %d first misses skipped and %d stored, want %d and 4", skipped, stored, 4*probeEvery-4)
	}
	if r := h.store.stats().FirstMisses; !r.Skipping || r.Stored < firstUseMin || r.Used*usefulEvery >= r.Stored {
		t.Errorf("stats report %+v while skipping", r)
	}
	var m dto.Metric
	if err := h.m.minUsesSkips.Write(&m); err != nil || m.GetCounter().GetValue() < float64(skipped) {
		t.Errorf("min_uses_skips_total = %v (%v), want at least %d", m.GetCounter().GetValue(), err, skipped)
	}
	// A skipped URL's second miss is stored (offered: in a full store
	// ristretto's admission may still refuse it).
	stores = h.store.stats().Stores
	wantStatus(t, get(t, h, o, last), []string{"fwd=uri-miss"}, "detail=min-uses")
	if h.store.stats().Stores != stores+1 {
		t.Error("a skipped URL's second miss was not offered to the store")
	}

	every := newTestHandler(t, Config{MinUses: 1, MaxSize: 1 << 20}, c)
	every.firstUses.record(firstUseMin, 0)
	for i := range probeEvery {
		wantStatus(t, get(t, every, o, fmt.Sprintf("http://example.com/e/%d", i)), []string{"fwd=uri-miss"}, "detail=min-uses")
	}
	if st := every.store.stats(); st.Stores != probeEvery {
		t.Errorf("min_uses 1 stored %d of %d first misses", st.Stores, probeEvery)
	}
}

// TestMinUsesAutoStoresWhileThereIsRoom: in a store with room, auto
// stores every first miss, however few of them were used yet (a burst of
// new URLs whose second requests come later, as at a cold start); the
// same counts skip first misses once the store is nearly full.
func TestMinUsesAutoStoresWhileThereIsRoom(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{MaxSize: 1 << 20}, c)
	o := static(c, 200, "body", "Cache-Control", "max-age=60")
	h.firstUses.record(4*firstUseMin, 0) // wasteful by the counts alone
	var i int
	for ; i < 2*probeEvery; i++ {
		wantStatus(t, get(t, h, o, fmt.Sprintf("http://example.com/burst/%d", i)), []string{"fwd=uri-miss"}, "detail=min-uses")
	}
	if r := h.store.stats().FirstMisses; r.Skipping {
		t.Errorf("stats report %+v in a store with room", r)
	}
	// Fill it: first misses are stored until it is nearly full.
	for ; !h.store.(*store).nearlyFull(); i++ {
		if i > 10000 {
			t.Fatal("the store never filled up")
		}
		h.firstUses.record(1, 0)
		wantStatus(t, get(t, h, o, fmt.Sprintf("http://example.com/burst/%d", i)), []string{"fwd=uri-miss"}, "detail=min-uses")
	}
	skipped := 0
	for j := range 2 * probeEvery {
		if hasParam(get(t, h, o, fmt.Sprintf("http://example.com/full/%d", j)).Header().Get("Cache-Status"), "detail=min-uses") {
			skipped++
		}
	}
	if skipped != 2*probeEvery-2 {
		t.Errorf("a nearly full store skipped %d of %d first misses, want %d", skipped, 2*probeEvery, 2*probeEvery-2)
	}
}
