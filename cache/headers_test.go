package cache

import (
	"net/http"
	"slices"
	"testing"
)

// TestRule04_StorableHeaderStripsFields pins RFC 9111 §3.1 and RFC 9110
// §7.6.1: connection-specific fields, the fields Connection names, the
// proxy authentication fields and qualified no-cache / private fields are
// not stored.
func TestRule04_StorableHeaderStripsFields(t *testing.T) {
	h := rh(
		"Connection", "close, X-Hop",
		"Connection", "x-other",
		"X-Hop", "1", "X-Other", "1",
		"Keep-Alive", "timeout=5", "Proxy-Connection", "keep-alive", "Te", "trailers",
		"Transfer-Encoding", "chunked", "Upgrade", "h2c", "Trailer", "X-T",
		"Proxy-Authenticate", "Basic", "Proxy-Authorization", "Basic xx", "Proxy-Authentication-Info", `nextnonce="abc"`,
		"Cache-Control", `max-age=60, no-cache="X-Secret", private="x-user"`,
		"X-Secret", "s", "X-User", "u",
		"Content-Type", "text/plain", "Vary", "Accept", "Vary", "Accept-Encoding", "Etag", `"v1"`,
		"Age", "30",
	)
	if got := StorableHeader(h, ParseResponseControl(h, "")); len(got) != 5 || got["Age"] == nil {
		t.Errorf("StorableHeader kept %q; want the four fields below and Age", got)
	}
	// What is stored: the same, packed, without Age (rendered on every hit).
	packed := packStorable(h, ParseResponseControl(h, ""))
	got := packed.header()
	var names []string
	for k := range got {
		names = append(names, k)
	}
	slices.Sort(names)
	want := []string{"Cache-Control", "Content-Type", "Etag", "Vary"}
	if !slices.Equal(names, want) {
		t.Errorf("stored fields = %v, want %v", names, want)
	}
	if !slices.Equal(got["Vary"], []string{"Accept", "Accept-Encoding"}) {
		t.Errorf("Vary = %q: field lines not kept", got["Vary"])
	}

	t.Run("len equals cap", func(t *testing.T) {
		for k, vv := range got {
			if len(vv) != cap(vv) {
				t.Errorf("%s: len %d cap %d", k, len(vv), cap(vv))
			}
		}
		// An append by a later handler must not write into the stored copy.
		out := http.Header{}
		for k, vv := range got {
			out[k] = vv
		}
		out["Vary"] = append(out["Vary"], "Cookie")
		out["Content-Type"] = append(out["Content-Type"], "x")
		if !slices.Equal(got["Vary"], []string{"Accept", "Accept-Encoding"}) || len(got["Content-Type"]) != 1 {
			t.Error("append through a copy changed the stored header")
		}
		if got["Etag"][0] != `"v1"` {
			t.Error("stored values clobbered")
		}
	})
	t.Run("independent of the source", func(t *testing.T) {
		h["Content-Type"][0] = "changed"
		if got["Content-Type"][0] != "text/plain" {
			t.Error("stored header shares values with the source")
		}
	})
}
