package integration

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBuiltBinary runs the demo Caddyfile in the caddy binary named by
// CADDY_BINARY (the one .ci/run builds with xcaddy) and checks what a user of
// the demo sees: cache hits, sticky cookies, sticky headers.
func TestBuiltBinary(t *testing.T) {
	bin := os.Getenv("CADDY_BINARY")
	if bin == "" {
		t.Skip("CADDY_BINARY is not set; .ci/run sets it to the xcaddy build")
	}
	// Distinct ports: freePort called five times can return one twice
	// (the kernel hands out again a port just released), and Caddy then
	// fails to start (ambiguous site, or address in use).
	names := []string{"DEMO_ADMIN", "DEMO_FRONT", "DEMO_R1", "DEMO_R2", "DEMO_R3"}
	free := freePorts(t, len(names))
	ports := map[string]int{}
	for i, name := range names {
		ports[name] = free[i]
	}
	cmd := exec.Command(bin, "run", "--config", filepath.Join("..", "testdata", "demo.Caddyfile"), "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "XDG_DATA_HOME="+t.TempDir(), "XDG_CONFIG_HOME="+t.TempDir())
	cmd.Env = append(cmd.Env, "DEMO_ADMIN=localhost:"+fmt.Sprint(ports["DEMO_ADMIN"]))
	for _, name := range []string{"DEMO_FRONT", "DEMO_R1", "DEMO_R2", "DEMO_R3"} {
		cmd.Env = append(cmd.Env, fmt.Sprintf("%s=127.0.0.1:%d", name, ports[name]))
	}
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("caddy output:\n%s", logs.String())
		}
	})

	front := fmt.Sprintf("http://127.0.0.1:%d", ports["DEMO_FRONT"])
	c := newClient()
	waitFor(t, "the demo front to answer", 30*time.Second, func() bool {
		res, err := c.Get(front + "/static/ready")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	})

	t.Run("cache hit", func(t *testing.T) {
		first := do(t, c, "GET", front+"/static/logo", nil)
		if first.status != 200 || strings.Contains(first.header.Get("Cache-Status"), "hit") {
			t.Fatalf("first response: %d, Cache-Status %q; want a 200 miss", first.status, first.header.Get("Cache-Status"))
		}
		// ristretto stores asynchronously: the entry appears shortly.
		var hit result
		waitFor(t, "a cache hit", 5*time.Second, func() bool {
			hit = do(t, c, "GET", front+"/static/logo", nil)
			return strings.HasPrefix(hit.header.Get("Cache-Status"), "demo; hit")
		})
		if hit.header.Get("Age") == "" {
			t.Error("hit has no Age header")
		}
		for i := 0; i < 5; i++ {
			again := do(t, c, "GET", front+"/static/logo", nil)
			if again.body != hit.body || !strings.HasPrefix(again.header.Get("Cache-Status"), "demo; hit") {
				t.Fatalf("repeat %d: %q (%q); want the stored %q", i, again.body, again.header.Get("Cache-Status"), hit.body)
			}
		}
	})

	t.Run("affinity cookie", func(t *testing.T) {
		first := do(t, c, "GET", front+"/account", nil)
		var cookie *http.Cookie
		for _, ck := range (&http.Response{Header: first.header}).Cookies() {
			if ck.Name == "demo_affinity" {
				cookie = ck
			}
		}
		if cookie == nil {
			t.Fatalf("no demo_affinity cookie issued; Set-Cookie = %q", first.header.Values("Set-Cookie"))
		}
		replica := first.header.Get("X-Replica")
		for i := 0; i < 10; i++ {
			r := do(t, c, "GET", front+"/account", map[string]string{"Cookie": cookie.Name + "=" + cookie.Value})
			if got := r.header.Get("X-Replica"); got != replica {
				t.Fatalf("request %d with the cookie went to replica %q; the first went to %q", i, got, replica)
			}
			if r.header.Get("Set-Cookie") != "" {
				t.Fatalf("a valid cookie was replaced: %q", r.header.Get("Set-Cookie"))
			}
		}
	})

	t.Run("affinity header", func(t *testing.T) {
		seen := map[string]bool{}
		for i := 0; i < 10; i++ {
			r := do(t, c, "GET", front+"/account", map[string]string{"X-User": "alice"})
			seen[r.header.Get("X-Replica")] = true
			if r.header.Get("Set-Cookie") != "" {
				t.Fatalf("a request with a key got a cookie: %q", r.header.Get("Set-Cookie"))
			}
		}
		if len(seen) != 1 {
			t.Errorf("X-User: alice went to replicas %v; want one", seen)
		}
	})
}
