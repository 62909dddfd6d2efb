package integration

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/f06cdff9/caddy-affinity-cache/affinity"
)

// affinityFront is a Caddyfile: one front site proxying to backends with
// lb_policy affinity keyed by the X-Key header, plus extra policy options.
// Its responses name the pool in X-Pool (see mapKeys).
func affinityFront(frontPort int, backends []*backend, options string) string {
	return globals() + fmt.Sprintf(`
http://127.0.0.1:%d {
	header X-Pool "%s"
	reverse_proxy %s {
		lb_policy affinity {http.request.header.X-Key} {
			%s
		}
		lb_retries 3
	}
}
`, frontPort, poolName(backends), strings.Join(dials(backends), " "), options)
}

func dials(backends []*backend) []string {
	d := make([]string, len(backends))
	for i, b := range backends {
		d[i] = b.addr
	}
	return d
}

func poolName(backends []*backend) string { return strings.Join(dials(backends), ",") }

// mapKeys sends one request per key to the front proxying to pool and
// returns which backend answered each. Right after a POST /load the old
// config's server may still serve a connection it accepted on the shared
// listener; such an answer (another X-Pool) is asked again.
func mapKeys(t *testing.T, c *http.Client, url string, keys []string, pool []*backend) map[string]string {
	t.Helper()
	want := poolName(pool)
	got := make(map[string]string, len(keys))
	for _, k := range keys {
		r := do(t, c, "GET", url, map[string]string{"X-Key": k})
		for try := 1; r.header.Get("X-Pool") != want && try <= 10; try++ {
			t.Logf("key %s: answered by the config of pool %q; asking again", k, r.header.Get("X-Pool"))
			c.CloseIdleConnections()
			time.Sleep(time.Duration(try) * 20 * time.Millisecond)
			r = do(t, c, "GET", url, map[string]string{"X-Key": k})
		}
		if r.status != http.StatusOK || r.header.Get("X-Pool") != want {
			t.Fatalf("key %s: status %d, pool %q (want %q), body %q", k, r.status, r.header.Get("X-Pool"), want, r.body)
		}
		got[k] = r.header.Get("X-Backend")
	}
	return got
}

func testKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("user-%04d", i)
	}
	return keys
}

// predict maps keys the way an affinity table over backends' dial addresses
// does: what Caddy must answer with that pool loaded.
func predict(t *testing.T, alg string, backends []*backend, keys []string) map[string]string {
	t.Helper()
	nodes := make([]affinity.Node, len(backends))
	for i, b := range backends {
		nodes[i] = affinity.Node{Name: b.addr, Weight: 1}
	}
	tab, err := affinity.NewTable(affinity.Algorithm(alg), nodes)
	if err != nil {
		t.Fatal(err)
	}
	want := make(map[string]string, len(keys))
	for _, k := range keys {
		want[k] = backends[tab.Pick(k, nil)].name
	}
	return want
}

// checkMapping fails the test unless every key went where the table says.
func checkMapping(t *testing.T, phase string, got, want map[string]string) {
	t.Helper()
	for k, w := range want {
		if got[k] != w {
			t.Fatalf("%s: key %s went to %s; the table for this pool picks %s", phase, k, got[k], w)
		}
	}
}

func okHandler(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }

// TestAffinityMovesOnlyTheRemovedUpstreamsKeys maps keys, then removes one
// backend and adds another through the admin API (POST /load), and measures
// which keys moved.
func TestAffinityMovesOnlyTheRemovedUpstreamsKeys(t *testing.T) {
	for _, alg := range []string{"rendezvous", "ring", "maglev"} {
		t.Run(alg, func(t *testing.T) {
			var backends []*backend
			for i := 0; i < 6; i++ {
				backends = append(backends, startBackend(t, fmt.Sprintf("b%d", i), okHandler))
			}
			frontPort := freePort(t)
			url := fmt.Sprintf("http://127.0.0.1:%d/", frontPort)
			c := newClient()
			keys := testKeys(600)
			opts := "algorithm " + alg

			startCaddy(t, affinityFront(frontPort, backends[:5], opts))
			before := mapKeys(t, c, url, keys, backends[:5])
			checkMapping(t, "5 backends", before, predict(t, alg, backends[:5], keys))
			again := mapKeys(t, c, url, keys, backends[:5])
			for _, k := range keys {
				if before[k] != again[k] {
					t.Fatalf("key %s went to %s, then %s with nothing changed", k, before[k], again[k])
				}
			}
			perBackend := map[string]int{}
			for _, b := range before {
				perBackend[b]++
			}
			if len(perBackend) != 5 {
				t.Fatalf("600 keys reached %d of 5 backends: %v", len(perBackend), perBackend)
			}

			// Remove b2: only its keys may move.
			removed := backends[2].name
			shrunk := []*backend{backends[0], backends[1], backends[3], backends[4]}
			loadConfig(t, adminPort, affinityFront(frontPort, shrunk, opts))
			c.CloseIdleConnections() // the old config's connections are closing
			after := mapKeys(t, c, url, keys, shrunk)
			checkMapping(t, "b2 removed", after, predict(t, alg, shrunk, keys))
			moved, collateral := 0, 0
			for _, k := range keys {
				if before[k] != after[k] {
					moved++
					if before[k] != removed {
						collateral++
					}
				}
				if after[k] == removed {
					t.Fatalf("key %s still reached the removed backend", k)
				}
			}
			t.Logf("%s: removing 1 of 5 moved %d/%d keys (%.3f; its share was %.3f), %d not on it",
				alg, moved, len(keys), float64(moved)/float64(len(keys)), float64(perBackend[removed])/float64(len(keys)), collateral)
			// Maglev trades a little disruption for O(1) picks. How much
			// depends on the dial addresses, i.e. on this run's random
			// ports (0 to 7% of keys measured): checkMapping pins it to
			// the table's exact answer, and affinity's
			// TestRemoveNodeMovement bounds it on fixed names.
			if collateral > 0 && alg != "maglev" {
				t.Errorf("%d keys not on the removed backend moved; want 0", collateral)
			}

			// Add b5: keys move only to it, about 1/5 of them.
			grownPool := []*backend{backends[0], backends[1], backends[3], backends[4], backends[5]}
			loadConfig(t, adminPort, affinityFront(frontPort, grownPool, opts))
			c.CloseIdleConnections() // the old config's connections are closing
			grown := mapKeys(t, c, url, keys, grownPool)
			checkMapping(t, "b5 added", grown, predict(t, alg, grownPool, keys))
			moved, collateral = 0, 0
			for _, k := range keys {
				if grown[k] != after[k] {
					moved++
					if grown[k] != backends[5].name {
						collateral++
					}
				}
			}
			t.Logf("%s: adding a 5th moved %d/%d keys (%.3f), %d not to it", alg, moved, len(keys), float64(moved)/float64(len(keys)), collateral)
			if collateral > 0 && alg != "maglev" {
				t.Errorf("%d keys moved between old backends; want 0", collateral)
			}
			if moved < len(keys)/10 || moved > len(keys)*3/10 {
				t.Errorf("adding 1 to 4 backends moved %d of %d keys; want about 1/5", moved, len(keys))
			}
		})
	}
}

// TestAffinityRetriesGoToTheNextChoice stops one backend: requests for its
// keys must be retried on another backend (never the dead one again), and
// keys of the live backends must not move.
func TestAffinityRetriesGoToTheNextChoice(t *testing.T) {
	var backends []*backend
	for i := 0; i < 4; i++ {
		backends = append(backends, startBackend(t, fmt.Sprintf("r%d", i), okHandler))
	}
	frontPort := freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d/", frontPort)
	c := newClient()
	keys := testKeys(200)
	startCaddy(t, affinityFront(frontPort, backends, ""))
	before := mapKeys(t, c, url, keys, backends)

	dead := backends[1]
	_ = dead.srv.Close() // connection refused from now on
	deadHits := dead.hits.Load()
	after := mapKeys(t, c, url, keys, backends) // fails the test on any non-200
	for _, k := range keys {
		if before[k] != dead.name && after[k] != before[k] {
			t.Errorf("key %s moved from live backend %s to %s", k, before[k], after[k])
		}
		if after[k] == dead.name {
			t.Errorf("key %s answered by the stopped backend", k)
		}
	}
	if dead.hits.Load() != deadHits {
		t.Errorf("stopped backend served requests")
	}
}

// TestAffinityCookie checks the issued cookie pins a client, and that a
// tampered cookie is replaced rather than trusted.
func TestAffinityCookie(t *testing.T) {
	var backends []*backend
	for i := 0; i < 5; i++ {
		backends = append(backends, startBackend(t, fmt.Sprintf("c%d", i), okHandler))
	}
	frontPort := freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d/", frontPort)
	c := newClient()
	startCaddy(t, affinityFront(frontPort, backends, `cookie sticky {
				secret test-secret
				max_age 1h
			}`))

	// Different clients spread; each one sticks.
	seen := map[string]bool{}
	for i := 0; i < 40; i++ {
		first := do(t, c, "GET", url, nil)
		cookies := (&http.Response{Header: first.header}).Cookies()
		if len(cookies) != 1 || cookies[0].Name != "sticky" {
			t.Fatalf("want one sticky cookie, got Set-Cookie %q", first.header.Values("Set-Cookie"))
		}
		if cookies[0].MaxAge != 3600 {
			t.Errorf("cookie Max-Age = %d; want 3600", cookies[0].MaxAge)
		}
		if !cookies[0].HttpOnly {
			t.Error("affinity cookie is not HttpOnly")
		}
		pinned := first.header.Get("X-Backend")
		seen[pinned] = true
		for j := 0; j < 3; j++ {
			r := do(t, c, "GET", url, map[string]string{"Cookie": "sticky=" + cookies[0].Value})
			if got := r.header.Get("X-Backend"); got != pinned {
				t.Fatalf("client %d: cookie request went to %s, first to %s", i, got, pinned)
			}
			if r.header.Get("Set-Cookie") != "" {
				t.Fatalf("valid cookie replaced by %q", r.header.Get("Set-Cookie"))
			}
		}
		// A tampered cookie is treated as absent: a new one is issued.
		tampered := cookies[0].Value[:len(cookies[0].Value)-2] + "xx"
		r := do(t, c, "GET", url, map[string]string{"Cookie": "sticky=" + tampered})
		if r.header.Get("Set-Cookie") == "" {
			t.Fatalf("tampered cookie %q accepted without a new one", tampered)
		}
	}
	if len(seen) < 3 {
		t.Errorf("40 new clients reached only %d of 5 backends: %v", len(seen), seen)
	}

	// Rotating the secret through a reload, with the old one kept as a
	// previous secret: every client stays on its backend and gets its id
	// under the new secret, which works once the old secret is gone.
	type client struct{ cookie, backend string }
	var clients []client
	for range 30 {
		r := do(t, c, "GET", url, nil)
		clients = append(clients, client{(&http.Response{Header: r.header}).Cookies()[0].Value, r.header.Get("X-Backend")})
	}
	loadConfig(t, adminPort, affinityFront(frontPort, backends, `cookie sticky {
				secret new-test-secret
				previous_secrets test-secret
				max_age 1h
			}`))
	for i, cl := range clients {
		r := do(t, c, "GET", url, map[string]string{"Cookie": "sticky=" + cl.cookie})
		renewed := (&http.Response{Header: r.header}).Cookies()
		if r.header.Get("X-Backend") != cl.backend || len(renewed) != 1 || !strings.HasPrefix(renewed[0].Value, cl.cookie[:23]) {
			t.Fatalf("client %d after rotation: %s (was %s), Set-Cookie %q; want the same backend and its id renewed", i, r.header.Get("X-Backend"), cl.backend, r.header.Values("Set-Cookie"))
		}
		clients[i].cookie = renewed[0].Value
	}
	loadConfig(t, adminPort, affinityFront(frontPort, backends, `cookie sticky {
				secret new-test-secret
				max_age 1h
			}`))
	for i, cl := range clients {
		r := do(t, c, "GET", url, map[string]string{"Cookie": "sticky=" + cl.cookie})
		if r.header.Get("X-Backend") != cl.backend || r.header.Get("Set-Cookie") != "" {
			t.Fatalf("client %d with its renewed cookie: %s (was %s), Set-Cookie %q", i, r.header.Get("X-Backend"), cl.backend, r.header.Get("Set-Cookie"))
		}
	}
}
