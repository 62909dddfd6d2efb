package affinity

import "math/bits"

// Maglev hashing (Eisenbud et al., NSDI 2016, section 3.4).
//
// Each node i has a permutation of the M slots, offset_i + j*skip_i mod M
// (M prime, so every skip generates all slots), with offset and skip drawn
// from xxhash(name). Nodes take turns claiming their next preferred free
// slot until the table is full; a key picks slot fastrange(xxhash(key), M).
//
// Weights: node i claims its c-th slot (c = 0, 1, ...) in round
// floor(c * wmax / w_i), and within a round nodes go in name order, so
// node shares are proportional to weights within one slot; with equal
// weights every node claims once per round, which is the paper's
// algorithm. Turns are served from a heap, so building costs
// O(M log n + M ln M) however skewed the weights are.
//
// Size: M is the smallest prime of a fixed ladder (maglevSizes: 65537,
// 262139, 1048573, 2097143) that is >= 100 * n: every node of equal weight
// gets >= 100 slots, so shares are within 1% of equal. A ladder rather than
// "the smallest prime >= 100n": M is part of every key's slot and every
// permutation, so a table whose size followed n exactly would remap ~all
// keys whenever a node joined or left (we measured 90% moved on removing 1
// of 10). With the ladder M stays put until the pool crosses 655, 2621 or
// 10485 nodes, and only that crossing remaps. Weights do not size the
// table: sizing for the lightest node (100 * sum(w) / min(w)) made a change
// of one weight, or the removal of the lightest node, cross a rung and
// remap nearly every key (a canary ramped from weight 1 to 5 among ten
// nodes of weight 100 moved 89% of the other nodes' keys). A node of
// weight w gets about M * w / sum(w) slots instead, and at least one: one
// of weight 1 beside ten of weight 100 gets 65; lighter still, a coarser
// share.

// Failover: the key's own probe sequence s_0 = its slot, s_{k+1} = s_k +
// step mod M, step = 1 + fastrange(mix64(h ^ phi64), M-1), visits every
// slot; the key's preference order is the distinct owners met along it.
// Keys whose slot owner is eligible never move; the keys of an ineligible
// node go to the owner of an effectively random slot, i.e. spread over the
// other nodes in proportion to their slot counts (their weights). This is
// not the same as rebuilding the table without the node: a rebuild also
// moves a few percent of other keys (Maglev trades that for its O(1)
// lookup), a probe walk moves none.

// maglevSizes are the table sizes, all prime; the last is MaxMaglevSlots.
var maglevSizes = []int64{65537, 262139, 1048573, MaxMaglevSlots}

func (t *Table) buildMaglev() {
	n := len(t.order)
	w, _ := t.weights()
	_, wmax := minMax(w)
	target := int64(100 * n)
	m := maglevSizes[len(maglevSizes)-1]
	for _, p := range maglevSizes {
		if p >= target {
			m = p
			break
		}
	}

	offset := make([]int64, n)
	skip := make([]int64, n)
	for i, ci := range t.order {
		h := nodeHash(t.nodes[ci].Name)
		offset[i] = int64(mix64(h^0x5851f42d4c957f2d) % uint64(m))
		skip[i] = int64(mix64(h^0x14057b7ef767814f)%uint64(m-1)) + 1
	}

	entry := make([]int32, m)
	for s := range entry {
		entry[s] = -1
	}
	claimed := make([]int64, n)
	next := offset // next[i]: node i's next slot to try in its permutation
	turns := turnHeap(make([]turn, n))
	for i := range turns {
		turns[i] = turn{round: 0, node: int32(i)}
	}
	// All rounds are 0 and nodes ascend: already a valid heap.
	for filled := int64(0); filled < m; filled++ {
		i := turns[0].node
		s := next[i]
		for entry[s] >= 0 {
			if s += skip[i]; s >= m {
				s -= m
			}
		}
		entry[s] = i
		if s += skip[i]; s >= m {
			s -= m
		}
		next[i] = s
		claimed[i]++
		turns[0].round = claimed[i] * wmax / w[i]
		turns.down(0)
	}

	t.lookup = make([]uint16, m)
	for s, i := range entry {
		t.lookup[s] = uint16(t.order[i])
	}
}

func minMax(w []int64) (lo, hi int64) {
	lo, hi = w[0], w[0]
	for _, x := range w[1:] {
		lo, hi = min(lo, x), max(hi, x)
	}
	return lo, hi
}

// turn is a node's next claim in the Maglev fill, ordered by (round, node).
type turn struct {
	round int64
	node  int32
}

type turnHeap []turn

func (h turnHeap) less(a, b int) bool {
	return h[a].round < h[b].round || h[a].round == h[b].round && h[a].node < h[b].node
}

func (h turnHeap) down(i int) {
	for {
		c := 2*i + 1
		if c >= len(h) {
			return
		}
		if c+1 < len(h) && h.less(c+1, c) {
			c++
		}
		if !h.less(c, i) {
			return
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
}

func (t *Table) pickMaglev(key string, eligible func(int) bool) int {
	h := keyHash(key)
	m := uint64(len(t.lookup))
	s, _ := bits.Mul64(h, m)
	o := int(t.lookup[s])
	if eligible == nil || eligible(o) {
		return o
	}
	step, _ := bits.Mul64(mix64(h^phi64), m-1)
	step++
	if len(t.nodes) <= smallSeenNodes {
		var seen [smallSeenWords]uint64
		return t.maglevWalk(s, step, o, eligible, seen[:])
	}
	var seen [bigSeenWords]uint64
	return t.maglevWalk(s, step, o, eligible, seen[:])
}

// maglevWalk follows the key's probe sequence from slot s, whose owner o
// was ineligible, to the first slot whose owner is eligible and not yet
// tried.
func (t *Table) maglevWalk(s, step uint64, o int, eligible func(int) bool, seen []uint64) int {
	m := uint64(len(t.lookup))
	seenAdd(seen, o)
	tried := 1
	if tried == len(t.nodes) {
		return -1
	}
	for range m {
		if s += step; s >= m {
			s -= m
		}
		o := int(t.lookup[s])
		if seenHas(seen, o) {
			continue
		}
		if eligible(o) {
			return o
		}
		seenAdd(seen, o)
		if tried++; tried == len(t.nodes) {
			return -1
		}
	}
	return -1
}
