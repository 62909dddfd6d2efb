package cache

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// exchange is one request forwarded to the origin: a miss, a
// revalidation of a stored entry, or a background refresh.
type exchange struct {
	fwd         string         // Cache-Status fwd: uri-miss, vary-miss, stale, request
	stale       *entry         // the stored entry being revalidated; nil on a miss
	record      *entry         // the URL's variant record, when known
	rq          RequestControl // the client's directives
	urlHash     uint64
	urlKey      []byte // valid for the duration of the request only
	variantKey  []byte // idem; set when the variant record is known
	variantHash uint64
	background  bool // no client: a stale-while-revalidate refresh
	// client is what a background refresh has of its client's replacer
	// values; nil otherwise.
	client *clientValues

	r         *http.Request // the client's request
	cond      bool          // the forwarded request is the cache's conditional
	store     bool          // the response may be stored if it allows
	untried   bool          // not to be stored for min_uses, unless others joined
	firstUse  bool          // the URL's first miss, as far as the use counts tell
	leading   bool          // leads the coalesced miss lead, under flightKey
	flightKey string
	lead      flight
	// filling is the entry a leader answered its waiters with while its
	// body arrives (see streamToWaiters); fill is that body's progress.
	filling   *entry
	fill      bodyFill
	fillEnded bool
	// fillCtx is the parent of the context of the fill x leads.
	fillCtx *fill
	// newRecord is the variant record finishEntry made for the entry,
	// when the store had none for its Vary fields; stored with it.
	newRecord   *entry
	requestTime time.Time
	// epoch is the store's purge count when the request looked in the
	// store: what it fetches is not stored past a purge after that.
	epoch uint64
	// mark is the latest purge mark of its URL's key when it joined a
	// flight as a waiter (store.keyMark; read after the lookups, which
	// errs on the side of taking a purge for one that came before the
	// request; not read by the misses that lead or do not coalesce, so
	// that they take no lock of the purge marks).
	mark uint64
	// rangeDropped: the client's Range did not go to the origin (the
	// cache's conditional, or a Range for the whole body), so a 200 may
	// answer it as a 206 (see wholeContentRange).
	rangeDropped bool
	// condDropped: the client's If-None-Match or If-Modified-Since did not
	// go to the origin (the cache's conditional, or a miss fetched whole
	// to be stored), so the cache evaluates it against a 200 (see
	// notModifiedBy).
	condDropped bool
	// fetchedWhole: condDropped on a miss (see fetchWhole).
	fetchedWhole bool
	// ownPreset: the response is not storable only for the caching
	// fields handlers before the cache set for this request, which
	// carries a cookie: it hints nothing for the key (see onHeader).
	ownPreset bool
	// wholePart: the client's Range went out as it came, and an answer
	// with the whole body may be stored; wholeAs200: it came as a 206 of
	// all of the body, stored as the 200 it amounts to.
	wholePart, wholeAs200 bool
	wholeLen              int64 // the length a whole 206 declared, which its body must have
	// preset are the caching fields handlers before the cache set on the
	// client's response (see presetFields), or, for a background refresh,
	// those of the request that stored its entry; nil for none.
	preset http.Header

	// Decided at the response's header.
	outcome outcome
	rc      ResponseControl
	vary    []string
	fresh   Freshness

	h   *Handler
	rec recorder // records the origin's response
	// proxy tells a response handle_response routes made (madeAfter).
	proxy proxyMark

	// result is the requests_total counter the exchange is counted under,
	// once, when it ends; nil for a background refresh (no request).
	result prometheus.Counter
}

func (x *exchange) onHeader(rec *recorder) { x.h.onHeader(x, rec) }
func (x *exchange) awaited() bool          { return x.leading && x.h.flights.joined(&x.lead) }
func (x *exchange) onBody(rec *recorder)   { x.h.streamToWaiters(x, rec) }
func (x *exchange) onOverflow() {
	if x.rec.fill != nil {
		x.rec.fill.fail()
	}
	x.release(x.h, nil)
	if x.rec.refused != "" {
		// Others took the recording budget, or the arena's room: the
		// key's next miss may be stored, and its conditional misses are
		// not sent as they come.
		reason := "recording budget"
		if x.rec.refused == refusedNoRoom {
			reason = noRoomReason
			if x.rec.pass && !x.background {
				// Found at the header (WriteHeader's allocation), before
				// the client's header is written: its Cache-Status says so.
				x.h.setStatusAfterCopy(&x.rec, Status{Fwd: x.fwd, FwdStatus: x.rec.status, Key: x.h.statusKey(x.urlKey), Detail: refusedNoRoom})
			}
		}
		if ce := x.h.logger.Check(zapcore.DebugLevel, "response not stored"); ce != nil {
			ce.Write(zap.String("host", x.r.Host), zap.String("uri", x.r.RequestURI), zap.Int("status", x.rec.status), zap.String("reason", reason))
		}
		return
	}
	x.notFetchedWhole()
	// Too large to store, as the key's next responses most likely are:
	// they skip coalescing for a while, as an uncacheable response's do
	// (uncacheableHints), rather than each burst of requests waiting for
	// max_item_size of a slow body before going to the origin one by one.
	x.hintUnstorable(true)
	if ce := x.h.logger.Check(zapcore.DebugLevel, "response not stored"); ce != nil {
		ce.Write(zap.String("host", x.r.Host), zap.String("uri", x.r.RequestURI), zap.Int("status", x.rec.status), zap.String("reason", "max_item_size"),
			zap.Int64("max_item_size", x.rec.limit))
	}
}

type outcome int

const (
	outPass         outcome = iota // the response goes to the client
	outRefresh                     // 304 to our conditional: serve the updated entry
	outStaleIfError                // 5xx: serve the stale entry (RFC 5861 §4)
	outRetry                       // 304 not selecting the stored response: ask again
	outFreshen                     // 200 to a HEAD: update or invalidate the stored GET (RFC 9111 §4.3.5)
)

// release publishes e to the waiters of a coalesced miss (nil: they go to
// the origin themselves). Only the first call counts.
func (x *exchange) release(h *Handler, e *entry) {
	if x.leading {
		h.flights.finish(x.flightKey, &x.lead, e, x.rec.status)
	}
}

// forward sends r (or the cache's conditional version of it) to next
// through a recorder, streams the answer to w, and stores it if allowed.
func (h *Handler) forward(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, x *exchange) error {
	defer x.count()
	x.r = r
	// Before the fill begins: a purge of its URL that comes meanwhile
	// must reach its key (see store.noteKey).
	h.store.noteKey(x.urlKey)
	if !x.background {
		x.preset = h.presetFields(w.Header())
	}
	out := r
	// (A GET with content, as far as the request says, bypasses the cache:
	// a 304 that does not select the stored response is answered by
	// sending the request again, which could not send its body twice.)
	if x.stale != nil && r.Method == http.MethodGet && x.stale.validator {
		out = revalidationRequest(r, x.stale)
		x.cond, x.condDropped = true, hasCacheConditionals(r)
	} else {
		out = missRequest(r)
	}
	x.sends(r, out)
	if (x.store || x.wholePart) && h.uses != nil && x.stale == nil && !x.background {
		if uses := h.uses(); uses != nil {
			n := uses.add(x.urlHash)
			x.firstUse = n == 1
			if h.MinUses == 0 {
				x.untried = x.firstUse && h.firstUses.skipFirstUse()
			} else {
				x.untried = n < h.MinUses
			}
		}
	}
	if x.store && !x.cond && !x.untried && !x.background && fetchWhole(r) && !x.hinted(h) &&
		!h.asIs.skips(x.flightHash(), r, h.hintGen, h.now) {
		out = withoutConditionals(out)
		x.condDropped, x.fetchedWhole = true, true
	}

	if h.coalesce && x.store && !x.background && !x.neverCollapsed(h) && !x.hinted(h) {
		var leader bool
		for rejoin := true; ; rejoin = false {
			if x.variantKey != nil {
				x.flightKey = string(x.variantKey)
			} else {
				x.flightKey = string(x.urlKey)
			}
			var f *flight
			var answering <-chan struct{}
			f, leader, answering = h.flights.join(x.flightKey, &x.lead)
			if !leader && rejoin {
				x.mark = h.store.keyMark(x.urlHash) // for outdated
			}
			if leader {
				// Leading a variant's flight: a fellow waiter of the
				// variant may have filled it already; its waiters get that.
				if !rejoin {
					if v := h.store.get(x.variantHash, x.variantKey); v != nil && h.serveCollapsed(w, x, v, v.status, false) {
						h.flights.finish(x.flightKey, &x.lead, v, v.status)
						return nil
					}
				}
				break
			}
			e, status, err := f.wait(r.Context(), answering, h.coalesceWait)
			h.flights.left(x.flightKey, f)
			if err != nil {
				return nil // the client is gone
			}
			if h.serveCollapsed(w, x, e, status, true) {
				return nil
			}
			if rejoin && h.outdated(x, e, h.now()) {
				h.flights.drop(x.flightKey, f)
				continue // lead a new flight, or join the one another started
			}
			if !rejoin || !h.learnVariant(x, e) {
				break
			}
		}
		if leader {
			// The fill others wait for must survive its own client;
			// while nobody waits and the origin has not answered, it
			// ends with it, as a plain reverse_proxy request does, so
			// that clients that leave (after a timeout of their own, or
			// on purpose) do not leave origin requests behind.
			x.leading = true
			defer x.release(h, nil)
			ctx, f := h.fills.start(out.Context(), h.life)
			defer h.fills.end(f)
			x.fillCtx = f
			h.flights.setCancel(&x.lead, f.cancel)
			key := x.flightKey
			stop := context.AfterFunc(r.Context(), func() {
				if h.flights.abandon(key, &x.lead) {
					f.cancel()
				}
			})
			defer stop()
			out = out.WithContext(ctx)
		}
	}

	rec := &x.rec
	rec.init(w, h.now)
	rec.presetNames = h.presetNames
	rec.clientCtx = r.Context()
	// Last: the client's writer (see decouple) may still be writing once
	// the response is stored.
	defer rec.joinWriter()
	defer rec.dropBody()
	rec.arena = h.store.arena()
	rec.limit = h.MaxItemSize
	x.h = h
	rec.events = x
	x.requestTime = h.now()
	var vars map[string]any // the request's vars before the first send
	if x.cond {
		vars, _ = r.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
		vars = maps.Clone(vars)
	}
	x.proxy = markProxy(r)
	err := h.serveNext(next, x, out)
	rec.finishTrailers()
	if x.outcome == outRetry && err == nil {
		err = h.askAgain(out.Context(), r, vars, next, x)
	}
	return h.finish(w, x, rec, err)
}

// serveNext runs next for the forwarded request. A client that has its
// 304 (recorder.notModified) has all it gets: when the recorder stops the
// rest of a body it will not store, or the origin breaks it off,
// reverse_proxy panics with http.ErrAbortHandler, which would reset the
// client's finished response (HTTP/2) or its connection; the request ends
// as the recorder's errUnread instead, and nothing is stored.
//
// When it returns, the body others read as it arrived is complete or
// broken off (endFill).
func (h *Handler) serveNext(next caddyhttp.Handler, x *exchange, out *http.Request) (err error) {
	rec := &x.rec
	defer func() {
		v := recover()
		x.endFill()
		if v != nil {
			if v != http.ErrAbortHandler || !rec.notModified {
				panic(v)
			}
			err = errUnread
		}
	}()
	return next.ServeHTTP(rec, out)
}

// notFetchedWhole remembers a conditional miss fetched whole (fetchWhole)
// whose response is not stored: for hintTTL, the key's conditional misses
// go as they came, rather than make the origin send a body again for a
// 304 the origin could have sent itself.
//
// Per class of request, as hints are (hintClass), when the request has
// credentials or the answer sets a cookie: a logged-in user's answer says
// nothing of anonymous requests, whose whole answer may be stored.
func (x *exchange) notFetchedWhole() {
	if x.fetchedWhole && !x.ownPreset {
		x.h.asIs.hint(x.flightHash(), x.scopeOfUnstored(hintKey), x.r, x.h.hintGen, x.h.now())
	}
}

// scopeOfUnstored narrows scope, whom a response not stored speaks for,
// to the requests like x's when x's request has credentials or the
// answer sets a cookie other than the affinity policy's (see
// tellsUncacheable).
func (x *exchange) scopeOfUnstored(scope hintScope) hintScope {
	if scope == hintKey && (hasCredentials(x.r) || len(withoutProxyCookie(x.r, x.rec.header)["Set-Cookie"]) > 0) {
		return hintLikeThese
	}
	return scope
}

// missRequest is what a miss of r sends: r, but a GET without a Range for
// the whole body, fetched whole so that the response can be stored (and
// coalesced); a Range that asks for less goes out as it came.
func missRequest(r *http.Request) *http.Request {
	if r.Method == http.MethodGet && asksForWhole(r) {
		return withoutRange(r)
	}
	return r
}

// presetFields returns the fields that decide caching (presetNames) that
// handlers before the cache set on the client's response dst, nil if none:
// Caddy orders `header` before response_cache, and `header /account/*
// Cache-Control "private, no-store"` reaches the client with the origin's
// own Cache-Control, as through reverse_proxy alone, so the cache decides
// by both (what they allow only for the statuses of OperatorFreshness:
// see judge). Deferred header operations apply after the cache and are
// not seen here.
func (h *Handler) presetFields(dst http.Header) http.Header {
	vals, found := h.presetValues(dst)
	if !found {
		return nil
	}
	out := make(http.Header, len(h.presetNames))
	for i, f := range h.presetNames {
		if vals[i] != nil {
			out[f] = slices.Clone(vals[i]) // kept past handlers that may edit dst's in place
		}
	}
	return out
}

// ownsField reports whether the cache merges the client's field k, as
// set by handlers before it, with the response's on its own (Server, Age,
// Cache-Status, and presetNames: see takeServerSeed, serveEntry,
// prependPreset), rather than as recorder.copyToClient and serveEntry
// merge other fields.
func ownsField(presetNames []string, k string) bool {
	switch k {
	case "Server", "Age", "Cache-Status":
		return true
	}
	return slices.Contains(presetNames, k)
}

// presetValues returns the values of presetNames (at most four) in dst,
// in that order, and whether there are any, without allocating (for the
// hit path).
func (h *Handler) presetValues(dst http.Header) (vals [4][]string, found bool) {
	for i, f := range h.presetNames {
		if v := dst[f]; len(v) > 0 {
			vals[i], found = v, true
		}
	}
	return vals, found
}

// withPresetCopy returns hdr with the values of preset in front of its
// own values of each of their fields, leaving out those equal to one of
// preset's: the lines the client gets (reverse_proxy adds the origin's
// lines after those set before it), by which the cache decides. hdr
// itself when preset is empty; otherwise a copy (hdr is stored as the
// origin sent it, and each request puts its own preset in front).
func withPresetCopy(hdr, preset http.Header) http.Header {
	if len(preset) == 0 {
		return hdr
	}
	out := make(http.Header, len(hdr)+len(preset))
	copyHeader(out, hdr)
	for f, pv := range preset {
		out[f] = prependPreset(pv, hdr[f])
	}
	return out
}

// prependPreset returns the values preset followed by those of own that
// are not among them; preset itself when there are none.
func prependPreset(preset, own []string) []string {
	merged := slices.Clip(preset)
	for _, v := range own {
		if !slices.Contains(preset, v) {
			merged = append(merged, v)
		}
	}
	return merged
}

// fetchWhole reports whether a miss of r, a conditional GET whose answer
// may be stored, goes to the origin without its conditionals: a 304 could
// neither be stored nor answer the requests coalesced with it. Only
// If-None-Match and If-Modified-Since, which the cache evaluates against
// the 200 it gets (as nginx and Varnish do), and not for a request with
// Authorization (its answer is seldom storable). The cache evaluates
// If-None-Match before a Range for the whole body (RFC 9110 §13.2.2), which
// a miss leaves out too (see missRequest).
func fetchWhole(r *http.Request) bool {
	return hasCacheConditionals(r) && len(r.Header["If-Match"]) == 0 && len(r.Header["If-Unmodified-Since"]) == 0 &&
		len(r.Header["Authorization"]) == 0
}

// whyNotStored judges the response x got, of status, with fields hdr
// (as the client gets them: origin with x's preset fields in front, see
// withPresetCopy) and origin (the origin's own; nil when hdr is the
// origin's own): the reason it may not be stored ("" if it may), its
// directives, its lifetime and its Vary fields.
func (h *Handler) whyNotStored(x *exchange, status int, hdr, origin http.Header) (reason string, rc ResponseControl, lifetime time.Duration, fields []string) {
	if len(x.preset) == 0 {
		origin = nil
	}
	if reason, rc, lifetime = h.judge(x.r, status, hdr, origin, x.preset, x.rec.responseTime); reason != "" {
		return reason, rc, lifetime, nil
	}
	if x.proxy.madeAfter(&x.rec) {
		return madeAfterProxy, rc, lifetime, nil
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
	case h.noLifetimeOnly(hdr, rc, lifetime):
		// max-age=0, s-maxage=0, a bare public: like no-cache without a
		// validator, stored it could answer no one, and would only be
		// stored again on every request. (One with a lifetime that an
		// Age used up is kept: a request's max-stale may take it.)
		reason = "no-freshness"
	}
	return reason, rc, lifetime, fields
}

// noLifetimeOnly reports whether a response with fields hdr, directives
// rc and lifetime has no lifetime (the origin gave it none), nothing to
// revalidate it by, and no stale-while-revalidate or stale-if-error
// window to be served in.
func (h *Handler) noLifetimeOnly(hdr http.Header, rc ResponseControl, lifetime time.Duration) bool {
	if lifetime > 0 || hasValidator(hdr) {
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
// it may not be stored ("" if it may), its directives and its lifetime.
//
// The fields set before the cache count as the origin's for the statuses
// of OperatorFreshness. For any other status they may only restrict
// (private, no-store, no-cache, a shorter lifetime): such a response is
// stored only when the origin's own fields allow it too, and it is fresh
// no longer than they make it. Otherwise `header /static/* Cache-Control
// "public, max-age=3600"` would store, under a static file's URL, the 431
// an origin answers one client's 9 KB header with, and answer everyone
// with it for an hour.
func (h *Handler) judge(r *http.Request, status int, view, origin, preset http.Header, responseTime time.Time) (reason string, rc ResponseControl, lifetime time.Duration) {
	ttl := time.Duration(h.DefaultTTL)
	rc = ParseResponseControl(view, h.targeted)
	if rc.Invalid && !rc.Targeted && origin != nil {
		rc = shorterOfEach(rc, preset, origin)
	}
	lifetime, has := LifetimeAt(status, view, rc, ttl, responseTime)
	if reason = Storable(r, status, view, rc, has, false); reason != "" || origin == nil || OperatorFreshness(status) {
		return reason, rc, lifetime
	}
	own := ParseResponseControl(origin, h.targeted)
	ownLifetime, ownHas := LifetimeAt(status, origin, own, ttl, responseTime)
	if reason = Storable(r, status, origin, own, ownHas, false); reason != "" {
		return reason, rc, lifetime
	}
	return "", rc, min(lifetime, ownLifetime)
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

// notModifiedBy reports whether a 200 with fields hdr satisfies r's
// If-None-Match or If-Modified-Since, which did not go to the origin: the
// client then gets a 304 (RFC 9110 §13.2.2). If-Modified-Since only
// against a Last-Modified: the 200 is dated now, and an origin that sends
// no Last-Modified would have answered with the 200.
func notModifiedBy(r *http.Request, hdr http.Header) bool {
	if len(r.Header["If-None-Match"]) == 0 && len(hdr["Last-Modified"]) == 0 {
		return false
	}
	return ClientNotModified(r, hdr)
}

// hasCacheConditionals reports whether r carries the preconditions a cache
// may evaluate itself (RFC 9111 §4.3.2).
func hasCacheConditionals(r *http.Request) bool {
	return len(r.Header["If-None-Match"]) > 0 || len(r.Header["If-Modified-Since"]) > 0
}

// withoutConditionals returns a copy of r without If-None-Match and
// If-Modified-Since.
func withoutConditionals(r *http.Request) *http.Request {
	r2 := r.Clone(r.Context())
	delete(r2.Header, "If-None-Match")
	delete(r2.Header, "If-Modified-Since")
	return r2
}

// sends records what x may store of the answer to out, the request sent
// for the client's r: any storable answer when out has no Range; when it
// has one, an answer with the whole body (a 206 of all of it, or a 200),
// stored as a 200 (see onHeader); and whether the client's Range was left
// out (a 200 may then answer it as a 206, see wholeContentRange).
func (x *exchange) sends(r, out *http.Request) {
	ranges := len(out.Header["Range"])
	storable := r.Method == http.MethodGet && !x.rq.NoStore
	x.store = storable && ranges == 0
	x.wholePart = storable && ranges == 1
	x.rangeDropped = len(r.Header["Range"]) > 0 && ranges == 0
}

// askAgain answers a 304 with validators other than the stored
// response's, which can neither refresh it (RFC 9111 §4.3.4) nor answer
// the client: the entry is dropped and the client's request r goes out
// as a miss's would (as it came, but for a Range for the whole body), on
// ctx (the first send's context) with vars as they were before the first
// send, so that the handlers after the cache see a new request, not a
// retry (lb_policy affinity records its picks and the cookie it issued
// there, and the cookie went with the discarded 304).
func (h *Handler) askAgain(ctx context.Context, r *http.Request, vars map[string]any, next caddyhttp.Handler, x *exchange) error {
	rec := &x.rec
	if ce := h.logger.Check(zapcore.DebugLevel, "304 does not match the stored response; asking again"); ce != nil {
		ce.Write(zap.String("key", x.stale.key), zap.String("etag", rec.header.Get("Etag")))
	}
	h.store.dropIfStored(x.stale)
	x.stale, x.cond, x.outcome = nil, false, outPass
	out := missRequest(r)
	x.sends(r, out)
	rec.reset()
	x.requestTime = h.now()
	if vars != nil {
		ctx = context.WithValue(ctx, caddyhttp.VarsCtxKey, vars)
	}
	err := h.serveNext(next, x, out.WithContext(ctx))
	rec.finishTrailers()
	return err
}

// outdated reports whether e, the answer of the flight x waited for, is
// not to answer x: its body, still arriving, has not advanced for the
// coalescing bound (an origin that hangs mid-body); or its key was purged
// or invalidated after its fetch began, and before x looked in the store
// (or at all, while e's body is still arriving: such a flight stays
// joinable), since a request that comes after a purge must not get what
// the purge was meant to remove. The requests that waited before it get
// the answer once.
func (h *Handler) outdated(x *exchange, e *entry, now time.Time) bool {
	if e == nil {
		return false
	}
	f := e.body.filling()
	if f != nil && f.stalled(e.body.Len(), now, h.coalesceWait) {
		return true
	}
	return e.epoch != 0 && (f != nil && h.store.purgedSince(e) || h.store.purgedBefore(e, x.epoch, x.mark))
}

// serveCollapsed answers x's request with e, an entry another request
// fetched (with the origin's status), when e can answer it; held tells
// that the caller holds a reference to e's body, which it hands over.
func (h *Handler) serveCollapsed(w http.ResponseWriter, x *exchange, e *entry, status int, held bool) bool {
	now := h.now()
	if e == nil || !held && !e.body.acquire() {
		return false
	}
	defer e.body.release()
	f := e.body.filling()
	if f != nil {
		f.readers.Add(1) // a reader from here, not only once it writes (see fill.clientGone)
		defer f.leave()
	}
	if !h.collapsible(e, x.r, x.rq, now) {
		return false
	}
	if f != nil && f.broken() || h.outdated(x, e, now) {
		return false // its body broke off, stopped coming or was purged: this request asks the origin
	}
	x.result = h.m.collapsed
	st := Status{Fwd: x.fwd, FwdStatus: status, Collapsed: true, Stored: h.store.has(e), TTL: h.ttl(e, now), HasTTL: true}
	h.serveEntry(w, x.r, e, st, now)
	return true
}

// learnVariant makes x, a miss that waited under its URL's key for a
// response that turned out to vary and that x's request does not match
// (another Accept-Encoding than the leader's, say), a miss of its own
// variant, keyed under the record generation the leader's variant was
// stored with, so that the requests of each variant wait for one fill
// rather than each going to the origin (a cold cache, or a purged URL,
// under mixed clients). The record itself is not looked up: the store
// may not show it yet (ristretto applies sets asynchronously) or may
// have refused it. It reports whether x has a new flight key to join.
func (h *Handler) learnVariant(x *exchange, e *entry) bool {
	if e == nil || x.stale != nil || x.variantKey != nil || len(e.vary) == 0 || e.gen == 0 ||
		requestVaryKey(e.vary, x.r) == e.varyKey {
		return false
	}
	x.record = &entry{entryData: entryData{key: string(x.urlKey), hash: x.urlHash, record: true, vary: e.vary, gen: e.gen}}
	x.variantKey = appendVariantKey(nil, x.urlKey, e.gen, requestVaryKey(e.vary, x.r))
	x.variantHash = keyHash(x.variantKey)
	x.fwd = "vary-miss"
	return true
}

// neverCollapsed reports whether no response of a coalesced flight could
// answer this request (see collapsible): the client asked for validation,
// or the stored response it revalidates must be validated on every use
// (no-cache, max-age=0), as the refreshed one will be. Waiting would only
// delay its own request to the origin by one round trip.
func (x *exchange) neverCollapsed(h *Handler) bool {
	return x.rq.NoCache || x.stale != nil && h.freshness(x.stale).Lifetime <= 0
}

// flightHash is the hash of the key a coalesced miss of x flies under:
// the variant's, when the URL's responses are known to vary.
func (x *exchange) flightHash() uint64 {
	if x.variantKey != nil {
		return x.variantHash
	}
	return x.urlHash
}

// hinted reports whether the last response under x's flight key was not
// storable, for a reason of its own, within the last hintTTL, so that x
// does not wait for another request's response to learn it must go to
// the origin. Never when x revalidates a stale entry (see
// uncacheableHints).
func (x *exchange) hinted(h *Handler) bool {
	return x.stale == nil && h.hints.skips(x.flightHash(), x.r, h.hintGen, h.now)
}

// tellsUncacheable reports whom a response of status, with header hdr, not
// storable for reason, tells that their next responses under the same key
// will not be storable either. The requests like this one (hintLikeThese:
// those with Authorization, those with a cookie, or those with neither;
// see hintClass) when the reason may lie with the request's credentials:
// it sets a cookie (a first visit's, a session's renewal), or answers a
// request that has some (Authorization, a cookie). A logged-in user's
// `private` page says nothing of anonymous requests, whose answers may be
// storable, but the next logged-in user's would be the same; and a waiter
// with another cookie could not have been answered with a response varying
// on it anyway. Every request (hintKey) when an anonymous request got it
// and nothing in it is particular to that request (speaksForKey). Nobody
// when the reason lies with the traffic (min_uses), the request's other
// fields, or an error that may pass (4xx and 5xx statuses: a 429, an
// outage).
func (x *exchange) tellsUncacheable(reason string, status int, hdr http.Header, rc ResponseControl) hintScope {
	if status < 200 || status >= 400 {
		return hintNone
	}
	switch reason {
	case "private", "no-store", "no-freshness", "Vary: *", "trailers", "event-stream":
	case "authorization", "set-cookie":
		return hintLikeThese
	default:
		return hintNone
	}
	if len(hdr["Set-Cookie"]) > 0 || len(x.r.Header["Authorization"]) > 0 || len(x.r.Header["Cookie"]) > 0 {
		return hintLikeThese
	}
	// Private whatever reason Storable gave first (no-store comes before
	// private: Django's never_cache sends both), and whatever a targeted
	// field overrides.
	private := rc.Private || rc.Targeted && ParseResponseControl(hdr, "").Private
	if x.speaksForKey(hdr, private) {
		return hintKey
	}
	return hintNone
}

// hintUnstorable hints x's key (uncacheableHints), or the requests like
// x's when it has credentials or the answer sets a cookie (see
// scopeOfUnstored), after a response that was storable at its header
// turned out not to be (too large, trailers), on a miss, when it speaks
// for the key's other requests (speaksForKey, for a key's hint;
// with the fields handlers before the cache set, as the store reads
// Vary). Size depends on the coding, too: an uncompressed response too
// large for a request that accepted no compression, varying on
// Accept-Encoding before the key tells the codings apart, says nothing of
// the compressed one, which may fit. A wrong hint costs one burst of
// misses that do not coalesce, until a response is stored under the key;
// a missing one, a wait for max_item_size (or the end) of every burst's
// body.
func (x *exchange) hintUnstorable(tooLarge bool) {
	if x.stale != nil || x.rec.status < 200 || x.rec.status >= 400 { // a revalidation (background ones too)
		return
	}
	hdr := withPresetCopy(x.rec.header, x.preset)
	scope := x.scopeOfUnstored(hintKey)
	if scope == hintKey && !x.speaksForKey(hdr, false) {
		return
	}
	if fields, _ := ParseVary(hdr); tooLarge && slices.Contains(fields, "Accept-Encoding") &&
		!acceptsCoding(x.r) && len(hdr["Content-Encoding"]) == 0 &&
		(x.variantKey == nil || !slices.Contains(x.record.vary, "Accept-Encoding")) {
		return
	}
	x.h.hints.hint(x.flightHash(), scope, x.r, x.h.hintGen, x.h.now())
}

// noLongerStored handles a response that tells its key, or the requests
// like its own (scope), is no longer storable (see tellsUncacheable) on a
// miss or a revalidation. A miss hints the key, or those requests. A
// revalidation's stored entry is dropped when the response speaks for the
// whole key and the request carries no cookie: kept, every later request
// would revalidate it, coalesced, and wait for another's response header to learn it must
// go to the origin (two round trips each, until the entry is evicted);
// without it the next miss hints the key. (A cookie's request may be
// answered `private` for its user only, by an origin that sends no Vary
// to tell, while anonymous requests still get the stored response.)
//
// Only a foreground revalidation of an entry no client could be served
// without one (stale, past its stale-while-revalidate window) drops it,
// and only while it is still the stored one (a request stored since
// wins): a fresh entry, or one within its window, that a client forced
// to be revalidated (no-cache, max-age=0) is what every other client is
// served, and the answer may be that client's alone (an API key, a
// client certificate, its address); a background refresh's entry is being
// served under stale-while-revalidate, whose point is that one
// uncacheable answer does not send every client to the origin.
func (h *Handler) noLongerStored(x *exchange, scope hintScope, at time.Time) {
	switch {
	case x.stale == nil:
		h.hints.hint(x.flightHash(), scope, x.r, h.hintGen, at)
	case scope == hintKey && !x.background && len(x.r.Header["Cookie"]) == 0 &&
		h.pastStaleWindow(x.stale, x.requestTime) && h.store.dropIfStored(x.stale):
		if ce := h.logger.Check(zapcore.DebugLevel, "the origin's response is no longer storable; stored response dropped"); ce != nil {
			ce.Write(zap.String("key", x.stale.key))
		}
	}
}

// pastStaleWindow reports whether e, at t, could not be served to a
// request without directives: stale and past stale-while-revalidate.
func (h *Handler) pastStaleWindow(e *entry, t time.Time) bool {
	ttl := h.ttl(e, t)
	if ttl > 0 {
		return false
	}
	swr, _ := StaleAllowance(e.rc, noRequestControl, time.Duration(h.StaleWhileRevalidate), time.Duration(h.StaleIfError))
	return !(swr > 0 && -ttl <= swr)
}

// speaksForKey reports whether a response with header hdr, not storable
// (and meant for its requester alone if private), speaks for every
// request under x's flight key: its Vary names no field beyond the key's
// that could set its requests apart (`Vary: *` alone matches no request:
// nothing to tell apart). A logged-in user's `private` under
// `Vary: Cookie`, while anonymous requests share the key, speaks for its
// user only, and a hint on the key would reach the others.
//
// Accept-Encoding never counts: encode adds it to every response it may
// compress, storable or not. On a miss, what may be hinted, a field also
// does not count when the request did not carry it (its answer is what
// every request without it gets), unless the answer is `private` (meant
// for that one requester, who may differ from the others in what the
// key does not show), and Origin never does: CORS middleware adds it to
// APIs' responses, and their answers differ in their Access-Control
// fields, seldom in whether they can be stored (Rails and Laravel answer
// `private` to every API request). A wrong guess costs one burst of
// misses that do not coalesce, until a response is stored under the key.
// On a revalidation, whose answer drops the stored entry, the key must
// tell apart every field but Accept-Encoding: a partner site's `private`
// answer must not take a response shared by every other client away from
// them (and with it their stale-if-error).
func (x *exchange) speaksForKey(hdr http.Header, private bool) bool {
	fields, star := ParseVary(hdr)
	if star && private && x.stale == nil {
		return false // varies on what no key shows, meant for its requester
	}
	var keyed []string
	if x.variantKey != nil {
		keyed = x.record.vary
	}
	for _, f := range fields {
		switch {
		case f == "Accept-Encoding", slices.Contains(keyed, f):
		case x.stale != nil:
			return false
		case f == "Origin":
		case private, len(x.r.Header[f]) > 0:
			return false
		}
	}
	return true
}

// count counts the exchange under its result, if it is a request's.
func (x *exchange) count() {
	if x.result != nil {
		x.result.Inc()
	}
}

// fillSet gives the fills of a handler (misses others may wait for) their
// contexts, and keeps those in flight. A fill's context has the values of
// its client's request context and ends only once both the client has
// gone and the handler's config is unloaded (life ends): the fill
// outlives its own client for the clients waiting for it, until the
// config goes; and it outlives a config reload for its client, as a plain
// reverse_proxy request does (Caddy lets the requests of the old config
// finish, but ends its context at once). At the unload, each fill in
// flight is set to end with its client.
//
// A fill's context is a cancelCtx, so that the contexts the reverse proxy
// and the HTTP transport derive from it register with it rather than
// start a goroutine each to watch it. Keeping the fills in a set, rather
// than registering each with its client, costs 3 allocations per fill
// instead of 7.
type fillSet struct {
	watch    sync.Once // registers unload with the config's life, at the first fill
	mu       sync.Mutex
	inFlight map[*fill]struct{}
	unloaded bool
	// servers are the HTTP servers unload is registered with, each at
	// its first fill (an HTTP/3 request carries none: quic-go's server
	// is not an *http.Server).
	servers map[*http.Server]struct{}
}

// fill is the parent of a fill's context: the values of the client's
// request context, without its end.
type fill struct {
	client context.Context
	cancel context.CancelFunc
	// body is the fill others read as it arrives, once published (see
	// streamToWaiters): after the unload it outlives its client while
	// they read it (see clientGone).
	body atomic.Pointer[bodyFill]
}

// clientGone ends the fill, whose client has gone after the unload,
// unless requests read its body as it arrives: then the last of them
// ends it (bodyFill.orphan), as Caddy lets them, requests of the old
// config, finish.
func (f *fill) clientGone() {
	if b := f.body.Load(); b != nil && b.orphan(f.cancel) {
		return
	}
	f.cancel()
}

func (f *fill) Deadline() (time.Time, bool) { return time.Time{}, false }
func (f *fill) Done() <-chan struct{}       { return nil }
func (f *fill) Err() error                  { return nil }
func (f *fill) Value(key any) any           { return f.client.Value(key) }

// start returns the context of a fill for the request context client,
// under the config whose context is life; end ends it.
//
// The set unloads when life ends, and also when the HTTP server that
// serves client starts to shut down: when Caddy stops, it waits for its
// servers' handlers to return before it ends the config's context, and a
// fill whose client has gone would hold that up until its origin
// finished.
func (s *fillSet) start(client, life context.Context) (context.Context, *fill) {
	s.watch.Do(func() { context.AfterFunc(life, s.unload) })
	srv, _ := client.Value(http.ServerContextKey).(*http.Server)
	f := &fill{client: client}
	ctx, cancel := context.WithCancel(f)
	f.cancel = cancel
	s.mu.Lock()
	if _, ok := s.servers[srv]; srv != nil && !ok {
		if s.servers == nil {
			s.servers = make(map[*http.Server]struct{})
		}
		s.servers[srv] = struct{}{}
		srv.RegisterOnShutdown(s.unload)
	}
	if s.unloaded {
		s.mu.Unlock()
		context.AfterFunc(client, f.clientGone)
		return ctx, f
	}
	if s.inFlight == nil {
		s.inFlight = make(map[*fill]struct{})
	}
	s.inFlight[f] = struct{}{}
	s.mu.Unlock()
	return ctx, f
}

// end ends a fill that is over.
func (s *fillSet) end(f *fill) {
	s.mu.Lock()
	delete(s.inFlight, f)
	s.mu.Unlock()
	f.cancel()
}

// unload sets each fill in flight to end with its client (at once if the
// client has gone), or after it with the last request that reads it (see
// clientGone). It may be called more than once.
func (s *fillSet) unload() {
	s.mu.Lock()
	s.unloaded = true
	fills := s.inFlight
	s.inFlight = nil
	s.mu.Unlock()
	for f := range fills {
		context.AfterFunc(f.client, f.clientGone)
	}
}

// collapsible reports whether a waiter's request r may be answered with
// the entry its leader fetched.
func (h *Handler) collapsible(e *entry, r *http.Request, rq RequestControl, now time.Time) bool {
	if len(e.vary) > 0 && requestVaryKey(e.vary, r) != e.varyKey {
		return false
	}
	ttl := h.ttl(e, now)
	return ttl > 0 && !rq.NoCache &&
		(rq.MaxAge < 0 || e.currentAge(now) <= rq.MaxAge) &&
		(rq.MinFresh < 0 || ttl >= rq.MinFresh)
}

// onHeader decides, at the origin's final status, what becomes of the
// response.
func (h *Handler) onHeader(x *exchange, rec *recorder) {
	if x.leading {
		h.flights.answered(&x.lead)
	}
	if !x.background {
		rec.preset = x.preset
	}
	if x.client.lacking() {
		// A refresh that asked for what only its client's request knew
		// was not the request the client's would have been: its answer
		// is not stored, and the next refresh has those values.
		if ce := h.logger.Check(zapcore.DebugLevel, "background revalidation lacked placeholders of the client's request; its response is not stored, the next one will have them"); ce != nil {
			ce.Write(zap.String("host", x.r.Host), zap.String("uri", x.r.RequestURI), zap.Strings("placeholders", x.client.missed()))
		}
		return
	}
	status := rec.status
	if x.wholePart && !x.store {
		switch {
		case status == http.StatusOK: // the origin ignored the Range
			x.store = true
		case status == http.StatusPartialContent && len(x.r.Header["If-Range"]) == 0:
			// A 206 of the whole body, but not one answering If-Range,
			// which may leave out the fields the client has (RFC 9110
			// §15.3.7: Content-Type, Content-Encoding), nor one encode
			// did not compress for a client it would have (acceptsCoding).
			n, ok := wholePartLength(rec.header)
			if ok && (len(rec.header["Content-Encoding"]) > 0 || !acceptsCoding(x.r)) {
				x.store, x.wholeAs200, x.wholeLen = true, true, n
				status = http.StatusOK // as stored; the client gets the 206
			}
		}
	}
	if x.cond && status == http.StatusNotModified {
		rec.pass = false
		x.outcome = outRefresh
		if !Selects304(&x.stale.header, rec.header) {
			x.outcome = outRetry
		}
		return
	}
	if x.stale != nil && !x.background && rec.status == http.StatusPartialContent &&
		!Selects304(&x.stale.header, rec.header) {
		// A part of another version: the stored response is outdated.
		h.store.dropIfStored(x.stale)
	}
	if x.stale != nil && isServerError(status) && h.staleIfErrorOK(x, rec.responseTime) {
		h.logOriginError(zapcore.WarnLevel, "origin answered with a server error; served the stored response (stale-if-error)", x, zap.Int("status", status))
		rec.pass = false
		x.outcome = outStaleIfError
		return
	}
	if x.stale != nil && x.r.Method == http.MethodHead && status == http.StatusOK {
		x.outcome = outFreshen // the 200 goes to the client as it is
	}
	var detail string
	if x.store {
		origin := withoutProxyCookie(x.r, rec.header)
		hdr := withPresetCopy(origin, x.preset)
		reason, rc, lifetime, fields := h.whyNotStored(x, status, hdr, origin)
		// A request whose handlers before the cache made the answer not
		// storable for it alone (header @loggedin Cache-Control private,
		// matching its cookie) tells nothing of the key's other requests.
		if reason != "" && x.preset != nil && len(x.r.Header["Cookie"]) > 0 {
			asSent, _, _, _ := h.whyNotStored(x, status, origin, nil)
			x.ownPreset = asSent == ""
		}
		scope := hintNone
		if !x.ownPreset {
			scope = x.tellsUncacheable(reason, status, hdr, rc)
		}
		if scope != hintNone {
			h.noLongerStored(x, scope, rec.responseTime)
		}
		if reason == "" && x.untried && !x.awaited() {
			// Storable, but asked for too seldom so far, and nobody
			// waits for it: streamed without being buffered.
			reason, detail = "min_uses", "min-uses"
			h.m.minUsesSkips.Inc()
		}
		if reason == "" && !rec.reserveDeclared() {
			// Other responses being recorded take the budget: streamed
			// without being buffered; the next miss may be stored.
			reason, detail = "recording budget", refusedBudget
			rec.refused = refusedBudget
		}
		if reason == "" {
			rec.buffer = true
			x.rc, x.vary = rc, fields
			x.fresh = freshnessWith(lifetime, hdr, rc, x.requestTime, rec.responseTime)
			x.fresh.Defaulted = h.defaulted(status, hdr, rc, lifetime, rec.responseTime)
			if x.fresh.TTL(rec.responseTime) <= 0 {
				// Stale on arrival (no-cache, max-age=0): no waiter could
				// be answered with it, so they go to the origin now
				// rather than wait for its end, which for a live stream
				// (server-sent events) may never come.
				x.release(h, nil)
			}
		} else {
			x.release(h, nil)
			if ce := h.logger.Check(zapcore.DebugLevel, "response not stored"); ce != nil {
				ce.Write(zap.String("host", x.r.Host), zap.String("uri", x.r.RequestURI), zap.Int("status", status), zap.String("reason", reason),
					zap.Bool("skip_coalescing", scope != hintNone && x.stale == nil)) // its key's next requests (or those like it), for hintTTL
			}
		}
	} else {
		x.release(h, nil)
	}
	if rec.pass && !x.background {
		if x.rangeDropped && status == http.StatusOK {
			rec.contentRange = wholeContentRange(x.r, rec.header)
		}
		if x.condDropped && rec.status == http.StatusOK {
			rec.notModified = notModifiedBy(x.r, rec.header)
		}
		if !rec.buffer && rec.refused == "" {
			x.notFetchedWhole()
		}
		h.setStatusAfterCopy(rec, Status{Fwd: x.fwd, FwdStatus: rec.status, Key: h.statusKey(x.urlKey), Detail: detail})
	}
}

// setStatusAfterCopy makes the recorder add our Cache-Status member to
// the client's header after the origin's fields are copied there.
func (h *Handler) setStatusAfterCopy(rec *recorder, st Status) {
	var buf [512]byte
	rec.statusSlot[0] = string(appendCacheStatus(buf[:0], rec.header["Cache-Status"], h.CacheName, st))
	rec.cacheStatus = rec.statusSlot[:]
}

func isServerError(status int) bool {
	switch status {
	case http.StatusInternalServerError, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// staleIfErrorOK reports whether the stale entry of x may replace an
// origin error at now (RFC 5861 §4; never past must-revalidate and the
// like, RFC 9111 §4.2.4).
func (h *Handler) staleIfErrorOK(x *exchange, now time.Time) bool {
	if x.rq.OriginPreconditions {
		return false // the client wants the origin's verdict, not a stored response
	}
	e := x.stale
	ttl := h.ttl(e, now)
	if ttl > 0 {
		return false // fresh, but the client asked for validation
	}
	_, sie := StaleAllowance(e.rc, x.rq, time.Duration(h.StaleWhileRevalidate), time.Duration(h.StaleIfError))
	return sie > 0 && -ttl <= sie
}

// finish completes a forwarded exchange once next has returned.
func (h *Handler) finish(w http.ResponseWriter, x *exchange, rec *recorder, err error) error {
	now := h.now()
	if !rec.wroteHeader {
		if err != nil {
			// The origin could not be reached (or the handler failed
			// before answering).
			x.release(h, nil)
			if x.stale != nil && !x.background {
				if h.staleIfErrorOK(x, now) {
					// The client gets a response, so Caddy logs no error:
					// say what the stale one hides.
					h.logOriginError(zapcore.WarnLevel, "origin failed; served the stored response (stale-if-error)", x, zap.Error(err))
					x.result = h.m.stale
					h.serveEntry(w, x.r, x.stale, Status{Fwd: "stale", TTL: h.ttl(x.stale, now), HasTTL: true, Detail: "stale-if-error"}, now)
					return nil
				}
				if x.stale.rc.MustRevalidateShared() {
					// RFC 9111 §5.2.2.2, §5.2.2.8, §5.2.2.10: a response
					// that must be revalidated yields 504 when validation
					// fails. (One with no-cache gets the origin's error.)
					h.logOriginError(zapcore.ErrorLevel, "origin failed; a stored response that must be revalidated answered 504", x, zap.Error(err))
					x.result = nil // counted as an error
					return h.gatewayTimeout(w, x.fwd, "must-revalidate", x.urlKey)
				}
			}
			if !x.background {
				// Caddy writes the error response (reverse_proxy's 502)
				// with this header: say the cache forwarded the request.
				h.setCacheStatus(w.Header(), Status{Fwd: x.fwd, Key: h.statusKey(x.urlKey)})
			}
			return err
		}
		rec.WriteHeader(http.StatusOK) // nothing written: net/http would send an empty 200
	}

	if x.client.lacking() {
		// Asked for after the header (see onHeader): nothing is stored
		// either, and the deferred dropBody releases what was recorded.
		x.outcome, rec.buffer = outPass, false
	}
	switch x.outcome {
	case outRefresh:
		e, shared := h.refresh(x, rec, withoutProxyCookie(x.r, rec.header))
		if shared {
			x.release(h, e)
		}
		x.release(h, nil) // not storable: the waiters ask the origin themselves
		if !x.background {
			passProxyCookie(w.Header(), x.r, rec.header)
			st := Status{Fwd: x.fwd, FwdStatus: http.StatusNotModified, TTL: h.ttl(e, now), HasTTL: true}
			h.serveEntry(w, x.r, e, st, now)
		}
		return nil
	case outStaleIfError:
		x.release(h, nil)
		if !x.background {
			x.result = h.m.stale
			passProxyCookie(w.Header(), x.r, rec.header)
			st := Status{Fwd: "stale", FwdStatus: rec.status, TTL: h.ttl(x.stale, now), HasTTL: true, Detail: "stale-if-error"}
			h.serveEntry(w, x.r, x.stale, st, now)
		}
		return nil
	case outFreshen:
		if err == nil {
			h.freshen(x, rec) // the 200 went to the client as it came
		}
	}

	if rec.buffer && !rec.overflow && err == nil && rec.complete() && !rec.hasTrailers() &&
		(!x.wholeAs200 || rec.written == x.wholeLen) {
		e := x.filling
		if e != nil {
			rec.takeBody() // e's body, complete (see endFill)
		} else {
			e = h.newEntry(x, rec)
		}
		if e == nil {
			if ce := h.logger.Check(zapcore.DebugLevel, "response not stored"); ce != nil {
				ce.Write(zap.String("host", x.r.Host), zap.String("uri", x.r.RequestURI), zap.Int("status", rec.status), zap.String("reason", noRoomReason))
			}
		} else {
			h.storeFilled(x, rec, e)
		}
	} else if rec.buffer && !rec.overflow && err == nil && rec.complete() && rec.hasTrailers() {
		// Trailer fields no Trailer field announced, found at the end:
		// the key's next requests need not wait for its next response's
		// end to learn the same (a declared Trailer is a reason at the
		// header, see tellsUncacheable).
		x.hintUnstorable(false)
	}
	x.release(h, nil)
	if errors.Is(err, errUnread) {
		return nil
	}
	return err
}

// logOriginError logs the failure of x's origin request (its error or
// status), which the cache answered for: Caddy logs a handler's error
// only when it gets it.
func (h *Handler) logOriginError(level zapcore.Level, msg string, x *exchange, failure zap.Field) {
	if ce := h.logger.Check(level, msg); ce != nil {
		ce.Write(zap.String("host", x.r.Host), zap.String("uri", x.r.RequestURI), zap.String("key", string(x.urlKey)), failure)
	}
}

// storeFilled offers e, the entry of x's complete response, to the store
// and answers x's waiters with it.
func (h *Handler) storeFilled(x *exchange, rec *recorder, e *entry) {
	if x.newRecord != nil {
		// Only with a variant to store: a record of a response that
		// broke off would orphan the variants of the one it replaced.
		h.store.set(x.newRecord)
	}
	// The waiters get e even if the store drops it (frees its body)
	// at once: this keeps the body until they have taken theirs.
	e.body.acquire()
	if !h.store.set(e) {
		if ce := h.logger.Check(zapcore.DebugLevel, "store dropped the response"); ce != nil {
			ce.Write(zap.String("key", e.key))
		}
	}
	rec.unreserve() // stored (and charged) or dropped: no longer recorded
	x.release(h, e)
	if x.leading {
		x.lead.drain(time.Second)
	}
	e.body.release()
}

// streamToWaiters answers the requests waiting for x's response, and those
// that join its flight until it ends, with the entry it is to become,
// whose body they read as it arrives (bodyFill): a large object from a
// slow origin would otherwise keep them waiting for its end, and past
// maxCoalesceWait send each to the origin for all of it. For a leader's
// response to be stored as it comes, recorded straight into a body of its
// declared length; not with a Trailer field, which waiters would not get.
func (h *Handler) streamToWaiters(x *exchange, rec *recorder) {
	if !x.leading || x.background || x.outcome != outPass || x.wholeAs200 || len(rec.header["Trailer"]) > 0 ||
		x.fresh.TTL(rec.responseTime) <= 0 { // stale on arrival: its flight has ended (onHeader)
		return
	}
	e := h.newEntryWith(x, rec, rec.body)
	x.fill.progressed.Store(rec.responseTime.UnixNano())
	rec.body.fill.Store(&x.fill)
	// Before it is published, so that a reader is never without it (see
	// fill.clientGone); unpublished, nobody reads it.
	x.fillCtx.body.Store(&x.fill)
	if !h.flights.publish(x.flightKey, &x.lead, e, rec.status) {
		rec.body.fill.Store(nil)
		return
	}
	x.filling, rec.fill = e, &x.fill
}

// endFill ends what streamToWaiters began, once the origin's response
// has ended: the body is complete, or its readers stop (x's own client
// among them, see decouple).
func (x *exchange) endFill() {
	e := x.filling
	if e == nil || x.fillEnded {
		return
	}
	x.fillEnded = true
	if int(x.fill.filled.Load()) >= e.body.Len() {
		e.body.fill.Store(nil)
	} else {
		x.fill.fail()
		// Now, not once x's own client has what it gets (see decouple):
		// the requests that come meanwhile start a flight of their own.
		x.release(x.h, nil)
	}
}

// newEntry builds the entry for a complete, storable response, or
// returns nil when the arena has no room for its body.
func (h *Handler) newEntry(x *exchange, rec *recorder) *entry {
	b, ok := rec.takeBody()
	if !ok {
		return nil
	}
	return h.newEntryWith(x, rec, b)
}

// noRoomReason is why a response is not stored when the arena has no
// room for its body (see appendAlloc).
const noRoomReason = "no room in memory (the arena is full of bodies still being sent, or fragmented)"

// The Cache-Status details of a storable response streamed without being
// stored for want of memory (recorder.refused).
const (
	refusedBudget = "recording-budget"
	refusedNoRoom = "no-room"
)

// newEntryWith builds the entry for a storable response with body.
func (h *Handler) newEntryWith(x *exchange, rec *recorder, body *body) *entry {
	status := rec.status
	if x.wholeAs200 {
		status = http.StatusOK
		delete(rec.header, "Content-Range")
	}
	if hasBody(status) && !declaresLength(rec.header, body.Len()) {
		// The client's header map has its own entry: replacing this one
		// does not touch it.
		rec.header["Content-Length"] = []string{strconv.Itoa(body.Len())}
	}
	if _, dated := rec.header["Date"]; !dated {
		// Stored with the time it was received (RFC 9110 §6.6.1), so that
		// hits carry it with their Age rather than the time of the hit.
		rec.header["Date"] = []string{rec.responseTime.UTC().Format(http.TimeFormat)}
	}
	e := &entry{entryData: entryData{
		status: status,
		header: packStorable(withoutProxyCookie(x.r, rec.header), x.rc),
		body:   body,
		fresh:  x.fresh,
		rc:     x.rc,
		vary:   x.vary,

		server:  rec.server,
		proxied: rec.proxied,
	}, firstUse: x.firstUse}
	if x.preset != nil {
		e.preset = packFields(x.preset, nil)
	}
	e.epoch = x.epoch
	h.finishEntry(e, x)
	return e
}

// declaresLength reports whether h has exactly one Content-Length, n in
// canonical form (what would be stored otherwise).
func declaresLength(h http.Header, n int) bool {
	cl := h["Content-Length"]
	var buf [20]byte
	return len(cl) == 1 && cl[0] == string(strconv.AppendInt(buf[:0], int64(n), 10))
}

// hasBody reports whether a stored response of status has a body (and a
// Content-Length).
func hasBody(status int) bool {
	return status != http.StatusNoContent && status != http.StatusNotModified
}

// finishEntry fills the derived fields of e and its key.
func (h *Handler) finishEntry(e *entry, x *exchange) {
	e.readHeader()
	urlKey := x.flightKey // the URL key, as a string already, when leading a flight
	if urlKey == "" || x.variantKey != nil {
		urlKey = string(x.urlKey)
	}
	if len(e.vary) > 0 {
		record, isNew := h.varyRecord(urlKey, x.urlHash, e.vary, x.record)
		if isNew {
			record.epoch = x.epoch
			x.newRecord = record // stored with e (finish)
		}
		e.varyKey = requestVaryKey(e.vary, x.r)
		e.key = string(appendVariantKey(nil, x.urlKey, record.gen, e.varyKey))
		e.gen = record.gen // for waiters of other variants (learnVariant)
		e.parent = x.urlHash
		// A copy: the request's own strings are not kept alive.
		e.reqVary = packFields(x.r.Header, func(f string) bool { return !slices.Contains(e.vary, f) })
	} else {
		e.key = urlKey
	}
	e.hash = xxhash.Sum64String(e.key)
	e.computeCost()
}

// varyRecord returns the variant record of a URL, and whether it is a new
// one (not stored: the caller stores it with the variant), made when the
// store shows none or its Vary fields differ: of the generation of
// known (the record the request was keyed by, if any) when its fields are
// the same, so that the variants keyed by it stay reachable (the store may
// not show a record it was just offered: ristretto applies sets
// asynchronously, and a later offer can take its queued slot; the store
// refuses the record if the URL was purged since known was looked up:
// store.purgedSince), otherwise of a new generation, orphaning the
// variants of the old.
func (h *Handler) varyRecord(urlKey string, urlHash uint64, fields []string, known *entry) (record *entry, isNew bool) {
	if cur := h.store.get(urlHash, []byte(urlKey)); cur != nil && cur.record && equalFields(cur.vary, fields) {
		return cur, false
	}
	gen := generations.Add(1)
	if known != nil && known.gen != 0 && equalFields(known.vary, fields) {
		gen = known.gen
	}
	r := &entry{entryData: entryData{key: urlKey, hash: urlHash, record: true, vary: fields, gen: gen}}
	r.computeCost()
	return r, true
}

func equalFields(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// refresh builds and stores the entry updated by a 304 (RFC 9111 §4.3.4)
// or by a HEAD's 200 (§4.3.5), whose header is notModified: the stored
// fields updated with its fields, freshness from its times, the same
// body. shared reports whether the updated response may go to other
// clients: it is storable and this request allows storing.
func (h *Handler) refresh(x *exchange, rec *recorder, notModified http.Header) (e *entry, shared bool) {
	old := x.stale
	undated := notModified.Get("Date") == ""
	// The 304 selected the entry (Selects304) with a tag that differs
	// only in weakness (nginx weakens the tag of what it compresses, not
	// of its 304s) or by encode's suffix: keep the stored one, which
	// names the representation the entry holds.
	etag := strings.TrimSpace(notModified.Get("Etag"))
	keepTag := etag != "" && etag != strings.TrimSpace(old.header.Get("Etag"))
	if undated || keepTag {
		notModified = notModified.Clone()
	}
	if undated {
		// The 304 is the new response: a Date it lacks is its time of
		// receipt (RFC 9110 §6.6.1), not the stored response's Date.
		notModified["Date"] = []string{rec.responseTime.UTC().Format(http.TimeFormat)}
	}
	if keepTag {
		delete(notModified, "Etag")
	}
	hdr := UpdateFrom304(old.header.header(), notModified)
	// Judged with the preset fields of the request that stored the entry,
	// not this one's: a request whose handlers mark it private (a
	// logged-in user) may still refresh the response shared by others.
	view, own, preset := hdr, http.Header(nil), http.Header(nil)
	if len(old.preset.s) > 0 {
		preset = old.preset.header()
		view, own = withPresetCopy(hdr, preset), hdr
	}
	reason, rc, lifetime := h.judge(asGET(x.r), old.status, view, own, preset, rec.responseTime)
	if reason == "" && x.proxy.madeAfter(rec) {
		reason = madeAfterProxy
	}
	if fields, star := ParseVary(view); reason == "" && (star || !equalFields(fields, old.vary)) {
		// A 304 that changes Vary: the entry was chosen for this request
		// by the fields it varied on before, not by those it names now.
		reason = "vary"
	}
	fresh := freshnessWith(lifetime, view, rc, x.requestTime, rec.responseTime)
	fresh.Defaulted = h.defaulted(old.status, view, rc, lifetime, rec.responseTime)
	if hasBody(old.status) {
		hdr["Content-Length"] = []string{strconv.Itoa(old.body.Len())}
	}
	e = old.withHeader(packStorable(hdr, rc))
	e.rc, e.fresh, e.epoch = rc, fresh, x.epoch
	e.readHeader()
	e.computeCost()
	// e is served by the caller under the reference it holds to old's
	// body; storing e takes one more.
	if x.rq.NoStore {
		// Nothing of this exchange is stored (RFC 9111 §5.2.1.5); the
		// stored response stays as it was.
		e.exited.Store(true)
		return e, false
	}
	if reason != "" || !e.body.acquire() {
		e.exited.Store(true) // holds no reference
		h.store.dropIfStored(old)
		return e, false
	}
	// Not if old was purged, invalidated or replaced while this request
	// was at the origin: storing e would bring back what is gone, or put
	// an older response over a newer one.
	return e, h.store.replaceIfStored(old, e)
}

// freshen updates the stored GET response x.stale with the 200 answering
// the client's HEAD request, or drops it when the 200 shows it is out of
// date (RFC 9111 §4.3.5; see judgeHead): the HEAD response is what a GET
// would have got, less the body. It runs after the 200 went to the
// client. A stored response that was purged or replaced while the HEAD
// was at the origin is left alone.
//
// §4.3.5 says an out-of-date response should be considered stale; it is
// dropped instead, like one a 304 does not select: the origin has shown
// it is not its current response, which stale-while-revalidate or
// stale-if-error would otherwise serve again.
func (h *Handler) freshen(x *exchange, rec *recorder) {
	old := x.stale
	head := withoutProxyCookie(x.r, rec.header)
	switch judgeHead(old.status, &old.header, old.body.Len(), head) {
	case headUpdates:
		h.refresh(x, rec, head)
	case headInvalidates:
		if !h.store.dropIfStored(old) {
			return
		}
		if ce := h.logger.Check(zapcore.DebugLevel, "HEAD response shows the stored GET response is out of date; dropped it"); ce != nil {
			ce.Write(zap.String("key", old.key), zap.String("etag", head.Get("Etag")), zap.String("content_length", head.Get("Content-Length")))
		}
	}
}

// asGET returns r, or a shallow copy of it with the method GET: the
// request a stored GET response answered, for Storable.
func asGET(r *http.Request) *http.Request {
	if r.Method == http.MethodGet {
		return r
	}
	r2 := r.WithContext(r.Context())
	r2.Method = http.MethodGet
	return r2
}

// revalidationRequest is r turned into the cache's conditional request for
// e (RFC 9111 §4.3.1): the client's If-None-Match and If-Modified-Since
// removed (the cache evaluates them against what it then holds), the
// stored request's Vary fields, and the stored validators. The client's
// If-Match and If-Unmodified-Since stay: they are the origin's to evaluate
// (§4.3.2), before the cache's If-None-Match (RFC 9110 §13.2.2), so a 304
// means they held and a 412 that they did not. A Range for the whole body
// is removed with its If-Range (a new 200 answers it as a 206); another
// Range stays, with its If-Range, so that a new version of a large object
// is not sent whole for a small range: the origin answers the range (a
// 206 of a new version goes to the client as it is), or 304.
func revalidationRequest(r *http.Request, e *entry) *http.Request {
	r2 := r.Clone(r.Context())
	var ifRange []string
	if asksForWhole(r) {
		delete(r2.Header, "Range")
	} else if len(r.Header["Range"]) > 0 {
		ifRange = slices.Clone(r.Header["If-Range"])
	}
	for _, f := range e.vary {
		if v := e.reqVary.Values(f); v != nil {
			r2.Header[f] = v
		} else {
			delete(r2.Header, f)
		}
	}
	SetConditionalHeaders(&e.header, r2.Header)
	if ifRange != nil {
		r2.Header["If-Range"] = ifRange
	}
	return r2
}

// revalidateInBackground refreshes e once (per key at a time), on a request
// of its own that outlives the client's: its context keeps the values of
// the client's but not its cancellation, has a fresh replacer and vars,
// and ends at its timeout. It outlives a config reload too, as the
// requests of the old config do, so that frequent reloads do not keep
// entries from being refreshed; what it stores goes to the store, which
// the new config shares when its cache is configured alike.
func (h *Handler) revalidateInBackground(r *http.Request, e, record *entry, next caddyhttp.Handler, epoch uint64) {
	if !h.bg.start(e.key, h.now()) {
		return
	}
	e.body.acquire() // the caller holds one: this cannot fail

	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), backgroundTimeout)
	r2 := r.Clone(ctx)
	r2.Body = http.NoBody
	r2.ContentLength = 0
	// A refresh of the stored GET response, whatever the client asked:
	// a HEAD, a Range or the client's own preconditions would get an
	// answer that cannot be stored.
	r2.Method = http.MethodGet
	for _, f := range [...]string{"Range", "If-Range", "If-None-Match", "If-Modified-Since", "If-Match", "If-Unmodified-Since"} {
		delete(r2.Header, f)
	}
	r2, client := backgroundRequest(r2, h.clientKeys)

	urlKey := e.key
	if record != nil {
		urlKey = record.key
	}
	x := &exchange{
		fwd:        "stale",
		stale:      e,
		record:     record,
		rq:         noRequestControl,
		urlHash:    xxhash.Sum64String(urlKey),
		urlKey:     []byte(urlKey),
		background: true,
		client:     client,
		epoch:      epoch,
	}
	if len(e.preset.s) > 0 {
		x.preset = e.preset.header()
	}
	go func() {
		defer h.bg.wg.Done() // last: after the log lines, which tests read once wait returns
		failed := true       // unless forward returns
		defer func() {
			// After the calls deferred below (wg.Done comes last): a
			// failure's backoff is in place before the key is free to be
			// refreshed again.
			n := h.bg.done(e.key, failed, h.now())
			if n < 0 {
				if ce := h.logger.Check(zapcore.InfoLevel, "background revalidation succeeded again"); ce != nil {
					ce.Write(zap.String("key", e.key), zap.Int("failures", -n))
				}
			}
		}()
		defer e.body.release()
		defer cancel()
		defer func() {
			v := recover()
			if v == http.ErrAbortHandler {
				// reverse_proxy gives up on a body it cannot finish
				// reading (the origin went away, or the timeout).
				h.logger.Debug("background revalidation aborted", zap.String("key", e.key))
			} else if v != nil {
				h.logger.Error("background revalidation panicked",
					zap.Any("error", v), zap.ByteString("stack", debug.Stack()))
			}
		}()
		err := h.forward(&discardWriter{}, r2, next, x)
		failed = err != nil || isServerError(x.rec.status)
		level, msg := zapcore.DebugLevel, "background revalidation"
		if failed && x.outcome != outStaleIfError && !h.bg.failing(e.key) {
			// Nobody else hears of it: its client had the stale response.
			// (One served under stale-if-error is logged as such.) Once a
			// streak: the next refreshes of the key wait a backoff, and
			// the end of the streak is logged.
			level, msg = zapcore.WarnLevel, "background revalidation failed; the stale response stays, and the key is refreshed again after a backoff (1s, doubling up to 30s while it fails)"
		}
		if ce := h.logger.Check(level, msg); ce != nil {
			ce.Write(zap.String("key", e.key), zap.Int("status", x.rec.status), zap.Error(err))
		}
	}()
}

// backgroundRequest readies r2, a clone of a client's request (a GET,
// on a context that keeps the client's values), to go through the
// handlers after the cache after the client's request is over. It is a
// request of its own, as Caddy prepares one: its placeholders read r2
// (what the handlers after the cache rewrite in it), and it has its own
// vars, log fields and route groups, and no hold on the client's
// connection (idle timeouts). It keeps what the handlers before the cache
// set, which those after it build the response from: the URI before any
// rewrite ({http.request.orig_uri}), a copy of the vars (the site's root
// for file_server and php_fastcgi), and the client's values of the
// placeholders in keys (map outputs, matcher captures, the authenticated
// user), read here, on the client's goroutine. The client's replacer is
// not asked from the refresh's goroutine: its providers run on the
// client's request (a map output reads {http.request.uuid}, which writes
// the client's vars and log fields while Caddy logs the client). A
// placeholder the refresh asks for that neither it nor keys knows is
// learned into keys, and the refresh is not stored (see clientValues).
// Nothing it does reaches the client's request.
func backgroundRequest(r2 *http.Request, keys *clientKeys) (*http.Request, *clientValues) {
	ctx := caddyhttp.ContextWithIdleTimeouts(r2.Context(), nil, nil)
	clientVars, _ := ctx.Value(caddyhttp.VarsCtxKey).(map[string]any)
	clientRepl, _ := ctx.Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	srv, _ := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)

	// PrepareRequest takes the request it is given as the original: give
	// it the client's, then put the refresh's method and URI back.
	method, u, uri := r2.Method, r2.URL, r2.RequestURI
	if orig, ok := ctx.Value(caddyhttp.OriginalRequestCtxKey).(http.Request); ok && orig.URL != nil {
		r2.Method, r2.URL, r2.RequestURI = orig.Method, orig.URL, orig.RequestURI
	}
	repl := caddy.NewReplacer()
	r3 := caddyhttp.PrepareRequest(r2.WithContext(ctx), repl, nil, srv)
	r3.Method, r3.URL, r3.RequestURI = method, u, uri

	vars, _ := r3.Context().Value(caddyhttp.VarsCtxKey).(map[string]any)
	for k, v := range clientVars {
		if _, set := vars[k]; !set && k != "uuid" { // a request ID is the request's own
			vars[k] = v
		}
	}
	client := &clientValues{keys: keys, values: make(map[string]clientValue)}
	if clientRepl != nil {
		for _, k := range keys.list() {
			v, known := clientRepl.Get(k)
			client.values[k] = clientValue{v, known}
		}
	}
	repl.Map(client.get)
	return r3, client
}

// clientValues is what a background refresh has of its client's replacer
// values: those of the placeholders earlier refreshes of the handler
// asked for, read on the client's goroutine when the refresh began.
type clientValues struct {
	keys   *clientKeys
	values map[string]clientValue // read only once made
	mu     sync.Mutex
	lack   []string // the placeholders asked for and not in values
}

type clientValue struct {
	v     any
	known bool
}

// get provides the client's value of key to the refresh's replacer,
// after the refresh's own values. A key not read from the client is
// learned, and the refresh marked as lacking it.
func (c *clientValues) get(key string) (any, bool) {
	for _, own := range [...]string{"http.request.", "http.response.", "http.vars."} {
		if strings.HasPrefix(key, own) {
			return nil, false // the refresh's own, or unknown
		}
	}
	if isRoundTripKey(key) {
		return nil, false // the refresh's own round trip's, or none
	}
	if v, ok := c.values[key]; ok {
		return v.v, v.known
	}
	c.keys.learn(key)
	c.mu.Lock()
	if len(c.lack) < maxClientKeys {
		c.lack = append(c.lack, key)
	}
	c.mu.Unlock()
	return nil, false
}

// lacking reports whether the refresh asked for a client value it did
// not have (false for nil: not a refresh).
func (c *clientValues) lacking() bool {
	if c == nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.lack) > 0
}

func (c *clientValues) missed() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.lack)
}

// maxClientKeys bounds the placeholders a handler learns (a config names
// a few; a placeholder name built per request would otherwise grow the
// list without end). Past it, refreshes that ask for others are never
// stored, and their clients' requests revalidate in the foreground once
// stale-while-revalidate runs out.
const maxClientKeys = 64

// clientKeys are the placeholders background refreshes of a handler have
// asked for that only a client's request knows.
type clientKeys struct {
	mu   sync.Mutex
	keys []string
}

func (k *clientKeys) learn(key string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.keys) < maxClientKeys && !slices.Contains(k.keys, key) {
		k.keys = append(k.keys, key)
	}
}

func (k *clientKeys) list() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.keys)
}

// background tracks the background revalidations of a handler: at most
// one per key at a time, and after a failed one (the origin down, or
// answering 5xx) none for that key until its backoff passes, so that an
// outage does not turn every stale hit into a connection attempt and a
// warning.
type background struct {
	mu     sync.Mutex // protects keys and failed
	keys   map[string]struct{}
	failed map[string]refreshBackoff
	wg     sync.WaitGroup
}

// refreshBackoff is a key's streak of failed refreshes.
type refreshBackoff struct {
	failures int
	delay    time.Duration // since the last failure
	until    time.Time     // no refresh before
}

// The first failed refresh of a key holds its next one back for
// minRefreshBackoff, each further one for twice as long as the one
// before, up to maxRefreshBackoff.
const (
	minRefreshBackoff = time.Second
	maxRefreshBackoff = 30 * time.Second
	// maxFailedKeys bounds the keys whose failures are remembered (about
	// 200 bytes each with their key); a new one past it takes the place
	// of one of them, chosen by the map's random order (a key whose
	// backoff has passed if one of the first few is).
	maxFailedKeys = 16384
)

// start claims key at now; false when it is already being revalidated,
// or its last refresh failed less than its backoff ago.
func (b *background) start(key string, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, busy := b.keys[key]; busy {
		return false
	}
	if f, ok := b.failed[key]; ok && now.Before(f.until) {
		return false
	}
	b.keys[key] = struct{}{}
	b.wg.Add(1)
	return true
}

// done releases key, whose refresh failed or not at now, and returns the
// key's failures in a row (a success returns those it ends, negated). The
// caller then calls b.wg.Done.
func (b *background) done(key string, failed bool, now time.Time) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.keys, key)
	f := b.failed[key]
	if !failed {
		delete(b.failed, key)
		return -f.failures
	}
	f.failures++
	f.delay = min(max(2*f.delay, minRefreshBackoff), maxRefreshBackoff)
	f.until = now.Add(f.delay)
	if b.failed == nil {
		b.failed = make(map[string]refreshBackoff)
	}
	if _, ok := b.failed[key]; !ok && len(b.failed) >= maxFailedKeys {
		b.evictFailed(now)
	}
	b.failed[key] = f
	return f.failures
}

// evictFailed forgets one remembered failure to make room: the first
// whose backoff has passed among a few in the map's (random) order, else
// the first of them. Callers hold b.mu.
func (b *background) evictFailed(now time.Time) {
	victim, seen := "", 0
	for k, f := range b.failed {
		if victim == "" || !now.Before(f.until) {
			victim = k
			if !now.Before(f.until) {
				break
			}
		}
		if seen++; seen == 8 {
			break
		}
	}
	delete(b.failed, victim)
}

// failing reports whether key's last refresh failed (a streak goes on).
func (b *background) failing(key string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	_, ok := b.failed[key]
	return ok
}

// wait blocks until no revalidation runs (tests, benchmarks).
func (b *background) wait() { b.wg.Wait() }
