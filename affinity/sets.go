package affinity

import (
	"slices"
	"sync"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/cespare/xxhash/v2"
)

// This file caches one Table per upstream set. Select receives the pool as a
// []*Upstream; building a Table costs O(n) to O(n log n) (Maglev fills a
// table of ~100n slots), so it must happen once per set of dial addresses,
// not once per request. Sets are identified by their dial addresses in pool
// order, never by *Upstream pointers: dynamic upstream sources return fresh
// Upstream values on every call, with the same dials.

// maxRecentSets bounds how many distinct upstream lists are remembered.
// Static upstreams need one; dynamic sources that alternate between sets
// (per-host SRV lookups across sites, a source and the static fallback,
// DNS answers in rotating order) need more. A list that only reorders a
// remembered one shares its Table (see viewOf), so it costs an index, not
// a build.
const maxRecentSets = 64

// upstreamSet is an immutable Table over one list of dial addresses.
type upstreamSet struct {
	// dials are the pool's dial addresses in pool order; hash is their
	// setHash. Together they identify the set.
	dials []string
	hash  uint64

	// table holds the distinct dials; toPool maps a table index to the
	// pool index of the first upstream with that dial (nil when the dials
	// are all distinct, so indices coincide).
	table  *Table
	toPool []int32

	// index maps a dial to its table index; used on retries, to turn the
	// upstreams already tried into table indices, and to map a reordered
	// list onto the table.
	index map[string]int32

	// members is the sorted list of distinct dials: the set itself,
	// whatever the order of the pool.
	members []string
}

// poolIndex returns the pool index of table index i.
func (s *upstreamSet) poolIndex(i int) int {
	if s.toPool == nil {
		return i
	}
	return int(s.toPool[i])
}

// slicePin remembers one pool slice that resolved to set, so that the next
// Select with the very same slice (static upstreams: the handler passes
// h.Upstreams every time) skips comparing dials.
type slicePin struct {
	base        **reverseproxy.Upstream // &pool[0]
	n           int
	first, last *reverseproxy.Upstream // pool[0], pool[n-1]: catch a slice reused in place
	set         *upstreamSet
}

// recentSets is an immutable snapshot of the remembered sets, replaced
// whole on every insert (copy on write).
type recentSets struct {
	byHash map[uint64]*upstreamSet
	order  []uint64 // insertion order, oldest first, for eviction
}

// setCache maps upstream pools to Tables. Reads are lock-free: Select only
// loads atomic pointers to immutable values. The zero value is not usable;
// build must be set.
type setCache struct {
	// build makes the Table for a list of distinct nodes.
	build func(nodes []Node) (*Table, error)

	pin    atomic.Pointer[slicePin]
	recent atomic.Pointer[recentSets]

	// seen is the last pool slice that matched by dials but not by
	// identity; seeing it a second time in a row promotes it to pin. This
	// keeps sources that return a fresh slice per call from allocating a
	// new pin per request, while caching sources (same slice until their
	// refresh) still get the fast path.
	seen atomic.Pointer[*reverseproxy.Upstream]

	// mu serializes inserts so that concurrent misses on the same new set
	// build it once; it is never held by a lookup that hits.
	mu sync.Mutex

	// builds counts Tables built; tests read it to prove reuse.
	builds atomic.Int64

	// failed are the last lists of dials whose Table could not be built
	// (dynamic upstreams whose weights pass the ring's limit), newest
	// first, at most maxFailedSets: they are not built again for every
	// request, and each set's error is logged once, whatever the order of
	// its dials (an immutable slice, replaced whole).
	failed atomic.Pointer[[]*failedSet]
}

// maxFailedSets bounds the failed lists remembered.
const maxFailedSets = 16

// failedSet is a list of dials whose Table could not be built.
type failedSet struct {
	dials   []string
	hash    uint64
	members []string // sorted: the set whatever its order
	err     *buildError
}

// buildError is why a set's Table could not be built; logged tells
// whether Select has logged it.
type buildError struct {
	err    error
	logged atomic.Bool
}

func (e *buildError) Error() string { return e.err.Error() }
func (e *buildError) Unwrap() error { return e.err }

// firstReport reports whether this is the first time the error is
// reported (to be logged).
func (e *buildError) firstReport() bool { return e.logged.CompareAndSwap(false, true) }

// get returns the set for pool (len(pool) > 0), building and remembering
// it on a miss.
func (c *setCache) get(pool []*reverseproxy.Upstream) (*upstreamSet, error) {
	base, n := &pool[0], len(pool)
	if p := c.pin.Load(); p != nil && p.base == base && p.n == n &&
		p.first == pool[0] && p.last == pool[n-1] {
		return p.set, nil
	}

	h := setHash(pool)
	if s := c.lookup(pool, h); s != nil {
		if c.seen.Swap(base) == base {
			c.pin.Store(&slicePin{base: base, n: n, first: pool[0], last: pool[n-1], set: s})
		}
		return s, nil
	}

	if err := c.knownFailure(pool, h); err != nil {
		return nil, err
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	if s := c.lookup(pool, h); s != nil { // built while we waited
		return s, nil
	}
	if err := c.knownFailure(pool, h); err != nil {
		return nil, err
	}
	s := c.viewOf(pool, h)
	if s == nil {
		members := sortedMembers(pool)
		var err error
		if be := c.failureOf(members); be != nil {
			// The same set in another order: remembered in this order
			// too, so that the next request finds it without sorting.
			c.rememberFailure(&failedSet{dials: dialsOf(pool), hash: h, members: members, err: be})
			return nil, be
		}
		if s, err = c.newSet(pool, h); err != nil {
			be := &buildError{err: err}
			c.rememberFailure(&failedSet{dials: dialsOf(pool), hash: h, members: members, err: be})
			return nil, be
		}
	}
	c.remember(s)
	c.pin.Store(&slicePin{base: base, n: n, first: pool[0], last: pool[n-1], set: s})
	return s, nil
}

// knownFailure returns the error of a remembered failure with exactly
// pool's dials, or nil.
func (c *setCache) knownFailure(pool []*reverseproxy.Upstream, h uint64) error {
	if fs := c.failed.Load(); fs != nil {
		for _, f := range *fs {
			if f.hash == h && sameDials(f.dials, pool) {
				return f.err
			}
		}
	}
	return nil
}

// failureOf returns the error of a remembered failure of the set members,
// in any order, or nil. Callers hold c.mu.
func (c *setCache) failureOf(members []string) *buildError {
	if fs := c.failed.Load(); fs != nil {
		for _, f := range *fs {
			if slices.Equal(f.members, members) {
				return f.err
			}
		}
	}
	return nil
}

// rememberFailure puts f first among the failures, dropping the oldest
// past maxFailedSets. Callers hold c.mu.
func (c *setCache) rememberFailure(f *failedSet) {
	next := []*failedSet{f}
	if fs := c.failed.Load(); fs != nil {
		next = append(next, (*fs)[:min(len(*fs), maxFailedSets-1)]...)
	}
	c.failed.Store(&next)
}

// lookup finds a remembered set with exactly pool's dials.
func (c *setCache) lookup(pool []*reverseproxy.Upstream, h uint64) *upstreamSet {
	if p := c.pin.Load(); p != nil && p.set.hash == h && sameDials(p.set.dials, pool) {
		return p.set
	}
	r := c.recent.Load()
	if r == nil {
		return nil
	}
	if s := r.byHash[h]; s != nil && sameDials(s.dials, pool) {
		return s
	}
	return nil
}

// remember adds s to the recent sets, evicting the oldest beyond
// maxRecentSets. Callers hold c.mu.
func (c *setCache) remember(s *upstreamSet) {
	old := c.recent.Load()
	next := &recentSets{byHash: make(map[uint64]*upstreamSet, maxRecentSets)}
	if old != nil {
		for _, h := range old.order {
			if h == s.hash { // a hash collision with a different set: replace it
				continue
			}
			next.byHash[h] = old.byHash[h]
			next.order = append(next.order, h)
		}
	}
	for len(next.order) >= maxRecentSets {
		delete(next.byHash, next.order[0])
		next.order = next.order[1:]
	}
	next.byHash[s.hash] = s
	next.order = append(next.order, s.hash)
	c.recent.Store(next)
}

// viewOf returns a set for pool sharing the Table of a remembered set with
// the same dials in another order (the mapping never depends on order),
// or nil. Callers hold c.mu.
func (c *setCache) viewOf(pool []*reverseproxy.Upstream, h uint64) *upstreamSet {
	r := c.recent.Load()
	if r == nil {
		return nil
	}
	members := sortedMembers(pool)
	for _, hash := range r.order {
		if base := r.byHash[hash]; slices.Equal(base.members, members) {
			return &upstreamSet{dials: dialsOf(pool), hash: h, table: base.table, index: base.index,
				toPool: poolPositions(base.index, pool), members: base.members}
		}
	}
	return nil
}

// poolPositions maps each table index of index to the position in pool
// of the first upstream with that dial (Caddy's own hash policies let the
// first of two equal dials win), or returns nil when the two coincide.
func poolPositions(index map[string]int32, pool []*reverseproxy.Upstream) []int32 {
	toPool := make([]int32, len(index))
	for i := range toPool {
		toPool[i] = -1
	}
	identity := len(pool) == len(toPool)
	for j, u := range pool {
		if t := index[u.Dial]; toPool[t] < 0 {
			toPool[t] = int32(j)
			identity = identity && int(t) == j
		}
	}
	if identity {
		return nil
	}
	return toPool
}

// sortedMembers returns pool's distinct dials, sorted.
func sortedMembers(pool []*reverseproxy.Upstream) []string {
	m := dialsOf(pool)
	slices.Sort(m)
	return slices.Compact(m)
}

func dialsOf(pool []*reverseproxy.Upstream) []string {
	dials := make([]string, len(pool))
	for i, u := range pool {
		dials[i] = u.Dial
	}
	return dials
}

// newSet builds the set for pool: a Table over its distinct dials, in
// the order they first appear.
func (c *setCache) newSet(pool []*reverseproxy.Upstream, h uint64) (*upstreamSet, error) {
	index := make(map[string]int32, len(pool))
	nodes := make([]Node, 0, len(pool))
	for _, u := range pool {
		if _, dup := index[u.Dial]; !dup {
			index[u.Dial] = int32(len(nodes))
			nodes = append(nodes, Node{Name: u.Dial})
		}
	}
	t, err := c.build(nodes)
	if err != nil {
		return nil, err
	}
	c.builds.Add(1)
	return &upstreamSet{dials: dialsOf(pool), hash: h, table: t, index: index,
		toPool: poolPositions(index, pool), members: sortedMembers(pool)}, nil
}

// setHash hashes pool's dial addresses in order. A zero byte separates them
// (dial addresses cannot contain one), so ["ab","c"] and ["a","bc"] differ.
func setHash(pool []*reverseproxy.Upstream) uint64 {
	var d xxhash.Digest
	d.Reset()
	for _, u := range pool {
		_, _ = d.WriteString(u.Dial)
		_, _ = d.Write(sep[:])
	}
	return d.Sum64()
}

var sep = [1]byte{0}

// sameDials reports whether pool's dial addresses are exactly dials.
func sameDials(dials []string, pool []*reverseproxy.Upstream) bool {
	if len(dials) != len(pool) {
		return false
	}
	for i, u := range pool {
		if dials[i] != u.Dial {
			return false
		}
	}
	return true
}
