package cache

import (
	"maps"
	"net/http"
	"net/textproto"
	"slices"
	"strings"
)

// unstorableFields are the fields a cache never stores or forwards from a stored
// response: connection-specific fields (RFC 9110 §7.6.1, including the
// obsolete Keep-Alive and Proxy-Connection) and the proxy authentication
// fields (RFC 9111 §3.1).
var unstorableFields = map[string]bool{
	"Connection":                true,
	"Keep-Alive":                true,
	"Proxy-Connection":          true,
	"Te":                        true,
	"Transfer-Encoding":         true,
	"Upgrade":                   true,
	"Trailer":                   true,
	"Proxy-Authenticate":        true,
	"Proxy-Authentication-Info": true,
	"Proxy-Authorization":       true,
}

// StorableHeader returns a copy of h fit for storage: without
// unstorableFields, the fields named in Connection, and the fields named
// in rc.NoCacheFields and rc.PrivateFields (RFC 9111 §3.1). The copy
// shares value slices with h.
func StorableHeader(h http.Header, rc ResponseControl) http.Header {
	named := connectionFields(h)
	out := make(http.Header, len(h))
	for k, v := range h {
		if !unstorable(k, named, &rc) {
			out[k] = v
		}
	}
	return out
}

// packStorable packs the fields of h fit for storage (see StorableHeader),
// without Age, which a hit renders anew, and with its Cache-Status lines
// as a hit passes them on (statusLine), checked once here rather than on
// every hit (appendStoredStatus).
func packStorable(h http.Header, rc ResponseControl) fields {
	named := connectionFields(h)
	if lines := h["Cache-Status"]; slices.ContainsFunc(lines, func(l string) bool { p, ok := statusLine(l); return !ok || p != l }) {
		var kept []string
		for _, l := range lines {
			if l, ok := statusLine(l); ok {
				kept = append(kept, l)
			}
		}
		h = maps.Clone(h) // (only for an upstream's untidy lines)
		if h["Cache-Status"] = kept; kept == nil {
			delete(h, "Cache-Status")
		}
	}
	return packFields(h, func(name string) bool { return name == "Age" || unstorable(name, named, &rc) })
}

// passNamedFields adds to dst, the header of the response to the request
// that revalidated a stored response, the fields of src, the 304, that
// rc's no-cache="…" or private="…" names: they are not stored, and
// belong to this request, which the origin validated (RFC 9111 §5.2.2.4,
// §5.2.2.7; a review: a Set-Cookie the 304 carried for its client, under
// private="Set-Cookie", was dropped).
func passNamedFields(dst, src http.Header, rc ResponseControl) {
	named := connectionFields(src)
	var passed []string
	for _, names := range [...][]string{rc.NoCacheFields, rc.PrivateFields} {
		for _, name := range names {
			// Not hop-by-hop ones, nor one a list names twice (a
			// targeted field's lists keep repeats).
			if unstorableFields[name] || slices.Contains(named, name) || slices.Contains(passed, name) {
				continue
			}
			passed = append(passed, name)
			for _, v := range src[name] {
				dst.Add(name, v)
			}
		}
	}
}

// connectionFields returns the field names h's Connection header lists.
func connectionFields(h http.Header) []string {
	var named []string
	for _, v := range h["Connection"] {
		for f := range strings.SplitSeq(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				named = append(named, textproto.CanonicalMIMEHeaderKey(f))
			}
		}
	}
	return named
}

// unstorable reports whether StorableHeader drops the field name, given
// the fields Connection named and the response's directives.
func unstorable(name string, named []string, rc *ResponseControl) bool {
	return unstorableFields[name] || slices.Contains(named, name) ||
		slices.Contains(rc.NoCacheFields, name) || slices.Contains(rc.PrivateFields, name)
}

// notModifiedHeader trims h, the stored response's fields copied for a 304
// the cache answers itself, of those describing content, which a 304 has
// none of: a sender SHOULD NOT send representation metadata there beyond
// the fields that guide caches (RFC 9110 §15.4.5), and a cache downstream
// updating its stored response from the 304 (RFC 9111 §4.3.4) would take
// them over. Kept as Go's file server keeps them: Content-Location, Date,
// ETag, Vary, Cache-Control, Expires and the rest, and Last-Modified when
// there is no ETag. Trailer goes too: a 304 has no content, and so no
// trailer section to announce (RFC 9110 §6.5).
func notModifiedHeader(h http.Header) {
	for _, f := range [...]string{"Content-Length", "Content-Type", "Content-Encoding", "Content-Language",
		"Content-Range", "Content-Digest", "Content-Md5", "Trailer"} {
		delete(h, f)
	}
	if len(h["Etag"]) > 0 {
		// Of use to guide a cache update only without an ETag (RFC 9110
		// §15.4.5).
		delete(h, "Last-Modified")
	}
}
