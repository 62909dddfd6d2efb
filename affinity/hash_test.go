package affinity

import "testing"

// TestMix64KnownAnswers pins mix64 to the published splitmix64 outputs
// (seed 0: the first three values of Vigna's reference generator), so a
// "harmless" tweak to the mixer cannot slip through.
func TestMix64KnownAnswers(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   uint64
		want uint64
	}{
		{name: "first", in: 0x9e3779b97f4a7c15, want: 0xe220a8397b1dcdaf},
		{name: "second", in: 0x3c6ef372fe94f82a, want: 0x6e789e6aa1b965f4},
		{name: "third", in: 0xdaa66d2c7ddf743f, want: 0x06c45d188009454f},
		{name: "zero", in: 0, want: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := mix64(tc.in); got != tc.want {
				t.Fatalf("mix64(%#x) = %#x, want %#x", tc.in, got, tc.want)
			}
		})
	}
}

func TestSeenSet(t *testing.T) {
	var seen [bigSeenWords]uint64
	for _, i := range []int{0, 63, 64, 511, 512, MaxNodes - 1} {
		if seenHas(seen[:], i) {
			t.Fatalf("%d present before add", i)
		}
		seenAdd(seen[:], i)
		if !seenHas(seen[:], i) {
			t.Fatalf("%d missing after add", i)
		}
	}
	if seenHas(seen[:], 1) || seenHas(seen[:], 65) {
		t.Fatal("neighbours of added bits reported present")
	}
}
