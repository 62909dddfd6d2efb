package cache

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// FuzzParseResponseControl: parsing never panics, gives -1 or a duration in
// [0, 2^31 s] for every directive, keeps qualified field lists only
// without the bare form, and does not depend on how directives are split
// across field lines.
func FuzzParseResponseControl(f *testing.F) {
	for _, s := range []string{
		"max-age=60", "public, s-maxage=10, stale-while-revalidate=5", `no-cache="set-cookie", private="a, b"`,
		`max-age="10`, "max-age=99999999999999999999", `foo="\"", bar`, "max-age=1, max-age=2", ",,,", "",
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
// ok is false whenever the header is not a byte range.
func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"bytes=0-9", "bytes=-5", "bytes=5-", "bytes=0-1,2-3", "bytes=99999999999999999999-", "items=1-2", "bytes=,-0", "byte\u017f=0-1"} {
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
	})
}

// FuzzVaryKey: never panics; idempotent (presenting the normalised value
// again gives the same key); absent differs from any present value; two
// fields never produce the key of their values swapped unless equal.
func FuzzVaryKey(f *testing.F) {
	for _, s := range [][2]string{{"gzip, br", "x"}, {" a ,, b ", `"q, r"`}, {"BR,Gzip;Q=1", ""}, {`"unterminated, x`, "\t"},
		{"00", `" `}, {`",`, `",`}, {`"a\`, "b"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		fields := []string{"Accept-Encoding", "X-Other"}
		for _, name := range fields {
			for _, v := range []string{a, b} {
				n := normalizeVaryValue(name, []string{v})
				if again := normalizeVaryValue(name, []string{n}); again != n {
					t.Fatalf("%s: not idempotent: %q -> %q -> %q", name, v, n, again)
				}
				n2 := normalizeVaryValue(name, []string{v, b})
				if again := normalizeVaryValue(name, []string{n2}); again != n2 {
					t.Fatalf("%s: two lines not idempotent: %q, %q -> %q -> %q", name, v, b, n2, again)
				}
			}
		}
		h := http.Header{"Accept-Encoding": {a}, "X-Other": {b}}
		k := VaryKey(fields, h)
		norm := http.Header{
			"Accept-Encoding": {normalizeVaryValue("Accept-Encoding", []string{a})},
			"X-Other":         {normalizeVaryValue("X-Other", []string{b})},
		}
		if k2 := VaryKey(fields, norm); k2 != k {
			t.Fatalf("normalised request gives another key: %q vs %q", k, k2)
		}
		if VaryKey(fields, http.Header{"X-Other": {b}}) == k {
			t.Fatalf("absent Accept-Encoding matches %q", a)
		}
		swapped := http.Header{"Accept-Encoding": {b}, "X-Other": {a}}
		if VaryKey([]string{"X-Other", "X-Third"}, h) == VaryKey([]string{"X-Other", "X-Third"}, swapped) &&
			normalizeVaryValue("X-Other", []string{a}) != normalizeVaryValue("X-Other", []string{b}) {
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
