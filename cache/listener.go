package cache

import (
	"math/bits"
	"strconv"
	"strings"
	"sync/atomic"
)

// A key's origin carries '#' and the port the connection came in on when
// Host names another (appendOrigin): one URL, received on several ports
// (a port mapping and a direct port, the front of a tier and a client
// reaching a node), has a key for each. Purges and invalidations name the
// URL, so they reach all of them: the store notes the ports its keys
// carry (listenerPorts), and a purge by key tries the URL's key on each.

// listenerMark returns where, in the key k, the '#' and port after its
// host begin and end, or -1, -1 when it has none.
func listenerMark(k string) (i, j int) {
	s := strings.Index(k, "://")
	if s < 0 {
		return -1, -1
	}
	s += len("://")
	end := strings.IndexAny(k[s:], "/? ")
	if end < 0 {
		end = len(k) - s
	}
	end += s
	h := strings.IndexByte(k[s:end], '#')
	if h < 0 {
		return -1, -1
	}
	return s + h, end
}

// listenerPorts is a set of ports, safe for concurrent use.
type listenerPorts [65536 / 64]atomic.Uint64

// note adds the port of key's listener mark, if it has one.
func (ps *listenerPorts) note(key string) {
	i, j := listenerMark(key)
	if i < 0 {
		return
	}
	p, err := strconv.Atoi(key[i+1 : j])
	if err != nil || p <= 0 || p > 65535 {
		return
	}
	if w := &ps[p/64]; w.Load()&(1<<(p%64)) == 0 {
		w.Or(1 << (p % 64))
	}
}

// keysOf returns the keys of the URL whose key is key: without a listener
// mark, and with the mark of each port noted.
func (ps *listenerPorts) keysOf(key string) []string {
	i, j := listenerMark(key)
	if i < 0 {
		i = authorityEnd(key)
		j = i
	}
	if i < 0 {
		return []string{key}
	}
	base, rest := key[:i], key[j:]
	keys := []string{key}
	if j > i {
		keys[0] = base + rest
	}
	for w := range ps {
		for set := ps[w].Load(); set != 0; set &= set - 1 {
			p := w*64 + bits.TrailingZeros64(set)
			keys = append(keys, base+"#"+strconv.Itoa(p)+rest)
		}
	}
	return keys
}

// authorityEnd is where the origin of key ends, or -1 when it has none.
func authorityEnd(k string) int {
	s := strings.Index(k, "://")
	if s < 0 {
		return -1
	}
	s += len("://")
	end := strings.IndexAny(k[s:], "/? ")
	if end < 0 {
		return len(k)
	}
	return s + end
}

// hasURLPrefix reports whether key begins with prefix, or would without
// its listener mark (a prefix without one names the URLs on every port).
func hasURLPrefix(key, prefix string) bool {
	if strings.HasPrefix(key, prefix) {
		return true
	}
	i, j := listenerMark(key)
	return i >= 0 && len(prefix) > i && key[:i] == prefix[:i] && strings.HasPrefix(key[j:], prefix[i:])
}
