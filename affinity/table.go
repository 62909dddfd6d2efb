package affinity

import (
	"cmp"
	"fmt"
	"slices"
)

// Algorithm names a consistent-hashing scheme.
type Algorithm string

// The algorithms a Table can use.
const (
	// Rendezvous is weighted highest-random-weight hashing: O(n) per pick,
	// no state beyond the node list, minimal disruption. It is the default:
	// the zero Algorithm means Rendezvous.
	Rendezvous Algorithm = "rendezvous"
	// Ring is a consistent-hash ring with weighted virtual nodes: O(1)
	// expected per pick through an index on the top bits of the hash.
	Ring Algorithm = "ring"
	// Maglev is Google's Maglev lookup table (a prime number of slots,
	// at least 65537 and >= 100 per node): O(1).
	Maglev Algorithm = "maglev"
	// Compat reproduces Caddy's built-in HRW mapping (ip_hash, uri_hash,
	// header, client_ip_hash): xxhash(dial+key), highest wins.
	Compat Algorithm = "compat"
)

// Limits on what NewTable accepts. They bound memory (a Maglev table takes
// 128 KiB to 4 MiB, the largest ring about 24 MiB) and build time.
const (
	// MaxNodes is the most nodes a Table may have.
	MaxNodes = 10000
	// MaxWeight is the largest node weight. Rendezvous and Maglev depend
	// only on ratios between weights; the ring gives each unit of weight
	// RingPointsPerWeight points, so there {1, 2} is cheaper than {2, 4}.
	MaxWeight = 1_000_000
	// RingPointsPerWeight is the number of ring points (virtual nodes) per
	// unit of weight. With 160 points a node's share of the ring has a
	// relative standard deviation of about 1/sqrt(160) = 8%; see ring.go.
	RingPointsPerWeight = 160
	// MaxRingPoints bounds RingPointsPerWeight * (sum of weights), so a
	// ring's weights may sum to at most 13107.
	MaxRingPoints = 1 << 21
	// MaxMaglevSlots is the largest Maglev table (a prime just below
	// 2^21); see maglev.go for how the size is chosen.
	MaxMaglevSlots = 2097143
)

// ParseAlgorithm returns the Algorithm named s, or an error listing the
// valid names.
func ParseAlgorithm(s string) (Algorithm, error) {
	switch a := Algorithm(s); a {
	case Rendezvous, Ring, Maglev, Compat:
		return a, nil
	}
	return "", fmt.Errorf("unknown algorithm %q: want rendezvous, ring, maglev or compat", s)
}

// Node is one member of a Table: an upstream's dial address and weight.
type Node struct {
	// Name identifies the node; the mapping is a function of names (and
	// weights) only. Use the upstream's dial address. Must be non-empty and
	// unique within a table.
	Name string
	// Weight is the node's relative share of keys, >= 1 and <= MaxWeight.
	// Compat accepts only 1.
	Weight int
}

// Table maps keys to nodes. It is immutable once built and safe for
// concurrent use. A nil *Table has no nodes: Len returns 0, Pick -1.
type Table struct {
	alg   Algorithm
	nodes []Node // the caller's order; Pick returns indexes into it

	// Rendezvous: per-node seeds in name order (order maps them to caller
	// indexes). weighted is set only when weights differ; invWeight then
	// holds 1/weight per name-ordered node.
	seeds     []uint64
	order     []int32
	weighted  bool
	invWeight []float64

	// Ring: sorted points (top 48 bits of the position, owner's caller
	// index in the low 16), and an index from the top bits of a hash to
	// the first point with those top bits (see ring.go).
	points     []uint64
	index      []uint32
	indexShift uint

	// Maglev: the lookup table of caller indexes, len is the prime M.
	lookup []uint16
}

// NewTable builds a table over nodes. Indices returned by Pick refer to
// positions in nodes (the caller's order); the mapping itself does not
// depend on that order. Names must be unique and weights between 1 and
// MaxWeight; Compat accepts only weight 1. An empty nodes builds a table
// whose Pick always returns -1. The zero Algorithm means Rendezvous.
func NewTable(alg Algorithm, nodes []Node) (*Table, error) {
	if alg == "" {
		alg = Rendezvous
	}
	if _, err := ParseAlgorithm(string(alg)); err != nil {
		return nil, fmt.Errorf("building affinity table: %w", err)
	}
	if len(nodes) > MaxNodes {
		return nil, fmt.Errorf("building affinity table: %d nodes exceeds the limit of %d; split the upstreams over several pools", len(nodes), MaxNodes)
	}
	for i, n := range nodes {
		if n.Name == "" {
			return nil, fmt.Errorf("building affinity table: node %d has an empty name; give every node its dial address as name", i)
		}
		if n.Weight < 1 || n.Weight > MaxWeight {
			return nil, fmt.Errorf("building affinity table: node %q: weight must be between 1 and %d, got %d", n.Name, MaxWeight, n.Weight)
		}
		if alg == Compat && n.Weight != 1 {
			return nil, fmt.Errorf("building affinity table: node %q: the compat algorithm does not support weights, got weight %d; use weight 1 or another algorithm", n.Name, n.Weight)
		}
	}

	t := &Table{alg: alg, nodes: slices.Clone(nodes)}
	// order lists caller indexes sorted by name: every structure is built
	// in this order so that any permutation of nodes maps keys the same way.
	t.order = make([]int32, len(nodes))
	for i := range t.order {
		t.order[i] = int32(i)
	}
	slices.SortFunc(t.order, func(a, b int32) int { return cmp.Compare(nodes[a].Name, nodes[b].Name) })
	for i := 1; i < len(t.order); i++ {
		if a, b := t.order[i-1], t.order[i]; nodes[a].Name == nodes[b].Name {
			return nil, fmt.Errorf("building affinity table: duplicate node name %q (nodes %d and %d); names must be unique", nodes[a].Name, min(a, b), max(a, b))
		}
	}
	if len(nodes) == 0 {
		return t, nil
	}

	var err error
	switch alg {
	case Rendezvous:
		t.buildRendezvous()
	case Ring:
		err = t.buildRing()
	case Maglev:
		t.buildMaglev()
	case Compat:
		// Compat hashes dial+key per node at pick time; nothing to build.
	}
	if err != nil {
		return nil, fmt.Errorf("building affinity table: %w", err)
	}
	return t, nil
}

// Len returns the number of nodes.
func (t *Table) Len() int {
	if t == nil {
		return 0
	}
	return len(t.nodes)
}

// Algorithm returns the algorithm the table was built with.
func (t *Table) Algorithm() Algorithm { return t.alg }

// Node returns the node at index i of the caller's order.
func (t *Table) Node(i int) Node { return t.nodes[i] }

// Pick returns the index of the first node in key's preference order for
// which eligible returns true, or -1 if none is. A nil eligible accepts
// every node. Successive calls with a shrinking eligible set walk the
// key's preference order: this is how failover, retries and bounded load
// find the "next choice". Pick does not allocate; eligible is called at
// most once per node.
func (t *Table) Pick(key string, eligible func(i int) bool) int {
	if t == nil || len(t.nodes) == 0 {
		return -1
	}
	switch t.alg {
	case Ring:
		return t.pickRing(key, eligible)
	case Maglev:
		return t.pickMaglev(key, eligible)
	case Compat:
		return t.pickCompat(key, eligible)
	}
	if t.weighted {
		return t.pickRendezvousWeighted(key, eligible)
	}
	return t.pickRendezvous(key, eligible)
}

// weights returns the weights in name order and their sum.
func (t *Table) weights() (w []int64, sum int64) {
	w = make([]int64, len(t.order))
	for i, ci := range t.order {
		w[i] = int64(t.nodes[ci].Weight)
		sum += w[i]
	}
	return w, sum
}
