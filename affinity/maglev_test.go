package affinity

import (
	"fmt"
	"math"
	"testing"
)

func TestMaglevSizes(t *testing.T) {
	for _, p := range maglevSizes {
		for d := int64(2); d*d <= p; d++ {
			if p%d == 0 {
				t.Fatalf("table size %d is divisible by %d", p, d)
			}
		}
	}
	for _, tc := range []struct {
		name  string
		nodes []Node
		want  int
	}{
		{name: "one node", nodes: testNodes(1), want: 65537},
		{name: "655 nodes", nodes: testNodes(655), want: 65537},
		{name: "656 nodes", nodes: testNodes(656), want: 262139},
		{name: "weights 1:4 x 200", nodes: func() []Node {
			n := testNodes(200)
			for i := range n {
				n[i].Weight = 1 + i%4
			}
			return n // sum 500, min 1: 100*500 = 50000 slots
		}(), want: 65537},
		// Weights do not size the table (TestMaglevWeightChangeMovesFew).
		{name: "weights 1:1000", nodes: weightedNodes(1, 1000), want: 65537},
		{name: "weights 1:max", nodes: weightedNodes(1, MaxWeight), want: 65537},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := len(mustTable(t, Maglev, tc.nodes).lookup); got != tc.want {
				t.Fatalf("table size %d, want %d", got, tc.want)
			}
		})
	}
}

// TestMaglevSlotShares: slot counts follow the weights within two slots (one
// for the round structure, one for the last, partial round), and every
// node owns at least one slot however light.
func TestMaglevSlotShares(t *testing.T) {
	for _, tc := range []struct {
		name    string
		weights []int
	}{
		{name: "equal", weights: []int{1, 1, 1, 1, 1}},
		{name: "1 to 4", weights: []int{1, 2, 3, 4}},
		{name: "skewed", weights: []int{1, 1000, 7}},
		{name: "capped", weights: []int{1, MaxWeight, MaxWeight}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab := mustTable(t, Maglev, weightedNodes(tc.weights...))
			slots := make([]int, len(tc.weights))
			for _, o := range tab.lookup {
				slots[o]++
			}
			var sum int
			for _, w := range tc.weights {
				sum += w
			}
			m := float64(len(tab.lookup))
			for i, w := range tc.weights {
				want := m * float64(w) / float64(sum)
				if slots[i] < 1 || float64(slots[i]) < want-2 || float64(slots[i]) > want+2 {
					t.Errorf("weight %d owns %d of %d slots, want %.1f", w, slots[i], len(tab.lookup), want)
				}
			}
		})
	}
}

// TestMaglevFailoverSpread: the keys of an ineligible node follow their
// own probe sequences, so they spread over all other nodes evenly instead
// of piling onto a neighbour.
func TestMaglevFailoverSpread(t *testing.T) {
	for _, n := range []int{5, 50} {
		t.Run(fmt.Sprintf("n=%d", n), func(t *testing.T) {
			tab := mustTable(t, Maglev, testNodes(n))
			const down = 0
			got := make([]int, n)
			var displaced int
			for _, k := range testKeys(sizeFor(1_000_000, 200_000)) {
				if tab.Pick(k, nil) != down {
					continue
				}
				displaced++
				got[tab.Pick(k, func(i int) bool { return i != down })]++
			}
			mean := float64(displaced) / float64(n-1)
			for i, c := range got {
				if i == down {
					continue
				}
				// Sampling sd is sqrt(mean); allow 5 of them plus 2% for
				// the table's slot granularity.
				if d := math.Abs(float64(c) - mean); d > 5*math.Sqrt(mean)+0.02*mean {
					t.Errorf("node %d received %d displaced keys, mean %.0f", i, c, mean)
				}
			}
		})
	}
}

// TestMaglevWeightChangeMovesFew: changing one node's weight (a canary
// ramped up), or removing the lightest node, moves the keys to or from
// that node and few others: the table keeps its size, so other keys keep
// their slots.
func TestMaglevWeightChangeMovesFew(t *testing.T) {
	canary := func(w int) []Node {
		nodes := testNodes(11)
		for i := range nodes {
			nodes[i].Weight = 100
		}
		nodes[10].Weight = w
		return nodes
	}
	mixed := func() []Node {
		nodes := testNodes(201)
		for i := range nodes {
			nodes[i].Weight = 2 + i%6
		}
		nodes[200].Weight = 1
		return nodes
	}
	for _, tc := range []struct {
		name          string
		before, after []Node
		node          string // the node whose keys may move
	}{
		{"canary 1 to 5", canary(1), canary(5), canary(1)[10].Name},
		{"canary 5 to 100", canary(5), canary(100), canary(1)[10].Name},
		{"lightest removed", mixed(), mixed()[:200], mixed()[200].Name},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, after := mustTable(t, Maglev, tc.before), mustTable(t, Maglev, tc.after)
			keys := testKeys(sizeFor(200_000, 20_000))
			other := 0
			for _, k := range keys {
				b, a := pickName(before, k, nil), pickName(after, k, nil)
				if b != a && b != tc.node && a != tc.node {
					other++
				}
			}
			if share := float64(other) / float64(len(keys)); share > 0.05 {
				t.Errorf("%.1f%% of keys moved between other nodes, want under 5%%", 100*share)
			} else {
				t.Logf("%.2f%% of keys moved between other nodes", 100*share)
			}
		})
	}
}
