package cache

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

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

// TestProxySetCookieOnAnswersFromTheEntry: when the cache answers from its
// entry after forwarding (a revalidation's 304, a 5xx replaced by the
// stale entry), the cookie a proxy-side handler declared its own still
// reaches the client: lb_policy affinity's cookie was lost for pages
// revalidated on every use (no-cache with an ETag), so such clients were
// never pinned. It is not stored.
func TestProxySetCookieOnAnswersFromTheEntry(t *testing.T) {
	const affinityCookie = "lb_affinity=abc.def; Path=/; HttpOnly"
	for _, tt := range []struct {
		name, cc string
		second   int // the origin's status on the second request
		want     []string
	}{
		{"revalidated", "no-cache", http.StatusNotModified, []string{"fwd=stale", "fwd-status=304"}},
		{"stale-if-error", "max-age=0, stale-if-error=60", http.StatusBadGateway, []string{"fwd=stale", "fwd-status=502", "detail=stale-if-error"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{}, c)
			next := &origin{}
			next.fn = func(w http.ResponseWriter, r *http.Request) error {
				w.Header().Add("Set-Cookie", affinityCookie)
				caddyhttp.SetVar(r.Context(), ProxySetCookieVar, affinityCookie)
				w.Header().Set("Cache-Control", tt.cc)
				w.Header().Set("Etag", `"v1"`)
				w.Header().Set("Date", c.date())
				if next.calls.Load() > 1 {
					w.WriteHeader(tt.second)
					return nil
				}
				_, _ = io.WriteString(w, "page")
				return nil
			}
			get(t, h, next, "http://example.com/page")
			c.Advance(time.Second)
			w := get(t, h, next, "http://example.com/page")
			wantStatus(t, w, tt.want)
			if w.Body.String() != "page" {
				t.Errorf("body %q", w.Body.String())
			}
			if sc := w.Header().Values("Set-Cookie"); len(sc) != 1 || sc[0] != affinityCookie {
				t.Errorf("Set-Cookie %q, want the proxy's cookie once", sc)
			}
			h.store.wait()
			e := h.store.get(keyHash([]byte("http://example.com/page")), []byte("http://example.com/page"))
			if e == nil {
				t.Fatal("the entry is gone")
			}
			if e.header.has("Set-Cookie") {
				t.Errorf("stored Set-Cookie %q", e.header.Values("Set-Cookie"))
			}
		})
	}
}

// TestProxySetCookieWhenTheOriginFails: when the proxy cannot reach an
// upstream, Caddy writes its error (reverse_proxy's 502) with the header
// the handlers set; through plain reverse_proxy that holds the affinity
// cookie lb_policy affinity issued, which the cache kept in its recorder
// (a review: a 502 with Set-Cookie without the cache, none with it). The
// client gets it with the error, and with a stale entry stale-if-error
// answers with, or the 504 of one that must be revalidated.
func TestProxySetCookieWhenTheOriginFails(t *testing.T) {
	const affinityCookie = "lb_affinity=abc.def; Path=/; HttpOnly"
	unreachable := errors.New("dial tcp 127.0.0.1:9: connect: connection refused")
	for _, tt := range []struct {
		name, cc string // the stored response's Cache-Control; "" stores none
		wantErr  bool
	}{
		{"nothing stored", "", true},
		{"stale-if-error", "max-age=1, stale-if-error=60", false},
		{"must-revalidate", "max-age=1, must-revalidate", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{}, c)
			if tt.cc != "" {
				get(t, h, static(c, 200, "page", "Cache-Control", tt.cc), "http://example.com/page")
				c.Advance(2 * time.Second)
			}
			down := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
				w.Header().Add("Set-Cookie", affinityCookie) // lb_policy affinity's Select
				caddyhttp.SetVar(r.Context(), ProxySetCookieVar, affinityCookie)
				return caddyhttp.Error(http.StatusBadGateway, unreachable)
			}}
			w := httptest.NewRecorder()
			err := h.ServeHTTP(w, newRequest(http.MethodGet, "http://example.com/page"), down)
			if (err != nil) != tt.wantErr {
				t.Fatalf("error %v, want one: %v", err, tt.wantErr)
			}
			if sc := w.Header().Values("Set-Cookie"); len(sc) != 1 || sc[0] != affinityCookie {
				t.Errorf("Set-Cookie %q, want the proxy's cookie once", sc)
			}
		})
	}
}

// TestProxySetCookieWhenTheSendAgainFails: a revalidation's 304 with
// other validators makes the cache send the request again (askAgain),
// with the vars as they were before the first send, where lb_policy
// affinity names the cookie it issues for that send (x.againVars; see
// withoutProxyCookie). When that send cannot reach an upstream, the new
// error path (c3cb426) looks for the cookie under the first send's name
// in x.r's vars, which the second send's Set-Cookie does not hold: the
// client gets the 502 without the cookie the proxy issued with it.
func TestProxySetCookieWhenTheSendAgainFails(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	const target = "http://example.com/page"
	var sends atomic.Int32
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		n := sends.Add(1)
		hd := w.Header()
		hd.Set("Date", c.date())
		if n == 1 {
			hd.Set("Cache-Control", "max-age=1")
			hd.Set("Etag", `"v1"`)
			_, _ = io.WriteString(w, "v1")
			return nil
		}
		// lb_policy affinity's Select: a new random id each send.
		cookie := "lb_affinity=id" + strconv.Itoa(int(n)) + "; Path=/"
		hd.Add("Set-Cookie", cookie)
		caddyhttp.SetVar(r.Context(), ProxySetCookieVar, cookie)
		if n == 2 {
			hd.Set("Etag", `"v2"`) // another version's validator: askAgain
			w.WriteHeader(http.StatusNotModified)
			return nil
		}
		return caddyhttp.Error(http.StatusBadGateway, errors.New("dial tcp: connection refused"))
	}}
	get(t, h, o, target)
	c.Advance(2 * time.Second)
	w := httptest.NewRecorder()
	err := h.ServeHTTP(w, newRequest(http.MethodGet, target), o)
	if err == nil || sends.Load() != 3 {
		t.Fatalf("error %v after %d sends; want the third send's 502", err, sends.Load())
	}
	if sc := w.Header().Values("Set-Cookie"); len(sc) != 1 || sc[0] != "lb_affinity=id3; Path=/" {
		t.Errorf("Set-Cookie %q with the 502; want the cookie the failing send issued, once", sc)
	}
}
