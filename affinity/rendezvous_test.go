package affinity

import (
	"fmt"
	"math"
	"testing"
)

// referenceWeighted ranks every node by its exact clamped value, no
// shortcuts: the weighted fast paths must agree with it on every key.
func referenceWeighted(tab *Table, key string, eligible func(int) bool) int {
	kh := keyHash(key)
	best, bestX := -1, math.Inf(1)
	for i, s := range tab.seeds {
		if eligible != nil && !eligible(int(tab.order[i])) {
			continue
		}
		u, lo, hi := rankBounds(mix64(kh^s), tab.invWeight[i])
		if x := rankExact(u, lo, hi, tab.invWeight[i]); x < bestX {
			best, bestX = i, x
		}
	}
	if best < 0 {
		return -1
	}
	return int(tab.order[best])
}

func TestWeightedRendezvousShortcuts(t *testing.T) {
	for _, tc := range []struct {
		name    string
		weights []int
	}{
		{name: "two", weights: []int{1, 2}},
		{name: "1 to 4", weights: []int{1, 2, 3, 4}},
		{name: "skewed", weights: []int{1, 1000, 1, 1, 50}},
		{name: "many", weights: func() []int {
			w := make([]int, 300)
			for i := range w {
				w[i] = 1 + i%7
			}
			return w
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab := mustTable(t, Rendezvous, weightedNodes(tc.weights...))
			if !tab.weighted {
				t.Fatal("table with unequal weights not on the weighted path")
			}
			odd := func(i int) bool { return i%2 == 1 }
			for _, k := range testKeys(sizeFor(50_000, 10_000)) {
				if got, want := tab.Pick(k, nil), referenceWeighted(tab, k, nil); got != want {
					t.Fatalf("key %q: Pick %d, reference %d", k, got, want)
				}
				if got, want := tab.Pick(k, odd), referenceWeighted(tab, k, odd); got != want {
					t.Fatalf("key %q, odd nodes eligible: Pick %d, reference %d", k, got, want)
				}
			}
		})
	}
}

// TestRendezvousEqualWeightsUnweighted: equal weights of any size take the
// fast unweighted path, so {5,5,5} maps exactly like {1,1,1}.
func TestRendezvousEqualWeightsUnweighted(t *testing.T) {
	ones := mustTable(t, Rendezvous, weightedNodes(1, 1, 1, 1))
	fives := mustTable(t, Rendezvous, weightedNodes(5, 5, 5, 5))
	if ones.weighted || fives.weighted {
		t.Fatal("equal weights must not take the weighted path")
	}
	for _, k := range testKeys(5000) {
		if a, b := ones.Pick(k, nil), fives.Pick(k, nil); a != b {
			t.Fatalf("key %q: weights 1 pick %d, weights 5 pick %d", k, a, b)
		}
	}
}

// TestRendezvousWeightedMovement: in a weighted table too, removing a node
// moves only its keys, and each to the node it fails over to.
func TestRendezvousWeightedMovement(t *testing.T) {
	nodes := weightedNodes(1, 2, 3, 4, 5, 6)
	tab := mustTable(t, Rendezvous, nodes)
	for d := range nodes {
		t.Run(fmt.Sprintf("remove %d", d), func(t *testing.T) {
			smaller := mustTable(t, Rendezvous, without(nodes, d))
			for _, k := range testKeys(20_000) {
				before := pickName(tab, k, nil)
				after := pickName(smaller, k, nil)
				if before != nodes[d].Name && after != before {
					t.Fatalf("key %q moved from %s to %s", k, before, after)
				}
				if failover := pickName(tab, k, func(i int) bool { return i != d }); failover != after {
					t.Fatalf("key %q fails over to %s, the smaller table picks %s", k, failover, after)
				}
			}
		})
	}
}
