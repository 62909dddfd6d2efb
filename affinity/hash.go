package affinity

import "github.com/cespare/xxhash/v2"

// This file holds the small hashing primitives shared by the algorithms.
// Every constant here is part of the key -> node mapping: changing one
// remaps users in production (golden_test.go guards against that).

// keyHash hashes a request key once per Pick.
func keyHash(key string) uint64 { return xxhash.Sum64String(key) }

// nodeHash hashes a node name once, in NewTable; the algorithms derive their
// per-node seeds, ring points and Maglev permutations from it.
func nodeHash(name string) uint64 { return xxhash.Sum64String(name) }

// phi64 is the splitmix64 increment (2^64 / phi), used to step through a
// node's sequence of ring points and to derive independent seeds.
const phi64 = 0x9e3779b97f4a7c15

// mix64 is the splitmix64 finalizer (Stafford's variant 13): a bijection on
// uint64 with full avalanche, two multiplies. Rendezvous scores are
// mix64(keyHash ^ nodeSeed), so one 64-bit xor and this mixer replace a
// full hash of name+key per node.
func mix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// Failover walks (ring and Maglev) remember which nodes they have already
// found ineligible, so eligible is called at most once per node and a walk
// over a table where nothing is eligible stops after n distinct nodes
// instead of visiting every ring point or slot. The set lives on the stack:
// a small array for small tables, a MaxNodes-sized one otherwise, so the
// common case zeroes only 64 bytes.
const (
	smallSeenNodes = 512
	smallSeenWords = smallSeenNodes / 64
	bigSeenWords   = (MaxNodes + 63) / 64
)

func seenHas(seen []uint64, i int) bool { return seen[i>>6]&(1<<(uint(i)&63)) != 0 }
func seenAdd(seen []uint64, i int)      { seen[i>>6] |= 1 << (uint(i) & 63) }
