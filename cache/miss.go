package cache

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// This file is the path of a request the store cannot answer: the
// exchange with the origin (a miss, a revalidation, a background
// refresh), coalescing with other requests for the same key, the
// decision at the response header (onHeader) and what is stored at its
// end (finish).

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
	// client is what a background refresh has of its client's replacer
	// values; nil otherwise.
	client *clientValues

	r        *http.Request // the client's request
	cond     bool          // the forwarded request is the cache's conditional
	store    bool          // the response may be stored if it allows
	untried  bool          // not to be stored for min_uses, nor coalesced
	firstUse bool          // the URL's first miss, as far as the use counts tell
	leading  bool          // leads the coalesced miss lead, under flightKey
	// background: no client, a stale-while-revalidate refresh. (The
	// bools sit together: the exchange, with its recorder, stays within
	// the 1024-byte size class.)
	background bool
	// endedMark is the count of ended flights of its URL's slot when the
	// request looked in the store (flightGroup.endedMark); 16 bits, in
	// what was padding (the exchange fills a 1 KiB size class).
	endedMark uint16
	flightKey string
	lead      flight
	// filling is the entry a leader answered its waiters with while its
	// body arrives (see streamToWaiters); fill is that body's progress.
	filling *entry
	fill    bodyFill
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
	fillEnded             bool // endFill ran
	// kept is what the store made of the answer, for a background
	// refresh's outcome (see revalidateInBackground).
	kept     keptAs
	wholeLen int64 // the length a whole 206 declared, which its body must have
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
	// againVars are the vars of the send again (askAgain), whose handlers
	// may declare a cookie of their own (see withoutProxyCookie); nil
	// before it.
	againVars map[string]any

	// result is the requests_total counter the exchange is counted under,
	// once, when it ends; nil for a background refresh (no request).
	result prometheus.Counter
}

func (x *exchange) onHeader(rec *recorder) { x.h.onHeader(x, rec) }
func (x *exchange) awaited() bool          { return x.leading && x.h.flights.joined(&x.lead) }
func (x *exchange) onBody(rec *recorder)   { x.h.streamToWaiters(x, rec) }
func (x *exchange) spareFill() *bodyFill   { return &x.fill } // unpublished (see streamToWaiters)

func (x *exchange) onOverflow() {
	if x.filling != nil {
		x.fill.fail() // (its readers; not a writer of the recorder's own, see recouple)
	}
	x.releaseUnanswered(x.h, x.rec.status)
	x.unrecorded()
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

// keptAs is what the store made of an exchange's answer.
type keptAs uint8

const (
	keptNothing    keptAs = iota
	keptStored            // a new entry the store took, or a 304's update of the stored one
	keptSuperseded        // a 304 for an entry purged or replaced meanwhile: nothing to update
	// keptRefused: storable, but found without room once complete (the
	// arena's, or the store's queue of sets full; or a purge came first),
	// as recorder.refused tells of a refusal while it records.
	keptRefused
)

type outcome int

const (
	outPass         outcome = iota // the response goes to the client
	outRefresh                     // 304 to our conditional: serve the updated entry
	outStaleIfError                // 5xx: serve the stale entry (RFC 5861 §4)
	outRetry                       // 304 not selecting the stored response: ask again
	outFreshen                     // 200 to a HEAD: update or invalidate the stored GET (RFC 9111 §4.3.5)
)

// unrecorded is called when the answer of the fill x leads turns out not
// to be recorded (not storable, or past what may be buffered): nobody but
// its client can read it now, so the fill ends with its client from then
// on (see forward), at once if the client has gone, as a plain
// reverse_proxy request does, rather than at the origin's next write or
// its end (a server-sent event stream may write nothing for minutes).
func (x *exchange) unrecorded() {
	f := x.fillCtx
	if f == nil || f.clientOnly.Swap(true) {
		return
	}
	if x.r.Context().Err() != nil {
		f.cancel()
	}
}

// release publishes e to the waiters of a coalesced miss (nil: they go to
// the origin themselves). Only the first call counts.
func (x *exchange) release(h *Handler, e *entry) {
	if x.leading {
		h.flights.finish(x.flightKey, x.urlHash, &x.lead, e, x.rec.status)
	}
}

// releaseUnanswered releases the waiters of x, whose response (of
// status) cannot answer them, to the origin; a server error as a failure
// (see releaseFailed).
func (x *exchange) releaseUnanswered(h *Handler, status int) {
	if isServerError(status) {
		x.releaseFailed(h, status)
	} else {
		x.release(h, nil)
	}
}

// releaseFailed is release when the origin failed: no response (status
// 0), or a server error. When x revalidates, its waiters are told so
// (see flightGroup.fail), so that their requests may take their stale
// response; otherwise (a miss, or a send again after the stored response
// proved outdated, askAgain) they have none, and ask the origin.
func (x *exchange) releaseFailed(h *Handler, status int) {
	if x.stale == nil {
		x.release(h, nil)
	} else if x.leading {
		h.flights.fail(x.flightKey, x.urlHash, &x.lead, status)
	}
}

// forward sends r (or the cache's conditional version of it) to next
// through a recorder, streams the answer to w, and stores it if allowed.
func (h *Handler) forward(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, x *exchange) error {
	defer x.count()
	x.r = r
	// Before the fill begins: a purge of its URL that comes meanwhile
	// must reach its key (see store.fetchBegins).
	h.store.fetchBegins(x.urlKey, x.urlHash)
	defer h.store.fetchEnds(x.urlHash)
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
	// (Not a request marked private before the cache: its answer is
	// never stored, so its conditionals go as they came, for a 304.)
	if x.store && !x.cond && !x.untried && !x.background && fetchWhole(r) && !x.hinted(h) &&
		!h.presetKeepsOut(x.preset) && !h.asIs.skips(x.flightHash(), r, h.hintGen, h.now) {
		out = withoutConditionals(out)
		x.condDropped, x.fetchedWhole = true, true
	}

	// A miss min_uses will not store flies alone. Others could be
	// answered from it only if it were stored after all, and leading
	// would cost it a fill context and a watch on its client: most of
	// what such misses, on URLs mostly asked for once, cost over plain
	// reverse_proxy (bench/README.md). A concurrent miss of its URL
	// counts a later use, and leads a flight of its own.
	// Nor does a request marked private before the cache (a logged-in
	// user's, presetKeepsOut), a miss or a revalidation: what it gets is
	// never stored and answers it alone, and the requests waiting on it
	// would each go to the origin after.
	if h.coalesce && x.store && !x.untried && !x.background && !x.neverCollapsed(h) && !x.hinted(h) &&
		!h.presetKeepsOut(x.preset) {
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
				// So may a flight of the URL that ended between this
				// request's lookup and its join (endedMark).
				if !rejoin || h.flights.endedMark(x.urlHash) != x.endedMark {
					v := h.store.get(x.flightHash(), x.flightKeyBytes())
					if v != nil && v.record && x.variantKey == nil {
						var join bool
						if v, join = h.followRecord(x, v); join {
							continue // the variant's flight, which another leads
						}
					}
					if v != nil && !v.record && h.serveCollapsed(w, x, v, v.status, false) {
						h.flights.finish(x.flightKey, x.urlHash, &x.lead, v, v.status)
						return nil
					}
				}
				break
			}
			e, failed, status, err := f.wait(r.Context(), answering, h.coalesceWait)
			h.flights.left(x.flightKey, f)
			if err != nil {
				return nil // the client is gone
			}
			if h.serveCollapsed(w, x, e, status, true) {
				return nil
			}
			if failed {
				if answered, err := h.answerOriginFailure(w, x, status, true, nil); answered {
					return err
				}
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
			// (The closure holds no more than it must: one allocation of
			// every miss that leads, within the 48-byte size class.)
			stop := context.AfterFunc(r.Context(), func() {
				f := x.fillCtx // neither it nor flightKey changes from here
				if h.flights.abandon(x.flightKey, &x.lead) || f.clientOnly.Load() {
					f.cancel()
					return
				}
				watchAbandoned(ctx, x, f, h.store.arena(), h.coalesceWait, h.abandonLimit)
			})
			defer stop()
			out = out.WithContext(ctx)
		}
	}

	rec := &x.rec
	rec.init(w, h.now)
	// Last of all, once the request is over (and not after a panic: who
	// knows what the next handler left running).
	over := false
	defer func() {
		if over {
			rec.recycleHeader()
		}
	}()
	rec.presetNames = h.presetNames
	if x.fillCtx != nil {
		rec.progress = &x.fillCtx.recorded
	}
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
	h.finishTrailers(x)
	if x.outcome == outRetry && err == nil {
		err = h.askAgain(out.Context(), r, vars, next, x)
	}
	err = h.finish(w, x, rec, err)
	over = true
	return err
}

// serveNext runs next for the forwarded request. A client that has its
// 304 (recorder.notModified), or gets a stored response instead of an
// origin's error (recorder.answered), has all it gets from this response:
// when the recorder stops the rest of a body it will not store, or the
// origin breaks it off, reverse_proxy panics with http.ErrAbortHandler,
// which would reset the client's finished response (HTTP/2) or its
// connection, or leave it without any; the request ends as the recorder's
// errUnread instead, and nothing is stored. So does a background refresh
// whose body the recorder stopped reading (recorder.refreshUnread): the
// origin answered it, which is no failed refresh.
//
// When it returns, the body others read as it arrived is complete or
// broken off (endFill).
func (h *Handler) serveNext(next caddyhttp.Handler, x *exchange, out *http.Request) (err error) {
	rec := &x.rec
	defer func() {
		v := recover()
		rec.settleTrailers()
		x.endFill()
		rec.endOwnFill()
		if v != nil {
			if v != http.ErrAbortHandler || !rec.notModified && !rec.answered && !rec.refreshUnread() {
				// Nothing is stored: the waiters go now, not once the
				// deferred dropBody has waited for the client's writer.
				x.release(h, nil)
				panic(v)
			}
			err = errUnread
		}
	}()
	return next.ServeHTTP(rec, out)
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
		ce.Write(h.entryKeyField(x.stale), zap.String("etag", rec.header.Get("Etag")))
	}
	if !h.presetKeepsOut(x.preset) { // (what a user's request gets tells nothing of the others')
		h.store.dropIfStored(x.stale)
	}
	x.stale, x.cond, x.outcome = nil, false, outPass
	out := missRequest(r)
	x.sends(r, out)
	rec.reset()
	x.requestTime = h.now()
	if vars != nil {
		ctx = context.WithValue(ctx, caddyhttp.VarsCtxKey, vars)
		x.againVars = vars
	}
	err := h.serveNext(next, x, out.WithContext(ctx))
	h.finishTrailers(x)
	return err
}

// finishTrailers copies the trailer fields to the client (see
// recorder.finishTrailers). A response with trailers is not stored (see
// finish): the waiters go, and the budget is given back, now, not once
// the client's writer is done.
func (h *Handler) finishTrailers(x *exchange) {
	rec := &x.rec
	if rec.hasTrailers() && rec.writer != nil {
		x.release(h, nil)
		rec.unreserve()
	}
	rec.finishTrailers()
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

// followRecord returns the stored variant of record, a URL's variant
// record that x, a miss of the URL leading its flight, found when it
// looked in the store again (the flight that stored both ended after x's
// first lookup), that x's request selects; nil if it is not stored. A miss
// (not a revalidation, which keeps its own status and key) is then a miss
// of its variant (vary-miss): its flight moves to the variant's key, where
// the requests of the variant that look in the store after it, and find
// the record, join it (a review: they led a second origin request); or,
// when another request leads the variant's flight already and nobody
// waits for x's, x leaves its own and reports join, to join that one (a
// review of the first version: a second origin request again). What it
// fetches is stored under the record's generation (varyRecord); the
// requests that joined under the URL's key (a window of a store lookup)
// wait on, and learnVariant any other variant.
func (h *Handler) followRecord(x *exchange, record *entry) (v *entry, join bool) {
	key := appendVariantKey(nil, x.urlKey, record.gen, requestVaryKey(record.vary, x.r))
	hash := keyHash(key)
	if v := h.store.get(hash, key); v != nil || x.stale != nil {
		return v, false
	}
	x.fwd = "vary-miss"
	flightKey := string(key)
	switch {
	case h.flights.rekey(x.flightKey, flightKey, &x.lead):
		x.flightKey = flightKey
	case h.flights.yield(x.flightKey, &x.lead):
		join = true
		x.mark = h.store.keyMark(x.urlHash) // as a waiter's (see outdated)
	default:
		return nil, false // others wait for x's flight: it goes on under the URL's key
	}
	x.record, x.variantKey, x.variantHash = record, key, hash
	return nil, join
}

// neverCollapsed reports whether no response of a coalesced flight could
// answer this request (see collapsible): the client asked for validation,
// or the stored response it revalidates must be validated on every use
// (no-cache, max-age=0), as the refreshed one will be. Waiting would only
// delay its own request to the origin by one round trip.
func (x *exchange) neverCollapsed(h *Handler) bool {
	return x.rq.NoCache || x.stale != nil && h.freshness(x.stale).Lifetime <= 0
}

// flightKeyBytes is flightKey as the request's bytes.
func (x *exchange) flightKeyBytes() []byte {
	if x.variantKey != nil {
		return x.variantKey
	}
	return x.urlKey
}

// flightHash is the hash of the key a coalesced miss of x flies under:
// the variant's, when the URL's responses are known to vary.
func (x *exchange) flightHash() uint64 {
	if x.variantKey != nil {
		return x.variantHash
	}
	return x.urlHash
}

// count counts the exchange under its result, if it is a request's.
func (x *exchange) count() {
	if x.result != nil {
		x.result.Inc()
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
		!Selects304(&x.stale.header, rec.header) && !h.presetKeepsOut(x.preset) {
		// A part of another version: the stored response is outdated.
		h.store.dropIfStored(x.stale)
	}
	// A background refresh's server error is the origin failing to
	// respond (RFC 9111 §4.3.3 lets the cache act so): the stale response
	// stays within stale-while-revalidate, rather than the error stored
	// over it (a review: a storable 503 served as a hit to the next
	// clients, while the refresh's warning said the stale response stays).
	if x.stale != nil && isServerError(status) && (x.background || h.staleIfErrorOK(x, rec.responseTime)) {
		if !x.background { // a refresh's failure is logged as one (revalidateInBackground)
			h.logOriginError(zapcore.WarnLevel, "origin answered with a server error; served the stored response (stale-if-error)", x, zap.Int("status", status))
		}
		rec.pass, rec.buffer, rec.answered = false, false, true
		x.outcome = outStaleIfError
		return
	}
	if x.stale != nil && x.r.Method == http.MethodHead && status == http.StatusOK {
		x.outcome = outFreshen // the 200 goes to the client as it is
	}
	var detail string
	if x.store {
		origin := x.withoutProxyCookie(rec.header)
		hdr := withPresetCopy(origin, x.preset)
		reason, rc, lifetime, heuristic, fields := h.whyNotStored(x, status, hdr, origin)
		// A request whose handlers before the cache made the answer not
		// storable for it alone (header @loggedin Cache-Control private,
		// matching its cookie) tells nothing of the key's other requests.
		// So does one marked private or no-store there (presetKeepsOut),
		// cookie or not: a stored entry it revalidates was stored by a
		// request not so marked, and such requests lead no flight for a
		// hint to spare them.
		if reason != "" && x.preset != nil && (len(x.r.Header["Cookie"]) > 0 || h.presetKeepsOut(x.preset)) {
			asSent, _, _, _, _ := h.whyNotStored(x, status, origin, nil)
			x.ownPreset = asSent == ""
		}
		scope := hintNone
		if !x.ownPreset {
			scope = x.tellsUncacheable(reason, status, hdr, rc)
		}
		if scope != hintNone {
			h.noLongerStored(x, scope, rec.responseTime)
		}
		if reason == "" && x.untried {
			// Storable, but asked for too seldom so far (and nobody
			// waits for it: see forward): streamed without being buffered.
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
			x.fresh.Heuristic = heuristic
			if h.capped(x.fresh).TTL(rec.responseTime) <= 0 {
				// Stale on arrival (no-cache, max-age=0, a heuristic
				// lifetime under heuristic_max off): no waiter could
				// be answered with it, so they go to the origin now
				// rather than wait for its end, which for a live stream
				// (server-sent events) may never come.
				x.releaseUnanswered(h, status)
			}
		} else {
			x.releaseUnanswered(h, status)
			if ce := h.logger.Check(zapcore.DebugLevel, "response not stored"); ce != nil {
				ce.Write(zap.String("host", x.r.Host), zap.String("uri", x.r.RequestURI), zap.Int("status", status), zap.String("reason", reason),
					zap.Bool("skip_coalescing", scope != hintNone && x.stale == nil)) // its key's next requests (or those like it), for hintTTL
			}
		}
	} else {
		x.release(h, nil)
	}
	if !rec.buffer {
		x.unrecorded()
	}
	if rec.pass && !x.background {
		if x.rangeDropped && status == http.StatusOK && !rewritesBody(rec.w, rec.header.Get("Content-Type")) {
			rec.contentRange = wholeContentRange(x.r, rec.header)
		}
		// The origin did not see the client's conditionals: the cache
		// evaluates them for any 2xx (RFC 9110 §13.2.1), a 206 too (of
		// a version its validators did not select: If-None-Match and
		// If-Modified-Since come before Range, §13.2.2).
		if x.condDropped && rec.status >= 200 && rec.status < 300 {
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

// originFailure reports whether err, returned by the handlers after the
// cache without a response, tells that the origin failed, and with what
// status: reverse_proxy's 502, 503 and 504 (the origin unreachable, or
// no upstream available: status 0, no response), a 500 (a server error,
// as if the origin had answered one: not turned into must-revalidate's
// 504), or an error without a status (Caddy answers it with a 500: no
// response). Any handler's error of those statuses counts (an error
// directive's 503 cannot be told from reverse_proxy's). Not another
// status (an error directive's 410, file_server's 404), which goes to
// the client as it came, nor a cancelled request (its context's error,
// or reverse_proxy's 499 error; mostly reverse_proxy writes a 499 instead),
// after which a waiter asks the origin itself (a review: waiters got a
// 504, or the stale response, when a config unload ended the fill).
func originFailure(err error) (failed bool, status int) {
	if errors.Is(err, context.Canceled) {
		return false, 0
	}
	if he := (caddyhttp.HandlerError{}); errors.As(err, &he) {
		switch {
		case he.StatusCode == http.StatusInternalServerError:
			return true, he.StatusCode
		case he.StatusCode != 0 && !isServerError(he.StatusCode):
			return false, 0
		}
	}
	return true, 0
}

// answerOriginFailure answers the request of x, whose stored response
// x.stale the origin failed to validate, as RFC 5861 and 9111 say: with
// the stale response where stale-if-error allows it, or with a 504 when
// the stale response must be revalidated and no response came (status
// 0; a server error goes to the client as it is). collapsed: the request
// waited for another's revalidation, which failed with status; cause is
// the leader's own error. It reports whether it answered, and the error
// for Caddy to write (the 504).
func (h *Handler) answerOriginFailure(w http.ResponseWriter, x *exchange, status int, collapsed bool, cause error) (bool, error) {
	if x.stale == nil {
		return false, nil
	}
	now := h.now()
	if h.staleIfErrorOK(x, now) {
		if !collapsed {
			// The client gets a response, so Caddy logs no error: say
			// what the stale one hides.
			h.logOriginError(zapcore.WarnLevel, "origin failed; served the stored response (stale-if-error)", x, zap.Error(cause))
		}
		x.result = h.m.stale
		st := Status{Fwd: "stale", FwdStatus: status, Collapsed: collapsed, TTL: h.ttl(x.stale, now), HasTTL: true, Detail: "stale-if-error"}
		h.serveEntry(w, x.r, x.stale, st, now)
		return true, nil
	}
	if status == 0 && x.stale.rc.MustRevalidateShared() && h.ttl(x.stale, now) <= 0 {
		// RFC 9111 §5.2.2.2, §5.2.2.8, §5.2.2.10: a stale response that
		// must be revalidated yields 504 when validation fails. (One
		// with no-cache gets the origin's error, and so does a fresh
		// one a request's no-cache sent to the origin.) An error, as
		// reverse_proxy's 502 would have been, so that Caddy logs it
		// and the site's handle_errors routes answer it.
		h.m.errors.Inc()
		x.result = nil // counted as an error
		h.setCacheStatus(w.Header(), Status{Fwd: x.fwd, Collapsed: collapsed, Key: h.statusKey(x.urlKey), Detail: "must-revalidate"})
		if cause == nil {
			cause = errors.New("the revalidation this request waited for got no response")
		}
		// (caddyhttp.Error would keep reverse_proxy's 502 of cause.)
		he := caddyhttp.Error(http.StatusGatewayTimeout, nil)
		he.Err = fmt.Errorf("response_cache: origin failed; a stored response that must be revalidated answered 504: %w", cause)
		return true, he
	}
	return false, nil
}

// finish completes a forwarded exchange once next has returned.
func (h *Handler) finish(w http.ResponseWriter, x *exchange, rec *recorder, err error) error {
	now := h.now()
	if !rec.wroteHeader {
		if err != nil {
			// The origin could not be reached, or a handler failed before
			// answering. An affinity cookie the proxy issued goes to the
			// client with whatever it gets, as without the cache (Caddy
			// writes its error with the header handlers set).
			failed, status := originFailure(err)
			if failed {
				x.releaseFailed(h, status)
			} else {
				x.release(h, nil)
			}
			if !x.background {
				x.passProxyCookie(w.Header(), rec.header)
			}
			if failed && x.stale != nil && !x.background {
				if answered, herr := h.answerOriginFailure(w, x, status, false, err); answered {
					return herr
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
		e, shared := h.refresh(x, rec, x.withoutProxyCookie(rec.header))
		if shared {
			x.release(h, e)
		}
		x.release(h, nil) // not storable: the waiters ask the origin themselves
		if !x.background {
			x.passProxyCookie(w.Header(), rec.header)
			passNamedFields(w.Header(), x.withoutProxyCookie(rec.header), e.rc)
			st := Status{Fwd: x.fwd, FwdStatus: http.StatusNotModified, TTL: h.ttl(e, now), HasTTL: true}
			h.serveEntry(w, x.r, e, st, now)
		}
		return nil
	case outStaleIfError:
		x.releaseFailed(h, rec.status)
		if !x.background {
			x.result = h.m.stale
			x.passProxyCookie(w.Header(), rec.header)
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
			x.kept = keptRefused
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
		if x.filling != nil && x.leading {
			// Its waiters read the body, not stored, through the fill
			// (endFill): those yet to take their reference to it get
			// the time to, as for a stored one (storeFilled), before the
			// recorder drops it (a waiter scheduled late found it gone
			// and asked the origin itself, and got no trailer fields).
			x.release(h, nil)
			x.lead.drain(time.Second)
		}
	}
	x.release(h, nil)
	if errors.Is(err, errUnread) {
		return nil
	}
	return err
}

// logOriginError logs the failure of x's origin request (its error or
// status), which the cache answered for with a stale response: Caddy
// logs a handler's error only when it gets it. At most one line a second
// (a review: 26,842 lines in 5 s of an origin outage), each with the
// number of such answers not logged since the last one.
func (h *Handler) logOriginError(level zapcore.Level, msg string, x *exchange, failure zap.Field) {
	if !h.logger.Core().Enabled(level) {
		return
	}
	unlogged, ok := h.staleErrors.take(h.now())
	if !ok {
		return
	}
	if ce := h.logger.Check(level, msg); ce != nil {
		ce.Write(zap.String("host", x.r.Host), zap.String("uri", x.r.RequestURI), h.keyField(string(x.urlKey)), failure,
			zap.Int64("unlogged", unlogged))
	}
}

// logPace lets one log line through a second and counts the others.
type logPace struct {
	// base is when the pace began: times are measured from it, on the
	// monotonic clock, so that a step of the wall clock (an NTP
	// correction) does not hold lines back for its length (a review).
	base     time.Time
	next     atomic.Int64 // nanoseconds after base from which the next line may go
	unlogged atomic.Int64
}

func newLogPace(now time.Time) *logPace { return &logPace{base: now} }

// take reports whether a line may be written at now and, if so, how many
// were held back since the last.
func (p *logPace) take(now time.Time) (unlogged int64, ok bool) {
	t, next := int64(now.Sub(p.base)), p.next.Load()
	if t < next || !p.next.CompareAndSwap(next, t+int64(time.Second)) {
		p.unlogged.Add(1)
		return 0, false
	}
	return p.unlogged.Swap(0), true
}

// keyField is a log line's field for the cache key of a URL, urlKey. A
// key template other than the default may name a cookie or a credential
// ({http.request.cookie.session}, {http.request.header.Authorization}),
// which Caddy's own logs leave out unless log_credentials is on: such a
// key is logged as its hash, key_hash, beside the line's host and URI, at
// every level. The default key, the request's URL, is logged as is, as
// Caddy's access log does.
func (h *Handler) keyField(urlKey string) zap.Field {
	if h.Key == DefaultKey {
		return zap.String("key", urlKey)
	}
	return zap.String("key_hash", logHash(urlKey))
}

// entryKeyField is a log line's field for the key of an entry: its URL's
// (keyField) and, for a variant, variant_hash, a hash of its whole key,
// which holds the request values of its Vary fields (Authorization and
// Cookie among them: a review found them in debug lines).
func (h *Handler) entryKeyField(e *entry) zap.Field {
	u := e.urlKey()
	if u == e.key {
		return h.keyField(u)
	}
	return zap.Inline(variantKeyLog{h.keyField(u), zap.String("variant_hash", logHash(e.key))})
}

// variantKeyLog adds a variant's two key fields to a log line.
type variantKeyLog [2]zap.Field

func (v variantKeyLog) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	v[0].AddTo(enc)
	v[1].AddTo(enc)
	return nil
}

// logHash is the hash of a key as log lines show it: keyed with
// logHashKey, so that lines of one process can be matched with each other
// but a log's reader cannot test guesses of what a key holds (a review:
// unkeyed, a Bearer token was confirmed from a variant_hash in 0.13 s).
func logHash(key string) string {
	m := hmac.New(sha256.New, logHashKey[:])
	m.Write([]byte(key))
	var sum [sha256.Size]byte
	return hex.EncodeToString(m.Sum(sum[:0])[:8])
}

// logHashKey is logHash's key, new in every process.
var logHashKey = func() (k [32]byte) {
	rand.Read(k[:]) // never fails (crypto/rand)
	return k
}()

// storeFilled offers e, the entry of x's complete response, to the store
// and answers x's waiters with it.
func (h *Handler) storeFilled(x *exchange, rec *recorder, e *entry) {
	// False once the store forgot h's key template (h's config is
	// unloaded): invalidations would not reach what it stored.
	keep := h.keyUse.markStored()
	if x.newRecord != nil {
		// Only with a variant to store: a record of a response that
		// broke off would orphan the variants of the one it replaced,
		// and one of a variant a purge refuses would stay alone (a
		// review: purged by the variant's tag while it was fetched).
		if keep && (e.epoch == 0 || !h.store.purgedSince(e)) {
			h.store.set(x.newRecord)
		} else {
			x.newRecord.exit()
		}
	}
	// The waiters get e even if the store drops it (frees its body)
	// at once: this keeps the body until they have taken theirs.
	e.body.acquire()
	if !keep {
		e.exit()
	} else if h.store.set(e) {
		x.kept = keptStored
	} else {
		x.kept = keptRefused
		if ce := h.logger.Check(zapcore.DebugLevel, "store dropped the response"); ce != nil {
			ce.Write(h.entryKeyField(e))
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
		h.capped(x.fresh).TTL(rec.responseTime) <= 0 { // stale on arrival: its flight has ended (onHeader)
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
		// The trailer fields no Trailer field announced (streamToWaiters
		// streams no response that announces any); no map without them.
		var tr http.Header
		if x.rec.hasTrailers() {
			tr = sharedTrailers(x.rec.header, &x.rc) // nil if none is shared
		}
		if tr == nil {
			e.body.fill.Store(nil)
		}
		// else the fill stays with the body, which is not stored: the
		// waiters that have yet to read it read it through the fill, and
		// get the trailer fields too.
		x.fill.complete(tr)
	} else {
		x.fill.fail()
		// Now, not once x's own client has what it gets (see decouple):
		// the requests that come meanwhile start a flight of their own.
		x.release(x.h, nil)
	}
}
