package cache

import (
	"net/http"
	"time"
)

// CONTRACT STUB: the helper that owns the HTTP caching rules replaces this
// file with rules files (cachecontrol.go, freshness.go, vary.go,
// validation.go, status.go, ranges.go) keeping these exported names and
// signatures; the handler codes against them. Bodies here are placeholders.

// ResponseControl is a response's parsed Cache-Control (RFC 9111 §5.2.2,
// RFC 5861), or its targeted field (RFC 9213) when that was present and
// valid. Durations are -1 when the directive is absent.
type ResponseControl struct {
	MaxAge, SMaxAge                    time.Duration
	StaleWhileRevalidate, StaleIfError time.Duration
	NoStore, NoCache, Private, Public  bool
	MustRevalidate, ProxyRevalidate    bool
	MustUnderstand, Immutable          bool
	NoCacheFields, PrivateFields       []string // qualified no-cache="F" / private="F": strip F before storing
	Invalid                            bool     // a freshness directive was duplicated or malformed: treat as stale
	Targeted                           bool     // parsed from the targeted field, not Cache-Control
}

// ParseResponseControl parses h's Cache-Control, or the targeted field
// named targetedField (e.g. "CDN-Cache-Control"; "" or "-" for none) when
// that is present and parses as an RFC 8941 dictionary.
func ParseResponseControl(h http.Header, targetedField string) ResponseControl {
	return ResponseControl{MaxAge: -1, SMaxAge: -1, StaleWhileRevalidate: -1, StaleIfError: -1}
}

// MayServeStale reports whether a stale copy may ever be served without
// revalidation (false under must-revalidate, proxy-revalidate, s-maxage,
// no-cache; RFC 9111 §4.2.4, §5.2.2).
func (rc ResponseControl) MayServeStale() bool { return false }

// RequestControl is a request's parsed Cache-Control (RFC 9111 §5.2.1),
// with Pragma: no-cache honoured when Cache-Control is absent. Durations
// are -1 when absent; MaxStale is MaxStaleAny for a bare max-stale.
type RequestControl struct {
	MaxAge, MaxStale, MinFresh, StaleIfError time.Duration
	NoCache, NoStore, OnlyIfCached           bool
}

// MaxStaleAny is RequestControl.MaxStale for max-stale without a value.
const MaxStaleAny = time.Duration(1<<63 - 1)

// ParseRequestControl parses the request directives in h.
func ParseRequestControl(h http.Header) RequestControl {
	return RequestControl{MaxAge: -1, MaxStale: -1, MinFresh: -1, StaleIfError: -1}
}

// Storable reports why a response to req may not be stored by a shared
// cache ("" when it may): RFC 9111 §3 with §3.5 (Authorization), plus
// Set-Cookie responses unless allowSetCookie. hasLifetime says whether
// the response has explicit or heuristic freshness, or a default TTL.
func Storable(req *http.Request, status int, h http.Header, rc ResponseControl, hasLifetime, allowSetCookie bool) string {
	return "stub"
}

// HeuristicallyCacheable reports whether status is cacheable by default
// (RFC 9110 §15.1).
func HeuristicallyCacheable(status int) bool { return false }

// Lifetime returns the freshness lifetime of a response (RFC 9111 §4.2.1:
// s-maxage over max-age over Expires-Date; §4.2.2 heuristic at most 10% of
// Date-Last-Modified for heuristically cacheable statuses; else
// defaultTTL) and whether it has any (false: nothing gave it a lifetime).
// An invalid or duplicated freshness value gives lifetime 0, true (stale).
func Lifetime(status int, h http.Header, rc ResponseControl, defaultTTL time.Duration) (time.Duration, bool) {
	return 0, false
}

// InitialAge is the corrected initial age of a response received at
// responseTime for a request sent at requestTime (RFC 9111 §4.2.3). ok is
// false when Age is invalid, which makes the response stale.
func InitialAge(h http.Header, requestTime, responseTime time.Time) (age time.Duration, ok bool) {
	return 0, true
}

// StorableHeader returns a copy of h fit for storage: without hop-by-hop
// fields, fields named in Connection, Proxy-Authenticate,
// Proxy-Authorization, and the fields named in rc.NoCacheFields and
// rc.PrivateFields (RFC 9111 §3.1). Each value slice has len == cap.
func StorableHeader(h http.Header, rc ResponseControl) http.Header { return h.Clone() }

// ParseVary returns the canonical field names listed in h's Vary fields,
// sorted and deduplicated, and whether Vary contains "*".
func ParseVary(h http.Header) (fields []string, star bool) { return nil, false }

// VaryKey returns the normalised values of fields in req (RFC 9111 §4.1):
// whitespace collapsed, combined field lines joined; an absent field is
// distinct from an empty one.
func VaryKey(fields []string, req http.Header) string { return "" }

// SetConditionalHeaders adds If-None-Match (from the stored ETag) and
// If-Modified-Since (from the stored Last-Modified) to out (RFC 9111 §4.3.1)
// and reports whether it added any.
func SetConditionalHeaders(stored http.Header, out http.Header) bool { return false }

// ClientNotModified reports whether a client's conditional GET/HEAD is
// satisfied by a stored response with header stored (RFC 9110 §13.1.2,
// §13.1.3, §13.2.2: If-None-Match, weak comparison, takes precedence).
func ClientNotModified(req *http.Request, stored http.Header) bool { return false }

// UpdateFrom304 returns a new header: stored updated with the fields of a
// 304 response (RFC 9111 §3.2, §4.3.4), except Content-Length and other
// framing fields.
func UpdateFrom304(stored, notModified http.Header) http.Header { return stored.Clone() }

// ByteRange is one satisfiable range of a representation, [Start, End].
type ByteRange struct{ Start, End int64 }

// ParseRange parses a single-range Range header against a representation
// of size bytes (RFC 9110 §14.2). ok is false when the header is absent,
// malformed, multi-range or not bytes (serve the full 200 instead);
// satisfiable is false for a valid range outside the body (answer 416).
func ParseRange(header string, size int64) (r ByteRange, ok, satisfiable bool) {
	return ByteRange{}, false, false
}

// Status is one Cache-Status member (RFC 9211).
type Status struct {
	Hit       bool
	Fwd       string        // uri-miss, vary-miss, miss, request, stale, bypass, method, partial; "" for a hit
	FwdStatus int           // 0: omit
	TTL       time.Duration // remaining freshness (negative when stale); used when HasTTL
	HasTTL    bool
	Stored    bool
	Collapsed bool
	Key       string // omitted when ""
	Detail    string // omitted when ""
}

// AppendStatus appends s as a structured-field list member for cacheName
// to dst (e.g. `caddy; hit; ttl=42`).
func AppendStatus(dst []byte, cacheName string, s Status) []byte { return append(dst, cacheName...) }
