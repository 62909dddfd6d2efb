package cache

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func init() {
	caddy.RegisterModule(AdminAPI{})
}

// AdminAPI is the admin endpoint of response_cache (module
// admin.api.response_cache):
//
//	POST /response_cache/purge  {"cache": "caddy", "key": "...", "prefix": "...", "tag": "...", "all": true}
//	GET  /response_cache/stats
//
// A purge names exactly one of key (a full cache key, e.g.
// "https://example.com/a"), prefix, tag (Surrogate-Key / Cache-Tag) or
// all; cache limits it to one cache_name (default: every cache). It
// answers {"purged": n, "caches": m}.
type AdminAPI struct {
	logger *zap.Logger // purges are logged at info
}

// Provision gets the logger: the config's logs, named for the module, as
// a handler's is. (Caddy provisions admin routers with a context of no
// module, whose Logger, like caddy.Log(), writes to the default log only,
// which leaves out what a log of its own includes.)
//
// It also registers the cache's metrics in the config's registry, which
// the admin endpoint's /metrics serves (see registerMetrics).
func (a *AdminAPI) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger(a)
	registerMetrics(ctx.GetMetricsRegistry())
	return nil
}

// CaddyModule returns the Caddy module information.
func (AdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.response_cache",
		New: func() caddy.Module { return new(AdminAPI) },
	}
}

// Routes returns the admin routes.
func (a AdminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{
		{Pattern: "/response_cache/purge", Handler: caddy.AdminHandlerFunc(a.handlePurge)},
		{Pattern: "/response_cache/stats", Handler: caddy.AdminHandlerFunc(a.handleStats)},
	}
}

// PurgeRequest is the body of POST /response_cache/purge.
type PurgeRequest struct {
	// Cache limits the purge to the cache of this cache_name; empty: all.
	Cache string `json:"cache,omitempty"`
	// Key purges the entry of this exact cache key, and its variants.
	Key string `json:"key,omitempty"`
	// Prefix purges every entry whose key starts with it.
	Prefix string `json:"prefix,omitempty"`
	// Tag purges every entry with this surrogate key.
	Tag string `json:"tag,omitempty"`
	// All purges everything.
	All bool `json:"all,omitempty"`
}

// PurgeResponse is the answer to a purge.
type PurgeResponse struct {
	// Purged counts the responses removed; variant records removed with
	// them are not counted.
	Purged int `json:"purged"`
	// Caches counts the stores the purge ran on.
	Caches int `json:"caches"`
}

// maxPurgeBody bounds the JSON body of a purge.
const maxPurgeBody = 64 << 10

func (a AdminAPI) handlePurge(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("purging response_cache: method %s not allowed, use POST", r.Method)}
	}
	var req PurgeRequest
	body, err := io.ReadAll(io.LimitReader(r.Body, maxPurgeBody+1))
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("purging response_cache: reading request body: %w", err)}
	}
	if len(body) > maxPurgeBody {
		return caddy.APIError{HTTPStatus: http.StatusRequestEntityTooLarge, Err: fmt.Errorf("purging response_cache: request body larger than %d bytes", maxPurgeBody)}
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf(`purging response_cache: the request body is empty; send a JSON object naming one of key, prefix or tag, or all: {"prefix": "https://example.com/static/"}`)}
	}
	if err := checkPurgeFields(body); err != nil {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("purging response_cache: %w", err)}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("purging response_cache: decoding request body: %w", err)}
	}
	if len(bytes.TrimSpace(body[dec.InputOffset():])) > 0 {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("purging response_cache: request body has data after the JSON object; send one object")}
	}
	n := 0
	for _, set := range []bool{req.Key != "", req.Prefix != "", req.Tag != "", req.All} {
		if set {
			n++
		}
	}
	if n != 1 {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("purging response_cache: give exactly one of key, prefix or tag (not empty), or all: true; got %d", n)}
	}
	if err := req.check(); err != nil {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("purging response_cache: %w", err)}
	}
	var resp PurgeResponse
	for _, s := range snapshotStores() {
		if req.Cache != "" && s.name != req.Cache {
			continue
		}
		resp.Caches++
		switch {
		case req.Key != "":
			for _, k := range purgedKeys(req.Key) {
				resp.Purged += s.purgeKey(k)
			}
		case req.Prefix != "":
			for _, p := range purgePrefixes(req.Prefix) {
				resp.Purged += s.purgePrefix(p)
			}
		case req.Tag != "":
			resp.Purged += s.purgeTag(req.Tag)
		default:
			resp.Purged += s.purgeAll()
		}
	}
	if req.Cache != "" && resp.Caches == 0 {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("purging response_cache: no cache named %q", req.Cache)}
	}
	if a.logger != nil { // (nil unprovisioned, in tests)
		if ce := a.logger.Check(zapcore.InfoLevel, "purged"); ce != nil {
			ce.Write(zap.String("cache", req.Cache), zap.String("key", req.Key), zap.String("prefix", req.Prefix),
				zap.String("tag", req.Tag), zap.Bool("all", req.All), zap.Int("purged", resp.Purged), zap.Int("caches", resp.Caches))
		}
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(resp)
}

// purgeFields are the fields of a purge's body, as PurgeRequest names them.
var purgeFields = []string{"cache", "key", "prefix", "tag", "all"}

// checkPurgeFields refuses a purge body whose object names a field in
// another case than PurgeRequest's ({"KEY": ...}, which encoding/json
// would take) or names one twice (of which it would keep the last).
// Other errors are the decoder's to report.
func checkPurgeFields(body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil
	}
	seen := make(map[string]bool, len(purgeFields))
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil
		}
		name, _ := t.(string)
		if !slices.Contains(purgeFields, name) {
			return fmt.Errorf("unknown field %q; the fields are %s, in lower case", name, strings.Join(purgeFields, ", "))
		}
		if seen[name] {
			return fmt.Errorf("field %q is given twice; a purge names one %s (send one purge each)", name, name)
		}
		seen[name] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return nil
		}
	}
	return nil
}

// check refuses a purge that names exactly one thing, but one that can
// match nothing the cache holds.
func (req *PurgeRequest) check() error {
	for _, k := range []struct{ name, v string }{{"key", req.Key}, {"prefix", req.Prefix}} {
		if k.v == "" {
			continue
		}
		// (A custom key may end with a space: its template's last
		// placeholder empty.)
		if k.v[0] == ' ' || k.v[0] == '\t' {
			return fmt.Errorf("%s %q begins with white space; keys begin with http:// or https://", k.name, k.v)
		}
		// Every key the cache makes begins with the request's scheme and
		// host (a custom one too): a path alone would purge nothing.
		scheme, rest, ok := strings.Cut(k.v, "://")
		if !ok {
			return fmt.Errorf("%s %q has no scheme and host; keys begin with them, as in http://example.com/path (status_key shows a response's key)", k.name, k.v)
		}
		if !strings.EqualFold(scheme, "http") && !strings.EqualFold(scheme, "https") {
			return fmt.Errorf("%s %q: keys begin with http:// or https://, the request's scheme", k.name, k.v)
		}
		// (A prefix may stop anywhere: "https://" is every https key.)
		if k.name == "key" && rest == "" {
			return fmt.Errorf("key %q has no host; keys begin with the scheme and the host, as in http://example.com/path", k.v)
		}
	}
	switch t := req.Tag; {
	case t == "":
	case strings.TrimSpace(t) != t:
		return fmt.Errorf("tag %q begins or ends with white space, which tags are stored without", t)
	case len(t) > maxTagLength:
		return fmt.Errorf("tag is %d bytes long: tags longer than %d bytes are not indexed, so no entry has it; purge such entries by key or prefix", len(t), maxTagLength)
	}
	return nil
}

func (AdminAPI) handleStats(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("response_cache stats: method %s not allowed, use GET", r.Method)}
	}
	stats := []storeStats{}
	for _, s := range snapshotStores() {
		stats = append(stats, s.stats())
	}
	sort.Slice(stats, func(i, j int) bool { return stats[i].Cache < stats[j].Cache })
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(stats)
}

// snapshotStores lists the live stores, so that work on them happens
// outside the usage pool's lock.
func snapshotStores() []*store {
	var out []*store
	liveStores(func(s *store) bool {
		out = append(out, s)
		return true
	})
	return out
}

var (
	_ caddy.AdminRouter = (*AdminAPI)(nil)
	_ caddy.Provisioner = (*AdminAPI)(nil)
)

// purgedKeys are the keys a purge's key k names (normalKeys).
func purgedKeys(k string) []string {
	keys, _ := normalKeys(k)
	return keys
}

// purgePrefixes is what a purge's prefix p purges, spelt as the cache
// spells keys (normalKey). A prefix that ends with a default port
// (http://a.test:80) names one origin, but the cache's keys leave that
// port out: its host must then end there, not run on into another host
// (a.testing) or port (a.test:8080).
func purgePrefixes(p string) []string {
	ns, endsAtPort := normalKeys(p)
	if !endsAtPort {
		return ns
	}
	n := ns[0] // (no path: one spelling)
	return []string{n + "/", n + "?", n + " ", n + "#"}
}

// appendTypedPath appends a path as typed into a purge, escaped as a
// browser sends it: raw UTF-8 and other bytes a path may not hold
// unescaped (/c/café) percent-encoded, what it may hold, such as the
// sub-delims of /wiki/Café_(film), kept, and the percent-escapes' hex in
// upper case, as the cache keys them.
func appendTypedPath(dst []byte, p string) []byte {
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case escapeAt(p, i):
			dst = append(dst, '%', upperHex(p[i+1]), upperHex(p[i+2]))
			i += 2
		case c == '%' || !pathByte(c):
			dst = appendPercent(dst, c)
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

// escapeAt reports whether a percent-escape (% and two hex digits)
// starts at p[i].
func escapeAt(p string, i int) bool {
	return p[i] == '%' && i+2 < len(p) && isHex(p[i+1]) && isHex(p[i+2])
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// normalKeys spells a key (or a prefix of one) given to a purge as the
// cache spells keys (appendOrigin, appendPath), so that one copied from a
// log or typed as a client sent it finds its entry: the scheme and host
// lower-cased, the scheme's default port left out, and the path's
// percent-escapes in upper-case hex. A path typed with a byte a path may
// not hold unescaped (raw UTF-8) has two spellings, as a browser sends it
// (appendTypedPath) and as the cache keys a client that sent it raw
// (appendRawSentPath): both are returned when they differ. The query, and
// a custom key's part after the space, are taken as given, as the cache
// takes them (a space in a path is typed %20). endsAtPort reports a k
// that ends with the default port left out.
//
// A key copied from Cache-Status (status_key) shows the bytes of its query
// or custom part outside printable ASCII percent-encoded, and `"` and `\`
// escaped (appendSFString): each spelling is also tried with those undone
// (unshownKey), which finds the entry of a client that sent them raw.
func normalKeys(k string) (keys []string, endsAtPort bool) {
	typed, endsAtPort := normalKey(k, appendTypedPath)
	keys = []string{typed}
	if sent, _ := normalKey(k, appendRawSentPath); sent != typed {
		keys = append(keys, sent)
	}
	for _, n := range keys {
		for _, escapes := range [...]bool{false, true} {
			if raw, ok := unshownKey(n, escapes); ok && !slices.Contains(keys, raw) {
				keys = append(keys, raw)
			}
		}
	}
	return keys, endsAtPort
}

// unshownKey undoes, in k's query and a custom key's part after the space
// (which the cache keys as sent, raw bytes and all; the path it keys
// escaped), the escapes Cache-Status shows a key with (appendSFString):
// \" and \\, and, with escapes, the percent-escapes of bytes outside
// printable ASCII (which a client may have sent so: a browser escapes
// UTF-8 in a query, not a backslash). ok is false when k has none.
func unshownKey(k string, escapes bool) (raw string, ok bool) {
	_, rest, found := strings.Cut(k, "://")
	i := strings.IndexAny(rest, "? ")
	if !found || i < 0 {
		return k, false
	}
	start := len(k) - len(rest) + i
	b := []byte(k[:start])
	for i := start; i < len(k); i++ {
		c := k[i]
		switch {
		case c == '\\' && i+1 < len(k) && (k[i+1] == '"' || k[i+1] == '\\'):
			b = append(b, k[i+1])
			i++
			ok = true
		case escapes && escapeAt(k, i):
			v := unhex(k[i+1])<<4 | unhex(k[i+2])
			if v >= 0x20 && v <= 0x7e {
				b = append(b, c)
				continue
			}
			b = append(b, v)
			i += 2
			ok = true
		default:
			b = append(b, c)
		}
	}
	return string(b), ok
}

// unhex is the value of the hex digit c (isHex).
func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// appendRawSentPath appends a path as typed into a purge, escaped as the
// cache keys a request that sent it so: a path with a byte it may not
// hold unescaped (raw UTF-8, |, ^) makes Go escape the whole path, its
// sub-delims too (/wiki/Caf%C3%A9_%28film%29).
func appendRawSentPath(dst []byte, p string) []byte {
	if cut := cutEscape(p); cut > 0 {
		// An escape cut short by the end of a prefix (/caf%C): the
		// rest as typed, then the escape's start, upper-cased.
		dst = appendRawSentPath(dst, p[:len(p)-cut])
		for _, b := range []byte(p[len(p)-cut:]) {
			dst = append(dst, upperHex(b))
		}
		return dst
	}
	if validRawPath(p) {
		return appendTypedPath(dst, p) // the same, but for a % that escapes nothing: %25
	}
	unescaped, err := url.PathUnescape(literalPercents(p))
	if err != nil {
		return appendTypedPath(dst, p)
	}
	return appendPath(dst, &url.URL{Path: unescaped})
}

// literalPercents returns p with each % that starts no escape written
// %25, as a lone % is read (appendTypedPath).
func literalPercents(p string) string {
	var b []byte
	for i := 0; i < len(p); i++ {
		if p[i] == '%' && !escapeAt(p, i) {
			if b == nil {
				b = append(make([]byte, 0, len(p)+4), p[:i]...)
			}
			b = append(b, "%25"...)
			continue
		}
		if b != nil {
			b = append(b, p[i])
		}
	}
	if b == nil {
		return p
	}
	return string(b)
}

// cutEscape returns the length of the percent-escape p ends with cut
// short after its first digit ("%C"), or 0. (A lone % at the end is a
// literal one, %25, as in a key: read as the start of an escape, a prefix
// /100% would purge /100%20off.)
func cutEscape(p string) int {
	if n := len(p); n >= 2 && p[n-2] == '%' && isHex(p[n-1]) {
		return 2
	}
	return 0
}

// normalKey spells k as normalKeys does, its path by spellPath.
func normalKey(k string, spellPath func([]byte, string) []byte) (key string, endsAtPort bool) {
	scheme, rest, ok := strings.Cut(k, "://")
	if !ok {
		return k, false
	}
	scheme = strings.ToLower(scheme)
	end := strings.IndexAny(rest, "/? ")
	if end < 0 {
		end = len(rest)
	}
	authority, listener, marked := strings.Cut(strings.ToLower(rest[:end]), "#")
	host, port, hasPort := cutPort(authority)
	b := append([]byte(scheme), "://"...)
	b = append(b, host...)
	if hasPort && !isWebPort(port) {
		b = append(append(b, ':'), port...)
	}
	if marked {
		b = append(append(b, '#'), listener...)
	}
	rest = rest[end:]
	path := strings.IndexAny(rest, "? ")
	if path < 0 {
		path = len(rest)
	}
	b = spellPath(b, rest[:path])
	b = append(b, rest[path:]...)
	return string(b), rest == "" && hasPort && isWebPort(port) && !marked
}
