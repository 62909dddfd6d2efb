package cache

import (
	"net/http"
	"slices"
	"testing"
	"time"
)

// TestRule12_ConditionalRequest pins RFC 9111 §4.3.1: revalidate with
// If-None-Match from ETag and If-Modified-Since from Last-Modified, in
// place of the client's own preconditions.
func TestRule12_ConditionalRequest(t *testing.T) {
	lm := rDateAt(-time.Hour)
	tests := []struct {
		name   string
		stored http.Header
		out    http.Header
		want   http.Header
		added  bool
	}{
		{"etag and last-modified", rh("Etag", `W/"v1"`, "Last-Modified", lm), rh("Accept", "x"),
			rh("Accept", "x", "If-None-Match", `W/"v1"`, "If-Modified-Since", lm), true},
		{"etag only", rh("Etag", `"v1"`), rh(), rh("If-None-Match", `"v1"`), true},
		{"no validators", rh("Content-Type", "text/plain"), rh(), rh(), false},
		{"invalid last-modified not sent", rh("Last-Modified", "yesterday"), rh(), rh(), false},
		{"client's conditions for the cache replaced, the origin's kept", rh("Etag", `"v2"`),
			rh("If-None-Match", `"client"`, "If-Modified-Since", lm, "If-Match", `"m"`, "If-Unmodified-Since", lm, "If-Range", `"r"`),
			rh("If-None-Match", `"v2"`, "If-Match", `"m"`, "If-Unmodified-Since", lm), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			added := SetConditionalHeaders(tt.stored, tt.out)
			if added != tt.added || !rHeaderEqual(tt.out, tt.want) {
				t.Errorf("got %v %q, want %v %q", added, tt.out, tt.added, tt.want)
			}
		})
	}
}

func rHeaderEqual(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// TestRule13_UpdateFrom304 pins RFC 9111 §3.2 and §4.3.4: fields in the
// 304 replace the stored ones, others are kept, Content-Length and
// connection-specific fields are not taken.
func TestRule13_UpdateFrom304(t *testing.T) {
	stored := rh("Content-Type", "text/html", "Content-Length", "42", "Etag", `"v1"`,
		"Cache-Control", "max-age=10", "Date", rt0Date, "X-Multi", "a", "X-Multi", "b")
	nm := rh("Cache-Control", "max-age=60", "Date", rDateAt(time.Minute), "Content-Length", "0",
		"Connection", "close, X-Hop", "X-Hop", "1", "Transfer-Encoding", "chunked", "X-Multi", "c", "X-New", "n")
	got := UpdateFrom304(stored, nm)
	want := rh("Content-Type", "text/html", "Content-Length", "42", "Etag", `"v1"`,
		"Cache-Control", "max-age=60", "Date", rDateAt(time.Minute), "X-Multi", "c", "X-New", "n")
	if !rHeaderEqual(got, want) {
		t.Errorf("UpdateFrom304 =\n %q, want\n %q", got, want)
	}
	if stored.Get("Cache-Control") != "max-age=10" || len(stored["X-Multi"]) != 2 {
		t.Error("UpdateFrom304 modified the stored header")
	}
	// The refreshed entry's freshness comes from the merged header.
	rc := ParseResponseControl(got, "")
	if f, _ := NewFreshness(200, got, rc, 0, rt0.Add(time.Minute), rt0.Add(time.Minute)); f.Lifetime != time.Minute || f.InitialAge != 0 {
		t.Errorf("refreshed freshness = %+v", f)
	}
}

// TestRule13_Selects304 pins RFC 9111 §4.3.4: a 304 refreshes the stored
// response only when its validators select it.
func TestRule13_Selects304(t *testing.T) {
	lm, lm2 := rDateAt(-time.Hour), rDateAt(-time.Minute)
	for _, tc := range []struct {
		name         string
		stored, resp http.Header
		want         bool
	}{
		{"same strong etag", rh("Etag", `"v1"`), rh("Etag", `"v1"`), true},
		{"other strong etag", rh("Etag", `"v1"`), rh("Etag", `"v2"`), false},
		{"strong against weak stored (nginx gzip)", rh("Etag", `W/"v1"`), rh("Etag", `"v1"`), true},
		{"weak against strong stored", rh("Etag", `"v1"`), rh("Etag", `W/"v1"`), true},
		{"weak against weak", rh("Etag", `W/"v1"`), rh("Etag", ` W/"v1"`), true},
		{"other weak etag", rh("Etag", `W/"v1"`), rh("Etag", `W/"v2"`), false},
		{"etag where none was stored", rh("Last-Modified", lm), rh("Etag", `"v1"`), false},
		{"same unquoted etag", rh("Etag", "v1"), rh("Etag", "v1"), true},
		{"other unquoted etag", rh("Etag", "v1"), rh("Etag", "v2"), false},
		{"etag decides over last-modified", rh("Etag", `"v1"`, "Last-Modified", lm), rh("Etag", `"v1"`, "Last-Modified", lm2), true},
		{"same last-modified", rh("Last-Modified", lm), rh("Last-Modified", lm), true},
		{"same instant, other form", rh("Last-Modified", lm), rh("Last-Modified", rt0.Add(-time.Hour).Format(time.RFC850)), true},
		{"other last-modified", rh("Last-Modified", lm), rh("Last-Modified", lm2), false},
		{"last-modified where none was stored", rh("Etag", `"v1"`), rh("Last-Modified", lm), false},
		{"no validators", rh("Etag", `"v1"`, "Last-Modified", lm), rh("Cache-Control", "max-age=60"), true},
		{"encode's suffix for the stored coding", rh("Etag", `"v1-gzip"`, "Content-Encoding", "gzip"), rh("Etag", `"v1"`), true},
		{"encode's suffix, other coding", rh("Etag", `"v1-gzip"`, "Content-Encoding", "zstd"), rh("Etag", `"v1"`), false},
		{"suffix without Content-Encoding", rh("Etag", `"v1-gzip"`), rh("Etag", `"v1"`), false},
		{"suffix on another tag", rh("Etag", `"v1-gzip"`, "Content-Encoding", "gzip"), rh("Etag", `"v2"`), false},
	} {
		if got := Selects304(tc.stored, tc.resp); got != tc.want {
			t.Errorf("%s: Selects304 = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestRule14_ClientConditional pins RFC 9110 §13.1.1-§13.1.3, §13.2.2 and
// RFC 9111 §4.3.2: a fresh stored response answers a client's
// If-None-Match (weak comparison, takes precedence) or If-Modified-Since
// with a 304; If-Match / If-Unmodified-Since play no part.
func TestRule14_ClientConditional(t *testing.T) {
	lm := rDateAt(-time.Hour)
	stored := rh("Etag", `"v1"`, "Last-Modified", lm, "Date", rt0Date)
	tests := []struct {
		name   string
		method string
		req    []string
		stored http.Header
		want   bool
	}{
		{"inm match", "GET", []string{"If-None-Match", `"v1"`}, stored, true},
		{"inm weak match", "GET", []string{"If-None-Match", `W/"v1"`}, stored, true},
		{"inm weak stored", "GET", []string{"If-None-Match", `"v1"`}, rh("Etag", `W/"v1"`), true},
		{"inm list", "GET", []string{"If-None-Match", `"a", "v1"`}, stored, true},
		{"inm lines", "GET", []string{"If-None-Match", `"a"`, "If-None-Match", `"v1"`}, stored, true},
		{"inm comma inside tag", "GET", []string{"If-None-Match", `"a,b", "v1"`}, stored, true},
		{"inm no match", "GET", []string{"If-None-Match", `"v2"`}, stored, false},
		{"inm star", "GET", []string{"If-None-Match", "*"}, stored, true},
		{"inm without stored etag", "GET", []string{"If-None-Match", `"v1"`}, rh("Last-Modified", lm), false},
		{"inm malformed", "GET", []string{"If-None-Match", "v1"}, stored, false},
		{"inm precedes ims", "GET", []string{"If-None-Match", `"v2"`, "If-Modified-Since", rt0Date}, stored, false},
		{"head", "HEAD", []string{"If-None-Match", `"v1"`}, stored, true},
		{"post never", "POST", []string{"If-None-Match", `"v1"`}, stored, false},
		{"ims after last-modified", "GET", []string{"If-Modified-Since", rt0Date}, stored, true},
		{"ims equal", "GET", []string{"If-Modified-Since", lm}, stored, true},
		{"ims before last-modified", "GET", []string{"If-Modified-Since", rDateAt(-2 * time.Hour)}, stored, false},
		{"ims invalid ignored", "GET", []string{"If-Modified-Since", "yesterday"}, stored, false},
		{"ims against date without last-modified", "GET", []string{"If-Modified-Since", rt0Date}, rh("Date", rt0Date), true},
		{"ims before date without last-modified", "GET", []string{"If-Modified-Since", lm}, rh("Date", rt0Date), false},
		{"ims without validators", "GET", []string{"If-Modified-Since", rt0Date}, rh(), false},
		{"if-match ignored", "GET", []string{"If-Match", `"v1"`}, stored, false},
		{"if-unmodified-since ignored", "GET", []string{"If-Unmodified-Since", rt0Date}, stored, false},
		{"unconditional", "GET", nil, stored, false},
		// encode in front strips its suffix from the client's tags
		{"inm without encode's suffix", "GET", []string{"If-None-Match", `"v1"`}, rh("Etag", `"v1-gzip"`, "Content-Encoding", "gzip"), true},
		{"inm list without encode's suffix", "GET", []string{"If-None-Match", `"a", W/"v1"`}, rh("Etag", `"v1-zstd"`, "Content-Encoding", "zstd"), true},
		{"inm suffix of another coding", "GET", []string{"If-None-Match", `"v1"`}, rh("Etag", `"v1-gzip"`, "Content-Encoding", "zstd"), false},
		{"inm suffix without Content-Encoding", "GET", []string{"If-None-Match", `"v1"`}, rh("Etag", `"v1-gzip"`), false},
		{"inm suffix on a weak stored tag", "GET", []string{"If-None-Match", `"v1"`}, rh("Etag", `W/"v1-gzip"`, "Content-Encoding", "gzip"), false},
		{"inm other tag", "GET", []string{"If-None-Match", `"v2"`}, rh("Etag", `"v1-gzip"`, "Content-Encoding", "gzip"), false},
		{"inm empty tag", "GET", []string{"If-None-Match", `""`}, rh("Etag", `"-gzip"`, "Content-Encoding", "gzip"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ClientNotModified(rReq(tt.method, tt.req...), tt.stored); got != tt.want {
				t.Errorf("ClientNotModified = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestJudgeHead: a HEAD's 200 updates the stored GET response when its
// validators select it and its Content-Length matches, shows it out of
// date when they do not, and says nothing of it with another
// Content-Encoding or without the validators it has (RFC 9111 §4.3.5).
func TestJudgeHead(t *testing.T) {
	lm, lm2 := rDateAt(-time.Hour), rDateAt(-time.Minute)
	stored := rh("Etag", `"v1"`, "Last-Modified", lm, "Content-Length", "5")
	gzipped := rh("Etag", `"v1-gzip"`, "Content-Encoding", "gzip", "Vary", "Accept-Encoding")
	for _, tc := range []struct {
		name   string
		status int
		stored http.Header
		head   http.Header
		want   headVerdict
	}{
		{"same etag, last-modified and length", 200, stored, rh("Etag", `"v1"`, "Last-Modified", lm, "Content-Length", "5"), headUpdates},
		{"same etag only", 200, stored, rh("Etag", `"v1"`), headUpdates},
		{"weak form of the stored etag", 200, stored, rh("Etag", `W/"v1"`), headUpdates},
		{"same last-modified only", 200, stored, rh("Last-Modified", lm), headUpdates},
		{"other etag", 200, stored, rh("Etag", `"v2"`, "Last-Modified", lm, "Content-Length", "5"), headInvalidates},
		{"other last-modified", 200, stored, rh("Etag", `"v1"`, "Last-Modified", lm2), headInvalidates},
		{"other length", 200, stored, rh("Etag", `"v1"`, "Content-Length", "6"), headInvalidates},
		{"invalid length", 200, stored, rh("Etag", `"v1"`, "Content-Length", "five"), headInvalidates},
		{"a stored 404", 404, stored, rh("Etag", `"v1"`), headInvalidates},
		{"no validators, stored has some", 200, stored, rh("Cache-Control", "max-age=60", "Content-Length", "5"), headKeeps},
		{"no validators on either", 200, rh("Content-Length", "5"), rh("Cache-Control", "max-age=60"), headUpdates},
		{"encode left the HEAD uncompressed", 200, gzipped, rh("Etag", `"v1"`), headKeeps},
		{"encode left the HEAD uncompressed, another version", 200, gzipped, rh("Etag", `"v2"`), headInvalidates},
		{"encode compressed the HEAD too", 200, gzipped, rh("Etag", `"v1-gzip"`, "Content-Encoding", "gzip"), headUpdates},
		{"the origin's tag with the stored coding", 200, gzipped, rh("Etag", `"v1"`, "Content-Encoding", "GZIP"), headUpdates},
		{"length of another coding", 200, gzipped, rh("Etag", `"v1"`, "Content-Length", "900"), headKeeps},
		{"identity named", 200, stored, rh("Etag", `"v1"`, "Content-Encoding", "identity", "Content-Length", "5"), headUpdates},
	} {
		if got := judgeHead(tc.status, tc.stored, 5, tc.head); got != tc.want {
			t.Errorf("%s: judgeHead = %d, want %d", tc.name, got, tc.want)
		}
	}
}
