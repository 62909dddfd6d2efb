package affinity

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// silentPolicy is a third-party selection policy whose Caddyfile
// unmarshaler reads no token, not even its name.
type silentPolicy struct{}

func (silentPolicy) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.reverse_proxy.selection_policies.affinity_test_silent", New: func() caddy.Module { return new(silentPolicy) }}
}

func (silentPolicy) Select(reverseproxy.UpstreamPool, *http.Request, http.ResponseWriter) *reverseproxy.Upstream {
	return nil
}

func (*silentPolicy) UnmarshalCaddyfile(*caddyfile.Dispenser) error { return nil }

func init() { caddy.RegisterModule(silentPolicy{}) }

// TestFallbackThatReadsNothing: what a fallback policy leaves unread is
// an error only when it read its own name; one that reads nothing cannot
// be judged, and is accepted as before.
func TestFallbackThatReadsNothing(t *testing.T) {
	var s AffinitySelection
	if err := s.UnmarshalCaddyfile(caddyfile.NewTestDispenser("affinity {\n fallback affinity_test_silent\n}")); err != nil {
		t.Fatalf("a fallback policy that reads no token: %v", err)
	}
	if !strings.Contains(string(s.FallbackRaw), `"policy":"affinity_test_silent"`) {
		t.Errorf("fallback = %s", s.FallbackRaw)
	}
}

// TestCookieAsFallbackOfCaddysPolicies: Caddy's header and query policies
// call their fallback without the response, so cookie mode there could
// never set its cookie; Caddy's cookie policy passes it on, as does
// affinity itself.
func TestCookieAsFallbackOfCaddysPolicies(t *testing.T) {
	const cookie = `{"policy":"affinity","cookie":{"secret":"` + testSecret + `"}}`
	tests := []struct {
		name, policy, wantErr string
	}{
		{"header", `{"policy":"header","field":"X-User","fallback":` + cookie + `}`,
			"cookie: as the fallback of lb_policy header it can never set its cookie (Caddy's header policy calls its fallback without the response); use lb_policy affinity with the key first and the cookie after it"},
		{"query", `{"policy":"query","key":"user","fallback":` + cookie + `}`,
			"cookie: as the fallback of lb_policy query it can never set its cookie"},
		{"header, through another affinity", `{"policy":"header","field":"X-User","fallback":{"policy":"affinity","keys":["{http.request.header.X-Other}"],"fallback":` + cookie + `}}`,
			"cookie: as the fallback of lb_policy header"},
		{"Caddy's cookie policy, under header through affinity", `{"policy":"header","field":"X-User","fallback":{"policy":"affinity","keys":["{http.request.header.X-Team}"],"fallback":{"policy":"cookie","name":"lb"}}}`,
			"lb_policy affinity: fallback cookie: under lb_policy header it would never get the response"},
		{"Caddy's cookie policy, under query through two affinity", `{"policy":"query","key":"user","fallback":{"policy":"affinity","keys":["{http.request.header.X-Team}"],"fallback":{"policy":"affinity","keys":["{http.request.header.X-Org}"],"fallback":{"policy":"cookie"}}}}`,
			"lb_policy affinity: fallback cookie: under lb_policy query"},
		{"Caddy's cookie policy, under affinity", `{"policy":"affinity","keys":["{http.request.header.X-Team}"],"fallback":{"policy":"cookie"}}`, ""},
		{"Caddy's cookie policy, under cookie through affinity", `{"policy":"cookie","fallback":{"policy":"affinity","keys":["{http.request.header.X-Team}"],"fallback":{"policy":"cookie","name":"lb2"}}}`, ""},
		{"header, through Caddy's cookie policy", `{"policy":"header","field":"X-User","fallback":{"policy":"cookie","fallback":` + cookie + `}}`,
			"cookie: as the fallback of lb_policy header"}, // the cookie policy passes on the nil it got
		{"cookie", `{"policy":"cookie","fallback":` + cookie + `}`, ""},
		{"affinity", `{"policy":"affinity","keys":["{http.request.header.X-User}"],"fallback":` + cookie + `}`, ""},
		{"itself", cookie, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := `{"upstreams":[{"dial":"10.0.0.1:80"}],"load_balancing":{"selection_policy":` + tt.policy + `}}`
			_, err := caddyCtx(t).LoadModuleByID("http.handlers.reverse_proxy", json.RawMessage(cfg))
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("unexpected error: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

// selectsWithoutAWriter has s pick for three requests without a
// response, as a plugin's policy calling it might, and checks that each
// gets an upstream and that the log has warning once.
func selectsWithoutAWriter(t *testing.T, s *AffinitySelection, pool reverseproxy.UpstreamPool, warning string) {
	t.Helper()
	core, logs := observer.New(zap.WarnLevel)
	s.logger = zap.New(core)
	for i := range 3 {
		r, _ := newReq(ipAddr(i), nil)
		if s.Select(pool, r, nil) == nil {
			t.Fatal("no upstream without a writer")
		}
	}
	if got := logs.FilterMessageSnippet(warning).Len(); got != 1 {
		t.Errorf("%d warnings %q for 3 requests without a writer, want 1: %v", got, warning, logs.All())
	}
}

// TestCaddysCookieFallbackWithoutAWriter: a plugin's policy that calls
// this one without the response, its fallback Caddy's cookie policy (which
// sets its cookie without looking), still gets an upstream for each
// request, not a panic, and the log says, once, why its clients keep
// getting new cookies; with the response the fallback's cookie is set.
func TestCaddysCookieFallbackWithoutAWriter(t *testing.T) {
	s := provisioned(t, &AffinitySelection{
		Keys:        []string{"{http.request.header.X-Team}"},
		FallbackRaw: json.RawMessage(`{"policy":"cookie","name":"lb"}`),
	})
	pool := fakePool(5)
	selectsWithoutAWriter(t, s, pool, "affinity's fallback, Caddy's cookie policy, cannot set its cookie")
	r, w := newReq(ipAddr(9), nil)
	if s.Select(pool, r, w) == nil {
		t.Fatal("no upstream with a writer")
	}
	if c := w.Result().Cookies(); len(c) != 1 || c[0].Name != "lb" {
		t.Errorf("with a writer, cookies %v, want the fallback's lb", c)
	}
}

// TestCookieWithoutAWriterWarnsOnce: a plugin's policy that calls cookie
// mode without the response still gets an upstream for each request, and
// the log says, once, why its clients keep getting new ids.
func TestCookieWithoutAWriterWarnsOnce(t *testing.T) {
	s := cookiePolicy(t, CookieConfig{})
	pool := fakePool(5)
	selectsWithoutAWriter(t, s, pool, "affinity cookie cannot be set")
	r, w := newReq(ipAddr(9), nil)
	s.Select(pool, r, w)
	if len(setCookies(w.Header())) != 1 {
		t.Error("with a writer, no cookie set")
	}

	// A cookie signed with a previous secret, which would be issued again.
	const old = "an old secret, long enough......"
	rotated := cookiePolicy(t, CookieConfig{PreviousSecrets: []string{old}})
	core, logs := observer.New(zap.WarnLevel)
	rotated.logger = zap.New(core)
	r, _ = newReq(ipAddr(10), func(r *http.Request) {
		r.AddCookie(&http.Cookie{Name: defaultCookieName, Value: sign(old, "AAAAAAAAAAAAAAAAAAAAAA")})
	})
	if rotated.Select(pool, r, nil) == nil {
		t.Fatal("no upstream for a renewed cookie without a writer")
	}
	if logs.FilterMessageSnippet("affinity cookie cannot be set").Len() != 1 {
		t.Errorf("renewing without a writer: %v, want the warning", logs.All())
	}
}

// TestKeyWarningsOnlyForConfigsThatLoad: the warnings about keys come
// once the config is known to be valid, not before the error that
// refuses it.
func TestKeyWarningsOnlyForConfigsThatLoad(t *testing.T) {
	for _, tc := range []struct {
		keys  []string
		valid bool
	}{
		{[]string{"{http.request.uri}", "{http.request.uri}"}, false}, // listed twice
		{[]string{"{http.request.uri}", "{http.request.header.X-User}"}, true},
	} {
		s := &AffinitySelection{Keys: tc.keys}
		if err := s.Provision(caddyCtx(t)); err != nil {
			t.Fatal(err)
		}
		core, logs := observer.New(zap.WarnLevel)
		s.logger = zap.New(core)
		err := s.Validate()
		_ = s.Validate() // as Caddy does after provisioning with static upstreams, which checks it too
		warned := logs.FilterMessageSnippet("the keys after it").Len()
		if want := map[bool]int{true: 1}[tc.valid]; (err == nil) != tc.valid || warned != want {
			t.Errorf("keys %q: error %v, %d warnings; want one warning for a valid config, none for another", tc.keys, err, warned)
		}
	}
}

// TestUnbuildableTableLogsOnce: dynamic upstreams whose weights pass the
// ring's limit at run time send their requests to the fallback, and the
// error is logged once, not at every request (each of which rebuilt the
// table).
func TestUnbuildableTableLogsOnce(t *testing.T) {
	s := provisioned(t, &AffinitySelection{Keys: []string{"{http.request.header.X-User}"}, Algorithm: string(Ring),
		Weights: map[string]int{"10.0.0.1:80": 13000}})
	core, logs := observer.New(zap.ErrorLevel)
	s.logger = zap.New(core)
	pool := fakePool(200) // 13,000 + 199 units of 160 points: past the ring's 2,097,152
	for i := range 20 {
		r, w := newReq(ipAddr(i), func(r *http.Request) { r.Header.Set("X-User", strconv.Itoa(i)) })
		if s.Select(freshCopy(pool), r, w) == nil {
			t.Fatal("no upstream from the fallback")
		}
	}
	if n := logs.FilterMessageSnippet("building hash table failed").Len(); n != 1 {
		t.Errorf("%d errors logged for 20 requests, want 1", n)
	}
}

// TestWeightsMatchSRVDials: dynamic SRV upstreams dial their targets as DNS
// names them, with the root dot (app.test.:8080); a weight written as
// reverse_proxy's line would (app.test:8080) applies to them, and a weight
// that matches no upstream of a set is logged once, not silently ignored.
func TestWeightsMatchSRVDials(t *testing.T) {
	s := provisioned(t, &AffinitySelection{Keys: []string{"{http.request.header.X-User}"},
		Weights: map[string]int{"b.test:8080": 9, "gone.test:8080": 2}})
	core, logs := observer.New(zap.WarnLevel)
	s.logger = zap.New(core)
	pool := reverseproxy.UpstreamPool{
		{Host: new(reverseproxy.Host), Dial: "a.test.:8080"},
		{Host: new(reverseproxy.Host), Dial: "b.test.:8080"},
	}
	toB := 0
	const users = 2000
	for i := range users {
		r, w := newReq(ipAddr(i), func(r *http.Request) { r.Header.Set("X-User", strconv.Itoa(i)) })
		if s.Select(freshCopy(pool), r, w).Dial == "b.test.:8080" {
			toB++
		}
	}
	// Weights 1 and 9: b gets 90% of users (rendezvous is exact to a
	// percent or so at 2,000 users); unweighted it would get half.
	if share := float64(toB) / users; share < 0.85 || share > 0.95 {
		t.Errorf("b.test.:8080 got %.1f%% of users, want about 90%% (its weight, 9, written without the root dot)", 100*share)
	}
	warned := logs.FilterMessageSnippet("weight matches none of the upstreams").All()
	if len(warned) != 1 || fmt.Sprint(warned[0].ContextMap()["weights"]) != "[gone.test:8080]" {
		t.Errorf("warnings %v for a weight (gone.test:8080) that matches no upstream, want 1 naming it alone", warned)
	}
	// A set missing b.test logs b.test's weight, once, beside gone.test's
	// (not again); a weight that never matches is named in the first set.
	for i := range 2 {
		r, w := newReq(ipAddr(i), func(r *http.Request) { r.Header.Set("X-User", strconv.Itoa(i)) })
		s.Select(freshCopy(pool[:1]), r, w)
	}
	warned = logs.FilterMessageSnippet("weight matches none of the upstreams").All()
	if len(warned) != 2 || fmt.Sprint(warned[1].ContextMap()["weights"]) != "[b.test:8080]" {
		t.Errorf("warnings %v after a set without b.test.:8080, want a second naming b.test:8080 alone", warned)
	}
}

// TestRootless: a dial's host loses its root dot, and only that.
func TestRootless(t *testing.T) {
	for in, want := range map[string]string{
		"app.test.:80":  "app.test:80",
		"app.test:80":   "app.test:80",
		"10.0.0.1:80":   "10.0.0.1:80",
		"[::1]:80":      "[::1]:80",
		".:80":          ".:80",
		"/run/app.sock": "/run/app.sock",
		"{dyn}.:80":     "{dyn}:80",
		"app.test.":     "app.test.",
	} {
		if got := rootless(in); got != want {
			t.Errorf("rootless(%q) = %q, want %q", in, got, want)
		}
	}
}
