package cache

import (
	"encoding/binary"
	"math/rand/v2"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// randomHeader makes a header with names and values of every length class
// a uvarint prefix has (one byte below 128, two below 16384, three above),
// empty values, fields with no values and fields with many.
func randomHeader(rng *rand.Rand) http.Header {
	h := make(http.Header)
	for i := range rng.IntN(12) {
		name := http.CanonicalHeaderKey("X-F" + strings.Repeat("n", rng.IntN(3)*70) + string(rune('a'+i)))
		vv := make([]string, rng.IntN(4))
		for j := range vv {
			n := []int{0, 1, 127, 128, 300, 16384, 20000}[rng.IntN(7)]
			vv[j] = strings.Repeat(string(rune('a'+j)), n)
		}
		h[name] = vv
	}
	return h
}

func TestFieldsRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 500 {
		h := randomHeader(rng)
		f := packFields(h, nil)
		got := f.header()
		if !reflect.DeepEqual(got, h) {
			t.Fatalf("packFields(%q).header() = %q", h, got)
		}
		for name, vv := range h {
			if !f.has(name) {
				t.Fatalf("has(%q) = false", name)
			}
			if v := f.Values(name); !reflect.DeepEqual(v, vv) {
				t.Fatalf("Values(%q) = %q, want %q", name, v, vv)
			}
			want := ""
			if len(vv) > 0 {
				want = vv[0]
			}
			if v := f.Get(name); v != want {
				t.Fatalf("Get(%q) = %q, want %q", name, v, want)
			}
		}
		if f.has("Absent") || f.Values("Absent") != nil || f.Get("Absent") != "" {
			t.Fatal("an absent field was found")
		}
	}
}

func TestFieldsDropAndIndependence(t *testing.T) {
	h := http.Header{"Keep": {"a", "b"}, "Drop": {"x"}, "Empty": {}}
	f := packFields(h, func(name string) bool { return name == "Drop" })
	h["Keep"][0] = "changed"
	got := f.header()
	want := http.Header{"Keep": {"a", "b"}, "Empty": {}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("packed %q, want %q", got, want)
	}
}

// TestFieldsAddToSharesNothingWritable checks the hit path's unpacking:
// every value slice at len == cap over one allocation, so that a later
// handler's append to one field reallocates instead of overwriting the
// next field's values or the caller's spare slots.
func TestFieldsAddToSharesNothingWritable(t *testing.T) {
	f := packFields(http.Header{"A": {"1"}, "B": {"2", "3"}, "Cache-Status": {"up; hit"}}, nil)
	dst := make(http.Header)
	rest, status, server := f.addTo(dst, 2)
	if server || len(rest) != 2 || !reflect.DeepEqual(status, []string{"up; hit"}) {
		t.Fatalf("addTo returned %d spare slots and Cache-Status %q", len(rest), status)
	}
	rest[0], rest[1] = "age", "status"
	for k, v := range dst {
		if len(v) != cap(v) {
			t.Errorf("%s: len %d cap %d", k, len(v), cap(v))
		}
		dst[k] = append(v, "appended")
	}
	if rest[0] != "age" || rest[1] != "status" {
		t.Error("an append overwrote the spare slots")
	}
	if got := f.header(); !reflect.DeepEqual(got["B"], []string{"2", "3"}) {
		t.Errorf("packed fields changed: %q", got)
	}
	if n := testing.AllocsPerRun(100, func() { clear(dst); f.addTo(dst, 2) }); n != 1 {
		t.Errorf("addTo made %v allocations; want 1", n)
	}
}

// TestFieldsExactSize checks that packing allocates once and exactly: the
// stored string keeps no spare capacity alive.
func TestFieldsExactSize(t *testing.T) {
	for _, n := range []int{0, 1, 127, 128, 16383, 16384, 1 << 21} {
		if got, want := uvarintLen(n), len(binary.AppendUvarint(nil, uint64(n))); got != want {
			t.Errorf("uvarintLen(%d) = %d, want %d", n, got, want)
		}
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 100 {
		h := randomHeader(rng)
		f := packFields(h, nil)
		if size, _ := packedSize(h, nil); size != len(f.s) {
			t.Fatalf("packedSize = %d, packed %d bytes", size, len(f.s))
		}
		if n := testing.AllocsPerRun(2, func() { _ = packFields(h, nil) }); n > 1 {
			t.Fatalf("packFields made %v allocations; want 1", n)
		}
	}
}
