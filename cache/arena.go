package cache

import (
	"math/bits"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// arena holds stored response bodies outside the Go heap, in memory the
// store maps itself, so that a cache's bytes are not multiplied by the
// garbage collector's headroom: Go lets its heap grow to about twice the
// live data between collections (GOGC=100), which for a cache that is
// mostly bodies would make the process's RSS about twice max_size. The
// arena's memory is mapped lazily, chunk by chunk, up to a fixed number
// of chunks derived from max_size, and reused in place; the process's RSS
// is bounded by that, whatever the garbage collector does.
//
// It is a binary buddy allocator over chunks: blocks are powers of two
// from minBlock to the chunk size, split on allocation and merged with
// their buddy when freed, so freed space is reusable by bodies of any
// size. A body is held in up to a few blocks (see blockOrders), which
// keeps the rounding waste below a seventh.
//
// Mapped memory is in the process's RSS once written, and stays there
// when freed unless given back: with bodies of mixed sizes, free blocks
// between used ones would keep most of the mapped chunks resident. Free
// pages are kept for reuse up to an eighth of max_size; past that, a
// freed block of whole pages is given back (see releaseLocked), so that
// RSS follows the bodies held rather than the chunks mapped. Bodies of
// like sizes reuse each other's blocks and give nothing back; only a mix
// of sizes far apart does, and the bodies stored into given-back pages
// then fault them in again. Free pages kept but not reused are given back
// over time (see trim), down to a sixty-fourth of max_size once no body
// has been allocated for a while, as Go's scavenger gives back the heap's.
//
// When no block is free and every chunk is mapped (fragmentation, or
// blocks of evicted bodies still being sent to slow clients), a body is
// allocated on the Go heap instead, up to a thirty-second of max_size
// there, and counted in fallbacks; past that it is not stored (noRoom),
// so that what bodies hold stays bounded however many clients read
// evicted ones. Where memory cannot be mapped (platforms without mmap),
// the heap takes what the arena would have held; once the arena is closed
// (a reload), the heap takes the responses still being recorded.
//
// Bodies of unknown length are gathered, while they are recorded, in
// blocks of scratchSize (newPiece), and copied into blocks planned for
// their length when they end, or, when there is no room for the copy,
// kept in them (see body.sealed).
//
// Memory in the arena is never read or written after it is freed: bodies
// are reference-counted (see body), and a block returns to the arena only
// when the last reader is done with it; a growing body's pieces are read
// by others only under its guard, which freeing them takes (dropScratch).
type arena struct {
	chunkShift uint // log2 of the chunk size
	maxChunks  int

	mu     sync.Mutex
	chunks [][]byte
	// Free lists, one per order, doubly linked through next and prev,
	// which are indexed by global block number (chunk << chunkOrder |
	// offset / minBlock). freeOrder[b] is the order of the free block
	// starting at b, or -1. Blocks are taken from the head, where freed
	// blocks go, so that the next bodies reuse pages still resident;
	// blocks whose pages were given back go to the tail.
	head, tail []int32
	next       []int32
	prev       []int32
	freeOrder  []int8
	// In the lists of whole pages (orders from pageOrder), blocks with a
	// page resident come first and blocks given back after: firstGiven[k]
	// is the first of those (-1 if none), so that trim finds the blocks
	// it may give back without walking the others; keptWhole is the
	// bytes of the resident pages of those free blocks, what it may give
	// back.
	firstGiven []int32
	keptWhole  int64
	used       int64 // bytes in allocated blocks
	closed     bool

	// Pages of freed blocks stay in the process's RSS until given back
	// to the system, and a buddy allocator holding bodies of mixed sizes
	// keeps many free blocks between used ones. resident tracks, page by
	// page, which pages blocks have held since they were last given
	// back (a bit each in residentBits); once the resident pages hold
	// more than slack bytes besides the blocks in use, a freed block of
	// whole pages is given back at once. Below that, freed pages are kept
	// for the next bodies, which then need no page faults.
	pageOrder    int8 // log2 of the page size in minimum blocks
	residentBits []uint64
	resident     int64         // bytes of the pages set in residentBits
	slack        int64         // the most resident-used kept in pages not given back
	released     atomic.Uint64 // bytes given back

	// Whole free pages kept are looked at every trimEvery, while there
	// may be more than slack/8, and given back in part (half of those
	// over slack/8 when blocks were allocated since the last look: they
	// may be reused soon) or down to slack/8 (when none were); see trim.
	trimEvery time.Duration
	trimTimer *time.Timer
	trimArmed bool
	allocated bool // a block was allocated since the last trim

	fallbacks     atomic.Uint64 // bodies (or parts) placed on the Go heap
	fallbackBytes atomic.Int64  // their bytes now live
	heapLimit     int64         // the most fallbackBytes may reach
	noRoom        atomic.Uint64 // bodies not allocated: no block, and heapLimit reached

	// Responses being recorded are not charged to the store until they
	// are stored: their bytes are reserved here first (see reserve), up
	// to recordLimit in all, so that a burst of concurrent misses of
	// large responses cannot take memory without bound.
	recording   atomic.Int64  // bytes reserved by bodies being recorded
	recordLimit int64         // the most reserved at once (but see reserve)
	refusals    atomic.Uint64 // reservations refused

	// A body of unknown length is recorded ahead of its client (whose
	// writer follows it, see recorder.decouple) as far as leadLimit
	// allows, for all such bodies together: what their clients have yet
	// to get is reserved in leading (see reserveLead). It bounds what
	// clients that do not read hold once a body is not stored (past
	// max_item_size, say) and the recording budget is given back.
	leading   atomic.Int64
	leadLimit int64
}

const (
	minBlockShift = 9 // 512 B
	minBlock      = 1 << minBlockShift
	// Chunks are between 64 KiB and 4 MiB: at most a sixteenth of
	// max_size, so a small cache maps little it does not need.
	minChunkShift = 16
	maxChunkShift = 22
)

// newArena returns an arena for a cache of maxCost bytes. Its chunks add
// up to maxCost, a sixteenth (the slack that keeps fragmentation from
// pushing bodies to the heap) and twice the recording budget (an eighth,
// and one more for responses others wait for), so that bodies being
// recorded live in the arena too. (A body of unknown length that is a
// large part of maxCost may find no room for its copy beside its pieces
// when it ends: it is then stored in them, see body.sealed.)
func newArena(maxCost int64) *arena {
	shift := uint(maxChunkShift)
	for shift > minChunkShift && int64(1)<<shift > maxCost/16 {
		shift--
	}
	size := int64(1) << shift
	limit := recordingBudget(maxCost)
	n := (maxCost + maxCost/16 + 2*limit + size - 1) / size
	orders := int(shift-minBlockShift) + 1
	a := &arena{chunkShift: shift, maxChunks: int(max(n, 1)), head: make([]int32, orders), tail: make([]int32, orders), firstGiven: make([]int32, orders), recordLimit: limit, leadLimit: limit / 2,
		heapLimit: maxCost / 32, slack: max(maxCost/8, 0), trimEvery: defaultTrimEvery}
	a.pageOrder = min(max(int8(bits.Len(uint(os.Getpagesize()))-1-minBlockShift), 0), a.topOrder())
	// The free lists' side arrays take 9 bytes per 512-byte block (under
	// 2% of max_size). For caches up to 512 MiB they are sized once, so
	// growing them leaves no garbage and no slack; larger ones grow them
	// chunk by chunk, never reserving heap for chunks never mapped.
	blocks := min(a.maxChunks<<a.blockShift(), 1<<20)
	a.next = make([]int32, 0, blocks)
	a.prev = make([]int32, 0, blocks)
	a.freeOrder = make([]int8, 0, blocks)
	for i := range a.head {
		a.head[i], a.tail[i], a.firstGiven[i] = -1, -1, -1
	}
	return a
}

func (a *arena) chunkSize() int { return 1 << a.chunkShift }

// recordingBudget is how many bytes of responses a cache of maxCost bytes
// records at once: an eighth of it.
func recordingBudget(maxCost int64) int64 { return maxCost / 8 }

// reserve takes n bytes of the recording budget for a body about to be
// recorded, or that holds held bytes of it already and grows, and reports
// whether it could: while other bodies are being recorded, only as long
// as all of them fit in the budget, or, when r (if not nil) says others
// wait for the response, in twice the budget (a crowd on one new URL
// still makes one origin request, but crowds on every URL of a burst do
// not lift the bound); alone, a body of any size (up to max_item_size),
// so that no response is too large to be stored ever. A nil arena (no
// store) has no budget.
func (a *arena) reserve(n, held int64, r awaitable) bool {
	if a == nil || n <= 0 {
		return true
	}
	for {
		cur := a.recording.Load()
		if cur > held && cur+n > a.recordLimit && (cur+n > 2*a.recordLimit || r == nil || !r.awaited()) {
			a.refusals.Add(1)
			return false
		}
		if a.recording.CompareAndSwap(cur, cur+n) {
			return true
		}
	}
}

// refused counts the responses reserve refused (0 for a nil arena).
func (a *arena) refused() uint64 {
	if a == nil {
		return 0
	}
	return a.refusals.Load()
}

// awaitable tells whether other requests wait for a response.
type awaitable interface{ awaited() bool }

// unreserve gives back n bytes reserve took.
func (a *arena) unreserve(n int64) {
	if a != nil && n > 0 {
		a.recording.Add(-n)
	}
}

// reserveLead takes n bytes of the lead budget (see leading) and reports
// whether it could. A nil arena (no store) has none to give.
func (a *arena) reserveLead(n int64) bool {
	if a == nil {
		return false
	}
	for {
		cur := a.leading.Load()
		if cur+n > a.leadLimit {
			return false
		}
		if a.leading.CompareAndSwap(cur, cur+n) {
			return true
		}
	}
}

// leads reports whether a has lead budget left for one write of
// reverse_proxy's (32 KiB, two pieces) at least (see recorder.decouples).
func (a *arena) leads() bool { return a != nil && a.leading.Load()+2*scratchSize <= a.leadLimit }

// unreserveLead gives back n bytes reserveLead took.
func (a *arena) unreserveLead(n int64) {
	if a != nil && n > 0 {
		a.leading.Add(-n)
	}
}

// topOrder is the order of a whole chunk.
func (a *arena) topOrder() int8 { return int8(a.chunkShift - minBlockShift) }

// span is one part of a body: a block of the arena (order >= 0, block is
// its number) or a slice of the Go heap (order -1).
type span struct {
	b     []byte
	block int32
	order int8
}

// blockOrders plans the blocks for n bytes: whole chunks, then at most
// three blocks for the rest, each the smallest power of two that holds
// it when that wastes at most an eighth of it, else the largest that
// fits and the rest in the next; a split that would take as much as the
// single block is not made. The waste is below a seventh of n, or below
// one minimum block for small n.
func (a *arena) blockOrders(n int, dst []int8) []int8 {
	top := a.topOrder()
	for n >= a.chunkSize() {
		dst = append(dst, top)
		n -= a.chunkSize()
	}
	if n == 0 {
		return dst
	}
	start, whole, total := len(dst), ceilOrder(n), 0
	for parts := 0; n > 0; parts++ {
		k := ceilOrder(n)
		size := minBlock << k
		if parts == 2 || k == 0 || size-n <= n/8 {
			dst = append(dst, k)
			total += size
			break
		}
		dst = append(dst, k-1)
		total += size / 2
		n -= size / 2
	}
	if total >= minBlock<<whole {
		dst = append(dst[:start], whole)
	}
	return dst
}

// ceilOrder is the smallest order whose block holds n > 0 bytes.
func ceilOrder(n int) int8 {
	if n <= minBlock {
		return 0
	}
	return int8(bits.Len(uint(n-1)) - minBlockShift)
}

// appendAlloc appends to dst spans holding n bytes in all (each cut to
// the length it holds). When heap is set, what the arena cannot give
// comes from the Go heap, up to heapLimit; past it (or the arena short,
// without heap), nothing is allocated, and it returns dst and false (and
// counts a noRoom, with heap).
func (a *arena) appendAlloc(dst []span, n int, heap bool) ([]span, bool) {
	var plan [8]int8
	orders := a.blockOrders(n, plan[:0])
	spans := slices.Grow(dst, len(orders))
	left := n
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, k := range orders {
		size := minBlock << k
		want := min(size, left)
		left -= want
		if b, ok := a.allocLocked(k); ok {
			spans = append(spans, span{b: a.blockMemLocked(b, want), block: b, order: k})
			continue
		}
		// A closed arena (its store gone in a reload) serves only the
		// responses already being recorded, which the recording budget
		// bounds: their waiters still get them from one origin request.
		if !heap {
			a.freeSpansLocked(spans[len(dst):])
			return dst, false
		}
		if !a.closed && a.fallbackBytes.Load()+int64(want) > a.heapLimit {
			a.freeSpansLocked(spans[len(dst):])
			a.noRoom.Add(1)
			return dst, false
		}
		spans = append(spans, span{b: make([]byte, want), order: -1})
		a.fallbacks.Add(1)
		a.fallbackBytes.Add(int64(want))
	}
	return spans, true
}

// pieceOrder is the order of the blocks that hold pieces of bodies of
// unknown length.
var pieceOrder = ceilOrder(scratchSize)

// newPiece returns a piece, scratchSize bytes, for a body of unknown
// length being recorded: a block of the arena, which has room for the
// responses being recorded besides the bodies stored (see newArena), so
// that they are not on the Go heap, whose collector would let twice their
// bytes stay in the process's memory; or, when the arena has no block free
// (or a is nil), a pooled heap piece (order -1).
func (a *arena) newPiece() span {
	if a != nil {
		a.mu.Lock()
		b, ok := a.allocLocked(pieceOrder)
		var piece span
		if ok {
			piece = span{b: a.blockMemLocked(b, scratchSize), block: b, order: pieceOrder}
		}
		a.mu.Unlock()
		if ok {
			return piece
		}
	}
	return span{b: scratchPool.Get().(*[scratchSize]byte)[:], order: -1}
}

// isClosed reports whether a's store is gone (see close).
func (a *arena) isClosed() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.closed
}

// adoptedPiece marks a piece that a stored body has taken as one of its
// spans (see body.sealed): not the growing body's to give back.
const adoptedPiece = -2

// freePieces gives back pieces newPiece gave: blocks to the arena, heap
// pieces to the pool (but adopted ones, which their body frees).
func (a *arena) freePieces(pieces []span) {
	blocks := false
	for _, p := range pieces {
		switch {
		case p.order == -1:
			scratchPool.Put((*[scratchSize]byte)(p.b))
		case p.order >= 0:
			blocks = true
		}
	}
	if !blocks {
		return
	}
	a.mu.Lock()
	for _, p := range pieces {
		if p.order >= 0 {
			a.freeLocked(p.block, p.order)
		}
	}
	a.unmapIfDoneLocked()
	a.mu.Unlock()
}

// free returns spans to the arena (heap spans to the garbage collector).
func (a *arena) free(spans []span) {
	a.mu.Lock()
	a.freeSpansLocked(spans)
	a.unmapIfDoneLocked()
	a.mu.Unlock()
}

// unmapIfDoneLocked unmaps a closed arena once no block is in use.
func (a *arena) unmapIfDoneLocked() {
	if a.closed && a.used == 0 {
		a.unmapLocked()
	}
}

func (a *arena) freeSpansLocked(spans []span) {
	for _, s := range spans {
		if s.order < 0 {
			a.fallbackBytes.Add(-int64(len(s.b)))
			continue
		}
		a.freeLocked(s.block, s.order)
	}
}

// spanCost is the memory spans take: whole blocks, or heapFactor times
// the heap's size class.
func spanCost(spans []span) int64 {
	var c int64
	for _, s := range spans {
		if s.order >= 0 {
			c += minBlock << s.order
		} else {
			c += heapFactor * allocSize(int64(cap(s.b)))
		}
	}
	return c
}

// blockShift is log2 of the number of minimum blocks in a chunk.
func (a *arena) blockShift() uint { return a.chunkShift - minBlockShift }
func (a *arena) blockMask() int   { return 1<<a.blockShift() - 1 }

// allocLocked takes a free block of order k, splitting a larger one or
// mapping a new chunk if need be.
func (a *arena) allocLocked(k int8) (int32, bool) {
	if a.closed {
		return 0, false
	}
	j := k
	for j <= a.topOrder() && a.head[j] < 0 {
		j++
	}
	if j > a.topOrder() {
		if !a.growLocked() {
			return 0, false
		}
		j = a.topOrder()
	}
	b := a.head[j]
	a.unlinkLocked(b, j)
	for j > k { // split, keeping the lower half
		j--
		a.pushLocked(b+1<<j, j)
	}
	a.used += minBlock << k
	a.allocated = true
	a.markResidentLocked(b, k)
	return b, true
}

// pageBytes is the size of the pages residentBits tracks: the system's
// page size, or a chunk if that is smaller.
func (a *arena) pageBytes() int64 { return minBlock << a.pageOrder }

// pageRange is the first page of block b of order k and how many pages
// it touches.
func (a *arena) pageRange(b int32, k int8) (first, n int) {
	first = int(b) >> a.pageOrder
	if k <= a.pageOrder {
		return first, 1
	}
	return first, 1 << (k - a.pageOrder)
}

// markResidentLocked records the pages of block b of order k, about to
// be written, as resident.
func (a *arena) markResidentLocked(b int32, k int8) {
	a.resident += int64(a.setPagesLocked(b, k, true)) * a.pageBytes()
}

// releaseLocked gives the pages of free block b of order k (whole pages)
// back to the system.
func (a *arena) releaseLocked(b int32, k int8) (gave int64) {
	cleared := a.setPagesLocked(b, k, false)
	if cleared == 0 {
		return 0
	}
	gave = int64(cleared) * a.pageBytes()
	a.resident -= gave
	a.released.Add(uint64(gave))
	releasePages(a.blockMemLocked(b, minBlock<<k))
	return gave
}

// blockMemLocked is the first n bytes of block b (capacity n too).
func (a *arena) blockMemLocked(b int32, n int) []byte {
	off := (int(b) & a.blockMask()) << minBlockShift
	return a.chunks[int(b)>>a.blockShift()][off : off+n : off+n]
}

// residentBytesLocked is the bytes of the resident pages of block b of
// order k, a block of whole pages (0 for a smaller one).
func (a *arena) residentBytesLocked(b int32, k int8) int64 {
	if k < a.pageOrder {
		return 0
	}
	return int64(a.residentPagesLocked(b, k)) * a.pageBytes()
}

// releaseUpToLocked gives back up to quota bytes of the resident pages of
// free block b of order k (at least a page), its upper half first, and
// returns how many it gave back: a large block gives back no more than a
// trim asks for.
func (a *arena) releaseUpToLocked(b int32, k int8, quota int64) int64 {
	if quota <= 0 {
		return 0
	}
	if k == a.pageOrder || a.residentBytesLocked(b, k) <= quota {
		return a.releaseLocked(b, k)
	}
	gave := a.releaseUpToLocked(b+1<<(k-1), k-1, quota)
	return gave + a.releaseUpToLocked(b, k-1, quota-gave)
}

// residentPagesLocked is how many pages of block b of order k are
// resident.
func (a *arena) residentPagesLocked(b int32, k int8) int {
	first, n := a.pageRange(b, k)
	count := 0
	for p := first; p < first+n; {
		w, bit := p/64, uint(p%64)
		run := min(64-int(bit), first+n-p)
		count += bits.OnesCount64(a.residentBits[w] & (^uint64(0) >> (64 - run) << bit))
		p += run
	}
	return count
}

// setPagesLocked sets (or clears) the resident bits of the pages of block
// b of order k, and returns how many of them changed.
func (a *arena) setPagesLocked(b int32, k int8, resident bool) int {
	first, n := a.pageRange(b, k)
	changed := 0
	for p := first; p < first+n; {
		w, bit := p/64, uint(p%64)
		run := min(64-int(bit), first+n-p)
		mask := ^uint64(0) >> (64 - run) << bit
		if resident {
			changed += bits.OnesCount64(mask &^ a.residentBits[w])
			a.residentBits[w] |= mask
		} else {
			changed += bits.OnesCount64(mask & a.residentBits[w])
			a.residentBits[w] &^= mask
		}
		p += run
	}
	return changed
}

// freeLocked returns block b of order k, merging it with its free buddies.
func (a *arena) freeLocked(b int32, k int8) {
	a.used -= minBlock << k
	for k < a.topOrder() {
		buddy := b ^ 1<<k
		if a.freeOrder[buddy] != k {
			break
		}
		a.unlinkLocked(buddy, k)
		b = min(b, buddy)
		k++
	}
	if k >= a.pageOrder && (a.closed || a.resident-a.used > a.slack) {
		// The block stays mapped, and is faulted in again when used:
		// after the resident blocks of its order.
		a.releaseLocked(b, k)
		a.pushTailLocked(b, k)
		return
	}
	a.pushLocked(b, k)
	a.armTrimLocked()
}

// defaultTrimEvery is how long free pages kept for the next bodies wait
// before some are given back (see trim).
const defaultTrimEvery = 5 * time.Second

// trimBlocks is the most blocks a trim gives back (a system call each,
// under the arena's lock: a few milliseconds), so that a large cache gives
// back a large excess over several trims without holding up the requests
// that store or evict bodies meanwhile.
const trimBlocks = 4096

// trimFloor is what trim leaves of free pages kept: a sixty-fourth of
// max_size.
func (a *arena) trimFloor() int64 { return a.slack / 8 }

// armTrimLocked schedules a trim when free pages kept (keptWhole) are
// over the floor and none is scheduled.
func (a *arena) armTrimLocked() {
	if a.trimArmed || a.closed || a.keptWhole <= a.trimFloor() {
		return
	}
	a.trimArmed = true
	if a.trimTimer == nil {
		a.trimTimer = time.AfterFunc(a.trimEvery, a.trim)
	} else {
		a.trimTimer.Reset(a.trimEvery)
	}
}

// trim gives back free pages kept for the next bodies that none has
// taken (free blocks of whole pages; the free parts of pages in use
// cannot be): down to the floor when no block was allocated since the
// last trim (the cache is idle, or its bodies come and go in blocks it
// keeps in use), else half of what is over it, so that RSS after a burst
// of mixed sizes comes down to the bodies held. Blocks least recently
// freed go first (from the ends of the resident parts of the free lists,
// largest first: see firstGiven), at most trimBlocks of them. It
// schedules the next only while what it may give back is over the floor;
// the next free over it schedules one again.
func (a *arena) trim() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.trimArmed = false
	if a.closed {
		return
	}
	over := a.keptWhole - a.trimFloor()
	if a.allocated {
		over /= 2
	}
	a.allocated = false
	blocks := trimBlocks
	for k := a.topOrder(); k >= a.pageOrder && over > 0 && blocks > 0; k-- {
		b := a.tail[k]
		if a.firstGiven[k] >= 0 {
			b = a.prev[a.firstGiven[k]]
		}
		for ; b >= 0 && over > 0 && blocks > 0; blocks-- {
			gave := a.releaseUpToLocked(b, k, over)
			over -= gave
			a.keptWhole -= gave
			if a.residentPagesLocked(b, k) > 0 {
				break // given back in part: the quota is spent
			}
			a.firstGiven[k] = b
			b = a.prev[b]
		}
	}
	if a.keptWhole > a.trimFloor() {
		a.armTrimLocked()
	}
}

// growLocked maps one more chunk, if the arena may have one.
func (a *arena) growLocked() bool {
	if len(a.chunks) >= a.maxChunks {
		return false
	}
	mem, err := mapChunk(a.chunkSize())
	if err != nil {
		// Do not try again; the heap holds what these chunks would have.
		a.heapLimit += int64(a.maxChunks-len(a.chunks)) << a.chunkShift
		a.maxChunks = len(a.chunks)
		return false
	}
	c := len(a.chunks)
	a.chunks = append(a.chunks, mem)
	per := 1 << a.blockShift()
	for range per {
		a.next = append(a.next, -1)
		a.prev = append(a.prev, -1)
		a.freeOrder = append(a.freeOrder, -1)
	}
	a.pushTailLocked(int32(c*per), a.topOrder())
	pages := len(a.chunks) << a.blockShift() >> a.pageOrder
	for len(a.residentBits)*64 < pages {
		a.residentBits = append(a.residentBits, 0)
	}
	return true
}

// pushLocked puts free block b of order k at the head of its list, where
// blocks are taken first; a block of whole pages none of which is
// resident goes after the others, at the tail (see firstGiven).
func (a *arena) pushLocked(b int32, k int8) {
	if k >= a.pageOrder {
		kept := a.residentBytesLocked(b, k)
		if kept == 0 {
			a.pushTailLocked(b, k)
			return
		}
		a.keptWhole += kept
	}
	a.freeOrder[b] = k
	a.prev[b] = -1
	a.next[b] = a.head[k]
	if h := a.head[k]; h >= 0 {
		a.prev[h] = b
	} else {
		a.tail[k] = b
	}
	a.head[k] = b
}

// pushTailLocked puts free block b of order k, of whole pages none of
// which is resident, at the tail of its list.
func (a *arena) pushTailLocked(b int32, k int8) {
	a.freeOrder[b] = k
	a.next[b] = -1
	a.prev[b] = a.tail[k]
	if t := a.tail[k]; t >= 0 {
		a.next[t] = b
	} else {
		a.head[k] = b
	}
	a.tail[k] = b
	if a.firstGiven[k] < 0 {
		a.firstGiven[k] = b
	}
}

func (a *arena) unlinkLocked(b int32, k int8) {
	if k >= a.pageOrder {
		if a.firstGiven[k] == b {
			a.firstGiven[k] = a.next[b]
		}
		a.keptWhole -= a.residentBytesLocked(b, k)
	}
	if p := a.prev[b]; p >= 0 {
		a.next[p] = a.next[b]
	} else {
		a.head[k] = a.next[b]
	}
	if n := a.next[b]; n >= 0 {
		a.prev[n] = a.prev[b]
	} else {
		a.tail[k] = a.prev[b]
	}
	a.freeOrder[b] = -1
	a.next[b], a.prev[b] = -1, -1
}

// close marks the arena unused by its store: no more allocations, and the
// chunks are unmapped as soon as the last block still being read is
// freed.
//
// A block still read keeps the chunks mapped, but not the free pages kept
// for the next bodies (slack): they are given back at once, and so is
// every block freed after (a review: a reload that resized the cache,
// with one slow client reading a body of the old store, kept its slack, an
// eighth of the old max_size, resident until that client finished).
func (a *arena) close() {
	a.mu.Lock()
	a.closed = true
	if a.trimTimer != nil {
		a.trimTimer.Stop()
	}
	if a.used == 0 {
		a.unmapLocked()
	} else {
		for k := a.pageOrder; k <= a.topOrder(); k++ {
			for b := a.head[k]; b >= 0; b = a.next[b] {
				a.releaseLocked(b, k)
			}
			a.firstGiven[k] = a.head[k]
		}
		a.keptWhole = 0
	}
	a.mu.Unlock()
}

func (a *arena) unmapLocked() {
	for _, c := range a.chunks {
		unmapChunk(c)
	}
	a.chunks = nil
	a.next, a.prev, a.freeOrder = nil, nil, nil
	a.residentBits, a.resident = nil, 0
	for i := range a.head {
		a.head[i], a.tail[i], a.firstGiven[i] = -1, -1, -1
	}
	a.keptWhole = 0
}

// arenaStats is a snapshot of an arena.
type arenaStats struct {
	// Mapped is the memory mapped for bodies, outside the Go heap.
	Mapped int64 `json:"mapped_bytes"`
	// Used is the part of it holding bodies (whole blocks), those being
	// recorded included.
	Used int64 `json:"used_bytes"`
	// Resident is the part of Mapped in the process's memory: Used, and
	// free pages kept for the next bodies (at most an eighth of
	// max_size more than Used, except for free parts of pages in use; a
	// sixty-fourth of whole free pages some seconds after the last
	// allocation).
	Resident int64 `json:"resident_bytes"`
	// Released counts the bytes of freed blocks given back to the
	// system, which the next bodies there fault in again.
	Released uint64 `json:"released_bytes"`
	// Fallbacks counts bodies (or parts) that found no free block and
	// were put on the Go heap instead.
	Fallbacks uint64 `json:"heap_fallbacks"`
	// FallbackBytes is the heap those hold now.
	FallbackBytes int64 `json:"heap_bytes"`
	// NoRoom counts bodies not stored because the arena had no free
	// block and the heap's allowance (a thirty-second of max_size) was
	// taken: the arena is fragmented, or holds evicted bodies that slow
	// clients are still being sent.
	NoRoom uint64 `json:"no_room"`
	// Recording is the bytes reserved by responses being recorded, not
	// yet stored (each its declared length, or what it has so far).
	Recording int64 `json:"recording_bytes"`
	// RecordingLimit is the most Recording takes (an eighth of
	// max_size), unless a single response is larger.
	RecordingLimit int64 `json:"recording_limit_bytes"`
	// RecordingRefusals counts responses streamed without being
	// stored because RecordingLimit was taken by others.
	RecordingRefusals uint64 `json:"recording_refusals"`
	// Leading is the bytes of responses of unknown length recorded
	// ahead of their clients, which those have yet to get; LeadLimit is
	// the most it takes (a sixteenth of max_size), past which a response
	// goes at its client's pace.
	Leading   int64 `json:"leading_bytes"`
	LeadLimit int64 `json:"lead_limit_bytes"`
}

func (a *arena) stats() arenaStats {
	a.mu.Lock()
	defer a.mu.Unlock()
	return arenaStats{
		Mapped:            int64(len(a.chunks)) << a.chunkShift,
		Used:              a.used,
		Resident:          a.resident,
		Released:          a.released.Load(),
		Fallbacks:         a.fallbacks.Load(),
		FallbackBytes:     a.fallbackBytes.Load(),
		NoRoom:            a.noRoom.Load(),
		Recording:         a.recording.Load(),
		RecordingLimit:    a.recordLimit,
		RecordingRefusals: a.refusals.Load(),
		Leading:           a.leading.Load(),
		LeadLimit:         a.leadLimit,
	}
}
