package affinity

import (
	"cmp"
	"fmt"
	"slices"
	"testing"
)

// ringReference finds a key's point by binary search over all points, the
// textbook lookup the bucket index must reproduce.
func ringReference(tab *Table, key string) int {
	h := keyHash(key) &^ ringOwnerMask
	i, _ := slices.BinarySearchFunc(tab.points, h, func(p, h uint64) int {
		if p < h {
			return -1
		}
		return 1 // first point >= h
	})
	if i == len(tab.points) {
		i = 0
	}
	return int(tab.points[i] & ringOwnerMask)
}

func TestRingIndexMatchesBinarySearch(t *testing.T) {
	for _, n := range []int{1, 2, 3, 10, 100, 1000} {
		t.Run(fmt.Sprintf("n=%d", n), func(t *testing.T) {
			tab := mustTable(t, Ring, testNodes(n))
			if !slices.IsSortedFunc(tab.points, func(a, b uint64) int {
				return cmp.Compare(a>>16, b>>16) // positions only
			}) {
				t.Fatal("ring points not sorted by position")
			}
			if len(tab.points) != n*RingPointsPerWeight {
				t.Fatalf("%d points, want %d", len(tab.points), n*RingPointsPerWeight)
			}
			keys := append(testKeys(sizeFor(100_000, 20_000)), "")
			for _, k := range keys {
				if got, want := tab.Pick(k, nil), ringReference(tab, k); got != want {
					t.Fatalf("key %q: Pick %d, binary search %d", k, got, want)
				}
			}
		})
	}
}

// TestRingWrapAndPoints: a key past the last point wraps to the first, and
// every node owns exactly weight*RingPointsPerWeight points.
func TestRingWrapAndPoints(t *testing.T) {
	nodes := weightedNodes(1, 3, 2)
	tab := mustTable(t, Ring, nodes)
	owned := make([]int, len(nodes))
	for _, p := range tab.points {
		owned[p&ringOwnerMask]++
	}
	for i, nd := range nodes {
		if owned[i] != nd.Weight*RingPointsPerWeight {
			t.Errorf("%s owns %d points, want %d", nd.Name, owned[i], nd.Weight*RingPointsPerWeight)
		}
	}
	last := tab.points[len(tab.points)-1]
	var wrapped bool
	for _, k := range testKeys(1_000_000) {
		if keyHash(k)&^ringOwnerMask > last {
			wrapped = true
			if got, want := tab.Pick(k, nil), int(tab.points[0]&ringOwnerMask); got != want {
				t.Fatalf("key %q past the last point picks %d, want the first point's owner %d", k, got, want)
			}
			break
		}
	}
	if !wrapped {
		t.Fatal("no key beyond the last point in 1M keys; use more")
	}
}
