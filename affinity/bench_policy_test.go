package affinity

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// Benchmarks of the Caddy adapter: Select over a static pool, next to
// Caddy's own hash policies on the same pools and requests, so that ratios
// can be read off one run:
//
//	go test ./affinity/ -run '^$' -bench 'BenchmarkPolicy' -benchtime 200000x

var benchSizes = []int{10, 100, 1000}

// benchRequests returns n prepared requests from distinct clients, with mod
// applied to request i.
func benchRequests(n int, mod func(i int, r *http.Request)) ([]*http.Request, []http.ResponseWriter, []map[string]any) {
	reqs := make([]*http.Request, n)
	ws := make([]http.ResponseWriter, n)
	vars := make([]map[string]any, n)
	for i := range reqs {
		r, w := newReq(ipAddr(i), func(r *http.Request) {
			if mod != nil {
				mod(i, r)
			}
		})
		reqs[i], ws[i] = r, w
		vars[i] = r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
	}
	return reqs, ws, vars
}

// runSelect benchmarks sel over the requests. After each Select it forgets
// the affinity policy's per-request attempts (stateKey), so every
// iteration is a first attempt rather than a retry.
func runSelect(b *testing.B, sel reverseproxy.Selector, stateKey string, pool reverseproxy.UpstreamPool,
	reqs []*http.Request, ws []http.ResponseWriter, vars []map[string]any,
) {
	for i := range reqs { // warm up: build tables, grow maps
		if sel.Select(pool, reqs[i], ws[i]) == nil {
			b.Fatal("no upstream selected")
		}
		delete(vars[i], stateKey)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		sel.Select(pool, reqs[i], ws[i])
		delete(vars[i], stateKey)
		i = (i + 1) % len(reqs)
	}
}

func BenchmarkPolicySelect(b *testing.B) {
	for _, alg := range []Algorithm{Rendezvous, Ring, Maglev, Compat} {
		for _, n := range benchSizes {
			b.Run(fmt.Sprintf("alg=%s/n=%d", alg, n), func(b *testing.B) {
				s := provisioned(b, &AffinitySelection{Algorithm: string(alg)})
				reqs, ws, vars := benchRequests(64, nil)
				runSelect(b, s, s.stateKey, fakePool(n), reqs, ws, vars)
			})
		}
	}
}

func BenchmarkPolicySelectBounded(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("alg=maglev/n=%d", n), func(b *testing.B) {
			s := provisioned(b, &AffinitySelection{Algorithm: "maglev", Bound: 1.25})
			reqs, ws, vars := benchRequests(64, nil)
			runSelect(b, s, s.stateKey, fakePool(n), reqs, ws, vars)
		})
	}
}

// BenchmarkPolicySelectBoundedBusy measures the overflow path: the key's
// first choice is at its cap (one request in flight, cap 1), so each Select
// makes the O(n) pass that computes the cap and goes to the next choice.
// Upstreams other than the busy one are never dialed.
func BenchmarkPolicySelectBoundedBusy(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("alg=maglev/n=%d", n), func(b *testing.B) {
			f := newProxyFixture(b, 1, n-1, `{"policy":"affinity","algorithm":"maglev","bound":1.25}`, "", 0)
			busy := n - 1 // the live backend comes after the dead dials
			f.hold(busy, 1)
			set, err := f.policy.sets.get(f.h.Upstreams)
			if err != nil {
				b.Fatal(err)
			}
			client := -1
			for i := range 100000 {
				ip, _, _ := net.SplitHostPort(ipAddr(i))
				if set.poolIndex(set.table.Pick(ip, nil)) == busy {
					client = i
					break
				}
			}
			if client < 0 {
				b.Fatal("no client prefers the busy upstream")
			}
			reqs, ws, vars := benchRequests(1, nil)
			reqs[0], ws[0] = newReq(ipAddr(client), nil)
			vars[0] = reqs[0].Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
			if f.policy.Select(f.h.Upstreams, reqs[0], ws[0]) == f.h.Upstreams[busy] {
				b.Fatal("picked the busy upstream")
			}
			delete(vars[0], f.policy.stateKey)
			runSelect(b, f.policy, f.policy.stateKey, f.h.Upstreams, reqs, ws, vars)
		})
	}
}

func BenchmarkPolicyCookie(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("alg=maglev/n=%d", n), func(b *testing.B) {
			s := provisioned(b, &AffinitySelection{Algorithm: "maglev", Cookie: &CookieConfig{Secret: testSecret}})
			reqs, ws, vars := benchRequests(64, func(i int, r *http.Request) {
				id := fmt.Sprintf("%022d", i) // any 22 characters sign like an id
				r.Header.Set("Cookie", "session=x; lb_affinity="+sign(testSecret, id))
			})
			runSelect(b, s, s.stateKey, fakePool(n), reqs, ws, vars)
		})
	}
}

func BenchmarkPolicyCaddyClientIPHash(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			reqs, ws, vars := benchRequests(64, nil)
			runSelect(b, reverseproxy.ClientIPHashSelection{}, "", fakePool(n), reqs, ws, vars)
		})
	}
}

// BenchmarkPolicyCaddyCookieHash runs Caddy's cookie policy with a valid
// cookie naming the upstream in the middle of the pool: Caddy computes one
// HMAC per upstream until the cookie matches, so this is its average case.
func BenchmarkPolicyCaddyCookieHash(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			pool := fakePool(n)
			sel := &reverseproxy.CookieHashSelection{Name: "lb", Secret: testSecret}
			if err := sel.Provision(caddyCtx(b)); err != nil {
				b.Fatal(err)
			}
			m := hmac.New(sha256.New, []byte(testSecret))
			m.Write([]byte(pool[n/2].Dial))
			value := hex.EncodeToString(m.Sum(nil))
			reqs, ws, vars := benchRequests(64, func(_ int, r *http.Request) {
				r.Header.Set("Cookie", "session=x; lb="+value)
			})
			runSelect(b, sel, "", pool, reqs, ws, vars)
		})
	}
}
