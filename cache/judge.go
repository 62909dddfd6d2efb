package cache

import (
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// This file is the handler's verdict on a response: whether it may be
// stored and for how long, by the RFC rules of freshness.go with what
// the config adds (default_ttl, targeted fields, fields set by handlers
// before the cache).

// whyNotStored judges the response x got, of status, with fields hdr
// (as the client gets them: origin with x's preset fields in front, see
// withPresetCopy) and origin (the origin's own; nil when hdr is the
// origin's own): the reason it may not be stored ("" if it may), its
// directives, its lifetime and whether the heuristic gave it (see judge),
// and its Vary fields.
func (h *Handler) whyNotStored(x *exchange, status int, hdr, origin http.Header) (reason string, rc ResponseControl, lifetime time.Duration, heuristic bool, fields []string) {
	if len(x.preset) == 0 {
		origin = nil
	}
	reason, rc, lifetime, heuristic = h.judge(x.r, status, hdr, origin, x.preset, x.rec.responseTime)
	if reason == "" && origin != nil && h.presetKeepsOut(x.preset) {
		// The handlers before the cache said private or no-store (header
		// @loggedin Cache-Control private): that holds whatever the
		// origin's targeted field, which replaces Cache-Control for this
		// cache (CDN-Cache-Control: max-age=30), says. (Not when hdr is
		// the origin's own, judged as sent: see onHeader's ownPreset.)
		reason = "private (set before the cache)"
	}
	if reason != "" {
		return reason, rc, lifetime, heuristic, nil
	}
	if x.proxy.madeAfter(&x.rec) {
		return madeAfterProxy, rc, lifetime, heuristic, nil
	}
	fields, star := ParseVary(hdr)
	switch {
	case star:
		reason = "Vary: *"
	case matchesNoVariant(fields, x.r):
		reason = "vary on a field the origin did not get"
	case x.wholeAs200 && x.record != nil && !equalFields(fields, x.record.vary):
		// encode leaves a 206 as it is, without the Vary it puts on a
		// 200: stored, it would replace the URL's variants.
		reason = "vary"
	case len(hdr["Trailer"]) > 0:
		reason = "trailers"
	case isEventStream(hdr):
		reason = "event-stream"
	case caddyhttp.IsIncremental(hdr):
		// Incremental: ?1 (RFC 10036): a live stream too, as for
		// reverse_proxy, which never buffers such a message.
		reason = "incremental"
	case h.noLifetimeOnly(hdr, rc, lifetime):
		// max-age=0, s-maxage=0, a bare public, no-cache (whatever
		// lifetime comes with it): without a validator, stored it could
		// answer no one, and would only be stored again on every request.
		// (One with a lifetime that an Age used up is kept: a request's
		// max-stale may take it.)
		reason = "no-freshness"
	}
	return reason, rc, lifetime, heuristic, fields
}

// noLifetimeOnly reports whether a response with fields hdr, directives
// rc and lifetime has no lifetime (the origin gave it none, or a bare
// no-cache takes it: every use revalidates, RFC 9111 §5.2.2.4), nothing
// to revalidate it by, and no stale-while-revalidate or stale-if-error
// window to be served in.
func (h *Handler) noLifetimeOnly(hdr http.Header, rc ResponseControl, lifetime time.Duration) bool {
	if (lifetime > 0 && !rc.NoCache) || hasValidator(hdr) {
		return false
	}
	swr, sie := StaleAllowance(rc, noRequestControl, time.Duration(h.StaleWhileRevalidate), time.Duration(h.StaleIfError))
	return swr <= 0 && sie <= 0
}

// isEventStream reports whether hdr is that of a server-sent event
// stream (text/event-stream), a live stream whatever its lifetime says: a
// waiter would get its events only at its end, which may never come, and
// a stored copy would replay old events. reverse_proxy flushes such a
// response at every write; the cache passes it on as it comes.
func isEventStream(hdr http.Header) bool {
	for _, ct := range hdr["Content-Type"] { // any line: clients differ in which they read
		mt, _, _ := strings.Cut(ct, ";")
		if strings.EqualFold(strings.TrimSpace(mt), "text/event-stream") {
			return true
		}
	}
	return false
}

// judge applies Storable and LifetimeAt to a response to r of status,
// received at responseTime, with fields view as the client gets them
// (the caching fields handlers before the cache set, then the origin's:
// withPresetCopy) and origin, the origin's own (nil when view is the
// origin's own), and preset, the fields set before the cache: the reason
// it may not be stored ("" if it may), its directives, its lifetime, and,
// for a storable response, whether that lifetime came from the heuristic
// (which heuristic_max bounds).
//
// The fields set before the cache count as the origin's for the statuses
// of OperatorFreshness. For any other status they may only restrict
// (private, no-store, no-cache, a shorter lifetime): such a response is
// stored only when the origin's own fields allow it too, and it is fresh
// no longer than they make it. Otherwise `header /static/* Cache-Control
// "public, max-age=3600"` would store, under a static file's URL, the 431
// an origin answers one client's 9 KB header with, and answer everyone
// with it for an hour.
func (h *Handler) judge(r *http.Request, status int, view, origin, preset http.Header, responseTime time.Time) (reason string, rc ResponseControl, lifetime time.Duration, heuristic bool) {
	ttl := time.Duration(h.DefaultTTL)
	rc = ParseResponseControl(view, h.targeted)
	if rc.Invalid && !rc.Targeted && origin != nil {
		rc = shorterOfEach(rc, preset, origin)
	}
	lifetime, has := LifetimeAt(status, view, rc, ttl, responseTime)
	if reason = Storable(r, status, view, rc, has, false); reason != "" {
		return reason, rc, lifetime, false
	}
	if origin == nil || OperatorFreshness(status) {
		return "", rc, lifetime, fromHeuristic(status, view, rc, responseTime)
	}
	own := ParseResponseControl(origin, h.targeted)
	ownLifetime, ownHas := LifetimeAt(status, origin, own, ttl, responseTime)
	if reason = Storable(r, status, origin, own, ownHas, false); reason != "" {
		return reason, rc, lifetime, false
	}
	if ownLifetime < lifetime {
		return "", rc, ownLifetime, fromHeuristic(status, origin, own, responseTime)
	}
	return "", rc, lifetime, fromHeuristic(status, view, rc, responseTime)
}

// defaulted reports whether lifetime, judged for a response with fields
// hdr and directives rc, is default_ttl because the response has no
// lifetime of its own (explicit or heuristic).
func (h *Handler) defaulted(status int, hdr http.Header, rc ResponseControl, lifetime time.Duration, responseTime time.Time) bool {
	if ttl := time.Duration(h.DefaultTTL); ttl <= 0 || lifetime != ttl {
		return false
	}
	_, own := LifetimeAt(status, hdr, rc, 0, responseTime)
	return !own
}

// fromHeuristic reports whether hdr's lifetime, with directives rc, comes
// from the heuristic (LifetimeAt's 10% of Date - Last-Modified): it has
// no explicit freshness, yet a lifetime without default_ttl.
func fromHeuristic(status int, hdr http.Header, rc ResponseControl, responseTime time.Time) bool {
	if rc.Invalid || rc.SMaxAge >= 0 || rc.MaxAge >= 0 {
		return false
	}
	if _, expires := hdr["Expires"]; expires && !rc.Targeted {
		return false
	}
	lifetime, has := LifetimeAt(status, hdr, rc, 0, responseTime)
	return has && lifetime > 0
}

// shorterOfEach mends rc, the Cache-Control directives of the fields set
// before the cache (preset) and of origin's together, when they are
// invalid only together: each side gives max-age (or s-maxage) once, and
// the two differ. The shorter counts, as a lifetime set before the cache
// may only shorten the origin's; not a conflict that makes the response
// stale. (A targeted field is a dictionary, whose last key wins: never
// invalid for duplicates, and not mended here.)
func shorterOfEach(rc ResponseControl, preset, origin http.Header) ResponseControl {
	if len(preset["Cache-Control"]) == 0 {
		return rc
	}
	set := ParseResponseControl(http.Header{"Cache-Control": preset["Cache-Control"]}, "-")
	own := ParseResponseControl(http.Header{"Cache-Control": origin["Cache-Control"]}, "-")
	if set.Invalid || own.Invalid {
		return rc
	}
	rc.Invalid = false
	rc.MaxAge, rc.SMaxAge = shorter(set.MaxAge, own.MaxAge), shorter(set.SMaxAge, own.SMaxAge)
	return rc
}

// shorter is the shorter of two lifetimes, where -1 is none.
func shorter(a, b time.Duration) time.Duration {
	switch {
	case a < 0:
		return b
	case b < 0:
		return a
	}
	return min(a, b)
}
