package affinity

import (
	"fmt"
	"math/bits"
	"slices"
)

// Consistent-hash ring (Karger et al. 1997) with weighted virtual nodes.
//
// A node of weight w gets RingPointsPerWeight*w points, the splitmix64 sequence
// mix64(xxhash(name) + k*phi64), k = 1, 2, .... A key belongs to the first
// point clockwise from xxhash(key) (wrapping at 2^64); its preference order
// is the distinct owners met walking on clockwise. Since points depend only
// on their node's name and weight, making a node ineligible sends its keys
// exactly where removing it would, and no other key moves.
//
// Weights are used as given, not divided by their common divisor: that
// divisor can change when a node leaves, and would then move every point
// of every other node.
//
// Balance: a node's share is the total length of the arcs ending at its
// points. With p = 160 points per node the relative standard deviation of
// a share is about 1/sqrt(p) = 8%, so at 100 nodes the busiest node holds
// ~1.2x the mean (the balance test measures it). More points would tighten
// that only as 1/sqrt(p) while memory grows linearly; 160 is the classic
// ketama choice.
//
// Lookup: an index over the top b bits of the hash, 2^b >= number of
// points, gives the first point in the key's bucket, so a pick touches one
// or two points instead of a binary search over all of them.

const (
	// ringOwnerMask selects the owner index stored in a point's low bits.
	ringOwnerMask = 1<<16 - 1
	// ringIndexExtraBits sizes the bucket index: 2^(ceil(log2 P)+extra)
	// buckets for P points.
	ringIndexExtraBits = 0
)

func (t *Table) buildRing() error {
	w, sum := t.weights()
	if total := sum * RingPointsPerWeight; total > MaxRingPoints {
		return errRingTooBig(total)
	}
	type point struct {
		hash uint64
		node int32 // name order, the tie-break for (astronomically rare) equal hashes
	}
	pts := make([]point, 0, sum*RingPointsPerWeight)
	for i, ci := range t.order {
		h := nodeHash(t.nodes[ci].Name)
		for k := int64(1); k <= w[i]*RingPointsPerWeight; k++ {
			pts = append(pts, point{mix64(h + uint64(k)*phi64), int32(i)})
		}
	}
	slices.SortFunc(pts, func(a, b point) int {
		if a.hash != b.hash {
			if a.hash < b.hash {
				return -1
			}
			return 1
		}
		return int(a.node - b.node)
	})
	// Only the top 48 bits place a point; sorting the full hash first
	// and the name second keeps ties (equal top 48 bits) in name order.
	// Each point keeps the top 48 bits of its hash and stores the caller
	// index of its owner in the low 16 (MaxNodes < 2^16), so a pick reads
	// one array. Comparing a point with the key hash's top 48 bits (low
	// bits cleared) finds the first point at or after the key.
	t.points = make([]uint64, len(pts))
	for i, p := range pts {
		t.points[i] = p.hash&^ringOwnerMask | uint64(t.order[p.node])
	}

	b := uint(bits.Len(uint(len(pts)-1))) + ringIndexExtraBits
	t.indexShift = 64 - b
	t.index = make([]uint32, 1<<b+1)
	p := 0
	for bucket := range t.index {
		for p < len(pts) && pts[p].hash>>t.indexShift < uint64(bucket) {
			p++
		}
		t.index[bucket] = uint32(p)
	}
	return nil
}

func (t *Table) pickRing(key string, eligible func(int) bool) int {
	h := keyHash(key) &^ ringOwnerMask
	bucket := h >> t.indexShift // Go defines x>>64 == 0: a 1-point ring has one bucket
	i, end := int(t.index[bucket]), int(t.index[bucket+1])
	points := t.points
	for i < end && points[i] < h {
		i++
	}
	if i == len(points) {
		i = 0
	}
	o := int(points[i] & ringOwnerMask)
	if eligible == nil || eligible(o) {
		return o
	}
	if len(t.nodes) <= smallSeenNodes {
		var seen [smallSeenWords]uint64
		return t.ringWalk(i, o, eligible, seen[:])
	}
	var seen [bigSeenWords]uint64
	return t.ringWalk(i, o, eligible, seen[:])
}

// ringWalk continues clockwise from point i, whose owner o was ineligible,
// to the next point whose owner is eligible and not yet tried.
func (t *Table) ringWalk(i, o int, eligible func(int) bool, seen []uint64) int {
	seenAdd(seen, o)
	tried := 1
	if tried == len(t.nodes) {
		return -1
	}
	for range len(t.points) {
		if i++; i == len(t.points) {
			i = 0
		}
		o := int(t.points[i] & ringOwnerMask)
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

func errRingTooBig(total int64) error {
	return fmt.Errorf("ring would need %d points (%d per unit of weight), more than the limit of %d; use smaller weights (keeping their ratios), fewer nodes, or the maglev or rendezvous algorithm", total, RingPointsPerWeight, MaxRingPoints)
}
