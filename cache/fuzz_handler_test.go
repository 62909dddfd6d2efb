package cache

import (
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
