package cache

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
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
		// Members no request field is named: matching nothing, they would
		// match every request, the ones the origin told apart among them.
		{"space for a comma", rh("Vary", "Cookie User-Agent"), nil, true},
		{"parameter", rh("Vary", "Accept, X-A;q=1"), []string{"Accept"}, true},
		{"quoted", rh("Vary", `"X-A"`), nil, true},
		{"slash", rh("Vary", "Cookie/"), nil, true},
		// Written by reverse_proxy from the client's address.
		{"X-Forwarded-For", rh("Vary", "x-forwarded-for"), []string{"X-Forwarded-For"}, true},
		// reverse_proxy adds the client's HTTP version to it.
		{"Via", rh("Vary", "Accept, Via"), []string{"Accept", "Via"}, true},
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
// fields match after normalising field-name case and, for the list fields
// of proactive negotiation (Accept, Accept-Charset, Accept-Language),
// whitespace within each line (not empty members, nor how the members
// are spread over lines: an origin reading the first line or the first
// member would answer them differently), and for Accept-Encoding its set
// of codings; any other field matches only the same lines, byte for byte;
// absent matches only absent; the key is unambiguous. (Vary: * never matching
// and "most recent of several" are the handler's: it does not store a
// Vary: * response, and a variant key holds one entry.)
func TestRule15_VaryNormalisation(t *testing.T) {
	same := []struct {
		name   string
		fields []string
		a, b   http.Header
	}{
		{"whitespace runs", []string{"Accept-Language"}, rh("Accept-Language", "en-US,  en;q=0.5"), rh("Accept-Language", " en-US , en;q=0.5 ")},
		{"tabs", []string{"Accept"}, rh("Accept", "text/html;\t\tq=0.5"), rh("Accept", "text/html; q=0.5")},
		{"accept-charset", []string{"Accept-Charset"}, rh("Accept-Charset", "utf-8 ,iso-8859-1;q=0.5"), rh("Accept-Charset", "utf-8, iso-8859-1;q=0.5")},
		{"accept-encoding empty members", []string{"Accept-Encoding"}, rh("Accept-Encoding", ", gzip,,"), rh("Accept-Encoding", "gzip")},
		{"same value of another field", []string{"Cookie"}, rh("Cookie", "lang=en; theme=dark"), rh("Cookie", "lang=en; theme=dark")},
		{"same lines of another field", []string{"X-Q"}, rh("X-Q", "a", "X-Q", "b"), rh("X-Q", "a", "X-Q", "b")},
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
		{"quoted whitespace kept", []string{"Accept"}, rh("Accept", `text/html;x="a  b"`), rh("Accept", `text/html;x="a b"`)},
		{"quoted comma kept", []string{"Accept"}, rh("Accept", `text/html;x="a,b"`), rh("Accept", `text/html;x="a, b"`)},
		{"member order outside accept-encoding", []string{"Accept-Language"}, rh("Accept-Language", "en, de"), rh("Accept-Language", "de, en")},
		// An origin reading the first line or the first member of a
		// negotiation field answers these differently (a review: an empty
		// first Accept-Language line stored the default language's page
		// for French browsers).
		{"lines vs one line of a list field", []string{"Accept"}, rh("Accept", "text/html", "Accept", "application/json"), rh("Accept", "text/html, application/json")},
		{"an empty first line of a list field", []string{"Accept-Language"}, rh("Accept-Language", "", "Accept-Language", "fr-FR"), rh("Accept-Language", "fr-FR")},
		{"a leading empty member", []string{"Accept-Language"}, rh("Accept-Language", ",fr-FR"), rh("Accept-Language", "fr-FR")},
		{"trailing empty members", []string{"Accept"}, rh("Accept", "text/html,,"), rh("Accept", "text/html")},
		// Fields that are not lists of the negotiation fields are kept
		// as they came: to the origin, "lang=en," is not "lang=en".
		{"trailing comma in a cookie", []string{"Cookie"}, rh("Cookie", "lang=en,"), rh("Cookie", "lang=en")},
		{"empty member elsewhere", []string{"X-Q"}, rh("X-Q", "a,,b"), rh("X-Q", "a,b")},
		{"space after a comma elsewhere", []string{"X-Q"}, rh("X-Q", "a,b"), rh("X-Q", "a, b")},
		{"whitespace runs elsewhere", []string{"User-Agent"}, rh("User-Agent", "a\t\tb"), rh("User-Agent", "a b")},
		{"unterminated quote elsewhere", []string{"X-Q"}, rh("X-Q", `"a`), rh("X-Q", `"a"`)},
		{"case elsewhere", []string{"X-Q"}, rh("X-Q", "a"), rh("X-Q", "A")},
		// An origin may read only a field's first line (Go's Header.Get
		// does), so lines are not joined outside the list fields.
		{"lines vs one joined line", []string{"User-Agent"}, rh("User-Agent", "Mozilla/5.0 (KHTML", "User-Agent", "like Gecko)"), rh("User-Agent", "Mozilla/5.0 (KHTML, like Gecko)")},
		{"lines in another order", []string{"X-Q"}, rh("X-Q", "a", "X-Q", "b"), rh("X-Q", "b", "X-Q", "a")},
		{"one line vs two", []string{"X-Q"}, rh("X-Q", "a"), rh("X-Q", "a", "X-Q", "")},
		{"no line vs an empty one", []string{"X-Q"}, http.Header{"X-Q": {}}, rh("X-Q", "")},
		{"line boundary moved", []string{"X-Q"}, rh("X-Q", "1:a", "X-Q", "b"), rh("X-Q", "1", "X-Q", "a1:b")},
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

// TestVaryFieldsNotListsKeptAsSent: under Vary: Cookie, a request whose
// cookie the origin reads differently ("lang=en," is the language "en,")
// does not store its answer for the requests with "lang=en"; under Vary:
// User-Agent, a field sent in two lines (an origin may read only the
// first) does not share a variant with the one line they join to; under
// Vary: Accept-Language, a list, values that differ only in spacing still
// share one, but not an empty first line or member, which an origin
// reading the first member answers with its default.
func TestVaryFieldsNotListsKeptAsSent(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Cache-Control", "public, max-age=300")
		w.Header().Set("Date", c.date())
		switch r.URL.Path {
		case "/cookie":
			w.Header().Set("Vary", "Cookie")
			lang := "none"
			if ck, err := r.Cookie("lang"); err == nil {
				lang = ck.Value
			}
			switch lang {
			case "en":
				_, _ = io.WriteString(w, "Welcome")
			default:
				_, _ = fmt.Fprintf(w, "unsupported language %q", lang)
			}
		case "/ua":
			w.Header().Set("Vary", "User-Agent")
			_, _ = io.WriteString(w, "ua="+r.Header.Get("User-Agent"))
		case "/lang":
			w.Header().Set("Vary", "Accept-Language")
			_, _ = io.WriteString(w, "al="+r.Header.Get("Accept-Language"))
		case "/first":
			w.Header().Set("Vary", "Accept-Language")
			lang, _, _ := strings.Cut(r.Header.Get("Accept-Language"), ",")
			if lang = strings.TrimSpace(lang); lang == "" {
				lang = "en (default)"
			}
			_, _ = io.WriteString(w, "lang="+lang)
		}
		return nil
	}}
	step := func(target, want string, parts []string, fields ...string) {
		t.Helper()
		w := get(t, h, o, "http://example.com"+target, fields...)
		wantStatus(t, w, parts)
		if got := w.Body.String(); got != want {
			t.Errorf("%s %q: body %q, want %q", target, fields, got, want)
		}
	}

	step("/cookie", `unsupported language "en,"`, []string{"fwd=uri-miss"}, "Cookie", "lang=en,")
	step("/cookie", "Welcome", []string{"fwd=vary-miss"}, "Cookie", "lang=en")
	step("/cookie", "Welcome", []string{"hit"}, "Cookie", "lang=en")
	step("/cookie", `unsupported language "en,"`, []string{"hit"}, "Cookie", "lang=en,")

	const ua = "Mozilla/5.0 (KHTML, like Gecko)"
	step("/ua", "ua=Mozilla/5.0 (KHTML", []string{"fwd=uri-miss"}, "User-Agent", "Mozilla/5.0 (KHTML", "User-Agent", "like Gecko)")
	step("/ua", "ua="+ua, []string{"fwd=vary-miss"}, "User-Agent", ua)
	step("/ua", "ua="+ua, []string{"hit"}, "User-Agent", ua)

	step("/lang", "al=en-US,en;q=0.9", []string{"fwd=uri-miss"}, "Accept-Language", "en-US,en;q=0.9")
	step("/lang", "al=en-US,en;q=0.9", []string{"hit"}, "Accept-Language", "en-US ,  en;q=0.9")
	step("/lang", "al=en;q=0.9,en-US", []string{"fwd=vary-miss"}, "Accept-Language", "en;q=0.9,en-US")

	step("/first", "lang=en (default)", []string{"fwd=uri-miss"}, "Accept-Language", "", "Accept-Language", "fr-FR")
	step("/first", "lang=en (default)", []string{"fwd=vary-miss"}, "Accept-Language", ",fr-FR")
	step("/first", "lang=fr-FR", []string{"fwd=vary-miss"}, "Accept-Language", "fr-FR")
	step("/first", "lang=fr-FR", []string{"hit"}, "Accept-Language", "fr-FR")
}

// TestVaryOnFieldsNotForwarded: a request carrying a field its Vary names
// that reverse_proxy does not forward (hop-by-hop, or named in its
// Connection field) matches no variant: a security review stored the
// origin's answer to a request whose Accept-Language: fr it never saw
// (Connection: Accept-Language) as the fr variant, served to every later
// French reader.
func TestVaryOnFieldsNotForwarded(t *testing.T) {
	fields := []string{"Accept-Language", "Upgrade"}
	fr := http.Header{"Accept-Language": {"fr"}}
	for _, tc := range []struct {
		name string
		h    http.Header
	}{
		{"named in Connection", http.Header{"Accept-Language": {"fr"}, "Connection": {"keep-alive, accept-language"}}},
		{"named in a second Connection line", http.Header{"Accept-Language": {"fr"}, "Connection": {"close", " Accept-Language "}}},
		{"hop-by-hop", http.Header{"Accept-Language": {"fr"}, "Upgrade": {"h2c"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if k := VaryKey(fields, tc.h); k != unmatchedVaryKey {
				t.Errorf("VaryKey = %q, want %q", k, unmatchedVaryKey)
			}
		})
	}
	// Absent, or not named: matched as usual.
	for _, h := range []http.Header{fr, {"Accept-Language": {"fr"}, "Connection": {"keep-alive"}}, {"Connection": {"Accept-Language"}}} {
		if k := VaryKey(fields, h); k == unmatchedVaryKey {
			t.Errorf("VaryKey(%v) = %q, want a key", h, k)
		}
	}
	if VaryKey(fields, http.Header{"Accept-Language": {"fr"}, "Connection": {"keep-alive"}}) != VaryKey(fields, fr) {
		t.Error("a Connection field naming no varying field changes the key")
	}
}

// TestVaryHandled: through the handler, a malformed Vary member is taken
// for "*" (never stored), a request whose varying field the origin did
// not get (named in Connection) is matched to no variant and its answer
// not stored, and a 304 that changes Vary does not keep the entry, which
// was chosen by the fields it varied on before. Each was a cross-user
// leak found by a security review.
func TestVaryHandled(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	var vary, notModifiedVary string
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Date", c.date())
		if r.Header.Get("If-None-Match") == `"a"` {
			if notModifiedVary != "" {
				w.Header().Set("Vary", notModifiedVary)
			}
			w.WriteHeader(http.StatusNotModified)
			return nil
		}
		w.Header().Set("Cache-Control", "max-age=1")
		w.Header().Set("Etag", `"a"`)
		if vary != "" {
			w.Header().Set("Vary", vary)
		}
		_, _ = io.WriteString(w, "for cookie "+r.Header.Get("Cookie")+", language "+r.Header.Get("Accept-Language"))
		return nil
	}}

	vary = "Cookie User-Agent"
	get(t, h, o, "http://example.com/acct", "Cookie", "sid=alice")
	if w := get(t, h, o, "http://example.com/acct", "Cookie", "sid=bob"); w.Body.String() != "for cookie sid=bob, language " {
		t.Errorf("Vary: Cookie User-Agent: bob got %q (%s)", w.Body, w.Header().Get("Cache-Status"))
	}

	vary = "Accept-Language"
	w := get(t, h, o, "http://example.com/lang", "Accept-Language", "fr", "Connection", "Accept-Language")
	wantStatus(t, w, []string{"fwd=uri-miss"}, "stored")
	w = get(t, h, o, "http://example.com/lang", "Accept-Language", "fr")
	wantStatus(t, w, []string{"fwd=uri-miss"})
	wantStatus(t, get(t, h, o, "http://example.com/lang", "Accept-Language", "fr"), []string{"hit"})
	w = get(t, h, o, "http://example.com/lang", "Accept-Language", "fr", "Connection", "Accept-Language")
	wantStatus(t, w, []string{"fwd=vary-miss"})
	wantStatus(t, get(t, h, o, "http://example.com/lang", "Accept-Language", "fr"), []string{"hit"})

	vary = ""
	get(t, h, o, "http://example.com/reval")
	c.Advance(2 * time.Second)
	notModifiedVary = "X-A"
	w = get(t, h, o, "http://example.com/reval")
	if w.Code != 200 || w.Body.String() != "for cookie , language " {
		t.Errorf("revalidated: %d %q", w.Code, w.Body)
	}
	wantStatus(t, w, []string{"fwd=stale", "fwd-status=304"})
	wantStatus(t, get(t, h, o, "http://example.com/reval", "X-A", "foo"), []string{"fwd=uri-miss"})
}

// TestVaryOnForwardedFields: reverse_proxy replaces X-Forwarded-Proto and
// X-Forwarded-Host from a client that is not a trusted proxy, so such a
// client's values match no variant and its answer is not stored; a
// trusted proxy's do. (A review: a client reaching a tier's node directly
// with X-Forwarded-Proto: https could store the node's http answer, a
// redirect to https, for the front's https requests: a loop.)
func TestVaryOnForwardedFields(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Vary", "X-Forwarded-Proto")
		_, _ = io.WriteString(w, "for "+r.Header.Get("X-Forwarded-Proto"))
		return nil
	}}
	from := func(trusted bool) *http.Request {
		r := newRequest(http.MethodGet, "http://example.com/fwd", "X-Forwarded-Proto", "https")
		caddyhttp.SetVar(r.Context(), caddyhttp.TrustedProxyVarKey, trusted)
		return r
	}
	if k := requestVaryKey([]string{"X-Forwarded-Proto"}, from(false)); k != unmatchedVaryKey {
		t.Errorf("untrusted: key %q, want %q", k, unmatchedVaryKey)
	}
	if k := requestVaryKey([]string{"X-Forwarded-Proto"}, from(true)); k == unmatchedVaryKey {
		t.Error("trusted: unmatched")
	}
	serve(t, h, o, newRequest(http.MethodGet, "http://example.com/fwd")) // the URL's variant record
	wantStatus(t, serve(t, h, o, from(false)), []string{"fwd=vary-miss"}, "stored")
	wantStatus(t, serve(t, h, o, from(false)), []string{"fwd=vary-miss"})
	wantStatus(t, serve(t, h, o, from(true)), []string{"fwd=vary-miss"})
	wantStatus(t, serve(t, h, o, from(true)), []string{"hit"})
	wantStatus(t, serve(t, h, o, from(false)), []string{"fwd=vary-miss"})
}

// TestASCIIHelpersAtTheirBounds: the letter ranges of compactLower (Vary
// normalisation) and isHex (purge keys' escapes) end where they should.
func TestASCIIHelpersAtTheirBounds(t *testing.T) {
	if got := compactLower("A Z\ta z@[`{"); got != "azaz@[`{" {
		t.Errorf("compactLower = %q, want %q", got, "azaz@[`{")
	}
	for _, c := range []byte("09afAF") {
		if !isHex(c) {
			t.Errorf("isHex(%q) = false", c)
		}
	}
	for _, c := range []byte("/:`g@G") {
		if isHex(c) {
			t.Errorf("isHex(%q) = true", c)
		}
	}
}

// TestVariantKeyHeldOnce: a variant's request values (varyKey) are the
// end of its key, not a second copy, which the cost did not count (a
// review: with 2,000-byte values, 27% more heap than counted).
func TestVariantKeyHeldOnce(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	o := static(c, 200, "body", "Cache-Control", "max-age=60", "Vary", "X-V")
	get(t, h, o, "http://example.com/v", "X-V", strings.Repeat("v", 2000))
	h.store.wait()
	variants := 0
	h.store.(*store).rc().IterValues(func(e *entry) (stop bool) {
		if e.varyKey == "" {
			return false // the URL's variant record
		}
		variants++
		end := unsafe.StringData(e.key[len(e.key)-len(e.varyKey):])
		if !strings.HasSuffix(e.key, e.varyKey) || unsafe.StringData(e.varyKey) != end {
			t.Errorf("varyKey of %d bytes is a copy, not the end of the key", len(e.varyKey))
		}
		return false
	})
	if variants != 1 {
		t.Fatalf("%d variants stored, want 1", variants)
	}
}
