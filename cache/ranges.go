package cache

import (
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/encode"
)

// ByteRange is one satisfiable range of a representation, [Start, End].
type ByteRange struct{ Start, End int64 }

// Length is the number of bytes in r.
func (r ByteRange) Length() int64 { return r.End - r.Start + 1 }

// ContentRange is the Content-Range of r, a part of size bytes (RFC 9110
// §14.4): "bytes first-last/size".
func (r ByteRange) ContentRange(size int64) string {
	return "bytes " + strconv.FormatInt(r.Start, 10) + "-" + strconv.FormatInt(r.End, 10) + "/" + strconv.FormatInt(size, 10)
}

// ParseRange parses a single-range Range header against a representation
// of size bytes (RFC 9110 §14.2). ok is false when the header is absent,
// malformed, multi-range or not bytes (serve the full 200 instead);
// satisfiable is false for a valid range outside the body (answer 416).
//
// Accepted forms are "bytes=a-b" (b clamped to size-1), "bytes=a-" and
// the suffix "bytes=-n" (the last n bytes, all of them when n >= size).
// The unit is case-insensitive and empty list members are ignored (RFC
// 9110 §5.6.1). A range starting at or past size, or a suffix of 0, is
// unsatisfiable: answer 416 with "Content-Range: bytes */size". A suffix
// range of an empty representation gives ok=false (serve the empty 200),
// since no byte range of it exists. Numbers too large for int64 saturate.
func ParseRange(header string, size int64) (r ByteRange, ok, satisfiable bool) {
	if size < 0 {
		return ByteRange{}, false, false
	}
	// Only OWS (SP, HTAB) surrounds a field value (RFC 9110 §5.5):
	// TrimSpace would also drop U+00A0 and U+0085, which are not.
	unit, set, found := strings.Cut(strings.Trim(header, " \t"), "=")
	// Only ASCII case folds: EqualFold alone would also take "byteſ"
	// (U+017F folds to 's'), which is no range-unit (RFC 9110 §14.1).
	if !found || len(unit) != len("bytes") || !strings.EqualFold(unit, "bytes") {
		return ByteRange{}, false, false
	}
	var spec string
	n := 0
	for m := range strings.SplitSeq(set, ",") {
		if m = strings.Trim(m, " \t"); m != "" {
			spec = m
			n++
		}
	}
	if n != 1 {
		return ByteRange{}, false, false
	}
	first, last, found := strings.Cut(spec, "-")
	if !found {
		return ByteRange{}, false, false
	}
	if first == "" { // suffix-range
		suffix, valid := parseRangePos(last)
		switch {
		case !valid:
			return ByteRange{}, false, false
		case suffix == 0:
			return ByteRange{}, true, false
		case size == 0:
			return ByteRange{}, false, false
		}
		return ByteRange{Start: max(0, size-suffix), End: size - 1}, true, true
	}
	start, valid := parseRangePos(first)
	if !valid {
		return ByteRange{}, false, false
	}
	end := int64(math.MaxInt64)
	if last != "" {
		if end, valid = parseRangePos(last); !valid || end < start {
			return ByteRange{}, false, false
		}
	}
	if start >= size {
		return ByteRange{}, true, false
	}
	return ByteRange{Start: start, End: min(end, size-1)}, true, true
}

// parseRangePos parses 1*DIGIT, saturating at math.MaxInt64.
func parseRangePos(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		d := int64(c - '0')
		if n > (math.MaxInt64-d)/10 {
			n = math.MaxInt64
			continue
		}
		n = n*10 + d
	}
	return n, true
}

// asksForWhole reports whether r's Range asks for the whole body, from its
// first byte to its end, whatever its length: a single range 0- (what
// browsers' media elements ask for first).
func asksForWhole(r *http.Request) bool {
	rg := r.Header["Range"]
	if len(rg) != 1 {
		return false
	}
	br, ok, satisfiable := ParseRange(rg[0], math.MaxInt64)
	return ok && satisfiable && br.Start == 0 && br.End == math.MaxInt64-1
}

// rewritesBody reports whether a handler before the cache may record the
// response, of Content-Type contentType, into a buffer to rewrite its body
// before the client gets it, as templates does: a part of a body, rendered
// as if it were the whole, comes out as neither (raw template source, a
// template that does not parse, or a Content-Range its length does not
// match). Such a request gets the whole 200, as from an origin that
// ignores Range.
//
// Whether the recorder buffers is decided inside its WriteHeader, from the
// status and header, by a function the cache cannot ask: templates buffers
// its MIME types (text/html and text/plain unless configured: any type a
// user names), and intercept what its matchers select. So every response
// under a recorder with a buffer is taken as rewritten except the media
// and downloads of binaryMedia, which no one renders as a template and
// whose ranges clients need (a review: under a site-wide templates, a
// stored video answered Safari's bytes=0-1 probe with all of it, which
// Safari does not play). A recorder that buffers those anyway rewrites
// the 206, as it does an origin's 206 without the cache. Only asked of a
// request with a Range.
func rewritesBody(w http.ResponseWriter, contentType string) bool {
	if binaryMedia(contentType) {
		return false
	}
	for w != nil {
		if rec, ok := w.(caddyhttp.ResponseRecorder); ok && rec.Buffer() != nil {
			return true
		}
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return false
		}
		w = u.Unwrap()
	}
	return false
}

// binaryMedia reports whether a Content-Type is media or a download, whose
// ranges players, viewers and download managers ask for: video, audio,
// images (not SVG, which is XML), fonts, PDF and archives. A type it does
// not know is not: templates renders whatever MIME types it is given
// (a review of the first version, which listed textual types instead:
// application/yaml under templates got a 206 of its template source).
func binaryMedia(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	mt = strings.ToLower(strings.TrimSpace(mt))
	major, minor, ok := strings.Cut(mt, "/")
	if !ok {
		return false
	}
	switch major {
	case "video", "audio", "font":
		return true
	case "image":
		return !strings.Contains(minor, "xml")
	case "application":
		switch minor {
		case "pdf", "octet-stream", "zip", "gzip", "x-gzip", "zstd", "x-xz", "x-bzip2", "x-tar",
			"x-7z-compressed", "vnd.rar", "x-rar-compressed", "wasm", "mp4", "ogg", "epub+zip",
			"java-archive", "vnd.android.package-archive", "x-apple-diskimage", "x-iso9660-image",
			"x-msdownload", "vnd.debian.binary-package", "x-rpm", "vnd.ms-cab-compressed",
			"font-woff", "font-woff2", "x-font-ttf", "x-font-otf", "font-sfnt", "vnd.ms-fontobject":
			return true
		}
	}
	return false
}

// withoutRange is a copy of r without Range and If-Range, which the cache
// evaluates against the 200 (see wholeContentRange).
func withoutRange(r *http.Request) *http.Request {
	r2 := r.Clone(r.Context())
	delete(r2.Header, "Range")
	delete(r2.Header, "If-Range")
	return r2
}

// wholeContentRange returns the Content-Range with which a 200 (its
// fields hdr) answers r as a 206, when r's Range, which did not go to the
// origin, covers the whole body and its If-Range holds; "" when the 200
// goes as it is (RFC 9110 §14.2 lets a server ignore Range): no
// Content-Length, an empty body, or a Range for part of it.
func wholeContentRange(r *http.Request, hdr http.Header) string {
	rg, cl := r.Header["Range"], hdr["Content-Length"]
	if len(rg) != 1 || len(cl) != 1 {
		return ""
	}
	size, ok := parseRangePos(cl[0])
	if !ok || size == math.MaxInt64 { // saturated: no real length
		return ""
	}
	br, ok, satisfiable := ParseRange(rg[0], size)
	if !ok || !satisfiable || br.Start != 0 || br.End != size-1 || !ifRangeMatches(r, hdr) {
		return ""
	}
	return br.ContentRange(size)
}

// wholePartLength reports whether hdr, the fields of a 206, describe a
// part that is the whole representation (RFC 9110 §14.4), and its length:
// one Content-Range "bytes 0-(length-1)/length", and a Content-Length, if
// any, of length. Such a 206 (Safari's request for bytes 0 to the length
// its probe learnt minus one gets one) is stored as the 200 it amounts to.
func wholePartLength(hdr http.Header) (int64, bool) {
	cr := hdr["Content-Range"]
	if len(cr) != 1 {
		return 0, false
	}
	first, last, n, ok := parseContentRange(cr[0])
	if !ok || first != 0 || last != n-1 {
		return 0, false
	}
	cl := hdr["Content-Length"]
	return n, len(cl) == 0 || len(cl) == 1 && cl[0] == strconv.FormatInt(n, 10)
}

// acceptsCoding reports whether r accepts a content coding other than
// identity, as encode reads Accept-Encoding. A 206 without
// Content-Encoding to such a request is not stored as the 200: encode
// leaves 206s uncompressed, and the stored response would answer, as
// identity, the clients it would have compressed for (browsers' media
// requests send Accept-Encoding: identity).
func acceptsCoding(r *http.Request) bool {
	for _, coding := range encode.AcceptedEncodings(r, nil) {
		if coding != "identity" {
			return true
		}
	}
	return false
}

// parseContentRange parses a satisfied Content-Range (RFC 9110 §14.4):
// "bytes first-last/length", first <= last < length.
func parseContentRange(v string) (first, last, length int64, ok bool) {
	unit, rest, found := strings.Cut(v, " ")
	if !found || len(unit) != len("bytes") || !strings.EqualFold(unit, "bytes") {
		return 0, 0, 0, false
	}
	span, size, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, 0, false
	}
	a, b, found := strings.Cut(span, "-")
	if !found {
		return 0, 0, 0, false
	}
	first, ok1 := parseRangePos(a)
	last, ok2 := parseRangePos(b)
	length, ok3 := parseRangePos(size)
	if !ok1 || !ok2 || !ok3 || first > last || last >= length || length == math.MaxInt64 {
		return 0, 0, 0, false
	}
	return first, last, length, true
}
