//go:build unix && !nommap

package cache

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"testing"
)

// rangeChecker is a writer that checks what it is given against want
// from pos on, without keeping it.
type rangeChecker struct {
	want  []byte
	pos   int
	calls int
	bad   bool
}

func (w *rangeChecker) Write(p []byte) (int, error) {
	w.calls++
	if w.pos+len(p) > len(w.want) || !bytes.Equal(p, w.want[w.pos:w.pos+len(p)]) {
		w.bad = true
	}
	w.pos += len(p)
	return len(p), nil
}

// fillInPieces writes want to b in pieces of odd sizes, so that writes
// start and end inside blocks and straddle their boundaries.
func fillInPieces(t *testing.T, b *body, want []byte) {
	t.Helper()
	pieces := []int{1, 3, 5, 7, 11, 13, 509, 511, 513, 1021}
	for i := 0; len(want) > 0; i++ {
		if b.full() {
			t.Fatalf("full with %d bytes left to write", len(want))
		}
		p := want[:min(pieces[i%len(pieces)], len(want))]
		n, err := b.Write(p)
		if n != len(p) || err != nil {
			t.Fatalf("Write(%d bytes) = %d, %v", len(p), n, err)
		}
		want = want[n:]
	}
	if b.limit == 0 && !b.full() {
		t.Fatalf("not full after writing every byte")
	}
}

func TestBodyWriteAndWriteRange(t *testing.T) {
	a := newArena(1 << 20) // 64 KiB chunks
	t.Cleanup(a.close)
	tests := []struct {
		name      string
		arena     *arena
		n         int
		wantSpans []int // span lengths
	}{
		{"three blocks", a, 2600, []int{2048, 512, 40}},
		{"three blocks, one byte in the last", a, 2561, []int{2048, 512, 1}},
		{"blocks exactly full", a, 1536, []int{1024, 512}},
		{"heap", nil, 1600, []int{1600}},
		{"chunk and three blocks", a, 1<<16 + 7000, []int{1 << 16, 4096, 2048, 856}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := mustBody(tt.arena.newBody(tt.n))
			defer b.release()
			var lens []int
			for _, s := range b.spans {
				lens = append(lens, len(s.b))
			}
			if fmt.Sprint(lens) != fmt.Sprint(tt.wantSpans) {
				t.Fatalf("spans of %v bytes, want %v", lens, tt.wantSpans)
			}
			if b.Len() != tt.n {
				t.Fatalf("Len = %d, want %d", b.Len(), tt.n)
			}
			want := patternFor(tt.n, tt.n)
			fillInPieces(t, b, want)

			// Every position on a small body; on a large one, those
			// around span boundaries and a stride.
			var pos []int
			if tt.n <= 2048 {
				for p := 0; p <= tt.n; p++ {
					pos = append(pos, p)
				}
			} else {
				edge := 0
				for _, l := range append([]int{0}, lens...) {
					edge += l
					for d := -2; d <= 2; d++ {
						if p := edge + d; p >= 0 && p <= tt.n {
							pos = append(pos, p)
						}
					}
				}
				for p := 0; p <= tt.n; p += 997 {
					pos = append(pos, p)
				}
			}
			w := &rangeChecker{want: want}
			for _, start := range pos {
				for _, end := range pos {
					if end < start {
						continue
					}
					w.pos, w.calls, w.bad = start, 0, false
					if err := b.writeRange(w, start, end); err != nil {
						t.Fatalf("writeRange(%d, %d): %v", start, end, err)
					}
					if w.bad || w.pos != end {
						t.Fatalf("writeRange(%d, %d) wrote the wrong bytes (reached %d)", start, end, w.pos)
					}
					if start == end && w.calls != 0 {
						t.Fatalf("writeRange(%d, %d) wrote %d times", start, end, w.calls)
					}
				}
			}
		})
	}
}

// TestBodyWriteRangeNoCopy checks that writeRange hands the writer the
// body's own memory, span by span.
func TestBodyWriteRangeNoCopy(t *testing.T) {
	a := newArena(1 << 20)
	t.Cleanup(a.close)
	b := a.bodyOf(patternFor(0, 2600))
	defer b.release()
	var got [][]byte
	w := writerFunc(func(p []byte) (int, error) { got = append(got, p); return len(p), nil })
	if err := b.writeRange(w, 100, 2590); err != nil {
		t.Fatal(err)
	}
	want := []struct{ span, off, n int }{{0, 100, 1948}, {1, 0, 512}, {2, 0, 30}}
	if len(got) != len(want) {
		t.Fatalf("%d writes, want one per span", len(got))
	}
	for i, w := range want {
		if len(got[i]) != w.n || &got[i][0] != &b.spans[w.span].b[w.off] {
			t.Fatalf("write %d: %d bytes, not span %d's memory from %d (%d bytes)", i, len(got[i]), w.span, w.off, w.n)
		}
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func TestBodyWriteRangeError(t *testing.T) {
	a := newArena(1 << 20)
	t.Cleanup(a.close)
	b := a.bodyOf(patternFor(0, 1600))
	defer b.release()
	errStop := errors.New("stop")
	calls := 0
	w := writerFunc(func(p []byte) (int, error) { calls++; return 0, errStop })
	if err := b.writeRange(w, 0, 1600); !errors.Is(err, errStop) {
		t.Fatalf("writeRange = %v, want the writer's error", err)
	}
	if calls != 1 {
		t.Fatalf("writeRange went on after an error: %d writes", calls)
	}
}

func TestBodyWritePastLen(t *testing.T) {
	tests := []struct {
		name   string
		n      int
		writes []int // sizes written in turn
		wantN  []int
		short  []bool // io.ErrShortWrite expected
	}{
		{"exact", 1600, []int{1600}, []int{1600}, []bool{false}},
		{"one over", 1600, []int{1601}, []int{1600}, []bool{true}},
		{"second write crosses the end", 1600, []int{1000, 700}, []int{1000, 600}, []bool{false, true}},
		{"write after full", 1600, []int{1600, 1}, []int{1600, 0}, []bool{false, true}},
		{"empty write after full", 1600, []int{1600, 0}, []int{1600, 0}, []bool{false, false}},
		{"nil body", 0, []int{0, 1}, []int{0, 0}, []bool{false, true}},
	}
	a := newArena(1 << 20)
	t.Cleanup(a.close)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := mustBody(a.newBody(tt.n))
			defer b.release()
			src := patternFor(3, 4000)
			off := 0
			for i, size := range tt.writes {
				n, err := b.Write(src[off : off+size])
				if n != tt.wantN[i] || errors.Is(err, io.ErrShortWrite) != tt.short[i] || (err != nil && !tt.short[i]) {
					t.Fatalf("write %d of %d bytes = %d, %v; want %d, short %v", i, size, n, err, tt.wantN[i], tt.short[i])
				}
				off += n
			}
			if !b.full() {
				t.Fatalf("not full")
			}
			var got bytes.Buffer
			if err := b.writeRange(&got, 0, b.Len()); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), src[:tt.n]) {
				t.Fatalf("content not what was written")
			}
		})
	}
}

func TestNilBody(t *testing.T) {
	for _, tt := range []struct {
		name string
		b    *body
	}{
		{"nil", nil},
		{"newBody(0)", mustBody(newArena(1 << 20).newBody(0))},
		{"newBody(-1)", mustBody(newArena(1 << 20).newBody(-1))},
		{"bodyOf(nil)", newArena(1 << 20).bodyOf(nil)},
		{"nil arena bodyOf(empty)", (*arena)(nil).bodyOf([]byte{})},
	} {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.b
			if b != nil {
				t.Fatalf("empty body is %p, want nil", b)
			}
			if b.Len() != 0 || !b.full() || b.cost() != 0 {
				t.Fatalf("Len %d, full %v, cost %d", b.Len(), b.full(), b.cost())
			}
			if !b.acquire() {
				t.Fatalf("acquire on the empty body failed")
			}
			before := overReleases.Load()
			b.release()
			b.release()
			if overReleases.Load() != before {
				t.Fatalf("releasing the empty body counted as an over-release")
			}
			w := &rangeChecker{}
			if err := b.writeRange(w, 0, 10); err != nil || w.calls != 0 {
				t.Fatalf("writeRange: %v, %d writes", err, w.calls)
			}
			if n, err := b.Write(nil); n != 0 || err != nil {
				t.Fatalf("Write(nil) = %d, %v", n, err)
			}
		})
	}
}

func TestBodyOfAndCost(t *testing.T) {
	a := newArena(1 << 20)
	t.Cleanup(a.close)
	tests := []struct {
		name     string
		arena    *arena
		n        int
		wantCost int64
	}{
		{"arena one byte", a, 1, minBlock},
		{"arena three blocks", a, 1600, 2048},
		{"arena chunk+1", a, 1<<16 + 1, 1<<16 + minBlock},
		{"heap small", nil, 1000, heapFactor * allocSize(1000)},
		{"heap large", nil, 100_000, heapFactor * allocSize(100_000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			used := a.stats().Used
			p := bytes.Clone(patternFor(tt.n, tt.n))
			b := tt.arena.bodyOf(p)
			if !b.full() || b.Len() != tt.n {
				t.Fatalf("bodyOf: full %v, Len %d", b.full(), b.Len())
			}
			var got bytes.Buffer
			if err := b.writeRange(&got, 0, tt.n); err != nil || !bytes.Equal(got.Bytes(), p) {
				t.Fatalf("bodyOf did not keep the bytes (%v)", err)
			}
			p[0]++ // bodyOf copies
			got.Reset()
			_ = b.writeRange(&got, 0, 1)
			p[0]--
			if got.Bytes()[0] != p[0] {
				t.Fatalf("body shares memory with bodyOf's argument")
			}
			if c := b.cost(); c != tt.wantCost {
				t.Errorf("cost = %d, want %d", c, tt.wantCost)
			}
			if tt.arena != nil {
				if d := a.stats().Used - used; d != tt.wantCost {
					t.Errorf("arena Used rose by %d, want the cost %d", d, tt.wantCost)
				}
			}
			b.release()
			if d := a.stats().Used - used; d != 0 {
				t.Errorf("arena Used %d off after release", d)
			}
		})
	}
}

// saveOverReleases lets a test release past zero on purpose: the global
// counter is restored when it ends, so the checks elsewhere that it
// stays unchanged are not disturbed.
func saveOverReleases(t *testing.T) uint64 {
	before := overReleases.Load()
	t.Cleanup(func() { overReleases.Store(before) })
	return before
}

func TestBodyRefcount(t *testing.T) {
	a := newArena(1 << 20)
	t.Cleanup(a.close)
	before := saveOverReleases(t)
	b := a.bodyOf(patternFor(1, 5000))
	cost := b.cost()
	if got := a.stats().Used; got != cost {
		t.Fatalf("Used = %d, want %d", got, cost)
	}
	for range 3 {
		if !b.acquire() {
			t.Fatalf("acquire on a live body failed")
		}
	}
	for range 3 {
		b.release()
	}
	if got := a.stats().Used; got != cost {
		t.Fatalf("Used = %d after balanced acquire/release, want %d", got, cost)
	}
	if !b.acquire() {
		t.Fatalf("acquire failed")
	}
	b.release()
	b.release() // the creator's reference: the last
	if got := a.stats().Used; got != 0 {
		t.Fatalf("Used = %d after the last release", got)
	}
	if b.spans != nil {
		t.Fatalf("spans kept after the last release")
	}
	if b.acquire() {
		t.Fatalf("acquire on a freed body succeeded")
	}
	if got := overReleases.Load(); got != before {
		t.Fatalf("overReleases rose by %d without an over-release", got-before)
	}
	b.release()
	if got := overReleases.Load() - before; got != 1 {
		t.Fatalf("over-release counted %d times, want 1", got)
	}
	if b.acquire() {
		t.Fatalf("acquire after an over-release succeeded")
	}
	if got := a.stats().Used; got != 0 {
		t.Fatalf("Used = %d after an over-release", got)
	}
}

// TestBodyConcurrentRefcount has many readers take and drop references
// while the owner holds one, then again while the owner lets go: every
// reader that got a reference reads the body intact, and the body is
// freed exactly once. Run with -race.
func TestBodyConcurrentRefcount(t *testing.T) {
	for _, ownerLetsGo := range []bool{false, true} {
		t.Run(fmt.Sprintf("owner lets go meanwhile=%v", ownerLetsGo), func(t *testing.T) {
			a := newArena(1 << 20)
			t.Cleanup(a.close)
			before := overReleases.Load()
			want := patternFor(5, 3*a.chunkSize()/2+777)
			b := a.bodyOf(want)
			const readers, rounds = 16, 200
			var wg sync.WaitGroup
			start := make(chan struct{})
			errs := make(chan error, readers)
			for range readers {
				wg.Go(func() {
					<-start
					w := &rangeChecker{want: want}
					for i := range rounds {
						if !b.acquire() {
							if !ownerLetsGo {
								errs <- errors.New("acquire failed while the owner holds a reference")
							}
							return
						}
						s := i * 997 % len(want)
						w.pos, w.bad = s, false
						err := b.writeRange(w, s, min(s+5000, len(want)))
						b.release()
						if err != nil || w.bad {
							errs <- fmt.Errorf("read [%d, %d) wrong: %v", s, min(s+5000, len(want)), err)
							return
						}
					}
				})
			}
			close(start)
			if ownerLetsGo {
				b.release()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if !ownerLetsGo {
				if got := a.stats().Used; got != b.cost() {
					t.Fatalf("Used = %d with the owner's reference, want %d", got, b.cost())
				}
				b.release()
			}
			if got := a.stats().Used; got != 0 {
				t.Fatalf("Used = %d after the final release", got)
			}
			if got := overReleases.Load(); got != before {
				t.Fatalf("overReleases rose by %d", got-before)
			}
			if b.acquire() {
				t.Fatalf("acquire after the final release succeeded")
			}
		})
	}
}

// TestGrowingBody gathers bodies of unknown length and seals them into
// the arena: the content is intact, the arena holds the blocks
// blockOrders plans for the length, and the scratch pieces are gone.
func TestGrowingBody(t *testing.T) {
	a := newArena(64 << 20) // 4 MiB chunks
	t.Cleanup(a.close)
	for _, n := range []int{1, 511, 512, 513, 4095, 4096, 4097, 7169, 10000, 100 << 10, 100<<10 + 1, 1<<20 - 3, 5 << 20} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			live := newLiveSet()
			b := a.newGrowingBody(8 << 20)
			want := patternFor(n, min(n, len(pattern)-256))
			for len(want) < n { // longer than the pattern: repeat it
				want = append(want[:len(want):len(want)], want[:min(n-len(want), len(want))]...)
			}
			fillInPieces(t, b, want)
			if b.full() {
				t.Fatal("growing body full below its limit")
			}
			sealed := mustBody(b.seal())
			if sealed == nil || sealed == b || b.scratch != nil {
				t.Fatal("seal did not move the body into the arena and drop its pieces")
			}
			b = sealed
			live.spans[0] = b.spans
			checkArena(t, a, live)
			if b.Len() != n || spanLen(b.spans) != n {
				t.Fatalf("Len %d, spans hold %d; want %d", b.Len(), spanLen(b.spans), n)
			}
			if !spansEqual(b.spans, want) {
				t.Fatal("content differs from what was written")
			}
			if used, plan := int(a.stats().Used), planBytes(a.blockOrders(n, nil)); used != plan {
				t.Errorf("arena holds %d bytes for %d, want the %d blockOrders plans", used, n, plan)
			}
			b.release()
			delete(live.spans, 0)
			checkAllFree(t, a)
		})
	}
}

// TestGrowingBodyPiecesInTheArena: a body of unknown length is gathered
// in blocks of the arena, not on the Go heap (whose collector would let
// twice their bytes stay in the process), given back when it is sealed;
// an arena with no block to give (closed here) hands out heap pieces.
func TestGrowingBodyPiecesInTheArena(t *testing.T) {
	a := newArena(64 << 20)
	t.Cleanup(a.close)
	want := bytes.Repeat(patternFor(7, 1000), 41)[:40<<10]
	b := a.newGrowingBody(8 << 20)
	fillInPieces(t, b, want)
	if len(b.scratch) != 3 {
		t.Fatalf("%d pieces for 40 KiB, want 3", len(b.scratch))
	}
	for i, p := range b.scratch {
		if p.order != pieceOrder || len(p.b) != scratchSize {
			t.Errorf("piece %d: order %d, %d bytes; want a block of the arena of order %d, %d bytes", i, p.order, len(p.b), pieceOrder, scratchSize)
		}
	}
	if got := a.stats().Used; got != 3*scratchSize {
		t.Errorf("arena holds %d bytes while 40 KiB are gathered, want its 3 pieces, %d", got, 3*scratchSize)
	}
	sealed := mustBody(b.seal())
	if !spansEqual(sealed.spans, want) {
		t.Fatal("sealed content differs from what was written")
	}
	if used, plan := int(a.stats().Used), planBytes(a.blockOrders(len(want), nil)); used != plan {
		t.Errorf("arena holds %d bytes once sealed, want the %d planned for the body alone", used, plan)
	}
	sealed.release()
	checkAllFree(t, a)

	a.close()
	b = a.newGrowingBody(8 << 20)
	fillInPieces(t, b, want[:20<<10])
	for i, p := range b.scratch {
		if p.order != -1 || len(p.b) != scratchSize {
			t.Errorf("closed arena, piece %d: order %d, %d bytes; want a heap piece (order -1) of %d", i, p.order, len(p.b), scratchSize)
		}
	}
	if got := a.stats().Used; got != 0 {
		t.Errorf("closed arena holds %d bytes for heap pieces", got)
	}
	b.release()
}

// TestGrowingBodyTooLargeToCopy: a body of unknown length with no room
// in the arena for its copy beside its pieces (here three quarters of
// max_size) is stored in its pieces themselves, not refused (a review:
// no_room once pieces moved into the arena), and they are freed once.
func TestGrowingBodyTooLargeToCopy(t *testing.T) {
	a := newArena(8 << 20) // room for 8 MiB, a sixteenth and two recording budgets
	t.Cleanup(a.close)
	want := bytes.Repeat(patternFor(3, 1000), 6<<11)[:6<<20-100]
	b := a.newGrowingBody(8 << 20)
	fillInPieces(t, b, want)
	sealed := mustBody(b.seal())
	if !spansEqual(sealed.spans, want) || sealed.Len() != len(want) {
		t.Fatal("sealed content differs from what was written")
	}
	st := a.stats()
	if st.Used != 384*scratchSize {
		t.Errorf("arena holds %d bytes, want the 384 pieces alone, %d", st.Used, 384*scratchSize)
	}
	if st.NoRoom != 0 || st.Fallbacks != 0 {
		t.Errorf("no_room %d, heap fallbacks %d; want the pieces taken over", st.NoRoom, st.Fallbacks)
	}
	if got := sealed.cost(); got != 384*scratchSize {
		t.Errorf("cost %d, want its blocks, %d", got, 384*scratchSize)
	}
	if last := sealed.spans[len(sealed.spans)-1]; len(last.b) != scratchSize-100 || cap(last.b) != len(last.b) {
		t.Errorf("last span: len %d cap %d, want both %d (a span ends where its body does)", len(last.b), cap(last.b), scratchSize-100)
	}
	before := overReleases.Load()
	sealed.release()
	checkAllFree(t, a)
	if overReleases.Load() != before {
		t.Error("a piece released twice")
	}
}

// takeEveryBlock takes every free block of a in bodies of size bytes held
// in the arena (none on the heap), and returns them.
func takeEveryBlock(a *arena, size int) []*body {
	var held []*body
	for {
		b, ok := a.newBody(size)
		if !ok {
			return held
		}
		if b.spans[0].order < 0 {
			b.release()
			return held
		}
		held = append(held, b)
	}
}

// arenaWithOneChunkFree returns an arena of a 1 MiB cache (64 KiB chunks,
// a heap allowance of 32 KiB) with one chunk free and every other block
// held, and what holds them.
func arenaWithOneChunkFree(t *testing.T) (*arena, []*body) {
	a := newArena(1 << 20)
	t.Cleanup(a.close)
	held := takeEveryBlock(a, 64<<10)
	held = append(held, takeEveryBlock(a, minBlock)...)
	held[0].release()
	return a, held[1:]
}

// TestGrowingBodyPartlyInHeapPieces: a body of unknown length whose
// pieces ran out of arena blocks (its last from the heap) and that has no
// room for a copy is stored in its arena pieces and a copy of its heap
// piece, charged to the heap's allowance, as a body of declared length is
// stored partly on the heap
// (a review: no_room once pieces moved into the arena); past the
// allowance it is refused, and every piece comes back.
func TestGrowingBodyPartlyInHeapPieces(t *testing.T) {
	for _, tc := range []struct {
		name   string
		n      int
		stored bool
	}{
		{"within the heap's allowance", 64<<10 + 10000, true},
		{"past it", 64<<10 + 40000, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, held := arenaWithOneChunkFree(t)
			want := bytes.Repeat(patternFor(5, 1000), tc.n/1000+1)[:tc.n]
			b := a.newGrowingBody(1 << 20)
			fillInPieces(t, b, want)
			if p := b.scratch[len(b.scratch)-1]; p.order != -1 || b.scratch[0].order != pieceOrder {
				t.Fatalf("pieces of orders %d..%d, want the arena's then the heap's", b.scratch[0].order, p.order)
			}
			before := overReleases.Load()
			sealed, ok := b.seal()
			heapBytes := int64(tc.n - 64<<10)
			if !tc.stored {
				if ok {
					t.Fatalf("stored with %d bytes on the heap, past its allowance of %d", heapBytes, a.heapLimit)
				}
				if st := a.stats(); st.NoRoom != 2 || st.FallbackBytes != 0 {
					t.Errorf("no_room %d (want 2: one while taking every block, one for the body), heap bytes %d", st.NoRoom, st.FallbackBytes)
				}
			} else {
				if !ok {
					t.Fatalf("not stored (no_room %d); want it in its pieces, %d bytes on the heap", a.stats().NoRoom, heapBytes)
				}
				if !spansEqual(sealed.spans, want) || sealed.Len() != tc.n {
					t.Fatal("sealed content differs from what was written")
				}
				if st := a.stats(); st.FallbackBytes != heapBytes {
					t.Errorf("heap bytes charged %d, want the heap piece's %d", st.FallbackBytes, heapBytes)
				}
				if c, least := sealed.cost(), int64(4*scratchSize)+heapFactor*heapBytes; c < least || c > least+heapFactor*2048 {
					t.Errorf("cost %d, want four blocks and the copy of the heap piece on the heap, %d and its size classes' rounding", c, least)
				}
				live := newLiveSet()
				live.spans[0] = sealed.spans
				for i, h := range held {
					live.spans[i+1] = h.spans
				}
				checkArena(t, a, live) // (an adopted span is cut to its length: cap too)
				sealed.release()
			}
			for _, h := range held {
				h.release()
			}
			checkAllFree(t, a)
			if st := a.stats(); st.FallbackBytes != 0 {
				t.Errorf("%d heap bytes still charged", st.FallbackBytes)
			}
			if overReleases.Load() != before {
				t.Error("a piece released twice")
			}
		})
	}
}

// TestGrowingBodyHeapPiecesCopiedIntoFreedBlocks: a block freed between
// the heap piece's taking and the seal (an eviction while the response
// arrived) takes the piece's copy, not the heap: within the heap's
// allowance the body costs no heap, past it the body is still stored (a
// review of the first version, which copied heap pieces to the heap).
func TestGrowingBodyHeapPiecesCopiedIntoFreedBlocks(t *testing.T) {
	for _, n := range []int{64<<10 + 10000, 64<<10 + 40000} {
		a, held := arenaWithOneChunkFree(t)
		want := bytes.Repeat(patternFor(5, 1000), n/1000+1)[:n]
		b := a.newGrowingBody(1 << 20)
		fillInPieces(t, b, want)
		if p := b.scratch[len(b.scratch)-1]; p.order != -1 {
			t.Fatalf("%d bytes: last piece in the arena, want it on the heap", n)
		}
		held[0].release() // a stored 64 KiB body is evicted
		held = held[1:]
		sealed, ok := b.seal()
		st := a.stats()
		if !ok {
			t.Errorf("%d bytes: not stored (no_room %d), though its heap pieces fit in the chunk just freed", n, st.NoRoom)
		} else {
			if !spansEqual(sealed.spans, want) {
				t.Fatalf("%d bytes: sealed content differs", n)
			}
			if st.FallbackBytes != 0 {
				t.Errorf("%d bytes: %d bytes copied to the heap while the arena had a free chunk", n, st.FallbackBytes)
			}
			sealed.release()
		}
		for _, h := range held {
			h.release()
		}
		checkAllFree(t, a)
	}
}

// TestResponsePartlyInHeapPiecesStored: the same through the handler:
// with one 64 KiB chunk free, a 74 KiB response is stored whether it
// declares its length or not.
func TestResponsePartlyInHeapPiecesStored(t *testing.T) {
	for _, declared := range []bool{true, false} {
		c := newClock()
		h := newTestHandler(t, Config{MaxSize: 1 << 20}, c)
		a := arenaOf(h)
		held := takeEveryBlock(a, 64<<10)
		held = append(held, takeEveryBlock(a, minBlock)...)
		held[0].release()
		data := bodyOf(64<<10 + 10000)
		o := newPieceOrigin(c, data, 10000, declared, 0, nil)
		target := "http://example.com/partly-on-the-heap?declared=" + strconv.FormatBool(declared)
		if w := get(t, h, o, target); w.Body.String() != string(data) {
			t.Fatalf("declared=%v: client got %d bytes, want %d", declared, w.Body.Len(), len(data))
		}
		w := get(t, h, o, target)
		if n := o.calls.Load(); n != 1 || w.Body.String() != string(data) {
			t.Errorf("declared=%v: asked again, origin calls %d (Cache-Status %q), %d bytes; want 1 call, a hit of %d", declared, n, w.Header().Get("Cache-Status"), w.Body.Len(), len(data))
		}
		for _, b := range held[1:] {
			b.release()
		}
	}
}

func TestGrowingBodyLimit(t *testing.T) {
	for _, tc := range []struct {
		name   string
		arena  *arena
		limit  int
		writes []int
		want   int // bytes accepted in all
	}{
		{"arena, within", newArena(1 << 20), 5000, []int{3000, 2000}, 5000},
		{"arena, past", newArena(1 << 20), 5000, []int{3000, 3000}, 5000},
		{"heap, past", nil, 100, []int{60, 60}, 100},
		{"tiny limit", newArena(1 << 20), 4, []int{3, 3}, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.arena != nil {
				t.Cleanup(tc.arena.close)
			}
			b := tc.arena.newGrowingBody(tc.limit)
			got := 0
			var err error
			for _, w := range tc.writes {
				var n int
				n, err = b.Write(patternFor(0, w))
				got += n
			}
			if got != tc.want {
				t.Errorf("accepted %d bytes, want %d", got, tc.want)
			}
			if tc.want < sumInts(tc.writes) && !errors.Is(err, io.ErrShortWrite) {
				t.Errorf("write past the limit: err %v, want io.ErrShortWrite", err)
			}
			b = mustBody(b.seal())
			if b.Len() != tc.want || !spansEqual(b.spans, append(patternFor(0, tc.writes[0]), patternFor(0, tc.want-tc.writes[0])...)[:tc.want]) {
				t.Errorf("sealed body of %d bytes, want %d", b.Len(), tc.want)
			}
			b.release()
			if tc.arena != nil {
				checkAllFree(t, tc.arena)
			}
		})
	}
}

func sumInts(xs []int) (s int) {
	for _, x := range xs {
		s += x
	}
	return s
}

func TestGrowingBodyEmpty(t *testing.T) {
	a := newArena(1 << 20)
	t.Cleanup(a.close)
	b := a.newGrowingBody(1000)
	if sealed := mustBody(b.seal()); sealed != nil {
		t.Errorf("an empty growing body sealed to %d bytes, want nil", sealed.Len())
	}
	if acquire := b.acquire(); acquire {
		t.Error("an empty sealed body can still be acquired: it was not released")
	}
	checkAllFree(t, a)
}

// seal ends a growing body as a stored response's does (recorder.takeBody
// without a writer): its copy in the arena, and b released.
func (b *body) seal() (*body, bool) {
	if b == nil || b.limit == 0 {
		return b, true
	}
	defer b.release()
	return b.sealed()
}
