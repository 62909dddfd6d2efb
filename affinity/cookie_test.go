package affinity

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"math"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

const testSecret = "correct horse battery staple"

// raceEnabled is set by cookie_race_test.go in -race builds.
var raceEnabled bool

// cookiePolicy returns a provisioned cookie-mode policy.
func cookiePolicy(t testing.TB, cfg CookieConfig) *AffinitySelection {
	t.Helper()
	if cfg.Secret == "" {
		cfg.Secret = testSecret
	}
	return provisioned(t, &AffinitySelection{Cookie: &cfg})
}

// setCookies returns the cookies the recorder was told to set.
func setCookies(h http.Header) []*http.Cookie {
	return (&http.Response{Header: h}).Cookies()
}

// sign returns the cookie value for id under secret, computed
// independently of cookie.go.
func sign(secret, id string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(id))
	return id + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:16])
}

var cookieFormat = regexp.MustCompile(`^[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{22}$`)

func TestCookieIssueAndReuse(t *testing.T) {
	s := cookiePolicy(t, CookieConfig{})
	pool := fakePool(20)

	r, w := newReq(ipAddr(1), nil)
	up := s.Select(pool, r, w)
	cs := setCookies(w.Header())
	if len(cs) != 1 || cs[0].Name != "lb_affinity" {
		t.Fatalf("Set-Cookie = %v, want one lb_affinity cookie", w.Header()["Set-Cookie"])
	}
	v := cs[0].Value
	if !cookieFormat.MatchString(v) {
		t.Fatalf("cookie value %q is not <id>.<mac> in base64url", v)
	}
	id, _, _ := strings.Cut(v, ".")
	if raw, err := base64.RawURLEncoding.DecodeString(id); err != nil || len(raw) != 16 {
		t.Errorf("id %q does not decode to 16 bytes", id)
	}
	if sign(testSecret, id) != v {
		t.Errorf("MAC is not HMAC-SHA256(secret, id) truncated to 16 bytes")
	}
	if want := preference(t, s, pool, id)[0]; up.Dial != want {
		t.Errorf("new client went to %s, want its id's first choice %s", up.Dial, want)
	}

	// Coming back with the cookie: same upstream, no new cookie, whatever
	// the client address.
	for i := range 5 {
		r2, w2 := newReq(ipAddr(100+i), func(r *http.Request) { r.AddCookie(&http.Cookie{Name: "lb_affinity", Value: v}) })
		if got := s.Select(pool, r2, w2); got != up {
			t.Errorf("returning client went to %s, want %s", dialOf(got), up.Dial)
		}
		if sc := w2.Header()["Set-Cookie"]; len(sc) != 0 {
			t.Errorf("valid cookie replaced: %v", sc)
		}
		repl := r2.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		if k, _ := repl.GetString(keyPlaceholder); k != id {
			t.Errorf("key placeholder = %q, want the id %q", k, id)
		}
	}

	// Two new clients get different ids.
	r3, w3 := newReq(ipAddr(1), nil)
	s.Select(pool, r3, w3)
	if setCookies(w3.Header())[0].Value == v {
		t.Error("two new clients got the same id")
	}
}

func TestCookieRejectsForgery(t *testing.T) {
	s := cookiePolicy(t, CookieConfig{})
	pool := fakePool(20)
	good := sign(testSecret, "AAAAAAAAAAAAAAAAAAAAAA")
	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	tests := []struct {
		name, value string
	}{
		{"id tampered", flip(good, 3)},
		{"mac tampered", flip(good, len(good)-2)},
		{"unsigned id", "AAAAAAAAAAAAAAAAAAAAAA"},
		{"other secret", sign("another secret", "AAAAAAAAAAAAAAAAAAAAAA")},
		{"chosen id, made-up mac", "AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAA"},
		{"an upstream's dial", pool[3].Dial},
		{"too long", good + "A"},
		{"no dot", strings.Replace(good, ".", "A", 1)},
		{"empty", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, w := newReq(ipAddr(1), func(r *http.Request) { r.Header.Set("Cookie", "lb_affinity="+tt.value) })
			up := s.Select(pool, r, w)
			cs := setCookies(w.Header())
			if len(cs) != 1 || cs[0].Value == tt.value {
				t.Fatalf("forged cookie not replaced: Set-Cookie %v", w.Header()["Set-Cookie"])
			}
			id, _, _ := strings.Cut(cs[0].Value, ".")
			if want := preference(t, s, pool, id)[0]; up.Dial != want {
				t.Errorf("routed to %s, want the new id's first choice %s", up.Dial, want)
			}
		})
	}
	t.Run("genuine", func(t *testing.T) {
		r, w := newReq(ipAddr(1), func(r *http.Request) { r.Header.Set("Cookie", "lb_affinity="+good) })
		up := s.Select(pool, r, w)
		if len(w.Header()["Set-Cookie"]) != 0 {
			t.Error("genuine cookie replaced")
		}
		if want := preference(t, s, pool, "AAAAAAAAAAAAAAAAAAAAAA")[0]; up.Dial != want {
			t.Errorf("routed to %s, want %s", up.Dial, want)
		}
	})
}

func TestCookieIssuedOncePerRequest(t *testing.T) {
	s := cookiePolicy(t, CookieConfig{})
	pool := fakePool(6)
	r, w := newReq(ipAddr(1), nil)
	var picks []string
	for range 3 { // the first attempt and two retries
		picks = append(picks, dialOf(s.Select(pool, r, w)))
	}
	cs := setCookies(w.Header())
	if len(cs) != 1 {
		t.Fatalf("Set-Cookie sent %d times, want once", len(cs))
	}
	id, _, _ := strings.Cut(cs[0].Value, ".")
	if want := preference(t, s, pool, id)[:3]; strings.Join(picks, " ") != strings.Join(want, " ") {
		t.Errorf("attempts went to %v, want the new id's order %v", picks, want)
	}
}

func TestCookieOnlyWithoutKey(t *testing.T) {
	s := provisioned(t, &AffinitySelection{
		Keys:   []string{"{header.X-User}"},
		Cookie: &CookieConfig{Secret: testSecret},
	})
	pool := fakePool(4)
	r, w := newReq(ipAddr(1), func(r *http.Request) { r.Header.Set("X-User", "u1") })
	if up := s.Select(pool, r, w); up.Dial != preference(t, s, pool, "u1")[0] {
		t.Errorf("key ignored: picked %s", up.Dial)
	}
	if len(w.Header()["Set-Cookie"]) != 0 {
		t.Error("cookie issued though a key resolved")
	}
	r2, w2 := newReq(ipAddr(1), nil)
	s.Select(pool, r2, w2)
	if len(setCookies(w2.Header())) != 1 {
		t.Error("no cookie issued when no key resolved")
	}
}

func TestCookieAttributes(t *testing.T) {
	yes, no := true, false
	tests := []struct {
		name  string
		cfg   CookieConfig
		req   func(r *http.Request)
		check func(t *testing.T, c *http.Cookie)
	}{
		{"defaults over http", CookieConfig{}, nil, func(t *testing.T, c *http.Cookie) {
			if c.Path != "/" || !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Secure || c.MaxAge != 0 || c.Domain != "" {
				t.Errorf("cookie = %+v", c)
			}
		}},
		{"tls makes it secure", CookieConfig{}, func(r *http.Request) { r.TLS = &tls.ConnectionState{} }, func(t *testing.T, c *http.Cookie) {
			if !c.Secure {
				t.Error("not Secure over TLS")
			}
		}},
		{"trusted proxy says https", CookieConfig{}, func(r *http.Request) {
			r.Header.Add("X-Forwarded-Proto", "http")
			r.Header.Add("X-Forwarded-Proto", "https")
			trustProxy(r)
		}, func(t *testing.T, c *http.Cookie) {
			if !c.Secure {
				t.Error("not Secure behind a trusted https proxy")
			}
		}},
		{"untrusted proxy says https", CookieConfig{}, func(r *http.Request) { r.Header.Set("X-Forwarded-Proto", "https") }, func(t *testing.T, c *http.Cookie) {
			if c.Secure {
				t.Error("Secure on the word of an untrusted client")
			}
		}},
		{"secure off over tls", CookieConfig{Secure: &no}, func(r *http.Request) { r.TLS = &tls.ConnectionState{} }, func(t *testing.T, c *http.Cookie) {
			if c.Secure {
				t.Error("Secure though configured off")
			}
		}},
		{"secure on over http", CookieConfig{Secure: &yes}, nil, func(t *testing.T, c *http.Cookie) {
			if !c.Secure {
				t.Error("not Secure though configured on")
			}
		}},
		{"same_site none implies secure", CookieConfig{SameSite: "none"}, nil, func(t *testing.T, c *http.Cookie) {
			if c.SameSite != http.SameSiteNoneMode || !c.Secure {
				t.Errorf("cookie = %+v", c)
			}
		}},
		{"__Secure- prefix implies secure", CookieConfig{Name: "__Secure-aff"}, nil, func(t *testing.T, c *http.Cookie) {
			if !c.Secure {
				t.Errorf("cookie = %+v, want Secure", c)
			}
		}},
		{"__Host- prefix implies secure", CookieConfig{Name: "__Host-aff"}, nil, func(t *testing.T, c *http.Cookie) {
			if !c.Secure || c.Path != "/" || c.Domain != "" {
				t.Errorf("cookie = %+v, want Secure, Path /, no Domain", c)
			}
		}},
		{"all set", CookieConfig{Name: "aff", Path: "/app", Domain: "example.com", HTTPOnly: &no, SameSite: "strict", MaxAge: caddy.Duration(time.Hour)}, nil,
			func(t *testing.T, c *http.Cookie) {
				if c.Name != "aff" || c.Path != "/app" || c.Domain != "example.com" || c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.MaxAge != 3600 {
					t.Errorf("cookie = %+v", c)
				}
			}},
		{"sub-second max_age rounds up", CookieConfig{MaxAge: caddy.Duration(time.Millisecond)}, nil, func(t *testing.T, c *http.Cookie) {
			if c.MaxAge != 1 {
				t.Errorf("Max-Age = %d, want 1", c.MaxAge)
			}
		}},
		{"part seconds round up", CookieConfig{MaxAge: caddy.Duration(1500 * time.Millisecond)}, nil, func(t *testing.T, c *http.Cookie) {
			if c.MaxAge != 2 {
				t.Errorf("Max-Age = %d, want 2", c.MaxAge)
			}
		}},
		{"the largest max_age does not wrap", CookieConfig{MaxAge: caddy.Duration(math.MaxInt64)}, nil, func(t *testing.T, c *http.Cookie) {
			if c.MaxAge != math.MaxInt32 {
				t.Errorf("Max-Age = %d, want %d (68 years, what an int holds on 32-bit platforms)", c.MaxAge, math.MaxInt32)
			}
		}},
		{"a century of max_age is 68 years", CookieConfig{MaxAge: caddy.Duration(876000 * time.Hour)}, nil, func(t *testing.T, c *http.Cookie) {
			if c.MaxAge != math.MaxInt32 {
				t.Errorf("Max-Age = %d, want %d", c.MaxAge, math.MaxInt32)
			}
		}},
	}
	pool := fakePool(3)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := cookiePolicy(t, tt.cfg)
			r, w := newReq(ipAddr(1), nil)
			if tt.req != nil {
				tt.req(r) // after PrepareRequest, which makes the vars trustProxy sets
			}
			s.Select(pool, r, w)
			cs := setCookies(w.Header())
			if len(cs) != 1 {
				t.Fatalf("Set-Cookie = %v", w.Header()["Set-Cookie"])
			}
			tt.check(t, cs[0])
		})
	}
}

// trustProxy marks r as coming from a trusted proxy, as Caddy's server does
// when the remote address is in trusted_proxies.
func trustProxy(r *http.Request) {
	if vars, ok := r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any); ok {
		vars[caddyhttp.TrustedProxyVarKey] = true
	}
}

func TestCookieValues(t *testing.T) {
	tests := []struct {
		name   string
		header []string
		want   []string
	}{
		{"only", []string{"lb_affinity=abc"}, []string{"abc"}},
		{"among others", []string{"a=1; lb_affinity=abc; b=2"}, []string{"abc"}},
		{"second line", []string{"a=1", "lb_affinity=abc"}, []string{"abc"}},
		{"in order", []string{"lb_affinity=one; lb_affinity=two", "lb_affinity=three"}, []string{"one", "two", "three"}},
		{"quoted", []string{`lb_affinity="abc"`}, []string{"abc"}},
		{"prefix of another name", []string{"lb_affinity2=x; xlb_affinity=y"}, nil},
		{"empty value", []string{"lb_affinity="}, []string{""}},
		{"absent", []string{"a=1"}, nil},
		{"no header", nil, nil},
		{"stray semicolons", []string{";; lb_affinity=abc ;"}, []string{"abc"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			cookieValues(http.Header{"Cookie": tt.header}, "lb_affinity", func(v string) bool {
				got = append(got, v)
				return true
			})
			if !slices.Equal(got, tt.want) {
				t.Errorf("cookieValues = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestCookieNotHiddenByAForeignOne: a cookie of the same name that does not
// verify (another site's on a parent domain, with its own secret), sent
// before the client's own, neither hides it nor gets the client a new id;
// past maxCookieCandidates, cookies are not checked.
func TestCookieNotHiddenByAForeignOne(t *testing.T) {
	s := cookiePolicy(t, CookieConfig{})
	const id = "AAAAAAAAAAAAAAAAAAAAAA"
	own, foreign := sign(testSecret, id), sign("another site's secret", "BBBBBBBBBBBBBBBBBBBBBB")
	for _, tc := range []struct {
		name   string
		cookie string
		want   string
	}{
		{"foreign first", "lb_affinity=" + foreign + "; lb_affinity=" + own, id},
		{"garbage first", "lb_affinity=x; a=1; lb_affinity=" + own, id},
		{"past the candidates", strings.Repeat("lb_affinity="+foreign+"; ", maxCookieCandidates) + "lb_affinity=" + own, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := newReq(ipAddr(1), func(r *http.Request) { r.Header.Set("Cookie", tc.cookie) })
			if got, _ := s.jar.read(r); got != tc.want {
				t.Errorf("read = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestCookieVerifyAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under the race detector")
	}
	s := cookiePolicy(t, CookieConfig{})
	value := sign(testSecret, "AAAAAAAAAAAAAAAAAAAAAA")
	r, _ := newReq(ipAddr(1), func(r *http.Request) { r.Header.Set("Cookie", "x=1; lb_affinity="+value) })
	if id, _ := s.jar.read(r); id == "" {
		t.Fatal("genuine cookie rejected")
	}
	if n := testing.AllocsPerRun(200, func() { s.jar.read(r) }); n != 0 {
		t.Errorf("verifying a cookie: %v allocs, want 0", n)
	}
}

// TestCookieSecretRotation: with the old secret in previous_secrets, a
// cookie it signed keeps its id (and upstream) and is issued again under
// the new secret, once per request, retries included; the new cookie
// needs no renewal; without previous_secrets the old cookie is a
// stranger's; a previous secret never signs.
func TestCookieSecretRotation(t *testing.T) {
	const oldSecret, newSecret = "the old secret, 32 bytes or so..", "the new secret, 32 bytes or so.."
	pool := fakePool(20)
	id := "AAAAAAAAAAAAAAAAAAAAAA"
	old := sign(oldSecret, id)
	before := cookiePolicy(t, CookieConfig{Secret: oldSecret})
	r, w := newReq(ipAddr(1), func(r *http.Request) { r.AddCookie(&http.Cookie{Name: "lb_affinity", Value: old}) })
	up := before.Select(pool, r, w)

	rotated := cookiePolicy(t, CookieConfig{Secret: newSecret, PreviousSecrets: []string{"another old one, long enough....", oldSecret}})
	r, w = newReq(ipAddr(2), func(r *http.Request) { r.AddCookie(&http.Cookie{Name: "lb_affinity", Value: old}) })
	if got := rotated.Select(pool, r, w); got != up {
		t.Errorf("after rotation the client went to %s, want %s", dialOf(got), up.Dial)
	}
	// A retry of the same request sets no second cookie.
	rotated.Select(pool, r, w)
	cs := setCookies(w.Header())
	if len(cs) != 1 || cs[0].Value != sign(newSecret, id) {
		t.Fatalf("Set-Cookie %v; want one, the same id under the new secret", w.Header()["Set-Cookie"])
	}
	r, w = newReq(ipAddr(3), func(r *http.Request) { r.AddCookie(&http.Cookie{Name: "lb_affinity", Value: cs[0].Value}) })
	if got := rotated.Select(pool, r, w); got != up || len(w.Header()["Set-Cookie"]) != 0 {
		t.Errorf("with the renewed cookie: %s, Set-Cookie %v; want %s and none", dialOf(got), w.Header()["Set-Cookie"], up.Dial)
	}
	// New ids are signed with the new secret only.
	r, w = newReq(ipAddr(4), nil)
	rotated.Select(pool, r, w)
	issued := setCookies(w.Header())[0].Value
	newID, _, _ := strings.Cut(issued, ".")
	if issued != sign(newSecret, newID) {
		t.Errorf("new cookie %q not signed with the new secret", issued)
	}

	unrotated := cookiePolicy(t, CookieConfig{Secret: newSecret})
	r, w = newReq(ipAddr(5), func(r *http.Request) { r.AddCookie(&http.Cookie{Name: "lb_affinity", Value: old}) })
	unrotated.Select(pool, r, w)
	if cs := setCookies(w.Header()); len(cs) != 1 || strings.HasPrefix(cs[0].Value, id+".") {
		t.Errorf("without previous_secrets, the old cookie kept its id: %v", w.Header()["Set-Cookie"])
	}

	if _, err := newCookieJar(CookieConfig{Secret: newSecret, PreviousSecrets: []string{""}}); err == nil || !strings.Contains(err.Error(), "previous_secrets[0] is empty") {
		t.Errorf("empty previous secret: %v", err)
	}
	if _, err := newCookieJar(CookieConfig{Secret: newSecret, PreviousSecrets: []string{"{env.AFFINITY_UNSET_PREVIOUS}"}}); err == nil || !strings.Contains(err.Error(), "previous_secrets[0]") {
		t.Errorf("unset placeholder in a previous secret: %v", err)
	}
	// White space from the environment: refused as a literal one is.
	t.Setenv("AFFINITY_BLANK_SECRET", strings.Repeat(" ", 40)+"\t\n")
	if _, err := newCookieJar(CookieConfig{Secret: "{env.AFFINITY_BLANK_SECRET}"}); err == nil || !strings.Contains(err.Error(), "cookie secret is only white space once its placeholders are replaced ({env.AFFINITY_BLANK_SECRET})") {
		t.Errorf("a secret of white space from the environment: %v", err)
	}
	if _, err := newCookieJar(CookieConfig{Secret: newSecret, PreviousSecrets: []string{"{env.AFFINITY_BLANK_SECRET}"}}); err == nil || !strings.Contains(err.Error(), "previous_secrets[0] is only white space") {
		t.Errorf("a previous secret of white space from the environment: %v", err)
	}
}

// TestCookieRotationPrefersTheCurrentSecret: a browser holding a cookie
// left by an earlier path under the old secret and its current one sends
// both, the more specific path first. The current one counts, whatever
// the order, and nothing is issued; only when no cookie verifies under the
// secret does one under a previous secret count (and is issued again).
func TestCookieRotationPrefersTheCurrentSecret(t *testing.T) {
	const oldSecret, newSecret = "the old secret, 32 bytes or so..", "the new secret, 32 bytes or so.."
	pool := fakePool(20)
	rotated := cookiePolicy(t, CookieConfig{Secret: newSecret, PreviousSecrets: []string{oldSecret}})
	current := cookiePolicy(t, CookieConfig{Secret: newSecret})
	// Ids whose upstreams differ, so that the pick tells which counted.
	var oldID, newID string
	for i := 0; oldID == "" || newID == ""; i++ {
		id := fmt.Sprintf("%022d", i)
		r, w := newReq(ipAddr(1), func(r *http.Request) { r.Header.Set("Cookie", "lb_affinity="+sign(newSecret, id)) })
		up := current.Select(pool, r, w)
		switch {
		case oldID == "":
			oldID = id
		case dialOf(up) != dialOf(pickOf(t, current, pool, newSecret, oldID)):
			newID = id
		}
	}
	want := pickOf(t, current, pool, newSecret, newID)
	for _, field := range []string{
		"lb_affinity=" + sign(oldSecret, oldID) + "; lb_affinity=" + sign(newSecret, newID),
		"lb_affinity=" + sign(newSecret, newID) + "; lb_affinity=" + sign(oldSecret, oldID),
		"lb_affinity=junk; lb_affinity=" + sign(oldSecret, oldID) + "; lb_affinity=" + sign(newSecret, newID),
	} {
		r, w := newReq(ipAddr(2), func(r *http.Request) { r.Header.Set("Cookie", field) })
		if got := rotated.Select(pool, r, w); got != want || len(w.Header()["Set-Cookie"]) != 0 {
			t.Errorf("Cookie: %s\ngot %s and Set-Cookie %v; want %s (the current cookie's) and none", field, dialOf(got), w.Header()["Set-Cookie"], want.Dial)
		}
	}
	// Only the old secret's (beside a foreign one): it counts, renewed.
	r, w := newReq(ipAddr(3), func(r *http.Request) {
		r.Header.Set("Cookie", "lb_affinity="+sign("someone else's secret, 32 bytes.", newID)+"; lb_affinity="+sign(oldSecret, oldID))
	})
	if got := rotated.Select(pool, r, w); got != pickOf(t, current, pool, newSecret, oldID) {
		t.Errorf("with only an old-secret cookie: %s, want its id's upstream", dialOf(got))
	}
	if cs := setCookies(w.Header()); len(cs) != 1 || cs[0].Value != sign(newSecret, oldID) {
		t.Errorf("with only an old-secret cookie: Set-Cookie %v, want its id under the new secret", w.Header()["Set-Cookie"])
	}
}

// TestCookieRotationAcrossInstances follows README's three steps on two
// instances, one reloaded before the other at each step: at no point
// does either take the other's cookie for a stranger's (every id, and so
// every user's upstream, stays).
func TestCookieRotationAcrossInstances(t *testing.T) {
	const oldSecret, newSecret = "the old secret, 32 bytes or so..", "the new secret, 32 bytes or so.."
	pool := fakePool(20)
	steps := []CookieConfig{
		{Secret: oldSecret},
		{Secret: oldSecret, PreviousSecrets: []string{newSecret}},
		{Secret: newSecret, PreviousSecrets: []string{oldSecret}},
		{Secret: newSecret},
	}
	const id = "AAAAAAAAAAAAAAAAAAAAAA"
	want := pickOf(t, cookiePolicy(t, steps[0]), pool, oldSecret, id)
	value := sign(oldSecret, id)
	// Between steps i and i+1, one instance runs i+1 and the other i; the
	// client's cookie goes back and forth between them.
	for i := 0; i+1 < len(steps); i++ {
		for _, cfg := range []CookieConfig{steps[i+1], steps[i], steps[i+1]} {
			r, w := newReq(ipAddr(1), func(r *http.Request) { r.Header.Set("Cookie", "lb_affinity="+value) })
			if got := cookiePolicy(t, cfg).Select(pool, r, w); got != want {
				t.Fatalf("step %d, secret %q previous %q: %s, want %s", i+1, cfg.Secret[:7], cfg.PreviousSecrets, dialOf(got), want.Dial)
			}
			if cs := setCookies(w.Header()); len(cs) == 1 {
				if !strings.HasPrefix(cs[0].Value, id+".") {
					t.Fatalf("step %d: issued %s, want the same id", i+1, cs[0].Value)
				}
				value = cs[0].Value
			}
		}
	}
	if value != sign(newSecret, id) {
		t.Errorf("after the rotation the cookie is %s, want the id under the new secret", value)
	}
}

// pickOf is the upstream p picks for a request carrying id's cookie under
// secret.
func pickOf(t *testing.T, p *AffinitySelection, pool reverseproxy.UpstreamPool, secret, id string) *reverseproxy.Upstream {
	t.Helper()
	r, w := newReq(ipAddr(9), func(r *http.Request) { r.Header.Set("Cookie", "lb_affinity="+sign(secret, id)) })
	up := p.Select(pool, r, w)
	if up == nil || len(w.Header()["Set-Cookie"]) != 0 {
		t.Fatalf("id %s: upstream %v, Set-Cookie %v", id, up, w.Header()["Set-Cookie"])
	}
	return up
}

func TestCookieSelectAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under the race detector")
	}
	s := cookiePolicy(t, CookieConfig{})
	pool := fakePool(100)
	value := sign(testSecret, "AAAAAAAAAAAAAAAAAAAAAA")
	r, w := newReq(ipAddr(1), func(r *http.Request) { r.Header.Set("Cookie", "lb_affinity="+value) })
	vars := r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
	s.Select(pool, r, w)
	delete(vars, s.stateKey)
	n := testing.AllocsPerRun(200, func() {
		s.Select(pool, r, w)
		delete(vars, s.stateKey)
	})
	if n > 1 { // the key placeholder
		t.Errorf("cookie-mode Select: %v allocs, want <= 1", n)
	}
}

var _ reverseproxy.Selector = (*AffinitySelection)(nil)

// TestCookieSecretPlaceholders: global placeholders in the secret are
// replaced when the config loads; one that is unknown or empty is an
// error, never a literal secret anyone could read in the config docs.
func TestCookieSecretPlaceholders(t *testing.T) {
	t.Setenv("AFFINITY_TEST_SECRET", "from-the-environment-0123456789")
	t.Setenv("AFFINITY_TEST_EMPTY", "")
	j, err := newCookieJar(CookieConfig{Secret: "{env.AFFINITY_TEST_SECRET}"})
	if err != nil || j.cfg.Secret != "from-the-environment-0123456789" {
		t.Fatalf("secret %q, %v; want the environment's", j.cfg.Secret, err)
	}
	literal, err := newCookieJar(CookieConfig{Secret: `\{env.AFFINITY_TEST_SECRET\}`})
	if err != nil || literal.cfg.Secret != "{env.AFFINITY_TEST_SECRET}" {
		t.Errorf("escaped braces: secret %q, %v", literal.cfg.Secret, err)
	}
	for _, secret := range []string{"{env.AFFINITY_TEST_UNSET_FOR_SURE}", "{env.AFFINITY_TEST_EMPTY}", "{http.request.host}"} {
		if _, err := newCookieJar(CookieConfig{Secret: secret}); err == nil || !strings.Contains(err.Error(), "cookie secret") {
			t.Errorf("secret %s: error %v, want one about the cookie secret", secret, err)
		}
	}
}

// TestCookieFieldsBrowsersTake: a name that leaves room for the value in
// the 4,096 bytes browsers take, a site's domain (a private registry's
// too) and an escaped path are fine; one byte more, a public suffix or a
// path a request never has are not.
func TestCookieFieldsBrowsersTake(t *testing.T) {
	for _, tc := range []struct {
		field, value string
		ok           bool
	}{
		{"name", strings.Repeat("n", maxCookieBytes-cookieLen), true},
		{"name", strings.Repeat("n", maxCookieBytes-cookieLen+1), false},
		{"domain", "example.com", true},
		{"domain", ".example.co.uk", true},
		{"domain", "me.github.io", true},
		{"domain", "github.io", false}, // PSL's private section: browsers refuse it too
		{"domain", "co.uk", false},
		{"domain", "COM.", false},
		{"domain", "localhost", true}, // for that host alone, as before
		{"domain", "intranet", true},
		{"domain", "10.0.0.5", true},
		{"path", "/a%20b", true},
		{"path", "/a|b~c", true}, // Firefox sends | as it is
		{"path", "/a b", false},
		{"path", "/a#b", false},
		{"path", `/a\b`, false},
		{"path", `/a"b`, false},
	} {
		err := checkCookieField(tc.field, tc.value)
		if (err == nil) != tc.ok {
			t.Errorf("cookie %s %.40q: error %v, want ok %v", tc.field, tc.value, err, tc.ok)
		}
	}
}

// TestCookieRetryKeepsTheId: cookie mode reads its cookie from the
// request reverse_proxy sends, which on a retry carries the last
// attempt's header_up edits; a site that keeps the routing cookie from the
// application (`header_up -Cookie`) lost it there, so a retry issued a new
// id and went to that id's upstream, for good (a review: 4 of 5 clients of
// a dead upstream went elsewhere than the next choice). A retry keeps the
// first attempt's id, whether the client sent it (signed with the current
// secret or a previous one) or the policy issued it.
func TestCookieRetryKeepsTheId(t *testing.T) {
	const oldSecret = "the old secret, 32 bytes or so.."
	f := newProxyFixture(t, 2, 3,
		fmt.Sprintf(`{"policy":"affinity","cookie":{"secret":%q,"previous_secrets":[%q]}}`, testSecret, oldSecret),
		`,"retries":4},"headers":{"request":{"delete":["Cookie"]}`, 0)
	dead := f.dials[:3]
	for _, tc := range []struct {
		name   string
		secret string // the client's cookie's; "" for none
		issues bool   // the policy sets one cookie
	}{
		{"valid cookie", testSecret, false},
		{"cookie under a previous secret", oldSecret, true},
		{"no cookie", "", true},
	} {
		checked := 0
		for i := 0; i < 2000 && checked < 10; i++ {
			r, w := newReq(ipAddr(i), nil)
			id := fmt.Sprintf("retry-id-%013d", i) // 22 bytes, as an issued id
			if tc.secret != "" {
				r.Header.Set("Cookie", defaultCookieName+"="+sign(tc.secret, id))
			}
			noop := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })
			if err := f.h.ServeHTTP(w, r, noop); err != nil {
				t.Fatalf("%s: %v, with 2 of 5 upstreams up and 4 retries", tc.name, err)
			}
			cs := setCookies(w.Header())
			if tc.issues != (len(cs) == 1) || len(cs) > 1 {
				t.Fatalf("%s: Set-Cookie %v; want one: %v", tc.name, w.Header()["Set-Cookie"], tc.issues)
			}
			if tc.secret == "" {
				id, _, _ = strings.Cut(cs[0].Value, ".")
			} else if tc.issues && cs[0].Value != sign(testSecret, id) {
				t.Fatalf("%s: Set-Cookie %s, want the same id under the current secret", tc.name, cs[0].Value)
			}
			pref := preference(t, f.policy, f.h.Upstreams, id)
			if !slices.Contains(dead, pref[0]) {
				continue // only ids whose first choice is down retry
			}
			checked++
			firstLive := slices.IndexFunc(pref, func(d string) bool { return !slices.Contains(dead, d) })
			want := fmt.Sprintf("backend %d", f.index(pref[firstLive])-len(dead))
			if got := w.Body.String(); got != want {
				t.Errorf("%s: id %s answered by %q, want its first live choice %q (order %v)", tc.name, id, got, want, pref)
			}
		}
		if checked < 5 {
			t.Fatalf("%s: only %d ids had a dead first choice", tc.name, checked)
		}
	}
}

// TestSecureCookieOverPlainHTTPWarnsOnce: a cookie that goes out Secure
// (same_site none, a __Host- name, secure on) over plain HTTP, which
// browsers drop, is logged once; over TLS, or when not Secure, nothing.
func TestSecureCookieOverPlainHTTPWarnsOnce(t *testing.T) {
	on, trustedProxy := true, false
	tlsReq := func(r *http.Request) { r.TLS = &tls.ConnectionState{} }
	for _, tc := range []struct {
		name string
		cfg  CookieConfig
		mod  func(*http.Request)
		want int
	}{
		{"same_site none over http", CookieConfig{SameSite: "none"}, nil, 1},
		{"__Host- over http", CookieConfig{Name: "__Host-lb"}, nil, 1},
		{"secure on over http", CookieConfig{Secure: &on}, nil, 1},
		{"same_site none over https", CookieConfig{SameSite: "none"}, tlsReq, 0},
		{"default over http (not Secure)", CookieConfig{}, nil, 0},
		// Browsers keep Secure cookies from localhost over plain HTTP.
		{"same_site none on localhost", CookieConfig{SameSite: "none"}, func(r *http.Request) { r.Host = "localhost:8080" }, 0},
		{"same_site none on 127.0.0.1", CookieConfig{SameSite: "none"}, func(r *http.Request) { r.Host = "127.0.0.1" }, 0},
		{"same_site none on [::1]", CookieConfig{SameSite: "none"}, func(r *http.Request) { r.Host = "[::1]:2015" }, 0},
		{"same_site none from a trusted proxy saying HTTPS", CookieConfig{SameSite: "none"}, func(r *http.Request) {
			r.Header.Set("X-Forwarded-Proto", "HTTPS")
			trustedProxy = true
		}, 0},
		{"same_site none from an untrusted proxy saying https", CookieConfig{SameSite: "none"}, func(r *http.Request) {
			r.Header.Set("X-Forwarded-Proto", "https")
		}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := cookiePolicy(t, tc.cfg)
			core, logs := observer.New(zap.WarnLevel)
			s.logger = zap.New(core)
			pool := fakePool(3)
			for i := range 3 {
				trustedProxy = false
				r, w := newReq(ipAddr(i), tc.mod)
				if trustedProxy { // (PrepareRequest sets the vars the mod would)
					caddyhttp.SetVar(r.Context(), caddyhttp.TrustedProxyVarKey, true)
				}
				if s.Select(pool, r, w) == nil || len(setCookies(w.Header())) != 1 {
					t.Fatalf("request %d: no upstream or no cookie", i)
				}
			}
			if got := logs.FilterMessageSnippet("Secure but the request came over plain HTTP").Len(); got != tc.want {
				t.Errorf("%d warnings, want %d: %v", got, tc.want, logs.All())
			}
		})
	}
}
