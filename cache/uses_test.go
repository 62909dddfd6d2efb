package cache

import (
	"strconv"
	"sync"
	"testing"
	"time"
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

func TestMinUsesSaysNothingOfUnstorable(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{MinUses: 2}, c)
	o := static(c, 200, "private", "Cache-Control", "no-store")
	w := get(t, h, o, "http://example.com/ns")
	wantStatus(t, w, []string{"fwd=uri-miss", "fwd-status=200"}, "detail=min-uses")
}

// TestMinUsesCoalesced: a miss others joined is stored on its first use,
// and the joiners are answered from it.
func TestMinUsesCoalesced(t *testing.T) {
	const n = 20
	c := newClock()
	h := newTestHandler(t, Config{MinUses: 2}, c)
	release := make(chan struct{})
	o := blocking(c, release, "shared", "Cache-Control", "max-age=60")
	out := concurrent(t, h, o, release, n, "http://example.com/cold", n-1)
	if calls := o.calls.Load(); calls != 1 {
		t.Errorf("origin called %d times for %d concurrent first misses, want 1", calls, n)
	}
	for _, w := range out {
		if w.Code != 200 || w.Body.String() != "shared" {
			t.Fatalf("answer %d %q", w.Code, w.Body.String())
		}
		wantStatus(t, w, nil, "detail=min-uses")
	}
	wantStatus(t, get(t, h, o, "http://example.com/cold"), []string{"hit"})
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
			h.uses = newUseSketch(1 << 10) // the counts forgotten
			c.Advance(2 * time.Minute)
			w := get(t, h, o, "http://example.com/r")
			wantStatus(t, w, []string{"fwd=stale", tc.status}, "detail=min-uses")
			wantStatus(t, get(t, h, o, "http://example.com/r"), []string{"hit", "ttl=60"})
		})
	}
}
