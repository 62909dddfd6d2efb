package cache

import (
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// BenchmarkMissManyFields is BenchmarkMiss/untried (min_uses 2, unique
// URLs, nothing stored) with a response of twelve header fields, as an
// upstream's through reverse_proxy (Via, no Server): more than the eight
// a small Go map holds.
func BenchmarkMissManyFields(b *testing.B) {
	const size = 1 << 10
	c := newClock()
	h := newTestHandler(b, Config{MinUses: 2}, c)
	o := static(c, 200, strings.Repeat("m", size), "Cache-Control", "max-age=60", "Content-Length", strconv.Itoa(size),
		"Content-Type", "text/html; charset=utf-8", "Etag", `"abc"`, "Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT",
		"Vary", "Accept-Encoding", "Via", "1.1 Caddy", "X-Request-Id", "0123456789", "Strict-Transport-Security", "max-age=31536000",
		"X-Content-Type-Options", "nosniff", "Referrer-Policy", "no-referrer")
	r := newRequest(http.MethodGet, "http://example.com/many")
	sent := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request).URL
	w := &resetWriter{h: make(http.Header)}
	b.SetBytes(size)
	b.ReportAllocs()
	i := 0
	cpu0 := processCPU()
	for b.Loop() {
		i++
		r.URL.RawQuery = strconv.Itoa(i)
		sent.RawQuery = r.URL.RawQuery
		clear(w.h)
		_ = h.ServeHTTP(w, r, o)
	}
	reportCPU(b, cpu0)
	if cs := w.h.Get("Cache-Status"); !strings.Contains(cs, "fwd=uri-miss") {
		b.Fatalf("measured something other than misses: Cache-Status %q", cs)
	}
}
