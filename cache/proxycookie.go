package cache

import (
	"net/http"
	"slices"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// ProxySetCookieVar is the request variable (caddyhttp vars) in which a
// handler between the cache and the origin names a Set-Cookie value it
// added for its own purposes, not the origin's: lb_policy affinity puts its
// affinity cookie there. Such a cookie still reaches the client, but it is
// neither stored nor a reason not to store the response (RFC 9111 leaves
// Set-Cookie to the cache; it belongs to this exchange, not the resource).
const ProxySetCookieVar = "response_cache.proxy_set_cookie"

// proxyCookie is the Set-Cookie value the handlers of x's send declared
// their own in ProxySetCookieVar, or "". A send again (askAgain) has vars
// of its own, where lb_policy affinity names the cookie it issued for it.
func (x *exchange) proxyCookie() string {
	var own string
	if x.againVars != nil {
		own, _ = x.againVars[ProxySetCookieVar].(string)
	} else {
		own, _ = caddyhttp.GetVar(x.r.Context(), ProxySetCookieVar).(string)
	}
	return own
}

// withoutProxyCookie returns h, a response x got, without the Set-Cookie
// value the handlers of its send declared their own (proxyCookie), or h
// itself when there is none to remove.
func (x *exchange) withoutProxyCookie(h http.Header) http.Header {
	cookies := h["Set-Cookie"]
	if len(cookies) == 0 {
		return h
	}
	own := x.proxyCookie()
	if own == "" {
		return h
	}
	kept := make([]string, 0, len(cookies))
	for _, c := range cookies {
		if c != own {
			kept = append(kept, c)
		}
	}
	if len(kept) == len(cookies) {
		return h
	}
	view := make(http.Header, len(h))
	for k, v := range h {
		view[k] = v
	}
	if len(kept) == 0 {
		delete(view, "Set-Cookie")
	} else {
		view["Set-Cookie"] = kept
	}
	return view
}

// passProxyCookie adds to dst, the header of a response the cache answers
// from a stored entry after forwarding the request (a revalidation's 304,
// a 5xx replaced by a stale entry), or of the error Caddy writes when the
// origin could not be reached, the Set-Cookie value the handlers of x's
// send declared their own in the answer src (proxyCookie): it is for this
// client, as when the answer passes (lb_policy affinity pins a client on
// its first request, which for a page revalidated on every use is such a
// one).
func (x *exchange) passProxyCookie(dst, src http.Header) {
	if own := x.proxyCookie(); own != "" && slices.Contains(src["Set-Cookie"], own) {
		dst.Add("Set-Cookie", own)
	}
}
