package affinity

import (
	"fmt"

	"github.com/cespare/xxhash/v2"
)

// CONTRACT STUB: the helper that owns the hashing core replaces the bodies
// below; the exported names and signatures are the contract the Caddy
// adapter (policy.go) codes against.

// Algorithm names a consistent-hashing scheme.
type Algorithm string

// The algorithms a Table can use.
const (
	// Rendezvous is weighted highest-random-weight hashing: O(n) per pick,
	// no state beyond the node list, minimal disruption.
	Rendezvous Algorithm = "rendezvous"
	// Ring is a consistent-hash ring with weighted virtual nodes: O(log n).
	Ring Algorithm = "ring"
	// Maglev is Google's Maglev lookup table (size a prime >= 100*n): O(1).
	Maglev Algorithm = "maglev"
	// Compat reproduces Caddy's built-in HRW mapping (ip_hash, uri_hash,
	// header, client_ip_hash): xxhash(dial+key), highest wins.
	Compat Algorithm = "compat"
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
	Name   string
	Weight int // >= 1
}

// Table maps keys to nodes. It is immutable once built and safe for
// concurrent use.
type Table struct {
	alg   Algorithm
	nodes []Node
}

// NewTable builds a table over nodes. Indices returned by Pick refer to
// positions in nodes (the caller's order); the mapping itself does not
// depend on that order. Names must be unique and weights >= 1; Compat
// accepts only weight 1.
func NewTable(alg Algorithm, nodes []Node) (*Table, error) {
	return &Table{alg: alg, nodes: append([]Node(nil), nodes...)}, nil
}

// Len returns the number of nodes.
func (t *Table) Len() int { return len(t.nodes) }

// Pick returns the index of the first node in key's preference order for
// which eligible returns true, or -1 if none is. A nil eligible accepts
// every node. Successive calls with a shrinking eligible set walk the
// key's preference order: this is how failover, retries and bounded load
// find the "next choice".
func (t *Table) Pick(key string, eligible func(i int) bool) int {
	best, bestScore := -1, uint64(0)
	for i, n := range t.nodes {
		if eligible != nil && !eligible(i) {
			continue
		}
		s := xxhash.Sum64String(n.Name + key)
		if best == -1 || s > bestScore {
			best, bestScore = i, s
		}
	}
	return best
}
