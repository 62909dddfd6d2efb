package cache

import (
	"errors"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// This file builds the cache key: the default one (method, origin,
// path and query, as the client sent them) or the configured template,
// and the variant keys under it.

// keyBuf holds the bytes of the keys of one request.
type keyBuf struct{ url, variant []byte }

var keyBufs = sync.Pool{New: func() any { return &keyBuf{url: make([]byte, 0, 256)} }}

// appendKey appends the URL cache key of r. The default template is built
// by hand (what the replacer would produce, with the host lower-cased and
// the path as sent, still percent-encoded) from the URI the client sent:
// a rewrite before the cache (handle_path, try_files) maps different URIs
// to one path, and their responses differ. A custom one goes through the request's replacer,
// after scheme://host:port; ok is false when it names a placeholder the
// request does not know, which would make unrelated requests share a key.
func (h *Handler) appendKey(dst []byte, r *http.Request) (key []byte, ok bool) {
	if !h.customKey {
		return appendURLKey(dst, r, sentURL(r)), true
	}
	key, err := appendCustomKey(dst, r, h.Key)
	if err != nil {
		if err != errNoReplacer {
			h.badKey.Do(func() {
				h.logger.Error("key names a placeholder this request does not know: such requests bypass the cache",
					zap.String("key", h.Key), zap.Error(err))
			})
		}
		return key, false
	}
	return key, true
}

// appendKeyWith appends r's key under template (DefaultKey or a custom
// one), as a handler keyed by it would make it; false when r has no such
// key.
func appendKeyWith(dst []byte, r *http.Request, template string) ([]byte, bool) {
	if template == DefaultKey {
		return appendURLKey(dst, r, sentURL(r)), true
	}
	key, err := appendCustomKey(dst, r, template)
	return key, err == nil
}

// errNoReplacer is appendCustomKey's error for a request Caddy did not
// prepare.
var errNoReplacer = errors.New("no replacer in the request's context")

// appendCustomKey appends r's key under the custom template: its origin,
// a space and the template's expansion.
func appendCustomKey(dst []byte, r *http.Request, template string) ([]byte, error) {
	dst = appendOrigin(dst, r)
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if repl == nil {
		return dst, errNoReplacer
	}
	v, err := repl.ReplaceOrErr(template, false, true)
	if err != nil {
		return dst, err
	}
	// The template follows the origin after a space, which no host holds
	// (appendHost) and no default key has there: no Host and template
	// spell another's key (Host a.testx with {header.X} empty is not Host
	// a.test with X: x), and no custom key is a default one (key {path}
	// under handle_path /static/* is not the default key of the stripped
	// path, in a store the two blocks share).
	dst = append(dst, ' ')
	return append(dst, v...), nil
}

// sentURL is r's URL as the client sent it, before any rewrite.
func sentURL(r *http.Request) *url.URL {
	if orig, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request); ok && orig.URL != nil {
		return orig.URL
	}
	return r.URL
}

// appendURLKey appends the default key of u, on r's origin. The path
// keeps its percent-encoding (appendPath): decoded, /a%2Fb would share
// /a/b's entry and /q%3Fy?z /q?y?z's, though the origin sees other
// targets (RFC 3986 §6.2.2.2 makes only unreserved characters equivalent).
func appendURLKey(dst []byte, r *http.Request, u *url.URL) []byte {
	dst = appendOrigin(dst, r)
	dst = appendPath(dst, u)
	if u.RawQuery == "" && !u.ForceQuery {
		return dst
	}
	// /a? is not /a (RFC 3986 §6.2.3): an origin may answer it apart.
	dst = append(dst, '?')
	return append(dst, u.RawQuery...)
}

// appendPath appends u's path as the request forwarded upstream will
// carry it (net/url's EscapedPath: the path as sent when that is a valid
// encoding of it, else Path escaped) with its hex digits upper-cased, the
// one normalisation (RFC 3986 §6.2.2.1) no origin can tell apart. It does
// not allocate.
func appendPath(dst []byte, u *url.URL) []byte {
	if raw := u.RawPath; raw != "" && validRawPath(raw) {
		return appendUpperEscapes(dst, raw)
	}
	switch u.Path {
	case "*":
		return append(dst, '*')
	case "":
		// An absolute-form target without a path (GET http://a.test):
		// reverse_proxy sends /, and an empty path is / (RFC 9110 §4.2.3).
		return append(dst, '/')
	}
	for i := 0; i < len(u.Path); i++ {
		c := u.Path[i]
		if isUnreserved(c) || strings.IndexByte("$&+,/:;=@", c) >= 0 {
			dst = append(dst, c)
		} else {
			dst = appendPercent(dst, c)
		}
	}
	return dst
}

// appendPercent appends c percent-encoded, in upper-case hex.
func appendPercent(dst []byte, c byte) []byte {
	const hex = "0123456789ABCDEF"
	return append(dst, '%', hex[c>>4], hex[c&15])
}

// validRawPath reports whether raw, a RawPath, holds only what a path may
// hold unencoded, as net/url's EscapedPath requires to use it: a raw byte
// that needs encoding ('|', UTF-8) makes it escape Path instead, where an
// encoded / would become a real one.
func validRawPath(raw string) bool {
	for i := 0; i < len(raw); i++ {
		if c := raw[i]; c != '%' && !pathByte(c) {
			return false
		}
	}
	return true
}

// pathByte reports whether a path may hold c unencoded (net/url's rule
// for a RawPath it uses, '%' aside).
func pathByte(c byte) bool {
	return isUnreserved(c) || strings.IndexByte("!$&'()*+,;=:@[]/", c) >= 0
}

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

// appendUpperEscapes appends s with the hex digits of its
// percent-escapes in upper case.
func appendUpperEscapes(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '%' && i+2 < len(s) {
			dst = append(dst, '%', upperHex(s[i+1]), upperHex(s[i+2]))
			i += 2
			continue
		}
		dst = append(dst, c)
	}
	return dst
}

func upperHex(c byte) byte {
	if 'a' <= c && c <= 'f' {
		return c - 'a' + 'A'
	}
	return c
}

// appendOrigin appends r's origin as the client named it, which
// reverse_proxy forwards in Host: scheme://host:port, the host lower-cased
// and the port as Host spells it, if it does. A default port spelled out
// is kept: the cache cannot tell the client's scheme behind a proxy that
// ends TLS (Host: shop.test:80 to an http node is no default port to an
// https client), and origins build links and redirects from Host as sent.
//
// When the connection came in on another port than Host names (a port
// mapping, a front proxy, or a client naming another port or site), '#'
// and that port follow: a request naming another port (Host: a.test:1)
// must not store its answer for those that name the right one; and
// Caddy's host matchers ignore Host's port, so a request to one site's
// port naming another's (Host: a.test:8080 sent to :8081) would otherwise
// store its site's response under the other site's key, in a store they
// share. A port Host spells otherwise than in canonical digits (a.test:,
// a.test:080) never matches the connection's. Without a port to go by (a
// Unix socket, or a request made in process), Host alone counts. Purges
// name the URL in every spelling of its default port (listener.go).
func appendOrigin(dst []byte, r *http.Request) []byte {
	scheme := schemeOf(r)
	dst = append(dst, scheme...)
	dst = append(dst, "://"...)
	host, port, hasPort := cutPort(r.Host)
	dst = appendHost(dst, host)
	if hasPort {
		dst = appendHost(append(dst, ':'), port)
	}
	p := listenerPort(r)
	if p <= 0 {
		return dst
	}
	switch def := defaultPort(scheme); {
	case !hasPort && p == def:
	case hasPort && isPort(port, p):
	default:
		dst = strconv.AppendInt(append(dst, '#'), int64(p), 10)
	}
	return dst
}

// isPort reports whether s spells port p in canonical digits.
func isPort(s string, p int) bool {
	var buf [20]byte
	return s == string(strconv.AppendInt(buf[:0], int64(p), 10))
}

// cutPort splits a Host value into its host and port, an IPv6 literal
// keeping its brackets; hasPort tells a.test: (an empty port) from a.test.
func cutPort(hostport string) (host, port string, hasPort bool) {
	i := strings.LastIndexByte(hostport, ':')
	if i < 0 || i < strings.LastIndexByte(hostport, ']') {
		return hostport, "", false
	}
	return hostport[:i], hostport[i+1:], true
}

// isWebPort reports whether port, as Host spells it, is 80 or 443. To
// purges and invalidations either is a URL's default port, whatever the
// key's scheme: behind a front proxy that ends TLS, a caching node's
// scheme is http and its clients' https, and a client naming its default
// port (Host: shop.test:443, as Go's http.Client sends for
// https://shop.test:443/) reaches the node with a port that is not the
// node's default. Its response is keyed apart (the origin sees that Host),
// but it is the same URL. Taking 443 as an http URL's default port, or 80
// as an https URL's, only ever purges more.
func isWebPort(port string) bool {
	return port == "80" || port == "443"
}

// defaultPort is scheme's default port.
func defaultPort(scheme string) int {
	if scheme == "https" {
		return 443
	}
	return 80
}

// listenerPort is the port r's connection came in on, or 0 when it has
// none (a Unix socket, a request made in process).
func listenerPort(r *http.Request) int {
	switch a := r.Context().Value(http.LocalAddrContextKey).(type) {
	case *net.TCPAddr:
		return a.Port
	case *net.UDPAddr: // HTTP/3
		return a.Port
	}
	return 0
}

// schemeOf is r's scheme, as {http.request.scheme} says.
func schemeOf(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

// withoutWebPort is host without a port of 80 or 443 (isWebPort).
func withoutWebPort(hostport string) string {
	if host, port, hasPort := cutPort(hostport); hasPort && isWebPort(port) {
		return host
	}
	return hostport
}

// appendHost appends host lower-cased, with any byte a host cannot hold
// unencoded ('/', '?', '#', '%', space, controls, non-ASCII)
// percent-encoded, so that the origin's end in a key is unambiguous
// whatever a server let through as Host.
func appendHost(dst []byte, host string) []byte {
	for i := 0; i < len(host); i++ {
		c := host[i]
		switch {
		case c >= 'A' && c <= 'Z':
			dst = append(dst, c+'a'-'A')
		case c <= ' ' || c >= 0x7f || c == '/' || c == '?' || c == '#' || c == '%':
			dst = appendPercent(dst, c)
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

// hasUpperASCII reports whether s has an upper-case ASCII letter.
func hasUpperASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			return true
		}
	}
	return false
}

// lowerASCII returns s with its ASCII capitals lower-cased.
func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// withLowerHost is a shallow copy of r whose Host is lower-cased, as its
// key has it (appendHost): the origin must answer for the host the key
// names. Host names are case-insensitive (RFC 9110 §4.2.3), but an origin
// routing on Host byte for byte (Go's ServeMux matches a pattern's host
// so) answered Host: APP.EXAMPLE.COM with another route's page, which
// was then stored for app.example.com (a review). Browsers send host
// names lower-cased, so only a crafted request pays the copy.
//
// The request's placeholders ({host}, {hostport}) read the client's
// request, not the copy: they are set to the lowered host too, so that
// the handlers after the cache (reverse_proxy's header_up Host {host})
// send it as well.
func withLowerHost(r *http.Request) *http.Request {
	r2 := r.WithContext(r.Context())
	r2.Host = lowerASCII(r.Host) // as appendHost: other bytes are percent-encoded there, never folded
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		host, _, err := net.SplitHostPort(r2.Host)
		if err != nil {
			host = r2.Host // no port, as Caddy reads it
		}
		repl.Set("http.request.host", host)
		repl.Set("http.request.hostport", r2.Host)
	}
	return r2
}

// appendVariantKey appends the key of the variant of urlKey, in the
// record generation gen, selected by the Vary values vk: a NUL, gen, a
// NUL, urlKey, a NUL and vk. Every URL key starts with its scheme, so no
// URL key (whatever bytes a custom key's placeholders decode) spells a
// variant's; and gen, unique to a record and so to a URL key, tells where
// urlKey ends.
func appendVariantKey(dst, urlKey []byte, gen uint64, vk string) []byte {
	dst = append(dst, 0)
	dst = strconv.AppendUint(dst, gen, 10)
	dst = append(dst, 0)
	dst = append(dst, urlKey...)
	dst = append(dst, 0)
	return append(dst, vk...)
}
