package cache

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

var (
	rt0     = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	rt0Date = rt0.Format(http.TimeFormat)
	rDateAt = func(d time.Duration) string { return rt0.Add(d).Format(http.TimeFormat) }
	rGet    = func(kv ...string) *http.Request { return rReq(http.MethodGet, kv...) }
	rReq    = func(method string, kv ...string) *http.Request {
		r := httptest.NewRequest(method, "http://example.com/a", nil)
		r.Header = rh(kv...)
		return r
	}
)

// rStorable runs Lifetime and Storable the way the handler does.
func rStorable(req *http.Request, status int, h http.Header, allowSetCookie bool) string {
	rc := ParseResponseControl(h, "CDN-Cache-Control")
	_, has := Lifetime(status, h, rc, 0)
	return Storable(req, status, h, rc, has, allowSetCookie)
}

// TestRule01_StoreOnlyCacheableExchanges pins RFC 9111 §3 and §3.5: GET
// only, final status, no no-store, no private, Authorization only with
// public, s-maxage or must-revalidate.
func TestRule01_StoreOnlyCacheableExchanges(t *testing.T) {
	tests := []struct {
		name   string
		req    *http.Request
		status int
		h      http.Header
		want   string
	}{
		{"get with max-age", rGet(), 200, rh("Cache-Control", "max-age=60"), ""},
		{"post", rReq(http.MethodPost), 200, rh("Cache-Control", "max-age=60"), "method"},
		{"put", rReq(http.MethodPut), 200, rh("Cache-Control", "max-age=60"), "method"},
		{"informational", rGet(), 103, rh("Cache-Control", "max-age=60"), "status"},
		{"no-store", rGet(), 200, rh("Cache-Control", "max-age=60, no-store"), "no-store"},
		{"private", rGet(), 200, rh("Cache-Control", "max-age=60, private"), "private"},
		{"public does not undo private", rGet(), 200, rh("Cache-Control", "public, private, max-age=60"), "private"},
		{"qualified private stores", rGet(), 200, rh("Cache-Control", `max-age=60, private="x-user"`), ""},
		{"no-cache stores", rGet(), 200, rh("Cache-Control", "max-age=60, no-cache"), ""},
		{"authorization", rGet("Authorization", "Bearer x"), 200, rh("Cache-Control", "max-age=60"), "authorization"},
		{"authorization after an empty one", rGet("Authorization", "", "Authorization", "Bearer x"), 200, rh("Cache-Control", "max-age=60"), "authorization"},
		{"empty authorization", rGet("Authorization", ""), 200, rh("Cache-Control", "max-age=60"), "authorization"},
		{"authorization with public", rGet("Authorization", "Bearer x"), 200, rh("Cache-Control", "public, max-age=60"), ""},
		{"authorization with s-maxage", rGet("Authorization", "Bearer x"), 200, rh("Cache-Control", "s-maxage=60"), ""},
		{"authorization with must-revalidate", rGet("Authorization", "Bearer x"), 200, rh("Cache-Control", "must-revalidate, max-age=60"), ""},
		// A targeted field's directives mean what they mean in Cache-Control (RFC 9213 §2.1).
		{"authorization with a targeted s-maxage", rGet("Authorization", "Bearer x"), 200, rh("CDN-Cache-Control", "s-maxage=60"), ""},
		{"authorization with a targeted max-age", rGet("Authorization", "Bearer x"), 200, rh("CDN-Cache-Control", "max-age=60"), "authorization"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := rStorable(tt.req, tt.status, tt.h, false); got != tt.want {
				t.Errorf("Storable = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestRule02_StoreNeedsFreshness pins RFC 9111 §3: explicit freshness,
// public, or a heuristically cacheable status (with a heuristic lifetime
// or DefaultTTL).
func TestRule02_StoreNeedsFreshness(t *testing.T) {
	lm := rDateAt(-10 * time.Hour)
	tests := []struct {
		name       string
		status     int
		h          http.Header
		defaultTTL time.Duration
		want       string
	}{
		{"nothing", 200, rh("Date", rt0Date), 0, "no-freshness"},
		{"expires", 200, rh("Date", rt0Date, "Expires", rDateAt(time.Hour)), 0, ""},
		{"max-age", 500, rh("Cache-Control", "max-age=5"), 0, ""},
		{"s-maxage", 302, rh("Cache-Control", "s-maxage=5"), 0, ""},
		{"public", 200, rh("Cache-Control", "public"), 0, ""},
		{"heuristic 200", 200, rh("Date", rt0Date, "Last-Modified", lm), 0, ""},
		{"heuristic 404", 404, rh("Date", rt0Date, "Last-Modified", lm), 0, ""},
		{"no heuristic for 302", 302, rh("Date", rt0Date, "Last-Modified", lm), 0, "no-freshness"},
		{"no heuristic for 500", 500, rh("Date", rt0Date, "Last-Modified", lm), 0, "no-freshness"},
		{"default ttl 200", 200, rh("Date", rt0Date), time.Minute, ""},
		{"default ttl not for 500", 500, rh("Date", rt0Date), time.Minute, "no-freshness"},
		{"default ttl not for 302", 302, rh("Date", rt0Date), time.Minute, "no-freshness"},
		{"default ttl 404", 404, rh("Date", rt0Date), time.Minute, ""},
		{"default ttl 410", 410, rh("Date", rt0Date), time.Minute, ""},
		{"default ttl not for 414", 414, rh("Date", rt0Date), time.Minute, "no-freshness"},
		{"default ttl not for 501", 501, rh("Date", rt0Date), time.Minute, "no-freshness"},
		{"heuristic 501 (the origin's Last-Modified)", 501, rh("Date", rt0Date, "Last-Modified", lm), time.Minute, ""},
		{"no-cache with an etag, to revalidate", 200, rh("Date", rt0Date, "Cache-Control", "no-cache", "Etag", `"a"`), 0, ""},
		{"no-cache with an etag, 404", 404, rh("Cache-Control", "no-cache", "Etag", `"a"`), 0, ""},
		{"no-cache without a validator", 200, rh("Date", rt0Date, "Cache-Control", "no-cache"), 0, "no-freshness"},
		{"no-cache with last-modified now (no heuristic lifetime)", 200, rh("Date", rt0Date, "Cache-Control", "no-cache", "Last-Modified", rt0Date), 0, ""},
		{"no-cache with an etag, 500", 500, rh("Cache-Control", "no-cache", "Etag", `"a"`), 0, "no-freshness"},
		{"etag without no-cache", 200, rh("Date", rt0Date, "Etag", `"a"`), 0, "no-freshness"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := ParseResponseControl(tt.h, "")
			_, has := Lifetime(tt.status, tt.h, rc, tt.defaultTTL)
			if got := Storable(rGet(), tt.status, tt.h, rc, has, false); got != tt.want {
				t.Errorf("Storable = %q, want %q", got, tt.want)
			}
		})
	}
	for _, s := range []int{200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501} {
		if !HeuristicallyCacheable(s) {
			t.Errorf("HeuristicallyCacheable(%d) = false", s)
		}
	}
	for _, s := range []int{201, 302, 303, 304, 307, 400, 403, 500, 502, 503, 504} {
		if HeuristicallyCacheable(s) {
			t.Errorf("HeuristicallyCacheable(%d) = true", s)
		}
	}
	// Operator freshness (default_ttl, fields set before the cache): the
	// heuristically cacheable statuses but those a client can provoke.
	for _, s := range []int{200, 203, 204, 206, 300, 301, 308, 404, 405, 410} {
		if !OperatorFreshness(s) {
			t.Errorf("OperatorFreshness(%d) = false", s)
		}
	}
	for _, s := range []int{201, 302, 303, 304, 307, 400, 403, 413, 414, 429, 431, 500, 501, 502, 503, 504} {
		if OperatorFreshness(s) {
			t.Errorf("OperatorFreshness(%d) = true", s)
		}
	}
}

// TestRule03_PartialNotModifiedAndMustUnderstand pins RFC 9111 §3.3-§3.4
// (206 and 304 are not stored: ranges are not merged) and §5.2.2.3
// (must-understand overrides no-store for understood statuses only).
func TestRule03_PartialNotModifiedAndMustUnderstand(t *testing.T) {
	tests := []struct {
		name   string
		status int
		cc     string
		want   string
	}{
		{"206", 206, "max-age=60", "status"},
		{"304", 304, "max-age=60", "status"},
		{"must-understand beats no-store for 200", 200, "must-understand, no-store, max-age=60", ""},
		{"must-understand beats no-store for 404", 404, "must-understand, no-store, max-age=60", ""},
		{"must-understand with unknown status", 302, "must-understand, no-store, max-age=60", "status"},
		{"must-understand without no-store, unknown status", 418, "must-understand, max-age=60", "status"},
		{"must-understand still respects private", 200, "must-understand, no-store, private, max-age=60", "private"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := rStorable(rGet(), tt.status, rh("Cache-Control", tt.cc), false); got != tt.want {
				t.Errorf("Storable = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestRule05_SetCookieNotStoredByDefault pins the Set-Cookie policy.
func TestRule05_SetCookieNotStoredByDefault(t *testing.T) {
	h := rh("Cache-Control", "max-age=60", "Set-Cookie", "sid=1")
	if got := rStorable(rGet(), 200, h, false); got != "set-cookie" {
		t.Errorf("Storable with Set-Cookie = %q, want set-cookie", got)
	}
	if got := rStorable(rGet(), 200, h, true); got != "" {
		t.Errorf("Storable with Set-Cookie allowed = %q, want \"\"", got)
	}
	// §5.2.2.4, §5.2.2.7: the response may be stored without the fields
	// a qualified no-cache or private names.
	for _, cc := range []string{`max-age=60, no-cache="Set-Cookie"`, `max-age=60, private="set-cookie, X-User"`} {
		h := rh("Cache-Control", cc, "Set-Cookie", "sid=1")
		if got := rStorable(rGet(), 200, h, false); got != "" {
			t.Errorf("Storable with Set-Cookie and %s = %q, want \"\"", cc, got)
		}
	}
}

// TestRule18_HeadResponsesNotStored: HEAD is answered from a stored GET,
// but a HEAD response (no body) is never stored.
func TestRule18_HeadResponsesNotStored(t *testing.T) {
	if got := rStorable(rReq(http.MethodHead), 200, rh("Cache-Control", "max-age=60"), false); got != "method" {
		t.Errorf("Storable(HEAD) = %q, want method", got)
	}
}

// TestRule06_LifetimePrecedence pins RFC 9111 §4.2.1: s-maxage over
// max-age over Expires - Date; invalid or duplicated values mean stale;
// the most restrictive of conflicting directives wins.
func TestRule06_LifetimePrecedence(t *testing.T) {
	tests := []struct {
		name     string
		h        http.Header
		respTime time.Time
		want     time.Duration
		has      bool
	}{
		{"s-maxage over max-age", rh("Cache-Control", "max-age=10, s-maxage=20"), rt0, 20 * time.Second, true},
		{"max-age over expires", rh("Cache-Control", "max-age=10", "Date", rt0Date, "Expires", rDateAt(time.Hour)), rt0, 10 * time.Second, true},
		{"expires minus date", rh("Date", rt0Date, "Expires", rDateAt(time.Hour)), rt0.Add(time.Minute), time.Hour, true},
		{"expires without date uses response time", rh("Expires", rDateAt(time.Hour)), rt0.Add(time.Minute), 59 * time.Minute, true},
		{"expires without any date is stale", rh("Expires", rDateAt(time.Hour)), time.Time{}, 0, true},
		{"expires in the past", rh("Date", rt0Date, "Expires", rDateAt(-time.Hour)), rt0, 0, true},
		{"invalid expires 0", rh("Date", rt0Date, "Expires", "0"), rt0, 0, true},
		{"differing expires", rh("Date", rt0Date, "Expires", rDateAt(time.Hour), "Expires", rDateAt(2*time.Hour)), rt0, 0, true},
		{"identical expires", rh("Date", rt0Date, "Expires", rDateAt(time.Hour), "Expires", rDateAt(time.Hour)), rt0, time.Hour, true},
		{"differing dates", rh("Date", rt0Date, "Date", rDateAt(time.Minute), "Expires", rDateAt(time.Hour)), rt0, 0, true},
		{"invalid max-age is stale", rh("Cache-Control", "max-age=ten", "Expires", rDateAt(time.Hour), "Date", rt0Date), rt0, 0, true},
		{"duplicated max-age is stale", rh("Cache-Control", "max-age=10, max-age=20"), rt0, 0, true},
		{"duplicated s-maxage is stale", rh("Cache-Control", "s-maxage=10", "Cache-Control", "s-maxage=1"), rt0, 0, true},
		{"zero max-age", rh("Cache-Control", "max-age=0"), rt0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := ParseResponseControl(tt.h, "")
			got, has := LifetimeAt(200, tt.h, rc, time.Hour*24, tt.respTime)
			if got != tt.want || has != tt.has {
				t.Errorf("LifetimeAt = %v, %v, want %v, %v", got, has, tt.want, tt.has)
			}
		})
	}

	t.Run("Lifetime uses Date", func(t *testing.T) {
		h := rh("Date", rt0Date, "Expires", rDateAt(time.Hour))
		if got, _ := Lifetime(200, h, ParseResponseControl(h, ""), 0); got != time.Hour {
			t.Errorf("Lifetime = %v, want 1h", got)
		}
	})

	// Conflicts resolve to the most restrictive reading.
	restrictive := []struct {
		name  string
		cc    string
		check func(ResponseControl, Freshness) bool
	}{
		{"max-age with no-cache is always stale", "max-age=60, no-cache", func(rc ResponseControl, f Freshness) bool { return !f.Fresh(rt0) && !rc.MayServeStale() }},
		{"public with no-store is not stored", "public, no-store, max-age=60", func(rc ResponseControl, f Freshness) bool {
			return Storable(rGet(), 200, nil, rc, true, false) == "no-store"
		}},
		{"smaller stale-while-revalidate", "stale-while-revalidate=60, stale-while-revalidate=5", func(rc ResponseControl, _ Freshness) bool {
			return rc.StaleWhileRevalidate == 5*time.Second
		}},
	}
	for _, tt := range restrictive {
		t.Run(tt.name, func(t *testing.T) {
			h := rh("Cache-Control", tt.cc)
			rc := ParseResponseControl(h, "")
			f, _ := NewFreshness(200, h, rc, 0, rt0, rt0)
			if !tt.check(rc, f) {
				t.Errorf("%q: not resolved to the most restrictive reading: %+v %+v", tt.cc, rc, f)
			}
		})
	}
}

// TestRule07_HeuristicFreshness pins RFC 9111 §4.2.2: at most 10% of Date -
// Last-Modified, only without explicit freshness, only for heuristically
// cacheable statuses (or public).
func TestRule07_HeuristicFreshness(t *testing.T) {
	lm := rDateAt(-10 * time.Hour)
	tests := []struct {
		name     string
		status   int
		h        http.Header
		respTime time.Time
		dflt     time.Duration
		want     time.Duration
		has      bool
	}{
		{"10 percent", 200, rh("Date", rt0Date, "Last-Modified", lm), rt0, 0, time.Hour, true},
		{"date absent: response time", 200, rh("Last-Modified", lm), rt0.Add(10 * time.Hour), 0, 2 * time.Hour, true},
		{"date absent, modified in the second of the response: default ttl", 200, rh("Last-Modified", rt0Date), rt0.Add(700 * time.Millisecond), time.Minute, time.Minute, true},
		{"date absent, modified in the second of the response: no heuristic", 200, rh("Last-Modified", rt0Date), rt0.Add(700 * time.Millisecond), 0, 0, false},
		{"explicit wins", 200, rh("Date", rt0Date, "Last-Modified", lm, "Cache-Control", "max-age=5"), rt0, 0, 5 * time.Second, true},
		{"expires wins", 200, rh("Date", rt0Date, "Last-Modified", lm, "Expires", rDateAt(time.Minute)), rt0, 0, time.Minute, true},
		{"not for 500", 500, rh("Date", rt0Date, "Last-Modified", lm), rt0, 0, 0, false},
		{"public 500", 500, rh("Date", rt0Date, "Last-Modified", lm, "Cache-Control", "public"), rt0, 0, time.Hour, true},
		{"public without last-modified: default ttl", 500, rh("Date", rt0Date, "Cache-Control", "public"), rt0, time.Minute, time.Minute, true},
		{"no default ttl for 414", 414, rh("Date", rt0Date), rt0, time.Minute, 0, false},
		{"no default ttl for 501", 501, rh("Date", rt0Date), rt0, time.Minute, 0, false},
		{"default ttl for 404", 404, rh("Date", rt0Date), rt0, time.Minute, time.Minute, true},
		{"last-modified in the future: default ttl", 200, rh("Date", rt0Date, "Last-Modified", rDateAt(time.Hour)), rt0, time.Minute, time.Minute, true},
		{"invalid last-modified: nothing", 200, rh("Date", rt0Date, "Last-Modified", "yesterday"), rt0, 0, 0, false},
		{"heuristic beats default ttl", 200, rh("Date", rt0Date, "Last-Modified", lm), rt0, 24 * time.Hour, time.Hour, true},
		{"differing dates: stale", 200, rh("Date", rt0Date, "Date", lm, "Last-Modified", lm), rt0, 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := ParseResponseControl(tt.h, "")
			got, has := LifetimeAt(tt.status, tt.h, rc, tt.dflt, tt.respTime)
			if got != tt.want || has != tt.has {
				t.Errorf("LifetimeAt = %v, %v, want %v, %v", got, has, tt.want, tt.has)
			}
		})
	}
}

// TestRule08_Age pins RFC 9111 §4.2.3.
func TestRule08_Age(t *testing.T) {
	tests := []struct {
		name      string
		h         http.Header
		req, resp time.Time
		want      time.Duration
		ok        bool
	}{
		{"no age, no date", rh(), rt0, rt0.Add(2 * time.Second), 2 * time.Second, true},
		{"apparent age wins", rh("Date", rDateAt(-30*time.Second)), rt0, rt0.Add(time.Second), 31 * time.Second, true},
		{"date in the future: apparent 0", rh("Date", rDateAt(time.Hour)), rt0, rt0, 0, true},
		{"corrected age value wins", rh("Date", rt0Date, "Age", "100"), rt0, rt0.Add(3 * time.Second), 103 * time.Second, true},
		{"first of several age lines", rh("Age", "10", "Age", "50"), rt0, rt0, 10 * time.Second, true},
		{"first of an age list", rh("Age", "10, 50"), rt0, rt0, 10 * time.Second, true},
		{"invalid age", rh("Age", "ten"), rt0, rt0, 0, false},
		{"negative age", rh("Age", "-5"), rt0, rt0, 0, false},
		{"huge age saturates", rh("Age", "99999999999999999999"), rt0, rt0, maxDelta, true},
		{"no date: apparent age from the second received", rh(), rt0.Add(749 * time.Millisecond), rt0.Add(750 * time.Millisecond), 750 * time.Millisecond, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := InitialAge(tt.h, tt.req, tt.resp)
			if got != tt.want || ok != tt.ok {
				t.Errorf("InitialAge = %v, %v, want %v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}

	t.Run("current age adds resident time", func(t *testing.T) {
		if got := CurrentAge(5*time.Second, rt0, rt0.Add(time.Minute)); got != 65*time.Second {
			t.Errorf("CurrentAge = %v, want 65s", got)
		}
		if got := CurrentAge(5*time.Second, rt0, rt0.Add(-time.Minute)); got != 5*time.Second {
			t.Errorf("CurrentAge with clock going back = %v, want 5s", got)
		}
	})
	t.Run("no date: not fresh past Expires", func(t *testing.T) {
		// A review: Expires measured from the second received, the age
		// not, left a response without Date fresh 0.45 s past Expires.
		rt := rt0.Add(750 * time.Millisecond)
		h := rh("Expires", rDateAt(time.Second))
		f, _ := NewFreshness(200, h, ParseResponseControl(h, ""), 0, rt.Add(-time.Millisecond), rt)
		if ttl := f.TTL(rt0.Add(1450 * time.Millisecond)); ttl > 0 {
			t.Errorf("TTL 0.45 s past Expires: %v (lifetime %v, initial age %v)", ttl, f.Lifetime, f.InitialAge)
		}
		if ttl := f.TTL(rt0.Add(900 * time.Millisecond)); ttl != 100*time.Millisecond {
			t.Errorf("TTL 0.1 s before Expires: %v", ttl)
		}
	})
	t.Run("freshness", func(t *testing.T) {
		h := rh("Cache-Control", "max-age=60", "Age", "20", "Date", rt0Date)
		f, has := NewFreshness(200, h, ParseResponseControl(h, ""), 0, rt0, rt0)
		if !has || f.Lifetime != time.Minute || f.InitialAge != 20*time.Second {
			t.Fatalf("NewFreshness = %+v, %v", f, has)
		}
		if got := f.TTL(rt0.Add(10 * time.Second)); got != 30*time.Second {
			t.Errorf("TTL = %v, want 30s", got)
		}
		if !f.Fresh(rt0.Add(39*time.Second)) || f.Fresh(rt0.Add(40*time.Second)) {
			t.Error("fresh until current age reaches the lifetime")
		}
		if got := f.TTL(rt0.Add(50 * time.Second)); got != -10*time.Second {
			t.Errorf("stale TTL = %v, want -10s", got)
		}
	})
	t.Run("invalid age is stale", func(t *testing.T) {
		h := rh("Cache-Control", "max-age=60", "Age", "x")
		f, _ := NewFreshness(200, h, ParseResponseControl(h, ""), 0, rt0, rt0)
		if f.Fresh(rt0) {
			t.Error("a response with an invalid Age is fresh")
		}
	})
}

// TestRule09_NoStaleWhenForbidden pins RFC 9111 §4.2.4 and §5.2.2: no
// stale serving under must-revalidate, proxy-revalidate, s-maxage or
// no-cache, whatever the configuration or the request allows.
func TestRule09_NoStaleWhenForbidden(t *testing.T) {
	anyReq := ParseRequestControl(rh("Cache-Control", "max-stale, stale-if-error=600"))
	for _, cc := range []string{"must-revalidate", "proxy-revalidate", "s-maxage=10", "no-cache", "must-revalidate, stale-while-revalidate=60, stale-if-error=60"} {
		t.Run(cc, func(t *testing.T) {
			rc := ParseResponseControl(rh("Cache-Control", cc), "")
			if rc.MayServeStale() {
				t.Error("MayServeStale = true")
			}
			if swr, sie := StaleAllowance(rc, anyReq, time.Hour, time.Hour); swr != 0 || sie != 0 {
				t.Errorf("StaleAllowance = %v, %v, want 0, 0", swr, sie)
			}
			f := Freshness{Lifetime: time.Second, ResponseTime: rt0}
			if f.Satisfies(rt0.Add(time.Minute), anyReq, rc) {
				t.Error("max-stale served a stale response")
			}
		})
	}
	if rc := ParseResponseControl(rh("Cache-Control", "max-age=10"), ""); !rc.MayServeStale() {
		t.Error("MayServeStale(max-age=10) = false")
	}
	// Which of them make a failed revalidation a 504 of the cache's own
	// (§5.2.2.2, §5.2.2.8, §5.2.2.10) rather than the origin's error.
	for cc, want := range map[string]bool{
		"must-revalidate": true, "proxy-revalidate": true, "s-maxage=10": true,
		"no-cache": false, "max-age=10": false,
	} {
		if got := ParseResponseControl(rh("Cache-Control", cc), "").MustRevalidateShared(); got != want {
			t.Errorf("MustRevalidateShared(%s) = %v, want %v", cc, got, want)
		}
	}
	// The same directive in a targeted field means the same (RFC 9213 §2.1).
	if !ParseResponseControl(rh("CDN-Cache-Control", "s-maxage=10"), "CDN-Cache-Control").MustRevalidateShared() {
		t.Error("MustRevalidateShared(targeted s-maxage) = false")
	}
}

// TestRule10_StaleWhileRevalidateWindow pins RFC 5861 §3 with the
// configuration as default and cap.
func TestRule10_StaleWhileRevalidateWindow(t *testing.T) {
	none := ParseRequestControl(rh())
	tests := []struct {
		name string
		cc   string
		req  RequestControl
		cfg  time.Duration
		want time.Duration
	}{
		{"response only", "stale-while-revalidate=30", none, 0, 30 * time.Second},
		{"config default", "max-age=1", none, time.Minute, time.Minute},
		{"config caps", "stale-while-revalidate=3600", none, time.Minute, time.Minute},
		{"response below cap", "stale-while-revalidate=10", none, time.Minute, 10 * time.Second},
		{"neither", "max-age=1", none, 0, 0},
		{"response zero", "stale-while-revalidate=0", none, time.Minute, 0},
		{"config off", "stale-while-revalidate=30", none, -1, 0},
		{"config off, none in the response", "max-age=1", none, -1, 0},
		{"request no-cache", "stale-while-revalidate=30", ParseRequestControl(rh("Cache-Control", "no-cache")), 0, 0},
		{"request pragma no-cache", "stale-while-revalidate=30", ParseRequestControl(rh("Pragma", "no-cache")), 0, 0},
		{"request max-age", "stale-while-revalidate=30", ParseRequestControl(rh("Cache-Control", "max-age=100")), 0, 0},
		{"request min-fresh", "stale-while-revalidate=30", ParseRequestControl(rh("Cache-Control", "min-fresh=1")), 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			swr, _ := StaleAllowance(ParseResponseControl(rh("Cache-Control", tt.cc), ""), tt.req, tt.cfg, 0)
			if swr != tt.want {
				t.Errorf("swr = %v, want %v", swr, tt.want)
			}
		})
	}
}

// TestRule11_StaleIfErrorWindow pins RFC 5861 §4: response or request
// stale-if-error, with the configuration as default and cap.
func TestRule11_StaleIfErrorWindow(t *testing.T) {
	none := ParseRequestControl(rh())
	reqSIE := ParseRequestControl(rh("Cache-Control", "stale-if-error=600"))
	tests := []struct {
		name string
		cc   string
		req  RequestControl
		cfg  time.Duration
		want time.Duration
	}{
		{"response only", "stale-if-error=30", none, 0, 30 * time.Second},
		{"config default", "max-age=1", none, time.Hour, time.Hour},
		{"config caps", "stale-if-error=86400", none, time.Hour, time.Hour},
		{"request directive", "max-age=1", reqSIE, 0, 10 * time.Minute},
		{"request directive capped", "max-age=1", reqSIE, time.Minute, time.Minute},
		{"larger of request and response", "stale-if-error=30", reqSIE, 0, 10 * time.Minute},
		{"request no-cache keeps stale-if-error", "stale-if-error=30", ParseRequestControl(rh("Cache-Control", "no-cache")), 0, 30 * time.Second},
		{"config off", "stale-if-error=30", none, -1, 0},
		{"config off, request directive too", "stale-if-error=30", reqSIE, -1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, sie := StaleAllowance(ParseResponseControl(rh("Cache-Control", tt.cc), ""), tt.req, 0, tt.cfg)
			if sie != tt.want {
				t.Errorf("sie = %v, want %v", sie, tt.want)
			}
		})
	}
}

// TestStaleOnArrivalWithoutValidator: a response the origin gave no
// lifetime (max-age=0, s-maxage=0, a bare public, Expires at or before
// Date) and no validator is not stored, as no-cache without one is not: it could
// answer no one, and was stored again on every request (a review saw
// five stores and four "revalidations" for five requests). With a
// validator, or a window to be served stale in, it is stored.
func TestStaleOnArrivalWithoutValidator(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cfg    Config
		fields []string
		stored bool
	}{
		{"max-age=0", Config{}, []string{"Cache-Control", "max-age=0"}, false},
		{"s-maxage=0", Config{}, []string{"Cache-Control", "s-maxage=0, max-age=60"}, false},
		{"bare public", Config{}, []string{"Cache-Control", "public"}, false},
		{"Expires at Date", Config{}, []string{"Expires", "Mon, 01 Jan 2024 00:00:00 GMT"}, false},
		// A lifetime an upstream cache used up: a max-stale request may
		// take it (cache-tests.fyi's ccreq-max-stale-age).
		{"Age past max-age", Config{}, []string{"Cache-Control", "max-age=60", "Age", "120"}, true},
		{"max-age=0 under default_ttl", Config{DefaultTTL: caddy.Duration(time.Minute)}, []string{"Cache-Control", "max-age=0"}, false},
		{"max-age=0 with an ETag", Config{}, []string{"Cache-Control", "max-age=0", "Etag", `"v1"`}, true},
		{"max-age=0 with Last-Modified", Config{}, []string{"Cache-Control", "max-age=0", "Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT"}, true},
		{"max-age=0, stale-while-revalidate", Config{}, []string{"Cache-Control", "max-age=0, stale-while-revalidate=60"}, true},
		{"max-age=0, stale-if-error", Config{}, []string{"Cache-Control", "max-age=0, stale-if-error=60"}, true},
		{"max-age=0 under the stale_if_error option", Config{StaleIfError: caddy.Duration(time.Minute)}, []string{"Cache-Control", "max-age=0"}, true},
		{"max-age=0, must-revalidate, under stale_if_error", Config{StaleIfError: caddy.Duration(time.Minute)}, []string{"Cache-Control", "max-age=0, must-revalidate"}, false},
		// no-cache takes the lifetime (§5.2.2.4) and forbids serving
		// stale: without a validator, nothing could use the entry.
		{"no-cache, max-age=30", Config{}, []string{"Cache-Control", "no-cache, max-age=30"}, false},
		{"no-cache and max-age=30 on two lines", Config{}, []string{"Cache-Control", "max-age=30", "Cache-Control", "no-cache"}, false},
		{"no-cache, s-maxage, stale-if-error, under default_ttl", Config{DefaultTTL: caddy.Duration(time.Minute)}, []string{"Cache-Control", "no-cache, s-maxage=30, stale-if-error=60"}, false},
		{"no-cache, max-age=30 with an ETag", Config{}, []string{"Cache-Control", "no-cache, max-age=30", "Etag", `"v1"`}, true},
		{"no-cache=\"Set-Cookie\", max-age=30 (qualified)", Config{}, []string{"Cache-Control", `no-cache="Set-Cookie", max-age=30`}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, tc.cfg, c)
			o := static(c, 200, "body", append([]string{"Date", c.date()}, tc.fields...)...)
			get(t, h, o, "http://example.com/z0")
			w := get(t, h, o, "http://example.com/z0")
			if stored := hasParam(w.Header().Get("Cache-Status"), "fwd=stale") || hasParam(w.Header().Get("Cache-Status"), "hit"); stored != tc.stored {
				t.Errorf("second request: Cache-Status %q; stored %v, want %v", w.Header().Get("Cache-Status"), stored, tc.stored)
			}
			if st := h.store.(*store).stats(); (st.Stores > 0) != tc.stored {
				t.Errorf("stores %d, want stored %v", st.Stores, tc.stored)
			}
		})
	}
}
