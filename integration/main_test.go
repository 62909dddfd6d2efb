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

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddytest"

	_ "github.com/f06cdff9/caddy-affinity-cache"
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
	os.Exit(code)
}

// startCaddy loads a Caddyfile into the in-process Caddy (starting it on
// first use). The Caddyfile's global options must come from globals().
func startCaddy(t *testing.T, caddyfile string) *caddytest.Tester {
	t.Helper()
	tester := caddytest.NewTester(t).WithDefaultOverrides(caddytest.Config{AdminPort: adminPort})
	tester.InitServer(caddyfile, "caddyfile")
	if t.Failed() {
		t.FailNow()
	}
	return tester
}

// globals is the global options block every test Caddyfile starts with: the
// test's admin port, no automatic HTTPS, no certificates, quiet logs.
func globals() string { return globalsWith("") }

// globalsWith is globals with more global options (tab-indented lines).
func globalsWith(options string) string {
	return fmt.Sprintf(`{
	admin localhost:%d
	auto_https off
	skip_install_trust
	persist_config off
	log {
		level ERROR
	}
%s}
`, adminPort, options)
}
