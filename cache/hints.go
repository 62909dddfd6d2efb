package cache

import (
	"math"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"go.uber.org/zap/zapcore"
)

// This file remembers keys whose responses were not storable, so that
// their next requests go to the origin at once instead of waiting for
// another request's answer (Varnish's hit-for-miss), per class of
// request (Authorization, cookie, neither).

// uncacheableHints remember, for a while, the flight keys whose last
// response was not storable for a reason of its own (private, no-store,
// no freshness, Vary: *), so that their next requests do not coalesce: a
// request that joins a flight waits for the leader's response header
// before it learns it must go to the origin itself, which doubles its
// time to first byte, and for a busy URL that is never stored (an API
// answering without Cache-Control, a per-user page) that would be every
// concurrent request (Varnish's hit-for-miss); responses found unstorable
// only at their end (too large, trailers) hint too (hintUnstorable). A
// hint skips the wait, and sends a client's conditional miss as it came
// rather than fetch a whole response likely not stored: a response that
// turns out storable is stored, and storing anything under
// the key, or purging it, clears the hint. Hints are not consulted when a
// stale entry is revalidated: its URL was storable, and its refresh is
// what coalescing keeps from stampeding the origin.
//
// The table is the store's, but each handler sees only its own hints (by
// its generation): whether a response is storable depends on the
// handler's config (default_ttl, targeted fields), and the handlers of a
// config being replaced go on answering, and setting hints, until the
// new config takes over. Coalescing is per handler too.
//
// A slot per key hash holds the hash's top 16 bits, the generation (16
// bits) and the expiry in seconds since hintEpoch (32 bits, until 2156);
// a hint another key overwrites is lost (that key coalesces again).
type uncacheableHints struct {
	slots [hintSlots]atomic.Uint64
}

const (
	hintSlots = 1024
	// hintTTL is how long a key's requests go to the origin without
	// waiting for one another after an uncacheable response.
	hintTTL = 2 * time.Minute

	hintTagMask = 1<<64 - 1<<48
)

// hintEpoch is where hint expiries count from.
var hintEpoch = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC).Unix()

// hintGenerations numbers handlers for their hints (see
// uncacheableHints); the 16 bits a slot keeps wrap after 65536 handlers,
// long after the first of them has been unloaded (8 bits would not be: a
// config of 256 handlers would give each, at every reload, its
// predecessor's generation).
var hintGenerations atomic.Uint32

func nextHintGeneration() uint16 { return uint16(hintGenerations.Add(1)) }

// hintScope is whom an uncacheable response speaks for (see
// exchange.tellsUncacheable).
type hintScope uint8

const (
	hintNone      hintScope = iota
	hintLikeThese           // requests like its own (hintClass)
	hintKey                 // every request under its key
)

// Class hints are kept in the slot of the key's hash mixed with one of
// these (hintClass), so that each class of requests has its own: those
// with Authorization (API clients), those with a cookie but no
// Authorization (browsers), and those with neither. An API client's
// answer says nothing of a browser's.
var hintSalts = [...]uint64{0x6a09e667f3bcc909, 0xbb67ae8584caa73b, 0x3c6ef372fe94f82b}

// hintClass returns the hash under which a hint for the requests of r's
// class is kept, for the key hashing to h.
func hintClass(h uint64, r *http.Request) uint64 {
	switch {
	case len(r.Header["Authorization"]) > 0:
		return h ^ hintSalts[2]
	case len(r.Header["Cookie"]) > 0:
		return h ^ hintSalts[1]
	}
	return h ^ hintSalts[0]
}

// hasCredentials reports whether r carries a cookie or Authorization.
func hasCredentials(r *http.Request) bool {
	return len(r.Header["Cookie"]) > 0 || len(r.Header["Authorization"]) > 0
}

// hint remembers, for the handler of generation gen, that a response under
// the key hashing to h, to request r, was not storable at now, for the
// requests that scope names.
func (u *uncacheableHints) hint(h uint64, scope hintScope, r *http.Request, gen uint16, now time.Time) {
	switch scope {
	case hintKey:
		u.set(h, gen, now)
	case hintLikeThese:
		u.set(hintClass(h, r), gen, now)
	}
}

// skips reports whether r, under the key hashing to h, skips coalescing for
// the handler of generation gen: a hint of the key's, or of r's class.
func (u *uncacheableHints) skips(h uint64, r *http.Request, gen uint16, now func() time.Time) bool {
	return u.has(h, gen, now) || u.has(hintClass(h, r), gen, now)
}

// set remembers, for the handler of generation gen, that the key hashing
// to h had an uncacheable response at now.
func (u *uncacheableHints) set(h uint64, gen uint16, now time.Time) {
	exp := now.Add(hintTTL).Unix() - hintEpoch
	if exp <= 0 || exp > math.MaxUint32 {
		return // a clock this cache cannot count with: no hint
	}
	u.slots[h%hintSlots].Store(h&hintTagMask | uint64(gen)<<32 | uint64(exp))
}

// has reports whether the handler of generation gen found the key hashing
// to h uncacheable less than hintTTL before the time now returns (read
// only when the slot holds such a hint).
func (u *uncacheableHints) has(h uint64, gen uint16, now func() time.Time) bool {
	v := u.slots[h%hintSlots].Load()
	if v == 0 || v&hintTagMask != h&hintTagMask || uint16(v>>32) != gen {
		return false
	}
	return now().Unix()-hintEpoch < int64(v&math.MaxUint32)
}

// clear forgets every handler's hints for the key hashing to h, its
// classes' too.
func (u *uncacheableHints) clear(h uint64) {
	u.clearSlot(h)
	for _, salt := range hintSalts {
		u.clearSlot(h ^ salt)
	}
}

// clearSlot forgets the hint for h, if its slot holds one.
func (u *uncacheableHints) clearSlot(h uint64) {
	slot := &u.slots[h%hintSlots]
	if v := slot.Load(); v != 0 && v&hintTagMask == h&hintTagMask {
		slot.CompareAndSwap(v, 0)
	}
}

// clearAll forgets every hint.
func (u *uncacheableHints) clearAll() {
	for i := range u.slots {
		u.slots[i].Store(0)
	}
}

// notFetchedWhole remembers a conditional miss fetched whole (fetchWhole)
// whose response is not stored: for hintTTL, the key's conditional misses
// go as they came, rather than make the origin send a body again for a
// 304 the origin could have sent itself. Not after a server error, which
// may pass (a 503 would keep the URL's conditional misses from being
// stored for hintTTL once the origin is back); a 4xx, which the origin
// means, counts (TestConditionalMissAsItCameNoHint).
//
// Per class of request, as hints are (hintClass), when the request has
// credentials or the answer sets a cookie: a logged-in user's answer says
// nothing of anonymous requests, whose whole answer may be stored.
func (x *exchange) notFetchedWhole() {
	if x.fetchedWhole && !x.ownPreset && !isServerError(x.rec.status) {
		x.h.asIs.hint(x.flightHash(), x.scopeOfUnstored(hintKey), x.r, x.h.hintGen, x.h.now())
	}
}

// scopeOfUnstored narrows scope, whom a response not stored speaks for,
// to the requests like x's when x's request has credentials or the
// answer sets a cookie other than the affinity policy's (see
// tellsUncacheable).
func (x *exchange) scopeOfUnstored(scope hintScope) hintScope {
	if scope == hintKey && (hasCredentials(x.r) || len(x.withoutProxyCookie(x.rec.header)["Set-Cookie"]) > 0) {
		return hintLikeThese
	}
	return scope
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
	case "private", "no-store", "no-freshness", "Vary: *", "trailers", "event-stream", "incremental":
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
			ce.Write(h.entryKeyField(x.stale))
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
