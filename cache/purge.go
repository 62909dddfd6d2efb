package cache

import (
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
)

// This file removes entries by key, prefix, tag or all (the admin API's
// purges, and the invalidations of unsafe requests), and marks what was
// removed, so that a fill in flight when its key was purged is not
// stored after the purge (see store.purgedSince).

// collectLocked removes the entry under h and, when it is a URL with
// variants, the variants, from the index, appending their hashes to out.
func (s *store) collectLocked(h uint64, out []uint64) []uint64 {
	if x, ok := s.byHash[h]; ok {
		s.unindexLocked(h, x)
		out = append(out, h)
	}
	for v := range s.children[h] {
		if x, ok := s.byHash[v]; ok {
			s.unindexLocked(v, x)
		}
		out = append(out, v)
	}
	delete(s.children, h)
	return out
}

// del removes hashes from ristretto and from the queued offers, outside
// the lock.
func (s *store) del(hashes []uint64) {
	s.life.RLock()
	defer s.life.RUnlock()
	if s.closed {
		return
	}
	c := s.rc()
	for _, h := range hashes {
		s.unqueue(h)
		c.Del(h)
	}
}

// purged counts n purged entries and returns n.
func (s *store) purged(n int) int {
	s.purges.Add(uint64(n))
	return n
}

func (s *store) epoch() uint64 { return s.purgeSeq.Load() }

// keyPurge is an entry of store.keyOrder.
type keyPurge struct{ hash, seq uint64 }

// mark records a purge or invalidation of the key hashing to h.
func (s *store) mark(h uint64) {
	s.keysMu.Lock()
	defer s.keysMu.Unlock()
	seq := s.purgeSeq.Add(1)
	if s.keyPurges == nil {
		s.keyPurges = make(map[uint64]uint64)
	}
	s.keyPurges[h] = seq
	if len(s.keyOrder) < purgeKeys {
		s.keyOrder = append(s.keyOrder, keyPurge{h, seq})
	} else {
		// The oldest is folded into allMark: what began before it is
		// kept out whatever its key.
		old := s.keyOrder[s.keyNext]
		if s.keyPurges[old.hash] == old.seq {
			delete(s.keyPurges, old.hash)
		}
		raise(&s.allMark, old.seq)
		s.keyOrder[s.keyNext] = keyPurge{h, seq}
		s.keyNext = (s.keyNext + 1) % purgeKeys
	}
	raise(&s.marks[h%purgeSlots], seq)
}

// keyPurged is the number of the last purge of the key hashing to h that
// is remembered (0: none): marks' slot first, without a lock.
func (s *store) keyPurged(h uint64) uint64 {
	if s.marks[h%purgeSlots].Load() == 0 {
		return 0
	}
	s.keysMu.RLock()
	defer s.keysMu.RUnlock()
	return s.keyPurges[h]
}

// purgedSince reports whether e's key, or its URL's for a variant, was
// purged or invalidated after e's fill began, by key, prefix or tag, or
// everything was.
//
// The mark for everything is read last: a purge of a key, prefix or tag
// that is folded into it (forgotten) meanwhile is then still seen.
func (s *store) purgedSince(e *entry) bool {
	for _, h := range [2]uint64{e.hash, e.parent} {
		if h != 0 && s.marks[h%purgeSlots].Load() > e.epoch && s.keyPurged(h) > e.epoch {
			return true
		}
	}
	return s.recentMatch(e, math.MaxUint64) || s.allMark.Load() > e.epoch
}

// keyMark is the latest purge mark of the key hashing to h, or of all.
func (s *store) keyMark(h uint64) uint64 {
	return max(s.keyPurged(h), s.allMark.Load())
}

// purgedBefore reports whether e's key was purged after e's fill began and
// before a request that read epoch and mark (keyMark) looked it up.
func (s *store) purgedBefore(e *entry, epoch, mark uint64) bool {
	return mark > e.epoch || s.recentMatch(e, epoch)
}

// recentMatch reports whether a recent purge by prefix or tag numbered
// after e's epoch and up to upTo matches e.
func (s *store) recentMatch(e *entry, upTo uint64) bool {
	if s.recentSeq.Load() <= e.epoch {
		return false
	}
	s.recentMu.Lock()
	defer s.recentMu.Unlock()
	for _, p := range s.recent {
		if p.seq > e.epoch && p.seq <= upTo &&
			(p.tag != "" && slices.Contains(e.tags, p.tag) || p.tag == "" && p.prefix.matches(e.urlKey())) {
			return true
		}
	}
	return false
}

// raise sets a to v unless it holds more.
func raise(a *atomic.Uint64, v uint64) {
	for {
		cur := a.Load()
		if cur >= v || a.CompareAndSwap(cur, v) {
			return
		}
	}
}

// recentPurge is a purge by prefix or by tag (tag set).
type recentPurge struct {
	seq    uint64
	prefix urlPrefix
	tag    string
}

// markRecent numbers a purge by prefix or tag ("" and "": everything).
func (s *store) markRecent(prefix, tag string) {
	seq := s.purgeSeq.Add(1)
	if prefix == "" && tag == "" {
		raise(&s.allMark, seq)
		return
	}
	s.recentMu.Lock()
	defer s.recentMu.Unlock()
	if len(s.recent) == recentPurges {
		// The oldest is folded into allMark: what began before it is
		// kept out whatever its key.
		raise(&s.allMark, s.recent[0].seq)
		s.recent = append(s.recent[:0], s.recent[1:]...)
	}
	s.recent = append(s.recent, recentPurge{seq: seq, prefix: newURLPrefix(prefix), tag: tag})
	raise(&s.recentSeq, seq)
}

// invalidateKey removes what is stored under key (an unsafe method's
// invalidation, RFC 9111 §4.4) and marks it where an exchange with the
// origin for it may be under way (fetchBegins), which then stores
// nothing: it may have fetched what the unsafe request changed. One that
// begins after this call sends its request after the unsafe request's
// answer came, and may store what it gets.
func (s *store) invalidateKey(key string) int {
	n := 0
	for _, k := range s.ports.keysOf(withoutMark(key)) { // the URL, on whatever port it came
		h := xxhash.Sum64String(k)
		if s.fetching[h%purgeSlots].Load() > 0 {
			s.mark(h)
		}
		n += s.dropKey(k)
	}
	return n
}

// purgeKey and dropKey go by the key's hash alone, as the index keeps no
// keys: a different key with the same 64-bit hash would be purged too,
// which costs it a miss.
func (s *store) purgeKey(key string) int {
	keys := s.ports.keysOf(key)
	for _, k := range keys {
		s.mark(xxhash.Sum64String(k))
	}
	s.life.RLock()
	if !s.closed {
		s.rc().Wait()
	}
	s.life.RUnlock()
	n := 0
	for _, k := range keys {
		n += s.dropKey(k)
	}
	return n
}

// dropKey deletes the key's hash from ristretto when it finds an entry
// there or when any set is still in ristretto's buffer or being taken off
// it (it may be for this key; the deletion is queued behind it), so that unsafe requests
// to URLs that are not cached cost ristretto nothing. Its variants are
// in the index.
func (s *store) dropKey(key string) int {
	h := xxhash.Sum64String(key)
	s.clearHints(h)
	queued := s.queuedEntry(h)
	s.unqueue(h)
	s.mu.Lock()
	hashes := s.collectLocked(h, nil)
	s.mu.Unlock()
	// What it finds it counts, unless a purge overlapping this one (an
	// admin purge, another invalidation) counted it first.
	n := 0
	for _, v := range hashes {
		if s.holding(v, s.queuedEntry(v)).claimPurge() {
			n++
		}
	}
	// (A variant record is no response: it is dropped, not counted.)
	if len(hashes) == 0 || hashes[0] != h {
		// In this order: an entry offered before this call is pending, or
		// the last taken (not yet in ristretto's map, or soon), or, if
		// another was taken after it, already in the map.
		pending := s.pending.Load() > 0
		taking := s.lastTaken.Load() == h
		_, found := s.present(h)
		if e := s.holding(h, queued); (e == nil || !e.record) && e.claimPurge() {
			n++
		}
		if found || pending || taking {
			hashes = append(hashes, h)
		}
	}
	s.del(hashes)
	return s.purged(n)
}

// purgePrefix walks ristretto's values, as the index keeps no keys, once
// the sets still buffered are applied (an admin operation may wait).
func (s *store) purgePrefix(prefix string) int {
	s.markRecent(prefix, "")
	s.clearAllHints()
	var hashes []uint64
	n := 0
	match := newURLPrefix(prefix)
	s.life.RLock()
	if !s.closed {
		c := s.rc()
		c.Wait()
		c.IterValues(func(e *entry) bool {
			if e != nil && match.matches(e.urlKey()) {
				hashes = append(hashes, e.hash)
				if !e.record && e.claimPurge() {
					n++
				}
			}
			return false
		})
	}
	s.life.RUnlock()
	s.mu.Lock()
	for _, h := range hashes {
		if x, ok := s.byHash[h]; ok {
			s.unindexLocked(h, x)
		}
	}
	s.mu.Unlock()
	s.del(hashes)
	return s.purged(n)
}

func (s *store) purgeTag(tag string) int {
	s.markRecent("", tag)
	s.clearAllHints()
	s.mu.Lock()
	var hashes []uint64
	for h := range s.tags[tag] {
		hashes = append(hashes, h)
	}
	n := 0
	for _, h := range hashes {
		if s.tagged[h].claimPurge() {
			n++
		}
		if x, ok := s.byHash[h]; ok {
			s.unindexLocked(h, x)
		}
	}
	s.mu.Unlock()
	// A URL's variant record stays, even when the purge took every
	// variant the index lists: variants being filled, not yet offered,
	// or past the index's maxVariantsPerURL, need it (two reviews: a
	// version that dropped it left them unreachable). Until the URL's
	// next variant is stored, it counts as an entry and its requests
	// are vary-misses.
	s.del(hashes)
	return s.purged(n)
}

func (s *store) purgeAll() int { return s.purgePrefix("") }

// parseTags returns the surrogate keys of a response: Surrogate-Key is
// space-separated, Cache-Tag comma-separated. At most maxTagsPerEntry
// tags of at most maxTagLength bytes are kept, so that the tag index stays
// bounded by the cache's size.
func parseTags(h HeaderReader) []string {
	var tags []string
	add := func(t string) {
		if t == "" || len(t) > maxTagLength || len(tags) >= maxTagsPerEntry {
			return
		}
		for _, have := range tags {
			if have == t {
				return
			}
		}
		tags = append(tags, t)
	}
	for _, v := range h.Values("Surrogate-Key") {
		for _, t := range strings.Fields(v) {
			add(t)
		}
	}
	for _, v := range h.Values("Cache-Tag") {
		for _, t := range strings.Split(v, ",") {
			add(strings.TrimSpace(t))
		}
	}
	return tags
}

// present is ristretto's GetTTL: whether its map holds h, without counting
// a use of h in the admission policy as Get does.
func (s *store) present(h uint64) (time.Duration, bool) {
	c := s.rc()
	if c == nil {
		return 0, false
	}
	return c.GetTTL(h)
}

// holding is the entry the store holds under h: in ristretto's map (looked
// up only when it is there), or else the offer still queued, or nil.
func (s *store) holding(h uint64, queued *entry) *entry {
	if _, ok := s.present(h); ok {
		if e, ok := s.lookup(h); ok {
			return e
		}
	}
	return queued
}
