package affinity

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// newTestCache returns a setCache building rendezvous tables.
func newTestCache() *setCache {
	return &setCache{build: func(nodes []Node) (*Table, error) {
		for i := range nodes {
			nodes[i].Weight = 1
		}
		return NewTable(Rendezvous, nodes)
	}}
}

func mustGet(t *testing.T, c *setCache, pool reverseproxy.UpstreamPool) *upstreamSet {
	t.Helper()
	s, err := c.get(pool)
	if err != nil {
		t.Fatal(err)
	}
	if !sameDials(s.dials, pool) {
		t.Fatalf("set has dials %v, pool has others", s.dials)
	}
	return s
}

func TestSetCacheReuse(t *testing.T) {
	c := newTestCache()
	pool := fakePool(10)
	first := mustGet(t, c, pool)

	steps := []struct {
		name       string
		pool       reverseproxy.UpstreamPool
		wantBuilds int64
		wantSame   bool // the very set built first
	}{
		{"same slice", pool, 1, true},
		{"fresh upstreams, same dials", freshCopy(pool), 1, true},
		{"another fresh copy", freshCopy(pool), 1, true},
		{"sub-slice (different set)", pool[:9], 2, false},
		{"an upstream added", append(freshCopy(pool), &reverseproxy.Upstream{Dial: "10.9.9.9:80"}), 3, false},
		{"back to the first set", freshCopy(pool), 3, true},
		{"reordered (another list, the same Table)", reversed(pool), 3, false},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			s := mustGet(t, c, st.pool)
			if got := c.builds.Load(); got != st.wantBuilds {
				t.Errorf("builds = %d, want %d", got, st.wantBuilds)
			}
			if (s == first) != st.wantSame {
				t.Errorf("same set as the first: %v, want %v", s == first, st.wantSame)
			}
		})
	}
}

func reversed(pool reverseproxy.UpstreamPool) reverseproxy.UpstreamPool {
	out := slices.Clone(pool)
	slices.Reverse(out)
	return out
}

func TestSetCacheFastPath(t *testing.T) {
	c := newTestCache()
	pool := fakePool(5)
	mustGet(t, c, pool)
	if p := c.pin.Load(); p == nil || p.base != &pool[0] {
		t.Fatal("the slice that built the set is not pinned")
	}

	// A fresh slice is pinned only once it comes back a second time in a
	// row (a caching dynamic source), so per-call slices cost nothing.
	other := freshCopy(pool)
	mustGet(t, c, other)
	if c.pin.Load().base == &other[0] {
		t.Fatal("pinned a slice seen once")
	}
	mustGet(t, c, other)
	if c.pin.Load().base != &other[0] {
		t.Fatal("did not pin a slice seen twice in a row")
	}

	// The same backing array rewritten in place must not be served from
	// the pin.
	other[0] = &reverseproxy.Upstream{Dial: "10.8.8.8:80"}
	mustGet(t, c, other)
	other[len(other)-1] = &reverseproxy.Upstream{Dial: "10.7.7.7:80"}
	mustGet(t, c, other)
}

func TestSetCacheEviction(t *testing.T) {
	c := newTestCache()
	base := fakePool(maxRecentSets + 2)
	pools := make([]reverseproxy.UpstreamPool, maxRecentSets+1)
	for i := range pools {
		pools[i] = freshCopy(base[:i+1]) // distinct sets
		mustGet(t, c, pools[i])
	}
	if n := len(c.recent.Load().order); n != maxRecentSets {
		t.Fatalf("remembers %d sets, want %d", n, maxRecentSets)
	}
	builds := c.builds.Load()
	mustGet(t, c, freshCopy(pools[len(pools)-1])) // newest: kept
	mustGet(t, c, freshCopy(pools[1]))            // still within the last 8
	if got := c.builds.Load(); got != builds {
		t.Errorf("rebuilt a remembered set: builds %d -> %d", builds, got)
	}
	mustGet(t, c, freshCopy(pools[0])) // oldest: evicted
	if got := c.builds.Load(); got != builds+1 {
		t.Errorf("builds = %d, want %d after asking for the evicted set", got, builds+1)
	}
}

func TestSetCacheHashCollision(t *testing.T) {
	c := newTestCache()
	a, b := fakePool(2), fakePool(3)
	sa := mustGet(t, c, a)
	// Pretend b's set hashed like a's: remember replaces, lookup verifies.
	sb, err := c.newSet(b, sa.hash)
	if err != nil {
		t.Fatal(err)
	}
	c.remember(sb)
	if got := c.lookup(freshCopy(a), sa.hash); got != nil && !sameDials(got.dials, a) {
		t.Error("lookup returned a set with other dials")
	}
	if got := c.lookup(freshCopy(b), sa.hash); got != sb {
		t.Error("lookup missed the replacing set")
	}
	if n := len(c.recent.Load().order); n != 1 {
		t.Errorf("%d entries for one hash", n)
	}
}

func TestSetHashSeparatesDials(t *testing.T) {
	ab := reverseproxy.UpstreamPool{{Dial: "ab"}, {Dial: "c"}}
	bc := reverseproxy.UpstreamPool{{Dial: "a"}, {Dial: "bc"}}
	if setHash(ab) == setHash(bc) {
		t.Error(`["ab","c"] and ["a","bc"] hash alike`)
	}
}

func TestDuplicateDials(t *testing.T) {
	s := provisioned(t, &AffinitySelection{})
	pool := fakePool(4)
	dup := &reverseproxy.Upstream{Host: new(reverseproxy.Host), Dial: pool[1].Dial}
	withDup := append(slices.Clone(pool), dup)
	for i := range 300 {
		r1, w1 := newReq(ipAddr(i), nil)
		r2, w2 := newReq(ipAddr(i), nil)
		got, want := s.Select(withDup, r1, w1), s.Select(pool, r2, w2)
		if got == dup {
			t.Fatal("picked the second copy of a dial; the first should win, as in Caddy")
		}
		if got != want {
			t.Fatalf("client %d: %s with a duplicate, %s without", i, dialOf(got), dialOf(want))
		}
	}
}

func TestSetCacheConcurrent(t *testing.T) {
	c := newTestCache()
	pools := make([]reverseproxy.UpstreamPool, 4)
	base := fakePool(40)
	for i := range pools {
		pools[i] = base[:10*(i+1)]
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				p := pools[(g+i)%len(pools)]
				if i%3 == 0 {
					p = freshCopy(p)
				}
				s, err := c.get(p)
				if err != nil || !sameDials(s.dials, p) {
					errs <- fmt.Errorf("goroutine %d, round %d: wrong set (err %v)", g, i, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := c.builds.Load(); got != int64(len(pools)) {
		t.Errorf("builds = %d, want %d (one per set)", got, len(pools))
	}
}

// TestSetCacheReorderedPools: the same dials in any order (DNS answers
// rotate; Caddy looks them up again on retries) share one Table, and every
// order picks the same dial for a key, a duplicate dial included.
func TestSetCacheReorderedPools(t *testing.T) {
	for _, algorithm := range []string{"rendezvous", "ring", "maglev"} {
		t.Run(algorithm, func(t *testing.T) {
			s := provisioned(t, &AffinitySelection{Algorithm: algorithm, Keys: []string{"{http.request.header.X-Key}"}})
			pool := fakePool(7)
			pool = append(pool, &reverseproxy.Upstream{Host: new(reverseproxy.Host), Dial: pool[2].Dial}) // a duplicate
			want := map[string]string{}
			for k := range 300 {
				r, w := newReq(ipAddr(1), func(r *http.Request) { r.Header.Set("X-Key", strconv.Itoa(k)) })
				want[strconv.Itoa(k)] = dialOf(s.Select(pool, r, w))
			}
			rng := rand.New(rand.NewPCG(1, 2))
			for range 200 {
				shuffled := slices.Clone(pool)
				rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
				k := strconv.Itoa(rng.IntN(300))
				r, w := newReq(ipAddr(1), func(r *http.Request) { r.Header.Set("X-Key", k) })
				if got := dialOf(s.Select(shuffled, r, w)); got != want[k] {
					t.Fatalf("key %s: %s in a shuffled pool, %s in the original", k, got, want[k])
				}
			}
			if n := s.sets.builds.Load(); n != 1 {
				t.Errorf("%d tables built for one set of dials in 201 orders, want 1", n)
			}
		})
	}
}

// TestSetCacheRemembersAFailedBuild: a set whose Table cannot be built
// (dynamic upstreams whose weights pass the ring's limit) is not built
// again for every request, and its error is reported for logging once;
// other sets still build.
func TestSetCacheRemembersAFailedBuild(t *testing.T) {
	var attempts int
	c := &setCache{build: func(nodes []Node) (*Table, error) {
		attempts++
		if len(nodes) > 3 {
			return nil, fmt.Errorf("too many nodes: %d", len(nodes))
		}
		for i := range nodes {
			nodes[i].Weight = 1
		}
		return NewTable(Rendezvous, nodes)
	}}
	big := fakePool(4)
	var reports int
	for range 100 {
		_, err := c.get(freshCopy(big))
		var be *buildError
		if !errors.As(err, &be) {
			t.Fatalf("error %v, want a buildError", err)
		}
		if be.firstReport() {
			reports++
		}
	}
	if attempts != 1 || reports != 1 {
		t.Errorf("100 requests to a set that cannot be built: %d builds tried, %d reports; want 1 and 1", attempts, reports)
	}
	mustGet(t, c, fakePool(3))
	if _, err := c.get(big); err == nil || attempts != 2 {
		t.Errorf("after another set built: error %v, %d builds tried; want the remembered error and 2", err, attempts)
	}
	// The same upstreams in another order (DNS answers rotating), and two
	// failing sets taking turns (per-host lookups): built once each, and
	// reported once each.
	reversed := slices.Clone(big)
	slices.Reverse(reversed)
	other := fakePool(5)
	reports = 0
	for i := range 40 {
		pool := reversed
		if i%2 == 1 {
			pool = freshCopy(other)
		}
		_, err := c.get(pool)
		var be *buildError
		if !errors.As(err, &be) {
			t.Fatalf("error %v, want a buildError", err)
		}
		if be.firstReport() {
			reports++
		}
	}
	if attempts != 3 || reports != 1 {
		t.Errorf("a reordered failed set and another failing set in turn: %d builds tried, %d new reports; want 3 and 1", attempts, reports)
	}
}
