package cache

import (
	"io"
	"sync/atomic"
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
}

// newBody returns a body of n bytes to be filled with Write, holding one
// reference (the caller's). A nil arena puts it on the heap.
func (a *arena) newBody(n int) *body {
	if n <= 0 {
		return nil
	}
	b := &body{arena: a, n: n}
	if a == nil {
		b.spans = []span{{b: make([]byte, n), order: -1}}
	} else {
		b.spans = a.alloc(n)
	}
	b.refs.Store(1)
	return b
}

// bodyOf copies p into a new body of a (one reference, the caller's).
func (a *arena) bodyOf(p []byte) *body {
	b := a.newBody(len(p))
	if b != nil {
		_, _ = b.Write(p)
	}
	return b
}

// Len is the body's length in bytes.
func (b *body) Len() int {
	if b == nil {
		return 0
	}
	return b.n
}

// full reports whether every byte has been written.
func (b *body) full() bool { return b == nil || b.w == b.n }

// Write fills the body in order while it is being recorded. It returns
// io.ErrShortWrite for bytes past its length.
func (b *body) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 && b != nil && b.w < b.n {
		i, off := b.locate(b.w)
		c := copy(b.spans[i].b[off:], p)
		p = p[c:]
		b.w += c
		written += c
	}
	if len(p) > 0 {
		return written, io.ErrShortWrite
	}
	return written, nil
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
