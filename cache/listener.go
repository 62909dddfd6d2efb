package cache

import (
	"bytes"
	"math/bits"
	"strconv"
	"strings"
	"sync/atomic"
)

// A key's origin is the URL's as Host spells it, a default port included,
// with '#' and the port the connection came in on when Host names another
// (appendOrigin): one URL, spelt with and without its default port, or
// received on several ports (a port mapping and a direct port, the front
// of a tier and a client reaching a node), has several keys. Purges and
// invalidations name the URL, so they reach all of them (a purge naming
// a '#' port, that port's only): the store notes the ports its keys carry
// (listenerPorts), a purge by key tries each spelling on each, and a
// prefix is matched against keys read without a default port and, unless
// it names one, without their '#' port (urlView).

// urlView splits the key k into its origin without a default port spelt
// out (head; 80 and 443 are both default ports here, see isWebPort), its
// listener mark ('#' and a port, or ""), and the rest. A key without an
// origin (no "://") is all head.
func urlView(k string) (head, mark, rest string) {
	s := strings.Index(k, "://")
	if s < 0 {
		return k, "", ""
	}
	s += len("://")
	end := strings.IndexAny(k[s:], "/? ")
	if end < 0 {
		end = len(k) - s
	}
	end += s
	auth := k[:end]
	if h := strings.IndexByte(k[s:end], '#'); h >= 0 {
		auth, mark = k[:s+h], k[s+h:end]
	}
	if host, port, hasPort := cutPort(auth[s:]); hasPort && isWebPort(port) {
		auth = auth[:s+len(host)]
	}
	return auth, mark, k[end:]
}

// hasPrefixParts reports whether the concatenation of parts begins with
// prefix.
func hasPrefixParts(prefix string, parts ...string) bool {
	for _, p := range parts {
		if len(prefix) <= len(p) {
			return strings.HasPrefix(p, prefix)
		}
		if prefix[:len(p)] != p {
			return false
		}
		prefix = prefix[len(p):]
	}
	return prefix == ""
}

// urlPrefix is a purge's prefix (as normalKey spells prefixes: without a
// default port), read once for the keys it is matched against.
type urlPrefix struct {
	s      string
	marked bool // it names a listener port
}

func newURLPrefix(p string) urlPrefix {
	_, mark, _ := urlView(p)
	return urlPrefix{s: p, marked: mark != ""}
}

// matches reports whether the key begins with the prefix, read without a
// default port spelt out and, unless the prefix names one, without its
// listener mark.
func (p urlPrefix) matches(key string) bool {
	if strings.HasPrefix(key, p.s) {
		return true
	}
	head, mark, rest := urlView(key)
	if p.marked {
		return hasPrefixParts(p.s, head, mark, rest)
	}
	return hasPrefixParts(p.s, head, rest)
}

// listenerPorts is a set of ports, safe for concurrent use.
type listenerPorts [65536 / 64]atomic.Uint64

// note adds the port of key's listener mark, if it has one.
func (ps *listenerPorts) note(key string) {
	_, mark, _ := urlView(key)
	if mark == "" {
		return
	}
	p, err := strconv.Atoi(mark[1:])
	if err != nil || p <= 0 || p > 65535 {
		return
	}
	if w := &ps[p/64]; w.Load()&(1<<(p%64)) == 0 {
		w.Or(1 << (p % 64))
	}
}

// noteBytes is note for a key in bytes; it allocates only for a key
// holding a '#' (whose origin has a listener mark, or a custom part
// with one).
func (ps *listenerPorts) noteBytes(key []byte) {
	if bytes.IndexByte(key, '#') >= 0 {
		ps.note(string(key))
	}
}

// keysOf returns the keys of the URL whose key is key: its origin without
// and with each default port (80, 443) spelt out, each without a listener mark and
// with the mark of each port noted; or, when key names a port with its
// mark, with that mark only.
func (ps *listenerPorts) keysOf(key string) []string {
	head, mark, rest := urlView(key)
	s := strings.Index(head, "://")
	if s < 0 {
		return []string{key}
	}
	heads := []string{head}
	if _, _, hasPort := cutPort(head[s+len("://"):]); !hasPort {
		heads = append(heads, head+":80", head+":443")
	}
	marks := []string{mark}
	if mark == "" {
		for w := range ps {
			for set := ps[w].Load(); set != 0; set &= set - 1 {
				marks = append(marks, "#"+strconv.Itoa(w*64+bits.TrailingZeros64(set)))
			}
		}
	}
	keys := make([]string, 0, len(heads)*len(marks))
	for _, h := range heads {
		for _, m := range marks {
			keys = append(keys, h+m+rest)
		}
	}
	return keys
}

// withoutMark is key without its listener mark.
func withoutMark(key string) string {
	head, mark, rest := urlView(key)
	if mark == "" {
		return key
	}
	return head + rest
}
