package cache

import (
	"context"
	"errors"
	"io"
	"math"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// body is a stored response body: its bytes in one or more spans of an
// arena (or of the Go heap), and a reference count. A body may be read
// only while the reader holds a reference; the last release returns its
// spans to the arena, whose blocks then hold other bodies.
//
// The store holds one reference per entry it accepted (released when
// ristretto lets go of the entry); every request that serves an entry
// takes one with acquire first and releases it when done; an entry that
// shares the body of another (a 304 refresh) takes its own. A count that
// reached zero never rises again, so acquire on a body that is already
// freed fails, and the caller treats the entry as gone.
//
// A nil *body is the empty body: it needs no references.
type body struct {
	arena *arena
	spans []span
	n     int // length
	w     int // bytes written so far, while filling
	refs  atomic.Int32
	// limit, when positive, marks a body of unknown length gathered in
	// scratch pieces as it is written, up to limit bytes; sealed copies
	// it into the arena. Once a writer reads it as it grows (see
	// writeGrowing), fill is set and its mutex guards the scratch slice
	// (not the bytes of its pieces, written once, in order, before the
	// fill says so; see guard).
	limit int
	// scratch holds the pieces, scratchSize bytes each: blocks of the
	// arena, or pooled heap pieces (order -1) when it has none free (see
	// arena.newPiece).
	scratch []span
	// inline holds the spans of a body below a chunk, so that the body
	// is one object for the garbage collector instead of two.
	inline [3]span
	// fill is set while a body of declared length that coalesced misses
	// are answered with is still arriving (see bodyFill); nil once it
	// is complete, and for every other body but one of unknown length
	// that a writer reads (see limit).
	fill atomic.Pointer[bodyFill]
}

// newBody returns a body of n bytes to be filled with Write, holding one
// reference (the caller's), or false when the arena has no room for it
// (see appendAlloc). A nil arena puts it on the heap.
func (a *arena) newBody(n int) (*body, bool) {
	return a.newBodyFrom(n, true)
}

// newBodyFrom is newBody, which takes nothing from the heap unless heap
// is set (see appendAlloc); a nil arena puts it on the heap anyway.
func (a *arena) newBodyFrom(n int, heap bool) (*body, bool) {
	if n <= 0 {
		return nil, true
	}
	b := &body{arena: a, n: n}
	if a == nil {
		b.spans = append(b.inline[:0], span{b: make([]byte, n), order: -1})
	} else if spans, ok := a.appendAlloc(b.inline[:0], n, heap); ok {
		b.spans = spans
	} else {
		return nil, false
	}
	b.refs.Store(1)
	return b, true
}

// scratchSize is the size of the pieces a body of unknown length is
// gathered in: blocks of the arena, or, when it has none free, heap
// pieces, which are pooled, so that recording makes no garbage.
const scratchSize = 16 << 10

var scratchPool = sync.Pool{New: func() any { return new([scratchSize]byte) }}

// writeBufSize is what the writer of a growing body (writeGrowing) copies
// out and writes at a time: reverse_proxy's own buffer, so that its client
// gets the body in writes (chunks, system calls) as large as it would
// without the cache. (At 16 KiB, twice as many: 100 KiB stored misses
// through Caddy cost a tenth more CPU than before the writer.)
const writeBufSize = 32 << 10

var writeBufPool = sync.Pool{New: func() any { return new([writeBufSize]byte) }}

// newGrowingBody returns a body of unknown length, at most limit bytes,
// gathered in pieces as it is written (one reference, the
// caller's); seal moves it into arena blocks planned for its length, so
// that it takes as few blocks (and a hit as few writes) as a body of
// declared length.
func (a *arena) newGrowingBody(limit int) *body {
	b := &body{arena: a, limit: max(limit, 1)}
	b.refs.Store(1)
	return b
}

// dropScratch gives a growing body's pieces back (see arena.freePieces).
func (b *body) dropScratch() {
	if b.limit == 0 {
		return
	}
	if m := b.guard(); m != nil {
		defer m.Unlock()
	}
	b.arena.freePieces(b.scratch)
	clear(b.scratch)
	b.scratch = nil
}

// sealed returns a growing body, complete, as a body of its length (nil
// when empty) holding one reference, the caller's, or false when there is
// no room for it: a copy in blocks of the arena planned for its length;
// or, when the arena has no room for that beside the pieces (a body that
// is a large part of max_size, a full arena), the pieces themselves (see
// adoptPieces); else (every piece on the heap, or a closed arena) a copy
// partly on the heap, within its allowance (see appendAlloc).
func (b *body) sealed() (*body, bool) {
	out, ok := b.arena.newBodyFrom(b.w, false)
	if !ok {
		inArena := slices.ContainsFunc(b.scratch, func(p span) bool { return p.order >= 0 })
		if inArena && !b.arena.isClosed() {
			// (A closed arena's store is gone: a copy on the heap, as its
			// other responses being recorded get, lets it unmap sooner.)
			return b.adoptPieces()
		}
		if out, ok = b.arena.newBody(b.w); !ok {
			return nil, false
		}
	}
	for left, i := b.w, 0; left > 0; i++ {
		n, _ := out.Write(b.scratch[i].b[:min(left, scratchSize)])
		left -= n
	}
	return out, true
}

// adoptPieces returns a body (one reference, the caller's) whose spans
// are b's pieces in the arena, each cut to the length it holds, and
// copies of its heap pieces (taken when the arena had no block free) in
// blocks freed since or on the heap, within its allowance; or false when
// there is no room for those (a copy of the whole would need more). b
// keeps the pieces readable (a writer may still copy from them until it
// is handed the new body) but no longer gives back those the new body
// took.
func (b *body) adoptPieces() (*body, bool) {
	out := &body{arena: b.arena, n: b.w, spans: make([]span, 0, len(b.scratch))}
	var copies []span // taken here: given back if the body cannot be held
	for i, p := range b.scratch {
		n := min(scratchSize, b.w-i*scratchSize)
		if p.order >= 0 {
			p.b = p.b[:n:n]
			out.spans = append(out.spans, p)
			continue
		}
		start := len(out.spans)
		spans, ok := b.arena.appendAlloc(out.spans, n, true)
		if !ok {
			b.arena.free(copies)
			return nil, false
		}
		fillSpans(spans[start:], p.b[:n])
		copies = append(copies, spans[start:]...)
		out.spans = spans
	}
	out.refs.Store(1)
	if m := b.guard(); m != nil {
		defer m.Unlock()
	}
	for i := range b.scratch {
		if b.scratch[i].order >= 0 {
			b.scratch[i].order = adoptedPiece
		}
	}
	return out, true
}

// fillSpans copies p into spans in order.
func fillSpans(spans []span, p []byte) {
	for _, s := range spans {
		p = p[copy(s.b, p):]
	}
}

// guard locks and returns the mutex that guards a growing body's scratch
// slice, once a writer reads it (fill); nil before, when nobody else
// reads it.
func (b *body) guard() *sync.Mutex {
	f := b.fill.Load()
	if f == nil {
		return nil
	}
	f.mu.Lock()
	return &f.mu
}

// copyOut copies bytes of a growing body from start, up to end and no
// more than dst takes, across its pieces, holding the pieces' guard; it
// returns how many (0 once the pieces are dropped).
func (b *body) copyOut(dst []byte, start, end int) int {
	m := b.guard()
	defer m.Unlock()
	n := 0
	for start < end && n < len(dst) {
		i, off := start/scratchSize, start%scratchSize
		if i >= len(b.scratch) {
			break
		}
		c := copy(dst[n:], b.scratch[i].b[off:min(scratchSize, off+end-start)])
		n, start = n+c, start+c
	}
	return n
}

// Len is the body's length in bytes.
func (b *body) Len() int {
	if b == nil {
		return 0
	}
	return b.n
}

// Write fills the body in order while it is being recorded. It returns
// io.ErrShortWrite for bytes past its length (or, growing, its limit).
func (b *body) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 && b != nil {
		dst := b.room()
		if len(dst) == 0 {
			break
		}
		c := copy(dst, p)
		p = p[c:]
		b.w += c
		written += c
	}
	if len(p) > 0 {
		return written, io.ErrShortWrite
	}
	return written, nil
}

// room is where the next bytes go: the rest of the span holding byte w,
// or of the last scratch piece (taking a new one) of a growing body;
// empty when the body is full.
func (b *body) room() []byte {
	if b.limit > 0 {
		if b.w >= b.limit {
			return nil
		}
		off := b.w % scratchSize
		if off == 0 {
			piece := b.arena.newPiece()
			m := b.guard()
			if b.scratch == nil {
				// Room for 64 KiB at first: one allocation where growing
				// from one piece took three.
				b.scratch = make([]span, 0, 4)
			}
			b.scratch = append(b.scratch, piece)
			if m != nil {
				m.Unlock()
			}
		}
		return b.scratch[len(b.scratch)-1].b[off:min(scratchSize, off+b.limit-b.w)]
	}
	if b.w >= b.n {
		return nil
	}
	i, off := b.locate(b.w)
	return b.spans[i].b[off:]
}

// locate returns the span holding byte pos and the offset in it.
func (b *body) locate(pos int) (int, int) {
	for i, s := range b.spans {
		if pos < len(s.b) {
			return i, pos
		}
		pos -= len(s.b)
	}
	return len(b.spans), 0
}

// writeRange writes bytes [start, end) of the body to w, span by span,
// without copying them.
func (b *body) writeRange(w io.Writer, start, end int) error {
	if b == nil || start >= end {
		return nil
	}
	i, off := b.locate(start)
	for left := end - start; left > 0 && i < len(b.spans); i++ {
		p := b.spans[i].b[off:]
		off = 0
		if len(p) > left {
			p = p[:left]
		}
		if _, err := w.Write(p); err != nil {
			return err
		}
		left -= len(p)
	}
	return nil
}

// overReleases counts releases past zero: a bug, which tests look for,
// and which must not crash a server in production.
var overReleases atomic.Uint64

// acquire takes a reference to read the body; false when the body has
// already been freed.
func (b *body) acquire() bool {
	if b == nil {
		return true
	}
	for {
		n := b.refs.Load()
		if n <= 0 {
			return false
		}
		if b.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// release drops a reference; the last one frees the body's spans.
func (b *body) release() {
	if b == nil {
		return
	}
	switch n := b.refs.Add(-1); {
	case n == 0:
		if b.arena != nil {
			b.arena.free(b.spans)
		}
		b.spans = nil
		b.dropScratch()
	case n < 0:
		overReleases.Add(1) // a bug; tests check this stays 0
	}
}

// cost is the memory the body takes: its arena blocks, and heapFactor
// times what it holds on the heap.
func (b *body) cost() int64 {
	if b == nil {
		return 0
	}
	return spanCost(b.spans)
}

// filling returns the fill of a body still arriving; nil when the body is
// complete.
func (b *body) filling() *bodyFill {
	if b == nil {
		return nil
	}
	return b.fill.Load()
}

// bodyFill lets the requests that waited for a fill read its body while it
// arrives: the leader's recorder writes the body in order and publishes
// how much of it is there; readers write out what is there and wait for
// more. A fill that ends short (the origin broke it off, the config was
// unloaded) fails, and its readers abort their responses, as reverse_proxy
// aborts one whose origin breaks off.
type bodyFill struct {
	filled atomic.Int64 // bytes written and readable
	// flushed is 1 + what was filled when the handler that fills it last
	// flushed (0: never): its readers flush their clients there, and only
	// there, as the response's writer would have (see writeFilling).
	flushed atomic.Int64
	// progressed is when bytes last arrived (UnixNano; the response's
	// header, before the first).
	progressed atomic.Int64
	mu         sync.Mutex
	// readers count the requests reading the fill (from serveCollapsed,
	// or writeFilling); when the last leaves, it calls end, if orphan set
	// it (see fill.clientGone).
	readers atomic.Int32
	failed  bool
	// ended is set, with trailer, once the handler that fills it has
	// returned with the whole body (complete).
	ended   bool
	trailer http.Header
	// wake is made by a reader that waits for more, and closed (then
	// cleared) by the next advance, by complete or by fail.
	wake chan struct{}
	end  atomic.Pointer[func()]

	// For the writer of a body of unknown length (writeGrowing): sent is
	// how far it has written the body to its client (math.MaxInt64 once
	// it is done), and moved, once the body is stored, is the stored
	// copy with a reference for it, which it writes the rest from.
	sent  atomic.Int64
	moved atomic.Pointer[body]
}

// orphan makes the last reader of f end it with end, and reports whether
// any reads it now (if not, the caller ends it itself).
func (f *bodyFill) orphan(end func()) bool {
	f.end.Store(&end)
	return f.readers.Load() > 0
}

// leave uncounts a reader; the last to leave an orphaned fill ends it.
func (f *bodyFill) leave() {
	if f.readers.Add(-1) == 0 {
		if end := f.end.Load(); end != nil {
			(*end)()
		}
	}
}

// errFillFailed ends a reader of a fill that ended short.
var errFillFailed = errors.New("response_cache: the response being filled broke off")

// advance publishes that the first n bytes are written, at now.
func (f *bodyFill) advance(n int, now time.Time) {
	f.progressed.Store(now.UnixNano())
	f.filled.Store(int64(n))
	f.mu.Lock()
	f.wakeLocked()
	f.mu.Unlock()
}

// markFlushed records that the handler filling f flushed once the first
// n bytes were written, and wakes the readers waiting for more.
func (f *bodyFill) markFlushed(n int) {
	f.flushed.Store(int64(n) + 1)
	f.mu.Lock()
	f.wakeLocked()
	f.mu.Unlock()
}

// flushDue reports whether a reader that has written the first n bytes,
// and last flushed at mark done (a flushed value; 0 for never), is to
// flush now, and the mark it then flushed at.
func (f *bodyFill) flushDue(n int, done int64) (int64, bool) {
	m := f.flushed.Load()
	return m, m > done && int64(n) >= m-1
}

// fail ends the fill short: its readers stop.
func (f *bodyFill) fail() {
	f.mu.Lock()
	f.failed = true
	f.wakeLocked()
	f.mu.Unlock()
}

// complete records that the handler filling f returned with the whole
// body, and with trailer, the trailer fields reverse_proxy set after it
// (nil for none), and wakes the readers waiting for the end (awaitEnd).
func (f *bodyFill) complete(trailer http.Header) {
	f.mu.Lock()
	f.ended, f.trailer = true, trailer
	f.wakeLocked()
	f.mu.Unlock()
}

// awaitEnd waits, for a reader that has the whole body, until the handler
// filling f has returned (complete), and returns the trailer fields it
// ended with; nil if there are none, f failed, or ctx ends first.
func (f *bodyFill) awaitEnd(ctx context.Context) http.Header {
	for {
		f.mu.Lock()
		if f.ended || f.failed {
			tr := f.trailer
			f.mu.Unlock()
			return tr
		}
		wake := f.wakeChanLocked()
		f.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return nil
		}
	}
}

// wakeChanLocked returns the channel that the next advance, complete or
// fail closes, for a reader to wait on; f.mu is held.
func (f *bodyFill) wakeChanLocked() chan struct{} {
	if f.wake == nil {
		f.wake = make(chan struct{})
	}
	return f.wake
}

// wakeLocked wakes the readers waiting for more; f.mu is held.
func (f *bodyFill) wakeLocked() {
	if f.wake != nil {
		close(f.wake)
		f.wake = nil
	}
}

// stalled reports whether the fill of a body of n bytes is still short
// and no byte of it arrived for limit before now: a request that comes
// then asks the origin itself rather than wait on an origin that may
// never go on (as it would have after the coalescing bound).
func (f *bodyFill) stalled(n int, now time.Time, limit time.Duration) bool {
	return int(f.filled.Load()) < n && now.UnixNano()-f.progressed.Load() > int64(limit)
}

// broken reports whether the fill failed.
func (f *bodyFill) broken() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed
}

// await returns how many bytes are written once more than have are, or
// once a flush is due for a reader that has them and last flushed at
// mark flushed (see flushDue), or once the fill has ended with them, or
// an error when the fill fails or ctx ends first.
func (f *bodyFill) await(ctx context.Context, have int, flushed int64) (int, error) {
	for {
		if n := int(f.filled.Load()); n > have {
			return n, nil
		}
		if _, due := f.flushDue(have, flushed); due {
			return have, nil
		}
		f.mu.Lock()
		if n := int(f.filled.Load()); n > have {
			f.mu.Unlock()
			return n, nil
		}
		if _, due := f.flushDue(have, flushed); due {
			f.mu.Unlock()
			return have, nil
		}
		if f.failed {
			f.mu.Unlock()
			return 0, errFillFailed
		}
		if f.ended {
			f.mu.Unlock()
			return have, nil // (a body of unknown length ends here)
		}
		wake := f.wakeChanLocked()
		f.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// writeFilling writes bytes [start, end) of b, whose fill is f, to w as
// they arrive. It flushes w where the handler filling b flushed its own
// client (markFlushed), once it has written that far: reverse_proxy
// flushes a body of unknown length, or a stream, after every write, and
// one of declared length not at all (flush_interval aside), and w gets
// the same. Flushing more often would cost its client nothing but
// bytes, unless encode compresses for it: each flush ends a compressed
// block (a body written by an origin in 100-byte pieces came out larger
// than uncompressed) and gives up the Content-Length net/http would set.
func (b *body) writeFilling(ctx context.Context, w http.ResponseWriter, f *bodyFill, start, end int) error {
	f.readers.Add(1)
	defer f.leave()
	var rc *http.ResponseController
	var flushed int64
	for start < end {
		n, err := f.await(ctx, start, flushed)
		if err != nil {
			return err
		}
		n = min(n, end)
		if n > start {
			if err := b.writeRange(w, start, n); err != nil {
				return err
			}
			start = n
		}
		if mark, due := f.flushDue(start, flushed); due && start < end {
			flushed = mark
			if rc == nil {
				rc = http.NewResponseController(w)
			}
			_ = rc.Flush()
		}
	}
	return nil
}

// handOver gives the writer of a body of unknown length being recorded
// with f the stored copy of it, with a reference for it (see
// writeGrowing), and wakes it.
func (f *bodyFill) handOver(stored *body) {
	f.moved.Store(stored)
	f.mu.Lock()
	f.wakeLocked()
	f.mu.Unlock()
}

// over reports whether the fill has ended complete.
func (f *bodyFill) over() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ended
}

// writeRest writes b from byte start on to w, and releases the reference
// to b it was given (see handOver), even if w panics.
func (b *body) writeRest(w http.ResponseWriter, start int) error {
	defer b.release() // (a defer in writeGrowing's loop would be allocated)
	return b.writeRange(w, start, b.Len())
}

// writeGrowing writes b, a body of unknown length that is being recorded
// with fill f, from byte start on, to w as it arrives, until f ends,
// flushing w where writeFilling would. It holds no reference to b: it
// copies each part out (see copyOut) and writes the copy, so that a
// client that stops reading keeps one 32 KiB copy, not the body, and
// the body can be stored, or dropped, while it waits. Once b is stored it
// writes the rest from the stored copy (handOver); b is dropped unstored
// only once it has written all of it (see recorder.recouple).
func (b *body) writeGrowing(ctx context.Context, w http.ResponseWriter, f *bodyFill, start int) error {
	defer f.sent.Store(math.MaxInt64)
	buf := writeBufPool.Get().(*[writeBufSize]byte)
	defer writeBufPool.Put(buf)
	var rc *http.ResponseController
	var flushed int64
	for {
		n, err := f.await(ctx, start, flushed)
		if err != nil {
			return err
		}
		if stored := f.moved.Swap(nil); stored != nil {
			return stored.writeRest(w, start)
		}
		if n > start {
			c := b.copyOut(buf[:], start, n)
			if c == 0 {
				if f.moved.Load() == nil {
					return errFillFailed // (dropped before its writer was done: a bug)
				}
				continue
			}
			if _, err := w.Write(buf[:c]); err != nil {
				return err
			}
			start += c
			// Once written: a copy its client has yet to take counts
			// as recorded ahead of it (holdLead), as the pieces did.
			f.sent.Store(int64(start))
		} else if f.over() && int(f.filled.Load()) <= start {
			// (await may return for a flush, and the body go on and
			// end before over looks: filled, read after, is final.)
			return nil
		}
		if mark, due := f.flushDue(start, flushed); due {
			flushed = mark
			if rc == nil {
				rc = http.NewResponseController(w)
			}
			_ = rc.Flush()
		}
	}
}
