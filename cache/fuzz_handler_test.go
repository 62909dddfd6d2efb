package cache

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzHandlerServesOnlyTheOriginsBodies runs requests with fuzzed fields
// (Range, conditionals, Cache-Control, Accept-Encoding…) against an origin
// answering with fuzzed fields (Cache-Control, Vary, ETag, Expires, a
// status) through the handler, and checks what any shared cache must:
// it never panics, it answers every request, and whatever body it sends
// is the origin's body for that URL, or a part of it that Content-Range
// names, or nothing (HEAD, 304, 204, 416).
func FuzzHandlerServesOnlyTheOriginsBodies(f *testing.F) {
	f.Add("max-age=60", "", `"v1"`, "", 200, "Range: bytes=0-3", "If-None-Match: \"v1\"", uint8(0))
	f.Add("max-age=0, stale-while-revalidate=60", "Accept-Encoding", "", "", 200, "Accept-Encoding: gzip", "Cache-Control: max-stale", uint8(1))
	f.Add("s-maxage=5, must-revalidate", "*", `W/"x"`, "Thu, 01 Jan 1970 00:00:00 GMT", 203, "If-Modified-Since: Mon, 01 Jan 2024 00:00:00 GMT", "Range: bytes=-2", uint8(2))
	f.Add("no-cache", "Cookie", `"a"`, "", 404, "Cookie: s=1", "Cache-Control: only-if-cached", uint8(3))
	f.Add("public, max-age=10", "", "", "", 206, "Range: bytes=5-1, 2-3", "If-Range: \"a\"", uint8(4))
	f.Fuzz(func(t *testing.T, cc, vary, etag, expires string, status int, req1, req2 string, step uint8) {
		if status < 200 || status > 599 || status == 304 {
			status = 200
		}
		c := newClock()
		h := newTestHandler(t, Config{MaxSize: 1 << 20, MinUses: 1}, c)
		bodyOf := func(path string) string { return strings.Repeat(path+";", 8) }
		o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
			hd := w.Header()
			for name, v := range map[string]string{"Cache-Control": cc, "Vary": vary, "Etag": etag, "Expires": expires} {
				if v != "" && isFieldValue(v) {
					hd.Set(name, v)
				}
			}
			hd.Set("Date", c.date())
			b := bodyOf(r.URL.Path)
			if status == http.StatusNoContent {
				b = ""
			}
			hd.Set("Content-Length", strconv.Itoa(len(b)))
			w.WriteHeader(status)
			if r.Method != http.MethodHead {
				_, _ = w.Write([]byte(b))
			}
			return nil
		}}
		fieldsOf := func(line string) []string {
			name, value, ok := strings.Cut(line, ":")
			name, value = strings.TrimSpace(name), strings.TrimSpace(value)
			if !ok || !isFieldName(name) || !isFieldValue(value) || strings.EqualFold(name, "Host") || strings.EqualFold(name, "Content-Length") || strings.EqualFold(name, "Transfer-Encoding") {
				return nil
			}
			return []string{name, value}
		}
		methods := []string{http.MethodGet, http.MethodGet, http.MethodHead, http.MethodGet, http.MethodPost}
		for i, fields := range [][]string{nil, fieldsOf(req1), fieldsOf(req2), append(fieldsOf(req1), fieldsOf(req2)...), nil} {
			method := methods[(int(step)+i)%len(methods)]
			if i == 0 {
				method = http.MethodGet
			}
			r := newRequest(method, "http://example.com/p", fields...)
			w := httptest.NewRecorder()
			_ = h.ServeHTTP(w, r, o)
			h.store.wait()
			c.Advance(time.Duration(step%4) * 20 * time.Second)
			got, want := w.Body.String(), bodyOf("/p")
			switch {
			case got == "" || got == want:
			case w.Code == http.StatusPartialContent:
				cr := w.Header().Get("Content-Range")
				var first, last, size int
				if n, _ := parseContentRangeForTest(cr, &first, &last, &size); !n || size != len(want) || last >= size || want[first:last+1] != got {
					t.Fatalf("request %d (%s %v): 206 with Content-Range %q and body %q, not that part of %q", i, method, fields, cr, got, want)
				}
			default:
				t.Fatalf("request %d (%s %v): %d with body %q, not the origin's %q (Cache-Status %q)", i, method, fields, w.Code, got, want, w.Header().Get("Cache-Status"))
			}
		}
	})
}

// parseContentRangeForTest reads "bytes first-last/size".
func parseContentRangeForTest(cr string, first, last, size *int) (bool, error) {
	rest, ok := strings.CutPrefix(cr, "bytes ")
	if !ok {
		return false, nil
	}
	span, total, ok := strings.Cut(rest, "/")
	a, b, ok2 := strings.Cut(span, "-")
	if !ok || !ok2 {
		return false, nil
	}
	var err error
	if *first, err = strconv.Atoi(a); err != nil {
		return false, err
	}
	if *last, err = strconv.Atoi(b); err != nil {
		return false, err
	}
	if *size, err = strconv.Atoi(total); err != nil {
		return false, err
	}
	return *first >= 0 && *first <= *last, nil
}

// isFieldValue reports whether v can be sent as a field value (no
// control characters but tab).
func isFieldValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// FuzzHandlerKeepsVariantsApart: an origin whose body is made of the
// request's X-V lines, and says so (Vary: X-V, plus fuzzed fields), under
// fuzzed Cache-Control; requests with fuzzed X-V lines (none, empty, one
// or two) must each get the body made of their own lines, whether from
// the origin or from the store.
func FuzzHandlerKeepsVariantsApart(f *testing.F) {
	f.Add("max-age=60", "", "a", "b", "a", uint8(0))
	f.Add("max-age=60", "Accept-Encoding", "", "a", "", uint8(1))
	f.Add("max-age=0, stale-while-revalidate=60", "X-W", "a,b", "a, b", " a", uint8(2))
	f.Add("public, max-age=10", "x-v", "A", "a", "A", uint8(3))
	f.Fuzz(func(t *testing.T, cc, moreVary, v1, v2, v3 string, step uint8) {
		c := newClock()
		h := newTestHandler(t, Config{MaxSize: 1 << 20, MinUses: 1}, c)
		bodyOf := func(lines []string) string { return "/p;" + strings.Join(lines, ", ") }
		o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
			hd := w.Header()
			if cc != "" && isFieldValue(cc) {
				hd.Set("Cache-Control", cc)
			}
			hd.Set("Vary", "X-V")
			if moreVary != "" && isFieldValue(moreVary) {
				hd.Add("Vary", moreVary)
			}
			hd.Set("Date", c.date())
			_, _ = io.WriteString(w, bodyOf(r.Header.Values("X-V")))
			return nil
		}}
		for i, v := range []string{v1, v2, v3, v1, v2} {
			var lines []string
			for _, l := range strings.Split(v, "|") { // "|" separates field lines
				if l != "" && isFieldValue(l) && strings.TrimSpace(l) == l {
					lines = append(lines, l)
				}
			}
			r := newRequest(http.MethodGet, "http://example.com/p")
			for _, l := range lines {
				r.Header.Add("X-V", l)
			}
			w := httptest.NewRecorder()
			_ = h.ServeHTTP(w, r, o)
			h.store.wait()
			if step&1 == 1 {
				c.Advance(30 * time.Second)
			}
			if w.Code == http.StatusOK {
				if got, want := w.Body.String(), bodyOf(lines); got != want {
					t.Fatalf("request %d with X-V %q got %q, want %q (Cache-Status %q)", i, lines, got, want, w.Header().Get("Cache-Status"))
				}
			}
		}
	})
}
