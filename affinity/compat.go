package affinity

import "github.com/cespare/xxhash/v2"

// Compat reproduces Caddy's hostByHashing (reverseproxy/selectionpolicies.go,
// v2.11.9), the core of ip_hash, client_ip_hash, uri_hash, query, header and
// cookie's fallback: node i scores xxhash64(dial_i + key), the highest
// score wins, and ties go to the node earlier in the caller's order because
// Caddy replaces its best only on a strictly higher score while iterating
// the pool in order. A switch from a built-in policy to compat therefore
// keeps every user on the upstream it had, provided nodes are given in
// pool order with Name set to Upstream.Dial.
//
// Compat is the one algorithm whose tie-break depends on the caller's order
// (ties need a 64-bit collision). It also differs from Caddy in one case of
// probability 2^-64 per node and key: Caddy never selects a node whose
// score is exactly 0 (it starts from highestHash = 0), Pick does, so that
// Pick returns -1 only when no node is eligible.
//
// The cost is one xxhash of dial+key per eligible node, nothing is
// allocated: when dial+key fit in 256 bytes the key is copied once to the
// end of a stack buffer and each dial is copied in front of it, so every
// node is one-shot xxhash.Sum64 (several times faster than a streaming
// Digest); longer inputs stream through a stack Digest.

// compatBuf is the stack buffer size for the one-shot path.
const compatBuf = 256

func (t *Table) pickCompat(key string, eligible func(int) bool) int {
	var buf [compatBuf]byte
	var d xxhash.Digest
	keyAt := compatBuf - len(key)
	if keyAt >= 0 {
		copy(buf[keyAt:], key)
	}
	best, bestScore := -1, uint64(0)
	for i := range t.nodes {
		if eligible != nil && !eligible(i) {
			continue
		}
		name := t.nodes[i].Name
		var h uint64
		if at := keyAt - len(name); at >= 0 {
			copy(buf[at:], name)
			h = xxhash.Sum64(buf[at:])
		} else {
			d.Reset()
			_, _ = d.WriteString(name)
			_, _ = d.WriteString(key)
			h = d.Sum64()
		}
		if h > bestScore || best < 0 {
			best, bestScore = i, h
		}
	}
	return best
}
