package cache

import (
	"net/http"
	"reflect"
	"slices"
	"testing"
	"time"
)

// rh builds a header from name, value pairs; a name may repeat to make
// several field lines.
func rh(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func TestParseResponseControl(t *testing.T) {
	base := ResponseControl{MaxAge: -1, SMaxAge: -1, StaleWhileRevalidate: -1, StaleIfError: -1}
	with := func(f func(*ResponseControl)) ResponseControl {
		rc := base
		f(&rc)
		return rc
	}
	tests := []struct {
		name string
		h    http.Header
		want ResponseControl
	}{
		{"absent", rh(), base},
		{"max-age", rh("Cache-Control", "max-age=60"), with(func(rc *ResponseControl) { rc.MaxAge = time.Minute })},
		{"case-insensitive names", rh("Cache-Control", "Max-Age=60, PUBLIC, No-Store"), with(func(rc *ResponseControl) {
			rc.MaxAge, rc.Public, rc.NoStore = time.Minute, true, true
		})},
		// A directive name is a token, ASCII (RFC 9110 §5.6.2): U+0130
		// is no 'i', though Unicode lower-cases it to one.
		{"names fold ASCII only", rh("Cache-Control", "PUBL\u0130C, MUST-REVAL\u0130DATE, \u0130MMUTABLE, Max-Age=5"), with(func(rc *ResponseControl) {
			rc.MaxAge = 5 * time.Second
		})},
		{"quoted delta", rh("Cache-Control", `max-age="60"`), with(func(rc *ResponseControl) { rc.MaxAge = time.Minute })},
		{"spaces and empty members", rh("Cache-Control", " ,, max-age = 5 ,public,"), with(func(rc *ResponseControl) {
			rc.MaxAge, rc.Public = 5*time.Second, true
		})},
		{"several lines", rh("Cache-Control", "public", "Cache-Control", "s-maxage=10, must-revalidate"), with(func(rc *ResponseControl) {
			rc.Public, rc.SMaxAge, rc.MustRevalidate = true, 10*time.Second, true
		})},
		{"unknown extensions ignored", rh("Cache-Control", `foo, bar="a,b", max-age=1, baz=qux`), with(func(rc *ResponseControl) { rc.MaxAge = time.Second })},
		{"all flags", rh("Cache-Control", "no-cache, private, proxy-revalidate, must-understand, immutable, no-transform"), with(func(rc *ResponseControl) {
			rc.NoCache, rc.Private, rc.ProxyRevalidate, rc.MustUnderstand, rc.Immutable = true, true, true, true, true
		})},
		{"rfc 5861", rh("Cache-Control", "stale-while-revalidate=30, stale-if-error=600"), with(func(rc *ResponseControl) {
			rc.StaleWhileRevalidate, rc.StaleIfError = 30*time.Second, 10*time.Minute
		})},
		{"overflow saturates", rh("Cache-Control", "max-age=99999999999999999999999"), with(func(rc *ResponseControl) { rc.MaxAge = maxDelta })},
		{"2^31 exactly", rh("Cache-Control", "max-age=2147483648"), with(func(rc *ResponseControl) { rc.MaxAge = maxDelta })},
		{"negative max-age invalid", rh("Cache-Control", "max-age=-1"), with(func(rc *ResponseControl) { rc.Invalid = true })},
		{"non-integer max-age invalid", rh("Cache-Control", "max-age=1.5"), with(func(rc *ResponseControl) { rc.Invalid = true })},
		{"empty max-age invalid", rh("Cache-Control", "max-age="), with(func(rc *ResponseControl) { rc.Invalid = true })},
		{"bare max-age invalid", rh("Cache-Control", "max-age"), with(func(rc *ResponseControl) { rc.Invalid = true })},
		{"unterminated quote invalid", rh("Cache-Control", `s-maxage="10`), with(func(rc *ResponseControl) { rc.Invalid = true })},
		{"junk after quote invalid", rh("Cache-Control", `max-age="10"x, public`), with(func(rc *ResponseControl) {
			rc.Invalid, rc.Public = true, true
		})},
		{"differing duplicates invalid", rh("Cache-Control", "max-age=10", "Cache-Control", "max-age=20"), with(func(rc *ResponseControl) {
			rc.MaxAge, rc.Invalid = 10*time.Second, true
		})},
		{"zero then another value invalid", rh("Cache-Control", "max-age=0, max-age=60"), with(func(rc *ResponseControl) {
			rc.MaxAge, rc.Invalid = 0, true
		})},
		{"identical duplicates tolerated", rh("Cache-Control", "max-age=10, max-age=10"), with(func(rc *ResponseControl) { rc.MaxAge = 10 * time.Second })},
		{"qualified no-cache", rh("Cache-Control", `no-cache="set-cookie, x-foo"`), with(func(rc *ResponseControl) {
			rc.NoCacheFields = []string{"Set-Cookie", "X-Foo"}
		})},
		{"qualified private token form", rh("Cache-Control", `private=x-user`), with(func(rc *ResponseControl) {
			rc.PrivateFields = []string{"X-User"}
		})},
		{"bare beats qualified", rh("Cache-Control", `private="x-user", private, no-cache, no-cache="a"`), with(func(rc *ResponseControl) {
			rc.Private, rc.NoCache = true, true
		})},
		{"empty field list is bare", rh("Cache-Control", `no-cache=""`), with(func(rc *ResponseControl) { rc.NoCache = true })},
		{"repeated window keeps smallest", rh("Cache-Control", "stale-if-error=60, stale-if-error=30"), with(func(rc *ResponseControl) { rc.StaleIfError = 30 * time.Second })},
		{"invalid window allows none", rh("Cache-Control", "stale-while-revalidate=x"), with(func(rc *ResponseControl) { rc.StaleWhileRevalidate = 0 })},
		{"escaped quoted string", rh("Cache-Control", `foo="a\"b, max-age=1", max-age=2`), with(func(rc *ResponseControl) { rc.MaxAge = 2 * time.Second })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ParseResponseControl(tt.h, "CDN-Cache-Control")
			if !rcEqual(got, tt.want) {
				t.Errorf("ParseResponseControl(%q) =\n %+v, want\n %+v", tt.h, got, tt.want)
			}
		})
	}
}

func rcEqual(a, b ResponseControl) bool {
	if !slices.Equal(a.NoCacheFields, b.NoCacheFields) || !slices.Equal(a.PrivateFields, b.PrivateFields) {
		return false
	}
	a.NoCacheFields, a.PrivateFields, b.NoCacheFields, b.PrivateFields = nil, nil, nil, nil
	return reflect.DeepEqual(a, b)
}

// TestRule17_RequestDirectives pins the request directives (RFC 9111
// §5.2.1) and how they decide whether a stored response answers the
// request without the origin.
func TestRule17_RequestDirectives(t *testing.T) {
	base := RequestControl{MaxAge: -1, MaxStale: -1, MinFresh: -1, StaleIfError: -1}
	with := func(f func(*RequestControl)) RequestControl {
		rc := base
		f(&rc)
		return rc
	}
	parse := []struct {
		name string
		h    http.Header
		want RequestControl
	}{
		{"absent", rh(), base},
		{"max-age", rh("Cache-Control", "max-age=0"), with(func(rc *RequestControl) { rc.MaxAge = 0 })},
		{"max-stale bare", rh("Cache-Control", "max-stale"), with(func(rc *RequestControl) { rc.MaxStale = MaxStaleAny })},
		{"max-stale value", rh("Cache-Control", "MAX-STALE=30"), with(func(rc *RequestControl) { rc.MaxStale = 30 * time.Second })},
		{"max-stale bare and value: smaller", rh("Cache-Control", "max-stale, max-stale=5"), with(func(rc *RequestControl) { rc.MaxStale = 5 * time.Second })},
		{"min-fresh keeps largest", rh("Cache-Control", "min-fresh=5", "Cache-Control", "min-fresh=10"), with(func(rc *RequestControl) { rc.MinFresh = 10 * time.Second })},
		{"flags", rh("Cache-Control", "no-cache, no-store, only-if-cached"), with(func(rc *RequestControl) {
			rc.NoCache, rc.NoStore, rc.OnlyIfCached = true, true, true
		})},
		{"stale-if-error", rh("Cache-Control", "stale-if-error=20"), with(func(rc *RequestControl) { rc.StaleIfError = 20 * time.Second })},
		{"invalid value ignored", rh("Cache-Control", "max-age=abc, min-fresh=-1"), base},
		{"pragma without cache-control", rh("Pragma", "No-Cache"), with(func(rc *RequestControl) { rc.NoCache = true })},
		{"pragma ignored with cache-control", rh("Pragma", "no-cache", "Cache-Control", "max-stale"), with(func(rc *RequestControl) { rc.MaxStale = MaxStaleAny })},
	}
	for _, tt := range parse {
		t.Run("parse/"+tt.name, func(t *testing.T) {
			if got := ParseRequestControl(tt.h); got != tt.want {
				t.Errorf("ParseRequestControl(%q) = %+v, want %+v", tt.h, got, tt.want)
			}
		})
	}

	rt0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	f := Freshness{Lifetime: 100 * time.Second, InitialAge: 10 * time.Second, ResponseTime: rt0}
	plain := ResponseControl{MaxAge: 100 * time.Second, SMaxAge: -1, StaleWhileRevalidate: -1, StaleIfError: -1}
	mustReval := plain
	mustReval.MustRevalidate = true
	satisfies := []struct {
		name string
		at   time.Duration // after rt0; the age is 10s more
		req  string
		rc   ResponseControl
		want bool
	}{
		{"fresh", 50 * time.Second, "", plain, true},
		{"stale", 95 * time.Second, "", plain, false},
		{"exactly at lifetime is stale", 90 * time.Second, "", plain, false},
		{"no-cache revalidates", 0, "no-cache", plain, false},
		{"max-age older", 50 * time.Second, "max-age=30", plain, false},
		{"max-age within", 10 * time.Second, "max-age=30", plain, true},
		{"min-fresh too little left", 50 * time.Second, "min-fresh=60", plain, false},
		{"min-fresh enough left", 10 * time.Second, "min-fresh=60", plain, true},
		{"max-stale within", 100 * time.Second, "max-stale=30", plain, true},
		{"max-stale past", 150 * time.Second, "max-stale=30", plain, false},
		{"max-stale any", 10000 * time.Second, "max-stale", plain, true},
		{"max-stale never past must-revalidate", 100 * time.Second, "max-stale", mustReval, false},
	}
	for _, tt := range satisfies {
		t.Run("satisfies/"+tt.name, func(t *testing.T) {
			req := ParseRequestControl(rh("Cache-Control", tt.req))
			if got := f.Satisfies(rt0.Add(tt.at), req, tt.rc); got != tt.want {
				t.Errorf("Satisfies(age %v, %q) = %v, want %v", tt.at+10*time.Second, tt.req, got, tt.want)
			}
		})
	}
}

func BenchmarkParseResponseControl(b *testing.B) {
	h := rh("Cache-Control", "public, max-age=3600, s-maxage=600, stale-while-revalidate=30, stale-if-error=86400",
		"Content-Type", "text/html; charset=utf-8", "Etag", `"abc"`)
	b.ReportAllocs()
	for b.Loop() {
		_ = ParseResponseControl(h, "CDN-Cache-Control")
	}
}

func BenchmarkParseResponseControlTargeted(b *testing.B) {
	h := rh("Cache-Control", "no-store", "Cdn-Cache-Control", "max-age=600, stale-while-revalidate=30")
	b.ReportAllocs()
	for b.Loop() {
		_ = ParseResponseControl(h, "CDN-Cache-Control")
	}
}
