package affinity

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// ---- fixtures ----

var loadCaddyOnce sync.Once

// caddyCtx returns a Caddy context backed by a loaded, empty config (no
// admin endpoint, no listeners, nothing persisted), so that modules that
// need apps can be provisioned: reverse_proxy loads the events app. The
// context is cancelled, and its modules cleaned up, when t ends.
func caddyCtx(t testing.TB) caddy.Context {
	t.Helper()
	loadCaddyOnce.Do(func() {
		cfg := `{"admin":{"disabled":true,"config":{"persist":false}},
			"logging":{"logs":{"default":{"level":"ERROR"}}}}`
		if err := caddy.Load([]byte(cfg), true); err != nil {
			panic(fmt.Sprintf("loading empty caddy config: %v", err))
		}
	})
	ctx, cancel := caddy.NewContext(caddy.ActiveContext())
	t.Cleanup(cancel)
	return ctx
}

// provisioned provisions and validates s, failing t on error.
func provisioned(t testing.TB, s *AffinitySelection) *AffinitySelection {
	t.Helper()
	if err := s.Provision(caddyCtx(t)); err != nil {
		t.Fatalf("Provision: %v", err)
	}
	if err := s.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	return s
}

// fakePool returns n upstreams that are always available and never loaded:
// an unprovisioned Upstream has no health policy, no circuit breaker and no
// max_requests, so Available() is true; Host is set so NumRequests works.
func fakePool(n int) reverseproxy.UpstreamPool {
	pool := make(reverseproxy.UpstreamPool, n)
	for i := range pool {
		pool[i] = &reverseproxy.Upstream{Host: new(reverseproxy.Host), Dial: fmt.Sprintf("10.0.%d.%d:80", i/250, i%250+1)}
	}
	return pool
}

// freshCopy returns new Upstream values with pool's dials, as a dynamic
// upstream source does on every call.
func freshCopy(pool reverseproxy.UpstreamPool) reverseproxy.UpstreamPool {
	out := make(reverseproxy.UpstreamPool, len(pool))
	for i, u := range pool {
		out[i] = &reverseproxy.Upstream{Host: new(reverseproxy.Host), Dial: u.Dial}
	}
	return out
}

// newReq returns a request prepared like Caddy's server does (replacer and
// vars in the context; client_ip from RemoteAddr), and its recorder.
func newReq(remoteAddr string, mod func(*http.Request)) (*http.Request, *httptest.ResponseRecorder) {
	r := httptest.NewRequest(http.MethodGet, "http://example.com/path?q=1", nil)
	r.RemoteAddr = remoteAddr
	if mod != nil {
		mod(r)
	}
	w := httptest.NewRecorder()
	return caddyhttp.PrepareRequest(r, caddy.NewReplacer(), w, &caddyhttp.Server{}), w
}

// ipAddr returns the i-th test client address.
func ipAddr(i int) string {
	return fmt.Sprintf("192.0.%d.%d:1234", i/250%250, i%250+1)
}

// preference returns the dials of pool in key's preference order, as s's
// table for pool ranks them.
func preference(t testing.TB, s *AffinitySelection, pool reverseproxy.UpstreamPool, key string) []string {
	t.Helper()
	set, err := s.sets.get(pool)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	var taken []int
	for {
		i := set.table.Pick(key, func(i int) bool { return !slices.Contains(taken, i) })
		if i < 0 {
			return order
		}
		taken = append(taken, i)
		order = append(order, pool[set.poolIndex(i)].Dial)
	}
}

// dialOf returns u's dial, or "<nil>".
func dialOf(u *reverseproxy.Upstream) string {
	if u == nil {
		return "<nil>"
	}
	return u.Dial
}

// proxyFixture is a real, provisioned reverse_proxy handler using the
// affinity policy over backends on 127.0.0.1, plus one single-upstream
// "pin" handler per backend. Upstreams share their Host (request and fail
// counters) by dial address, so requests held open through a pin handler
// raise the in-flight count the main handler's policy sees: that is how
// tests make upstreams loaded, or full (unavailable) with max_requests.
type proxyFixture struct {
	t      testing.TB
	ctx    caddy.Context
	dials  []string
	h      *reverseproxy.Handler
	policy *AffinitySelection
	pins   []*reverseproxy.Handler

	arrived []chan struct{}
	gates   sync.Map // hold token -> chan struct{}
	next    int
	wg      sync.WaitGroup
}

// newProxyFixture starts live backends and dead dials (closed ports, so
// dialing fails) and provisions the handler with policyJSON as its
// selection policy and lbExtra as additional load_balancing members.
// maxRequests > 0 sets max_requests on every upstream.
func newProxyFixture(t testing.TB, live, dead int, policyJSON, lbExtra string, maxRequests int) *proxyFixture {
	t.Helper()
	f := &proxyFixture{t: t, ctx: caddyCtx(t)}
	for range dead {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		f.dials = append(f.dials, ln.Addr().String())
		ln.Close()
	}
	for i := range live {
		arrived := make(chan struct{}, 64)
		f.arrived = append(f.arrived, arrived)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if tok := r.Header.Get("X-Hold"); tok != "" {
				g, _ := f.gates.Load(tok)
				arrived <- struct{}{}
				<-g.(chan struct{})
			}
			fmt.Fprintf(w, "backend %d", i)
		}))
		t.Cleanup(srv.Close)
		f.dials = append(f.dials, srv.Listener.Addr().String())
	}
	t.Cleanup(func() {
		f.gates.Range(func(_, g any) bool {
			select {
			case <-g.(chan struct{}):
			default:
				close(g.(chan struct{}))
			}
			return true
		})
		f.wg.Wait()
	})

	ups := make([]string, len(f.dials))
	for i, d := range f.dials {
		if maxRequests > 0 {
			ups[i] = fmt.Sprintf(`{"dial":%q,"max_requests":%d}`, d, maxRequests)
		} else {
			ups[i] = fmt.Sprintf(`{"dial":%q}`, d)
		}
	}
	cfg := fmt.Sprintf(`{"upstreams":[%s],"load_balancing":{"selection_policy":%s%s}}`,
		strings.Join(ups, ","), policyJSON, lbExtra)
	f.h = loadProxy(t, f.ctx, cfg)
	f.policy = f.h.LoadBalancing.SelectionPolicy.(*AffinitySelection)
	for _, d := range f.dials {
		f.pins = append(f.pins, loadProxy(t, f.ctx, fmt.Sprintf(`{"upstreams":[{"dial":%q}]}`, d)))
	}
	return f
}

// loadProxy provisions a reverse_proxy handler from its JSON.
func loadProxy(t testing.TB, ctx caddy.Context, cfg string) *reverseproxy.Handler {
	t.Helper()
	mod, err := ctx.LoadModuleByID("http.handlers.reverse_proxy", json.RawMessage(cfg))
	if err != nil {
		t.Fatalf("loading reverse_proxy %s: %v", cfg, err)
	}
	return mod.(*reverseproxy.Handler)
}

// index returns the position of dial in the fixture's upstreams.
func (f *proxyFixture) index(dial string) int {
	i := slices.Index(f.dials, dial)
	if i < 0 {
		f.t.Fatalf("no upstream %s", dial)
	}
	return i
}

// loadCap returns the bounded-load cap of the upstream dial in pool for
// the policy's next request.
func (f *proxyFixture) loadCap(pool reverseproxy.UpstreamPool, dial string) int {
	f.t.Helper()
	set, err := f.policy.sets.get(pool)
	if err != nil {
		f.t.Fatal(err)
	}
	i, ok := set.index[dial]
	if !ok {
		f.t.Fatalf("no upstream %s", dial)
	}
	return loadCap(loadShare(set, pool, f.policy.Bound), set.table.Node(int(i)).Weight)
}

// hold opens k requests to upstream i (a live one) through its pin handler
// and returns once the backend has them all in flight; release ends them.
func (f *proxyFixture) hold(i, k int) (release func()) {
	f.t.Helper()
	f.next++
	tok := fmt.Sprint(f.next)
	gate := make(chan struct{})
	f.gates.Store(tok, gate)
	live := i - (len(f.dials) - len(f.arrived))
	var held sync.WaitGroup
	for range k {
		f.wg.Add(1)
		held.Add(1)
		go func() {
			defer f.wg.Done()
			defer held.Done()
			r, w := newReq("203.0.113.1:1", func(r *http.Request) { r.Header.Set("X-Hold", tok) })
			_ = f.pins[i].ServeHTTP(w, r, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil }))
		}()
	}
	for range k {
		<-f.arrived[live]
	}
	var once sync.Once
	// release lets the held requests finish and waits until they have, so
	// that the upstream's in-flight count is back down when it returns.
	return func() {
		once.Do(func() {
			close(gate)
			held.Wait()
		})
	}
}

// ---- rule 1: keys ----

func TestKeyResolution(t *testing.T) {
	s := provisioned(t, &AffinitySelection{Keys: []string{
		"{http.request.cookie.sid}", "{header.X-User}", "{http.request.uri.query.user}", "{host}{uri}",
	}})
	pool := fakePool(5)
	tests := []struct {
		name string
		mod  func(*http.Request)
		want string
	}{
		{"cookie wins", func(r *http.Request) {
			r.Header.Set("Cookie", "sid=abc")
			r.Header.Set("X-User", "bob")
		}, "abc"},
		{"header next (shorthand expanded)", func(r *http.Request) { r.Header.Set("X-User", "bob") }, "bob"},
		{"query next", func(r *http.Request) { r.URL.RawQuery = "user=carol" }, "carol"},
		{"composite last", nil, "example.com/path?q=1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, w := newReq(ipAddr(1), tt.mod)
			up := s.Select(pool, r, w)
			repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
			got, _ := repl.GetString(keyPlaceholder)
			if got != tt.want {
				t.Errorf("key = %q, want %q", got, tt.want)
			}
			if want := preference(t, s, pool, tt.want)[0]; dialOf(up) != want {
				t.Errorf("picked %s, want %s (first choice of %q)", dialOf(up), want, tt.want)
			}
		})
	}
}

func TestKeyParsing(t *testing.T) {
	tests := []struct {
		in   string
		want keyExpr
	}{
		{"{http.vars.client_ip}", keyExpr{expr: "{http.vars.client_ip}", name: "http.vars.client_ip", varName: "client_ip"}},
		{"{client_ip}", keyExpr{expr: "{http.vars.client_ip}", name: "http.vars.client_ip", varName: "client_ip"}},
		{"{vars.tenant}", keyExpr{expr: "{http.vars.tenant}", name: "http.vars.tenant", varName: "tenant"}},
		{"{cookie.sid}", keyExpr{expr: "{http.request.cookie.sid}", name: "http.request.cookie.sid", varName: ""}},
		{"{query.user}", keyExpr{expr: "{http.request.uri.query.user}", name: "http.request.uri.query.user", varName: ""}},
		{"{host}{uri}", keyExpr{expr: "{http.request.host}{http.request.uri}", name: "", varName: ""}},
		{"user-{header.X-User}", keyExpr{expr: "user-{http.request.header.X-User}", name: "", varName: ""}},
		{`{a\}b}`, keyExpr{expr: `{a\}b}`, name: "", varName: ""}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := parseKeys([]string{tt.in})[0]; got != tt.want {
				t.Errorf("parseKeys(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestCompositeKeyNeedsEveryPart(t *testing.T) {
	s := provisioned(t, &AffinitySelection{Keys: []string{"{header.X-A}-{header.X-B}", "{http.vars.never_set}-{header.X-A}"}})
	pool := fakePool(3)
	tests := []struct {
		name string
		mod  func(*http.Request)
		want string // "" = no key: fallback
	}{
		{"both parts", func(r *http.Request) { r.Header.Set("X-A", "a"); r.Header.Set("X-B", "b") }, "a-b"},
		{"one part empty", func(r *http.Request) { r.Header.Set("X-A", "a") }, ""},
		{"none", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, w := newReq(ipAddr(1), tt.mod)
			if s.Select(pool, r, w) == nil {
				t.Fatal("no upstream")
			}
			repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
			got, _ := repl.GetString(keyPlaceholder)
			if got != tt.want {
				t.Errorf("key = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestClientCertificateKeyNeedsACertificate: over TLS without a client
// certificate, Caddy answers the certificate's placeholders from an empty
// one (the same fingerprint for every such client): the key does not
// resolve, so the next key or the cookie decides (a review: every client
// without a certificate went to one upstream, with no cookie issued).
func TestClientCertificateKeyNeedsACertificate(t *testing.T) {
	for _, key := range []string{"{tls_client_fingerprint}", "{http.request.tls.client.serial}", "cert-{tls_client_fingerprint}",
		"{http.request.tls.CLIENT.fingerprint}", "{http.request.tls.Client.serial}"} { // (a review: any case after tls.)
		t.Run(key, func(t *testing.T) {
			s := provisioned(t, &AffinitySelection{Keys: []string{key, "{header.X-User}"}})
			r, w := newReq(ipAddr(1), func(r *http.Request) {
				r.TLS = &tls.ConnectionState{HandshakeComplete: true, Version: tls.VersionTLS13}
				r.Header.Set("X-User", "alice")
			})
			if s.Select(fakePool(3), r, w) == nil {
				t.Fatal("no upstream")
			}
			repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
			if got, _ := repl.GetString(keyPlaceholder); got != "alice" {
				t.Errorf("key = %q, want the next key's %q", got, "alice")
			}
		})
	}
	s := provisioned(t, &AffinitySelection{Keys: []string{"{tls_client_fingerprint}", "{header.X-User}"}})
	cert := &x509.Certificate{Raw: []byte("a client certificate")}
	r, w := newReq(ipAddr(1), func(r *http.Request) {
		r.TLS = &tls.ConnectionState{HandshakeComplete: true, PeerCertificates: []*x509.Certificate{cert}}
		r.Header.Set("X-User", "alice")
	})
	s.Select(fakePool(3), r, w)
	sum := sha256.Sum256(cert.Raw)
	if got, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer).GetString(keyPlaceholder); got != hex.EncodeToString(sum[:]) {
		t.Errorf("with a certificate: key %q, want its fingerprint", got)
	}
}

func TestDefaultKeyIsClientIP(t *testing.T) {
	s := provisioned(t, &AffinitySelection{})
	if !slices.Equal(s.Keys, []string{"{http.vars.client_ip}"}) {
		t.Fatalf("default Keys = %q", s.Keys)
	}
	pool := fakePool(10)
	for i := range 200 {
		r, w := newReq(ipAddr(i), nil)
		ip, _, _ := net.SplitHostPort(ipAddr(i))
		if got, want := dialOf(s.Select(pool, r, w)), preference(t, s, pool, ip)[0]; got != want {
			t.Fatalf("client %s: picked %s, want %s", ip, got, want)
		}
	}

	// Behind a trusted proxy Caddy puts the forwarded client address in
	// the client_ip var; the policy follows it, not RemoteAddr.
	r, w := newReq("10.1.1.1:5555", nil)
	caddyhttp.SetVar(r.Context(), caddyhttp.ClientIPVarKey, "198.51.100.7")
	if got, want := dialOf(s.Select(pool, r, w)), preference(t, s, pool, "198.51.100.7")[0]; got != want {
		t.Errorf("forwarded client: picked %s, want %s", got, want)
	}

	// With a cookie and no keys, the cookie is the only key.
	c := provisioned(t, &AffinitySelection{Cookie: &CookieConfig{Secret: "s"}})
	if len(c.Keys) != 0 {
		t.Errorf("cookie mode Keys = %q, want none", c.Keys)
	}
}

// ---- rule 2: sets (more in sets_test.go) ----

func TestMappingIgnoresPoolOrder(t *testing.T) {
	for _, alg := range []Algorithm{Rendezvous, Ring, Maglev, Compat} {
		t.Run(string(alg), func(t *testing.T) {
			s := provisioned(t, &AffinitySelection{Algorithm: string(alg)})
			pool := fakePool(20)
			rev := slices.Clone(pool)
			slices.Reverse(rev)
			for i := range 500 {
				r1, w1 := newReq(ipAddr(i), nil)
				r2, w2 := newReq(ipAddr(i), nil)
				if a, b := s.Select(pool, r1, w1), s.Select(rev, r2, w2); a != b {
					t.Fatalf("client %d: %s in listed order, %s in reverse", i, dialOf(a), dialOf(b))
				}
			}
		})
	}
}

// ---- rule 3: availability ----

func TestUnavailableUpstreamMovesOnlyItsKeys(t *testing.T) {
	f := newProxyFixture(t, 5, 0, `{"policy":"affinity"}`, "", 1)
	pool := f.h.Upstreams
	pick := func() []string {
		var got []string
		for i := range 300 {
			r, w := newReq(ipAddr(i), nil)
			got = append(got, dialOf(f.policy.Select(pool, r, w)))
		}
		return got
	}
	before := pick()

	down := f.index(before[0])
	release := f.hold(down, 1) // max_requests 1: full, so unavailable
	if pool[down].Available() {
		t.Fatal("held upstream still available")
	}
	during := pick()
	moved := 0
	for i := range before {
		ip, _, _ := net.SplitHostPort(ipAddr(i))
		switch {
		case before[i] == f.dials[down]:
			moved++
			if want := preference(t, f.policy, pool, ip)[1]; during[i] != want {
				t.Errorf("client %d: moved to %s, want its second choice %s", i, during[i], want)
			}
		case during[i] != before[i]:
			t.Errorf("client %d moved from %s to %s though its upstream is up", i, before[i], during[i])
		}
	}
	if moved == 0 {
		t.Fatal("no keys mapped to the upstream taken down")
	}

	release()
	f.wg.Wait()
	if after := pick(); !slices.Equal(after, before) {
		t.Error("mapping did not return once the upstream was available again")
	}
}

// TestFailoverIsWhereRemovalGoes: with rendezvous and ring, the keys of an
// upstream that is down go where they go once it is removed from the
// config, so they move once; maglev rebuilds its table without it, and
// most move again (the README says so; the share is logged).
func TestFailoverIsWhereRemovalGoes(t *testing.T) {
	pool := fakePool(5)
	for _, alg := range []Algorithm{Rendezvous, Ring, Maglev} {
		s := provisioned(t, &AffinitySelection{Algorithm: string(alg)})
		gone := pool[2]
		rest := slices.DeleteFunc(slices.Clone(pool), func(u *reverseproxy.Upstream) bool { return u == gone })
		its, again := 0, 0
		for i := range 2000 {
			key := fmt.Sprintf("user-%d", i)
			pref := preference(t, s, pool, key)
			if pref[0] != gone.Dial {
				continue
			}
			its++
			if preference(t, s, rest, key)[0] != pref[1] {
				again++
			}
		}
		if its == 0 {
			t.Fatalf("%s: no key on the upstream", alg)
		}
		if alg != Maglev && again != 0 {
			t.Errorf("%s: %d of the %d keys of an upstream that is down move again when it is removed", alg, again, its)
		}
		t.Logf("%s: %d of %d keys move again on removal", alg, again, its)
	}
}

// ---- rule 4: retries ----

func TestRetriesWalkPreferenceOrder(t *testing.T) {
	s := provisioned(t, &AffinitySelection{})
	pool := fakePool(5)
	r, w := newReq(ipAddr(7), nil)
	ip, _, _ := net.SplitHostPort(ipAddr(7))
	want := preference(t, s, pool, ip)
	for attempt, d := range want {
		// Dynamic upstream sources hand retries fresh Upstream values.
		p := pool
		if attempt%2 == 1 {
			p = freshCopy(pool)
		}
		if got := dialOf(s.Select(p, r, w)); got != d {
			t.Fatalf("attempt %d: picked %s, want %s (order %v)", attempt+1, got, d, want)
		}
	}
	// Everything tried: only the last one is excluded.
	if got := dialOf(s.Select(pool, r, w)); got != want[0] {
		t.Errorf("after all tried: picked %s, want %s", got, want[0])
	}

	// A new request starts over.
	r2, w2 := newReq(ipAddr(7), nil)
	if got := dialOf(s.Select(pool, r2, w2)); got != want[0] {
		t.Errorf("new request: picked %s, want %s", got, want[0])
	}
}

// TestRetryStartsOver: once every available upstream was tried, retries
// (lb_try_duration waiting for an upstream that restarts) go round the
// key's preference order again, each in turn; with one upstream, to it.
func TestRetryStartsOver(t *testing.T) {
	for _, n := range []int{1, 2, 3, 5} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			s := provisioned(t, &AffinitySelection{})
			pool := fakePool(n)
			r, w := newReq(ipAddr(7), nil)
			ip, _, _ := net.SplitHostPort(ipAddr(7))
			want := preference(t, s, pool, ip)
			var got []string
			for range 3*n + 1 {
				got = append(got, dialOf(s.Select(pool, r, w)))
			}
			for i, d := range got {
				if d != want[i%n] {
					t.Fatalf("attempts %v, want %v over and over", got, want)
				}
			}
		})
	}
}

// TestRetryOnlyAvailableUpstream: with the key's other upstreams full
// (max_requests), a retry goes back to the one that is available.
func TestRetryOnlyAvailableUpstream(t *testing.T) {
	f := newProxyFixture(t, 2, 0, `{"policy":"affinity"}`, "", 1)
	pool := f.h.Upstreams
	r, w := newReq(ipAddr(1), nil)
	first := f.policy.Select(pool, r, w)
	other := 1 - f.index(first.Dial)
	release := f.hold(other, 1)
	defer release()
	for i := range 3 {
		if up := f.policy.Select(pool, r, w); up != first {
			t.Fatalf("retry %d: got %s, want %s, the only one available", i+1, dialOf(up), first.Dial)
		}
	}
}

func TestRetriesThroughProxy(t *testing.T) {
	// Three dead upstreams (dialing fails, which Caddy always retries) and
	// two live ones; no health checks, so only the policy's memory of what
	// it tried keeps retries from going back.
	f := newProxyFixture(t, 2, 3, `{"policy":"affinity"}`, `,"retries":4`, 0)
	dead := f.dials[:3]
	checked := 0
	for i := 0; i < 200 && checked < 10; i++ {
		ip, _, _ := net.SplitHostPort(ipAddr(i))
		pref := preference(t, f.policy, f.h.Upstreams, ip)
		if !slices.Contains(dead, pref[0]) {
			continue
		}
		checked++
		firstLive := slices.IndexFunc(pref, func(d string) bool { return !slices.Contains(dead, d) })

		r, w := newReq(ipAddr(i), nil)
		err := f.h.ServeHTTP(w, r, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil }))
		if err != nil {
			t.Fatalf("client %s: %v", ip, err)
		}
		if want := fmt.Sprintf("backend %d", f.index(pref[firstLive])-3); w.Body.String() != want {
			t.Errorf("client %s: response %q, want %q", ip, w.Body.String(), want)
		}
		vars := r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
		st, ok := vars[f.policy.stateKey].(*attempts)
		if !ok {
			t.Fatalf("client %s: no attempts recorded after a retry", ip)
		}
		var tried []string
		for _, u := range st.tried {
			tried = append(tried, u.Dial)
		}
		if !slices.Equal(tried, pref[:firstLive+1]) {
			t.Errorf("client %s: tried %v, want the key's order %v", ip, tried, pref[:firstLive+1])
		}
	}
	if checked == 0 {
		t.Fatal("no client had a dead first choice")
	}
}

// ---- rule 5: bounded load ----

func TestBoundedLoad(t *testing.T) {
	f := newProxyFixture(t, 5, 0, `{"policy":"affinity","bound":1.25}`, "", 0)
	pool := f.h.Upstreams
	ip, _, _ := net.SplitHostPort(ipAddr(3))
	pref := preference(t, f.policy, pool, ip)

	// One hot key: without a bound every request would go to pref[0].
	var visited []string
	for n := range 20 {
		limit := f.loadCap(pool, pref[0]) // weights are equal: every upstream's
		r, w := newReq(ipAddr(3), nil)
		up := f.policy.Select(pool, r, w)
		if up == nil {
			t.Fatalf("request %d: no upstream", n)
		}
		if up.NumRequests() >= limit {
			t.Fatalf("request %d: %s has %d in flight, cap %d", n, up.Dial, up.NumRequests(), limit)
		}
		// The pick is the first upstream in the key's order with room.
		for _, d := range pref {
			u := pool[f.index(d)]
			if u.NumRequests() < limit {
				if u != up {
					t.Fatalf("request %d: picked %s, but %s comes first and has room", n, up.Dial, d)
				}
				break
			}
		}
		if !slices.Contains(visited, up.Dial) {
			visited = append(visited, up.Dial)
		}
		f.hold(f.index(up.Dial), 1)
	}
	if !slices.Equal(visited, pref[:len(visited)]) || len(visited) < 2 {
		t.Errorf("overflow went to %v, want a prefix of the key's order %v", visited, pref)
	}
	limit := f.loadCap(pool, pref[0])
	for _, u := range pool {
		if u.NumRequests() > limit {
			t.Errorf("%s: %d in flight exceeds the cap %d", u.Dial, u.NumRequests(), limit)
		}
	}
}

func TestLoadCap(t *testing.T) {
	f := newProxyFixture(t, 4, 0, `{"policy":"affinity","bound":1.25}`, "", 0)
	pool := f.h.Upstreams
	f.hold(0, 3)
	f.hold(1, 1)
	// ceil(1.25 * (4 + 1) / 4) = ceil(1.5625) = 2
	if got := f.loadCap(pool, f.dials[2]); got != 2 {
		t.Errorf("loadCap = %d, want 2", got)
	}
	// A huge bound is no bound, not an overflow to a negative cap.
	if got := loadCap(1e300, 1); got < 1<<30 {
		t.Errorf("loadCap with bound 1e300 = %d, want a cap nothing reaches", got)
	}
}

// TestBoundFollowsWeights: an upstream weighted to take three times the
// keys of the others may carry three times their load before its keys
// overflow: with one cap for all, bound 1.25 moved a third of its keys
// away while it carried only its weighted share.
func TestBoundFollowsWeights(t *testing.T) {
	f := newProxyFixture(t, 3, 0, `{"policy":"affinity"}`, "", 0)
	heavy := f.dials[0]
	cfg := fmt.Sprintf(`{"upstreams":[{"dial":%q},{"dial":%q},{"dial":%q}],"load_balancing":{"selection_policy":{"policy":"affinity","bound":1.25,"weights":{%q:3}}}}`,
		f.dials[0], f.dials[1], f.dials[2], heavy)
	h := loadProxy(t, f.ctx, cfg)
	p := h.LoadBalancing.SelectionPolicy.(*AffinitySelection)
	pool := h.Upstreams
	f.policy = p
	release0, release1 := f.hold(0, 3), f.hold(1, 1)
	// The share per weight: 1.25 × (4 + 1) / 5 = 1.25; caps 4, 2, 2.
	for dial, want := range map[string]int{heavy: 4, f.dials[1]: 2, f.dials[2]: 2} {
		if got := f.loadCap(pool, dial); got != want {
			t.Errorf("loadCap(%s) = %d, want %d", dial, got, want)
		}
	}
	release0()
	release1()

	const n = 90
	first, placed := 0, 0
	for i := range n { // one request per client, each stays in flight
		if preference(t, p, pool, fmt.Sprintf("192.0.2.%d", i+1))[0] == heavy {
			first++
		}
		r, w := newReq(fmt.Sprintf("192.0.2.%d:1234", i+1), nil)
		up := p.Select(pool, r, w)
		if up.Dial == heavy {
			placed++
		}
		f.hold(f.index(up.Dial), 1)
	}
	t.Logf("weight 3 of 5: %d of %d keys prefer it, %d placed on it under bound 1.25", first, n, placed)
	if first < n/4 || placed < first*9/10 {
		t.Errorf("%d of the %d keys that prefer the weight-3 upstream stayed on it under bound 1.25 (%d of %d in flight), want nearly all", placed, first, placed, n)
	}
}

// ---- rule 7: fallback ----

// recordingSelector is a selection policy that remembers the ResponseWriter
// it was given.
type recordingSelector struct{}

var (
	recordedMu sync.Mutex
	recordedW  []http.ResponseWriter
)

func (*recordingSelector) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.selection_policies.affinity_test_recorder",
		New: func() caddy.Module { return new(recordingSelector) },
	}
}

func (*recordingSelector) Select(pool reverseproxy.UpstreamPool, _ *http.Request, w http.ResponseWriter) *reverseproxy.Upstream {
	recordedMu.Lock()
	recordedW = append(recordedW, w)
	recordedMu.Unlock()
	return pool[len(pool)-1]
}

func init() { caddy.RegisterModule(new(recordingSelector)) }

func TestFallbackGetsResponseWriter(t *testing.T) {
	s := provisioned(t, &AffinitySelection{
		Keys:        []string{"{header.X-User}"},
		FallbackRaw: json.RawMessage(`{"policy":"affinity_test_recorder"}`),
	})
	pool := fakePool(4)
	r, w := newReq(ipAddr(1), nil)
	recordedMu.Lock()
	recordedW = nil
	recordedMu.Unlock()
	if up := s.Select(pool, r, w); up != pool[3] {
		t.Errorf("picked %s, want the fallback's choice %s", dialOf(up), pool[3].Dial)
	}
	recordedMu.Lock()
	defer recordedMu.Unlock()
	if len(recordedW) != 1 || recordedW[0] != http.ResponseWriter(w) {
		t.Errorf("fallback got writers %v, want exactly the request's", recordedW)
	}
	repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if v, ok := repl.Get(keyPlaceholder); ok {
		t.Errorf("key placeholder set to %v with no key", v)
	}

	// With a key the fallback is not consulted.
	r2, w2 := newReq(ipAddr(1), func(r *http.Request) { r.Header.Set("X-User", "u") })
	s.Select(pool, r2, w2)
	if len(recordedW) != 1 {
		t.Error("fallback consulted although the key resolved")
	}
}

func TestDefaultFallbackIsRandom(t *testing.T) {
	s := provisioned(t, &AffinitySelection{Keys: []string{"{header.X-User}"}})
	if _, ok := s.fallback.(*reverseproxy.RandomSelection); !ok {
		t.Errorf("fallback is %T, want *reverseproxy.RandomSelection", s.fallback)
	}
}

// ---- rule 8: placeholder and debug log ----

func TestDebugLogHashesKey(t *testing.T) {
	s := provisioned(t, &AffinitySelection{Keys: []string{"{header.X-User}"}})
	var buf bytes.Buffer
	enc := zap.NewDevelopmentEncoderConfig()
	s.logger = zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.AddSync(&buf), zapcore.DebugLevel))
	pool := fakePool(3)
	r, w := newReq(ipAddr(1), func(r *http.Request) { r.Header.Set("X-User", "alice@example.com") })
	up := s.Select(pool, r, w)
	s.Select(pool, r, w) // a retry

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("got %d log lines, want 2:\n%s", len(lines), buf.String())
	}
	if strings.Contains(buf.String(), "alice") {
		t.Errorf("log contains the raw key:\n%s", buf.String())
	}
	var e struct {
		Msg, KeySource, KeyHash, Dial string
		Attempt                       int
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatal(err)
	}
	e.Msg, _ = m["M"].(string)
	e.KeySource, _ = m["key_source"].(string)
	e.KeyHash, _ = m["key_hash"].(string)
	e.Dial, _ = m["dial"].(string)
	if a, ok := m["attempt"].(float64); ok {
		e.Attempt = int(a)
	}
	if e.Msg != "affinity pick" || e.KeySource != "{http.request.header.X-User}" || e.KeyHash != s.keyHash("alice@example.com") ||
		e.Dial != up.Dial || e.Attempt != 1 {
		t.Errorf("log entry = %+v", e)
	}
	if !strings.Contains(lines[1], `"attempt":2`) {
		t.Errorf("retry not logged as attempt 2: %s", lines[1])
	}
}

// ---- rule 9: weights ----

func TestWeightsReachTable(t *testing.T) {
	pool := fakePool(4)
	weights := map[string]int{pool[0].Dial: 5, pool[2].Dial: 2}
	s := provisioned(t, &AffinitySelection{Algorithm: "ring", Weights: weights})
	nodes := []Node{{pool[0].Dial, 5}, {pool[1].Dial, 1}, {pool[2].Dial, 2}, {pool[3].Dial, 1}}
	table, err := NewTable(Ring, nodes)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]int{}
	for i := range 2000 {
		r, w := newReq(ipAddr(i), nil)
		ip, _, _ := net.SplitHostPort(ipAddr(i))
		got := dialOf(s.Select(pool, r, w))
		if want := nodes[table.Pick(ip, nil)].Name; got != want {
			t.Fatalf("client %s: picked %s, a weighted table picks %s", ip, got, want)
		}
		counts[got]++
	}
	if counts[pool[0].Dial] <= counts[pool[1].Dial] {
		t.Errorf("weight 5 got %d keys, weight 1 got %d", counts[pool[0].Dial], counts[pool[1].Dial])
	}
}

func TestWeightsMustMatchStaticUpstreams(t *testing.T) {
	tests := []struct {
		name    string
		cfg     string
		wantErr string
	}{
		{
			name: "typo in dial",
			cfg: `{"upstreams":[{"dial":"10.0.0.1:80"},{"dial":"10.0.0.2:80"}],
				"load_balancing":{"selection_policy":{"policy":"affinity","weights":{"10.0.0.9:80":2}}}}`,
			wantErr: `lb_policy affinity: weight for "10.0.0.9:80" matches no upstream; weights name upstreams by their dial address (host:port), and the upstreams are 10.0.0.1:80, 10.0.0.2:80`,
		},
		{
			name: "matching dial",
			cfg: `{"upstreams":[{"dial":"10.0.0.1:80"},{"dial":"10.0.0.2:80"}],
				"load_balancing":{"selection_policy":{"policy":"affinity","weights":{"10.0.0.2:80":2}}}}`,
		},
		{
			name: "dynamic upstreams",
			cfg: `{"dynamic_upstreams":{"source":"a","name":"backend.invalid","port":"80"},
				"load_balancing":{"selection_policy":{"policy":"affinity","weights":{"10.0.0.9:80":2}}}}`,
		},
		{
			name: "empty dial",
			cfg: `{"upstreams":[{"dial":"10.0.0.1:80"}],
				"load_balancing":{"selection_policy":{"policy":"affinity","weights":{"":2}}}}`,
			wantErr: "validating affinity policy: weight for an empty upstream address",
		},
		{
			name: "nested as a fallback",
			cfg: `{"upstreams":[{"dial":"10.0.0.1:80"}],
				"load_balancing":{"selection_policy":{"policy":"header","field":"X-A",
					"fallback":{"policy":"affinity","weights":{"10.0.0.9:80":2}}}}}`,
			wantErr: `weight for "10.0.0.9:80" matches no upstream; weights name upstreams by their dial address (host:port), and the upstreams are 10.0.0.1:80`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := caddyCtx(t).LoadModuleByID("http.handlers.reverse_proxy", json.RawMessage(tt.cfg))
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestRepeatedDials(t *testing.T) {
	got := repeatedDials([]string{"a:1", "b:1", "a:1", "c:1", "b:1", "a:1"})
	if !slices.Equal(got, []string{"a:1", "b:1"}) {
		t.Errorf("repeatedDials = %q, want [a:1 b:1]", got)
	}
	if got := repeatedDials([]string{"a:1", "b:1"}); got != nil {
		t.Errorf("repeatedDials of distinct dials = %q", got)
	}
}

func TestStaticTableBuiltAtProvision(t *testing.T) {
	h := loadProxy(t, caddyCtx(t), `{"upstreams":[{"dial":"10.0.0.1:80"},{"dial":"10.0.0.2:80"},{"dial":"10.0.0.3:80"}],
		"load_balancing":{"selection_policy":{"policy":"affinity","algorithm":"maglev"}}}`)
	s := h.LoadBalancing.SelectionPolicy.(*AffinitySelection)
	if got := s.sets.builds.Load(); got != 1 {
		t.Fatalf("builds after provisioning = %d, want 1", got)
	}
	for i := range 50 {
		r, w := newReq(ipAddr(i), nil)
		if s.Select(h.Upstreams, r, w) == nil {
			t.Fatal("no upstream")
		}
	}
	if got := s.sets.builds.Load(); got != 1 {
		t.Errorf("builds after serving = %d, want 1", got)
	}
	if p := s.sets.pin.Load(); p == nil || p.base != &h.Upstreams[0] {
		t.Error("the handler's upstream slice is not on the fast path")
	}
}

// ---- rule 10: JSON validation (Caddyfile errors are in caddyfile_test.go) ----

func TestValidate(t *testing.T) {
	no := false
	tests := []struct {
		name    string
		s       *AffinitySelection
		wantErr string
	}{
		{"defaults", &AffinitySelection{}, ""},
		{"bound 1", &AffinitySelection{Bound: 1}, ""},
		{"bound below 1", &AffinitySelection{Bound: 0.5}, "bound must be a number >= 1 (or 0 for none), got 0.5"},
		{"bound negative", &AffinitySelection{Bound: -2}, "bound must be"},
		{"bound_floor without bound", &AffinitySelection{BoundFloor: 8}, "bound_floor 8 needs bound"},
		{"bound_floor negative", &AffinitySelection{Bound: 1.25, BoundFloor: -1}, "bound_floor must be a whole number from 1 to 2147483647, got -1"},
		{"bound_floor", &AffinitySelection{Bound: 1.25, BoundFloor: 8}, ""},
		{"weight zero", &AffinitySelection{Weights: map[string]int{"a:1": 0}}, `weight for "a:1" must be an integer from 1 to 1000000, got 0`},
		{"weight too big", &AffinitySelection{Weights: map[string]int{"a:1": MaxWeight + 1}}, "must be an integer from 1"},
		{"compat with weights", &AffinitySelection{Algorithm: "compat", Weights: map[string]int{"a:1": 2}}, "algorithm compat does not support weights"},
		{"unknown algorithm", &AffinitySelection{Algorithm: "jump"}, `algorithm: unknown algorithm "jump"`},
		{"literal key", &AffinitySelection{Keys: []string{"static"}}, `key: "static" has no placeholder`},
		{"unclosed key", &AffinitySelection{Keys: []string{"{http.request.header.X-User"}}, `key: "{http.request.header.X-User" has an unclosed {`},
		{"key twice", &AffinitySelection{Keys: []string{"{uri}", "{http.request.uri}"}}, `key "{http.request.uri}" is listed twice`},
		{"key twice, header names in another case", &AffinitySelection{Keys: []string{"{header.X-User}", "{http.request.header.x-user}"}}, `key "{http.request.header.x-user}" is listed twice, as "{http.request.header.X-User}"`},
		{"key twice, in another case", &AffinitySelection{Keys: []string{"{http.request.header.X-USER}", "{http.request.header.x-user}"}}, `key "{http.request.header.x-user}" is listed twice, as "{http.request.header.X-USER}" (header names are not case-sensitive)`},
		{"key typo", &AffinitySelection{Keys: []string{"{http.request.hedaer.X}"}}, "which Caddy does not know"},
		{"global key", &AffinitySelection{Keys: []string{"{system.hostname}"}}, "do not depend on the request"},
		{"key with the time", &AffinitySelection{Keys: []string{"{time.now.unix}{uri}"}}, `key: "{time.now.unix}{http.request.uri}" names {time.now.unix}, which changes with the clock`},
		{"JSON shorthand key", &AffinitySelection{Keys: []string{"{header.X-User}x}"}}, "without a matching {"},
		{"empty secret", &AffinitySelection{Cookie: &CookieConfig{}}, "cookie secret is required"},
		{"key on its own cookie", &AffinitySelection{Keys: []string{"{cookie.sid}"}, Cookie: &CookieConfig{Name: "sid", Secret: "s3cr3t-s3cr3t-s3cr3t"}}, `key "{http.request.cookie.sid}" reads the policy's own cookie sid`},
		{"key on its own cookie in another case", &AffinitySelection{Keys: []string{"{cookie.SID}"}, Cookie: &CookieConfig{Name: "sid", Secret: "s3cr3t-s3cr3t-s3cr3t"}}, `reads the policy's own cookie sid`},
		{"key on the Cookie header", &AffinitySelection{Keys: []string{"{header.cookie}"}, Cookie: &CookieConfig{Secret: "s3cr3t-s3cr3t-s3cr3t"}}, `reads the policy's own cookie lb_affinity`},
		{"key on a cookie named after it", &AffinitySelection{Keys: []string{"{cookie.sid2}"}, Cookie: &CookieConfig{Name: "sid", Secret: "s3cr3t-s3cr3t-s3cr3t"}}, ""},
		{"key on another cookie", &AffinitySelection{Keys: []string{"{cookie.session}"}, Cookie: &CookieConfig{Secret: "s3cr3t-s3cr3t-s3cr3t"}}, ""},
		{"secret placeholder unclosed", &AffinitySelection{Cookie: &CookieConfig{Secret: "{file./run/secrets/affinity"}}, "cookie secret has an unclosed { at offset 0"},
		{"secret with an escaped brace", &AffinitySelection{Cookie: &CookieConfig{Secret: `a\{b-0123456789abcdef`}}, ""},
		{"previous secret unclosed", &AffinitySelection{Cookie: &CookieConfig{Secret: "s", PreviousSecrets: []string{"{env.OLD"}}}, "cookie previous_secrets[0] has an unclosed {"},
		{"negative max_age", &AffinitySelection{Cookie: &CookieConfig{Secret: "s", MaxAge: -1}}, "cookie max_age must not be negative"},
		{"relative cookie path", &AffinitySelection{Cookie: &CookieConfig{Secret: "s", Path: "app"}}, `cookie path must start with /, got "app"`},
		{"cookie path with a space", &AffinitySelection{Cookie: &CookieConfig{Secret: "s", Path: "/a b"}}, `cookie path "/a b" has ' '`},
		{"cookie domain a public suffix", &AffinitySelection{Cookie: &CookieConfig{Secret: "s", Domain: "github.io"}}, `cookie domain "github.io" is a public suffix`},
		{"bad same_site", &AffinitySelection{Cookie: &CookieConfig{Secret: "s", SameSite: "loose"}}, `cookie same_site must be lax, strict or none, got "loose"`},
		{"same_site none insecure", &AffinitySelection{Cookie: &CookieConfig{Secret: "s", SameSite: "none", Secure: &no}}, "same_site none requires secure"},
		{"__Secure- insecure", &AffinitySelection{Cookie: &CookieConfig{Secret: "s", Name: "__Secure-aff", Secure: &no}}, `cookie name "__Secure-aff" requires secure`},
		{"__host- insecure", &AffinitySelection{Cookie: &CookieConfig{Secret: "s", Name: "__host-aff", Secure: &no}}, `cookie name "__host-aff" requires secure`},
		{"__Host- with domain", &AffinitySelection{Cookie: &CookieConfig{Secret: "s", Name: "__Host-aff", Domain: "example.com"}}, "requires path / and no domain"},
		{"__Host- with path", &AffinitySelection{Cookie: &CookieConfig{Secret: "s", Name: "__Host-aff", Path: "/app"}}, "requires path / and no domain"},
		{"__Host- with path /", &AffinitySelection{Cookie: &CookieConfig{Secret: "s", Name: "__Host-aff", Path: "/"}}, ""},
		{"__Secure- with domain and path", &AffinitySelection{Cookie: &CookieConfig{Secret: "s", Name: "__Secure-aff", Domain: "example.com", Path: "/app"}}, ""},
		{"bad cookie name", &AffinitySelection{Cookie: &CookieConfig{Secret: "s", Name: "my cookie"}}, `invalid cookie name "my cookie"`},
		{"cookie and fallback", &AffinitySelection{Cookie: &CookieConfig{Secret: "s"}, FallbackRaw: json.RawMessage(`{"policy":"first"}`)}, "fallback is never used when cookie is set"},
		{"cookie and fallback null", &AffinitySelection{Cookie: &CookieConfig{Secret: "s"}, FallbackRaw: json.RawMessage(`null`)}, ""},
		{"bad cookie domain", &AffinitySelection{Cookie: &CookieConfig{Secret: "s", Domain: "a b"}}, `invalid cookie domain "a b"`},
		{"ring weights too large", &AffinitySelection{Algorithm: "ring", Weights: map[string]int{"10.0.0.1:80": 20000}}, "weights: ring would need 3200000 points"},
		{"weight for no dial", &AffinitySelection{Weights: map[string]int{"": 3}}, "weight for an empty upstream address"},
		{"key on the body", &AffinitySelection{Keys: []string{"{http.request.body}"}}, `key: "{http.request.body}" names {http.request.body}: reverse_proxy has copied the request`},
		{"key on the body, shorthand in a composite", &AffinitySelection{Keys: []string{"{host}:{http.request.body_base64}"}}, "names {http.request.body_base64}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.s.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("error = %v, want it to contain %q", err, tt.wantErr)
			case err != nil && !strings.HasPrefix(err.Error(), "validating affinity policy: "):
				t.Errorf("error %q lacks the policy prefix", err)
			}
		})
	}
	t.Run("NaN and Inf", func(t *testing.T) {
		for _, b := range []float64{nan(), inf()} {
			s := AffinitySelection{Bound: b}
			if err := s.Validate(); err == nil {
				t.Errorf("bound %v accepted", b)
			}
		}
	})
}

func nan() float64 { z := 0.0; return z / z }
func inf() float64 { z := 0.0; return 1 / z }

// ---- rule 11: compat ----

func TestCompatMatchesCaddy(t *testing.T) {
	f := newProxyFixture(t, 7, 0, `{"policy":"affinity","algorithm":"compat"}`, "", 1)
	pool := f.h.Upstreams
	ctx := caddyCtx(t)

	header := &reverseproxy.HeaderHashSelection{Field: "X-User"}
	if err := header.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	hostHeader := &reverseproxy.HeaderHashSelection{Field: "Host"}
	if err := hostHeader.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	policies := []struct {
		name  string
		key   string
		caddy reverseproxy.Selector
		req   func(i int) (*http.Request, *httptest.ResponseRecorder)
	}{
		{"client_ip_hash", "{client_ip}", reverseproxy.ClientIPHashSelection{}, func(i int) (*http.Request, *httptest.ResponseRecorder) {
			return newReq(ipAddr(i), nil)
		}},
		{"uri_hash", "{uri}", reverseproxy.URIHashSelection{}, func(i int) (*http.Request, *httptest.ResponseRecorder) {
			return newReq(ipAddr(1), func(r *http.Request) {
				r.URL.Path = fmt.Sprintf("/item/%d", i)
				r.URL.RawQuery = fmt.Sprintf("page=%d", i%7)
				r.RequestURI = r.URL.RequestURI()
			})
		}},
		// uri_hash hashes the raw target, which the placeholder does not
		// give: an absolute-form target, raw UTF-8 in the path.
		{"uri_hash, raw target", "{uri}", reverseproxy.URIHashSelection{}, func(i int) (*http.Request, *httptest.ResponseRecorder) {
			return newReq(ipAddr(1), func(r *http.Request) {
				r.URL.Path = fmt.Sprintf("/é%d", i)
				r.RequestURI = fmt.Sprintf("/é%d", i)
				if i%2 == 0 {
					r.RequestURI = "http://example.com" + r.RequestURI
				}
			})
		}},
		// Caddy hashes the target as sent: compat does not fold the case
		// of percent-escapes as the other algorithms do.
		{"uri_hash, lower-case escapes", "{uri}", reverseproxy.URIHashSelection{}, func(i int) (*http.Request, *httptest.ResponseRecorder) {
			return newReq(ipAddr(1), func(r *http.Request) {
				target := fmt.Sprintf("/a%%2fb/%d?q=%%e9%d", i/2, i%2)
				if i%4 >= 2 {
					target = strings.ToUpper(target)
				}
				r.URL, _ = url.ParseRequestURI(target)
				r.RequestURI = target
			})
		}},
		{"header", "{header.X-User}", header, func(i int) (*http.Request, *httptest.ResponseRecorder) {
			return newReq(ipAddr(1), func(r *http.Request) { r.Header.Set("X-User", fmt.Sprintf("user%d", i)) })
		}},
		// Caddy's header policy hashes the first line; the placeholder
		// joins the lines.
		{"header on two lines", "{header.X-User}", header, func(i int) (*http.Request, *httptest.ResponseRecorder) {
			return newReq(ipAddr(1), func(r *http.Request) {
				r.Header.Add("X-User", fmt.Sprintf("user%d", i))
				r.Header.Add("X-User", "other")
			})
		}},
		{"ip_hash", "{http.request.remote.host}", reverseproxy.IPHashSelection{}, func(i int) (*http.Request, *httptest.ResponseRecorder) {
			return newReq(ipAddr(i), nil)
		}},
		{"header Host", "{http.request.hostport}", hostHeader, func(i int) (*http.Request, *httptest.ResponseRecorder) {
			return newReq(ipAddr(1), func(r *http.Request) { r.Host = fmt.Sprintf("site%d.example:8443", i) })
		}},
	}
	n := 3000
	if testing.Short() {
		n = 500
	}
	for _, p := range policies {
		t.Run(p.name, func(t *testing.T) {
			s := provisioned(t, &AffinitySelection{Algorithm: "compat", Keys: []string{p.key}})
			check := func(stage string) {
				for i := range n {
					r1, w1 := p.req(i)
					r2, w2 := p.req(i)
					got, want := s.Select(pool, r1, w1), p.caddy.Select(pool, r2, w2)
					if got != want {
						t.Fatalf("%s, key %d: affinity picked %s, Caddy's %s picked %s", stage, i, dialOf(got), p.name, dialOf(want))
					}
				}
			}
			check("all up")
			release := f.hold(2, 1) // max_requests 1: upstream 2 is full
			defer release()
			check("one unavailable")
		})
	}
}

// TestKeysFoldEscapeCase: a URL written with lower- and upper-case
// percent-escapes is one key, as it is one entry of response_cache, so a
// tier caches it on one node.
func TestKeysFoldEscapeCase(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"", ""}, {"abc", "abc"}, {"%", "%"}, {"%2", "%2"}, {"a%2", "a%2"}, {"%zz", "%zz"}, {"%2g", "%2g"},
		{"%2f", "%2F"}, {"/a%2fb%3a?q=%e9", "/a%2Fb%3A?q=%E9"}, {"%2F%3A", "%2F%3A"}, {"%%2f", "%%2F"},
		{"%af%Bc%d", "%AF%BC%d"}, {"100%-f", "100%-f"},
	} {
		if got := upperEscapes(tt.in); got != tt.want {
			t.Errorf("upperEscapes(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = upperEscapes("/a%2Fb/%E9?q=%20") }); n != 0 {
		t.Errorf("a key without lower-case escapes: %v allocs, want 0", n)
	}

	for _, alg := range []Algorithm{Rendezvous, Ring, Maglev} {
		s := provisioned(t, &AffinitySelection{Algorithm: string(alg), Keys: []string{"{uri}"}})
		pool := fakePool(10)
		moved := 0
		for i := range 300 {
			pick := func(target string) *reverseproxy.Upstream {
				r, w := newReq(ipAddr(1), func(r *http.Request) {
					r.URL, _ = url.ParseRequestURI(target)
					r.RequestURI = target
				})
				return s.Select(pool, r, w)
			}
			lower := pick(fmt.Sprintf("/a%%2fb/%d?c=%%e9", i))
			if upper := pick(fmt.Sprintf("/a%%2Fb/%d?c=%%E9", i)); upper != lower {
				t.Fatalf("%s: /a%%2fb/%d went to %s, /a%%2Fb/%d to %s", alg, i, dialOf(lower), i, dialOf(upper))
			}
			if lower != pick(fmt.Sprintf("/a/b/%d?c=%%e9", i)) {
				moved++
			}
		}
		if moved == 0 {
			t.Errorf("%s: /a%%2fb and /a/b always picked the same upstream: the escapes were decoded", alg)
		}
	}
}

// ---- hot path ----

func TestSelectAllocs(t *testing.T) {
	for _, alg := range []Algorithm{Rendezvous, Ring, Maglev} {
		t.Run(string(alg), func(t *testing.T) {
			s := provisioned(t, &AffinitySelection{Algorithm: string(alg)})
			pool := fakePool(100)
			r, w := newReq(ipAddr(1), nil)
			vars := r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
			repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
			s.Select(pool, r, w) // build the table, grow the vars map
			delete(vars, s.stateKey)

			pick := testing.AllocsPerRun(200, func() {
				key := s.keys[0].resolve(r, repl, vars)
				set, _ := s.sets.get(pool)
				if s.choose(set, pool, key, nil) < 0 {
					t.Fatal("no pick")
				}
			})
			if pick != 0 {
				t.Errorf("key + table + pick: %v allocs, want 0", pick)
			}
			full := testing.AllocsPerRun(200, func() {
				s.Select(pool, r, w)
				delete(vars, s.stateKey)
			})
			// The one allocation is boxing the key string for the
			// {http.reverse_proxy.affinity.key} placeholder.
			if full > 1 {
				t.Errorf("Select: %v allocs, want <= 1", full)
			}
			t.Logf("%s: pick %v allocs, Select %v allocs", alg, pick, full)
		})
	}
}

// TestKeyWarnings: keys that load but are probably not what was meant are
// logged at load.
func TestKeyWarnings(t *testing.T) {
	fallback := json.RawMessage(`{"policy":"first"}`)
	for _, tc := range []struct {
		name string
		s    *AffinitySelection
		want string // a part of the one warning; "" for none
	}{
		{"default", &AffinitySelection{}, ""},
		{"header then client_ip", &AffinitySelection{Keys: []string{"{header.X-User}", "{client_ip}"}}, ""},
		{"cookie alone", &AffinitySelection{Cookie: &CookieConfig{Secret: "s"}}, ""},
		{"header with cookie", &AffinitySelection{Keys: []string{"{header.X-User}"}, Cookie: &CookieConfig{Secret: "s"}}, ""},
		{"map output", &AffinitySelection{Keys: []string{"{tenant}"}}, ""},
		{"plugin placeholder", &AffinitySelection{Keys: []string{"{geoip2.country_code}"}}, ""},
		{"misspelt client_ip", &AffinitySelection{Keys: []string{"{remote_ip}"}}, "look like a misspelt shorthand"},
		{"misspelt shorthand", &AffinitySelection{Keys: []string{"{headers.X-User}"}}, "look like a misspelt shorthand"},
		{"client_ip with cookie", &AffinitySelection{Keys: []string{"{client_ip}"}, Cookie: &CookieConfig{Secret: "s"}}, "resolves for every request"},
		{"default key with fallback", &AffinitySelection{FallbackRaw: fallback}, "resolves for every request"},
		{"uri before a header", &AffinitySelection{Keys: []string{"{uri}", "{header.X-User}"}}, "resolves for every request"},
		{"the upstream's header", &AffinitySelection{Keys: []string{"{rp.header.X-User}"}}, "placeholders reverse_proxy sets"},
		{"its own output", &AffinitySelection{Keys: []string{"{http.reverse_proxy.affinity.key}"}}, "placeholders reverse_proxy sets"},
		{"an IPv6 prefix alone", &AffinitySelection{Keys: []string{"{http.request.remote.host/48}"}}, "fits IPv6 addresses only"},
		{"a prefix for each", &AffinitySelection{Keys: []string{"{http.request.remote.host/24,48}"}}, ""},
		{"no bit of IPv4", &AffinitySelection{Keys: []string{"{http.request.remote.host/0,48}"}}, "prefix of length 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := provisioned(t, tc.s)
			ws := s.keyWarnings()
			switch {
			case tc.want == "" && len(ws) > 0:
				t.Errorf("warnings %q, want none", ws[0].msg)
			case tc.want != "" && (len(ws) != 1 || !strings.Contains(ws[0].msg, tc.want)):
				t.Errorf("warnings %+v, want one containing %q", ws, tc.want)
			}
		})
	}
}

// TestBoundFloor: under light traffic the cap of bound is 1, so one
// request in flight sends every other key of its upstream to their next
// choice (a review moved three cookie users off their replica with one
// slow request); bound_floor keeps them until the upstream has that many
// in flight, and bounds as before past it.
func TestBoundFloor(t *testing.T) {
	for _, tc := range []struct {
		config string
		stays  int // requests in flight on the key's upstream it still goes to
	}{
		{`{"policy":"affinity","bound":1.25}`, 0},
		{`{"policy":"affinity","bound":1.25,"bound_floor":4}`, 3},
	} {
		f := newProxyFixture(t, 3, 0, tc.config, "", 0)
		pool := f.h.Upstreams
		ip, _, _ := net.SplitHostPort(ipAddr(3))
		pref := preference(t, f.policy, pool, ip)
		home := f.index(pref[0])
		for held := range 6 {
			r, w := newReq(ipAddr(3), nil)
			up := f.policy.Select(pool, r, w)
			if stays := up == pool[home]; stays != (held == 0 || held <= tc.stays) {
				t.Errorf("%s with %d in flight on %s: went to %s", tc.config, held, pref[0], up.Dial)
			}
			f.hold(home, 1)
		}
	}
}

// TestBoundFloorPastAnInt32: a 64-bit build refuses what a 32-bit one
// could not hold, so a config means the same on both.
func TestBoundFloorPastAnInt32(t *testing.T) {
	if strconv.IntSize == 32 {
		t.Skip("an int holds no more on this platform")
	}
	past := int64(1) << 40
	err := (&AffinitySelection{Bound: 1.25, BoundFloor: int(past)}).Validate()
	if err == nil || !strings.Contains(err.Error(), "bound_floor must be a whole number from 1 to 2147483647, got 1099511627776") {
		t.Errorf("Validate: %v, want the bound_floor limit", err)
	}
}
