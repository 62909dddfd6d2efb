package cache

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ByteRange is one satisfiable range of a representation, [Start, End].
type ByteRange struct{ Start, End int64 }

// Length is the number of bytes in r.
func (r ByteRange) Length() int64 { return r.End - r.Start + 1 }

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

// asksForWhole reports whether r's Range asks for the whole body of the
// response under the key hashing to hash: a single range from the first
// byte to the end (bytes=0-, what browsers' media elements ask for
// first), or to the last byte of the length the origin gave in a recent
// 206 for the key (Safari asks for bytes=0-1 first, then for bytes 0 to
// the length minus one).
func (h *Handler) asksForWhole(r *http.Request, hash uint64) bool {
	rg := r.Header["Range"]
	if len(rg) != 1 {
		return false
	}
	br, ok, satisfiable := ParseRange(rg[0], math.MaxInt64)
	if !ok || !satisfiable || br.Start != 0 {
		return false
	}
	if br.End == math.MaxInt64-1 {
		return true
	}
	n, known := h.lengths.get(hash, h.now())
	return known && br.End >= n-1
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
	last := strconv.FormatInt(size-1, 10)
	return "bytes 0-" + last + "/" + strconv.FormatInt(size, 10)
}

// knownLengths remembers, for a while, the complete lengths the origin
// gave in 206 responses (Content-Range: bytes a-b/length), by key hash,
// so that a later Range that turns out to cover the whole body (Safari's
// bytes=0-(length-1) after its bytes=0-1 probe) is fetched whole and
// stored (see asksForWhole). Only lengths up to max_item_size are noted:
// a longer body would not be stored. A length that is no longer right
// costs the client a 200 instead of its 206 (see wholeContentRange).
type knownLengths struct {
	mu    sync.Mutex
	slots [lengthSlots]knownLength
}

type knownLength struct {
	hash    uint64
	length  int64
	expires int64 // Unix seconds
}

const (
	lengthSlots = 256
	// lengthTTL is how long a noted length is used: Safari's requests
	// after its probe come within a second.
	lengthTTL = time.Minute
)

// note remembers the complete length in the Content-Range values cr of a
// 206 for the key hashing to hash, when it is at most limit.
func (k *knownLengths) note(hash uint64, cr []string, limit int64, now time.Time) {
	if len(cr) != 1 {
		return
	}
	n, ok := completeLength(cr[0])
	if !ok || n > limit {
		return
	}
	k.mu.Lock()
	k.slots[hash%lengthSlots] = knownLength{hash: hash, length: n, expires: now.Add(lengthTTL).Unix()}
	k.mu.Unlock()
}

// get returns the length noted for the key hashing to hash, if any.
func (k *knownLengths) get(hash uint64, now time.Time) (int64, bool) {
	k.mu.Lock()
	s := k.slots[hash%lengthSlots]
	k.mu.Unlock()
	return s.length, s.hash == hash && s.length > 0 && now.Unix() < s.expires
}

// completeLength parses the complete length of a satisfied Content-Range
// (RFC 9110 §14.4): "bytes first-last/length", last < length.
func completeLength(v string) (int64, bool) {
	unit, rest, ok := strings.Cut(v, " ")
	if !ok || len(unit) != len("bytes") || !strings.EqualFold(unit, "bytes") {
		return 0, false
	}
	span, size, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, false
	}
	first, last, ok := strings.Cut(span, "-")
	if !ok {
		return 0, false
	}
	a, ok1 := parseRangePos(first)
	b, ok2 := parseRangePos(last)
	n, ok3 := parseRangePos(size)
	if !ok1 || !ok2 || !ok3 || a > b || b >= n || n == math.MaxInt64 {
		return 0, false
	}
	return n, true
}
