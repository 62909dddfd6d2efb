package cache

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/cespare/xxhash/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// This file revalidates stored responses (RFC 9111 §4.3): the
// conditional request sent for a stale entry, the entry a 304 refreshes,
// and stale-while-revalidate's refreshes in the background, with their
// backoff while the origin fails.

// notModifiedBy reports whether a 2xx with fields hdr satisfies r's
// If-None-Match or If-Modified-Since, which did not go to the origin: the
// client then gets a 304 (RFC 9110 §13.2.2). If-Modified-Since only
// against a Last-Modified: the response is dated now, and an origin that
// sends no Last-Modified would have answered as it did.
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

// noRoomReason is why a response is not stored when the arena has no
// room for its body (see appendAlloc).
const noRoomReason = "no room in memory (the arena is full of bodies still being sent, or fragmented)"

// The Cache-Status details of a storable response streamed without being
// stored for want of memory (recorder.refused).
const (
	refusedBudget = "recording-budget"
	refusedNoRoom = "no-room"
)

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
	// not this one's: the stored response is the others'. (A request
	// whose handlers mark it private, a logged-in user's, does not update
	// it: see below.)
	view, own, preset := hdr, http.Header(nil), http.Header(nil)
	if len(old.preset.s) > 0 {
		preset = old.preset.header()
		view, own = withPresetCopy(hdr, preset), hdr
	}
	reason, rc, lifetime, heuristic := h.judge(asGET(x.r), old.status, view, own, preset, rec.responseTime)
	if reason == "" && x.proxy.madeAfter(rec) {
		reason = madeAfterProxy
	}
	if reason == "" && headerSize(hdr)+int64(old.body.Len()) > h.MaxItemSize {
		// The update's fields would make the stored response larger than
		// max_item_size lets one be.
		reason = "max_item_size"
	}
	if fields, star := ParseVary(view); reason == "" && (star || !equalFields(fields, old.vary)) {
		// A 304 that changes Vary: the entry was chosen for this request
		// by the fields it varied on before, not by those it names now.
		reason = "vary"
	}
	fresh := freshnessWith(lifetime, view, rc, x.requestTime, rec.responseTime)
	fresh.Defaulted = h.defaulted(old.status, view, rc, lifetime, rec.responseTime)
	fresh.Heuristic = heuristic
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
	if reason == "authorization" {
		// Not storable for this request (RFC 9111 §3.5), which tells
		// nothing of the stored response: it stays for the others, as a
		// 200 to this request would leave it.
		e.exited.Store(true)
		return e, false
	}
	if h.presetKeepsOut(x.preset) {
		// This request's handlers mark it private or no-store (header
		// @loggedin Cache-Control private): it went out with a user's
		// cookies, and its 304 may carry fields for that user alone (or
		// a Set-Cookie, a private). It answers her; the stored response
		// stays as it was for the others, whose next request
		// revalidates it: neither updated nor dropped.
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
	held, stored := h.store.replaceIfStored(old, e)
	switch {
	case stored:
		x.kept = keptStored
	case held:
		x.kept = keptRefused
	default:
		x.kept = keptSuperseded
	}
	return e, held
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
	head := x.withoutProxyCookie(rec.header)
	switch judgeHead(old.status, &old.header, old.body.Len(), head) {
	case headUpdates:
		h.refresh(x, rec, head)
	case headInvalidates:
		if h.presetKeepsOut(x.preset) || !h.store.dropIfStored(old) {
			return
		}
		if ce := h.logger.Check(zapcore.DebugLevel, "HEAD response shows the stored GET response is out of date; dropped it"); ce != nil {
			ce.Write(h.entryKeyField(old), zap.String("etag", head.Get("Etag")), zap.String("content_length", head.Get("Content-Length")))
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
		defer h.bg.wg.Done()     // last: after the log lines, which tests read once wait returns
		outcome := refreshFailed // unless forward returns
		defer func() {
			// After the calls deferred below (wg.Done comes last): a
			// failure's backoff is in place before the key is free to be
			// refreshed again.
			n := h.bg.done(e.key, outcome, h.now())
			if n < 0 {
				if ce := h.logger.Check(zapcore.InfoLevel, "background revalidation succeeded again"); ce != nil {
					ce.Write(zap.String("host", r2.Host), zap.String("uri", r2.RequestURI), h.keyField(e.urlKey()), zap.Int("failures", -n))
				}
			}
		}()
		defer e.body.release()
		defer cancel()
		err := h.forwardInBackground(r2, next, x)
		switch failed, _ := originFailure(err); {
		case err != nil && !failed:
			// A handler's own error (an error directive's 410, a
			// cancellation), as the foreground tells them: no failure of
			// the origin, nor a success that ends a streak.
			outcome = refreshNeither
		case err != nil || isServerError(x.rec.status):
			outcome = refreshFailed
		case x.kept == keptStored || x.kept == keptSuperseded || x.client.lackingOnce():
			// Stored; or its 304 found the entry gone or replaced; or not
			// stored for lacking values of its client's request, which the
			// next refresh has: it goes at once.
			outcome = refreshSucceeded
		case x.kept == keptRefused || x.rec.refused != "":
			outcome = refreshRefused
		default:
			// Not stored for what the origin answered.
			outcome = refreshUnstored
		}
		level, msg := zapcore.DebugLevel, "background revalidation"
		if outcome == refreshFailed && !h.bg.failing(e.key, h.now()) {
			// Nobody else hears of it: its client had the stale response
			// (a 5xx within stale-if-error too: the refresh served no one).
			// Once a streak: the next refreshes of the key wait a backoff,
			// and the end of the streak is logged.
			level, msg = zapcore.WarnLevel, "background revalidation failed; the stale response stays, and the key is refreshed again after a backoff (1s, doubling up to 30s while it fails)"
		}
		if ce := h.logger.Check(level, msg); ce != nil {
			ce.Write(zap.String("host", r2.Host), zap.String("uri", r2.RequestURI), h.entryKeyField(e), zap.Int("status", x.rec.status), zap.Error(err))
		}
	}()
}

// errRefreshAborted is a background refresh's failure when reverse_proxy
// gives up on a body it cannot finish reading (the origin went away, or
// the timeout) by panicking with http.ErrAbortHandler.
var errRefreshAborted = errors.New("response_cache: reverse_proxy aborted the response (the origin broke off its body, or the timeout passed)")

// forwardInBackground forwards a background refresh, x, which has no
// client whose connection a panic would end: reverse_proxy's abort ends it
// as errRefreshAborted, a failure of the origin, and another panic as an
// error, logged with its stack.
func (h *Handler) forwardInBackground(r2 *http.Request, next caddyhttp.Handler, x *exchange) (err error) {
	defer func() {
		switch v := recover(); {
		case v == http.ErrAbortHandler:
			err = errRefreshAborted
		case v != nil:
			h.logger.Error("background revalidation panicked", zap.Any("error", v), zap.ByteString("stack", debug.Stack()))
			err = fmt.Errorf("response_cache: background revalidation panicked: %v", v)
		}
	}()
	return h.forward(&discardWriter{}, r2, next, x)
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
	// unlearned: one of them could not be learned (maxClientKeys), so
	// the next refresh lacks it too.
	unlearned bool
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
	learned := c.keys.learn(key)
	c.mu.Lock()
	if len(c.lack) < maxClientKeys {
		c.lack = append(c.lack, key)
	}
	c.unlearned = c.unlearned || !learned
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

// lackingOnce reports whether the refresh lacked client values that the
// next refresh will have: not those past maxClientKeys, never learned.
func (c *clientValues) lackingOnce() bool {
	if c == nil {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.lack) > 0 && !c.unlearned
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

// learn adds key to the placeholders the next refreshes read from their
// clients, and reports whether it is among them (false past
// maxClientKeys).
func (k *clientKeys) learn(key string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if slices.Contains(k.keys, key) {
		return true
	}
	if len(k.keys) >= maxClientKeys {
		return false
	}
	k.keys = append(k.keys, key)
	return true
}

func (k *clientKeys) list() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.keys)
}

// background tracks the background revalidations of a handler, in
// refreshes, its store's: at most one per key at a time, and after a
// failed one (the origin down, or answering 5xx), or one whose answer was
// not stored, none for that key until its backoff passes, so that an
// outage does not turn every stale hit into a connection attempt and a
// warning, nor an object grown past max_item_size into a fetch of it
// (see refreshOutcome). The store's, since a
// refresh outlives a reload and the store is kept across it: a reload
// neither starts a second refresh of a key nor ends a backoff (a review:
// three refreshes of one key at once across two reloads, and a 503ing
// origin asked at each reload). wg counts the handler's own.
type background struct {
	*refreshes
	wg sync.WaitGroup
}

// refreshes are the keys being refreshed in the background and the
// backoffs of those whose last refresh failed or stored nothing.
type refreshes struct {
	mu     sync.Mutex // protects keys and failed
	keys   map[string]struct{}
	failed map[string]refreshBackoff
}

// refreshBackoff is a key's streak of failed refreshes, or, with no
// failures, of refreshes whose answer was not stored: either holds the
// key's next refresh back.
type refreshBackoff struct {
	failures int
	delay    time.Duration // since the last refresh of the streak
	until    time.Time     // no refresh before
}

// The first failed refresh of a key (or the first not stored) holds its
// next one back for minRefreshBackoff, each further one for twice as long
// as the one before, up to maxRefreshBackoff.
const (
	minRefreshBackoff = time.Second
	maxRefreshBackoff = 30 * time.Second
	// streakQuiet ends a key's streak of failures when no refresh of the
	// key was tried for that long after its backoff passed.
	streakQuiet = 10 * time.Minute
	// maxFailedKeys bounds the keys whose backoffs are remembered (about
	// 200 bytes each with their key); a new one past it takes the place
	// of one of them, chosen by the map's random order (see evictFailed).
	maxFailedKeys = 16384
)

// start claims key at now; false when it is already being revalidated,
// or its backoff has not passed (see refreshOutcome).
func (b *background) start(key string, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, busy := b.keys[key]; busy {
		return false
	}
	if f, ok := b.streakLocked(key, now); ok && now.Before(f.until) {
		return false
	}
	if b.keys == nil {
		b.keys = make(map[string]struct{})
	}
	b.keys[key] = struct{}{}
	b.wg.Add(1)
	return true
}

// refreshOutcome is how a background refresh ended, for its key's
// streak of failures.
type refreshOutcome int8

const (
	refreshSucceeded refreshOutcome = iota // the origin answered, its answer stored (or nothing to update): a streak ends
	refreshFailed                          // the origin failed: a streak begins or goes on
	refreshNeither                         // a handler's own error: a streak stays as it is
	// The origin answered with a response not stored (not storable, too
	// large): a streak of failures ends, and one of such answers begins
	// or goes on, without failures. Each stale hit would otherwise start
	// a refresh at once (a review: 200 refreshes of max_item_size each in
	// 10 s of stale hits on a grown object), to store nothing.
	refreshUnstored
	// The answer was storable, but others being recorded took the budget,
	// the arena had no room, or the store's queue was full: no mark
	// against the key, whose next refresh waits minRefreshBackoff, not
	// longer. The origin answered: a streak of failures ends; one of
	// answers not stored goes on as it was.
	refreshRefused
)

// done releases key, whose refresh ended with outcome at now, and returns
// the key's failures in a row (a success, an answer not stored or one
// refused returns those it ends, negated; refreshNeither 0). The caller
// then calls the handler's wg.Done.
func (b *refreshes) done(key string, outcome refreshOutcome, now time.Time) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	f, _ := b.streakLocked(key, now) // while key is busy: its streak goes on (see streakLocked)
	delete(b.keys, key)
	n := 0 // what done returns
	switch outcome {
	case refreshNeither:
		return 0
	case refreshSucceeded:
		delete(b.failed, key)
		return -f.failures
	case refreshUnstored, refreshRefused:
		if f.failures > 0 { // the origin answered
			n, f = -f.failures, refreshBackoff{}
		}
	case refreshFailed:
		if f.failures == 0 {
			f = refreshBackoff{} // after answers not stored: from the shortest backoff
		}
		f.failures++
		n = f.failures
	}
	if outcome == refreshRefused {
		// A streak of answers not stored, if any, goes on as it was.
		if until := now.Add(minRefreshBackoff); until.After(f.until) {
			f.until = until
		}
	} else {
		f.delay = min(max(2*f.delay, minRefreshBackoff), maxRefreshBackoff)
		f.until = now.Add(f.delay)
	}
	if b.failed == nil {
		b.failed = make(map[string]refreshBackoff)
	}
	if _, ok := b.failed[key]; !ok && len(b.failed) >= maxFailedKeys && !b.evictFailed(now, f.failures > 0) {
		// A hold of answers not stored does not take the place of an
		// outage's backoff (a review: 1,000 refusals of new keys ended
		// 973 backoffs of 30 s): it is not kept.
		return n
	}
	b.failed[key] = f
	return n
}

// evictFailed forgets one remembered backoff to make room, and reports
// whether it did: among a few in the map's (random) order, the first
// whose backoff has passed, else the first without failures (a hold of
// answers not stored, less worth keeping than an outage's), else, unless
// forFailure is false, the first of them. Callers hold b.mu.
func (b *refreshes) evictFailed(now time.Time, forFailure bool) bool {
	victim, rank, seen := "", 0, 0 // rank: 1 the first, 2 no failures, 3 passed
	for k, f := range b.failed {
		r := 1
		switch {
		case !now.Before(f.until):
			r = 3
		case f.failures == 0:
			r = 2
		}
		if r > rank {
			victim, rank = k, r
		}
		if seen++; rank == 3 || seen == 8 {
			break
		}
	}
	if rank == 1 && !forFailure {
		return false
	}
	delete(b.failed, victim)
	return true
}

// failing reports whether key's last refresh failed, in a streak that
// goes on at now.
func (b *refreshes) failing(key string, now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	f, ok := b.streakLocked(key, now)
	return ok && f.failures > 0
}

// streakLocked returns key's streak of failed refreshes (or of refreshes
// that stored nothing, without failures) at now, if one
// goes on: one whose backoff passed more than streakQuiet ago with no
// refresh since (nobody asked, or the key was fetched in the foreground)
// has ended, and is forgotten, so that the key's next failure starts a
// streak of its own, logged and backed off from the shortest delay (a
// review: a failure a day after the last streak was logged at debug
// only, and waited twice as long, since the state is the store's and no
// reload resets it). A key being refreshed is being tried: its streak
// is judged when the refresh starts, not as it ends (a review: a
// refresh that began within the quiet time and ended past it started a
// new streak). Callers hold b.mu.
func (b *refreshes) streakLocked(key string, now time.Time) (refreshBackoff, bool) {
	f, ok := b.failed[key]
	if _, busy := b.keys[key]; ok && !busy && now.After(f.until.Add(streakQuiet)) {
		delete(b.failed, key)
		return refreshBackoff{}, false
	}
	return f, ok
}

// wait blocks until no revalidation runs (tests, benchmarks).
func (b *background) wait() { b.wg.Wait() }
