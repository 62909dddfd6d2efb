package cache

import (
	"net/http"
	"strconv"
	"strings"
)

// This file holds validation (RFC 9111 §4.3): the conditional request a
// cache sends to refresh a stale entry, how a 304 refreshes it, and when a
// client's own conditional request can be answered with a 304.

// HeaderReader reads the fields of a stored response by canonical name:
// an http.Header, or the packed form the cache stores.
type HeaderReader interface {
	Get(name string) string
	Values(name string) []string
}

// SetConditionalHeaders adds If-None-Match (from the stored ETag) and
// If-Modified-Since (from the stored Last-Modified) to out (RFC 9111 §4.3.1)
// and reports whether it added any.
//
// The client's own If-None-Match, If-Modified-Since and If-Range are
// removed from out first: the origin's answer must be about the stored
// response, and a 304 meant for the client's copy could not refresh ours.
// The cache evaluates them against the refreshed entry (ClientNotModified).
// If-Match and If-Unmodified-Since stay: the cache does not evaluate them
// (RFC 9111 §4.3.2), the origin does, before If-None-Match (RFC 9110
// §13.2.2), so its 304 still means the stored response is current.
// Last-Modified is only sent when it is a valid HTTP-date.
func SetConditionalHeaders(stored HeaderReader, out http.Header) bool {
	for _, f := range [...]string{"If-None-Match", "If-Modified-Since", "If-Range"} {
		delete(out, f)
	}
	added := false
	if etag := strings.TrimSpace(stored.Get("Etag")); etag != "" {
		out.Set("If-None-Match", etag)
		added = true
	}
	if lm := strings.TrimSpace(stored.Get("Last-Modified")); lm != "" {
		if _, err := parseHTTPDate(lm); err == nil {
			out.Set("If-Modified-Since", lm)
			added = true
		}
	}
	return added
}

// ClientNotModified reports whether a client's conditional GET/HEAD is
// satisfied by a stored response with header stored (RFC 9110 §13.1.2,
// §13.1.3, §13.2.2: If-None-Match, weak comparison, takes precedence).
//
// If-None-Match: "*" matches any stored response; otherwise any listed
// entity-tag that weakly matches the stored ETag. If-Modified-Since is
// evaluated only without If-None-Match and only when it is a valid
// HTTP-date; it is compared with the stored Last-Modified, or the stored
// Date when there is no Last-Modified (RFC 9111 §4.3.2). Without either
// (or with differing values) nothing is concluded and the answer is false.
// If-Match and If-Unmodified-Since are ignored here (RFC 9111 §4.3.2); the
// caller forwards or ignores them.
func ClientNotModified(req *http.Request, stored HeaderReader) bool {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		return false
	}
	if inm, ok := req.Header["If-None-Match"]; ok {
		return etagListMatches(inm, stored)
	}
	// More than one line is a list of dates, which is no HTTP-date: the
	// field is ignored (RFC 9110 §13.1.3).
	imsLines := req.Header["If-Modified-Since"]
	if len(imsLines) != 1 {
		return false
	}
	ims := strings.TrimSpace(imsLines[0])
	if ims == "" {
		return false
	}
	since, err := parseHTTPDate(ims)
	if err != nil {
		return false
	}
	validator := "Last-Modified"
	if stored.Values("Last-Modified") == nil {
		validator = "Date"
	}
	t, unambiguous := headerDate(stored, validator)
	if !unambiguous || t.IsZero() {
		return false
	}
	return !t.After(since)
}

// etagListMatches evaluates If-None-Match lines: true when the list is "*"
// or one of its entity-tags weakly matches the stored ETag (RFC 9110
// §8.8.3.2), or is that tag without the suffix Caddy's encode gave it for
// the stored Content-Encoding: an encode in front of the cache strips
// "-gzip" from the tags a client sends back, as it does for the origin
// (a review: every revalidation of a response an origin compressed itself
// was a whole 200, where plain reverse_proxy got the origin's 304).
func etagListMatches(lines []string, stored HeaderReader) bool {
	raw := strings.TrimSpace(stored.Get("Etag"))
	etag, ok := opaqueTag(raw)
	coding := "" // encode suffixes strong tags only
	if ok && !strings.HasPrefix(raw, "W/") {
		coding = strings.TrimSpace(stored.Get("Content-Encoding"))
	}
	for _, line := range lines {
		rest := line
		for {
			rest = strings.TrimLeft(rest, " \t,")
			if rest == "" {
				break
			}
			if rest[0] == '*' {
				return true
			}
			tag, next := nextEntityTag(rest)
			if tag == "" {
				break // malformed: stop reading this line
			}
			if ok && (tag == etag || coding != "" && suffixedTag(etag, tag, coding)) {
				return true
			}
			rest = next
		}
	}
	return false
}

// nextEntityTag reads one entity-tag ([W/] DQUOTE *etagc DQUOTE) at the
// start of s and returns its opaque-tag (with quotes) and the rest.
func nextEntityTag(s string) (opaque, rest string) {
	s = strings.TrimPrefix(s, "W/")
	if len(s) < 2 || s[0] != '"' {
		return "", ""
	}
	end := strings.IndexByte(s[1:], '"')
	if end < 0 {
		return "", ""
	}
	return s[:end+2], s[end+2:]
}

// opaqueTag returns the opaque-tag of an ETag value, dropping the weakness
// indicator, and whether it is a well-formed entity-tag.
func opaqueTag(etag string) (string, bool) {
	tag, rest := nextEntityTag(etag)
	return tag, tag != "" && strings.TrimSpace(rest) == ""
}

// Selects304 reports whether a 304 answering the cache's conditional
// request identifies the stored response for update (RFC 9111 §4.3.4). An
// ETag in the 304 must have the stored ETag's opaque-tag (the conditional
// request named only that tag, so a difference in weakness is the
// origin's labelling, not another representation); without an ETag, a Last-Modified in the
// 304 must equal the stored one. A 304 with neither updates the response
// the request asked about: an origin must send the ETag it would send
// with a 200 (RFC 9110 §15.4.5), so nothing contradicts the stored one.
// Values that are not well formed select only when identical.
//
// A stored response that Caddy's encode compressed carries the origin's
// strong ETag with "-<coding>" appended; encode strips it from the
// conditional request and leaves the 304's ETag alone, so that ETag
// selects the stored one too (see encodedETag).
func Selects304(stored HeaderReader, notModified http.Header) bool {
	if vs := notModified["Etag"]; len(vs) > 0 {
		return selectsByETag(stored, vs[0])
	}
	if vs := notModified["Last-Modified"]; len(vs) > 0 {
		return selectsByDate(stored, vs[0])
	}
	return true
}

// headVerdict is what a 200 answering a HEAD request means for the stored
// GET response it could have been served from (RFC 9111 §4.3.5).
type headVerdict int

const (
	headKeeps       headVerdict = iota // says nothing of it: leave it as it is
	headUpdates                        // describes it: its fields update it
	headInvalidates                    // describes another version of it
)

// judgeHead compares head, the header of a 200 answering a HEAD request,
// with the stored GET response (status, fields, body of bodyLen bytes).
// A validator head has that does not select the stored response (as a
// 304's would not, Selects304), or another Content-Length for the same
// Content-Encoding, shows the stored response is out of date. Otherwise
// head updates it if it carries a validator that selects it, or if the
// stored response has none to compare; a head with another
// Content-Encoding (Caddy's encode leaves a HEAD it cannot size
// uncompressed) or without the validators the stored response has says
// nothing of it.
func judgeHead(status int, stored HeaderReader, bodyLen int, head http.Header) headVerdict {
	if status != http.StatusOK {
		return headInvalidates // the resource now answers 200
	}
	etag, lastModified := head["Etag"], head["Last-Modified"]
	if len(etag) > 0 && !selectsByETag(stored, etag[0]) ||
		len(lastModified) > 0 && !selectsByDate(stored, lastModified[0]) {
		return headInvalidates
	}
	if !strings.EqualFold(contentCoding(head.Get("Content-Encoding")), contentCoding(stored.Get("Content-Encoding"))) {
		return headKeeps
	}
	if vs := head["Content-Length"]; len(vs) > 0 {
		n, err := strconv.ParseInt(strings.TrimSpace(vs[0]), 10, 64)
		if err != nil || n != int64(bodyLen) {
			return headInvalidates
		}
	}
	if len(etag) == 0 && len(lastModified) == 0 && hasValidator(stored) {
		return headKeeps
	}
	return headUpdates
}

// hasValidator reports whether h has an ETag or a Last-Modified to
// revalidate with.
func hasValidator(h HeaderReader) bool {
	return len(h.Values("Etag")) > 0 || len(h.Values("Last-Modified")) > 0
}

// contentCoding is a Content-Encoding value with identity as "".
func contentCoding(v string) string {
	v = strings.TrimSpace(v)
	if strings.EqualFold(v, "identity") {
		return ""
	}
	return v
}

// selectsByETag reports whether etag, received from the origin, names the
// stored response: its ETag, or the same opaque-tag with another
// weakness, or the tag encode rewrote into the stored one.
func selectsByETag(stored HeaderReader, etag string) bool {
	got, have := strings.TrimSpace(etag), strings.TrimSpace(stored.Get("Etag"))
	if got == have || encodedETag(stored, got) {
		return true
	}
	gotTag, ok1 := opaqueTag(got)
	haveTag, ok2 := opaqueTag(have)
	// Same opaque-tag, different weakness: the 304 answers the
	// cache's own If-None-Match, which named only the stored tag.
	// (A strong 304 for a weak stored tag is what nginx sends for a
	// response it compressed: it weakens the 200's tag, not the
	// 304's.)
	return ok1 && ok2 && gotTag == haveTag
}

// selectsByDate reports whether lastModified, received from the origin,
// is the stored response's Last-Modified.
func selectsByDate(stored HeaderReader, lastModified string) bool {
	got, have := strings.TrimSpace(lastModified), strings.TrimSpace(stored.Get("Last-Modified"))
	if got == have {
		return true
	}
	t1, err1 := parseHTTPDate(got)
	t2, err2 := parseHTTPDate(have)
	return err1 == nil && err2 == nil && t1.Equal(t2)
}

// encodedETag reports whether the stored ETag is etag as Caddy's encode
// rewrites it for the stored Content-Encoding: "x" becomes "x-gzip".
func encodedETag(stored HeaderReader, etag string) bool {
	coding := strings.TrimSpace(stored.Get("Content-Encoding"))
	if coding == "" || len(etag) < 2 || etag[0] != '"' || etag[len(etag)-1] != '"' {
		return false
	}
	return suffixedTag(strings.TrimSpace(stored.Get("Etag")), etag, coding)
}

// suffixedTag reports whether encoded is the quoted tag with "-coding"
// before its closing quote, as encode writes it ("x" and gzip: "x-gzip").
func suffixedTag(encoded, tag, coding string) bool {
	n := len(tag) - 1 // tag without its closing quote
	return n > 0 && len(encoded) == n+1+len(coding)+1 &&
		encoded[:n] == tag[:n] && encoded[n] == '-' &&
		encoded[n+1:n+1+len(coding)] == coding && encoded[len(encoded)-1] == '"'
}

// UpdateFrom304 returns a new header: stored updated with the fields of a
// 304 response (RFC 9111 §3.2, §4.3.4), except Content-Length and other
// framing fields.
//
// Each field present in the 304 replaces all of the stored field's lines;
// fields absent from the 304 are kept. Not taken from the 304: the fields
// StorableHeader never stores (hop-by-hop, those named in its Connection,
// Proxy-Authenticate, Proxy-Authorization), Content-Length and
// Content-Range (§3.2: they describe the 304's own framing, and a stored
// 200 of 100 bytes would carry "bytes 0-9/10"), and Content-Encoding,
// which the stored body's bytes depend on (§3.2 lets a cache keep such
// fields; a 304 that names another coding would label identity bytes
// gzip) — the stored body is unchanged. The result shares value slices with its
// inputs; the caller packs it for storage (which copies), re-parses
// Cache-Control from it and recomputes freshness with the 304's request
// and response times.
func UpdateFrom304(stored, notModified http.Header) http.Header {
	update := StorableHeader(notModified, ResponseControl{})
	delete(update, "Content-Length")
	delete(update, "Content-Range")
	delete(update, "Content-Encoding")
	merged := make(http.Header, len(stored)+len(update))
	for k, v := range stored {
		if _, replaced := update[k]; !replaced {
			merged[k] = v
		}
	}
	for k, v := range update {
		merged[k] = v
	}
	return merged
}
