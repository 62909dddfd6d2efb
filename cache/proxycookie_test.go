package cache

import (
	"io"
	"net/http"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// TestProxySetCookieIsNotStored: a Set-Cookie that a proxy-side handler
// declared its own (lb_policy affinity's cookie) reaches the client but
// neither blocks storing nor is stored; the origin's own Set-Cookie still
// blocks storing.
func TestProxySetCookieIsNotStored(t *testing.T) {
	const affinityCookie = "lb_affinity=abc.def; Path=/; HttpOnly"
	tests := []struct {
		name        string
		originSets  string // the origin's own Set-Cookie, if any
		declare     bool   // the proxy declares its cookie in ProxySetCookieVar
		wantStored  bool
		wantCookies int // Set-Cookie lines on the miss
	}{
		{name: "declared proxy cookie only", declare: true, wantStored: true, wantCookies: 1},
		{name: "undeclared cookie", declare: false, wantStored: false, wantCookies: 1},
		{name: "origin cookie too", originSets: "session=secret", declare: true, wantStored: false, wantCookies: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{}, c)
			next := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
				w.Header().Add("Set-Cookie", affinityCookie)
				if tt.declare {
					caddyhttp.SetVar(r.Context(), ProxySetCookieVar, affinityCookie)
				}
				if tt.originSets != "" {
					w.Header().Add("Set-Cookie", tt.originSets)
				}
				w.Header().Set("Cache-Control", "max-age=60")
				w.Header().Set("Date", c.date())
				_, _ = io.WriteString(w, "body")
				return nil
			}}
			miss := get(t, h, next, "http://example.com/p")
			if got := len(miss.Header().Values("Set-Cookie")); got != tt.wantCookies {
				t.Errorf("miss carried %d Set-Cookie lines; want %d", got, tt.wantCookies)
			}
			again := get(t, h, next, "http://example.com/p")
			stored := next.calls.Load() == 1
			if stored != tt.wantStored {
				t.Fatalf("stored = %v (origin calls %d); want %v", stored, next.calls.Load(), tt.wantStored)
			}
			if stored {
				wantStatus(t, again, []string{"hit"})
				if sc := again.Header().Values("Set-Cookie"); len(sc) != 0 {
					t.Errorf("hit replayed Set-Cookie %q", sc)
				}
			}
		})
	}
}
