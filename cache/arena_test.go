//go:build unix && !nommap

package cache

import (
	"bytes"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
	"unsafe"
)

// planBytes is the memory a plan from blockOrders takes.
func planBytes(orders []int8) int {
	s := 0
	for _, k := range orders {
		s += minBlock << k
	}
	return s
}

// blockOrdersSizes is the n a plan is checked for: every n up to three
// chunks and a bit for the small arena, and for the large one powers of
// two, chunk multiples and their neighbours, the bands where splitting
// turns over (7/8 and 8/9 of a power of two), and a stride through the
// rest (every n there takes seconds, minutes with -race).
func blockOrdersSizes(a *arena) []int {
	cs := a.chunkSize()
	var ns []int
	if cs <= 1<<minChunkShift {
		for n := 1; n <= 3*cs+minBlock; n++ {
			ns = append(ns, n)
		}
		return ns
	}
	for n := 1; n <= 8*minBlock; n++ {
		ns = append(ns, n)
	}
	for p := minBlock; p <= 3*cs; p <<= 1 {
		ns = append(ns, p-1, p, p+1, p*7/8, p*7/8+1, p*8/9, p*8/9+1)
	}
	for c := 1; c <= 3; c++ {
		for _, d := range []int{-minBlock - 1, -minBlock, -1, 0, 1, minBlock, minBlock + 1} {
			ns = append(ns, c*cs+d)
		}
	}
	for n := 1; n <= 3*cs; n += 61 {
		ns = append(ns, n)
	}
	return ns
}

// TestBlockOrders checks every plan: it holds n, whole chunks come
// first, at most three blocks follow them, and the rounding waste is
// bounded.
//
// The bound the code gives is waste <= max(minBlock-1, n/7), not n/8:
// below a few KiB the minimum block dominates (513 bytes take 1024), and
// for every power of two S from 1 KiB to the chunk size, n in (7S/8,
// 8S/9) is planned as S/2+S/4+S/4 (S in all), which wastes up to S/8-1,
// about n/7 (e.g. n=7169: 4096+2048+2048, waste 1023 > 7169/8 = 896).
func TestBlockOrders(t *testing.T) {
	for _, maxCost := range []int64{0, 1 << 30} {
		a := newArena(maxCost)
		cs := a.chunkSize()
		t.Run(fmt.Sprintf("chunk=%d", cs), func(t *testing.T) {
			var buf [16]int8
			over8 := 0
			for _, n := range blockOrdersSizes(a) {
				orders := a.blockOrders(n, buf[:0])
				got := planBytes(orders)
				if got < n {
					t.Fatalf("n=%d: plan %v holds %d bytes", n, orders, got)
				}
				whole := n / cs
				if len(orders) < whole {
					t.Fatalf("n=%d: plan %v has fewer than %d whole chunks", n, orders, whole)
				}
				for i, k := range orders[:whole] {
					if k != a.topOrder() {
						t.Fatalf("n=%d: plan %v: block %d is order %d, want a whole chunk (%d) first", n, orders, i, k, a.topOrder())
					}
				}
				if rest := orders[whole:]; len(rest) > 3 {
					t.Fatalf("n=%d: plan %v has %d blocks after the whole chunks, want at most 3", n, orders, len(rest))
				}
				for _, k := range orders {
					if k < 0 || k > a.topOrder() {
						t.Fatalf("n=%d: plan %v has order %d outside [0, %d]", n, orders, k, a.topOrder())
					}
				}
				waste := got - n
				if waste > max(minBlock-1, n/7) {
					t.Fatalf("n=%d: plan %v wastes %d bytes, more than max(%d, n/7=%d)", n, orders, waste, minBlock-1, n/7)
				}
				if n > minBlock && waste > n/8 && waste >= minBlock {
					over8++
				}
			}
			t.Logf("%d sizes wasted more than n/8 and at least minBlock", over8)
		})
	}
}

// TestBlockOrdersSplitOnlyToSave checks that a plan of several blocks
// for the part below a chunk takes less memory than the one block that
// would hold it: splitting costs a span and fragments the arena, and is
// worth it only for the memory it saves.
func TestBlockOrdersSplitOnlyToSave(t *testing.T) {
	a := newArena(1 << 30)
	var buf [16]int8
	for n := 1; n < a.chunkSize(); n++ {
		orders := a.blockOrders(n, buf[:0])
		if one := minBlock << ceilOrder(n); len(orders) > 1 && planBytes(orders) >= one {
			t.Fatalf("n=%d: plan %v takes %d bytes, one block of %d would do", n, orders, planBytes(orders), one)
		}
	}
}

func TestArenaCeilOrder(t *testing.T) {
	tests := []struct {
		name string
		n    int
		want int8
	}{
		{"one byte", 1, 0},
		{"min block", minBlock, 0},
		{"min block+1", minBlock + 1, 1},
		{"1 KiB", 1 << 10, 1},
		{"1 KiB+1", 1<<10 + 1, 2},
		{"64 KiB-1", 64<<10 - 1, 7},
		{"64 KiB", 64 << 10, 7},
		{"4 MiB", 4 << 20, 13},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ceilOrder(tt.n); got != tt.want {
				t.Errorf("ceilOrder(%d) = %d, want %d", tt.n, got, tt.want)
			}
		})
	}
}

func TestNewArenaGeometry(t *testing.T) {
	tests := []struct {
		name       string
		maxCost    int64
		wantShift  uint
		wantChunks int
	}{
		{"zero", 0, minChunkShift, 1},
		{"negative", -1, minChunkShift, 1},
		// max_size, a sixteenth of slack and two eighths for bodies being
		// recorded: 21 sixteenths.
		{"1 MiB", 1 << 20, 16, 21},
		{"4 MiB", 4 << 20, 18, 21},
		{"64 MiB", 64 << 20, 22, 21},
		{"1 GiB", 1 << 30, 22, 336},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newArena(tt.maxCost)
			if a.chunkShift != tt.wantShift || a.maxChunks != tt.wantChunks {
				t.Errorf("newArena(%d): chunk shift %d, %d chunks; want %d, %d", tt.maxCost, a.chunkShift, a.maxChunks, tt.wantShift, tt.wantChunks)
			}
			if len(a.head) != int(a.topOrder())+1 {
				t.Errorf("newArena(%d): %d free lists, want %d", tt.maxCost, len(a.head), a.topOrder()+1)
			}
			if st := a.stats(); st.Mapped != 0 {
				t.Errorf("newArena(%d) mapped %d bytes before any alloc", tt.maxCost, st.Mapped)
			}
		})
	}
}

// addr is the address of a span's first byte.
// alloc returns spans holding n bytes in all; it panics when the arena
// has no room (see appendAlloc).
func (a *arena) alloc(n int) []span {
	spans, ok := a.appendAlloc(nil, n, true)
	if !ok {
		panic("arena: no room")
	}
	return spans
}

// arenaRun drives an arena through allocations and frees, filling each
// allocation with its own pattern and checking the arena's invariants
// after every step.
type arenaRun struct {
	a     *arena
	live  *liveSet
	sizes map[int]int
	ids   []int // live allocations
}

func newArenaRun(a *arena) *arenaRun {
	return &arenaRun{a: a, live: newLiveSet(), sizes: map[int]int{}}
}

// alloc allocates n bytes as allocation id, unless the arena has no room
// for them, which must then leave it as it was.
func (r *arenaRun) alloc(t *testing.T, id, n int) {
	t.Helper()
	before := r.a.stats()
	ss, ok := r.a.appendAlloc(nil, n, true)
	if !ok {
		if st := r.a.stats(); st.Used != before.Used || st.FallbackBytes != before.FallbackBytes || st.NoRoom != before.NoRoom+1 {
			t.Fatalf("op %d: alloc(%d) found no room but changed the arena: %+v, before %+v", id, n, st, before)
		}
		checkArena(t, r.a, r.live)
		return
	}
	if got := spanLen(ss); got != n {
		t.Fatalf("op %d: alloc(%d) holds %d bytes", id, n, got)
	}
	fillSpans(ss, patternFor(id, n))
	r.live.spans[id], r.sizes[id] = ss, n
	r.ids = append(r.ids, id)
	checkArena(t, r.a, r.live)
}

// free frees the j-th live allocation, checking first that its content
// is intact.
func (r *arenaRun) free(t *testing.T, op, j int) {
	t.Helper()
	id := r.ids[j]
	if !spansEqual(r.live.spans[id], patternFor(id, r.sizes[id])) {
		t.Fatalf("op %d: alloc %d (%d bytes) changed", op, id, r.sizes[id])
	}
	r.a.free(r.live.spans[id])
	delete(r.live.spans, id)
	r.ids[j] = r.ids[len(r.ids)-1]
	r.ids = r.ids[:len(r.ids)-1]
	checkArena(t, r.a, r.live)
}

// freeAll frees every live allocation.
func (r *arenaRun) freeAll() {
	for _, id := range r.ids {
		r.a.free(r.live.spans[id])
	}
	r.ids = nil
}

func addr(s span) uintptr { return uintptr(unsafe.Pointer(unsafe.SliceData(s.b))) }

// liveSet tracks the spans an arena has handed out and not taken back.
type liveSet struct {
	spans map[int][]span // by allocation id
}

func newLiveSet() *liveSet { return &liveSet{spans: map[int][]span{}} }

// keptWholeWalkLocked counts afresh what a.keptWhole keeps count of.
func (a *arena) keptWholeWalkLocked() int64 {
	n := int64(0)
	for k := a.pageOrder; k <= a.topOrder(); k++ {
		for b := a.head[k]; b >= 0; b = a.next[b] {
			n += a.residentBytesLocked(b, k)
		}
	}
	return n
}

// checkGivenLocked checks that in each list of whole pages the blocks
// with a page resident come before those without, firstGiven the first
// of these, and the running count of what trim may give back.
func checkGivenLocked(t *testing.T, a *arena) {
	t.Helper()
	for k := a.pageOrder; k <= a.topOrder(); k++ {
		first := int32(-1)
		for b := a.head[k]; b >= 0; b = a.next[b] {
			resident := a.residentPagesLocked(b, k) > 0
			if first < 0 && !resident {
				first = b
			}
			if first >= 0 && resident {
				t.Fatalf("order %d: block %d has resident pages after block %d, given back", k, b, first)
			}
		}
		if a.firstGiven[k] != first {
			t.Fatalf("order %d: firstGiven %d, want %d", k, a.firstGiven[k], first)
		}
	}
	if got := a.keptWholeWalkLocked(); a.keptWhole != got {
		t.Fatalf("keptWhole %d, want %d", a.keptWhole, got)
	}
}

// checkArena checks the arena's invariants against the live spans: used
// is the sum of live blocks, free bytes per chunk add up to mapped-used,
// the free lists are well formed, buddy-aligned and merged, arena spans
// sit where their block number says, and no two blocks (free or live)
// and no two live spans overlap.
func checkArena(t *testing.T, a *arena, live *liveSet) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	checkGivenLocked(t, a)

	type iv struct {
		lo, hi uintptr
		what   blockDesc
	}
	var ivs []iv
	var usedBlocks, heapBytes int64
	owner := make([]int8, len(a.freeOrder)) // per min block: 0 none, 1 live, 2 free
	mark := func(b int32, k int8, v int8, what blockDesc) {
		for i := b; i < b+1<<k; i++ {
			if int(i) >= len(owner) {
				t.Fatalf("%s: block %d order %d is past the %d mapped blocks", what, b, k, len(owner))
			}
			if owner[i] != 0 {
				t.Fatalf("%s: block %d order %d overlaps another block at %d", what, b, k, i)
			}
			owner[i] = v
		}
	}
	for id, ss := range live.spans {
		for i, s := range ss {
			what := blockDesc{id: id, n: i}
			if s.order < 0 {
				heapBytes += int64(len(s.b))
			} else {
				size := minBlock << s.order
				usedBlocks += int64(size)
				if len(s.b) > size || cap(s.b) != len(s.b) {
					t.Fatalf("%s: len %d cap %d in a block of %d", what, len(s.b), cap(s.b), size)
				}
				if s.block&(1<<s.order-1) != 0 {
					t.Fatalf("%s: block %d not aligned to its order %d", what, s.block, s.order)
				}
				mark(s.block, s.order, 1, what)
				c := a.chunks[int(s.block)>>a.blockShift()]
				want := uintptr(unsafe.Pointer(&c[(int(s.block)&a.blockMask())<<minBlockShift]))
				if addr(s) != want {
					t.Fatalf("%s: at %#x, block %d is at %#x", what, addr(s), s.block, want)
				}
			}
			if len(s.b) > 0 {
				ivs = append(ivs, iv{addr(s), addr(s) + uintptr(len(s.b)), what})
			}
		}
	}
	if a.used != usedBlocks {
		t.Fatalf("used = %d, live blocks hold %d", a.used, usedBlocks)
	}
	if fb := a.fallbackBytes.Load(); fb != heapBytes {
		t.Fatalf("fallbackBytes = %d, live heap spans hold %d", fb, heapBytes)
	}
	mapped := int64(len(a.chunks)) << a.chunkShift
	var listedFree int64
	listed := 0
	for k := range a.head {
		prev := int32(-1)
		for b := a.head[k]; b >= 0; b = a.next[b] {
			what := blockDesc{free: true, id: int(b), n: k}
			if a.freeOrder[b] != int8(k) {
				t.Fatalf("%s: freeOrder %d", what, a.freeOrder[b])
			}
			if a.prev[b] != prev {
				t.Fatalf("%s: prev %d, want %d", what, a.prev[b], prev)
			}
			if b&(1<<k-1) != 0 {
				t.Fatalf("%s: not aligned to its order", what)
			}
			if k < int(a.topOrder()) && a.freeOrder[b^1<<k] == int8(k) {
				t.Fatalf("%s: its buddy is free at the same order, not merged", what)
			}
			mark(b, int8(k), 2, what)
			listedFree += minBlock << k
			listed++
			prev = b
		}
		if a.tail[k] != prev {
			t.Fatalf("free list of order %d ends at %d, its tail is %d", k, prev, a.tail[k])
		}
	}
	for b, k := range a.freeOrder {
		if k >= 0 {
			listed--
		}
		if k >= 0 && owner[b] != 2 {
			t.Fatalf("freeOrder[%d] = %d but the block is on no free list", b, k)
		}
	}
	if listed != 0 {
		t.Fatalf("free lists and freeOrder disagree by %d blocks", listed)
	}
	if listedFree != mapped-a.used {
		t.Fatalf("free lists hold %d bytes, mapped-used = %d", listedFree, mapped-a.used)
	}
	for i, o := range owner {
		if o == 0 {
			t.Fatalf("min block %d is neither live nor free: leaked", i)
		}
	}
	checkResident(t, a, owner)

	slices.SortFunc(ivs, func(x, y iv) int {
		switch {
		case x.lo < y.lo:
			return -1
		case x.lo > y.lo:
			return 1
		}
		return 0
	})
	for i := 1; i < len(ivs); i++ {
		if ivs[i].lo < ivs[i-1].hi {
			t.Fatalf("%s [%#x,%#x) overlaps %s [%#x,%#x)", ivs[i].what, ivs[i].lo, ivs[i].hi, ivs[i-1].what, ivs[i-1].lo, ivs[i-1].hi)
		}
	}
}

// checkResident checks the arena's page accounting against its blocks
// (owner: per minimum block, 1 live, 2 free): resident is what
// residentBits says, every page of a live block is marked, and wholly
// free pages kept resident hold at most slack bytes.
func checkResident(t *testing.T, a *arena, owner []int8) {
	t.Helper()
	perPage := 1 << a.pageOrder
	var marked, keptFree int64
	for p := 0; p*perPage < len(owner); p++ {
		isMarked := a.residentBits[p/64]&(1<<(p%64)) != 0
		live := slices.Contains(owner[p*perPage:(p+1)*perPage], 1)
		if isMarked {
			marked += a.pageBytes()
			if !live {
				keptFree += a.pageBytes()
			}
		} else if live {
			t.Fatalf("page %d holds a live block but is not marked resident", p)
		}
	}
	if marked != a.resident {
		t.Fatalf("resident = %d, its bits mark %d bytes", a.resident, marked)
	}
	if !a.closed && keptFree > a.slack {
		t.Fatalf("%d bytes of wholly free pages kept resident, slack %d", keptFree, a.slack)
	}
}

// blockDesc names what checkArena is looking at in a failure message: a
// live allocation's span, or a free block. It is formatted only when a
// check fails, not for every span on every step of a fuzz input.
type blockDesc struct {
	free  bool
	id, n int // allocation id and span index, or free block and order
}

func (d blockDesc) String() string {
	if d.free {
		return fmt.Sprintf("free block %d order %d", d.id, d.n)
	}
	return fmt.Sprintf("alloc %d span %d", d.id, d.n)
}

// checkAllFree checks that an arena with nothing live has merged every
// block back into whole chunks.
func checkAllFree(t *testing.T, a *arena) {
	t.Helper()
	if st := a.stats(); st.Used != 0 {
		t.Fatalf("Used = %d after freeing everything", st.Used)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for k := range a.topOrder() {
		if a.head[k] >= 0 {
			t.Fatalf("free list of order %d not empty (block %d): buddies not merged", k, a.head[k])
		}
	}
	n := 0
	for b := a.head[a.topOrder()]; b >= 0; b = a.next[b] {
		if int(b)&a.blockMask() != 0 {
			t.Fatalf("whole-chunk free block %d is not at a chunk start", b)
		}
		n++
	}
	if n != len(a.chunks) {
		t.Fatalf("%d whole chunks free, %d mapped", n, len(a.chunks))
	}
	for b, k := range a.freeOrder {
		if k >= 0 && k != a.topOrder() {
			t.Fatalf("freeOrder[%d] = %d, want only whole chunks", b, k)
		}
	}
}

// pattern is filler whose bytes differ from their neighbours, so a body
// filled from pattern[id%251:] is told apart from any other.
var pattern = func() []byte {
	p := make([]byte, 1<<20+256)
	for i := range p {
		p[i] = byte(i*7 + i>>8 + i>>16)
	}
	return p
}()

func patternFor(id, n int) []byte { o := id % 251; return pattern[o : o+n] }

// spansEqual reports whether the spans, in order, hold want.
func spansEqual(ss []span, want []byte) bool {
	for _, s := range ss {
		if len(s.b) > len(want) || !bytes.Equal(s.b, want[:len(s.b)]) {
			return false
		}
		want = want[len(s.b):]
	}
	return len(want) == 0
}

func spanLen(ss []span) int {
	n := 0
	for _, s := range ss {
		n += len(s.b)
	}
	return n
}

func TestArenaAllocFree(t *testing.T) {
	a := newArena(1 << 20) // 64 KiB chunks, 17 of them
	t.Cleanup(a.close)
	cs := a.chunkSize()
	sizes := []struct {
		name string
		n    int
	}{
		{"1 B", 1},
		{"min block-1", minBlock - 1},
		{"min block", minBlock},
		{"min block+1", minBlock + 1},
		{"1000 B", 1000},
		{"4 KiB", 4 << 10},
		{"three blocks", 7000},
		{"useless split", 7169},
		{"chunk-1", cs - 1},
		{"chunk", cs},
		{"chunk+1", cs + 1},
		{"2 chunks", 2 * cs},
		{"2 chunks and odd", 2*cs + 12345},
		{"1 B again", 1},
		{"1000 B again", 1000},
	}
	live := newLiveSet()
	var buf [16]int8
	for i, sz := range sizes {
		t.Run(sz.name, func(t *testing.T) {
			ss := a.alloc(sz.n)
			if got := spanLen(ss); got != sz.n {
				t.Fatalf("alloc(%d): spans hold %d bytes", sz.n, got)
			}
			plan := a.blockOrders(sz.n, buf[:0])
			if len(ss) != len(plan) {
				t.Fatalf("alloc(%d): %d spans, plan %v", sz.n, len(ss), plan)
			}
			for j, s := range ss {
				if s.order != plan[j] {
					t.Fatalf("alloc(%d): span %d order %d, plan %v", sz.n, j, s.order, plan)
				}
			}
			if got, want := spanCost(ss), int64(planBytes(plan)); got != want {
				t.Errorf("spanCost = %d, want %d", got, want)
			}
			fillSpans(ss, patternFor(i, sz.n))
			live.spans[i] = ss
			checkArena(t, a, live)
		})
	}
	if st := a.stats(); st.Fallbacks != 0 || st.FallbackBytes != 0 {
		t.Fatalf("arena with room fell back to the heap: %+v", st)
	}
	for i, sz := range sizes {
		if !spansEqual(live.spans[i], patternFor(i, sz.n)) {
			t.Fatalf("%s: content changed by writes to other allocations", sz.name)
		}
	}
	// Free in an order unrelated to allocation, so buddies come back in
	// both orders.
	for _, i := range []int{3, 0, 14, 7, 1, 12, 9, 2, 13, 4, 11, 6, 10, 5, 8} {
		a.free(live.spans[i])
		delete(live.spans, i)
		checkArena(t, a, live)
	}
	checkAllFree(t, a)

	mapped := len(a.chunks)
	ss := a.alloc(cs)
	if len(ss) != 1 || ss[0].order != a.topOrder() {
		t.Fatalf("alloc(chunk) after freeing all: spans %+v", ss)
	}
	if len(a.chunks) != mapped {
		t.Fatalf("alloc(chunk) mapped a new chunk: %d chunks, had %d", len(a.chunks), mapped)
	}
	a.free(ss)
	checkAllFree(t, a)
}

// TestArenaRandom runs a fixed random sequence of allocations and frees
// of mixed sizes on a small arena, which fills it now and then, and
// checks the arena's invariants and every live body's content after
// each step.
func TestArenaRandom(t *testing.T) {
	ops := 3000
	if testing.Short() {
		ops = 1000
	}
	rng := rand.New(rand.NewPCG(1, 2))
	a := newArena(1 << 20)
	t.Cleanup(a.close)
	randSize := func() int {
		switch rng.IntN(4) {
		case 0:
			return 1 + rng.IntN(2*minBlock)
		case 1:
			return 1 + rng.IntN(16<<10)
		case 2:
			return 1 + rng.IntN(a.chunkSize())
		default:
			return 1 + rng.IntN(3*a.chunkSize())
		}
	}
	run := newArenaRun(a)
	for op := range ops {
		if n := len(run.ids); n > 0 && (n >= 40 || rng.IntN(5) < 2) {
			run.free(t, op, rng.IntN(n))
		} else {
			run.alloc(t, op, randSize())
		}
	}
	st := a.stats()
	t.Logf("after %d ops: %+v, %d live", ops, st, len(run.ids))
	if st.Fallbacks == 0 || st.NoRoom == 0 {
		t.Errorf("the run never filled the arena past its heap allowance; fallbacks or their limit untested")
	}
	run.freeAll()
	checkAllFree(t, a)
	if st := a.stats(); st.FallbackBytes != 0 {
		t.Errorf("FallbackBytes = %d after freeing everything", st.FallbackBytes)
	}
}

func TestArenaFullFallsBackToHeap(t *testing.T) {
	halves := []int{1 << 15, 1 << 14, 1 << 13, 1 << 12, 1 << 11, 1 << 10} // all but one min block
	mins := make([]int, 1<<16/minBlock)
	var everyOther []int
	for i := range mins {
		mins[i] = minBlock
		if i%2 == 0 {
			everyOther = append(everyOther, i)
		}
	}
	tests := []struct {
		name      string
		fill      []int  // allocations before the one under test
		holes     []int  // indexes in fill freed again before it
		n         int    // the allocation under test
		wantHeap  []bool // per span: on the heap
		wantBytes int64  // its bytes on the heap
	}{
		{"empty arena", nil, nil, 1000, []bool{false}, 0},
		{"full arena small", []int{1 << 16}, nil, 1000, []bool{true}, 1000},
		{"full arena chunk+1", []int{1 << 16}, nil, 1<<16 + 1, []bool{true, true}, 1<<16 + 1},
		{"room for one chunk", nil, nil, 1<<16 + 1, []bool{false, true}, 1},
		{"room for the small part", halves, nil, 1<<16 + 1, []bool{true, false}, 1 << 16},
		{"fragmented: half free in min blocks", mins, everyOther, 1 << 10, []bool{true}, 1 << 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newArena(0) // one 64 KiB chunk
			t.Cleanup(a.close)
			if a.chunkSize() != 1<<16 || a.maxChunks != 1 {
				t.Fatalf("setup: %d chunks of %d", a.maxChunks, a.chunkSize())
			}
			a.heapLimit = 1 << 30 // where spans go; the limit is TestArenaHeapAllowance's
			fill := map[int][]span{}
			for i, n := range tt.fill {
				fill[i] = a.alloc(n)
			}
			for _, i := range tt.holes {
				a.free(fill[i])
				delete(fill, i)
			}
			before := a.stats()
			ss := a.alloc(tt.n)
			if len(ss) == 0 || spanLen(ss) != tt.n {
				t.Fatalf("alloc(%d) = %d spans holding %d bytes", tt.n, len(ss), spanLen(ss))
			}
			if len(ss) != len(tt.wantHeap) {
				t.Fatalf("alloc(%d) = %d spans, want %d", tt.n, len(ss), len(tt.wantHeap))
			}
			heaps := 0
			for i, s := range ss {
				if got := s.order < 0; got != tt.wantHeap[i] {
					t.Errorf("span %d on heap = %v, want %v (order %d)", i, got, tt.wantHeap[i], s.order)
				}
				if s.order < 0 {
					heaps++
					if s.block != 0 || s.b == nil {
						t.Errorf("heap span %d: block %d, nil %v", i, s.block, s.b == nil)
					}
				}
			}
			st := a.stats()
			if got := st.Fallbacks - before.Fallbacks; got != uint64(heaps) {
				t.Errorf("Fallbacks rose by %d, want %d", got, heaps)
			}
			if got := st.FallbackBytes - before.FallbackBytes; got != tt.wantBytes {
				t.Errorf("FallbackBytes rose by %d, want %d", got, tt.wantBytes)
			}
			if st.Mapped != 1<<16 {
				t.Errorf("Mapped = %d, want one chunk", st.Mapped)
			}
			var wantCost int64
			for _, s := range ss {
				if s.order < 0 {
					wantCost += heapFactor * allocSize(int64(len(s.b)))
				} else {
					wantCost += minBlock << s.order
				}
			}
			if got := spanCost(ss); got != wantCost {
				t.Errorf("spanCost = %d, want %d", got, wantCost)
			}
			fillSpans(ss, patternFor(7, tt.n))
			if !spansEqual(ss, patternFor(7, tt.n)) {
				t.Errorf("content not kept")
			}
			live := newLiveSet()
			maps.Copy(live.spans, fill)
			live.spans[-1] = ss
			checkArena(t, a, live)

			a.free(ss)
			if got := a.stats().FallbackBytes; got != 0 {
				t.Errorf("FallbackBytes = %d after free, want 0", got)
			}
			for _, f := range fill {
				a.free(f)
			}
			checkAllFree(t, a)
			if got := a.stats().Fallbacks; got != st.Fallbacks {
				t.Errorf("Fallbacks = %d after free, want it kept at %d (a count of events)", got, st.Fallbacks)
			}
		})
	}
}

func TestArenaClose(t *testing.T) {
	t.Run("live blocks keep it mapped", func(t *testing.T) {
		a := newArena(1 << 20)
		s1 := a.alloc(1000)
		s2 := a.alloc(3 * a.chunkSize() / 2)
		fillSpans(s1, patternFor(1, 1000))
		fillSpans(s2, patternFor(2, spanLen(s2)))
		mapped := a.stats().Mapped
		a.close()
		if got := a.stats().Mapped; got != mapped {
			t.Fatalf("close with live blocks: Mapped %d, was %d", got, mapped)
		}
		if !spansEqual(s1, patternFor(1, 1000)) || !spansEqual(s2, patternFor(2, spanLen(s2))) {
			t.Fatalf("content changed by close")
		}
		after := a.alloc(2000)
		if len(after) != 1 || after[0].order != -1 || len(after[0].b) != 2000 {
			t.Fatalf("alloc after close: %+v, want one heap span", after)
		}
		a.free(s1)
		if len(a.chunks) == 0 {
			t.Fatalf("unmapped while a block is live")
		}
		if !spansEqual(s2, patternFor(2, spanLen(s2))) {
			t.Fatalf("content changed by freeing another block after close")
		}
		a.free(s2)
		if len(a.chunks) != 0 || a.stats().Mapped != 0 {
			t.Fatalf("last free after close left %d chunks mapped", len(a.chunks))
		}
		if st := a.stats(); st.Used != 0 || st.FallbackBytes != 2000 {
			t.Fatalf("stats after last free: %+v", st)
		}
		a.free(after)
		if st := a.stats(); st.FallbackBytes != 0 {
			t.Fatalf("FallbackBytes = %d after freeing the heap span", st.FallbackBytes)
		}
	})
	t.Run("live blocks keep no free pages resident", func(t *testing.T) {
		a := newArena(64 << 20)
		var freed [][]span
		held := a.alloc(100 << 10)
		for range 40 {
			ss := a.alloc(100 << 10)
			fillSpans(ss, patternFor(3, spanLen(ss)))
			freed = append(freed, ss)
		}
		for _, ss := range freed {
			a.free(ss)
		}
		if st := a.stats(); st.Resident <= st.Used+a.pageBytes() {
			t.Fatalf("setup: resident %d, used %d: no free pages kept", st.Resident, st.Used)
		}
		a.close()
		st := a.stats()
		if st.Resident > st.Used+2*a.pageBytes() {
			t.Errorf("after close, with a block still read: resident %d for %d used; want the free pages given back", st.Resident, st.Used)
		}
		a.free(held)
		if st := a.stats(); st.Mapped != 0 {
			t.Errorf("last free after close left %d mapped", st.Mapped)
		}
	})
	t.Run("nothing live unmaps at once", func(t *testing.T) {
		a := newArena(1 << 20)
		a.free(a.alloc(5000))
		if len(a.chunks) == 0 {
			t.Fatalf("setup: nothing mapped")
		}
		a.close()
		if len(a.chunks) != 0 || a.stats().Mapped != 0 {
			t.Fatalf("close with nothing live left %d chunks mapped", len(a.chunks))
		}
		a.close() // a second close is harmless
	})
	t.Run("never used", func(t *testing.T) {
		a := newArena(1 << 20)
		a.close()
		if st := a.stats(); st.Mapped != 0 {
			t.Fatalf("Mapped = %d", st.Mapped)
		}
	})
	t.Run("alloc after close goes to the heap", func(t *testing.T) {
		a := newArena(1 << 20)
		a.close()
		// Past the heap allowance too: only responses being recorded when
		// the store closed allocate there, and their waiters need them.
		for _, n := range []int{1, 1000, a.chunkSize() + 1, 2 * int(a.heapLimit)} {
			ss := a.alloc(n)
			if spanLen(ss) != n {
				t.Fatalf("alloc(%d) after close holds %d", n, spanLen(ss))
			}
			for _, s := range ss {
				if s.order != -1 {
					t.Fatalf("alloc(%d) after close: span of order %d", n, s.order)
				}
			}
			a.free(ss)
		}
		if st := a.stats(); st.Mapped != 0 || st.Fallbacks == 0 || st.FallbackBytes != 0 {
			t.Fatalf("stats: %+v", st)
		}
	})
}

// TestArenaHeapAllowance: once every chunk is taken (by bodies still
// being read, say), bodies go to the heap only up to a thirty-second of
// max_size; past that nothing is allocated, and a body of several spans
// gives back those it had.
func TestArenaHeapAllowance(t *testing.T) {
	a := newArena(1 << 20) // 64 KiB chunks; 32 KiB of heap
	t.Cleanup(a.close)
	if a.heapLimit != 32<<10 {
		t.Fatalf("heapLimit = %d, want 32 KiB", a.heapLimit)
	}
	var chunks [][]span
	for range a.maxChunks {
		chunks = append(chunks, a.alloc(a.chunkSize()))
	}
	full := a.stats()
	heap := [][]span{a.alloc(16 << 10), a.alloc(16 << 10)}
	if st := a.stats(); st.FallbackBytes != 32<<10 || st.Used != full.Used {
		t.Fatalf("two 16 KiB bodies in a full arena: %+v", st)
	}
	if _, ok := a.appendAlloc(nil, 1, true); ok {
		t.Fatal("a byte past the heap allowance was allocated")
	}
	a.free(chunks[0])
	before := a.stats()
	if _, ok := a.appendAlloc(nil, a.chunkSize()+minBlock, true); ok {
		t.Fatal("a chunk and a block past the heap allowance were allocated")
	}
	if st := a.stats(); st.Used != before.Used || st.FallbackBytes != before.FallbackBytes || st.NoRoom != 2 {
		t.Fatalf("a refused allocation kept what it had taken: %+v, before %+v", st, before)
	}
	if b, ok := a.newBody(a.chunkSize()); !ok || b.spans[0].order < 0 {
		t.Fatal("the freed chunk was not given to the next body")
	} else {
		b.release()
	}
	for _, ss := range heap {
		a.free(ss)
	}
	if ss, ok := a.appendAlloc(nil, 30<<10, true); !ok {
		t.Fatal("the heap allowance freed is not available again")
	} else {
		a.free(ss)
	}
	for _, ss := range chunks[1:] {
		a.free(ss)
	}
	checkAllFree(t, a)
}

func BenchmarkArenaAllocFree(b *testing.B) {
	for _, n := range []int{1 << 10, 100 << 10} {
		// empty: every free merges the chunk whole again, which gives
		// its pages back (madvise). busy: another block stays live in
		// the chunk, the steady state of a cache.
		for _, busy := range []bool{false, true} {
			name := fmt.Sprintf("%dKiB/empty", n>>10)
			if busy {
				name = fmt.Sprintf("%dKiB/busy", n>>10)
			}
			b.Run(name, func(b *testing.B) {
				a := newArena(64 << 20)
				defer a.close()
				if busy {
					defer a.free(a.alloc(minBlock))
				}
				b.ReportAllocs()
				for b.Loop() {
					a.free(a.alloc(n))
				}
			})
		}
	}
}

// FuzzArenaOps runs a sequence of allocations and frees read from the
// input (three bytes per operation: kind (bit 0: free; bits 1-3: size
// shift), then a size or an index) on a
// small arena, checking the allocator's invariants and every live
// allocation's content after each step, and that everything merges back
// at the end.
func FuzzArenaOps(f *testing.F) {
	f.Add([]byte{0, 0, 10, 0, 1, 0, 1, 0, 0})
	f.Add([]byte{0, 255, 255, 0, 128, 0, 0, 16, 0, 1, 1, 0, 0, 1, 1, 1, 0, 0})
	f.Add(bytes.Repeat([]byte{0, 200, 1}, 40))
	f.Fuzz(func(t *testing.T, ops []byte) {
		// 32 operations are enough to fill and fragment the 1 MiB arena
		// (an unshifted allocation averages ~96 KiB); longer inputs
		// mostly slow every exec down (each step fills its bytes and
		// re-checks the whole arena), and with it the minimisation of
		// each new input, during which the fuzzer explores nothing.
		if len(ops) > 3*32 {
			ops = ops[:3*32]
		}
		a := newArena(1 << 20) // 64 KiB chunks, 17 of them
		defer a.close()
		run := newArenaRun(a)
		for op := 0; op+2 < len(ops); op += 3 {
			arg := int(ops[op+1])<<8 | int(ops[op+2])
			if ops[op]%2 == 1 && len(run.ids) > 0 {
				run.free(t, op, arg%len(run.ids))
			} else {
				// Up to 3 chunks, divided by 2^(bits 1-3 of the kind
				// byte): small sizes, which split and merge deep in
				// the buddy tree, are as likely as big ones, and an
				// exec touches (page-faults and fills) fewer bytes.
				run.alloc(t, op, 1+arg*3>>(ops[op]>>1&7))
			}
		}
		run.freeAll()
		checkAllFree(t, a)
	})
}

// allocFilled takes count bodies of size bytes from a's blocks (none on
// the heap), each written with a pattern, and returns them.
func allocFilled(t *testing.T, a *arena, count, size int) [][]span {
	t.Helper()
	var held [][]span
	for i := range count {
		ss, ok := a.appendAlloc(nil, size, false)
		if !ok {
			t.Fatalf("no room in the arena for body %d of %d bytes", i, size)
		}
		fillSpans(ss, patternFor(i, size))
		held = append(held, ss)
	}
	return held
}

// TestArenaTrimScheduled: freeing blocks that leave free pages kept over
// the floor schedules trims, which give them back without another call
// into the arena; a trim after close does nothing.
func TestArenaTrimScheduled(t *testing.T) {
	a := newArena(16 << 20) // 1 MiB chunks, 2 MiB of slack, a floor of 256 KiB
	a.trimEvery = 10 * time.Millisecond
	t.Cleanup(a.close)
	for _, ss := range allocFilled(t, a, 4, 256<<10) {
		a.free(ss) // kept: 1 MiB, under the slack
	}
	st := a.stats()
	if kept := st.Resident - st.Used; kept != 1<<20 {
		t.Fatalf("%d bytes of free pages kept once freed, want the 1 MiB just freed", kept)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		st = a.stats()
		if st.Resident-st.Used <= a.trimFloor() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d bytes of free pages still kept 10 s later, want at most the floor, %d", st.Resident-st.Used, a.trimFloor())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st.Released < 1<<20-uint64(a.trimFloor()) {
		t.Errorf("released %d bytes, want at least what was over the floor, %d", st.Released, 1<<20-a.trimFloor())
	}
	a.close()
	a.trim() // unmapped: must not touch the chunks
	if st := a.stats(); st.Mapped != 0 {
		t.Errorf("closed and empty arena maps %d bytes", st.Mapped)
	}
}

// TestArenaTrimStopsWhenNothingToGiveBack: free space in pages still in
// use (here three of every four 1 KiB bodies gone, as after a purge)
// counts in resident-used but cannot be given back: trims give back only
// whole free pages, half of those over the floor after allocations, and
// stop scheduling themselves once what they may give back is within it
// (a review: the timer fired every period forever, and a trim after
// allocations gave back every whole free page).
func TestArenaTrimStopsWhenNothingToGiveBack(t *testing.T) {
	a := newArena(64 << 20) // 4 MiB chunks, a floor of 1 MiB
	a.trimEvery = time.Hour // by hand first
	t.Cleanup(a.close)
	small := allocFilled(t, a, 4096, 1<<10)
	for i, ss := range small {
		if i%4 != 0 {
			a.free(ss)
		}
	}
	for _, ss := range allocFilled(t, a, 24, 64<<10) {
		a.free(ss) // 1.5 MiB of whole free pages kept
	}
	st := a.stats()
	a.trim()
	after := a.stats()
	if gave := int64(after.Released - st.Released); gave == 0 || gave > (3<<19-a.trimFloor())/2+64<<10 {
		t.Errorf("a trim after allocations gave back %d bytes, want about half of the %d over the floor", gave, 3<<19-a.trimFloor())
	}
	a.mu.Lock()
	a.trimEvery = time.Millisecond
	a.trimArmed = false
	a.allocated = true // cleared by the next trim
	a.armTrimLocked()
	a.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for {
		a.mu.Lock()
		armed, ran := a.trimArmed, !a.allocated
		a.mu.Unlock()
		if ran && !armed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("10 s later, with nothing left to give back but the floor (resident-used %d bytes, free parts of pages in use), a trim is still scheduled", after.Resident-after.Used)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for i, ss := range small {
		if i%4 == 0 {
			a.free(ss)
		}
	}
}
