package cache

import (
	"net/http"
	"strings"
	"testing"
)

// BenchmarkHitVary serves a stored variant of a URL whose responses vary
// on a list field (Accept-Encoding, normalised) and a field that is not
// a list (Cookie, compared as sent): the cost of making the variant key.
func BenchmarkHitVary(b *testing.B) {
	c := newClock()
	h := newTestHandler(b, Config{}, c)
	o := static(c, 200, strings.Repeat("v", 1<<10), "Cache-Control", "public, max-age=3600", "Vary", "Accept-Encoding, Cookie")
	fields := []string{"Accept-Encoding", "gzip, deflate, br, zstd", "Cookie", "lang=en; theme=dark"}
	get(b, h, o, "http://example.com/benchvary", fields...)
	r := newRequest(http.MethodGet, "http://example.com/benchvary", fields...)
	w := &resetWriter{h: make(http.Header)}
	b.SetBytes(1 << 10)
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		_ = h.ServeHTTP(w, r, o)
	}
	if o.calls.Load() != 1 {
		b.Fatalf("origin called %d times", o.calls.Load())
	}
}
