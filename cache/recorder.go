package cache

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// recorder is the http.ResponseWriter the next handler writes a forwarded
// response into. It streams the response to the client as it arrives
// (never holding it back) while buffering the body for storage, up to a
// limit; the moment the body passes the limit the buffer is dropped so its
// memory can be released, and the response is not stored.
//
// The next handler writes its header fields into the recorder's own map;
// they reach the client when the status is written. Before that, events
// sees the final status and fields and decides whether the response goes
// to the client at all (a 304 answering the cache's own conditional
// request, or a 5xx replaced by a stale entry, does not) and whether the
// body is buffered.
type recorder struct {
	w      http.ResponseWriter // the client (a discardWriter for background work)
	header http.Header
	// serverSlot holds the Server value newRecordedHeader seeds header
	// with: the recorder's own memory, not an allocation of its own.
	serverSlot [1]string
	// server is what the next handler did with the Server field the
	// recorder's header started with (see takeServerSeed); clientServer
	// is the client's Server as it edited it (serverEdited).
	server serverFate
	// own: fill is the recorder's own, which its client's writer alone
	// reads (see decouple); coupled, once set, keeps the client's writes
	// in the recorder (see recouple). (Fields are placed for the size of
	// an exchange, see TestEntrySize.)
	own, coupled bool
	// trailers is what hasTrailers found once the next handler returned
	// (settleTrailers); trailersUnknown until then.
	trailers     trailersFound
	clientServer []string
	// proxied: the response is reverse_proxy's copy of an upstream's
	// (it says Via), which adds the upstream's lines after those that
	// handlers before it set on the client's response; the cache does
	// the same (see copyToClient). presetNames are the caching fields
	// the cache merges on its own (see ownsField).
	proxied bool
	// discard: the client is a background refresh's discardWriter, which
	// reads nothing (see Write).
	discard bool
	// answered: the client gets a stored response instead of this one
	// (stale-if-error), so nothing reads its body past errorBodyRead (set
	// by onHeader).
	answered    bool
	presetNames []string

	// events is told of the final status and of an overflow.
	events recorderEvents

	now          func() time.Time
	status       int
	wroteHeader  bool
	responseTime time.Time

	// cacheStatus replaces the Cache-Status the client gets (the origin's
	// members plus ours); set by onHeader, usually to statusSlot[:].
	cacheStatus []string
	statusSlot  [1]string
	// contentRange, when set, makes the client's response a 206 with
	// this Content-Range: the client asked for a range that is the whole
	// body (set by onHeader, see wholeContentRange).
	contentRange string
	// preset are the caching fields handlers before the cache set on the
	// client's response: they stay in front of the origin's lines (see
	// prependPreset).
	preset http.Header
	// notModified makes the client's response a 304 without the body,
	// which is still recorded for storage: the client's own conditional
	// did not go to the origin and the 200 satisfies it (set by onHeader).
	notModified bool

	pass     bool // the response is written to the client
	buffer   bool // the body is buffered for storage
	overflow bool // the body passed limit: it was dropped
	// lead is how many scratch pieces the body is recorded ahead of what
	// the client's writer has written, reserved from the arena (see
	// holdLead).
	lead  int32
	limit int64 // most body bytes buffered
	// The body is recorded into the store's arena: straight into a body
	// of its declared length (Content-Length), or gathered up to limit
	// and moved there when it ends (see newGrowingBody).
	arena *arena
	body  *body
	// fill, when set, is told of the body's progress: requests that
	// waited for this response read it as it arrives (see bodyFill).
	fill *bodyFill
	// writer, once the body outlasts one Write, gets the result of the
	// goroutine that writes this response's own client from fill, so
	// that a client slower than the origin holds up only itself, not
	// the fill others read (see decouple); clientCtx is that client's
	// request context.
	writer    chan error
	clientCtx context.Context

	// reserved is what this response took of the arena's recording
	// budget (see arena.reserve), given back once it is stored or
	// dropped (finish, dropBody).
	reserved int64
	// refused says why buffering stopped for want of memory, not because
	// of limit: the Cache-Status detail, refusedBudget (other responses
	// took the recording budget) or refusedNoRoom (the arena had no room
	// for the body, see appendAlloc); "" otherwise.
	refused string

	written int64 // body bytes the next handler wrote
	// progress, when set, counts them too, for another goroutine
	// (fill.recorded, see watchAbandoned).
	progress  *atomic.Int64
	clientErr error // first error writing to the client
}

// errorBodyRead is how much of an error's body the recorder reads on when
// the client gets a stored response instead (stale-if-error): an error
// page, read to its end so that the origin's connection is kept (a
// review: a new connection for every request of an outage when the first
// write was refused), but not a large or endless body.
const errorBodyRead = 64 << 10

// errUnread aborts a response that is neither reaching its client nor
// being buffered any more.
var errUnread = errors.New("response_cache: nobody reads the rest of the response (the client is gone, or has its 304, a stored response for an error, or all the Content-Length declared, or it is a background refresh) and it will not be stored")

// recorderEvents is what a recorder reports to its owner (an exchange).
type recorderEvents interface {
	// onHeader runs once, at the final status. It sets the recorder's
	// pass, buffer and limit, and cacheStatus when passing.
	onHeader(rec *recorder)
	// onOverflow runs once, when buffering stops because of the limit.
	onOverflow()
	// onBody runs once, after the client's header is written, when the
	// body is recorded into a body of its declared length. It may set
	// the recorder's fill.
	onBody(rec *recorder)
	// awaited tells whether other requests wait for the response: it is
	// then recorded whatever the recording budget (see arena.reserve).
	awaitable
	// spareFill returns a fill the recorder may use as its own (see
	// decouple), if no other request reads the body as it arrives.
	spareFill() *bodyFill
}

func newRecorder(w http.ResponseWriter, now func() time.Time) *recorder {
	rec := new(recorder)
	rec.init(w, now)
	return rec
}

// init readies a zero recorder writing to w.
func (rec *recorder) init(w http.ResponseWriter, now func() time.Time) {
	rec.w, rec.now = w, now
	rec.header = rec.newRecordedHeader()
	_, rec.discard = w.(*discardWriter)
}

// reset readies rec, which passed nothing to its client and holds no
// body, for another response to the same client.
func (rec *recorder) reset() {
	rec.unreserve()
	*rec = recorder{w: rec.w, discard: rec.discard, now: rec.now, events: rec.events, arena: rec.arena, limit: rec.limit, clientCtx: rec.clientCtx, presetNames: rec.presetNames, progress: rec.progress}
	rec.header = rec.newRecordedHeader()
}

// newRecordedHeader returns the header map the next handler writes its
// response's fields into. It starts with a Server field of serverSeed,
// standing for the client's (Caddy's, one a handler before the cache
// set, or none), which the next handler may drop, as reverse_proxy does
// (it says Via instead), keep, or replace with the origin's; WriteHeader
// tells which (takeServerSeed). Only an origin's is stored: the client's
// is the client's, and what a hit does with its own is in
// entry.server. A value, not a slice compared by address:
// reverse_proxy rebuilds the header map after a 1xx response. The value
// slice is rec.serverSlot (len == cap == 1, so that an append
// reallocates), which saves an allocation per forwarded request.
//
// The map comes from recordedHeaders: a forwarded request's map goes back
// there, cleared, when the request is over (recycleHeader).
func (rec *recorder) newRecordedHeader() http.Header {
	rec.serverSlot[0] = serverSeed
	h := recordedHeaders.Get().(http.Header)
	h["Server"] = rec.serverSlot[:]
	return h
}

// recordedHeaders holds the header maps of requests that are over,
// cleared, for the next ones: a map and its table are two allocations
// (more past eight fields) and, cleared, keep their room.
var recordedHeaders = sync.Pool{New: func() any { return make(http.Header) }}

// maxRecycledFields is the most fields a recycled map had: a larger one
// (rare) is left to the collector, rather than kept at its size.
const maxRecycledFields = 32

// recycleHeader gives rec's header map back to recordedHeaders, once the
// request is over: the next handler has returned (a ResponseWriter is
// not used after its handler returns, nor is its header map), and
// nothing kept the map (entries and waiters get copies of its fields,
// and share only its value slices, which are not reused).
func (rec *recorder) recycleHeader() {
	h := rec.header
	rec.header = nil
	if h == nil || len(h) > maxRecycledFields {
		return
	}
	clear(h)
	recordedHeaders.Put(h)
}

// serverSeed is the recorded header's Server value until the next
// handler changes it; never sent (see takeServerSeed, writeInformational).
const serverSeed = "response_cache: the client's Server field"

// serverFate is what the next handler did with the Server field
// newRecordedHeader put in its map.
type serverFate uint8

const (
	serverReplaced serverFate = iota // an origin's, or none set yet
	serverDropped                    // reverse_proxy does, for Via
	serverKept                       // file_server, respond
	serverAdded                      // kept, with lines after it (copy_response_headers)
	serverEdited                     // a deferred `header >Server` after the cache
)

// seedKept reports whether the next handler kept the seed, as it was or
// not: it did not copy an upstream's response (see proxyMark.madeAfter).
func (f serverFate) seedKept() bool { return f >= serverKept }

// keepsSeed reports whether the Server values v are serverSeed.
func keepsSeed(v []string) bool { return len(v) == 1 && v[0] == serverSeed }

// takeServerSeed finds what the next handler did with the Server field
// newRecordedHeader put in rec.header (rec.server): dropped, kept
// (removed from rec.header, so that it is neither stored nor copied over
// the client's), kept with lines added after it (the seed is taken out),
// edited (a deferred `header >Server "^(.*)$" "$1/2"` after the cache),
// or replaced. An edited value is the client's value edited for this
// client (clientServer) and is not stored: made from one request's
// Server, it is no one else's, and a background refresh has none to edit.
func (rec *recorder) takeServerSeed() {
	v, ok := rec.header["Server"]
	switch {
	case !ok:
		rec.server = serverDropped
		return
	case !slices.ContainsFunc(v, hasSeed):
		rec.server = serverReplaced
		return
	case keepsSeed(v):
		rec.server = serverKept
		delete(rec.header, "Server")
		return
	case !slices.ContainsFunc(v, editedSeed):
		rec.server = serverAdded
		rec.header["Server"] = slices.DeleteFunc(slices.Clone(v), hasSeed)
		return
	}
	rec.server = serverEdited
	var own []string
	if rec.w != nil {
		own = rec.w.Header()["Server"]
	}
	rec.clientServer = withOwnServer(v, own)
	delete(rec.header, "Server")
}

func hasSeed(s string) bool    { return strings.Contains(s, serverSeed) }
func editedSeed(s string) bool { return s != serverSeed && strings.Contains(s, serverSeed) }

// withOwnServer returns the Server values v with the client's values own
// in place of the seed: for the seed itself, own; within an edited value,
// own joined, as the edit would have made of it.
func withOwnServer(v, own []string) []string {
	out := make([]string, 0, len(v)+len(own))
	for _, s := range v {
		switch {
		case s == serverSeed:
			out = append(out, own...)
		case strings.Contains(s, serverSeed):
			out = append(out, strings.ReplaceAll(s, serverSeed, strings.Join(own, ", ")))
		default:
			out = append(out, s)
		}
	}
	return out
}

// hasTrailers reports whether the next handler set trailers, announced in
// a Trailer field or not (http.TrailerPrefix): the cache does not store
// them, so it does not store their response either.
func (rec *recorder) hasTrailers() bool {
	if rec.trailers != trailersUnknown {
		return rec.trailers == trailersSome
	}
	return rec.lookForTrailers()
}

// lookForTrailers walks the recorded header for trailer fields.
func (rec *recorder) lookForTrailers() bool {
	if len(rec.header["Trailer"]) > 0 {
		return true
	}
	for range unannouncedTrailers(rec.header) {
		return true
	}
	return false
}

// trailersFound is what hasTrailers found in a finished response.
type trailersFound uint8

const (
	trailersUnknown trailersFound = iota // the next handler may still set some
	trailersNone
	trailersSome
)

// settleTrailers looks for trailer fields once, when the next handler has
// returned and its header map no longer changes: every miss asks several
// times (whether to store, to release the waiters, to copy them to the
// client), and each look walks the map.
func (rec *recorder) settleTrailers() {
	rec.trailers = trailersNone
	if rec.lookForTrailers() {
		rec.trailers = trailersSome
	}
}

// unannouncedTrailers yields the trailer fields a handler set in hdr under
// http.TrailerPrefix (those no Trailer field announced; reverse_proxy sets
// them so after the body).
func unannouncedTrailers(hdr http.Header) iter.Seq2[string, []string] {
	return func(yield func(string, []string) bool) {
		for k, v := range hdr {
			if strings.HasPrefix(k, http.TrailerPrefix) && !yield(k, v) {
				return
			}
		}
	}
}

// sharedTrailers returns the unannounced trailer fields of hdr that the
// requests reading a fill as it arrives get with it: not Set-Cookie,
// which is for the leader's client, nor those rc keeps from being stored
// (hop-by-hop, or named by a qualified no-cache or private), as the
// header's fields are not (a review: a trailer Set-Cookie and a private
// field reached every waiter); nil if none is.
func sharedTrailers(hdr http.Header, rc *ResponseControl) http.Header {
	var out http.Header
	named := connectionFields(hdr)
	for k, v := range unannouncedTrailers(hdr) {
		name := http.CanonicalHeaderKey(strings.TrimPrefix(k, http.TrailerPrefix))
		if name == "Set-Cookie" || unstorable(name, named, rc) {
			continue
		}
		if out == nil {
			out = make(http.Header)
		}
		out[k] = v
	}
	return out
}

// Header returns the next handler's header map.
func (rec *recorder) Header() http.Header { return rec.header }

// WriteHeader passes 1xx informational responses straight to the client
// and decides, at the final status, what happens to the response.
func (rec *recorder) WriteHeader(status int) {
	if rec.wroteHeader {
		return
	}
	if status >= 100 && status <= 199 && status != http.StatusSwitchingProtocols {
		if rec.w != nil {
			rec.writeInformational(status)
		}
		return
	}
	rec.wroteHeader = true
	rec.status = status
	if status == http.StatusNoContent || status == http.StatusNotModified {
		// No body follows, whatever length the origin declared (an
		// origin's 204 with Content-Length: 5 would be recorded into a
		// body of 5 bytes that never come, and its waiters aborted);
		// net/http leaves the field out of such a response to a client
		// too.
		delete(rec.header, "Content-Length")
	}
	rec.responseTime = rec.now()
	rec.pass = true
	rec.takeServerSeed()
	rec.proxied = len(rec.header["Via"]) > 0
	if rec.events != nil {
		rec.events.onHeader(rec)
	}
	if rec.buffer {
		limit := rec.bodyLimit()
		// A known length within the limit is allocated once, in the
		// arena; a longer declared length is not buffered at all (nor one
		// of unknown length with no room left: a growing body of limit 0
		// would be taken for one of declared length).
		if n, ok := rec.declaredLength(); ok && n > limit || !ok && limit <= 0 {
			rec.stopBuffering()
		} else if ok {
			if b, ok := rec.arena.newBody(int(n)); ok {
				rec.body = b
			} else {
				// No room in memory: streamed, as when the recording
				// budget is taken (not a mark against its URL).
				rec.refused = refusedNoRoom
				rec.stopBuffering()
			}
		}
		if rec.buffer && rec.body == nil {
			rec.body = rec.arena.newGrowingBody(int(limit))
		}
	}
	if rec.pass {
		dst := rec.w.Header()
		own := dst["Server"]
		rec.copyToClient(dst)
		switch {
		case rec.server == serverDropped:
			delete(dst, "Server")
		case rec.server == serverAdded && len(own) > 0:
			dst["Server"] = append(slices.Clip(own), rec.header["Server"]...)
		case rec.server == serverEdited && len(rec.clientServer) > 0:
			dst["Server"] = rec.clientServer
		case rec.server == serverEdited:
			delete(dst, "Server")
		}
		for f, pv := range rec.preset {
			dst[f] = prependPreset(pv, rec.header[f])
		}
		if rec.cacheStatus != nil {
			dst["Cache-Status"] = rec.cacheStatus
		}
		if rec.notModified {
			status = http.StatusNotModified
			notModifiedHeader(dst) // as for a 304 from the store (serveEntry)
		} else if rec.contentRange != "" {
			status = http.StatusPartialContent
			dst["Content-Range"] = []string{rec.contentRange}
			// As for a 206 from the store (serveEntry).
			delete(dst, "Content-Digest")
			delete(dst, "Content-Md5")
		}
		rec.w.WriteHeader(status)
		if rec.notModified {
			// The client has all it gets; net/http would send the 304
			// only when the handler returns, after the body is stored.
			_ = http.NewResponseController(rec.w).Flush()
		}
	}
	if rec.buffer && rec.body != nil && rec.body.limit == 0 && rec.events != nil {
		rec.events.onBody(rec)
	}
}

// writeInformational sends a 1xx response (103 Early Hints) with the next
// handler's fields to the client. Its fields are for it alone (RFC 9110
// §15.2, RFC 8297 §2): net/http leaves them in the client's header map, so
// the map is put back as it was for the final response.
func (rec *recorder) writeInformational(status int) {
	dst := rec.w.Header()
	prev := make(http.Header, len(rec.header))
	for k := range rec.header {
		if v, ok := dst[k]; ok {
			prev[k] = v
		}
	}
	// Only reverse_proxy passes 1xx responses on, adding the upstream's
	// lines after those set before it, as copyToClient does for its final
	// responses.
	for k, v := range rec.header {
		if pre := prev[k]; len(pre) > 0 && !ownsField(rec.presetNames, k) {
			v = append(slices.Clip(pre), v...)
		}
		dst[k] = v
	}
	if v := dst["Server"]; slices.ContainsFunc(v, hasSeed) { // the client's own, as it was (or edited), then any added
		if own := withOwnServer(v, prev["Server"]); len(own) > 0 {
			dst["Server"] = own
		} else {
			delete(dst, "Server")
		}
	}
	ownServer, dropped := dst["Server"], rec.header["Server"] == nil
	if dropped {
		// The next handler dropped the client's Server before the 1xx
		// (a `header -Server` between the cache and reverse_proxy).
		delete(dst, "Server")
	}
	rec.w.WriteHeader(status)
	if dropped && ownServer != nil {
		dst["Server"] = ownServer
	}
	for k := range rec.header {
		if v, ok := prev[k]; ok {
			dst[k] = v
		} else {
			delete(dst, k)
		}
	}
}

// Write writes p to the client (when passing) and to the buffer (when
// buffering). A client write error is swallowed while the body is still
// being buffered, so a fill others wait for survives its client; once
// nothing is gained by going on, it aborts the next handler.
func (rec *recorder) Write(p []byte) (int, error) {
	if !rec.wroteHeader {
		rec.WriteHeader(http.StatusOK)
	}
	rec.written += int64(len(p))
	if rec.progress != nil {
		rec.progress.Add(int64(len(p)))
	}
	if rec.buffer && rec.body.limit > 0 && !rec.reserveGrowth(len(p)) {
		rec.refused = refusedBudget
		rec.stopBuffering() // (a writer has written what was recorded before p)
	}
	out := p // what the client is yet to get of p
	if rec.buffer {
		k, err := rec.body.Write(p)
		if rec.fill != nil {
			rec.fill.advance(rec.body.w, rec.now())
		}
		if rec.writer == nil && rec.decouples(len(p)) {
			rec.decouple(int(rec.written) - len(p))
		}
		switch decoupled := rec.writer != nil; {
		case err != nil:
			rec.stopBuffering() // longer than declared, or than the limit
			if decoupled && rec.writer == nil {
				out = p[k:] // the writer wrote what was recorded (recouple)
			} else if rec.writer != nil {
				// Longer than declared: net/http would refuse the rest
				// (http.ErrContentLength); the writer ends with what was.
				return k, errUnread
			}
		case decoupled && !rec.holdLead():
			rec.lendToLead()
			rec.recouple()
			return len(p), nil // the writer wrote p
		}
	}
	if rec.writer != nil {
		if !rec.buffer {
			return 0, errUnread // past the declared length (see above), again
		}
		return len(p), nil // the client gets it from the fill
	}
	if rec.pass && !rec.notModified && rec.clientErr == nil && len(out) > 0 {
		if _, err := rec.w.Write(out); err != nil {
			rec.clientErr = err
		}
	}
	// A background refresh reads on what it will not store only as far
	// as max_item_size: aborting costs a reverse_proxy warning in the log,
	// not worth it for a small body, and reading on, for a large one, an
	// origin's whole object for nothing (to the refresh's 30 s timeout).
	// A client answered with a 304 would wait for the end: stop at once
	// (its key's next conditional misses go as they came). One answered
	// with a stored response instead of an error's waits for an error
	// page (read to its end, its connection to the origin is kept, as
	// through reverse_proxy alone), not for more than errorBodyRead.
	if !rec.buffer && (rec.clientErr != nil || rec.notModified || rec.answered && rec.written > errorBodyRead) ||
		rec.refreshUnread() {
		return 0, errUnread
	}
	return len(p), nil
}

// refreshUnread reports whether Write stops reading the body of a
// background refresh's response that will not be stored, past limit: the
// origin answered; reverse_proxy's abort that follows is the cache's
// doing (see serveNext).
func (rec *recorder) refreshUnread() bool {
	return rec.discard && !rec.buffer && rec.written > rec.limit
}

// decouples reports whether rec hands the writing of its client to a
// goroutine (decouple) at a Write of n bytes: once a body of declared
// length does not arrive in one Write (a small one never pays for a
// goroutine), and once one of unknown length has passed what connection
// buffers take in (a client that reads nothing holds no more than that
// at its pace).
func (rec *recorder) decouples(n int) bool {
	if rec.coupled || n == 0 || !rec.pass || rec.notModified || rec.clientErr != nil || rec.discard {
		return false
	}
	if b := rec.body; b.limit == 0 {
		return b.w < b.n
	}
	return rec.written-int64(n) >= decoupleAfter && rec.arena.leads()
}

// decoupleAfter is how much of a body of unknown length reaches the
// client from the recorder itself, before a writer follows the body.
const decoupleAfter = 2 * scratchSize

// decouple hands the writing of the body to the client, from byte from
// on, to a goroutine that reads it from the fill as it arrives, as the
// requests waiting for this response do (rec's own fill when none does):
// the origin's body is then recorded at the origin's pace, not at this
// client's (whose writes may block: a slow reader, an HTTP/2 window it
// keeps closed). joinWriter waits for the goroutine. A body of declared
// length is read in place; one of unknown length is copied out as it
// grows (writeGrowing), as far as the lead budget lets it get ahead of
// its client (holdLead).
func (rec *recorder) decouple(from int) {
	b, w, ctx := rec.body, rec.w, rec.clientCtx
	if ctx == nil {
		ctx = context.Background()
	}
	if rec.fill == nil {
		if rec.events != nil {
			rec.fill = rec.events.spareFill()
		} else {
			rec.fill = new(bodyFill)
		}
		rec.own = true
		rec.fill.advance(b.w, rec.now())
	}
	f := rec.fill
	// Unbuffered (one allocation, not two): joinWriter, deferred by
	// forward, always takes what it ends with.
	done := make(chan error)
	rec.writer = done
	if b.limit > 0 {
		f.sent.Store(int64(from))
		b.fill.Store(f) // its mutex guards the pieces from here (see guard)
		go func() {
			var err error
			defer func() { done <- writerEnd(err, recover()) }()
			err = b.writeGrowing(ctx, w, f, from)
		}()
		return
	}
	b.acquire() // its own reference: it may outlast the recorder's
	go func() {
		var err error
		defer func() { done <- writerEnd(err, recover()) }()
		// Released before joinWriter hears of the end, so that the
		// handler returns holding no reference of its own.
		defer b.release()
		err = b.writeFilling(ctx, w, f, from, b.Len())
	}()
}

// writerPanic carries what the client's ResponseWriter panicked with in
// the goroutine decouple started to the handler, where joinWriter panics
// with it again: net/http recovers a handler's panic (and aborts its
// response), not another goroutine's, which would end the process.
type writerPanic struct{ v any }

func (p writerPanic) Error() string {
	return fmt.Sprint("response_cache: the client's writer panicked: ", p.v)
}

// writerEnd is what the goroutine decouple started ends with: err, or
// what it panicked with, v.
func writerEnd(err error, v any) error {
	if v != nil {
		return writerPanic{v}
	}
	return err
}

// holdLead reserves from the arena's lead budget what a body of unknown
// length is recorded ahead of what its writer has written to its client
// (in whole pieces), giving back what it no longer is, and reports
// whether it could.
func (rec *recorder) holdLead() bool {
	b := rec.body
	if b == nil || b.limit == 0 {
		return true
	}
	lead := max(int64(b.w)-rec.fill.sent.Load(), 0)
	want := int32((lead + scratchSize - 1) / scratchSize)
	if want > rec.lead && !rec.arena.reserveLead(int64(want-rec.lead)*scratchSize) {
		return false
	}
	if want < rec.lead {
		rec.arena.unreserveLead(int64(rec.lead-want) * scratchSize)
	}
	rec.lead = want
	return true
}

// lendToLead gives back to the recording budget what the lead budget
// holds of the body, before rec waits for its client to catch up
// (recouple): a client that reads nothing then holds no more of the
// recording budget than when its response was recorded at its pace (a
// review saw one stalled HTTP/2 stream hold 4 MiB of each budget where
// it had held 96 KiB), and clients that do not read hold no more than
// the lead budget besides. reserveGrowth takes it back at the next
// write, or stops buffering.
func (rec *recorder) lendToLead() {
	n := min(int64(rec.lead)*scratchSize, rec.reserved)
	rec.arena.unreserve(n)
	rec.reserved -= n
}

// recouple ends the writer decouple started for a body of unknown length
// once it has written what is recorded, and waits for it, at its client's
// pace: the lead budget is taken, or the body is not stored (it passed
// max_item_size, say) or not yet. The client then gets the rest from the
// recorder, as it comes.
func (rec *recorder) recouple() {
	rec.coupled = true
	if rec.writer == nil {
		return
	}
	rec.fill.complete(nil)
	rec.joinWriter()
	rec.fill, rec.own = nil, false
}

// endOwnFill ends rec's own fill, which its client's writer reads (see
// decouple), once the next handler has returned: complete, but for a body
// of declared length that ended short (its writer stops).
func (rec *recorder) endOwnFill() {
	if !rec.own {
		return
	}
	if b := rec.body; b != nil && b.limit == 0 && b.w < b.n {
		rec.fill.fail()
		return
	}
	rec.fill.complete(nil)
}

// joinWriter waits for the goroutine decouple started, once the fill has
// ended (complete or failed, else it would wait for ever); clientErr is
// then what it ended with. The handler must not return before. What the
// goroutine panicked with (writerPanic) it panics with again, once what
// the goroutine held is given back.
func (rec *recorder) joinWriter() {
	defer rec.releaseLead()
	if rec.writer == nil {
		return
	}
	rec.clientErr = <-rec.writer
	rec.writer = nil
	if stored := rec.fill.moved.Swap(nil); stored != nil {
		stored.release() // handed over after the writer ended
	}
	if p, ok := rec.clientErr.(writerPanic); ok {
		rec.clientErr = errUnread
		panic(p.v)
	}
}

// releaseLead gives back the lead budget rec holds.
func (rec *recorder) releaseLead() {
	rec.arena.unreserveLead(int64(rec.lead) * scratchSize)
	rec.lead = 0
}

// bodyLimit is the most body bytes buffered to store the response, once
// its header is known: what the header leaves of max_item_size, which
// bounds the stored response, header fields too (an origin may send
// megabytes of them).
func (rec *recorder) bodyLimit() int64 { return rec.limit - headerSize(rec.header) }

// headerSize is the size of hdr as an HTTP/1.1 header section: each
// field line's name, value, ": " and CRLF.
func headerSize(hdr http.Header) int64 {
	var n int64
	for k, vs := range hdr {
		for _, v := range vs {
			n += int64(len(k) + len(v) + 4)
		}
	}
	return n
}

// stopBuffering drops the buffer: the response is too large to store.
func (rec *recorder) stopBuffering() {
	if !rec.buffer {
		return
	}
	rec.buffer = false
	rec.overflow = true
	rec.unreserve() // (what a writer is yet to write is in the lead budget)
	if rec.events != nil {
		rec.events.onOverflow()
	}
	rec.dropBody()
}

// takeBody hands the recorded body over to the caller, with its
// reference (nil for an empty body), or false when the arena has no room
// for a body gathered in pieces, which it drops: at once, or, while a
// writer reads it, in the deferred dropBody, which waits for the writer
// once finish has let the waiters go.
func (rec *recorder) takeBody() (*body, bool) {
	b := rec.body
	if b == nil || b.limit == 0 {
		rec.body = nil
		return b, true
	}
	stored, ok := b.sealed()
	if !ok {
		rec.buffer = false
		if rec.writer == nil {
			rec.dropBody()
		}
		rec.unreserve()
		return nil, false
	}
	if rec.writer != nil {
		stored.acquire()
		rec.fill.handOver(stored)
	}
	rec.body = nil
	b.release()
	rec.releaseLead() // what the writer is yet to write is stored
	return stored, true
}

// dropBody releases whatever body was recorded and not taken, and gives
// back the recording budget (the exchange's last act: what was recorded
// is now stored, and charged, or dropped). A body of unknown length that
// a writer reads is released once it has written all of it (recouple),
// at its client's pace, while the lead budget holds what it had yet to.
func (rec *recorder) dropBody() {
	rec.unreserve()
	b := rec.body
	rec.body = nil
	// Deferred: recouple panics again with what the client's writer
	// panicked with, and the body's pieces are the arena's to get back.
	defer b.release()
	if b != nil && b.limit > 0 && rec.writer != nil {
		rec.recouple()
	}
}

// declaredLength returns the body length the Content-Length field
// declares, if it declares one.
func (rec *recorder) declaredLength() (int64, bool) {
	cl := rec.header.Get("Content-Length")
	if cl == "" {
		return 0, false
	}
	n, err := strconv.ParseInt(cl, 10, 64)
	return n, err == nil && n >= 0
}

// reserveDeclared takes the recording budget for a body of declared
// length within the limit, which is recorded into a body of that length,
// and reports whether it could; other bodies reserve as they grow
// (reserveGrowth).
func (rec *recorder) reserveDeclared() bool {
	n, ok := rec.declaredLength()
	if !ok || n > rec.bodyLimit() {
		return true // not buffered: too large (see WriteHeader)
	}
	return rec.reserve(n)
}

// reserveGrowth takes the recording budget for n more bytes of a body of
// unknown length, in whole scratch pieces (what it takes on the heap).
func (rec *recorder) reserveGrowth(n int) bool {
	want := int64(min(rec.body.w+n, rec.body.limit))
	if want <= rec.reserved {
		return true
	}
	return rec.reserve((want - rec.reserved + scratchSize - 1) / scratchSize * scratchSize)
}

// reserve takes n bytes of the recording budget (see arena.reserve).
func (rec *recorder) reserve(n int64) bool {
	if !rec.arena.reserve(n, rec.reserved, rec.events) {
		return false
	}
	rec.reserved += n
	return true
}

// unreserve gives back the recording budget rec took.
func (rec *recorder) unreserve() {
	rec.arena.unreserve(rec.reserved)
	rec.reserved = 0
}

// FlushError flushes the client connection (http.ResponseController).
func (rec *recorder) FlushError() error {
	if !rec.wroteHeader {
		rec.WriteHeader(http.StatusOK)
	}
	if rec.fill != nil && rec.buffer {
		// Those who read the body as it arrives flush where this did.
		rec.fill.markFlushed(rec.body.w)
	}
	if !rec.pass || rec.clientErr != nil || rec.writer != nil {
		return nil // (the writer goroutine flushes when it has written this far)
	}
	return http.NewResponseController(rec.w).Flush()
}

// Flush implements http.Flusher.
func (rec *recorder) Flush() { _ = rec.FlushError() }

// Unwrap returns the client's ResponseWriter for http.ResponseController.
func (rec *recorder) Unwrap() http.ResponseWriter { return rec.w }

// finishTrailers copies trailer fields the next handler set after the
// status into the client's header map, where net/http looks for them when
// the handler returns.
func (rec *recorder) finishTrailers() {
	if !rec.pass || !rec.wroteHeader || rec.notModified || !rec.hasTrailers() {
		return // (a 304 has no trailer section: RFC 9110 §6.5)
	}
	// Trailers go after the body; and the client's writer may be at work
	// on its header map (encode, wrapping the cache, sets its fields at
	// its first Write, which a decoupled writer makes).
	rec.joinWriter()
	dst := rec.w.Header()
	maps.Insert(dst, unannouncedTrailers(rec.header))
	for _, names := range rec.header["Trailer"] {
		for _, k := range strings.Split(names, ",") {
			k = http.CanonicalHeaderKey(strings.TrimSpace(k))
			if v, ok := rec.header[k]; ok {
				dst[k] = v
			}
		}
	}
}

// complete reports whether the whole declared body arrived: into a body
// sized at the status by the Content-Length then declared (a handler may
// change the field after the status, which net/http ignores), and as the
// field declares now.
func (rec *recorder) complete() bool {
	if b := rec.body; b != nil && b.limit == 0 && b.w != b.n {
		return false
	}
	cl := rec.header.Get("Content-Length")
	if cl == "" {
		return true
	}
	n, err := strconv.ParseInt(cl, 10, 64)
	return err == nil && n == rec.written
}

// copyToClient sets the recorded fields in the client's header dst. A
// field that handlers before the cache set there keeps its lines in
// front of the recorded ones when reverse_proxy made the response, as it
// adds the upstream's lines without the cache (a cookie forward_auth
// copied, a header directive's Link or Content-Security-Policy); for
// any other next handler the recorded field replaces it (file_server and
// respond set theirs). The next handler wrote into a map of its own, so
// that what is stored is the response as it made it, whatever this
// request's handlers set. When the response is being stored, the
// client's lines are copies (one allocation for all): a deferred header
// operation (`header >X`) edits the client's values in place, which
// would edit the stored response too.
func (rec *recorder) copyToClient(dst http.Header) {
	var vals []string
	if rec.buffer {
		n := 0
		for _, v := range rec.header {
			n += len(v)
		}
		vals = make([]string, 0, n)
	}
	for k, v := range rec.header {
		if vals != nil {
			start := len(vals)
			vals = append(vals, v...)
			v = vals[start:len(vals):len(vals)]
		}
		if rec.proxied && !ownsField(rec.presetNames, k) {
			if pre := dst[k]; len(pre) > 0 {
				v = append(slices.Clip(pre), v...)
			}
		}
		dst[k] = v
	}
}

// copyHeader adds every field of src to dst, sharing the value slices.
func copyHeader(dst, src http.Header) {
	for k, v := range src {
		dst[k] = v
	}
}

// discardWriter is the client of a background revalidation.
type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header {
	if d.h == nil {
		d.h = make(http.Header)
	}
	return d.h
}
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(int)             {}

var (
	_ http.ResponseWriter = (*recorder)(nil)
	_ http.Flusher        = (*recorder)(nil)
	_ interface {
		Unwrap() http.ResponseWriter
		FlushError() error
	} = (*recorder)(nil)
)
