package integration

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestCacheHTTP2RequestsOfUnknownLength: over HTTP/2 (h2c here), a GET
// whose stream stays open after its header carries content or not. One
// that ends with an empty DATA frame, as Go's HTTP/2 transport sends for a
// body of unknown length (every HTTP/3 request a front forwards over
// h2/h2c), is cached; one with data bypasses the cache and the origin gets
// all of it, so its body-specific response is never served to others.
func TestCacheHTTP2RequestsOfUnknownLength(t *testing.T) {
	origin := startBackend(t, "origin", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprintf(w, "body=%s", body)
	})
	frontPort := freePort(t)
	startCaddy(t, globalsWith("\tservers {\n\t\tprotocols h1 h2c\n\t}\n")+fmt.Sprintf(`
http://127.0.0.1:%d {
	response_cache {
		cache_name itest
		max_size 1MiB
	}
	reverse_proxy %s
}
`, frontPort, origin.addr))
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true) // h2c with prior knowledge
	defer tr.CloseIdleConnections()
	h2c := &http.Client{Transport: tr}
	get := func(path, content string) (status, body string) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", frontPort, path), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Body, req.ContentLength = io.NopCloser(strings.NewReader(content)), -1
		res, err := h2c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		if res.ProtoMajor != 2 {
			t.Fatalf("answered over %s, want HTTP/2", res.Proto)
		}
		return res.Header.Get("Cache-Status"), string(b)
	}
	if cs, body := get("/empty", ""); !strings.Contains(cs, "fwd=uri-miss") || body != "body=" {
		t.Errorf("first GET with an empty stream: %q, %q; want a miss", cs, body)
	}
	waitFor(t, "a hit for a GET whose stream ends with an empty DATA frame", 5*time.Second, func() bool {
		cs, _ := get("/empty", "")
		return strings.HasPrefix(cs, "itest; hit")
	})
	if cs, body := get("/data", "POISON"); !strings.Contains(cs, "fwd=bypass") || body != "body=POISON" {
		t.Errorf("GET with data: %q, %q; want a bypass with the data forwarded", cs, body)
	}
	if cs, body := get("/data", ""); !strings.Contains(cs, "fwd=uri-miss") || body != "body=" {
		t.Errorf("GET without data after one with: %q, %q; want a miss, not the other's response", cs, body)
	}
}
