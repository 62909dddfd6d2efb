package integration

import (
	"cmp"
	"fmt"
	"io"
	"net"
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

// TestCacheWaitersGetTrailersOfAnHTTP2Origin: an origin speaking h2c
// sends a body of declared length, then trailer fields it did not announce
// (as gRPC-style servers do). A request that comes while the body arrives
// reads it from the first request's fetch, and gets those trailer fields
// at its end, as the first client does; nothing is stored.
func TestCacheWaitersGetTrailersOfAnHTTP2Origin(t *testing.T) {
	gate := make(chan struct{})
	var calls atomic.Int32
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	origin := &http.Server{Protocols: new(http.Protocols), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Content-Length", "20")
		io.WriteString(w, "0123456789")
		w.(http.Flusher).Flush()
		<-gate
		io.WriteString(w, "abcdefghij")
		w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
	})}
	origin.Protocols.SetUnencryptedHTTP2(true)
	go origin.Serve(l)
	t.Cleanup(func() { origin.Close() })
	// flush_interval -1: each client sees the first part before the rest
	// is sent (reverse_proxy holds back a body of declared length).
	port, h2c := h2cCacheFront(t, &backend{name: "h2c origin", addr: "h2c://" + l.Addr().String() + " {\n\t\tflush_interval -1\n\t}"}, "")

	url := fmt.Sprintf("http://127.0.0.1:%d/status", port)
	type answer struct {
		body, trailer, cacheStatus string
		err                        error
	}
	fetch := func(firstPart chan<- struct{}) <-chan answer {
		done := make(chan answer, 1)
		go func() {
			res, err := h2c.Get(url)
			if err != nil {
				done <- answer{err: err}
				return
			}
			defer res.Body.Close()
			first := make([]byte, 10)
			_, err = io.ReadFull(res.Body, first)
			close(firstPart)
			rest, err2 := io.ReadAll(res.Body)
			done <- answer{string(first) + string(rest), res.Trailer.Get("Grpc-Status"), res.Header.Get("Cache-Status"), cmp.Or(err, err2)}
		}()
		return done
	}
	leaderFirst, waiterFirst := make(chan struct{}), make(chan struct{})
	leader := fetch(leaderFirst)
	<-leaderFirst
	waiter := fetch(waiterFirst)
	<-waiterFirst
	close(gate)
	for name, ch := range map[string]<-chan answer{"first client": leader, "waiter": waiter} {
		if a := <-ch; a.err != nil || a.body != "0123456789abcdefghij" || a.trailer != "0" {
			t.Errorf("%s: %q, trailer Grpc-Status %q, %v; want the whole body and \"0\"", name, a.body, a.trailer, a.err)
		} else if name == "waiter" && !strings.Contains(a.cacheStatus, "collapsed") {
			t.Errorf("waiter's Cache-Status %q, want collapsed", a.cacheStatus)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("origin requests: %d, want 1", n)
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
