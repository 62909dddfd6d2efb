package integration

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	return freePorts(t, 1)[0]
}

// freePorts returns n distinct TCP ports on 127.0.0.1 that were free a
// moment ago. Two freePort calls in a row may return the same port (the
// kernel can hand out again the one just released: about 1 in 500 here).
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("finding a free port: %v", err)
		}
		defer l.Close() // held until all are picked
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports
}

// backend is a real HTTP server on 127.0.0.1 that counts the requests it
// serves. Its handler can be swapped while it runs.
type backend struct {
	name    string
	addr    string // host:port
	hits    atomic.Int64
	handler atomic.Pointer[http.HandlerFunc]
	srv     *http.Server
}

// startBackend starts a backend; it is stopped when the test ends.
func startBackend(t testing.TB, name string, h http.HandlerFunc) *backend {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("starting backend %s: %v", name, err)
	}
	b := &backend{name: name, addr: l.Addr().String()}
	b.setHandler(h)
	b.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b.hits.Add(1)
			w.Header().Set("X-Backend", b.name)
			(*b.handler.Load())(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = b.srv.Serve(l) }()
	t.Cleanup(func() { _ = b.srv.Close() })
	return b
}

func (b *backend) setHandler(h http.HandlerFunc) { b.handler.Store(&h) }

// client is an HTTP client for the tests: no cookie jar, no redirects,
// connections only to loopback.
func newClient() *http.Client {
	return &http.Client{
		Timeout: 20 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
		Transport: &http.Transport{MaxIdleConnsPerHost: 256},
	}
}

// result is a response read whole.
type result struct {
	status int
	header http.Header
	body   string
}

func do(t testing.TB, c *http.Client, method, url string, header map[string]string) result {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatalf("building request %s %s: %v", method, url, err)
	}
	for k, v := range header {
		if strings.EqualFold(k, "Host") {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	res, err := c.Do(req)
	for try := 1; err != nil && try <= 10 && (method == http.MethodGet || method == http.MethodHead) && transient(err); try++ {
		// Right after a POST /load the old config's server may still
		// accept on the shared listener and close the connection as it
		// stops (for up to its shutdown); a client retries an idempotent
		// request on a new connection, a little later each time.
		t.Logf("%s %s: %v; retry %d", method, url, err, try)
		c.CloseIdleConnections()
		time.Sleep(time.Duration(try) * 20 * time.Millisecond)
		res, err = c.Do(req)
	}
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return result{status: res.StatusCode, header: res.Header, body: string(body)}
}

// transient reports whether err is a connection closed under a request
// (EOF or reset) rather than a refusal or a timeout.
// asyncResult is the result of doAsync.
type asyncResult struct {
	result
	err error
}

// doAsync is do for a goroutine other than the test's, which must not
// end the test (t.Fatal): it returns the failure instead. A GET fails
// over to a new connection as do's does.
func doAsync(c *http.Client, method, url string) asyncResult {
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		return asyncResult{err: err}
	}
	res, err := c.Do(req)
	for try := 1; err != nil && try <= 10 && method == http.MethodGet && transient(err); try++ {
		c.CloseIdleConnections()
		time.Sleep(time.Duration(try) * 20 * time.Millisecond)
		res, err = c.Do(req)
	}
	if err != nil {
		return asyncResult{err: fmt.Errorf("%s %s: %v", method, url, err)}
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return asyncResult{result{status: res.StatusCode, header: res.Header, body: string(b)}, err}
}

func transient(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// adminPost posts a JSON body to the admin API's path and returns the
// status and body. Right after a POST /load the old admin server may
// still take a new connection and close it (EOF, as for do): the admin
// API's purges are idempotent, so such a failure is retried on a new
// connection (a flakiness hunt saw a purge fail so under the race
// detector).
func adminPost(t testing.TB, path, body string) (int, string) {
	t.Helper()
	return adminDo(t, http.MethodPost, path, body)
}

// adminGet is adminPost's GET.
func adminGet(t testing.TB, path string) (int, string) {
	t.Helper()
	return adminDo(t, http.MethodGet, path, "")
}

func adminDo(t testing.TB, method, path, body string) (int, string) {
	t.Helper()
	var res *http.Response
	var err error
	for try := 1; try <= 10; try++ {
		var req *http.Request
		req, err = http.NewRequest(method, fmt.Sprintf("http://127.0.0.1:%d%s", adminPort, path), strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		req.Close = true
		res, err = (&http.Client{Timeout: 30 * time.Second}).Do(req)
		if err == nil || !transient(err) {
			break
		}
		t.Logf("%s %s: %v; retry %d", method, path, err, try)
		time.Sleep(time.Duration(try) * 20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// loadConfig posts a config to Caddy's admin API (POST /load), as a user
// reloading Caddy would.
func loadConfig(t testing.TB, adminPort int, caddyfile string) {
	t.Helper()
	if err := tryLoadConfig(adminPort, caddyfile); err != nil {
		t.Fatal(err)
	}
}

// tryLoadConfig posts caddyfile to POST /load. A load replaces Caddy's
// admin server, so a connection kept from the previous request may be
// closed under this one (EOF): that is retried on a new connection
// (loading the same config twice is harmless).
func tryLoadConfig(adminPort int, caddyfile string) error {
	var res *http.Response
	var err error
	for try := 1; try <= 10; try++ {
		var req *http.Request
		req, err = http.NewRequest(http.MethodPost, fmt.Sprintf("http://127.0.0.1:%d/load", adminPort), strings.NewReader(caddyfile))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "text/caddyfile")
		req.Close = true // no kept connection for the next load to find closed
		res, err = (&http.Client{Timeout: 30 * time.Second}).Do(req)
		if err == nil || !transient(err) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("POST /load: %v", err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("POST /load: %s: %s", res.Status, bytes.TrimSpace(body))
	}
	return nil
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
