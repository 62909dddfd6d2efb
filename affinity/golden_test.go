package affinity

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// testdata/golden.txt freezes which node each of a few fixed keys maps to,
// first choice and failover choice, for every algorithm. It is the contract
// with production: a change that alters any line remaps real users to
// other upstreams (cold caches, lost sessions) on upgrade. Do not run
// -update to make this test pass; run it only for a deliberate, documented
// remapping (a new algorithm, or a breaking release note).
var updateGolden = flag.Bool("update", false, "rewrite testdata/golden.txt (remaps users: see golden_test.go)")

const goldenPath = "testdata/golden.txt"

// goldenSets are the node sets in golden.txt.
var goldenSets = []struct {
	name  string
	nodes []Node
}{
	{name: "five", nodes: []Node{{"10.0.0.1:80", 1}, {"10.0.0.2:80", 1}, {"10.0.0.3:80", 1}, {"10.0.0.4:80", 1}, {"10.0.0.5:80", 1}}},
	{name: "weighted", nodes: []Node{{"10.0.0.1:80", 1}, {"10.0.0.2:80", 2}, {"10.0.0.3:80", 3}, {"10.0.0.4:80", 4}}},
}

// goldenKeys cover the shapes keys take: client IPs, URIs, cookies,
// header values, empty, non-ASCII, and one longer than compat's 256-byte
// stack buffer.
var goldenKeys = []string{
	"", "a", "203.0.113.7", "198.51.100.23", "2001:db8::1", "::1",
	"/", "/index.html", "/api/v1/items?id=42", "/static/app.3f9c2b.js",
	"session-0", "session-1", "session-2", "session-3", "session-999999",
	"3b241101-e2bb-4255-8caf-4136c566a962", "Bearer eyJhbGciOiJIUzI1NiJ9",
	"tenant=acme", "tenant=globex", "ÄÖÜ-客户-🙂", "user@example.com", "x-api-key:7f1c",
	strings.Repeat("long-key/", 40),
}

// goldenLines computes golden.txt's lines from the current implementation.
func goldenLines(t *testing.T) []string {
	var lines []string
	for _, alg := range allAlgorithms {
		for _, set := range goldenSets {
			if alg == Compat && set.name == "weighted" {
				continue
			}
			tab := mustTable(t, alg, set.nodes)
			for _, k := range goldenKeys {
				first := tab.Pick(k, nil)
				second := tab.Pick(k, func(i int) bool { return i != first })
				lines = append(lines, strings.Join([]string{string(alg), set.name, strconv.Quote(k), set.nodes[first].Name, set.nodes[second].Name}, "\t"))
			}
		}
	}
	return lines
}

func TestGolden(t *testing.T) {
	got := goldenLines(t)
	if *updateGolden {
		var b strings.Builder
		b.WriteString("# algorithm\tset\tkey\tfirst choice\tchoice when the first is ineligible\n")
		b.WriteString("# Frozen: changing a line remaps users in production. See golden_test.go.\n")
		for _, l := range got {
			b.WriteString(l + "\n")
		}
		if err := os.MkdirAll(filepath.Dir(goldenPath), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(goldenPath, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %d lines to %s", len(got), goldenPath)
		return
	}
	f, err := os.Open(goldenPath)
	if err != nil {
		t.Fatalf("reading golden vectors: %v", err)
	}
	defer f.Close()
	var want []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := sc.Text(); l != "" && !strings.HasPrefix(l, "#") {
			want = append(want, l)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("golden.txt has %d vectors, the code produces %d", len(want), len(got))
	}
	mismatches := 0
	for i := range want {
		if got[i] != want[i] {
			mismatches++
			t.Errorf("vector %d remapped:\n  frozen: %s\n  now:    %s", i, want[i], got[i])
		}
	}
	if mismatches > 0 {
		t.Errorf("%d of %d golden vectors changed: this release would move users to other upstreams", mismatches, len(want))
	}
	// The vectors must exercise the mapping, not a constant: every node
	// of every set appears as a first choice somewhere.
	firsts := map[string]bool{}
	for _, l := range want {
		fields := strings.Split(l, "\t")
		firsts[fields[0]+"/"+fields[1]+"/"+fields[3]] = true
	}
	for _, alg := range allAlgorithms {
		for _, set := range goldenSets {
			if alg == Compat && set.name == "weighted" {
				continue
			}
			for _, n := range set.nodes {
				if !firsts[fmt.Sprintf("%s/%s/%s", alg, set.name, n.Name)] {
					t.Errorf("no golden key maps to %s in %s/%s; add keys", n.Name, alg, set.name)
				}
			}
		}
	}
}
