package cache

import (
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
	"Connection":          true,
	"Keep-Alive":          true,
	"Proxy-Connection":    true,
	"Te":                  true,
	"Transfer-Encoding":   true,
	"Upgrade":             true,
	"Trailer":             true,
	"Proxy-Authenticate":  true,
	"Proxy-Authorization": true,
}

// StorableHeader returns a copy of h fit for storage: without hop-by-hop
// fields, fields named in Connection, Proxy-Authenticate,
// Proxy-Authorization, and the fields named in rc.NoCacheFields and
// rc.PrivateFields (RFC 9111 §3.1). Each value slice has len == cap.
//
// The values share one backing array, sliced with full slice expressions,
// so an append by a later handler to a header built from the copy
// reallocates instead of writing into the stored entry.
func StorableHeader(h http.Header, rc ResponseControl) http.Header {
	var named []string // fields the Connection header lists
	for _, v := range h["Connection"] {
		for f := range strings.SplitSeq(v, ",") {
			if f = strings.TrimSpace(f); f != "" {
				named = append(named, textproto.CanonicalMIMEHeaderKey(f))
			}
		}
	}
	drop := func(name string) bool {
		return unstorableFields[name] || slices.Contains(named, name) ||
			slices.Contains(rc.NoCacheFields, name) || slices.Contains(rc.PrivateFields, name)
	}
	return copyHeaderExcept(h, drop)
}

// copyHeaderExcept copies the fields of h that drop rejects, with every value
// slice at len == cap over one shared backing array, and every value a
// substring of one string: a stored header is a few objects for the
// garbage collector to mark (the map, its table, the backing array and the
// string), whatever its number of fields. Names are kept as they are: the
// common ones are net/textproto's static strings, which the collector
// does not mark at all. Fields with no values are kept empty (not nil), as
// http.Header.Clone does.
func copyHeaderExcept(h http.Header, drop func(name string) bool) http.Header {
	var buf [32]string
	names := buf[:0] // in one order: a map's order changes between ranges
	n, size := 0, 0
	for k, vv := range h {
		if drop(k) {
			continue
		}
		names = append(names, k)
		n += len(vv)
		for _, v := range vv {
			size += len(v)
		}
	}
	var sb strings.Builder
	sb.Grow(size)
	for _, k := range names {
		for _, v := range h[k] {
			sb.WriteString(v)
		}
	}
	text := sb.String()
	out := make(http.Header, len(names))
	backing := make([]string, n)
	off := 0
	take := func(s string) string {
		t := text[off : off+len(s)]
		off += len(s)
		return t
	}
	for _, k := range names {
		vv := h[k]
		for i, v := range vv {
			backing[i] = take(v)
		}
		m := len(vv)
		out[k] = backing[:m:m]
		backing = backing[m:]
	}
	return out
}
