package cache

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/f06cdff9/caddy-affinity-cache/internal/placeholder"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Defaults applied in Provision.
const (
	defaultMaxSize       = 256 << 20
	maxDefaultItemSize   = 64 << 20
	defaultCacheName     = "caddy"
	defaultTargetedField = "CDN-Cache-Control"
	// maxMaxSize keeps the body arena's block numbers (int32, 512-byte
	// blocks) in range.
	maxMaxSize = 512 << 30
	minMaxSize = 64 << 10 // the arena's smallest chunk
	// DefaultKey is the default cache key template. It names the key the
	// handler builds itself (appendURLKey): the URI the client sent, on
	// its origin, with the host lower-cased and the path's hex digits
	// upper-cased. Where the template says hostport, the key has the port
	// the connection came in on rather than Host's (no placeholder names
	// it).
	DefaultKey = "{http.request.scheme}://{http.request.hostport}{http.request.orig_uri}"
	// earlierDefaultKey was DefaultKey until keys told /a? from /a; a
	// config that spells it out still gets the default key
	// (whose path keeps its encoding, which this template's decodes).
	earlierDefaultKey = "{http.request.scheme}://{http.request.hostport}{http.request.orig_uri.path}?{http.request.orig_uri.query}"
	// backgroundTimeout bounds a background revalidation.
	backgroundTimeout = 30 * time.Second
)

// Handler is the response_cache HTTP handler: a shared HTTP cache (RFC
// 9111) held in memory and bounded in bytes. It answers GET and HEAD from
// stored GET responses, revalidates stale ones, serves stale within RFC
// 5861 windows, coalesces concurrent misses, invalidates on unsafe
// methods and reports what it did in Cache-Status (RFC 9211).
//
// Cache-Status members it writes:
//   - `hit; ttl=N`: served from the cache, fresh (N >= 0) or stale within
//     the client's max-stale or the stale-while-revalidate window (N <= 0,
//     with detail=max-stale or detail=stale-while-revalidate);
//   - `fwd=uri-miss|vary-miss; fwd-status=S`: nothing stored for the URL,
//     or not for this variant; the response was streamed from the origin;
//     with detail=min-uses it was storable but its URL has not missed
//     min_uses times yet (under auto: this was its first miss, the store
//     is nearly full, and the responses stored on a first miss have
//     lately almost never been asked for again);
//   - `fwd=stale|request; fwd-status=S`: a stored response needed
//     validation (stale, or the client asked: no-cache, max-age,
//     min-fresh, or a precondition for the origin: If-Match,
//     If-Unmodified-Since); S is 304 when the stored body was confirmed; with
//     detail=stale-if-error the stale response replaced an origin error;
//     for a HEAD, the origin's 200 freshens or drops the stored GET
//     response (RFC 9111 §4.3.5);
//   - `fwd=uri-miss|vary-miss|stale|request; fwd-status=S; collapsed`:
//     answered from a concurrent request's response (fwd is this
//     request's own reason, S the status the other one got: 304 for a
//     refresh); `stored` is added when that response is known to be in
//     the store by then;
//   - `fwd=method`: a method the cache does not answer;
//   - `fwd=bypass`: a request to switch protocols (Upgrade), a GET with
//     content, or one for which a custom key names an unknown placeholder.
//
// A miss never says `stored`: its header leaves before its body is
// complete, and ristretto admits entries asynchronously (it may still
// drop or reject them), so it cannot be known in time.
type Handler struct {
	Config

	// now is the clock; tests replace it.
	now func() time.Time

	ctx       caddy.Context
	life      context.Context // ctx as an interface, converted once: each conversion allocates a copy
	logger    *zap.Logger
	store     storage
	poolKey   string
	claimed   <-chan struct{} // Done of the config whose claim on CacheName h holds, until Cleanup
	customKey bool            // Key is not DefaultKey: expand it through the replacer
	keyUse    *templateClaim  // the store's note of Key, for invalidations under later keys
	badKey    *sync.Once      // logs the first request whose key cannot be made
	nested    *sync.Once      // logs the first request that came through another response_cache
	inErrors  *sync.Once      // logs the first request of an error route (handle_errors)
	coalesce  bool
	targeted  string
	// presetNames are the fields that decide caching (Cache-Control,
	// Expires, Vary, the targeted field), canonical: handlers before the
	// cache that set them (see presetFields) set them for the cache too.
	presetNames []string

	flights *flightGroup
	fills   *fillSet
	bg      *background
	// clientKeys are the placeholders background refreshes read from
	// their clients' requests (see backgroundRequest).
	clientKeys *clientKeys
	uses       func() *useSketch // the store's miss counts (nil once it is closed); nil when MinUses is 1
	// firstUses is the store's record of what became of entries stored
	// on a first miss, kept by every handler and judged by min_uses auto.
	firstUses *firstUseStats
	// hints are the store's keys whose requests skip coalescing for a
	// while (see uncacheableHints).
	hints   *uncacheableHints
	hintGen uint16 // which of the hints are this handler's
	// asIs are the store's keys whose conditional misses go as they came
	// (see fetchWhole), under hintGen too.
	asIs *uncacheableHints

	m handlerMetrics
	// metricsName is the cache name h's counters are under, until Cleanup.
	metricsName string
	// coalesceWait bounds a coalesced request's wait (maxCoalesceWait;
	// tests shorten it).
	coalesceWait time.Duration
	// abandonLimit bounds a fill nobody reads once its client has gone
	// (maxAbandonedFill; tests shorten it).
	abandonLimit time.Duration
	// staleErrors paces the lines of stale-if-error answers.
	staleErrors *logPace
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.response_cache",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision applies defaults, validates, and attaches the handler to its
// store (shared with every handler of the same cache_name and size, and
// kept across config reloads that do not change them).
func (h *Handler) Provision(ctx caddy.Context) error {
	h.ctx = ctx
	h.life = ctx
	if h.logger == nil { // a test may have set one
		h.logger = ctx.Logger()
	}
	if h.now == nil {
		h.now = time.Now
	}
	h.CacheName, h.MaxSize, h.MaxItemSize = h.Config.StoreIdentity()
	// Several sites' caches log to one logger name: each line says which.
	h.logger = h.logger.With(zap.String("cache", h.CacheName))
	if h.TargetedField == "" {
		h.TargetedField = defaultTargetedField
	}
	h.targeted = h.TargetedField
	if h.targeted == "-" || strings.EqualFold(h.targeted, "off") {
		h.targeted = ""
	}
	h.presetNames = []string{"Cache-Control", "Expires", "Vary"}
	if h.targeted != "" {
		h.presetNames = append(h.presetNames, http.CanonicalHeaderKey(h.targeted))
	}
	h.coalesce = h.Coalesce == nil || *h.Coalesce
	h.coalesceWait = maxCoalesceWait
	h.abandonLimit = maxAbandonedFill
	if h.Key == "" {
		h.Key = DefaultKey
	}
	h.Key = placeholder.Expand(h.Key) // JSON may use Caddyfile shorthands too
	if h.Key == earlierDefaultKey {
		h.Key = DefaultKey
	}
	h.badKey = new(sync.Once)
	h.nested = new(sync.Once)
	h.inErrors = new(sync.Once)
	h.customKey = h.Key != DefaultKey
	if err := h.Validate(); err != nil {
		return err
	}
	if h.customKey {
		h.warnKey()
	}
	h.warnHeapBodies(bodiesMapped)
	h.flights = new(flightGroup)
	h.fills = new(fillSet)
	h.staleErrors = newLogPace(h.now())
	h.clientKeys = new(clientKeys)

	if ctx.Context != nil && ctx.Done() != nil { // a config's context (not a bare one in a test)
		if err := claimName(ctx.Done(), &h.Config); err != nil {
			return err
		}
		h.claimed = ctx.Done()
	}
	h.poolKey = storePoolKey(&h.Config)
	v, kept, err := stores.LoadOrNew(h.poolKey, func() (caddy.Destructor, error) {
		s, err := newStore(h.CacheName, h.MaxSize)
		if err == nil {
			trackStore(s)
		}
		return s, err
	})
	if err != nil {
		return err
	}
	if !kept {
		// Only at debug: the config may yet fail to load. The store it
		// replaces says it is dropped, at info, once it is (Cleanup).
		h.logger.Debug("response_cache starts an empty store (a store is kept across reloads only while its cache_name and max_size stay the same)",
			zap.Int64("max_size", h.MaxSize))
	}
	h.store = v.(*store)
	h.keyUse = v.(*store).noteKeyTemplate(h.Key)
	if h.MinUses != 1 {
		h.uses = v.(*store).useCounts
	}
	h.firstUses = &v.(*store).firstUses
	h.hints = &v.(*store).hints
	h.asIs = &v.(*store).asIs
	h.bg = &background{refreshes: &v.(*store).refreshes}
	h.hintGen = nextHintGeneration()
	h.m = newHandlerMetrics(ctx.GetMetricsRegistry(), h.CacheName)
	h.metricsName = h.CacheName
	return nil
}

// Validate checks the configuration; errors name the field.
func (h *Handler) Validate() error {
	c := &h.Config
	if err := checkMaxSize(c.MaxSize); err != nil {
		return err
	}
	switch {
	case c.MaxItemSize <= 0:
		return fmt.Errorf("max_item_size must be positive, got %d", c.MaxItemSize)
	case c.MaxItemSize > c.MaxSize:
		return fmt.Errorf("max_item_size (%d, %s) must not be larger than max_size (%d, %s)", c.MaxItemSize, SizeString(c.MaxItemSize), c.MaxSize, SizeString(c.MaxSize))
	case c.DefaultTTL < 0:
		return fmt.Errorf("default_ttl must not be negative, got %s", time.Duration(c.DefaultTTL))
	case c.MinUses < 0 || c.MinUses > maxMinUses:
		return fmt.Errorf("min_uses must be from 1 to %d (0 means auto), got %d", maxMinUses, c.MinUses)
	case c.CacheName != "" && !isToken(c.CacheName):
		return fmt.Errorf("cache_name must be a structured-field token (a letter or *, then letters, digits or !#$%%&'*+-.^_`|~:/), got %q", c.CacheName)
	case c.TargetedField != "" && c.TargetedField != "-" && !isFieldName(c.TargetedField):
		return fmt.Errorf("targeted_field must be a header field name or \"-\", got %q", c.TargetedField)
	}
	if c.TargetedField != "" && c.TargetedField != "-" {
		if err := checkTargetedField(c.TargetedField); err != nil {
			return err
		}
	}
	if c.Key != "" && c.Key != DefaultKey {
		if err := checkKey(c.Key); err != nil {
			return fmt.Errorf("key: %w", err)
		}
	}
	return nil
}

// checkKey checks a custom key template: placeholder.CheckKey's rules,
// and no request body, which is empty for every request the cache answers
// or stores (requests with content pass it by).
func checkKey(template string) error {
	if err := placeholder.CheckKey(template); err != nil {
		return err
	}
	if name := placeholder.Body(template); name != "" {
		return fmt.Errorf("%q names {%s}, which is empty for every request the cache stores or answers (requests with content go to the origin), so it tells none of them apart; key on the URI, a header or a cookie", template, name)
	}
	return nil
}

// meaningfulFields are header fields with a meaning of their own in
// HTTP, which cannot also be a targeted cache-control field: read as one,
// the cache would take a cookie, a length or Cache-Control's own syntax
// for directives.
var meaningfulFields = []string{
	"Accept-Ranges", "Age", "Authorization", "Cache-Control", "Cache-Status", "Cache-Tag", "Connection",
	"Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length", "Content-Location",
	"Content-Range", "Content-Type", "Cookie", "Date", "Etag", "Expires", "Host", "Keep-Alive",
	"Last-Modified", "Link", "Location", "Pragma", "Retry-After", "Server", "Set-Cookie",
	"Surrogate-Key", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Vary", "Via", "Warning",
	"Strict-Transport-Security", "Expect-Ct", // max-age of their own
	// Hop-by-hop, which reverse_proxy drops before the cache sees them.
	"Proxy-Authenticate", "Proxy-Authorization", "Proxy-Connection",
	// A request's, never in a response.
	"Accept", "Accept-Charset", "Accept-Encoding", "Accept-Language", "Expect", "From", "If-Match",
	"If-Modified-Since", "If-None-Match", "If-Range", "If-Unmodified-Since", "Max-Forwards", "Origin",
	"Range", "Referer", "User-Agent",
}

// checkTargetedField refuses a targeted_field that names a field with a
// meaning of its own (meaningfulFields).
func checkTargetedField(name string) error {
	if slices.Contains(meaningfulFields, http.CanonicalHeaderKey(name)) {
		return fmt.Errorf("targeted_field %s names a field with a meaning of its own in HTTP, not a targeted cache-control field (RFC 9213) such as CDN-Cache-Control; name the field your origin sets for this cache, or off", name)
	}
	return nil
}

// warnKey logs, at load, a custom key that is valid but probably not what
// was meant: one naming a placeholder that looks like a misspelt
// shorthand (never set unless a map or a plugin sets it: every request
// then bypasses the cache), and one naming no part of the URL (each value
// then shares one entry across every URL of a host).
func (h *Handler) warnKey() {
	if names := placeholder.Misspelt(h.Key); len(names) > 0 {
		h.logger.Warn("response_cache key names placeholders that look like a misspelt shorthand (such as {remote_ip} for {client_ip}); unless a map or a plugin sets them, requests bypass the cache",
			zap.String("key", h.Key), zap.Strings("placeholders", names))
	}
	if names := placeholder.AfterProxy(h.Key); len(names) > 0 {
		h.logger.Warn("response_cache key names placeholders reverse_proxy sets: they have a value only where a reverse_proxy ran before the cache for the request (in handle_response, after forward_auth); elsewhere every request bypasses the cache",
			zap.String("key", h.Key), zap.Strings("placeholders", names))
	}
	if names := placeholder.IPv6OnlyPrefixes(h.Key); len(names) > 0 {
		h.logger.Warn("response_cache key names a client address prefix whose one length fits IPv6 addresses only: Caddy gives every IPv4 client the same, empty, prefix; write /V4,V6 (such as /24,64) unless every client comes over IPv6",
			zap.String("key", h.Key), zap.Strings("placeholders", names))
	}
	if names := placeholder.ZeroPrefixes(h.Key); len(names) > 0 {
		h.logger.Warn("response_cache key names a client address prefix of length 0 for IPv4 or IPv6 addresses: every client of that family has the same prefix; give it a length (such as /24,64) unless no client comes over it",
			zap.String("key", h.Key), zap.Strings("placeholders", names))
	}
	if placeholder.NamesNoURL(h.Key) {
		h.logger.Warn("response_cache key names no part of the URL ({uri}, {path}, {query}...): every URL of a host with the same key shares one entry; add {http.request.orig_uri} (the URI the client sent) unless one response fits them all",
			zap.String("key", h.Key))
	}
}

// warnHeapBodies logs, where stored bodies live on the Go heap (no mmap:
// Windows), that responses of more than about half of max_size are never
// stored: a body there is charged twice, as the rest of an entry's heap
// memory is, and ristretto refuses an entry costing more than max_size.
func (h *Handler) warnHeapBodies(mapped bool) {
	if mapped || h.MaxItemSize <= h.MaxSize/2 {
		return
	}
	h.logger.Warn("on this platform stored bodies live on the Go heap, where each is charged twice, so responses larger than about half of max_size are never stored; lower max_item_size to half of max_size or less, or raise max_size",
		zap.String("max_size", SizeString(h.MaxSize)), zap.String("max_item_size", SizeString(h.MaxItemSize)))
}

// maxMaxSize32 is max_size's limit where addresses have 32 bits
// (GOARCH=arm, 386, mips...): the arena maps up to about 1.3 times
// max_size (recordings and fragmentation slack included) beside the Go
// heap, in the 2 to 3 GiB such a process can address. Past that, Go's
// heap can no longer grow and the process dies: a linux/arm Caddy with
// max_size 8GiB did, at 3.6 GiB of stored responses.
const maxMaxSize32 = 1 << 30

// checkMaxSize reports a max_size the cache cannot work with on this
// platform.
func checkMaxSize(n int64) error { return checkMaxSizeFor(n, strconv.IntSize) }

// checkMaxSizeFor is checkMaxSize on a platform whose addresses have
// addrBits bits.
func checkMaxSizeFor(n int64, addrBits int) error {
	switch {
	case n < minMaxSize:
		return fmt.Errorf("max_size must be at least 64KiB, got %d", n)
	case n > maxMaxSize:
		return fmt.Errorf("max_size must be at most 512GiB, got %d; run more cache nodes behind lb_policy affinity to hold more", n)
	case addrBits == 32 && n > maxMaxSize32:
		return fmt.Errorf("max_size must be at most 1GiB in a 32-bit build (%s/%s), got %d (%s): stored bodies and Go's heap share the 2-3 GiB of memory such a process can address; build Caddy for a 64-bit platform, or run more cache nodes behind lb_policy affinity",
			runtime.GOOS, runtime.GOARCH, n, SizeString(n))
	}
	return nil
}

// Cleanup releases the store; the last handler using it closes it.
func (h *Handler) Cleanup() error {
	if h.metricsName != "" {
		releaseMetrics(h.metricsName)
		h.metricsName = ""
	}
	if h.claimed != nil {
		releaseName(h.claimed, h.CacheName)
		h.claimed = nil
	}
	var dropped bool
	var err error
	if h.poolKey != "" {
		var held int64
		if s, ok := h.store.(*store); ok {
			held = s.held.Load()
		}
		dropped, err = stores.Delete(h.poolKey)
		h.poolKey = "" // once: another handler may hold the same key
		if dropped && held > 0 {
			// At a reload, the misses that refill the new config's store
			// reach the origin: say why.
			// (h.logger names the cache.)
			h.logger.Info("response_cache dropped a store with its entries: no running config uses its cache_name and max_size (a reload keeps a store only while they stay the same; Caddy stopping drops every store)",
				zap.Int64("max_size", h.MaxSize), zap.Int64("entries", held))
		}
	}
	// After the store's drop, if it is dropped: a purge of it then is
	// moot. Not cleared: requests still finishing ask it whether to store.
	if forgot := h.keyUse.release(); forgot != "" && !dropped {
		h.logger.Info("response_cache purged its store: configs no longer loaded keyed entries with more key templates than it remembers, and unsafe requests would no longer invalidate what the oldest stored",
			zap.String("forgotten_key", forgot), zap.Int("templates", maxKeyTemplates))
	}
	return err
}

// isToken reports whether s is an RFC 8941 token.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	c := s[0]
	if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '*') {
		return false
	}
	for i := 1; i < len(s); i++ {
		if !isTchar(s[i]) && s[i] != ':' && s[i] != '/' {
			return false
		}
	}
	return true
}

func isFieldName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTchar(s[i]) {
			return false
		}
	}
	return true
}

func isTchar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// noRequestControl is what ParseRequestControl gives for a request
// without Cache-Control or Pragma; the hit path skips parsing then.
var noRequestControl = RequestControl{MaxAge: -1, MaxStale: -1, MinFresh: -1, StaleIfError: -1}

func requestControl(h http.Header) RequestControl {
	rq := noRequestControl
	if len(h["Cache-Control"]) > 0 || len(h["Pragma"]) > 0 {
		rq = ParseRequestControl(h)
	}
	// If-Match and If-Unmodified-Since are the origin's to evaluate (RFC
	// 9111 §4.3.2): such a request is forwarded like one with no-cache
	// (revalidating a stored response, never waiting for another's).
	if len(h["If-Match"]) > 0 || len(h["If-Unmodified-Since"]) > 0 {
		rq.NoCache, rq.OriginPreconditions = true, true
	}
	return rq
}

// onlyH2C reports whether the Upgrade field values offer only h2c.
func onlyH2C(values []string) bool {
	for _, v := range values {
		for tok := range strings.SplitSeq(v, ",") {
			if !strings.EqualFold(strings.TrimSpace(tok), "h2c") {
				return false
			}
		}
	}
	return true
}

// ServeHTTP answers r from the cache when it can and forwards it to next
// otherwise.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if underCache(w) {
		// One request, one cache: the outer one stores what this one
		// would, and two would each answer and record it.
		h.nested.Do(func() {
			h.logger.Warn("response_cache runs inside another response_cache for this request and passes it on untouched; keep one of them (the directive is given twice in a block, or a route the other wraps has its own)",
				zap.String("uri", r.RequestURI))
		})
		return next.ServeHTTP(w, r)
	}
	if r.Context().Value(caddyhttp.ErrorCtxKey) != nil {
		// An error route (handle_errors) answers for the error, not
		// for the URI alone: a 404 page stored under /missing would
		// answer a request that route gets for a 403 of the same URI,
		// and a stored 200 of the URI would answer its 502.
		h.inErrors.Do(func() {
			h.logger.Warn("response_cache runs in an error route (handle_errors) and passes its requests on untouched: an error page answers for the error, not for the URI; move the cache out of handle_errors",
				zap.String("uri", r.RequestURI))
		})
		return next.ServeHTTP(w, r)
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		if up := r.Header["Upgrade"]; len(up) > 0 {
			if !onlyH2C(up) {
				// A protocol switch (WebSocket): not a response to store
				// or to wait for another client's.
				return h.pass(w, r, next, "bypass")
			}
			// An offer to switch this connection to HTTP/2 (curl
			// --http2, Java's client on http://), which Caddy did not
			// take: declined here too (RFC 9110 §7.8), rather than
			// passed on for the origin to switch the tunnel.
			r.Header.Del("Upgrade")
			r.Header.Del("Http2-Settings")
		}
		if r.ContentLength > 0 || len(r.TransferEncoding) > 0 || r.ContentLength < 0 && probeContent(r) {
			// Content in a GET has no defined meaning (RFC 9110 §9.3.1),
			// but the APIs that send it (search queries) answer by it,
			// and the key cannot tell two bodies apart. HTTP/2 says -1
			// when the stream stays open after the header (0 when it
			// ends with it), HTTP/3 for every request without
			// Content-Length: those are probed.
			if ce := h.logger.Check(zapcore.DebugLevel, "request with content bypasses the cache"); ce != nil {
				ce.Write(zap.String("uri", r.RequestURI), zap.Int64("content_length", r.ContentLength), zap.String("proto", r.Proto),
					zap.String("content", contentSeen(r)))
			}
			defer settleProbe(r.Body)
			return h.pass(w, r, next, "bypass")
		}
	case http.MethodOptions, http.MethodTrace:
		return h.pass(w, r, next, "method")
	case http.MethodConnect:
		// A tunnel (HTTP/2 and HTTP/3 WebSockets use extended CONNECT):
		// like an Upgrade, nothing to store, and nothing it changes.
		return h.pass(w, r, next, "bypass")
	default:
		h.m.bypass.Inc()
		return h.serveUnsafe(w, r, next)
	}

	kb := keyBufs.Get().(*keyBuf)
	defer keyBufs.Put(kb)
	var keyed bool
	kb.url, keyed = h.appendKey(kb.url[:0], r)
	if !keyed {
		return h.pass(w, r, next, "bypass")
	}
	if hasUpperASCII(r.Host) {
		r = withLowerHost(r)
	}
	urlHash := keyHash(kb.url)
	rq := requestControl(r.Header)
	now := h.now()

	fwd := "uri-miss"
	var record *entry
	var variantHash uint64
	// Read before the lookups: a response fetched on what they found is
	// not stored past a purge that came after them (store.purgedSince).
	epoch := h.store.epoch()
	ended := h.flights.endedMark(urlHash)
	e := h.store.get(urlHash, kb.url)
	if e != nil && e.record {
		record = e
		kb.variant = appendVariantKey(kb.variant[:0], kb.url, e.gen, requestVaryKey(e.vary, r))
		variantHash = keyHash(kb.variant)
		e = h.store.get(variantHash, kb.variant)
		if e == nil {
			fwd = "vary-miss"
		}
	}
	// Hold the body while this request uses the entry; one the store let
	// go of in the meantime is a miss.
	if e != nil && !e.body.acquire() {
		e = nil
	}
	if e != nil {
		defer e.body.release()
		e.noteUse(h.firstUses)
	}

	if e != nil {
		fresh := h.freshness(e)
		ttl := fresh.TTL(now)
		// RFC 9111 §4.2, §5.2.1: fresh enough for the client, or stale
		// within its max-stale.
		if fresh.Satisfies(now, rq, e.rc) {
			st := Status{Hit: true, TTL: ttl, HasTTL: true}
			if ttl <= 0 {
				st.Detail = "max-stale"
				h.m.stale.Inc()
			} else {
				h.m.hit.Inc()
			}
			h.serveEntry(w, r, e, st, now)
			return nil
		}
		// RFC 5861 §3: serve now, revalidate once in the background.
		if ttl <= 0 {
			swr, _ := StaleAllowance(e.rc, rq, time.Duration(h.StaleWhileRevalidate), time.Duration(h.StaleIfError))
			if swr > 0 && -ttl <= swr {
				h.m.stale.Inc()
				if !rq.NoStore && !rq.OnlyIfCached && !h.presetKeepsOut(h.presetFields(w.Header())) {
					// A refresh is for storing, which this request forbids
					// (RFC 9111 §5.2.1.5), or would reach the origin for a
					// client that asked for a stored response only
					// (§5.2.1.7), or, marked private by the handlers before
					// the cache (a logged-in user's), with cookies that may
					// make the origin's answer hers alone, stored for all
					// (presetKeepsOut): the next request starts it.
					h.revalidateInBackground(r, e, record, next, epoch)
				}
				h.serveEntry(w, r, e, Status{Hit: true, TTL: ttl, HasTTL: true, Detail: "stale-while-revalidate"}, now)
				return nil
			}
		}
		if rq.OnlyIfCached {
			return h.onlyIfCached(w, kb.url)
		}
		// RFC 9211 §2.2.2: "request" when the request kept a fresh
		// response from being used, "stale" for a stale one, whatever
		// the request said.
		fwd = "stale"
		if ttl > 0 {
			fwd = "request"
		}
		x := &exchange{fwd: fwd, stale: e, record: record, rq: rq, urlHash: urlHash, urlKey: kb.url, epoch: epoch, endedMark: ended, result: h.m.revalidate}
		if record != nil {
			x.variantKey, x.variantHash = kb.variant, variantHash
		}
		return h.forward(w, r, next, x)
	}

	if rq.OnlyIfCached {
		return h.onlyIfCached(w, kb.url)
	}
	x := &exchange{fwd: fwd, record: record, rq: rq, urlHash: urlHash, urlKey: kb.url, epoch: epoch, endedMark: ended, result: h.m.miss}
	if record != nil {
		x.variantKey, x.variantHash = kb.variant, variantHash
	}
	return h.forward(w, r, next, x)
}

// freshness is e's freshness under this config: a lifetime that came
// from default_ttl is at most the current default_ttl, and one from the
// heuristic at most heuristic_max, so that a reload lowering or removing
// them applies to the responses stored under the old one (the store
// outlives reloads that keep its cache_name and max_size).
func (h *Handler) freshness(e *entry) Freshness { return h.capped(e.fresh) }

// capped is f under this config's default_ttl and heuristic_max (see
// freshness).
func (h *Handler) capped(f Freshness) Freshness {
	if f.Defaulted {
		f.Lifetime = min(f.Lifetime, time.Duration(h.DefaultTTL))
	}
	if f.Heuristic {
		f.Lifetime = min(f.Lifetime, h.heuristicMax())
	}
	return f
}

// defaultHeuristicMax is heuristic_max when the config sets none.
const defaultHeuristicMax = 24 * time.Hour

// heuristicMax is the longest lifetime the heuristic gives (heuristic_max;
// none when it is off).
func (h *Handler) heuristicMax() time.Duration {
	switch {
	case h.HeuristicMax < 0:
		return 0
	case h.HeuristicMax == 0:
		return defaultHeuristicMax
	}
	return time.Duration(h.HeuristicMax)
}

// ttl is e's remaining freshness at now under this config: positive
// while fresh, zero or negative (the staleness) once stale.
func (h *Handler) ttl(e *entry, now time.Time) time.Duration { return h.freshness(e).TTL(now) }

// serveEntry writes e to w: a 304 when the client's conditional request is
// satisfied, a 206 or 416 for a single Range of a stored 200, no body for
// HEAD. The stored fields are unpacked into the response's header as
// substrings, with one allocation for all their value slices and those of
// Age and Cache-Status, which are rendered into one string (the other
// allocation).
func (h *Handler) serveEntry(w http.ResponseWriter, r *http.Request, e *entry, st Status, now time.Time) {
	hdr := w.Header()
	// The caching fields handlers before the cache set for this request
	// go first, as on a miss (prependPreset); the stored response keeps
	// those of its filling request apart (entry.preset).
	preset, anyPreset := h.presetValues(hdr)
	var before []presetField
	if e.proxied {
		before = h.setBefore(hdr, make([]presetField, 0, 8))
	}
	var ownServer []string
	if e.server == serverAdded {
		ownServer = hdr["Server"]
	}
	vals, prevStatus, server := e.header.addTo(hdr, 2)
	if server && len(ownServer) > 0 {
		hdr["Server"] = append(slices.Clip(ownServer), hdr["Server"]...)
	}
	// As on the miss (recorder.copyToClient): reverse_proxy's response
	// has its lines after those set before it.
	for _, f := range before {
		if v := hdr[f.name]; len(v) > 0 && &v[0] != &f.pre[0] {
			hdr[f.name] = append(slices.Clip(f.pre), v...)
		}
	}
	if e.server == serverDropped && !server {
		// As on its miss: the handler after the cache dropped the
		// client's Server field (reverse_proxy does, for Via), and the
		// origin sent none.
		delete(hdr, "Server")
	}
	if anyPreset {
		for i, f := range h.presetNames {
			if pv := preset[i]; pv != nil {
				hdr[f] = prependPreset(pv, hdr[f])
			}
		}
	}
	if h.StatusKey {
		st.Key = e.urlKey()
	}
	var buf [512]byte
	b := strconv.AppendInt(buf[:0], int64(e.currentAge(now)/time.Second), 10)
	n := len(b)
	b = appendStoredStatus(b, prevStatus, h.CacheName, st)
	s := string(b)
	vals[0], vals[1] = s[:n], s[n:]
	hdr["Age"] = vals[0:1:1]
	hdr["Cache-Status"] = vals[1:2:2]

	status := e.status
	start, end := 0, e.body.Len()
	// A cache evaluates the preconditions of a request whose answer would
	// be 2xx (RFC 9110 §13.2.1): a stored 203 or 204 as a 200.
	if status >= 200 && status < 300 && (len(r.Header["If-None-Match"]) > 0 || len(r.Header["If-Modified-Since"]) > 0) &&
		ClientNotModified(r, &e.header) {
		notModifiedHeader(hdr)
		w.WriteHeader(http.StatusNotModified)
		sendBodiless(w)
		return
	}
	if status == http.StatusOK {
		// An empty body has no byte to serve a range of: the 200, as a
		// miss gets it (and as Go's file server and nginx answer).
		if rg := r.Header["Range"]; len(rg) == 1 && end > 0 && r.Method == http.MethodGet && ifRangeMatches(r, &e.header) && !rewritesBody(w, e.header.Get("Content-Type")) {
			size := int64(end)
			br, ok, satisfiable := ParseRange(rg[0], size)
			if ok {
				// A digest of the whole content is wrong for a part (RFC
				// 9530 §2: Content-Digest covers the message's content).
				delete(hdr, "Content-Digest")
				delete(hdr, "Content-Md5")
			}
			switch {
			case ok && satisfiable:
				start, end = int(br.Start), int(br.End+1)
				status = http.StatusPartialContent
				hdr["Content-Range"] = []string{br.ContentRange(size)}
				hdr["Content-Length"] = []string{strconv.Itoa(end - start)}
			case ok:
				// The 416 is not the stored response: its caching and
				// validator fields, and those of its content, would
				// describe the 200 (a downstream cache could store the
				// 416 for the URL under the 200's max-age).
				for _, f := range notRepresentationFields {
					delete(hdr, f)
				}
				if h.targeted != "" {
					delete(hdr, http.CanonicalHeaderKey(h.targeted))
				}
				// What handlers before the cache set for this request
				// stays, as on any response they wrap.
				for i, f := range h.presetNames {
					if pv := preset[i]; anyPreset && pv != nil && hdr[f] == nil {
						hdr[f] = pv // (one deleted above; others keep their merged lines)
					}
				}
				hdr["Content-Range"] = []string{"bytes */" + strconv.FormatInt(size, 10)}
				hdr["Content-Length"] = []string{"0"}
				w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
				return
			}
		}
	}
	w.WriteHeader(status)
	if status == http.StatusNoContent {
		sendBodiless(w)
	}
	if r.Method == http.MethodHead {
		return
	}
	if f := e.body.filling(); f != nil {
		// A waiter of a fill whose body is still arriving.
		err := e.body.writeFilling(r.Context(), w, f, start, end)
		if errors.Is(err, errFillFailed) {
			// As reverse_proxy ends a response whose origin broke off:
			// the client must not take it for whole.
			panic(http.ErrAbortHandler)
		}
		if err == nil {
			// Trailer fields no Trailer field announced come at the end
			// (from an HTTP/2 or HTTP/3 origin), as the leader's client
			// gets them (recorder.finishTrailers); such a response is
			// not stored.
			for k, v := range f.awaitEnd(r.Context()) {
				w.Header()[k] = v
			}
		}
		return
	}
	_ = e.body.writeRange(w, start, end)
}

// sendBodiless sends a response without content (a 304, a 204) at once:
// HTTP/3's server (quic-go) gives a response whose handler returns before
// anything is sent a Content-Length of the bytes written, 0, which a 204
// must not carry and a 304 only with the stored 200's length (RFC 9110
// §8.6; a review saw it on hits).
func sendBodiless(w http.ResponseWriter) {
	_ = http.NewResponseController(w).Flush()
}

// notRepresentationFields are the stored fields a 416 answered from an
// entry leaves out: they describe the stored 200, its freshness and its
// content, not the 416. (Content-Encoding stays: Content-Range's length
// is the encoded one's.)
var notRepresentationFields = []string{
	"Age", "Cache-Control", "Cdn-Cache-Control", "Expires", "Pragma", "Etag", "Last-Modified",
	"Content-Type", "Content-Language", "Content-Location", "Content-Disposition",
	"Content-Digest", "Content-Md5", "Repr-Digest",
}

// ifRangeMatches evaluates If-Range (RFC 9110 §13.1.5) against the stored
// validators: a strong ETag match or an exact Last-Modified date. If-Range
// in more than one line is neither one entity-tag nor one date, and matches
// nothing.
func ifRangeMatches(r *http.Request, stored HeaderReader) bool {
	lines := r.Header["If-Range"]
	if len(lines) == 0 || len(lines) == 1 && lines[0] == "" {
		return true
	}
	if len(lines) > 1 {
		return false
	}
	ir := lines[0]
	if strings.HasPrefix(ir, `"`) {
		etag := stored.Get("Etag")
		return etag != "" && !strings.HasPrefix(etag, "W/") && etag == ir
	}
	if strings.HasPrefix(ir, "W/") {
		return false
	}
	// A date is a strong validator only when the response was generated
	// at least a second after it (RFC 9110 §8.8.2.2, §13.1.5).
	lm := stored.Get("Last-Modified")
	if lm == "" || lm != ir {
		return false
	}
	modified, err1 := parseHTTPDate(lm)
	date, err2 := parseHTTPDate(stored.Get("Date"))
	return err1 == nil && err2 == nil && date.Sub(modified) >= time.Second
}

// appendCacheStatus appends the Cache-Status value: the members already
// present (from caches nearer the origin), then ours (RFC 9211 §2). A line
// that is not a structured-field list is left out (statusLine).
func appendCacheStatus(dst []byte, prev []string, name string, st Status) []byte {
	for _, p := range prev {
		if p, ok := statusLine(p); ok {
			dst = append(dst, p...)
			dst = append(dst, ", "...)
		}
	}
	return AppendStatus(dst, name, st)
}

// appendStoredStatus is appendCacheStatus for the Cache-Status lines of a
// stored response, which packStorable keeps only in the form statusLine
// gives: a hit does not parse them again.
func appendStoredStatus(dst []byte, prev []string, name string, st Status) []byte {
	for _, p := range prev {
		dst = append(dst, p...)
		dst = append(dst, ", "...)
	}
	return AppendStatus(dst, name, st)
}

// statusLine returns a Cache-Status line from upstream as it is passed on,
// without the empty members an upstream left at its ends (" , "), which a
// structured-field list has none of (RFC 8941 §4.2.1), and whether it is
// passed on: not when empty, nor when it is not a structured-field list,
// which a recipient that parsed the field would discard whole, ours too
// (RFC 8941 §4.2; a review saw an origin's `bad "stuff` make every
// response's unreadable).
func statusLine(p string) (string, bool) {
	p = strings.Trim(p, " \t,")
	return p, p != "" && isSFList(p)
}

// setCacheStatus sets the Cache-Status of a response about to be written
// to the client, after the members the origin sent.
func (h *Handler) setCacheStatus(hdr http.Header, st Status) {
	var buf [512]byte
	hdr["Cache-Status"] = []string{string(appendCacheStatus(buf[:0], hdr["Cache-Status"], h.CacheName, st))}
}

// statusKey is key as Cache-Status shows it: only with status_key.
func (h *Handler) statusKey(key []byte) string {
	if !h.StatusKey {
		return ""
	}
	return string(key)
}

// onlyIfCached answers 504 from the cache to a request with
// only-if-cached that it has no response for (RFC 9111 §5.2.1.7): the
// answer the client asked for, not an error of the server's, so neither
// logged as one nor sent to handle_errors.
func (h *Handler) onlyIfCached(w http.ResponseWriter, key []byte) error {
	h.m.errors.Inc()
	h.setCacheStatus(w.Header(), Status{Key: h.statusKey(key), Detail: "only-if-cached"})
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusGatewayTimeout)
	return nil
}

// pass forwards r, which the cache does not handle, with Cache-Status
// fwd=<fwd>, counted as a bypass.
func (h *Handler) pass(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler, fwd string) error {
	h.m.bypass.Inc()
	pw := &passWriter{ResponseWriter: w, h: h, fwd: fwd}
	return pw.failed(next.ServeHTTP(pw, r))
}

// underCache reports whether w is, or wraps, the writer a response_cache
// handed the next handler: the request already passed through one.
func underCache(w http.ResponseWriter) bool {
	for range 32 { // wrappers that wrap themselves, if any, end the search
		switch v := w.(type) {
		case *recorder, *passWriter:
			return true
		case interface{ Unwrap() http.ResponseWriter }:
			w = v.Unwrap()
		default:
			return false
		}
	}
	return false
}

// passWriter forwards a response the cache does not handle, adding
// Cache-Status with fwd (method or bypass).
type passWriter struct {
	http.ResponseWriter
	h      *Handler
	fwd    string
	status int
}

func (p *passWriter) WriteHeader(status int) {
	if p.status == 0 && (status < 100 || status > 199 || status == http.StatusSwitchingProtocols) {
		p.status = status
		p.h.setCacheStatus(p.ResponseWriter.Header(), Status{Fwd: p.fwd, FwdStatus: status})
	}
	p.ResponseWriter.WriteHeader(status)
}

func (p *passWriter) Write(b []byte) (int, error) {
	if p.status == 0 {
		p.WriteHeader(http.StatusOK)
	}
	return p.ResponseWriter.Write(b)
}

// failed returns err, the next handler's; when it wrote nothing, Caddy
// writes the error response (reverse_proxy's 502) with the client's
// header, which then says that the cache forwarded the request, as on a
// miss (finish).
func (p *passWriter) failed(err error) error {
	if err != nil && p.status == 0 {
		p.h.setCacheStatus(p.ResponseWriter.Header(), Status{Fwd: p.fwd})
	}
	return err
}

// Unwrap returns the client's ResponseWriter for http.ResponseController.
func (p *passWriter) Unwrap() http.ResponseWriter { return p.ResponseWriter }

// Interface guards
var (
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyfile.Unmarshaler       = (*Handler)(nil)
)
