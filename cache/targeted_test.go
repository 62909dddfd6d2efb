package cache

import (
	"net/http"
	"testing"
	"time"
)

func TestParseSFDictionary(t *testing.T) {
	tests := []struct {
		name string
		in   string
		ok   bool
		want []sfMember // checked when ok
	}{
		{"boolean true", "no-store", true, []sfMember{{key: "no-store", kind: sfBoolean, num: 1}}},
		{"integer", "max-age=60", true, []sfMember{{key: "max-age", kind: sfInteger, num: 60}}},
		{"negative integer", "a=-5", true, []sfMember{{key: "a", kind: sfInteger, num: -5}}},
		{"booleans", "a=?1, b=?0", true, []sfMember{{key: "a", kind: sfBoolean, num: 1}, {key: "b", kind: sfBoolean}}},
		{"string with escapes", `a="x\"y\\z"`, true, []sfMember{{key: "a", kind: sfString, str: `x"y\z`}}},
		{"token", "a=foo/bar:baz", true, []sfMember{{key: "a", kind: sfToken, str: "foo/bar:baz"}}},
		{"token from Z", "a=Zed", true, []sfMember{{key: "a", kind: sfToken, str: "Zed"}}},
		{"decimal", "a=1.5", true, []sfMember{{key: "a", kind: sfDecimal}}},
		{"byte sequence", "a=:aGVsbG8=:", true, []sfMember{{key: "a", kind: sfBytes}}},
		{"inner list", `a=(1 "two" three);p=1, b`, true, []sfMember{{key: "a", kind: sfInnerList}, {key: "b", kind: sfBoolean, num: 1}}},
		{"empty inner list", "a=()", true, []sfMember{{key: "a", kind: sfInnerList}}},
		{"inner list items with parameters", "a=(1;x=2 two;y), b", true, []sfMember{{key: "a", kind: sfInnerList}, {key: "b", kind: sfBoolean, num: 1}}},
		{"byte sequence of every base64 letter", "a=:ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/==:", true, []sfMember{{key: "a", kind: sfBytes}}},
		{"parameters ignored", "max-age=60;foo=bar;baz, no-store;x", true, []sfMember{
			{key: "max-age", kind: sfInteger, num: 60}, {key: "no-store", kind: sfBoolean, num: 1}}},
		{"duplicate keeps last value", "a=1, b, a=2", true, []sfMember{{key: "a", kind: sfInteger, num: 2}, {key: "b", kind: sfBoolean, num: 1}}},
		{"ows around commas", "a=1 ,\tb=2", true, []sfMember{{key: "a", kind: sfInteger, num: 1}, {key: "b", kind: sfInteger, num: 2}}},
		{"leading and trailing spaces", "  a=1  ", true, []sfMember{{key: "a", kind: sfInteger, num: 1}}},
		{"key charset", "*a_b-c.d*9=1", true, []sfMember{{key: "*a_b-c.d*9", kind: sfInteger, num: 1}}},
		{"date (rfc 9651)", "a=@1659578233", true, []sfMember{{key: "a", kind: sfDate, num: 1659578233}}},
		{"display string (rfc 9651)", `a=%"f%c3%bc"`, true, []sfMember{{key: "a", kind: sfDisplayString}}},

		{"empty", "", false, nil},
		{"uppercase key", "Max-Age=60", false, nil},
		{"trailing comma", "a=1,", false, nil},
		{"double comma", "a=1,,b", false, nil},
		{"missing value", "a=", false, nil},
		{"16-digit integer", "a=1234567890123456", false, nil},
		{"15-digit integer", "a=123456789012345", true, []sfMember{{key: "a", kind: sfInteger, num: 123456789012345}}},
		{"decimal too precise", "a=1.2345", false, nil},
		{"decimal no fraction", "a=1.", false, nil},
		{"unterminated string", `a="x`, false, nil},
		{"bad escape", `a="\n"`, false, nil},
		{"non-ascii in string", "a=\"\xc3\xbc\"", false, nil},
		{"bad boolean", "a=?2", false, nil},
		{"unterminated bytes", "a=:abc", false, nil},
		{"garbage after member", "a=1 b=2", false, nil},
		{"unterminated inner list", "a=(1 2", false, nil},
		{"inner list without space", "a=(1\"x\")", false, nil},
		{"bad parameter key", "a;B=1", false, nil},
		{"cache-control syntax", `max-age=60, private="set-cookie"`, true, nil},
		{"quoted integer is a string", `max-age="60"`, true, []sfMember{{key: "max-age", kind: sfString, str: "60"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parseSFDictionary(tt.in)
			if ok != tt.ok {
				t.Fatalf("parseSFDictionary(%q) ok = %v, want %v (%+v)", tt.in, ok, tt.ok, got)
			}
			if !ok || tt.want == nil {
				return
			}
			if len(got) != len(tt.want) {
				t.Fatalf("parseSFDictionary(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("member %d = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

// TestRule21_TargetedField pins RFC 9213: a targeted field that parses
// overrides Cache-Control and Expires for this cache; one that does not is
// ignored.
func TestRule21_TargetedField(t *testing.T) {
	date := "Wed, 01 Jan 2025 00:00:00 GMT"
	expires := "Wed, 01 Jan 2025 01:00:00 GMT"
	tests := []struct {
		name     string
		h        http.Header
		field    string
		targeted bool
		noStore  bool
		private  bool
		lifetime time.Duration
		hasLife  bool
	}{
		{"overrides cache-control", rh("Cache-Control", "no-store", "CDN-Cache-Control", "max-age=60"), "CDN-Cache-Control", true, false, false, time.Minute, true},
		{"overrides expires", rh("Date", date, "Expires", expires, "CDN-Cache-Control", "public"), "CDN-Cache-Control", true, false, false, 0, false},
		{"expires used without targeted field", rh("Date", date, "Expires", expires), "CDN-Cache-Control", false, false, false, time.Hour, true},
		{"no-store from targeted", rh("Cache-Control", "max-age=60", "CDN-Cache-Control", "no-store"), "CDN-Cache-Control", true, true, false, 0, false},
		{"?0 is absent", rh("CDN-Cache-Control", "no-store=?0, max-age=5"), "CDN-Cache-Control", true, false, false, 5 * time.Second, true},
		{"does not parse: ignored", rh("Cache-Control", "max-age=60", "CDN-Cache-Control", "Max-Age=5"), "CDN-Cache-Control", false, false, false, time.Minute, true},
		{"trailing comma: ignored", rh("Cache-Control", "private", "CDN-Cache-Control", "max-age=5,"), "CDN-Cache-Control", false, false, true, 0, false},
		{"several lines combine", rh("CDN-Cache-Control", "max-age=5", "CDN-Cache-Control", "private"), "CDN-Cache-Control", true, false, true, 5 * time.Second, true},
		{"custom field name", rh("Cache-Control", "no-store", "Acme-Cdn-Cache-Control", "max-age=7"), "Acme-CDN-Cache-Control", true, false, false, 7 * time.Second, true},
		{"disabled with -", rh("Cache-Control", "max-age=3", "CDN-Cache-Control", "max-age=5"), "-", false, false, false, 3 * time.Second, true},
		{"disabled with empty", rh("Cache-Control", "max-age=3", "CDN-Cache-Control", "max-age=5"), "", false, false, false, 3 * time.Second, true},
		{"s-maxage like max-age", rh("CDN-Cache-Control", "s-maxage=9, max-age=5"), "CDN-Cache-Control", true, false, false, 9 * time.Second, true},
		{"string max-age is invalid: stale", rh("CDN-Cache-Control", `max-age="60"`), "CDN-Cache-Control", true, false, false, 0, true},
		// An invalid value makes the response stale, as in Cache-Control,
		// whatever else the field says (RFC 9213 §2.1: not consumed).
		{"string max-age beside s-maxage: stale", rh("CDN-Cache-Control", `max-age="60", s-maxage=60`), "CDN-Cache-Control", true, false, false, 0, true},
		{"decimal max-age beside s-maxage: stale", rh("CDN-Cache-Control", `s-maxage=60, max-age=1.5`), "CDN-Cache-Control", true, false, false, 0, true},
		{"negative s-maxage beside max-age: stale", rh("CDN-Cache-Control", `max-age=60, s-maxage=-5`), "CDN-Cache-Control", true, false, false, 0, true},
		{"parameters ignored", rh("CDN-Cache-Control", `max-age=60;x=1`), "CDN-Cache-Control", true, false, false, time.Minute, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := ParseResponseControl(tt.h, tt.field)
			if rc.Targeted != tt.targeted || rc.NoStore != tt.noStore || rc.Private != tt.private {
				t.Errorf("got Targeted=%v NoStore=%v Private=%v, want %v %v %v", rc.Targeted, rc.NoStore, rc.Private, tt.targeted, tt.noStore, tt.private)
			}
			life, ok := Lifetime(200, tt.h, rc, 0)
			// 200 without Last-Modified: only explicit freshness counts.
			if life != tt.lifetime || ok != tt.hasLife {
				t.Errorf("Lifetime = %v, %v, want %v, %v", life, ok, tt.lifetime, tt.hasLife)
			}
		})
	}

	t.Run("all directives", func(t *testing.T) {
		rc := ParseResponseControl(rh("CDN-Cache-Control",
			`no-cache="x-a", private="x-b", public, must-revalidate, proxy-revalidate, must-understand, immutable, stale-while-revalidate=3, stale-if-error=4`), "CDN-Cache-Control")
		want := ResponseControl{MaxAge: -1, SMaxAge: -1, StaleWhileRevalidate: 3 * time.Second, StaleIfError: 4 * time.Second,
			Public: true, MustRevalidate: true, ProxyRevalidate: true, MustUnderstand: true, Immutable: true,
			NoCacheFields: []string{"X-A"}, PrivateFields: []string{"X-B"}, Targeted: true}
		if !rcEqual(rc, want) {
			t.Errorf("got %+v, want %+v", rc, want)
		}
	})
	t.Run("a window of 0 is kept", func(t *testing.T) {
		// 0 says no stale serving, where an absent directive (-1) lets
		// the config's default apply.
		rc := ParseResponseControl(rh("CDN-Cache-Control", "max-age=5, stale-while-revalidate=0, stale-if-error=0"), "CDN-Cache-Control")
		if rc.StaleWhileRevalidate != 0 || rc.StaleIfError != 0 {
			t.Errorf("stale-while-revalidate %v, stale-if-error %v; want 0 and 0", rc.StaleWhileRevalidate, rc.StaleIfError)
		}
	})
	// RFC 9213 §2.1: "The semantics and precedence of cache directives in
	// a targeted field are the same as those in Cache-Control": s-maxage
	// implies proxy-revalidate for a shared cache there too.
	t.Run("s-maxage forbids stale", func(t *testing.T) {
		rc := ParseResponseControl(rh("CDN-Cache-Control", "s-maxage=9"), "CDN-Cache-Control")
		if rc.MayServeStale() || !rc.MustRevalidateShared() {
			t.Errorf("targeted s-maxage: MayServeStale %v, MustRevalidateShared %v; want false, true, as in Cache-Control", rc.MayServeStale(), rc.MustRevalidateShared())
		}
		rc = ParseResponseControl(rh("CDN-Cache-Control", "max-age=9", "Cache-Control", "s-maxage=9"), "CDN-Cache-Control")
		if !rc.MayServeStale() || rc.MustRevalidateShared() {
			t.Errorf("targeted max-age beside a Cache-Control s-maxage: MayServeStale %v, MustRevalidateShared %v; want true, false (Cache-Control is ignored)", rc.MayServeStale(), rc.MustRevalidateShared())
		}
	})
}

// TestSurrogateControlAsTargetedField: with targeted_field
// Surrogate-Control, an origin's Surrogate-Control decides for this cache
// over Cache-Control, both ways, and is ignored when it is not a
// dictionary (the Edge Architecture's upper-case or targeted forms).
func TestSurrogateControlAsTargetedField(t *testing.T) {
	c := newClock()
	for _, tc := range []struct {
		name   string
		fields []string
		stored bool
	}{
		{name: "max-age over no-store", fields: []string{"Cache-Control", "no-store", "Surrogate-Control", "max-age=60"}, stored: true},
		{name: "no-store over max-age", fields: []string{"Cache-Control", "max-age=60", "Surrogate-Control", "no-store"}},
		{name: "not a dictionary: Cache-Control decides", fields: []string{"Cache-Control", "no-store", "Surrogate-Control", "MAX-AGE=60"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestHandler(t, Config{TargetedField: "Surrogate-Control"}, c)
			o := static(c, 200, "body", tc.fields...)
			get(t, h, o, "http://example.com/s")
			w := get(t, h, o, "http://example.com/s")
			if hit := hasParam(w.Header().Get("Cache-Status"), "hit"); hit != tc.stored {
				t.Errorf("second request: Cache-Status %q, want stored %v", w.Header().Get("Cache-Status"), tc.stored)
			}
		})
	}
}

// TestTargetedSMaxageForbidsMaxStale: a stale response whose
// CDN-Cache-Control has s-maxage is not served for a request's max-stale,
// as with the same directive in Cache-Control (RFC 9111 §5.2.2.10,
// RFC 9213 §2.1); a targeted max-age is.
func TestTargetedSMaxageForbidsMaxStale(t *testing.T) {
	for _, tc := range []struct {
		cdn  string
		code int
	}{
		{cdn: "s-maxage=10", code: http.StatusGatewayTimeout},
		{cdn: "max-age=10", code: http.StatusOK},
	} {
		t.Run(tc.cdn, func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{}, c)
			o := static(c, 200, "x", "CDN-Cache-Control", tc.cdn, "Etag", `"e"`)
			get(t, h, o, "http://example.com/ts")
			c.Advance(20 * time.Second)
			w := get(t, h, o, "http://example.com/ts", "Cache-Control", "only-if-cached, max-stale")
			if w.Code != tc.code {
				t.Errorf("only-if-cached, max-stale on a stale entry: %d (%s), want %d", w.Code, w.Header().Get("Cache-Status"), tc.code)
			}
		})
	}
}
