package cache

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// BenchmarkProbeContent is what an HTTP/3 GET without Content-Length (and
// without content) pays to be told from one with content.
func BenchmarkProbeContent(b *testing.B) {
	r := &http.Request{}
	b.ReportAllocs()
	for b.Loop() {
		r.Body, r.ContentLength = io.NopCloser(strings.NewReader("")), -1
		if probeContent(r) {
			b.Fatal("content found in an empty body")
		}
	}
}
