package cache

import (
	"math/bits"
	"sync"
	"sync/atomic"
)

// maxMinUses is the largest min_uses: a use counter is four bits.
const maxMinUses = 15

// useSketch counts how often URLs missed, for min_uses: a count-min
// sketch of two rows of four-bit counters, safe for concurrent use
// without locks. Counts are approximate from above (two URLs sharing
// both counters look more used than they are), and they age: after
// window additions every counter is halved, so a URL has to come back
// within about a cache-full of misses (what the store would still hold
// had it been stored) for its uses to add up.
type useSketch struct {
	rows   [2][]atomic.Uint64 // 16 counters a word
	mask   uint64             // counters a row, minus one
	shift  uint               // 64 - log2(counters a row)
	adds   atomic.Int64       // additions since the last halving
	window int64
	aging  sync.Mutex // one halving at a time
}

// newUseSketch sizes a sketch for a store of about items entries: the
// window is items additions, and each row has 16 counters an item,
// rounded up to a power of two (16 to 32 bytes an item in all), so that
// a URL never seen before shares both its counters with URLs seen in the
// window about once in 300.
func newUseSketch(items int64) *useSketch {
	// The shift comes from the counters' log, not from TrailingZeros64:
	// Go 1.26's compiler folds TrailingZeros64(1 << Len64(max(c, 64)))
	// of a constant c 32 too high for GOARCH=arm (TestUseSketchCounts).
	log := bits.Len64(uint64(max(items, 64)*16 - 1))
	counters := uint64(1) << log
	s := &useSketch{mask: counters - 1, shift: uint(64 - log), window: max(items, 64)}
	for i := range s.rows {
		s.rows[i] = make([]atomic.Uint64, counters/16)
	}
	return s
}

// add counts one use of the URL whose key hashes to h and returns its
// count so far, this use included (at most 15).
func (s *useSketch) add(h uint64) int {
	// The key hash is xxhash: its low bits pick the first row's counter,
	// the top bits of its Fibonacci product the second's.
	i0 := h & s.mask
	i1 := h * 0x9E3779B97F4A7C15 >> s.shift
	n := min(increment(&s.rows[0][i0/16], uint(i0%16)*4), increment(&s.rows[1][i1/16], uint(i1%16)*4))
	if s.adds.Add(1) >= s.window && s.aging.TryLock() {
		if s.adds.Load() >= s.window {
			s.halve()
			s.adds.Store(0)
		}
		s.aging.Unlock()
	}
	return n
}

// increment adds one to the four-bit counter at shift in w, unless it is
// full, and returns its new value.
func increment(w *atomic.Uint64, shift uint) int {
	for {
		old := w.Load()
		c := int(old >> shift & 0xf)
		if c == 0xf {
			return c
		}
		if w.CompareAndSwap(old, old+1<<shift) {
			return c + 1
		}
	}
}

// halve divides every counter by two.
func (s *useSketch) halve() {
	for i := range s.rows {
		for j := range s.rows[i] {
			w := &s.rows[i][j]
			for {
				old := w.Load()
				if old == 0 || w.CompareAndSwap(old, old>>1&0x7777777777777777) {
					break
				}
			}
		}
	}
}

// firstUseStats keeps what became of the entries stored on their URL's
// first miss, for min_uses auto: how many were offered to the store, and
// how many were then found there by a later request. When most URLs are
// asked for once, almost none are: ristretto refuses many of them
// outright, and evicts the rest unread, and storing them was work thrown
// away.
type firstUseStats struct {
	// counts is offers<<32 | used, both halved every firstUseWindow
	// offers so that they follow the traffic.
	counts atomic.Uint64
	probes atomic.Uint64 // first misses seen while skipping
	// full reports whether the store is nearly full (nil: it is). Only
	// then does an entry nobody uses cost another its place, and only
	// then are first misses skipped: in a store with room, the uses of
	// a burst of new URLs may come long after the burst (a cold start),
	// and storing costs no one anything.
	full func() bool
}

const (
	firstUseWindow = 1024 // offers counted before halving
	firstUseMin    = 64   // offers counted before judging
	// While fewer than one offer in usefulEvery is used, first misses are
	// not stored: storing one costs a few per cent of a proxied request,
	// a hit saves all of it.
	usefulEvery = 16
	probeEvery  = 16 // while skipping, one first miss in probeEvery is still stored
)

// record counts offers of first-use entries and first uses of them.
func (a *firstUseStats) record(offers, used uint64) {
	for {
		old := a.counts.Load()
		o, u := old>>32+offers, old&0xffffffff+used
		if o >= firstUseWindow {
			o, u = o/2, u/2
		}
		if a.counts.CompareAndSwap(old, o<<32|u) {
			return
		}
	}
}

// load returns the counts of offers and of entries used.
func (a *firstUseStats) load() (offers, used uint64) {
	c := a.counts.Load()
	return c >> 32, c & 0xffffffff
}

// wasteful reports whether fewer than one in usefulEvery of the recent
// first-use entries was used, in a store that is nearly full.
func (a *firstUseStats) wasteful() bool { return wasteful(a.load()) && a.storeFull() }

// storeFull reports whether the store is nearly full (see full).
func (a *firstUseStats) storeFull() bool { return a.full == nil || a.full() }

func wasteful(offers, used uint64) bool {
	return offers >= firstUseMin && used*usefulEvery < offers
}

// firstUseReport is firstUseStats for the admin API.
type firstUseReport struct {
	// Stored and Used count the recent entries stored on their URL's
	// first miss, and how many of them a later request found (both
	// halved as they go).
	Stored uint64 `json:"stored"`
	Used   uint64 `json:"used"`
	// Skipping is true while min_uses auto does not store first misses.
	Skipping bool `json:"skipping"`
}

func (a *firstUseStats) report() firstUseReport {
	o, u := a.load()
	return firstUseReport{Stored: o, Used: u, Skipping: wasteful(o, u) && a.storeFull()}
}

// skipFirstUse reports whether a URL's first miss should not be stored:
// storing first misses has been wasteful in a nearly full store, and
// this one is not a probe
// (one in probeEvery is still stored, so that the counts see when the
// traffic changes).
func (a *firstUseStats) skipFirstUse() bool {
	return a.wasteful() && a.probes.Add(1)%probeEvery != 0
}

// noteUse counts the first time a request finds e, when e was stored on
// its URL's first miss. It runs on every hit: the check inlines, the
// count does not.
func (e *entry) noteUse(a *firstUseStats) {
	if e.firstUse && !e.used.Load() {
		e.countUse(a)
	}
}

func (e *entry) countUse(a *firstUseStats) {
	if e.used.CompareAndSwap(false, true) {
		a.record(0, 1)
	}
}
