package integration

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
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
	frontPort, h2c := h2cCacheFront(t, origin, "max_size 1MiB")
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

// TestCacheConditionalMissOfALargeBody: a browser revalidates an object
// larger than max_item_size that the cache does not hold. The miss goes
// to the origin without If-None-Match (to be stored), the 200 turns out
// too large to store, and the client, over HTTP/2 and HTTP/1.1, gets a
// clean 304 at once (not a reset stream, not a cut connection); the next
// conditional miss of the URL goes to the origin as it came.
func TestCacheConditionalMissOfALargeBody(t *testing.T) {
	body := strings.Repeat("x", 2<<20)
	var conditional atomic.Int32
	origin := startBackend(t, "large", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Etag", `"big"`)
		w.Header().Set("Cache-Control", "max-age=60")
		if r.Header.Get("If-None-Match") == `"big"` {
			conditional.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		io.WriteString(w, body)
	})
	frontPort, h2c := h2cCacheFront(t, origin, "max_item_size 64KiB")
	for _, c := range []struct {
		name   string
		client *http.Client
	}{{"h2c", h2c}, {"HTTP/1.1", newClient()}} {
		req, err := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/%s", frontPort, c.name), nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("If-None-Match", `"big"`)
		for i := range 2 {
			before := conditional.Load()
			res, err := c.client.Do(req)
			if err != nil {
				t.Fatalf("%s, request %d: %v", c.name, i+1, err)
			}
			n, err := io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if err != nil || res.StatusCode != http.StatusNotModified || n != 0 {
				t.Errorf("%s, request %d: %d, %d body bytes, %v; want a clean 304", c.name, i+1, res.StatusCode, n, err)
			}
			if asItCame := conditional.Load() > before; asItCame != (i == 1) {
				t.Errorf("%s, request %d: went to the origin conditional %v, want %v", c.name, i+1, asItCame, i == 1)
			}
		}
	}
}

// h2cCacheFront starts a Caddy serving HTTP/1.1 and h2c, with
// response_cache (cache_name itest, then options) in front of origin, and
// returns its port and a client speaking h2c with prior knowledge.
func h2cCacheFront(t *testing.T, origin *backend, options string) (port int, h2c *http.Client) {
	t.Helper()
	port = freePort(t)
	startCaddy(t, globalsWith("\tservers {\n\t\tprotocols h1 h2c\n\t}\n")+fmt.Sprintf(`
http://127.0.0.1:%d {
	response_cache {
		cache_name itest
		%s
	}
	reverse_proxy %s
}
`, port, options, origin.addr))
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	return port, &http.Client{Transport: tr}
}
