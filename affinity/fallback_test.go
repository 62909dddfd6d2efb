package affinity

import (
	"net/http"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// silentPolicy is a third-party selection policy whose Caddyfile
// unmarshaler reads no token, not even its name.
type silentPolicy struct{}

func (silentPolicy) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.reverse_proxy.selection_policies.affinity_test_silent", New: func() caddy.Module { return new(silentPolicy) }}
}

func (silentPolicy) Select(reverseproxy.UpstreamPool, *http.Request, http.ResponseWriter) *reverseproxy.Upstream {
	return nil
}

func (*silentPolicy) UnmarshalCaddyfile(*caddyfile.Dispenser) error { return nil }

func init() { caddy.RegisterModule(silentPolicy{}) }

// TestFallbackThatReadsNothing: what a fallback policy leaves unread is
// an error only when it read its own name; one that reads nothing cannot
// be judged, and is accepted as before.
func TestFallbackThatReadsNothing(t *testing.T) {
	var s AffinitySelection
	if err := s.UnmarshalCaddyfile(caddyfile.NewTestDispenser("affinity {\n fallback affinity_test_silent\n}")); err != nil {
		t.Fatalf("a fallback policy that reads no token: %v", err)
	}
	if !strings.Contains(string(s.FallbackRaw), `"policy":"affinity_test_silent"`) {
		t.Errorf("fallback = %s", s.FallbackRaw)
	}
}
