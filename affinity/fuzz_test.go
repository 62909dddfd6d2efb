package affinity

import (
	"math/rand/v2"
	"testing"
)

// FuzzPick checks the invariants every algorithm promises, over random
// node sets, weights, keys and eligibility masks:
//   - the same key maps to the same node name in two builds and under any
//     permutation of the nodes, with and without an eligibility filter;
//   - Pick returns an eligible index, and -1 exactly when none is eligible;
//   - the preference order is consistent: excluding a node other than the
//     pick does not change the pick;
//   - rendezvous, ring and compat: making a node ineligible picks exactly
//     what a table without it picks, and removing it moves only its keys.
func FuzzPick(f *testing.F) {
	f.Add("session-1", uint8(0), uint8(5), uint64(1), false, uint64(0xffff))
	f.Add("", uint8(1), uint8(1), uint64(7), true, uint64(1))
	f.Add("203.0.113.7", uint8(2), uint8(40), uint64(99), true, uint64(0xaaaa_aaaa_aaaa))
	f.Add("/index.html", uint8(3), uint8(17), uint64(3), false, uint64(0))
	f.Fuzz(func(t *testing.T, key string, algSel, nSel uint8, seed uint64, weighted bool, mask uint64) {
		alg := allAlgorithms[int(algSel)%len(allAlgorithms)]
		n := 1 + int(nSel)%48
		nodes := testNodes(n)
		rng := rand.New(rand.NewPCG(seed, 0x5eed))
		if weighted && alg != Compat {
			for i := range nodes {
				nodes[i].Weight = 1 + rng.IntN(6)
			}
		}
		// Eligibility is a property of the name, so it survives permutation.
		eligibleName := func(name string) bool {
			for i, nd := range nodes {
				if nd.Name == name {
					return mask>>(uint(i)%64)&1 == 1
				}
			}
			panic("unknown node " + name)
		}
		anyEligible := false
		for _, nd := range nodes {
			anyEligible = anyEligible || eligibleName(nd.Name)
		}

		tab := mustTable(t, alg, nodes)
		elig := func(i int) bool { return eligibleName(nodes[i].Name) }
		want, wantElig := pickName(tab, key, nil), pickName(tab, key, elig)
		if want == "" {
			t.Fatalf("no pick over %d nodes with all eligible", n)
		}
		if (wantElig == "") == anyEligible || (wantElig != "" && !eligibleName(wantElig)) {
			t.Fatalf("Pick with mask %#x = %q; any eligible: %v", mask, wantElig, anyEligible)
		}

		perm := append([]Node(nil), nodes...)
		rng.Shuffle(len(perm), func(a, b int) { perm[a], perm[b] = perm[b], perm[a] })
		for _, other := range []*Table{mustTable(t, alg, nodes), mustTable(t, alg, perm)} {
			if got := pickName(other, key, nil); got != want {
				t.Fatalf("rebuilt or permuted table picks %q, want %q", got, want)
			}
			if got := pickName(other, key, func(i int) bool { return eligibleName(other.Node(i).Name) }); got != wantElig {
				t.Fatalf("rebuilt or permuted table picks %q under the mask, want %q", got, wantElig)
			}
		}

		if wantElig != "" && n > 1 {
			j := rng.IntN(n)
			if nodes[j].Name != wantElig {
				got := pickName(tab, key, func(i int) bool { return i != j && elig(i) })
				if got != wantElig {
					t.Fatalf("excluding %s changed the pick from %s to %s", nodes[j].Name, wantElig, got)
				}
			}
		}

		if alg == Maglev || n == 1 {
			return
		}
		d := rng.IntN(n)
		smaller := mustTable(t, alg, without(nodes, d))
		removed := pickName(smaller, key, nil)
		if failover := pickName(tab, key, func(i int) bool { return i != d }); failover != removed {
			t.Fatalf("with %s ineligible the pick is %s, without it %s", nodes[d].Name, failover, removed)
		}
		if want != nodes[d].Name && removed != want {
			t.Fatalf("removing %s moved key from %s to %s", nodes[d].Name, want, removed)
		}
	})
}
