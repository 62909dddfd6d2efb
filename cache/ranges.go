package cache

import (
	"math"
	"strings"
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
