package cache

import (
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// proxyMark remembers, before the next handler runs, the last round trip
// of a reverse_proxy for the request, so that the cache can tell a
// response that handlers made after a round trip, without copying the
// upstream's response, from one the next handler made alone or one
// reverse_proxy copied. reverse_proxy's handle_response routes make such
// responses: file_server for X-Accel-Redirect (the upstream decides who
// may download a file), a respond in place of an upstream error, and the
// handlers after a forward_auth placed after the cache. They have none of
// the upstream's fields, and what those say (private, no-cache, Vary:
// Cookie, max-age=0) cannot be carried over to them: stored by its own
// fields (file_server's Last-Modified gives a heuristic lifetime), such a
// response would answer every client with what the upstream answered
// one. They are not stored.
type proxyMark struct {
	repl   *caddy.Replacer
	before time.Duration // the last round trip's latency; -1 if none
}

// rpLatency is set by reverse_proxy after each round trip, before its
// handle_response routes run.
const rpLatency = "http.reverse_proxy.upstream.latency"

// madeAfterProxy is the reason a response made after a round trip is not
// stored (in the debug log).
const madeAfterProxy = "made after a reverse_proxy round trip"

// isRoundTripKey reports whether key is the value of a round trip that
// proxyMark reads: a background refresh has it from its own
// reverse_proxy, or has none, never its client's.
func isRoundTripKey(key string) bool { return key == rpLatency }

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

// madeAfter reports whether rec holds a response that handlers made after
// a round trip of a reverse_proxy behind the cache, without copying the
// upstream's response. reverse_proxy copies one itself (and copy_response
// does) with a Via field and without the Server field the recorder
// started with: a response with both as they were, after a round trip in
// the next handler, was made by others.
func (m proxyMark) madeAfter(rec *recorder) bool {
	if m.repl == nil || !rec.server.seedKept() || len(rec.header["Via"]) > 0 {
		return false
	}
	d := latencyOf(m.repl)
	return d >= 0 && d != m.before
}
