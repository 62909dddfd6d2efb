// Package integration runs a real Caddy, in process through Caddy's own
// caddytest harness, with this module's handlers in front of real backends on
// 127.0.0.1. caddytest keeps one Caddy per test binary with a fixed admin
// port, so the tests of this package run one after another; each loads its
// own config through the admin API. TestBuiltBinary also drives the
// xcaddy-built binary when CADDY_BINARY names one.
package integration

import (
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddytest"

	_ "github.com/f06cdff9/caddy-affinity-cache"
	"github.com/f06cdff9/caddy-affinity-cache/internal/goroutines"
)

// adminPort is the admin endpoint of the in-process Caddy, picked free once
// per test binary.
var adminPort int

func TestMain(m *testing.M) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration: no free port:", err)
		os.Exit(1)
	}
	adminPort = l.Addr().(*net.TCPAddr).Port
	l.Close()
	code := m.Run()
	// Stop whatever the tests started in this process.
	_ = caddy.Stop()
	// Every handler has returned: none may leave a writer of its client
	// (the cache's recorder.decouple) behind. cache's TestMain checks the
	// same of its own tests.
	if code == 0 {
		if left := goroutines.Left("(*recorder).decouple", 5*time.Second); left != "" {
			fmt.Fprintln(os.Stderr, "FAIL: a client's writer was never waited for:\n"+left)
			code = 1
		}
	}
	os.Exit(code)
}

// caddyStarted is set once caddytest has started the in-process Caddy.
var caddyStarted bool

// startCaddy loads a Caddyfile into the in-process Caddy (starting it on
// first use). The Caddyfile's global options must come from globals().
//
// Only the first call goes through caddytest, which starts Caddy. Later
// loads go through loadConfig: caddytest probes GET /config/ and posts
// POST /load over http.DefaultTransport's kept connections, without
// retrying. Each load replaces the admin server and stops the old one
// asynchronously (a refused load twice: Caddy rolls back), so such a
// connection may be closed under the POST (EOF or reset: caddytest then
// polls for ten seconds and fails with "POSTed configuration isn't
// active") or under the GET (caddytest then thinks Caddy is down and runs
// caddycmd.Main again in this process, which skips the test, loads its
// bare config over the test's, or exits the process).
func startCaddy(t *testing.T, caddyfile string) {
	t.Helper()
	if caddyStarted {
		loadConfig(t, adminPort, caddyfile)
		return
	}
	tester := caddytest.NewTester(t).WithDefaultOverrides(caddytest.Config{AdminPort: adminPort})
	tester.InitServer(caddyfile, "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	caddyStarted = true
}

// globals is the global options block every test Caddyfile starts with: the
// test's admin port, no automatic HTTPS, no certificates, quiet logs.
func globals() string { return globalsWith("") }

// globalsWith is globals with more global options (tab-indented lines).
func globalsWith(options string) string {
	return fmt.Sprintf(`{
	admin localhost:%d
	default_bind 127.0.0.1
	auto_https off
	skip_install_trust
	persist_config off
	log {
		level ERROR
	}
%s}
`, adminPort, options)
}
