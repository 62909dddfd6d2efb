package cache

import (
	"context"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// This file forwards unsafe requests (POST, PUT, DELETE, PATCH...) and
// invalidates the URLs their successful answers change (RFC 9111 §4.4).

// serveUnsafe forwards an unsafe request and, when the origin answers it
// with a 2xx or 3xx, invalidates the target URI and the same-origin
// Location and Content-Location (RFC 9111 §4.4).
func (h *Handler) serveUnsafe(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	pw := &passWriter{ResponseWriter: w, h: h, fwd: "method"}
	defer func() {
		// reverse_proxy panics with http.ErrAbortHandler when the origin's
		// body breaks off after its status: the origin acted on the
		// request all the same.
		if v := recover(); v != nil {
			if pw.status >= 200 && pw.status < 400 {
				h.invalidate(r, w.Header())
			}
			panic(v)
		}
	}()
	err := next.ServeHTTP(pw, r)
	status := pw.status
	if status == 0 && err == nil {
		status = http.StatusOK // nothing written: net/http sends a 200
	}
	if status >= 200 && status < 400 {
		h.invalidate(r, w.Header())
	}
	return pw.failed(err)
}

// invalidate removes the stored responses for r's URI and the same-origin
// URIs in resp's Location and Content-Location: those under h's key, and
// those under the keys of the other templates handlers sharing the store
// used (a config before a reload that changed the key may be loaded
// again, and would find them).
func (h *Handler) invalidate(r *http.Request, resp http.Header) {
	var n int
	if key, ok := h.appendKey(nil, r); ok {
		n = h.store.invalidateKey(string(key))
	}
	others := h.otherKeyTemplates()
	for _, t := range others {
		if key, ok := appendKeyWith(nil, r, t); ok {
			n += h.store.invalidateKey(string(key))
		}
	}
	// Relative references resolve against the URI the client sent, which
	// the keys are made of, not the one a rewrite left.
	sent := sentURL(r)
	base := &url.URL{Scheme: schemeOf(r), Host: r.Host, Path: sent.Path, RawPath: sent.RawPath, RawQuery: sent.RawQuery}
	for _, field := range [...]string{"Location", "Content-Location"} {
		v := resp.Get(field)
		if v == "" {
			continue
		}
		// An absolute URI counts with either web scheme: behind a front
		// proxy that ends TLS, the origin names the URL as its clients
		// know it (https://shop.test/p, from X-Forwarded-Proto) where
		// the node's request and keys say http. The same host under the
		// other scheme is rarely another origin, and that would cost it
		// a miss, no more.
		u, err := base.Parse(v)
		if err != nil || u.Scheme != "http" && u.Scheme != "https" || !sameHost(u.Host, r.Host) {
			continue
		}
		var r2 *http.Request
		for _, t := range append([]string{h.Key}, others...) {
			if t == DefaultKey {
				n += h.store.invalidateKey(string(appendURLKey(nil, r, u)))
				continue
			}
			if r2 == nil {
				// A GET of u, as a custom key would see it.
				r2 = r.WithContext(context.WithoutCancel(r.Context()))
				r2.Method = http.MethodGet
				r2.URL = u
				r2.Host = r.Host // the form the request's keys were made with
				r2.RequestURI = u.RequestURI()
				r2 = h.locationRequest(r, r2)
			}
			if key, ok := appendKeyWith(nil, r2, t); ok {
				n += h.store.invalidateKey(string(key))
			}
		}
	}
	if ce := h.logger.Check(zapcore.DebugLevel, "invalidated after unsafe method"); ce != nil {
		ce.Write(zap.String("method", r.Method), zap.String("uri", r.RequestURI), zap.Int("entries", n))
	}
}

// locationRequest prepares r2, a GET of a Location r's response named, for
// its custom key: its own http.request placeholders, and r's variables and
// other placeholders (map outputs, other modules'), which are the same
// client's (a key "{tenant} {http.request.orig_uri}" keeps its tenant).
func (h *Handler) locationRequest(r, r2 *http.Request) *http.Request {
	repl := caddy.NewReplacer()
	r2 = caddyhttp.PrepareRequest(r2, repl, nil, nil)
	if vars, ok := r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any); ok {
		if own, ok := r2.Context().Value(caddyhttp.VarsCtxKey).(map[string]any); ok {
			maps.Copy(own, vars)
		}
	}
	if orig, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Map(func(name string) (any, bool) {
			if strings.HasPrefix(name, "http.request.") {
				return nil, false
			}
			return orig.Get(name)
		})
	}
	return r2
}

// sameHost reports whether the hosts a and b (host or host:port) are the
// same, a default port (80 or 443, see isWebPort) written or not.
func sameHost(a, b string) bool {
	return strings.EqualFold(withoutWebPort(a), withoutWebPort(b))
}

// otherKeyTemplates returns the key templates other than h's that
// handlers sharing h's store have keyed entries with (store.noteKeyTemplate).
func (h *Handler) otherKeyTemplates() []string {
	all := h.store.keyTemplates()
	if len(all) == 0 || len(all) == 1 && all[0] == h.Key {
		return nil // no allocation in the common case
	}
	return slices.DeleteFunc(slices.Clone(all), func(t string) bool { return t == h.Key })
}
