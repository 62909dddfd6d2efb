package affinity

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// TestRemoteHostKeyInEarlyData: a request in TLS early data (HTTP/3
// 0-RTT, which Caddy allows by default) has an empty
// {http.request.remote.host} placeholder; ip_hash hashes the address all
// the same. A key of that placeholder reads the address too: compat maps
// such requests as ip_hash does, and a returning client stays on its
// upstream whatever the algorithm (a review: 1,552 of 2,000 clients asking
// twice got two upstreams, through the fallback's random picks).
func TestRemoteHostKeyInEarlyData(t *testing.T) {
	early := func(r *http.Request) { r.TLS = &tls.ConnectionState{HandshakeComplete: false} }
	pool := fakePool(5)
	for _, alg := range []string{"compat", "rendezvous"} {
		s := provisioned(t, &AffinitySelection{Algorithm: alg, Keys: []string{"{http.request.remote.host}"}})
		differ, moved := 0, 0
		for i := range 500 {
			r1, w1 := newReq(ipAddr(i), early)
			r2, w2 := newReq(ipAddr(i), early)
			r3, w3 := newReq(ipAddr(i), nil) // after the handshake
			got := s.Select(pool, r1, w1)
			if alg == "compat" && got != (reverseproxy.IPHashSelection{}).Select(pool, r2, w2) {
				differ++
			}
			if got != s.Select(pool, r3, w3) {
				moved++
			}
		}
		if differ > 0 || moved > 0 {
			t.Errorf("%s: of 500 clients in early data, %d picked otherwise than ip_hash, %d otherwise than after the handshake; want 0 and 0", alg, differ, moved)
		}
	}
}

// TestCompatRetryKeepsTheKey: compat reads {http.request.header.X} from
// the request reverse_proxy sends, as Caddy's header policy does; on a
// retry that request carries the last attempt's header_up edits (here
// the field's removal), so the key was gone and the retry went to the
// fallback's random pick, retrying dead upstreams: a review saw 37 of 40
// requests leave the key's order and 6 get a 502 with 2 of 5 upstreams
// up. A retry takes the first attempt's key, as the other algorithms,
// which read the client's request, do.
func TestCompatRetryKeepsTheKey(t *testing.T) {
	for _, alg := range []string{"rendezvous", "compat"} {
		t.Run(alg, func(t *testing.T) {
			f := newProxyFixture(t, 2, 3,
				fmt.Sprintf(`{"policy":"affinity","algorithm":%q,"keys":["{http.request.header.X-User}"]}`, alg),
				`,"retries":4},"headers":{"request":{"delete":["X-User"]}}`, 0)
			dead := f.dials[:3]
			checked := 0
			for i := 0; i < 400 && checked < 40; i++ {
				user := fmt.Sprintf("user-%d", i)
				pref := preference(t, f.policy, f.h.Upstreams, user)
				if !slices.Contains(dead, pref[0]) {
					continue // only keys whose first choice is down retry
				}
				checked++
				r, w := newReq(ipAddr(1), func(r *http.Request) { r.Header.Set("X-User", user) })
				if err := f.h.ServeHTTP(w, r, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })); err != nil {
					t.Errorf("%s: %v, with 2 of 5 upstreams up and 4 retries", user, err)
				}
				vars := r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
				var tried []string
				switch st := vars[f.policy.stateKey].(type) {
				case *attempts:
					for _, u := range st.tried {
						tried = append(tried, u.Dial)
					}
				case *reverseproxy.Upstream:
					tried = []string{st.Dial}
				}
				firstLive := slices.IndexFunc(pref, func(d string) bool { return !slices.Contains(dead, d) })
				if !slices.Equal(tried, pref[:firstLive+1]) {
					t.Errorf("%s: tried %v, want the key's order %v", user, tried, pref[:firstLive+1])
				}
			}
			if checked < 10 {
				t.Fatalf("only %d keys had a dead first choice", checked)
			}
		})
	}
}

// TestCompatRetryIgnoresAnotherPolicysKey: the placeholder
// {http.reverse_proxy.affinity.key} is one name for every affinity policy
// a request meets (forward_auth's then reverse_proxy's, the instances
// comment; or a nested affinity fallback). A compat policy whose first
// attempt had no key (the header is absent: the fallback picked) takes,
// on a retry, the key another policy left there, as if it were its own
// first attempt's: the retry leaves the fallback for this policy's hash
// of the other policy's key (a client IP here).
func TestCompatRetryIgnoresAnotherPolicysKey(t *testing.T) {
	pool := fakePool(4)
	auth := provisioned(t, &AffinitySelection{Keys: []string{"{http.request.remote.host}"}})
	proxy := provisioned(t, &AffinitySelection{
		Algorithm:   "compat",
		Keys:        []string{"{http.request.header.X-User}"},
		FallbackRaw: json.RawMessage(`{"policy":"affinity_test_recorder"}`), // always the last upstream
	})
	r, w := newReq(ipAddr(7), nil) // no X-User
	auth.Select(pool, r, w)        // forward_auth's pick: sets the placeholder to the client's IP
	if up := proxy.Select(pool, r, w); up != pool[3] {
		t.Fatalf("first attempt %s, want the fallback's %s", dialOf(up), pool[3].Dial)
	}
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	k, _ := repl.GetString(keyPlaceholder)
	// The retry: the first attempt had no key, so the fallback again.
	if up := proxy.Select(pool, r, w); up != pool[3] {
		t.Errorf("retry picked %s by the placeholder %q another policy set; want the fallback's %s, as on the first attempt (which had no key)", dialOf(up), k, pool[3].Dial)
	}
}

// TestCompatRetryAfterANestedAffinityFallback: the same with the other
// policy nested as compat's fallback: the first attempt (no X-User) is the
// fallback's pick, which sets the placeholder to its own key; the retry
// reads it as compat's first key and ranks by compat's table instead of
// asking the fallback for its next choice.
func TestCompatRetryAfterANestedAffinityFallback(t *testing.T) {
	pool := fakePool(4)
	proxy := provisioned(t, &AffinitySelection{
		Algorithm:   "compat",
		Keys:        []string{"{http.request.header.X-User}"},
		FallbackRaw: json.RawMessage(`{"policy":"affinity","keys":["{http.request.remote.host}"]}`),
	})
	inner := proxy.fallback.(*AffinitySelection)
	r, w := newReq(ipAddr(7), nil) // no X-User
	first := proxy.Select(pool, r, w)
	src := "fallback"
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if k, ok := repl.GetString(keyPlaceholder); ok && k != "" {
		src = "placeholder " + k + " (the fallback's key)"
	}
	// What the fallback would pick on the retry: its own next choice.
	r2, w2 := newReq(ipAddr(7), nil)
	inner.Select(pool, r2, w2)
	want := inner.Select(pool, r2, w2)
	if got := proxy.Select(pool, r, w); got != want {
		t.Errorf("first %s; retry picked %s (key from %s), want the fallback's next choice %s", dialOf(first), dialOf(got), src, dialOf(want))
	}
}
