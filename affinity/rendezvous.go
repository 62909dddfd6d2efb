package affinity

import "math"

// Rendezvous (highest random weight) hashing, Thaler & Ravishankar 1998.
//
// The key is hashed once; node i scores mix64(keyHash ^ seed_i), where
// seed_i = xxhash(name_i) is computed in NewTable. A key's preference order
// is the nodes by descending score (ties, which need a 64-bit collision, go
// to the smaller name). Because a node's score does not depend on the other
// nodes, removing (or making ineligible) a node moves exactly the keys it
// held, each to its second choice, and adding a node takes ~1/(n+1) of the
// keys from the others in proportion.
//
// Weighted tables (weights not all equal) use the standard logarithmic
// weighted-HRW score: with u in (0,1) drawn from the score, node i ranks by
// w_i / -ln(u); we minimise the equivalent -ln(u) / w_i. For uniform u that
// is an exponential variable with rate w_i, and the minimum of independent
// exponentials is node i with probability w_i / sum(w): exact weighted
// shares, and still the minimal-disruption property. u is
// (top 52 bits + 0.5) / 2^52: exactly representable, strictly inside
// (0,1), so neither ln(0) nor a zero score can occur. Bounds on -ln(u)
// (below) let a pick skip the logarithm for almost every node; usually it
// computes none.

func (t *Table) buildRendezvous() {
	t.seeds = make([]uint64, len(t.order))
	for i, ci := range t.order {
		t.seeds[i] = nodeHash(t.nodes[ci].Name)
	}
	w, _ := t.weights()
	for _, x := range w[1:] {
		if x != w[0] {
			t.weighted = true
		}
	}
	if t.weighted {
		t.invWeight = make([]float64, len(w))
		for i, x := range w {
			t.invWeight[i] = 1 / float64(x)
		}
	}
}

func (t *Table) pickRendezvous(key string, eligible func(int) bool) int {
	kh := keyHash(key)
	seeds := t.seeds
	order := t.order[:len(seeds)]
	if eligible == nil {
		// Seeding with node 0 keeps the loop to a single compare, which
		// is most of its speed.
		best, bestScore := 0, mix64(kh^seeds[0])
		for i := 1; i < len(seeds); i++ {
			if sc := mix64(kh ^ seeds[i]); sc > bestScore {
				best, bestScore = i, sc
			}
		}
		return int(order[best])
	}
	best, bestScore := -1, uint64(0)
	for i, s := range seeds {
		if sc := mix64(kh ^ s); sc > bestScore && eligible(int(order[i])) {
			best, bestScore = i, sc
		}
	}
	if best < 0 {
		// Nothing eligible scored above 0. A score of exactly 0 (odds
		// 2^-64) still wins over nothing; those nodes have not been asked.
		for i, s := range seeds {
			if mix64(kh^s) == 0 && eligible(int(order[i])) {
				return int(order[i])
			}
		}
		return -1
	}
	return int(order[best])
}

// Weighted ranking. For node i with score-derived u and q = 1-u (both
// exact), the rank value is
//
//	x_i = clamp(-ln(u) * inv_i, q * inv_i, q/u * inv_i)
//
// and the node with the smallest x_i wins, ties to the smaller name. The
// bounds q <= -ln(1-q) <= q/(1-q) hold mathematically, so the clamp only
// pins down what rounding may do; it makes every shortcut below exact: a
// node whose lower bound is not below the best found cannot win, and one
// whose lower bound exceeds another's upper bound cannot either.

// uq maps a score to u = (top 52 bits + 0.5) / 2^52 and q = 1-u, both
// exact. The int64 conversion is cheaper than converting a uint64.
func uq(sc uint64) (u, q float64) {
	m := int64(sc >> 12)
	return (float64(m) + 0.5) * 0x1p-52, (float64((1<<52-1)-m) + 0.5) * 0x1p-52
}

// rankLow is the lower bound of x alone, the cheap part of rankBounds.
// float64() here and below forbids fusing into an FMA, so results are the
// same on every architecture.
func rankLow(sc uint64, inv float64) float64 {
	_, q := uq(sc)
	return float64(q * inv)
}

// rankBounds returns u and the lower and upper bounds of x for a score.
func rankBounds(sc uint64, inv float64) (u, lo, hi float64) {
	u, q := uq(sc)
	return u, float64(q * inv), float64(float64(q/u) * inv)
}

func rankExact(u, lo, hi, inv float64) float64 {
	return min(max(float64(-math.Log(u)*inv), lo), hi)
}

func (t *Table) pickRendezvousWeighted(key string, eligible func(int) bool) int {
	kh := keyHash(key)
	seeds := t.seeds
	order := t.order[:len(seeds)]
	inv := t.invWeight[:len(seeds)]
	if eligible != nil {
		best, bestX := -1, math.Inf(1)
		for i, s := range seeds {
			sc := mix64(kh ^ s)
			if rankLow(sc, inv[i]) >= bestX {
				continue
			}
			u, lo, hi := rankBounds(sc, inv[i])
			if x := rankExact(u, lo, hi, inv[i]); x < bestX && eligible(int(order[i])) {
				best, bestX = i, x
			}
		}
		if best < 0 {
			return -1
		}
		return int(order[best])
	}

	// Pass 1 finds the smallest and second smallest lower bound. If the
	// second exceeds the first node's upper bound, that node wins without
	// a logarithm, which is the common case: the winner's q is small and
	// its bounds are within a factor 1+q of each other.
	lo1, lo2, i1 := math.Inf(1), math.Inf(1), 0
	for i, s := range seeds {
		if lo := rankLow(mix64(kh^s), inv[i]); lo < lo2 {
			if lo < lo1 {
				lo1, lo2, i1 = lo, lo1, i
			} else {
				lo2 = lo
			}
		}
	}
	_, _, hi1 := rankBounds(mix64(kh^seeds[i1]), inv[i1])
	if lo2 > hi1 {
		return int(order[i1])
	}
	// Pass 2 ranks exactly the nodes that might beat node i1.
	best, bestX := -1, math.Inf(1)
	for i, s := range seeds {
		sc := mix64(kh ^ s)
		if rankLow(sc, inv[i]) > hi1 {
			continue
		}
		u, lo, hi := rankBounds(sc, inv[i])
		if x := rankExact(u, lo, hi, inv[i]); x < bestX {
			best, bestX = i, x
		}
	}
	return int(order[best])
}
