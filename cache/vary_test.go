package cache

import (
	"net/http"
	"slices"
	"testing"
)

func TestParseVary(t *testing.T) {
	tests := []struct {
		name   string
		h      http.Header
		fields []string
		star   bool
	}{
		{"absent", rh(), nil, false},
		{"one", rh("Vary", "accept-encoding"), []string{"Accept-Encoding"}, false},
		{"lines, commas, case, duplicates", rh("Vary", "Accept-Language, ACCEPT", "Vary", " accept ,, Origin"), []string{"Accept", "Accept-Language", "Origin"}, false},
		{"star", rh("Vary", "Accept", "Vary", "*"), []string{"Accept"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fields, star := ParseVary(tt.h)
			if !slices.Equal(fields, tt.fields) || star != tt.star {
				t.Errorf("ParseVary = %q, %v, want %q, %v", fields, star, tt.fields, tt.star)
			}
		})
	}
}

// TestRule15_VaryNormalisation pins RFC 9111 §4.1: the selecting header
// fields match after normalising whitespace, field-name case and combined
// field lines; absent matches only absent; the key is unambiguous. (Vary:
// * never matching and "most recent of several" are the handler's: it
// does not store a Vary: * response, and a variant key holds one entry.)
func TestRule15_VaryNormalisation(t *testing.T) {
	same := []struct {
		name   string
		fields []string
		a, b   http.Header
	}{
		{"whitespace runs", []string{"Accept-Language"}, rh("Accept-Language", "en-US,  en;q=0.5"), rh("Accept-Language", " en-US , en;q=0.5 ")},
		{"tabs", []string{"User-Agent"}, rh("User-Agent", "a\t\tb"), rh("User-Agent", "a b")},
		{"combined lines", []string{"Accept"}, rh("Accept", "text/html", "Accept", "application/json"), rh("Accept", "text/html, application/json")},
		{"empty members", []string{"Accept"}, rh("Accept", "text/html,,"), rh("Accept", "text/html")},
		{"field name case", []string{"accept-language"}, rh("Accept-Language", "de"), rh("accept-language", "de")},
		{"accept-encoding order and case", []string{"Accept-Encoding"}, rh("Accept-Encoding", "gzip, br"), rh("Accept-Encoding", "BR,gzip")},
		{"accept-encoding lines", []string{"Accept-Encoding"}, rh("Accept-Encoding", "br", "Accept-Encoding", "gzip;q=0.5"), rh("Accept-Encoding", "gzip; q=0.5, br")},
		{"unrelated fields", []string{"Accept"}, rh("Accept", "x", "Cookie", "a"), rh("Accept", "x", "Cookie", "b")},
	}
	for _, tt := range same {
		t.Run("same/"+tt.name, func(t *testing.T) {
			if ka, kb := VaryKey(tt.fields, tt.a), VaryKey(tt.fields, tt.b); ka != kb {
				t.Errorf("keys differ: %q vs %q", ka, kb)
			}
		})
	}
	differ := []struct {
		name   string
		fields []string
		a, b   http.Header
	}{
		{"absent vs empty", []string{"Accept"}, rh(), rh("Accept", "")},
		{"absent vs value", []string{"Accept"}, rh(), rh("Accept", "x")},
		{"values", []string{"Accept-Language"}, rh("Accept-Language", "en"), rh("Accept-Language", "de")},
		{"value case outside accept-encoding", []string{"Accept-Language"}, rh("Accept-Language", "en"), rh("Accept-Language", "EN")},
		{"accept-encoding members", []string{"Accept-Encoding"}, rh("Accept-Encoding", "gzip"), rh("Accept-Encoding", "gzip, br")},
		{"quoted whitespace kept", []string{"X-Q"}, rh("X-Q", `"a  b"`), rh("X-Q", `"a b"`)},
		{"quoted comma kept", []string{"X-Q"}, rh("X-Q", `"a,b"`), rh("X-Q", `"a, b"`)},
		{"no separator confusion", []string{"A", "B"}, rh("A", "1-1:B-"), rh("A", "1", "B", "")},
		{"value moved between fields", []string{"A", "B"}, rh("A", "x", "B", ""), rh("A", "", "B", "x")},
	}
	for _, tt := range differ {
		t.Run("differ/"+tt.name, func(t *testing.T) {
			if ka, kb := VaryKey(tt.fields, tt.a), VaryKey(tt.fields, tt.b); ka == kb {
				t.Errorf("keys equal: %q", ka)
			}
		})
	}
	if got := VaryKey(nil, rh("Accept", "x")); got != "" {
		t.Errorf("VaryKey(no fields) = %q, want \"\"", got)
	}
}
