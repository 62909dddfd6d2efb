package cache

import (
	"strconv"
	"strings"
	"testing"
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
	benchUniqueMisses(b, h, o, "http://example.com/many", size)
}
