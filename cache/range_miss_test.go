package cache

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// TestRangeForWholeBodyOnMiss: a miss whose Range asks for the whole body
// (bytes=0-, what browsers' media elements send first) goes to the origin
// without Range and If-Range, so its 200 is stored, and answers the
// client as the 206 the origin would have sent; a Range for less goes
// out as it came and its 206 is not stored.
func TestRangeForWholeBodyOnMiss(t *testing.T) {
	const content = "0123456789"
	c := newClock()
	modified := c.Now().Add(-time.Hour)
	// The origin honours Range as Go's file server does.
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Etag", `"v1"`)
		w.Header().Set("Content-Digest", "sha-256=:whole:")
		if strings.HasSuffix(r.URL.Path, "/chunked") {
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, content) // no Content-Length
			return nil
		}
		http.ServeContent(w, r, "", modified, strings.NewReader(content))
		return nil
	}}
	for _, tc := range []struct {
		name, path   string
		fields       []string
		status       int
		body         string
		contentRange string
		sentRange    bool // the origin saw the client's Range
		stored       bool
	}{
		{name: "bytes=0-", path: "/a", fields: []string{"Range", "bytes=0-"},
			status: 206, body: content, contentRange: "bytes 0-9/10", stored: true},
		{name: "end past the body", path: "/b", fields: []string{"Range", "bytes=0-99999999999999999999"},
			status: 206, body: content, contentRange: "bytes 0-9/10", stored: true},
		{name: "If-Range holds", path: "/c", fields: []string{"Range", "bytes=0-", "If-Range", `"v1"`},
			status: 206, body: content, contentRange: "bytes 0-9/10", stored: true},
		{name: "If-Range fails: the 200", path: "/d", fields: []string{"Range", "bytes=0-", "If-Range", `"v0"`},
			status: 200, body: content, stored: true},
		{name: "no Content-Length: the 200", path: "/chunked", fields: []string{"Range", "bytes=0-"},
			status: 200, body: content, stored: true},
		{name: "part of the body goes out as it came", path: "/e", fields: []string{"Range", "bytes=2-"},
			status: 206, body: content[2:], contentRange: "bytes 2-9/10", sentRange: true},
		{name: "closed range from 0", path: "/f", fields: []string{"Range", "bytes=0-4"},
			status: 206, body: content[:5], contentRange: "bytes 0-4/10", sentRange: true},
		{name: "suffix longer than the body: the origin's 206 of all of it", path: "/g", fields: []string{"Range", "bytes=-100"},
			status: 206, body: content, contentRange: "bytes 0-9/10", sentRange: true, stored: true},
		{name: "multi-range", path: "/h", fields: []string{"Range", "bytes=0-, 5-"}, sentRange: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestHandler(t, Config{}, c)
			url := "http://example.com/media" + tc.path
			w := get(t, h, o, url, tc.fields...)
			sent := o.last().Header
			if got := sent.Get("Range") != ""; got != tc.sentRange {
				t.Errorf("origin saw Range %q", sent.Get("Range"))
			}
			if !tc.sentRange && sent.Get("If-Range") != "" {
				t.Errorf("origin saw If-Range %q without the Range", sent.Get("If-Range"))
			}
			if tc.status == 0 {
				return // whatever the origin answers a multi-range
			}
			if w.Code != tc.status || w.Body.String() != tc.body {
				t.Fatalf("got %d %q, want %d %q", w.Code, w.Body, tc.status, tc.body)
			}
			if got := w.Header().Get("Content-Range"); got != tc.contentRange {
				t.Errorf("Content-Range %q, want %q", got, tc.contentRange)
			}
			if tc.status == 206 && !tc.sentRange {
				if got := w.Header().Get("Content-Length"); got != "10" {
					t.Errorf("Content-Length %q, want 10", got)
				}
				if got := w.Header().Get("Content-Digest"); got != "" {
					t.Errorf("the 206 carries the whole content's Content-Digest %q (a hit's does not)", got)
				}
			}
			wantStatus(t, w, []string{"fwd=uri-miss"})
			h.store.wait()
			calls := o.calls.Load()
			hit := get(t, h, o, url, "Range", "bytes=3-5")
			if stored := hasParam(hit.Header().Get("Cache-Status"), "hit"); stored != tc.stored {
				t.Fatalf("stored %v, want %v (Cache-Status %q)", stored, tc.stored, hit.Header().Get("Cache-Status"))
			}
			if tc.stored && (hit.Code != 206 || hit.Body.String() != "345" || o.calls.Load() != calls) {
				t.Errorf("range hit: %d %q, origin calls %d -> %d", hit.Code, hit.Body, calls, o.calls.Load())
			}
		})
	}
}

// TestRangeWholePartStored: a Range other than bytes=0- goes out as it
// came; when the origin's answer is the whole body anyway (Safari asks
// for bytes=0-1, then for bytes 0 to the length minus one; a suffix longer
// than the body; an origin that ignores Range and sends the 200), it is
// stored as the 200 it amounts to, by the usual rules.
func TestRangeWholePartStored(t *testing.T) {
	const content = "0123456789"
	c := newClock()
	ranged := func(cc string) *origin {
		return &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
			w.Header().Set("Cache-Control", cc)
			w.Header().Set("Etag", `"e"`)
			http.ServeContent(w, r, "", time.Time{}, strings.NewReader(content))
			return nil
		}}
	}
	ignoring := static(c, 200, content, "Cache-Control", "max-age=60", "Content-Length", "10")
	for _, tc := range []struct {
		name   string
		cfg    Config
		o      *origin
		ranges []string // asked in turn, each going out as it came
		stored bool
	}{
		{name: "Safari", o: ranged("max-age=60"), ranges: []string{"bytes=0-1", "bytes=0-9"}, stored: true},
		{name: "past the length", o: ranged("max-age=60"), ranges: []string{"bytes=0-20"}, stored: true},
		{name: "suffix of all", o: ranged("max-age=60"), ranges: []string{"bytes=-10"}, stored: true},
		{name: "origin ignores Range", o: ignoring, ranges: []string{"bytes=3-4"}, stored: true},
		{name: "short of the length", o: ranged("max-age=60"), ranges: []string{"bytes=0-8"}},
		{name: "not from the first byte", o: ranged("max-age=60"), ranges: []string{"bytes=1-9"}},
		{name: "private", o: ranged("private, max-age=60"), ranges: []string{"bytes=0-9"}},
		{name: "longer than max_item_size", cfg: Config{MaxSize: 1 << 20, MaxItemSize: 9}, o: ranged("max-age=60"), ranges: []string{"bytes=0-9"}},
		{name: "min_uses 2, first use", cfg: Config{MinUses: 2}, o: ranged("max-age=60"), ranges: []string{"bytes=0-9"}},
		{name: "min_uses 2, second use", cfg: Config{MinUses: 2}, o: ranged("max-age=60"), ranges: []string{"bytes=0-1", "bytes=0-9"}, stored: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newTestHandler(t, tc.cfg, c)
			for _, rg := range tc.ranges {
				w := get(t, h, tc.o, "http://example.com/v", "Range", rg)
				if got := tc.o.last().Header.Get("Range"); got != rg {
					t.Errorf("origin saw Range %q, want %q", got, rg)
				}
				if tc.o == ignoring {
					if w.Code != 200 || w.Body.String() != content {
						t.Errorf("%s: %d %q, want the origin's 200", rg, w.Code, w.Body)
					}
					continue
				}
				br, _, _ := ParseRange(rg, int64(len(content)))
				want := "bytes " + strconv.FormatInt(br.Start, 10) + "-" + strconv.FormatInt(br.End, 10) + "/10"
				if w.Code != 206 || w.Body.String() != content[br.Start:br.End+1] || w.Header().Get("Content-Range") != want {
					t.Errorf("%s: %d %q Content-Range %q, want the origin's 206 %s", rg, w.Code, w.Body, w.Header().Get("Content-Range"), want)
				}
				wantStatus(t, w, []string{"fwd=uri-miss", "fwd-status=" + strconv.Itoa(w.Code)})
			}
			h.store.wait()
			calls := tc.o.calls.Load()
			w := get(t, h, tc.o, "http://example.com/v")
			if stored := hasParam(w.Header().Get("Cache-Status"), "hit"); stored != tc.stored {
				t.Fatalf("stored %v, want %v (Cache-Status %q)", stored, tc.stored, w.Header().Get("Cache-Status"))
			}
			if !tc.stored {
				return
			}
			// Stored as the 200: no Content-Range, the whole length.
			if w.Code != 200 || w.Body.String() != content || w.Header().Get("Content-Range") != "" || w.Header().Get("Content-Length") != "10" {
				t.Errorf("hit: %d %q Content-Range %q Content-Length %q", w.Code, w.Body, w.Header().Get("Content-Range"), w.Header().Get("Content-Length"))
			}
			if part := get(t, h, tc.o, "http://example.com/v", "Range", "bytes=4-5"); part.Code != 206 || part.Body.String() != "45" {
				t.Errorf("range hit: %d %q", part.Code, part.Body)
			}
			if n := tc.o.calls.Load(); n != calls {
				t.Errorf("hits reached the origin %d times", n-calls)
			}
		})
	}
}

// TestRangeOfOtherVariantGoesAsItCame: a gzip client's whole 206 stored as
// its variant's 200 does not answer an identity client's range, which goes
// to the origin as it came (a review's case against a design that guessed
// lengths from earlier 206s).
func TestRangeOfOtherVariantGoesAsItCame(t *testing.T) {
	c := newClock()
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Vary", "Accept-Encoding")
		body := strings.Repeat("i", 256<<10)
		if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			w.Header().Set("Content-Encoding", "gzip")
			body = strings.Repeat("g", 100)
		}
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader(body))
		return nil
	}}
	h := newTestHandler(t, Config{MaxSize: 1 << 20, MaxItemSize: 64 << 10}, c)
	get(t, h, o, "http://example.com/v", "Range", "bytes=0-99", "Accept-Encoding", "gzip")
	h.store.wait()
	w := get(t, h, o, "http://example.com/v", "Range", "bytes=0-99", "Accept-Encoding", "identity")
	if got := o.last().Header.Get("Range"); got != "bytes=0-99" || w.Code != 206 || w.Body.Len() != 100 || strings.Trim(w.Body.String(), "i") != "" {
		t.Errorf("identity client: origin saw Range %q; got %d, %d bytes", got, w.Code, w.Body.Len())
	}
	if w := get(t, h, o, "http://example.com/v", "Accept-Encoding", "gzip"); !hasParam(w.Header().Get("Cache-Status"), "hit") || w.Body.Len() != 100 {
		t.Errorf("gzip variant: %q, %d bytes; want its stored 200", w.Header().Get("Cache-Status"), w.Body.Len())
	}
}

func TestWholePartLength(t *testing.T) {
	for _, tc := range []struct {
		cr, cl string
		whole  bool
	}{
		{"bytes 0-9/10", "10", true},
		{"bytes 0-9/10", "", true},
		{"Bytes 0-0/1", "1", true},
		{"bytes 0-9/10", "9", false},
		{"bytes 1-9/10", "", false},
		{"bytes 0-8/10", "", false},
		{"bytes 0-8/10", "9", false},
		{"bytes 1-9/10", "9", false},
		{"bytes 0-10/10", "11", false},
		{"bytes 5-4/10", "", false},
		{"bytes */10", "", false},
		{"bytes 0-9/*", "10", false},
		{"bytes 0-9/", "10", false},
		{"bytes=0-9/10", "10", false},
		{"items 0-9/10", "10", false},
		{"bytes 0-9/+10", "10", false},
		{"bytes  0-9/10", "10", false},
		{"bytes 0-99999999999999999998/99999999999999999999", "", false},
		{"", "", false},
	} {
		hdr := http.Header{}
		if tc.cr != "" {
			hdr.Set("Content-Range", tc.cr)
		}
		if tc.cl != "" {
			hdr.Set("Content-Length", tc.cl)
		}
		n, got := wholePartLength(hdr)
		if got != tc.whole || got && n != 10 && n != 1 {
			t.Errorf("wholePartLength(Content-Range %q, Content-Length %q) = %d, %v", tc.cr, tc.cl, n, got)
		}
	}
	if _, ok := wholePartLength(http.Header{"Content-Range": {"bytes 0-9/10", "bytes 0-9/10"}}); ok {
		t.Error("two Content-Range fields taken for a whole part")
	}
}

// TestRangeForWholeBodyRevalidated: a stale entry revalidated for a
// client's bytes=0- and answered with a new 200 gives the client that 200
// as a 206; a 304 gives it the refreshed entry's 206.
func TestRangeForWholeBodyRevalidated(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	version := "v1"
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Cache-Control", "max-age=1")
		w.Header().Set("Etag", `"`+version+`"`)
		if r.Header.Get("If-None-Match") == `"`+version+`"` {
			w.WriteHeader(http.StatusNotModified)
			return nil
		}
		w.Header().Set("Content-Length", "7")
		_, _ = io.WriteString(w, "body-"+version)
		return nil
	}}
	get(t, h, o, "http://example.com/rv")
	h.store.wait()
	for _, v := range []string{"v1", "v2"} {
		version = v
		c.Advance(2 * time.Second)
		w := get(t, h, o, "http://example.com/rv", "Range", "bytes=0-")
		if w.Code != 206 || w.Body.String() != "body-"+v || w.Header().Get("Content-Range") != "bytes 0-6/7" {
			t.Errorf("%s: %d %q Content-Range %q, want 206 %q bytes 0-6/7", v, w.Code, w.Body, w.Header().Get("Content-Range"), "body-"+v)
		}
		wantStatus(t, w, []string{"fwd=stale"})
		h.store.wait()
	}
}

// TestRangeForWholeBodyOnlyWhenWhole: only a 200 answers a Range for the
// whole body as a 206, only when its length is real and the client's
// range covers it; two Range fields go out as they came. (Cases a review
// found no test held: each fails when its condition is removed.)
func TestRangeForWholeBodyOnlyWhenWhole(t *testing.T) {
	c := newClock()
	t.Run("non-200 stays", func(t *testing.T) {
		h := newTestHandler(t, Config{}, c)
		for _, st := range []int{203, 404, 410} {
			o := static(c, st, "nope", "Cache-Control", "max-age=60", "Content-Length", "4")
			w := get(t, h, o, "http://example.com/s"+strconv.Itoa(st), "Range", "bytes=0-")
			if w.Code != st || w.Header().Get("Content-Range") != "" {
				t.Errorf("%d to bytes=0-: got %d Content-Range %q", st, w.Code, w.Header().Get("Content-Range"))
			}
		}
	})
	t.Run("saturated Content-Length", func(t *testing.T) {
		h := newTestHandler(t, Config{}, c)
		o := static(c, 200, "x", "Cache-Control", "no-store", "Content-Length", "99999999999999999999")
		w := get(t, h, o, "http://example.com/sat", "Range", "bytes=0-")
		if w.Code != 200 || w.Header().Get("Content-Range") != "" {
			t.Errorf("got %d Content-Range %q", w.Code, w.Header().Get("Content-Range"))
		}
	})
	t.Run("revalidated partial range, the origin ignoring it: its 200, stored", func(t *testing.T) {
		for _, rg := range []string{"bytes=0-4", "bytes=5-", "bytes=3-9"} {
			h := newTestHandler(t, Config{}, c)
			v := "v1"
			o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
				w.Header().Set("Cache-Control", "max-age=1")
				w.Header().Set("Etag", `"`+v+`"`)
				w.Header().Set("Date", c.date())
				w.Header().Set("Content-Length", "10")
				_, _ = io.WriteString(w, "0123456789")
				return nil
			}}
			get(t, h, o, "http://example.com/rv")
			c.Advance(2 * time.Second)
			v = "v2"
			w := get(t, h, o, "http://example.com/rv", "Range", rg)
			if w.Code != 200 || w.Header().Get("Content-Range") != "" || w.Body.String() != "0123456789" {
				t.Errorf("%s answered by a new 200: got %d Content-Range %q body %q", rg, w.Code, w.Header().Get("Content-Range"), w.Body)
			}
			if got := o.last().Header.Get("Range"); got != rg {
				t.Errorf("%s revalidated with Range %q", rg, got)
			}
			h.store.wait()
			// The 200 (the origin ignored the Range) replaced the entry.
			if w := get(t, h, o, "http://example.com/rv"); !hasParam(w.Header().Get("Cache-Status"), "hit") || w.Header().Get("Etag") != `"v2"` {
				t.Errorf("after: Cache-Status %q Etag %q, want a hit of v2", w.Header().Get("Cache-Status"), w.Header().Get("Etag"))
			}
		}
	})
	t.Run("two Range fields go as they came", func(t *testing.T) {
		h := newTestHandler(t, Config{}, c)
		o := static(c, 200, "0123456789", "Cache-Control", "max-age=60", "Content-Length", "10")
		r := newRequest("GET", "http://example.com/two")
		r.Header["Range"] = []string{"bytes=0-", "bytes=0-"}
		w := serve(t, h, o, r)
		if len(o.last().Header["Range"]) != 2 || w.Header().Get("Content-Range") != "" {
			t.Errorf("origin saw Range %q; client got %d %q", o.last().Header["Range"], w.Code, w.Header().Get("Content-Range"))
		}
	})
	t.Run("Content-MD5 dropped", func(t *testing.T) {
		h := newTestHandler(t, Config{}, c)
		o := static(c, 200, "0123456789", "Cache-Control", "max-age=60", "Content-Length", "10", "Content-Md5", "x")
		w := get(t, h, o, "http://example.com/md5", "Range", "bytes=0-")
		if w.Code != 206 || w.Header().Get("Content-Md5") != "" {
			t.Errorf("got %d Content-MD5 %q", w.Code, w.Header().Get("Content-Md5"))
		}
	})
}

// TestRangeOfEmptyBody: an empty 200 answers a Range with the 200, from
// the origin and from the store alike (RFC 9110 §14.2 allows ignoring
// Range; a 416 from the store only would answer one burst two ways).
func TestRangeOfEmptyBody(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	o := static(c, 200, "", "Cache-Control", "max-age=60", "Content-Length", "0")
	for i, want := range []string{"fwd=uri-miss", "hit"} {
		w := get(t, h, o, "http://example.com/empty", "Range", "bytes=0-")
		if w.Code != 200 || w.Header().Get("Content-Range") != "" {
			t.Errorf("request %d: %d Content-Range %q, want the 200", i, w.Code, w.Header().Get("Content-Range"))
		}
		wantStatus(t, w, []string{want})
		h.store.wait()
	}
}

// TestRangeForWholeBodyAskedAgain: when the revalidation of a stale entry
// for a client's Range gets a 304 for another response, the request the
// cache sends again is a miss's: bytes=0- without Range, stored, answered
// as a 206; another Range as it came, stored when the origin's 206 is of
// the whole body, unless it answered If-Range.
func TestRangeForWholeBodyAskedAgain(t *testing.T) {
	for _, tc := range []struct {
		rg, ifRange, sent string
		stored            bool
	}{
		{"bytes=0-", "", "", true},
		{"bytes=0-99", "", "bytes=0-99", true},
		{"bytes=0-99", `"v2"`, "bytes=0-99", false},
		{"bytes=0-99", "", "bytes=0-99 no-store", false},
	} {
		t.Run(tc.rg+" "+tc.ifRange, func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{}, c)
			version := "v1"
			o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
				w.Header().Set("Cache-Control", "max-age=1")
				if r.Header.Get("If-None-Match") != "" {
					w.Header().Set("Etag", `"other"`) // selects nothing stored
					w.WriteHeader(http.StatusNotModified)
					return nil
				}
				w.Header().Set("Etag", `"`+version+`"`)
				http.ServeContent(w, r, "", time.Time{}, strings.NewReader("body-"+version))
				return nil
			}}
			get(t, h, o, "http://example.com/again")
			h.store.wait()
			version = "v2"
			c.Advance(2 * time.Second)
			fields := []string{"Range", tc.rg}
			if tc.ifRange != "" {
				fields = append(fields, "If-Range", tc.ifRange)
			}
			sent, noStore := strings.CutSuffix(tc.sent, " no-store")
			if noStore {
				fields = append(fields, "Cache-Control", "no-store")
			}
			w := get(t, h, o, "http://example.com/again", fields...)
			if got := o.last().Header.Get("Range"); got != sent {
				t.Errorf("asked again with Range %q, want %q", got, sent)
			}
			if w.Code != 206 || w.Body.String() != "body-v2" || w.Header().Get("Content-Range") != "bytes 0-6/7" {
				t.Errorf("got %d %q Content-Range %q, want 206 body-v2 bytes 0-6/7", w.Code, w.Body, w.Header().Get("Content-Range"))
			}
			h.store.wait()
			if w := get(t, h, o, "http://example.com/again", "Range", "bytes=5-"); w.Code != 206 || w.Body.String() != "v2" || hasParam(w.Header().Get("Cache-Status"), "hit") != tc.stored {
				t.Errorf("after: %d %q %q, want a 206, a hit: %v", w.Code, w.Body, w.Header().Get("Cache-Status"), tc.stored)
			}
		})
	}
}

// TestRangeWholePartWithIfRangeNotStored: a 206 to a request with
// If-Range may leave out the representation's
// fields beyond those required (RFC 9110 §15.3.7: Date, Cache-Control,
// ETag, Expires, Content-Location, Vary): the client has them already.
// Stored as the 200 it amounts to, it makes hits without Content-Type,
// Content-Encoding or Last-Modified.
func TestRangeWholePartWithIfRangeNotStored(t *testing.T) {
	c := newClock()
	const content = "0123456789"
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		h := w.Header()
		h.Set("Cache-Control", "max-age=60")
		h.Set("Etag", `"e"`)
		h.Set("Date", c.date())
		if r.Header.Get("Range") == "bytes=0-9" && r.Header.Get("If-Range") == `"e"` {
			// Only what §15.3.7 requires: the client has the rest.
			h.Set("Content-Range", "bytes 0-9/10")
			h.Set("Content-Length", "10")
			w.WriteHeader(http.StatusPartialContent)
			_, _ = io.WriteString(w, content)
			return nil
		}
		h.Set("Content-Type", "application/json")
		h.Set("Content-Encoding", "br")
		h.Set("Content-Length", "10")
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, content)
		return nil
	}}
	h := newTestHandler(t, Config{}, c)
	w := get(t, h, o, "http://example.com/if-range", "Range", "bytes=0-9", "If-Range", `"e"`)
	if w.Code != 206 {
		t.Fatalf("setup: %d", w.Code)
	}
	h.store.wait()
	hit := get(t, h, o, "http://example.com/if-range")
	if hasParam(hit.Header().Get("Cache-Status"), "hit") &&
		(hit.Header().Get("Content-Encoding") != "br" || hit.Header().Get("Content-Type") != "application/json") {
		t.Errorf("hit stored from the If-Range 206: Content-Encoding %q Content-Type %q, want br, application/json (or not stored)",
			hit.Header().Get("Content-Encoding"), hit.Header().Get("Content-Type"))
	}
}

// TestRangeWholePartWithIfRangeSetsNoHint: the same, with heuristic freshness: the 200 carries Last-Modified, the
// If-Range 206 need not. The 206 judged as a 200 is "no-freshness", which
// hints the URL: its plain misses then skip coalescing for a while,
// though its 200s are storable.
func TestRangeWholePartWithIfRangeSetsNoHint(t *testing.T) {
	c := newClock()
	const content = "0123456789"
	lm := c.Now().Add(-24 * time.Hour).Format(http.TimeFormat)
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		h := w.Header()
		h.Set("Etag", `"e"`)
		h.Set("Date", c.date())
		if r.Header.Get("If-Range") == `"e"` {
			h.Set("Content-Range", "bytes 0-9/10")
			h.Set("Content-Length", "10")
			w.WriteHeader(http.StatusPartialContent)
			_, _ = io.WriteString(w, content)
			return nil
		}
		h.Set("Last-Modified", lm)
		h.Set("Content-Length", "10")
		_, _ = io.WriteString(w, content)
		return nil
	}}
	h := newTestHandler(t, Config{}, c)
	get(t, h, o, "http://example.com/hint", "Range", "bytes=0-9", "If-Range", `"e"`)
	if h.hints.has(keyHash([]byte(mustKey(t, h, "http://example.com/hint"))), h.hintGen, h.now) {
		t.Errorf("a client's If-Range request hinted the URL uncacheable: its plain misses skip coalescing")
	}
}

func mustKey(t *testing.T, h *Handler, url string) string {
	t.Helper()
	k, ok := h.appendKey(nil, newRequest("GET", url))
	if !ok {
		t.Fatal("no key")
	}
	return string(k)
}

// TestRangeWholePartBodyOfItsLength: a 206 without Content-Length whose
// body ends short of (or past) the length its Content-Range declares is
// not stored.
func TestRangeWholePartBodyOfItsLength(t *testing.T) {
	c := newClock()
	for _, body := range []string{"01234", "0123456789ABC"} {
		t.Run(body, func(t *testing.T) {
			o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
				h := w.Header()
				h.Set("Cache-Control", "max-age=60")
				h.Set("Date", c.date())
				h.Set("Content-Range", "bytes 0-9/10") // no Content-Length: chunked
				w.WriteHeader(http.StatusPartialContent)
				_, _ = io.WriteString(w, body)
				return nil
			}}
			h := newTestHandler(t, Config{}, c)
			get(t, h, o, "http://example.com/short", "Range", "bytes=0-9")
			h.store.wait()
			hit := get(t, h, o, "http://example.com/short", "Range", "bytes=0-9")
			if hasParam(hit.Header().Get("Cache-Status"), "hit") {
				t.Errorf("stored a %d-byte body for Content-Range bytes 0-9/10: hit %d Content-Range %q body %q",
					len(body), hit.Code, hit.Header().Get("Content-Range"), hit.Body)
			}
		})
	}
}

// TestRangeWholePartKeepsVariants: encode after the cache compresses 200s (adding Vary: Accept-Encoding)
// and leaves 206s alone (no Vary). A whole 206 stored as the 200 has no
// Vary: stored under the URL key, it would replace the URL's variant
// record, and every client would get the identity body. It is not stored.
func TestRangeWholePartKeepsVariants(t *testing.T) {
	c := newClock()
	content := strings.Repeat("x", 1000)
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		h := w.Header()
		h.Set("Cache-Control", "max-age=60")
		h.Set("Etag", `"e"`)
		h.Set("Date", c.date())
		h.Set("Content-Type", "text/plain")
		if r.Header.Get("Range") != "" {
			http.ServeContent(w, r, "", time.Time{}, strings.NewReader(content)) // a 206: encode passes it as is
			return nil
		}
		h.Set("Vary", "Accept-Encoding")
		if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			h.Set("Content-Encoding", "gzip")
			h.Set("Etag", `"e-gzip"`)
			_, _ = io.WriteString(w, "GZ")
			return nil
		}
		_, _ = io.WriteString(w, content)
		return nil
	}}
	h := newTestHandler(t, Config{}, c)
	gz := []string{"Accept-Encoding", "gzip"}
	get(t, h, o, "http://example.com/enc", gz...)
	h.store.wait()
	if w := get(t, h, o, "http://example.com/enc", gz...); !hasParam(w.Header().Get("Cache-Status"), "hit") {
		t.Fatalf("setup: gzip variant not stored")
	}
	get(t, h, o, "http://example.com/enc", "Range", "bytes=0-999")
	h.store.wait()
	w := get(t, h, o, "http://example.com/enc", gz...)
	if w.Header().Get("Content-Encoding") != "gzip" {
		t.Errorf("gzip client after an identity client's whole-range request: Content-Encoding %q Vary %q Cache-Status %q, %d bytes; want the stored gzip variant",
			w.Header().Get("Content-Encoding"), w.Header().Get("Vary"), w.Header().Get("Cache-Status"), w.Body.Len())
	}
}

// TestRangeWholePartEntryServes: HEAD, If-None-Match and stale
// revalidation of an entry stored from a whole 206.
func TestRangeWholePartEntryServes(t *testing.T) {
	c := newClock()
	const content = "0123456789"
	var sawINM []string
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Cache-Control", "max-age=10")
		w.Header().Set("Etag", `"e"`)
		w.Header().Set("Content-Type", "video/mp4")
		w.Header().Set("Date", c.date())
		sawINM = append(sawINM, r.Header.Get("If-None-Match"))
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader(content))
		return nil
	}}
	h := newTestHandler(t, Config{}, c)
	w := get(t, h, o, "http://example.com/v", "Range", "bytes=0-9")
	if w.Code != 206 || w.Header().Get("Content-Range") != "bytes 0-9/10" {
		t.Fatalf("miss: %d %q", w.Code, w.Header().Get("Content-Range"))
	}
	wantStatus(t, w, []string{"fwd=uri-miss", "fwd-status=206"})
	head := serve(t, h, o, newRequest("HEAD", "http://example.com/v"))
	if head.Code != 200 || head.Header().Get("Content-Length") != "10" || head.Header().Get("Content-Range") != "" || head.Body.Len() != 0 {
		t.Errorf("HEAD hit: %d CL %q CR %q body %d", head.Code, head.Header().Get("Content-Length"), head.Header().Get("Content-Range"), head.Body.Len())
	}
	wantStatus(t, head, []string{"hit"})
	inm := get(t, h, o, "http://example.com/v", "If-None-Match", `"e"`)
	if inm.Code != 304 || inm.Header().Get("Content-Range") != "" {
		t.Errorf("INM hit: %d CR %q", inm.Code, inm.Header().Get("Content-Range"))
	}
	inmr := get(t, h, o, "http://example.com/v", "If-None-Match", `"e"`, "Range", "bytes=0-1")
	if inmr.Code != 304 {
		t.Errorf("INM+Range hit: %d", inmr.Code)
	}
	ir := get(t, h, o, "http://example.com/v", "If-Range", `"x"`, "Range", "bytes=0-1")
	if ir.Code != 200 || ir.Body.String() != content {
		t.Errorf("If-Range mismatch hit: %d %q", ir.Code, ir.Body)
	}
	c.Advance(20 * time.Second)
	n := len(sawINM)
	re := get(t, h, o, "http://example.com/v", "Range", "bytes=2-3")
	if sawINM[n] != `"e"` || re.Code != 206 || re.Body.String() != "23" {
		t.Errorf("revalidation: INM %q, %d %q", sawINM[n], re.Code, re.Body)
	}
	wantStatus(t, re, []string{"fwd=stale", "fwd-status=304"})
	hit := get(t, h, o, "http://example.com/v")
	wantStatus(t, hit, []string{"hit"})
}

// TestRangeWholePartNoStoreRequest: a client's no-store keeps a whole 206
// out of the store.
func TestRangeWholePartNoStoreRequest(t *testing.T) {
	c := newClock()
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Cache-Control", "max-age=60")
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader("0123456789"))
		return nil
	}}
	h := newTestHandler(t, Config{}, c)
	get(t, h, o, "http://example.com/ns", "Range", "bytes=0-9", "Cache-Control", "no-store")
	h.store.wait()
	if w := get(t, h, o, "http://example.com/ns"); hasParam(w.Header().Get("Cache-Status"), "hit") {
		t.Errorf("a no-store request's whole 206 was stored")
	}
}

// TestRangeOfStaleEntryGoesWithItsRange: a 2-byte probe of a stale entry
// whose object changed is revalidated with its Range, so the origin sends
// the 2 bytes of the new version, not all of it (found by a review: the
// revalidation dropped every Range, and the client got the whole 200).
func TestRangeOfStaleEntryGoesWithItsRange(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	body := "small"
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Cache-Control", "max-age=1")
		w.Header().Set("Etag", `"`+strconv.Itoa(len(body))+`"`)
		if r.Header.Get("If-None-Match") == w.Header().Get("Etag") {
			w.WriteHeader(http.StatusNotModified)
			return nil
		}
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader(body))
		return nil
	}}
	get(t, h, o, "http://example.com/v")
	h.store.wait()
	body = strings.Repeat("x", 1<<20) // the object grew
	c.Advance(2 * time.Second)
	w := get(t, h, o, "http://example.com/v", "Range", "bytes=0-1")
	n := w.Body.Len()
	if w.Code != 206 || n != 2 || o.last().Header.Get("Range") != "bytes=0-1" {
		t.Errorf("probe bytes=0-1 on a stale entry: %d, %d bytes to the client (origin saw Range %q)", w.Code, n, o.last().Header.Get("Range"))
	}
	// Unchanged, the entry is refreshed by the 304 and answers the range.
	c.Advance(2 * time.Second)
	get(t, h, o, "http://example.com/v") // the new version, stored
	h.store.wait()
	c.Advance(2 * time.Second)
	w = get(t, h, o, "http://example.com/v", "Range", "bytes=1-2", "If-Range", `"1048576"`)
	if w.Code != 206 || w.Body.String() != "xx" || o.last().Header.Get("If-None-Match") != `"1048576"` || o.last().Header.Get("If-Range") != `"1048576"` {
		t.Errorf("stale, unchanged: %d %q; origin saw If-None-Match %q If-Range %q", w.Code, w.Body, o.last().Header.Get("If-None-Match"), o.last().Header.Get("If-Range"))
	}
	wantStatus(t, w, []string{"fwd=stale", "fwd-status=304"})
}

// TestRangeWholePartForCodingClients: a whole 206 without Content-Encoding
// to a request that accepts a coding is not stored as the 200: behind
// encode (which leaves 206s alone) it would answer gzip clients
// uncompressed until it expired (a review saw it with file_server, whose
// 206s carry Vary: Accept-Encoding). Media requests, which accept only
// identity, and requests without Accept-Encoding, store it.
func TestRangeWholePartForCodingClients(t *testing.T) {
	c := newClock()
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Vary", "Accept-Encoding")
		if strings.Contains(r.Header.Get("Accept-Encoding"), "br") && r.Header.Get("Range") == "" {
			w.Header().Set("Content-Encoding", "br")
		}
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader("0123456789"))
		return nil
	}}
	for _, tc := range []struct {
		ae     string
		stored bool
	}{
		{"gzip, deflate, br", false},
		{"identity;q=1, *;q=0", true}, // Chrome's media requests
		{"identity", true},
		{"", true},
		{"gzip;q=0", true},
	} {
		t.Run(tc.ae, func(t *testing.T) {
			h := newTestHandler(t, Config{}, c)
			fields := []string{"Range", "bytes=0-9"}
			if tc.ae != "" {
				fields = append(fields, "Accept-Encoding", tc.ae)
			}
			if w := get(t, h, o, "http://example.com/t", fields...); w.Code != 206 {
				t.Fatalf("%d", w.Code)
			}
			h.store.wait()
			w := get(t, h, o, "http://example.com/t", fields[2:]...)
			if hit := hasParam(w.Header().Get("Cache-Status"), "hit"); hit != tc.stored {
				t.Errorf("Accept-Encoding %q: stored %v, want %v", tc.ae, hit, tc.stored)
			}
		})
	}
}

func TestAcceptsCoding(t *testing.T) {
	for _, tc := range []struct {
		v    string
		want bool
	}{
		{"", false},
		{"identity", false},
		{"IDENTITY ;q=1", false},
		{"identity;q=1, *;q=0", false},
		{"gzip;q=0, br; q=0.000", false},
		{" , ", false},
		{"gzip", true},
		{"identity, GZip;q=0.5", true},
		{"*", true},
		{"br;q=0.001", true},
	} {
		if got := acceptsCoding(newRequest(http.MethodGet, "http://example.com/", "Accept-Encoding", tc.v)); got != tc.want {
			t.Errorf("acceptsCoding(%q) = %v, want %v", tc.v, got, tc.want)
		}
	}
	if acceptsCoding(newRequest(http.MethodGet, "http://example.com/")) {
		t.Error("no Accept-Encoding accepts a coding")
	}
}

// TestRangeRevalidationNewVersionDropsOldEntry: a 206 answering a
// revalidation with a Range, with a validator that does not select the
// stored response, shows the stored response outdated (as a 304 that does
// not select it does, for askAgain, and a HEAD's 200, for freshen): it is
// dropped, so that the same client does not get bytes of two versions on
// two consecutive range requests (found by a review: it was kept).
func TestRangeRevalidationNewVersionDropsOldEntry(t *testing.T) {
	c := newClock()
	type version struct{ tag, body, cc string }
	newOrigin := func(v *version, fail *int) *origin {
		return &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
			if *fail != 0 {
				w.WriteHeader(*fail)
				return nil
			}
			w.Header().Set("Cache-Control", v.cc)
			w.Header().Set("Date", c.date())
			w.Header().Set("Etag", `"`+v.tag+`"`)
			http.ServeContent(w, r, "", time.Time{}, strings.NewReader(v.body))
			return nil
		}}
	}
	t.Run("stale-if-error after a 206 of the new version", func(t *testing.T) {
		h := newTestHandler(t, Config{StaleIfError: 3600e9}, c)
		v, fail := &version{"v1", "aaaaaaaaaa", "max-age=1"}, 0
		o := newOrigin(v, &fail)
		get(t, h, o, "http://example.com/obj")
		c.Advance(2 * time.Second)
		v.tag, v.body = "v2", "bbbbbbbbbb" // same length: a client resumes by offset
		w := get(t, h, o, "http://example.com/obj", "Range", "bytes=0-4")
		if w.Code != 206 || w.Body.String() != "bbbbb" {
			t.Fatalf("first half: %d %q", w.Code, w.Body)
		}
		fail = http.StatusServiceUnavailable
		w = get(t, h, o, "http://example.com/obj", "Range", "bytes=5-9")
		if w.Code == 206 && w.Header().Get("Etag") == `"v1"` {
			t.Errorf("second half: 206 %q of v1 (Cache-Status %q) after the origin's 206 of v2 showed v1 outdated; the client now holds %q",
				w.Body, w.Header().Get("Cache-Status"), "bbbbb"+w.Body.String())
		}
	})
	t.Run("a reload's range sees the new version, the next hit the old", func(t *testing.T) {
		h := newTestHandler(t, Config{}, c)
		v, fail := &version{"v1", "aaaaaaaaaa", "max-age=600"}, 0
		o := newOrigin(v, &fail)
		get(t, h, o, "http://example.com/obj")
		v.tag, v.body = "v2", "bbbbbbbbbb"
		w := get(t, h, o, "http://example.com/obj", "Range", "bytes=0-4", "Cache-Control", "no-cache")
		if w.Code != 206 || w.Body.String() != "bbbbb" {
			t.Fatalf("reload: %d %q", w.Code, w.Body)
		}
		w = get(t, h, o, "http://example.com/obj", "Range", "bytes=5-9")
		if w.Header().Get("Etag") == `"v1"` {
			t.Errorf("after the reload's 206 of v2: %d %q of v1 (Cache-Status %q), fresh for 10 more minutes",
				w.Code, w.Body, w.Header().Get("Cache-Status"))
		}
	})
}

// TestRangeRevalidationIfRangeNotShared: the If-Range re-added to the
// revalidation request is a copy: a handler after the cache that rewrites
// a request field in place (Caddy's request_header replace does
// hdr[name][i] = ...) must not rewrite the client's, by which serveEntry
// answers the origin's 304 (found by a review: it shared the slice).
func TestRangeRevalidationIfRangeNotShared(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		for i, v := range r.Header["If-Range"] { // request_header If-Range v V
			r.Header["If-Range"][i] = strings.ReplaceAll(v, "v", "V")
		}
		w.Header().Set("Cache-Control", "max-age=1")
		w.Header().Set("Date", c.date())
		w.Header().Set("Etag", `"v1"`)
		if r.Header.Get("If-None-Match") == `"v1"` {
			w.WriteHeader(http.StatusNotModified)
			return nil
		}
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader("0123456789"))
		return nil
	}}
	get(t, h, o, "http://example.com/ir")
	c.Advance(2 * time.Second)
	r := newRequest(http.MethodGet, "http://example.com/ir", "Range", "bytes=0-1", "If-Range", `"v1"`)
	w := serve(t, h, o, r)
	if w.Code != 206 || w.Body.String() != "01" || r.Header.Get("If-Range") != `"v1"` {
		t.Errorf("stale, unchanged (304), client's If-Range \"v1\": got %d %q; the client's If-Range is now %q",
			w.Code, w.Body, r.Header.Get("If-Range"))
	}
}

// TestRangeRevalidationWholeNewVersionNotStoredDropsOldEntry: a whole 206
// of a new version that is then not stored (here: encode's 206 has no
// Vary while the URL's record has Accept-Encoding) drops the old version
// too (found by a review: the drop read the status as rewritten to 200 for
// storing, and the old version was served again by stale-if-error).
func TestRangeRevalidationWholeNewVersionNotStoredDropsOldEntry(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{StaleIfError: 3600e9}, c)
	tag, body, fail := "v1", "aaaaaaaaaa", 0
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		if fail != 0 {
			w.WriteHeader(fail)
			return nil
		}
		hd := w.Header()
		hd.Set("Cache-Control", "max-age=1")
		hd.Set("Date", c.date())
		hd.Set("Etag", `"`+tag+`"`)
		if r.Header.Get("If-None-Match") == `"`+tag+`"` {
			hd.Set("Vary", "Accept-Encoding")
			w.WriteHeader(http.StatusNotModified)
			return nil
		}
		var a, b int
		if br, ok, _ := ParseRange(r.Header.Get("Range"), int64(len(body))); ok {
			a, b = int(br.Start), int(br.End)
			// As encode leaves a 206: without the Vary it puts on a 200.
			hd.Set("Content-Range", "bytes "+strconv.Itoa(a)+"-"+strconv.Itoa(b)+"/"+strconv.Itoa(len(body)))
			w.WriteHeader(http.StatusPartialContent)
			_, _ = io.WriteString(w, body[a:b+1])
			return nil
		}
		hd.Set("Vary", "Accept-Encoding")
		_, _ = io.WriteString(w, body)
		return nil
	}}
	get(t, h, o, "http://example.com/obj")
	c.Advance(2 * time.Second)
	tag, body = "v2", "bbbbbbbbbb"
	w := get(t, h, o, "http://example.com/obj", "Range", "bytes=0-9")
	if w.Code != 206 || w.Body.String() != "bbbbbbbbbb" {
		t.Fatalf("whole range of v2: %d %q", w.Code, w.Body)
	}
	fail = http.StatusServiceUnavailable
	w = get(t, h, o, "http://example.com/obj", "Range", "bytes=5-9")
	if w.Header().Get("Etag") == `"v1"` {
		t.Errorf("after the origin's whole 206 of v2: %d %q of v1 (Cache-Status %q)",
			w.Code, w.Body, w.Header().Get("Cache-Status"))
	}
}

// TestRangeUnderABodyRewriter: templates, before the cache, records the
// response into a buffer and renders it whole; a part of a stored body
// rendered so came out as raw template source in a 206 (a review), or
// with a Content-Range its length did not match. Under a recorder with a
// buffer a Range for anything but media and downloads, on a hit or a miss for the whole
// body, gets the whole 200, as from an origin that ignores Range; under
// one without (Caddy's own, for access logs and metrics) it still gets
// its 206, and so does a video under templates, which streams what is not
// its MIME types (a review: a site-wide templates turned every stored
// video's ranges into 200s, which Safari does not play); a type a
// templates may be told to render, YAML, still gets the whole 200 (a
// review of the fix, which listed textual types: a 206 of its source).
func TestRangeUnderABodyRewriter(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	const body = `<p>{{.Req.Header.Get "X-A"}} {{/* a note */}}</p>`
	origin := func(contentType string) caddyhttp.Handler {
		return static(c, 200, body, "Cache-Control", "max-age=60", "Content-Type", contentType, "Content-Length", strconv.Itoa(len(body)))
	}
	// like templates' with `mime text/html application/yaml`: only those
	// are recorded to be rendered
	templatesBuffers := func(_ int, hdr http.Header) bool {
		ct := hdr.Get("Content-Type")
		return strings.Contains(ct, "text/html") || strings.Contains(ct, "application/yaml")
	}
	for _, tc := range []struct {
		name        string
		contentType string
		rng         string
		buffer      bool
		want        int
	}{
		{"miss for the whole body, rewriter", "text/html", "bytes=0-", true, http.StatusOK},
		{"hit, rewriter", "text/html", "bytes=5-20", true, http.StatusOK},
		{"hit, whole body, rewriter", "text/html", "bytes=0-", true, http.StatusOK},
		{"hit, access log recorder", "text/html", "bytes=5-20", false, http.StatusPartialContent},
		{"miss for the whole body, video under templates", "video/mp4", "bytes=0-", true, http.StatusPartialContent},
		{"hit, video under templates", "video/mp4", "bytes=5-20", true, http.StatusPartialContent},
		{"miss for the whole body, a type templates was told to render", "application/yaml", "bytes=0-", true, http.StatusOK},
		{"hit, a type templates was told to render", "application/yaml", "bytes=0-9", true, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := "http://example.com/" + strings.ReplaceAll(tc.contentType, "/", "-")
			w := httptest.NewRecorder()
			var buf *bytes.Buffer
			shouldBuffer := func(int, http.Header) bool { return false }
			if tc.buffer {
				buf, shouldBuffer = new(bytes.Buffer), templatesBuffers
			}
			rec := caddyhttp.NewResponseRecorder(w, buf, shouldBuffer)
			if err := h.ServeHTTP(rec, newRequest(http.MethodGet, url, "Range", tc.rng), origin(tc.contentType)); err != nil {
				t.Fatal(err)
			}
			h.store.wait()
			status, got := rec.Status(), w.Body.String()
			if rec.Buffered() {
				if err := rec.WriteResponse(); err != nil {
					t.Fatal(err)
				}
				got = w.Body.String()
			}
			want, wantRange := body, ""
			if tc.want == http.StatusPartialContent {
				br, _, _ := ParseRange(tc.rng, int64(len(body)))
				want = body[br.Start : br.End+1]
				wantRange = fmt.Sprintf("bytes %d-%d/%d", br.Start, br.End, len(body))
			}
			if status != tc.want || got != want || w.Header().Get("Content-Range") != wantRange {
				t.Errorf("status %d, Content-Range %q, body %q; want %d, %q, %q", status, w.Header().Get("Content-Range"), got, tc.want, wantRange, want)
			}
		})
	}
}

// TestBinaryMedia: the Content-Types that keep their ranges under a body
// rewriter before the cache (see rewritesBody).
func TestBinaryMedia(t *testing.T) {
	for ct, want := range map[string]bool{
		"video/mp4": true, "VIDEO/WEBM; codecs=vp9": true, "audio/mpeg": true, "image/png": true,
		"font/woff2": true, "application/font-woff": true, "application/vnd.ms-fontobject": true, "application/pdf": true, "application/octet-stream": true, "application/zip": true,
		"text/html; charset=utf-8": false, "TEXT/PLAIN": false, "": false, "application/json": false,
		"image/svg+xml": false, "application/yaml": false, "application/toml": false, "application/x-sh": false,
		"video": false,
	} {
		if got := binaryMedia(ct); got != want {
			t.Errorf("binaryMedia(%q) = %v, want %v", ct, got, want)
		}
	}
}
