package cache

import (
	"math"
	"math/big"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzParseResponseControl: parsing never panics, gives -1 or a duration in
// [0, 2^31 s] for every directive, keeps qualified field lists only
// without the bare form, does not depend on how directives are split
// across field lines, and, for values without quoted strings, agrees with
// modelResponseControl (values, duplicates, flags).
func FuzzParseResponseControl(f *testing.F) {
	for _, s := range []string{
		"max-age=60", "public, s-maxage=10, stale-while-revalidate=5", `no-cache="set-cookie", private="a, b"`,
		`max-age="10`, "max-age=99999999999999999999", `foo="\"", bar`, "max-age=1, max-age=2", ",,,", "",
		"max-age=2147483648", "s-maxage=2147483649", "max-age=0", "S-MaxAge=007, s-maxage=7", "max-age=5, max-age=-5",
		"max-age=9, max-age", "max-age=1 2", "PUBLİC", "publİc, immutable", "MUST-REVALİDATE", "no-cache=, private=x",
		"stale-while-revalidate=9, stale-while-revalidate=x",
	} {
		f.Add(s, "")
		f.Add(s, "max-age=5, no-store")
	}
	f.Fuzz(func(t *testing.T, cc, cdn string) {
		h := http.Header{"Cache-Control": {cc}}
		if cdn != "" {
			h["Cdn-Cache-Control"] = []string{cdn}
		}
		rc := ParseResponseControl(h, "CDN-Cache-Control")
		for _, d := range []time.Duration{rc.MaxAge, rc.SMaxAge, rc.StaleWhileRevalidate, rc.StaleIfError} {
			if d < -1 || d > maxDelta {
				t.Fatalf("duration out of range: %+v", rc)
			}
		}
		if rc.NoCache && rc.NoCacheFields != nil || rc.Private && rc.PrivateFields != nil {
			t.Fatalf("bare and qualified forms together: %+v", rc)
		}
		if !rc.Targeted && !strings.Contains(cc, "\"") {
			// Without quoted strings, commas only separate directives, so
			// one line per directive parses the same.
			split := http.Header{"Cache-Control": strings.Split(cc, ",")}
			if got := ParseResponseControl(split, ""); !rcEqual(got, rc) {
				t.Fatalf("split lines parse differently:\n %+v\n %+v", got, rc)
			}
		}
		if !strings.Contains(cc, "\"") {
			got := ParseResponseControl(http.Header{"Cache-Control": {cc}}, "")
			if want := modelResponseControl(cc); !rcEqual(got, want) {
				t.Fatalf("Cache-Control %q parses as\n %+v\nthe model says\n %+v", cc, got, want)
			}
		}
		req := ParseRequestControl(h)
		for _, d := range []time.Duration{req.MaxAge, req.MinFresh, req.StaleIfError} {
			if d < -1 || d > maxDelta {
				t.Fatalf("request duration out of range: %+v", req)
			}
		}
		life, _ := LifetimeAt(200, h, rc, 0, rt0)
		if life < 0 {
			t.Fatalf("negative lifetime %v", life)
		}
	})
}

// modelResponseControl reads a Cache-Control value without quoted strings
// independently of the parser, by RFC 9111 §5.2 and what
// ParseResponseControl documents: directives are comma-separated (empty
// members ignored), OWS around a directive and its "=" is tolerated, and
// names are tokens compared case-insensitively, which for a token (ASCII,
// RFC 9110 §5.6.2) is ASCII case folding only. max-age and s-maxage take
// delta-seconds (§1.2.2: 1*DIGIT, beyond 2^31 taken as 2^31); a missing,
// malformed or second different value sets Invalid (§4.2.1), and the
// value kept is the smallest valid one (the most restrictive reading).
// stale-while-revalidate and stale-if-error keep the smallest, an unusable
// value counting as 0. Bare no-cache and private (or with an empty
// argument) are the unqualified forms.
func modelResponseControl(cc string) ResponseControl {
	want := ResponseControl{MaxAge: -1, SMaxAge: -1, StaleWhileRevalidate: -1, StaleIfError: -1}
	var noCacheFields, privateFields []string
	delta := func(arg string) (time.Duration, bool) {
		if arg == "" || strings.Trim(arg, "0123456789") != "" {
			return 0, false
		}
		if digits := strings.TrimLeft(arg, "0"); len(digits) > 10 {
			return maxDelta, true
		}
		n, err := strconv.ParseInt(arg, 10, 64)
		if err != nil {
			panic(err)
		}
		return min(time.Duration(n)*time.Second, maxDelta), true
	}
	seen := map[string]time.Duration{} // max-age / s-maxage values
	fresh := func(dst *time.Duration, name, arg string, hasArg bool) {
		d, ok := delta(arg)
		if !hasArg || !ok {
			want.Invalid = true
			return
		}
		if prev, dup := seen[name]; dup && prev != d {
			want.Invalid = true
		}
		seen[name] = d
		if *dst < 0 || d < *dst {
			*dst = d
		}
	}
	window := func(dst *time.Duration, arg string, hasArg bool) {
		d, ok := delta(arg)
		if !hasArg || !ok {
			d = 0
		}
		if *dst < 0 || d < *dst {
			*dst = d
		}
	}
	for member := range strings.SplitSeq(cc, ",") {
		name, arg, hasArg := strings.Cut(member, "=")
		name = strings.Trim(name, " \t")
		arg = strings.Trim(arg, " \t")
		if name == "" && !hasArg {
			continue
		}
		lower := []byte(name)
		for i, c := range lower {
			if 'A' <= c && c <= 'Z' {
				lower[i] = c + 'a' - 'A'
			}
		}
		switch string(lower) {
		case "max-age":
			fresh(&want.MaxAge, "max-age", arg, hasArg)
		case "s-maxage":
			fresh(&want.SMaxAge, "s-maxage", arg, hasArg)
		case "stale-while-revalidate":
			window(&want.StaleWhileRevalidate, arg, hasArg)
		case "stale-if-error":
			window(&want.StaleIfError, arg, hasArg)
		case "no-store":
			want.NoStore = true
		case "no-cache":
			if f := fieldArg(arg); f == "" {
				want.NoCache = true
			} else if !slices.Contains(noCacheFields, f) {
				noCacheFields = append(noCacheFields, f)
			}
		case "private":
			if f := fieldArg(arg); f == "" {
				want.Private = true
			} else if !slices.Contains(privateFields, f) {
				privateFields = append(privateFields, f)
			}
		case "public":
			want.Public = true
		case "must-revalidate":
			want.MustRevalidate = true
		case "proxy-revalidate":
			want.ProxyRevalidate = true
		case "must-understand":
			want.MustUnderstand = true
		case "immutable":
			want.Immutable = true
		}
	}
	if !want.NoCache {
		want.NoCacheFields = noCacheFields
	}
	if !want.Private {
		want.PrivateFields = privateFields
	}
	return want
}

// fieldArg is the field named by an unquoted no-cache or private argument
// (which holds no comma), canonicalised, or "" when it names none and the
// directive counts as bare. This mirrors the parser (Unicode spaces
// trimmed, a NUL taken as naming no field): only the freshness values
// and the directive names are modelled independently.
func fieldArg(arg string) string {
	f := strings.TrimSpace(arg)
	if strings.IndexByte(f, 0) >= 0 {
		return ""
	}
	return textproto.CanonicalMIMEHeaderKey(f)
}

// FuzzParseSFDictionary: the dictionary parser never panics, member keys
// are unique and valid, and a dictionary that parses still parses after
// re-joining its members with ", " in order.
func FuzzParseSFDictionary(f *testing.F) {
	for _, s := range []string{
		"max-age=60, no-store", `a=(1 "x" y);p=?0, b=:aGk=:;q=1.5`, `a="x\"y"`, "a=@1, b=%\"%c3\"",
		"a=1,", "A=1", "a=(1", "  a  ,  b  ", "*=?1", "a=-999999999999999", "a=1.234",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		_ = isSFList(s) // the list parser shares the dictionary's cursor: it must not panic either
		members, ok := parseSFDictionary(s)
		if !ok {
			if members != nil {
				t.Fatalf("members returned on failure")
			}
			return
		}
		seen := map[string]bool{}
		for _, m := range members {
			if seen[m.key] {
				t.Fatalf("duplicate key %q in %q", m.key, s)
			}
			seen[m.key] = true
			if _, ok := parseSFDictionary(m.key); !ok {
				t.Fatalf("key %q is not a valid key", m.key)
			}
		}
		// Adding an unknown member never breaks a valid dictionary.
		if _, ok := parseSFDictionary(s + ", zz-unknown=1"); !ok && strings.TrimRight(s, " ") == s {
			t.Fatalf("%q parses but not with another member appended", s)
		}
	})
}

// FuzzParseRange: never panics; a satisfiable range lies within the body;
// ok is false whenever the header is not a byte range; and the result is
// what modelRange, an independent reading of RFC 9110, says.
func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"bytes=0-9", "bytes=-5", "bytes=5-", "bytes=0-1,2-3", "bytes=99999999999999999999-", "items=1-2", "bytes=,-0", "byte\u017f=0-1",
		"bytes=0-1\u00a0", "\u0085bytes=5-", "bytes=\u0661-2", "bYtEs= 10-20 ,", "bytes=-0", "bytes=5-4", "bytes=0-99999999999999999999", "b\u00ffytes=0-1"} {
		f.Add(s, int64(100))
		f.Add(s, int64(0))
	}
	f.Fuzz(func(t *testing.T, header string, size int64) {
		r, ok, sat := ParseRange(header, size)
		if sat && !ok {
			t.Fatal("satisfiable but not ok")
		}
		if sat && (r.Start < 0 || r.Start > r.End || r.End >= size || r.Length() <= 0) {
			t.Fatalf("ParseRange(%q, %d) = %+v outside the body", header, size, r)
		}
		if !sat && r != (ByteRange{}) {
			t.Fatalf("unsatisfiable with a range %+v", r)
		}
		if ok && !strings.HasPrefix(strings.ToLower(strings.TrimSpace(header)), "bytes=") {
			t.Fatalf("ok for non-bytes header %q", header)
		}
		wr, wok, wsat := modelRange(header, size)
		if r != wr || ok != wok || sat != wsat {
			t.Fatalf("ParseRange(%q, %d) = %+v, %v, %v; the model says %+v, %v, %v", header, size, r, ok, sat, wr, wok, wsat)
		}
	})
}

// modelRange reads a Range header by RFC 9110 §14.1.1-§14.2, restricted
// to what ParseRange documents: only the bytes unit (an ASCII token,
// case-insensitive) and exactly one range-spec (empty list members
// ignored, OWS around members); anything else, multi-range included, is
// ok=false (serve 200, which §14.2 allows for any Range). Leading and
// trailing OWS (SP, HTAB) of the field value is not part of it (§5.5).
// An int-range is first-pos "-" [last-pos], last-pos >= first-pos,
// satisfiable when first-pos < size (last-pos clamped to size-1); a
// suffix-range is "-" suffix-length, satisfiable when suffix-length > 0
// (the last suffix-length bytes, all when larger). Documented deviations:
// positions beyond int64 saturate at MaxInt64, and a suffix-range of an
// empty body is ok=false (200) rather than satisfiable with no bytes.
func modelRange(header string, size int64) (ByteRange, bool, bool) {
	if size < 0 {
		return ByteRange{}, false, false
	}
	v := strings.Trim(header, " \t")
	if len(v) < len("bytes=") || lowerASCIIBytes(v[:len("bytes=")]) != "bytes=" {
		return ByteRange{}, false, false
	}
	var specs []string
	for m := range strings.SplitSeq(v[len("bytes="):], ",") {
		if m = strings.Trim(m, " \t"); m != "" {
			specs = append(specs, m)
		}
	}
	if len(specs) != 1 {
		return ByteRange{}, false, false
	}
	pos := func(s string) (*big.Int, bool) {
		if s == "" || strings.Trim(s, "0123456789") != "" {
			return nil, false
		}
		n, _ := new(big.Int).SetString(s, 10)
		if n.Cmp(big.NewInt(math.MaxInt64)) > 0 {
			n.SetInt64(math.MaxInt64) // documented saturation
		}
		return n, true
	}
	bigSize := big.NewInt(size)
	first, last, _ := strings.Cut(specs[0], "-")
	if !strings.Contains(specs[0], "-") {
		return ByteRange{}, false, false
	}
	if first == "" {
		n, ok := pos(last)
		switch {
		case !ok:
			return ByteRange{}, false, false
		case n.Sign() == 0:
			return ByteRange{}, true, false
		case size == 0:
			return ByteRange{}, false, false
		case n.Cmp(bigSize) >= 0:
			return ByteRange{Start: 0, End: size - 1}, true, true
		}
		return ByteRange{Start: size - n.Int64(), End: size - 1}, true, true
	}
	start, ok := pos(first)
	if !ok {
		return ByteRange{}, false, false
	}
	end := big.NewInt(math.MaxInt64)
	if last != "" {
		if end, ok = pos(last); !ok || end.Cmp(start) < 0 {
			return ByteRange{}, false, false
		}
	}
	if start.Cmp(bigSize) >= 0 {
		return ByteRange{}, true, false
	}
	if end.Cmp(bigSize) >= 0 {
		end.SetInt64(size - 1)
	}
	return ByteRange{Start: start.Int64(), End: end.Int64()}, true, true
}

// FuzzVaryKey: never panics; for the list fields it normalises,
// idempotent (presenting the normalised value again gives the same key);
// any other field shares a key only with the same lines; absent differs
// from any present value; two fields never produce the key of their
// values swapped unless equal.
func FuzzVaryKey(f *testing.F) {
	for _, s := range [][2]string{{"gzip, br", "x"}, {" a ,, b ", `"q, r"`}, {"BR,Gzip;Q=1", ""}, {`"unterminated, x`, "\t"},
		{"00", `" `}, {`",`, `",`}, {`"a\`, "b"}, {"lang=en,", "lang=en"}, {"a, b", "a,b"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		lists := []string{"Accept-Encoding", "Accept-Language"}
		for _, v := range []string{a, b} {
			n := normalizeCodings([]string{v})
			if again := normalizeCodings([]string{n}); again != n {
				t.Fatalf("codings: not idempotent: %q -> %q -> %q", v, n, again)
			}
			n2 := normalizeCodings([]string{v, b})
			if again := normalizeCodings([]string{n2}); again != n2 {
				t.Fatalf("codings: two lines not idempotent: %q, %q -> %q -> %q", v, b, n2, again)
			}
			n = normalizeListLine(v)
			if again := normalizeListLine(n); again != n {
				t.Fatalf("list line: not idempotent: %q -> %q -> %q", v, n, again)
			}
		}
		h := http.Header{"Accept-Encoding": {a}, "Accept-Language": {b}}
		k := VaryKey(lists, h)
		norm := http.Header{
			"Accept-Encoding": {normalizeCodings([]string{a})},
			"Accept-Language": {normalizeListLine(b)},
		}
		if k2 := VaryKey(lists, norm); k2 != k {
			t.Fatalf("normalised request gives another key: %q vs %q", k, k2)
		}
		if VaryKey(lists, http.Header{"Accept-Language": {b}}) == k {
			t.Fatalf("absent Accept-Encoding matches %q", a)
		}
		// Any other field: the same lines, or another key.
		other := []string{"X-Other"}
		key := func(lines ...string) string { return VaryKey(other, http.Header{"X-Other": lines}) }
		if (key(a) == key(b)) != (a == b) {
			t.Fatalf("X-Other %q and %q: keys equal %v", a, b, a == b)
		}
		if key(a, b) == key(a+", "+b) || key(a, b) == key(a+b) {
			t.Fatalf("X-Other lines %q, %q share a key with one line", a, b)
		}
		if (key(a, b) == key(b, a)) != (a == b) {
			t.Fatalf("X-Other lines %q, %q: keys of either order equal %v", a, b, a == b)
		}
		if VaryKey(other, http.Header{}) == key(a) {
			t.Fatalf("absent X-Other matches %q", a)
		}
		x := http.Header{"X-Other": {a}, "X-Third": {b}}
		swapped := http.Header{"X-Other": {b}, "X-Third": {a}}
		if VaryKey([]string{"X-Other", "X-Third"}, x) == VaryKey([]string{"X-Other", "X-Third"}, swapped) && a != b {
			t.Fatal("different values, same key")
		}
	})
}

// FuzzAppendPath: the key's path is what the request forwarded upstream
// carries (EscapedPath), hex upper-cased; it names one decoded path; and
// normalising is idempotent (a key's path sent again gives the same key).
func FuzzAppendPath(f *testing.F) {
	for _, s := range []string{"/", "/a/b", "/a%2Fb", "/caf%c3%a9", "/%7e", "/a b", "/q%3F?x", "/%zz", "/!'()*", "/[x]", "/a%252F", "/a{%2F}", "/files/a|%2Fb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, sent string) {
		u, err := url.ParseRequestURI(sent)
		if err != nil || !strings.HasPrefix(sent, "/") { // origin-form, as requests arrive
			return
		}
		key := string(appendPath(nil, u))
		if want := upperHexOf(u.EscapedPath()); key != want {
			t.Fatalf("%q: key path %q, forwarded as %q", sent, key, want)
		}
		again, err := url.ParseRequestURI(key)
		if err != nil {
			t.Fatalf("%q: key path %q does not parse: %v", sent, key, err)
		}
		if again.Path != u.Path {
			t.Fatalf("%q: key path %q decodes to %q, the request's path is %q", sent, key, again.Path, u.Path)
		}
		if k2 := string(appendPath(nil, again)); k2 != key {
			t.Fatalf("%q: key path %q normalises again to %q", sent, key, k2)
		}
	})
}

// FuzzAppendHost: whatever a server lets through as Host, its part of a
// key holds no byte that ends an origin in a key (space, '/', '?', '#',
// controls) and decodes to the host lower-cased, so two hosts share a key
// part only when they differ in case alone.
func FuzzAppendHost(f *testing.F) {
	for _, s := range []string{"example.com", "Example.COM:8080", "[::1]:443", "[fe80::1%25eth0]", "a.test x", "a/b", "a?b", "caf\xc3\xa9.test", "%41"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, host string) {
		got := string(appendHost(nil, host))
		for i := 0; i < len(got); i++ {
			if c := got[i]; c <= ' ' || c >= 0x7f || strings.IndexByte("/?#", c) >= 0 {
				t.Fatalf("%q: key part %q holds %q", host, got, c)
			}
		}
		dec, err := url.PathUnescape(got)
		if err != nil || dec != lowerASCIIBytes(host) {
			t.Fatalf("%q: key part %q decodes to %q (%v)", host, got, dec, err)
		}
	})
}

// lowerASCIIBytes lower-cases the ASCII letters of s, byte by byte.
func lowerASCIIBytes(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
