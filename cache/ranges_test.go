package cache

import (
	"math"
	"testing"
)

// TestRule19_Ranges pins RFC 9110 §14.2 for serving a single range from a
// stored full response (206), 416 for an unsatisfiable one, and the full
// 200 for anything else. (That 206 responses are not stored is in
// TestRule03_PartialNotModifiedAndMustUnderstand.)
func TestRule19_Ranges(t *testing.T) {
	tests := []struct {
		name        string
		header      string
		size        int64
		want        ByteRange
		ok, satisfy bool
	}{
		{"absent", "", 100, ByteRange{}, false, false},
		{"closed", "bytes=0-9", 100, ByteRange{0, 9}, true, true},
		{"single byte", "bytes=5-5", 100, ByteRange{5, 5}, true, true},
		{"open", "bytes=90-", 100, ByteRange{90, 99}, true, true},
		{"end clamped", "bytes=90-1000", 100, ByteRange{90, 99}, true, true},
		{"suffix", "bytes=-10", 100, ByteRange{90, 99}, true, true},
		{"suffix longer than body", "bytes=-1000", 100, ByteRange{0, 99}, true, true},
		{"unit case-insensitive", "Bytes=0-0", 100, ByteRange{0, 0}, true, true},
		{"empty members ignored", "bytes=, 0-1 ,", 100, ByteRange{0, 1}, true, true},
		{"huge end saturates", "bytes=1-99999999999999999999999", 100, ByteRange{1, 99}, true, true},
		{"start at size", "bytes=100-", 100, ByteRange{}, true, false},
		{"start past size", "bytes=200-300", 100, ByteRange{}, true, false},
		{"huge start", "bytes=99999999999999999999999-", 100, ByteRange{}, true, false},
		{"suffix zero", "bytes=-0", 100, ByteRange{}, true, false},
		{"empty body", "bytes=0-", 0, ByteRange{}, true, false},
		{"suffix of empty body", "bytes=-5", 0, ByteRange{}, false, false},
		{"multi-range", "bytes=0-1, 5-6", 100, ByteRange{}, false, false},
		{"other unit", "items=0-1", 100, ByteRange{}, false, false},
		// Only SP and HTAB are whitespace around a field value (RFC 9110
		// §5.5); NBSP and NEL are obs-text bytes, which net/http passes.
		{"trailing NBSP", "bytes=0-1\u00a0", 100, ByteRange{}, false, false},
		{"leading NEL", "\u0085bytes=5-", 100, ByteRange{}, false, false},
		{"unit folding only in Unicode", "byte\u017f=0-1", 100, ByteRange{}, false, false},
		{"no unit", "0-1", 100, ByteRange{}, false, false},
		{"reversed", "bytes=9-0", 100, ByteRange{}, false, false},
		{"no dash", "bytes=5", 100, ByteRange{}, false, false},
		{"only dash", "bytes=-", 100, ByteRange{}, false, false},
		{"negative", "bytes=--5", 100, ByteRange{}, false, false},
		{"spaces inside", "bytes=1 - 2", 100, ByteRange{}, false, false},
		{"plus sign", "bytes=+1-2", 100, ByteRange{}, false, false},
		{"empty set", "bytes=", 100, ByteRange{}, false, false},
		{"negative size", "bytes=0-1", -1, ByteRange{}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, ok, sat := ParseRange(tt.header, tt.size)
			if r != tt.want || ok != tt.ok || sat != tt.satisfy {
				t.Errorf("ParseRange(%q, %d) = %+v, %v, %v, want %+v, %v, %v", tt.header, tt.size, r, ok, sat, tt.want, tt.ok, tt.satisfy)
			}
		})
	}
	if got := (ByteRange{90, 99}).Length(); got != 10 {
		t.Errorf("Length = %d, want 10", got)
	}
	if r, ok, sat := ParseRange("bytes=0-", math.MaxInt64); !ok || !sat || r.End != math.MaxInt64-1 {
		t.Errorf("ParseRange at MaxInt64 = %+v %v %v", r, ok, sat)
	}
}
