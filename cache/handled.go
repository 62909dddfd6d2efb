package cache

import (
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// proxyMark remembers, before the next handler runs, the last round trip
// of a reverse_proxy for the request, so that the cache can tell a
// response that reverse_proxy's handle_response routes made (file_server
// for X-Accel-Redirect, a respond in place of an upstream error) from one
// the next handler made alone. Such a response has none of the upstream's
// fields: stored by its own (file_server's Last-Modified gives it a
// heuristic lifetime), it would answer every client with what the
// upstream answered one (a file it sent for one paying user, under
// `Cache-Control: private, no-store`). It is stored only when the
// upstream's response would be (see Handler.upstreamForbids).
type proxyMark struct {
	repl   *caddy.Replacer
	before time.Duration // the last round trip's latency; -1 if none
}

// Placeholders reverse_proxy sets after each round trip, before its
// handle_response routes run.
const (
	rpLatency = "http.reverse_proxy.upstream.latency"
	rpStatus  = "http.reverse_proxy.status_code"
	rpHeader  = "http.reverse_proxy.header."
)

// upstreamFields are the upstream's fields that decide whether its
// response, and so one made from it, may be stored.
var upstreamFields = []string{"Cache-Control", "Pragma", "Expires", "Date", "Age", "Last-Modified", "Etag", "Set-Cookie", "Vary"}

// isRoundTripKey reports whether key is one of the values of a round trip
// that proxyMark reads: a background refresh has them from its own
// reverse_proxy, or has none, never its client's.
func isRoundTripKey(key string) bool {
	if key == rpLatency || key == rpStatus {
		return true
	}
	f, ok := strings.CutPrefix(key, rpHeader)
	return ok && (slices.Contains(upstreamFields, f) || strings.HasSuffix(f, "-Cache-Control"))
}

func markProxy(r *http.Request) proxyMark {
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if repl == nil {
		return proxyMark{}
	}
	return proxyMark{repl: repl, before: latencyOf(repl)}
}

func latencyOf(repl *caddy.Replacer) time.Duration {
	if v, ok := repl.Get(rpLatency); ok {
		if d, ok := v.(time.Duration); ok {
			return d
		}
	}
	return -1
}

// handled returns the status and the fields (upstreamFields, and the
// targeted field) of the upstream response that a reverse_proxy behind
// the cache answered with a response of its handle_response routes,
// recorded in rec; ok is false for any other response. reverse_proxy
// copies an upstream's response itself (and copy_response does) with a
// Via field and without the Server field the recorder started with: a
// response with both as they were, after a round trip in the next
// handler, was made by its routes.
func (m proxyMark) handled(rec *recorder, targeted string) (status int, hdr http.Header, ok bool) {
	if m.repl == nil || rec.dropsServer || len(rec.header["Via"]) > 0 {
		return 0, nil, false
	}
	if d := latencyOf(m.repl); d < 0 || d == m.before {
		return 0, nil, false // no round trip since the cache passed the request on
	}
	v, _ := m.repl.Get(rpStatus)
	status, _ = v.(int)
	hdr = make(http.Header)
	for _, f := range upstreamFields {
		if s, ok := m.repl.GetString(rpHeader + f); ok {
			hdr[f] = []string{s}
		}
	}
	if targeted != "" && targeted != "-" {
		f := http.CanonicalHeaderKey(targeted)
		if s, ok := m.repl.GetString(rpHeader + f); ok {
			hdr[f] = []string{s}
		}
	}
	return status, hdr, true
}

// upstreamForbids returns why the upstream response behind a response of
// reverse_proxy's handle_response routes (see proxyMark) may not be
// stored, judged as if it were the response ("" if it may), prefixed
// with "handle_response: upstream ".
func (h *Handler) upstreamForbids(x *exchange, rec *recorder) string {
	status, up, ok := x.proxy.handled(rec, h.targeted)
	if !ok {
		return ""
	}
	reason, _, _ := h.judge(asGET(x.r), status, up, nil, nil, rec.responseTime)
	if _, star := ParseVary(up); reason == "" && star {
		reason = "Vary: *"
	}
	if reason == "" {
		return ""
	}
	return "handle_response: upstream " + reason
}
