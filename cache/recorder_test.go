package cache

import (
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// newTestRecorder returns a recorder over w that buffers up to limit.
func newTestRecorder(w http.ResponseWriter, limit int64) *recorder {
	rec := newRecorder(w, time.Now)
	rec.limit = limit
	rec.events = &testEvents{header: func(rec *recorder) { rec.buffer = true }}
	return rec
}

// testEvents calls its functions, when set.
type testEvents struct {
	header   func(rec *recorder)
	overflow func()
}

func (e *testEvents) onHeader(rec *recorder) {
	if e.header != nil {
		e.header(rec)
	}
}

func (e *testEvents) onOverflow() {
	if e.overflow != nil {
		e.overflow()
	}
}

func (e *testEvents) onBody(*recorder)     {}
func (e *testEvents) awaited() bool        { return false }
func (e *testEvents) spareFill() *bodyFill { return new(bodyFill) }

// recorded is what rec has buffered so far.
func recorded(rec *recorder) string {
	if rec.body == nil {
		return ""
	}
	if b := rec.body; b.limit > 0 { // gathering
		var sb strings.Builder
		for i, left := 0, b.w; left > 0; i++ {
			n := min(left, scratchSize)
			sb.Write(b.scratch[i].b[:n])
			left -= n
		}
		return sb.String()
	}
	var sb strings.Builder
	_ = rec.body.writeRange(&sb, 0, rec.body.w)
	return sb.String()
}

func TestRecorderStreamsAsItArrives(t *testing.T) {
	w := newWriter()
	rec := newTestRecorder(w, 1<<20)
	rec.Header().Set("X-A", "1")
	if _, err := io.WriteString(rec, "first"); err != nil {
		t.Fatal(err)
	}
	// The client has the header and the first chunk before the body ends.
	if len(w.codes) != 1 || w.codes[0] != 200 || string(w.body) != "first" || w.h.Get("X-A") != "1" {
		t.Fatalf("client saw codes %v body %q before the response completed", w.codes, w.body)
	}
	_, _ = io.WriteString(rec, "second")
	if string(w.body) != "firstsecond" || recorded(rec) != "firstsecond" {
		t.Errorf("client %q, buffer %q", w.body, recorded(rec))
	}
}

func TestRecorderKnownLengthAllocatesOnce(t *testing.T) {
	const n = 10000
	w := newWriter()
	rec := newTestRecorder(w, 1<<20)
	rec.Header().Set("Content-Length", strconv.Itoa(n))
	if !mmapAvailable {
		t.Skip("no mmap here: bodies live on the heap")
	}
	rec.arena = newArena(1 << 20)
	defer rec.arena.close()
	defer func() { rec.endOwnFill(); rec.joinWriter() }() // as forward does
	rec.WriteHeader(200)
	if used := rec.arena.stats().Used; rec.body.Len() != n || used < n || used > n+n/8 || len(rec.body.spans) > 3 {
		t.Fatalf("body of %d bytes in %d blocks, arena holds %d; want %d in at most 3 blocks wasting at most an eighth", rec.body.Len(), len(rec.body.spans), used, n)
	}
	first := unsafeData(rec.body.spans[0].b)
	chunk := []byte(strings.Repeat("0123456789", 100))
	for i := 0; i < n/len(chunk); i++ {
		_, _ = rec.Write(chunk)
	}
	if unsafeData(rec.body.spans[0].b) != first || !rec.body.full() || rec.body.limit != 0 {
		t.Error("body reallocated, short, or growing")
	}
	if got := recorded(rec); got != strings.Repeat(string(chunk), n/len(chunk)) {
		t.Errorf("recorded %d bytes that differ from those written", len(got))
	}
	if !rec.complete() {
		t.Error("complete() = false for a full body")
	}
}

func TestRecorderOverflow(t *testing.T) {
	for _, tc := range []struct {
		name          string
		contentLength string
	}{
		{name: "unknown length"},
		{name: "declared too long", contentLength: "5000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWriter()
			rec := newTestRecorder(w, 1000)
			overflowed := 0
			rec.events.(*testEvents).overflow = func() { overflowed++ }
			if tc.contentLength != "" {
				rec.Header().Set("Content-Length", tc.contentLength)
			}
			body := strings.Repeat("x", 5000)
			for i := 0; i < 5; i++ {
				if _, err := io.WriteString(rec, body[i*1000:(i+1)*1000]); err != nil {
					t.Fatal(err)
				}
			}
			if rec.body != nil || rec.buffer || !rec.overflow {
				t.Errorf("buffer kept (len %d) past the limit", len(recorded(rec)))
			}
			if overflowed != 1 {
				t.Errorf("onOverflow ran %d times, want 1", overflowed)
			}
			if string(w.body) != body {
				t.Errorf("client got %d bytes, want all %d", len(w.body), len(body))
			}
		})
	}
}

func TestRecorderClientGone(t *testing.T) {
	t.Run("swallowed while buffering", func(t *testing.T) {
		w := newWriter()
		w.failFrom = 1
		rec := newTestRecorder(w, 1<<20)
		for i := 0; i < 3; i++ {
			if _, err := io.WriteString(rec, "abc"); err != nil {
				t.Fatalf("write %d: %v", i, err)
			}
		}
		if recorded(rec) != "abcabcabc" {
			t.Errorf("buffer %q", recorded(rec))
		}
	})
	t.Run("aborts past the limit", func(t *testing.T) {
		w := newWriter()
		w.failFrom = 1
		rec := newTestRecorder(w, 4)
		_, _ = io.WriteString(rec, "abc")
		if _, err := io.WriteString(rec, "abc"); err == nil {
			t.Error("write after the client left and the buffer overflowed succeeded")
		}
	})
}

// TestRecorderPassesOn100Continue: a 100 (Continue) the next handler
// writes (reverse_proxy passes an upstream's on) is informational, as
// 103 is: the final status follows it.
func TestRecorderPassesOn100Continue(t *testing.T) {
	w := newWriter()
	rec := newTestRecorder(w, 1<<20)
	rec.WriteHeader(http.StatusContinue)
	rec.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(rec, "body")
	if len(w.codes) != 2 || w.codes[0] != http.StatusContinue || w.codes[1] != http.StatusOK || rec.status != http.StatusOK {
		t.Errorf("client saw %v, recorded %d; want [100 200] and 200", w.codes, rec.status)
	}
}

func TestRecorderInformationalAndFlush(t *testing.T) {
	w := newWriter()
	w.h.Set("X-Before", "client")
	rec := newTestRecorder(w, 1<<20)
	rec.Header().Set("Link", "</style.css>; rel=preload")
	rec.Header().Set("X-Before", "hint")
	rec.WriteHeader(http.StatusEarlyHints)
	// reverse_proxy then puts its own map back as it was.
	clear(rec.Header())
	rec.Header().Set("X-Final", "1")
	rec.WriteHeader(http.StatusOK)
	if len(w.codes) != 2 || w.codes[0] != 103 || w.codes[1] != 200 {
		t.Errorf("client saw %v, want [103 200]", w.codes)
	}
	// The 103's fields were for the 103 alone (RFC 8297 §2); a field the
	// client's header had before keeps its value, and its lines go in
	// front of the 103's, as reverse_proxy adds an upstream's 1xx lines.
	if len(w.sent) != 2 || w.sent[0].Get("Link") == "" || !slices.Equal(w.sent[0].Values("X-Before"), []string{"client", "hint"}) ||
		w.sent[1].Get("Link") != "" || w.sent[1].Get("X-Final") != "1" || w.sent[1].Get("X-Before") != "client" {
		t.Errorf("client's header with each status: %v; want Link on the 103 only", w.sent)
	}
	if err := http.NewResponseController(rec).Flush(); err != nil {
		t.Fatalf("ResponseController.Flush: %v", err)
	}
	rec.Flush()
	if w.flushes != 2 {
		t.Errorf("client flushed %d times, want 2", w.flushes)
	}
	if rec.Unwrap() != http.ResponseWriter(w) {
		t.Error("Unwrap does not return the client")
	}
}

func TestRecorderAbsorb(t *testing.T) {
	w := newWriter()
	rec := newRecorder(w, time.Now)
	rec.events = &testEvents{header: func(rec *recorder) { rec.pass = false }}
	rec.Header().Set("X-Origin", "1")
	rec.WriteHeader(http.StatusServiceUnavailable)
	_, _ = io.WriteString(rec, "error page")
	if len(w.codes) != 0 || len(w.body) != 0 || w.h.Get("X-Origin") != "" {
		t.Errorf("absorbed response reached the client: %v %q %v", w.codes, w.body, w.h)
	}
}

func TestRecorderTrailers(t *testing.T) {
	w := newWriter()
	rec := newTestRecorder(w, 1<<20)
	rec.Header().Set("Trailer", "X-Checksum")
	rec.WriteHeader(200)
	_, _ = io.WriteString(rec, "data")
	rec.Header().Set("X-Checksum", "abc")
	rec.Header().Set(http.TrailerPrefix+"X-Late", "z")
	rec.finishTrailers()
	if w.h.Get("X-Checksum") != "abc" || w.h.Get(http.TrailerPrefix+"X-Late") != "z" {
		t.Errorf("trailers not passed on: %v", w.h)
	}
}

func TestMissLargerThanItemLimitStreamsAndIsNotStored(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{MaxSize: 1 << 20, MaxItemSize: 1000}, c)
	body := strings.Repeat("z", 5000)
	o := static(c, 200, body, "Cache-Control", "max-age=60")
	w := get(t, h, o, "http://example.com/big")
	if w.Body.String() != body {
		t.Fatalf("client got %d bytes, want %d", w.Body.Len(), len(body))
	}
	wantStatus(t, get(t, h, o, "http://example.com/big"), []string{"fwd=uri-miss"})
}

func TestTruncatedResponseIsNotStored(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	o := static(c, 200, "short", "Cache-Control", "max-age=60", "Content-Length", "100")
	get(t, h, o, "http://example.com/trunc")
	wantStatus(t, get(t, h, o, "http://example.com/trunc"), []string{"fwd=uri-miss"})
}

// TestContentLengthDroppedAfterTheStatus: a handler after the cache that
// declares a length, writes less and then drops the field (net/http
// ignores the change: its client gets a short body, an error) leaves
// nothing stored, so no hit serves the rest of the arena block, which may
// hold bytes of another response.
func TestContentLengthDroppedAfterTheStatus(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	secret := strings.Repeat("another response; ", 60)
	get(t, h, static(c, 200, secret, "Cache-Control", "max-age=600", "Content-Length", strconv.Itoa(len(secret))), "http://example.com/other")
	h.store.purgeKey("http://example.com/other")
	h.store.wait()
	short := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Content-Length", strconv.Itoa(len(secret)))
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "short")
		w.Header().Del("Content-Length")
		return nil
	}}
	get(t, h, short, "http://example.com/short")
	w := get(t, h, short, "http://example.com/short")
	if hasParam(w.Header().Get("Cache-Status"), "hit") {
		t.Errorf("the short response was stored: a hit of %d bytes, %.40q", w.Body.Len(), w.Body.String())
	}
}

// TestRecorderInformationalWithoutServer: a next handler that dropped the
// client's Server before a 1xx (a `header -Server` between the cache and
// reverse_proxy) sends the 1xx without it, as without the cache; the
// final response has what the next handler leaves.
func TestRecorderInformationalWithoutServer(t *testing.T) {
	w := newWriter()
	w.h.Set("Server", "Caddy")
	rec := newTestRecorder(w, 1<<20)
	delete(rec.Header(), "Server")
	rec.Header().Set("Link", "</style.css>; rel=preload")
	rec.WriteHeader(http.StatusEarlyHints)
	if len(w.sent) != 1 || w.sent[0].Get("Server") != "" {
		t.Errorf("103 sent with %v, want no Server", w.sent)
	}
	if w.h.Get("Server") != "Caddy" {
		t.Errorf("client's Server after the 103: %q, want it back", w.h.Get("Server"))
	}
}

// TestRecorderInformationalEditedServer: a 1xx whose Server the next
// handler edited from the seed carries the client's value edited, never
// the seed (found by a review).
func TestRecorderInformationalEditedServer(t *testing.T) {
	w := newWriter()
	w.h.Set("Server", "Caddy")
	rec := newTestRecorder(w, 1<<20)
	rec.Header()["Server"][0] += "/2"
	rec.WriteHeader(http.StatusEarlyHints)
	if len(w.sent) != 1 || !slices.Equal(w.sent[0].Values("Server"), []string{"Caddy/2"}) {
		t.Errorf("103 sent with %v, want Server Caddy/2", w.sent)
	}
}

func TestSharedTrailers(t *testing.T) {
	rc := ParseResponseControl(http.Header{"Cache-Control": {`max-age=60, private="X-User", no-cache="x-other"`}}, "")
	hdr := http.Header{}
	for _, f := range []string{"Grpc-Status", "Set-Cookie", "X-User", "X-Other", "Connection", "x-lower"} {
		hdr[http.TrailerPrefix+f] = []string{"v"}
	}
	hdr["Content-Type"] = []string{"text/plain"}
	got := sharedTrailers(hdr, &rc)
	want := http.Header{http.TrailerPrefix + "Grpc-Status": {"v"}, http.TrailerPrefix + "x-lower": {"v"}}
	if !maps.EqualFunc(got, want, slices.Equal) {
		t.Errorf("sharedTrailers = %v, want %v", got, want)
	}
	if got := sharedTrailers(http.Header{"Content-Type": {"x"}}, &rc); got != nil {
		t.Errorf("no trailers: %v, want nil", got)
	}
	// A field Connection lists is hop-by-hop: a header field of its name
	// is not stored (a review).
	hdr = http.Header{"Connection": {"X-Hop"}, http.TrailerPrefix + "X-Hop": {"hop"}}
	if got := sharedTrailers(hdr, &rc); got != nil {
		t.Errorf("a trailer Connection lists: %v, want none", got)
	}
}

func TestPassNamedFields(t *testing.T) {
	src := http.Header{"Set-Cookie": {"sid=1"}, "X-User": {"u"}, "Connection": {"X-Hop"}, "X-Hop": {"hop"}, "Keep-Alive": {"timeout=5"}}
	for _, tc := range []struct {
		field, cc string
		want      http.Header
	}{
		{"Cache-Control", `max-age=1, private="Set-Cookie, X-User", no-cache="x-user"`, http.Header{"Set-Cookie": {"sid=1"}, "X-User": {"u"}}},
		// A targeted field's list keeps repeats (a review: the cookie twice).
		{"CDN-Cache-Control", `max-age=1, private="Set-Cookie, set-cookie"`, http.Header{"Set-Cookie": {"sid=1"}}},
		// Hop-by-hop: Connection lists it, or it always is.
		{"Cache-Control", `max-age=1, private="X-Hop, Keep-Alive"`, http.Header{}},
	} {
		rc := ParseResponseControl(http.Header{http.CanonicalHeaderKey(tc.field): {tc.cc}}, map[bool]string{true: tc.field}[tc.field != "Cache-Control"])
		dst := http.Header{}
		passNamedFields(dst, src, rc)
		if !maps.EqualFunc(dst, tc.want, slices.Equal) {
			t.Errorf("%s: %s: %v, want %v", tc.field, tc.cc, dst, tc.want)
		}
	}
}
