package cache

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
	"weak"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func newTestStore(t testing.TB, maxCost int64) *store {
	t.Helper()
	s, err := newStore("t", maxCost)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Destruct() })
	return s
}

// testEntry is a response entry for key with a body of n bytes.
func testEntry(key string, n int, tags ...string) *entry {
	e := &entry{entryData: entryData{
		key:    key,
		hash:   keyHash([]byte(key)),
		status: 200,
		header: packFields(http.Header{"Content-Type": {"text/plain"}}, nil),
		body:   (*arena)(nil).bodyOf(make([]byte, n)),
		tags:   tags,
	}}
	e.computeCost()
	return e
}

func TestStoreGetComparesFullKey(t *testing.T) {
	s := newTestStore(t, 1<<20)
	e := testEntry("http://a/x?", 10)
	s.set(e)
	s.wait()
	if got := s.get(e.hash, []byte(e.key)); got != e {
		t.Fatalf("get by key: %v", got)
	}
	// Same hash, different key: a collision must not serve the entry.
	if got := s.get(e.hash, []byte("http://a/y?")); got != nil {
		t.Error("get with another key under the same hash returned the entry")
	}
	if !s.has(e) {
		t.Error("has(e) = false after wait")
	}
}

// TestStorePendingLimit: an offer is dropped when what waits in
// ristretto's buffer with it passes pendingLimit, unless what waited
// before it is at most pendingSlack (a variant's record). The waiting
// cost is set by hand: ristretto's goroutine takes offers too fast for
// a test to catch it lagging.
func TestStorePendingLimit(t *testing.T) {
	s := newTestStore(t, 8<<20) // pendingLimit 1 MiB
	for _, tc := range []struct {
		name    string
		waiting int64
		size    int64
		stored  bool
	}{
		{"alone", 0, s.pendingLimit, true},
		{"after a record", 300, s.pendingLimit, true},
		{"after the slack", pendingSlack, s.pendingLimit, true},
		{"past the slack", pendingSlack + 1, s.pendingLimit, false},
		{"past the limit", s.pendingLimit, s.pendingLimit, false},
		{"small, within the limit", pendingSlack + 1, 1 << 10, true},
		{"small, past the limit", s.pendingLimit, 1 << 10, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.wait()
			s.pending.Add(tc.waiting)
			stored := s.set(testEntry("http://a/"+tc.name+"?", int(tc.size)))
			s.pending.Add(-tc.waiting)
			if stored != tc.stored {
				t.Errorf("set with %d bytes waiting = %v, want %v", tc.waiting, stored, tc.stored)
			}
		})
	}
	s.wait()
	if p := s.pending.Load(); p != 0 {
		t.Errorf("%d bytes still pending", p)
	}
}

// TestLargeVariantStoredOnFirstFill: a response near max_item_size that
// varies is stored on its URL's first miss, with its record (offered just
// before it) still waiting in ristretto's buffer; before pendingSlack it
// was dropped, and stored only on the next miss.
func TestLargeVariantStoredOnFirstFill(t *testing.T) {
	c := newClock()
	raised := Config{MaxSize: 64 << 20, MaxItemSize: 32 << 20}
	if !bodiesMapped {
		// A body on the Go heap is charged twice: 32 MiB takes a 64 MiB
		// store whole, and is refused.
		raised.MaxSize = 128 << 20
	}
	for _, cfg := range []Config{
		{MaxSize: 64 << 20}, // max_item_size 8 MiB, the pending limit
		raised,              // a raised max_item_size, over max_size/8
	} {
		h := newTestHandler(t, cfg, c)
		o := static(c, 200, strings.Repeat("v", int(h.MaxItemSize)-1024), "Cache-Control", "max-age=60", "Vary", "Accept-Encoding")
		get(t, h, o, "http://example.com/big")
		h.store.wait()
		if w := get(t, h, o, "http://example.com/big"); !hasParam(w.Header().Get("Cache-Status"), "hit") {
			t.Errorf("max_item_size %d: second request %q, %d drops", h.MaxItemSize, w.Header().Get("Cache-Status"), h.store.stats().Drops)
		}
	}
}

func TestStoreRejectsOversizedEntry(t *testing.T) {
	s := newTestStore(t, 4096)
	e := testEntry("http://a/big?", 8192)
	s.set(e)
	s.wait()
	if s.get(e.hash, []byte(e.key)) != nil || s.has(e) {
		t.Error("entry costing more than max_size is stored")
	}
	st := s.stats()
	if st.Entries != 0 || st.Rejects != 1 {
		t.Errorf("stats %+v, want 0 entries and 1 reject", st)
	}
}

func TestStoreIndexFollowsEvictions(t *testing.T) {
	const maxCost = 64 << 10
	s := newTestStore(t, maxCost)
	n := 2000
	if testing.Short() {
		n = 500
	}
	for i := 0; i < n; i++ {
		s.set(testEntry(fmt.Sprintf("http://a/%d?", i), 100, fmt.Sprintf("tag%d", i%7)))
	}
	s.wait()
	stored := 0
	s.rc().IterValues(func(*entry) bool { stored++; return false })
	s.mu.Lock()
	indexed := len(s.byHash)
	for h, x := range s.byHash {
		if got, _ := s.rc().Get(h); got == nil || got.id != x.id || got.parent != x.parent || x.tagged != (len(got.tags) > 0) {
			t.Errorf("indexed %x is not what is stored", h)
			break
		}
	}
	s.rc().IterValues(func(e *entry) bool {
		if x, ok := s.byHash[e.hash]; !ok || x.id != e.id {
			t.Errorf("stored %q is not indexed", e.key)
			return true
		}
		return false
	})
	tagged := 0
	for _, set := range s.tags {
		tagged += len(set)
	}
	s.mu.Unlock()
	if indexed != stored || tagged != stored {
		t.Errorf("index holds %d entries and %d tag links, ristretto %d", indexed, tagged, stored)
	}
	if limit := int64(maxCost / entryOverhead); int64(indexed) > limit {
		t.Errorf("index holds %d entries, more than max_size/entryOverhead = %d", indexed, limit)
	}
	if st := s.stats(); st.Bytes > maxCost {
		t.Errorf("stats bytes %d > max %d", st.Bytes, maxCost)
	}
}

func TestStorePurge(t *testing.T) {
	fill := func(t *testing.T) *store {
		s := newTestStore(t, 1<<20)
		s.set(testEntry("http://a/x?", 10, "red", "blue"))
		s.set(testEntry("http://a/x/y?", 10, "red"))
		s.set(testEntry("http://a/z?", 10, "blue"))
		s.set(testEntry("http://b/x?", 10))
		// A URL with two variants under a record.
		rec := &entry{entryData: entryData{key: "http://a/v?", hash: keyHash([]byte("http://a/v?")), record: true, vary: []string{"Accept"}, gen: 7}}
		rec.computeCost()
		s.set(rec)
		for _, vk := range []string{"1", "2"} {
			v := testEntry(string(appendVariantKey(nil, []byte(rec.key), rec.gen, vk)), 10, "green")
			v.parent = rec.hash
			s.set(v)
		}
		s.wait()
		return s
	}
	// n counts responses purged; dropped, the entries that go, the
	// variant record of http://a/v? included.
	for _, tc := range []struct {
		name       string
		purge      func(s *store) int
		n, dropped int
		remain     []string
	}{
		{name: "key", purge: func(s *store) int { return s.purgeKey("http://a/x?") }, n: 1, dropped: 1, remain: []string{"http://a/x/y?", "http://a/z?", "http://b/x?", "http://a/v?"}},
		{name: "key with variants", purge: func(s *store) int { return s.purgeKey("http://a/v?") }, n: 2, dropped: 3, remain: []string{"http://a/x?", "http://a/x/y?", "http://a/z?", "http://b/x?"}},
		{name: "unknown key", purge: func(s *store) int { return s.purgeKey("http://a/nope?") }, n: 0, remain: []string{"http://a/x?", "http://a/v?"}},
		{name: "prefix", purge: func(s *store) int { return s.purgePrefix("http://a/x") }, n: 2, dropped: 2, remain: []string{"http://a/z?", "http://b/x?", "http://a/v?"}},
		{name: "prefix host", purge: func(s *store) int { return s.purgePrefix("http://a/") }, n: 5, dropped: 6, remain: []string{"http://b/x?"}},
		{name: "tag", purge: func(s *store) int { return s.purgeTag("red") }, n: 2, dropped: 2, remain: []string{"http://a/z?", "http://b/x?"}},
		{name: "tag blue", purge: func(s *store) int { return s.purgeTag("blue") }, n: 2, dropped: 2, remain: []string{"http://a/x/y?"}},
		// The record stays: variants being filled may need it.
		{name: "tag of every variant", purge: func(s *store) int { return s.purgeTag("green") }, n: 2, dropped: 2, remain: []string{"http://a/x?", "http://a/x/y?", "http://a/z?", "http://b/x?", "http://a/v?"}},
		{name: "all", purge: func(s *store) int { return s.purgeAll() }, n: 6, dropped: 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := fill(t)
			if got := tc.purge(s); got != tc.n {
				t.Errorf("purged %d, want %d", got, tc.n)
			}
			s.wait()
			for _, k := range tc.remain {
				if s.get(keyHash([]byte(k)), []byte(k)) == nil {
					t.Errorf("%s was purged", k)
				}
			}
			want := 7 - tc.dropped
			if left := countStored(s); left != want {
				t.Errorf("ristretto holds %d entries, want %d", left, want)
			}
			if st := s.stats(); st.Entries != want {
				t.Errorf("stats count %d entries, want %d", st.Entries, want)
			}
			s.mu.Lock()
			for h, x := range s.byHash {
				if got, _ := s.rc().Get(h); got == nil || got.id != x.id {
					t.Errorf("index holds %x, which is not stored", h)
				}
			}
			s.mu.Unlock()
		})
	}
}

// countStored counts the values ristretto holds.
func countStored(s *store) int {
	n := 0
	s.rc().IterValues(func(*entry) bool { n++; return false })
	return n
}

// TestStoreIndexesOnlyLinkedEntries: plain responses are found by hash in
// ristretto and stay out of the index; variants and tagged entries are
// indexed, and a plain entry that replaces a tagged one unlinks it.
func TestStoreIndexesOnlyLinkedEntries(t *testing.T) {
	s := newTestStore(t, 1<<20)
	s.set(testEntry("http://a/plain?", 10))
	s.set(testEntry("http://a/tagged?", 10, "t"))
	s.wait()
	s.mu.Lock()
	n := len(s.byHash)
	s.mu.Unlock()
	if n != 1 {
		t.Fatalf("index holds %d entries, want only the tagged one", n)
	}
	// The tagged URL now answers untagged: the tag must not purge it.
	s.set(testEntry("http://a/tagged?", 20))
	s.wait()
	if got := s.purgeTag("t"); got != 0 {
		t.Errorf("purgeTag removed %d entries after the tagged one was replaced", got)
	}
	if s.get(keyHash([]byte("http://a/tagged?")), []byte("http://a/tagged?")) == nil {
		t.Error("the untagged replacement is gone")
	}
	if got := s.purgeKey("http://a/plain?"); got != 1 {
		t.Errorf("purgeKey of a plain entry removed %d, want 1", got)
	}
	s.wait()
	if st := s.stats(); st.Entries != 1 || countStored(s) != 1 {
		t.Errorf("stats count %d entries, ristretto holds %d; want 1", st.Entries, countStored(s))
	}
}

// TestStoreCountsWhatItHolds churns a small store with sets that are
// admitted, rejected, evicted, replaced, dropped and purged, and checks
// that the entry count (kept from ristretto's callbacks, not from an
// index) matches what ristretto holds.
func TestStoreCountsWhatItHolds(t *testing.T) {
	s := newTestStore(t, 256<<10)
	s.set(testEntry("http://a/huge?", 300<<10)) // rejected: it costs more than max_size
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 3000 {
				key := fmt.Sprintf("http://a/%d?", (i*7+g)%900)
				var tags []string
				if i%5 == 0 {
					tags = []string{fmt.Sprintf("t%d", i%3)}
				}
				s.set(testEntry(key, 64+(i%13)*100, tags...))
				switch i % 97 {
				case 0:
					s.dropKey(key)
				case 1:
					s.purgeTag("t1")
				}
				if i%16 == 0 {
					s.wait() // let the buffer drain, so that most sets reach the policy
				}
			}
		}()
	}
	wg.Wait()
	s.wait()
	st := s.stats()
	if held := countStored(s); st.Entries != held {
		t.Errorf("stats count %d entries, ristretto holds %d", st.Entries, held)
	}
	if p := s.pending.Load(); p != 0 {
		t.Errorf("%d bytes still pending with ristretto's buffer empty", p)
	}
	if st.Evictions == 0 || st.Rejects == 0 || st.Drops == 0 || st.Purges == 0 {
		t.Errorf("the churn did not evict, reject, drop and purge (%+v); the test exercises less than it says", st)
	}
	s.purgeAll()
	s.wait()
	if st := s.stats(); st.Entries != 0 || countStored(s) != 0 {
		t.Errorf("after purgeAll: stats count %d entries, ristretto holds %d", st.Entries, countStored(s))
	}
}

func TestParseTags(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    http.Header
		want string
	}{
		{name: "surrogate-key", h: http.Header{"Surrogate-Key": {"a  b", "c"}}, want: "a,b,c"},
		{name: "cache-tag", h: http.Header{"Cache-Tag": {"a, b,,c"}}, want: "a,b,c"},
		{name: "both dedup", h: http.Header{"Surrogate-Key": {"a b"}, "Cache-Tag": {"b,c"}}, want: "a,b,c"},
		{name: "too long", h: http.Header{"Surrogate-Key": {strings.Repeat("x", maxTagLength+1) + " ok"}}, want: "ok"},
		{name: "none", h: http.Header{}, want: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := strings.Join(parseTags(tc.h), ","); got != tc.want {
				t.Errorf("tags %q, want %q", got, tc.want)
			}
		})
	}
	var b strings.Builder
	for i := 0; i < 3*maxTagsPerEntry; i++ {
		fmt.Fprintf(&b, "t%d ", i)
	}
	if n := len(parseTags(http.Header{"Surrogate-Key": {b.String()}})); n != maxTagsPerEntry {
		t.Errorf("kept %d tags, want the bound %d", n, maxTagsPerEntry)
	}
}

func TestAllocSize(t *testing.T) {
	for _, tc := range []struct{ n, want int64 }{
		{0, 0}, {1, 8}, {8, 8}, {9, 16}, {1000, 1024}, {1025, 1152}, {32768, 32768}, {32769, 40960}, {96 << 10, 96 << 10}, {100 << 10, 104 << 10},
	} {
		if got := allocSize(tc.n); got != tc.want {
			t.Errorf("allocSize(%d) = %d, want %d", tc.n, got, tc.want)
		}
	}
}

// TestEntryOverheadMatchesHeap measures the heap an entry really takes
// beyond the bytes its cost counts directly, to justify entryOverhead: it
// stores n small entries (ten header fields, 64-byte bodies) and compares
// the live heap growth (plus the arena blocks of the bodies) with the sum
// of their costs.
func TestEntryOverheadMatchesHeap(t *testing.T) {
	t.Run("entries", func(t *testing.T) { testEntryOverhead(t, 0, 0) })
	// A full store that evicts holds its maps at about twice the slots
	// of what it holds (a review: 1.11-1.40 times the cost before).
	t.Run("evicting", func(t *testing.T) { testEvictingOverhead(t, 0) })
	t.Run("evicting variants", func(t *testing.T) { testEvictingOverhead(t, 3) })
	t.Run("evicting, 500 variants a URL", func(t *testing.T) { testEvictingOverhead(t, 500) })
	// Variants also take a slot in the store's index (linkedOverhead).
	t.Run("variants", func(t *testing.T) { testEntryOverhead(t, 500, 0) })
	// Tagged entries take a slot in the tag index for each tag; tags of
	// their own (Surrogate-Key lists with per-item ids) a map each there.
	t.Run("tagged", func(t *testing.T) { testEntryOverhead(t, 0, 1) })
	t.Run("eight tags each", func(t *testing.T) { testEntryOverhead(t, 0, 8) })
}

// testEntryOverhead is TestEntryOverheadMatchesHeap with, when perURL is
// positive, the entries variants of URLs perURL at a time, and with tags
// distinct tags (Surrogate-Key) on each entry.
func testEntryOverhead(t *testing.T, perURL, tags int) {
	n := 20000
	if testing.Short() {
		n = 5000
	}
	s := newTestStore(t, 1<<30)
	before := liveHeap()
	var cost int64
	for i := 0; i < n; i++ {
		key := fmt.Sprintf("http://example.com/some/path/%d?q=%d", i, i)
		fh := overheadTestHeader(i)
		if tags > 0 {
			var sk strings.Builder
			for j := range tags {
				fmt.Fprintf(&sk, "product-%d-%d ", i, j)
			}
			fh.Set("Surrogate-Key", sk.String())
		}
		e := &entry{entryData: entryData{key: key, hash: keyHash([]byte(key)), status: 200, header: packStorable(fh, ResponseControl{}), body: s.bodies.bodyOf(make([]byte, 64))}}
		if perURL > 0 {
			e.parent = keyHash(fmt.Appendf(nil, "http://example.com/url/%d", i/perURL))
		}
		e.readHeader()
		if len(e.tags) != tags {
			t.Fatalf("%d tags read, want %d", len(e.tags), tags)
		}
		e.computeCost()
		cost += e.heapBytes() + e.body.cost()
		s.set(e)
	}
	s.wait()
	after := liveHeap()
	// Bodies live in the arena, outside the heap.
	perEntryHeap := float64(int64(after-before)+s.bodies.stats().Used) / float64(n)
	perEntryCost := float64(cost) / float64(n)
	t.Logf("heap per entry %.0f B, cost per entry %.0f B (entryOverhead %d, linkedOverhead %d, tagOverhead %d)", perEntryHeap, perEntryCost, entryOverhead, linkedOverhead, tagOverhead)
	if perEntryHeap > 1.15*perEntryCost {
		t.Errorf("an entry takes %.0f B of heap but costs %.0f B: entryOverhead too small", perEntryHeap, perEntryCost)
	}
	runtime.KeepAlive(s)
}

// overheadTestHeader is the header of the i-th entry of the overhead
// tests: ten fields and the Content-Length of a 64-byte body.
func overheadTestHeader(i int) http.Header {
	h := make(http.Header)
	for j := range 10 {
		h[fmt.Sprintf("X-Field-%d", j)] = []string{fmt.Sprintf("value-%d-%d", i, j)}
	}
	h.Set("Content-Length", "64")
	return h
}

// liveHeap is the heap in use after two collections.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// testEvictingOverhead fills a small store ten times over with entries
// like testEntryOverhead's (variants of URLs perURL at a time when
// positive) and compares the live heap per entry it then holds with the
// cost of one.
func testEvictingOverhead(t *testing.T, perURL int) {
	const maxCost = 8 << 20
	s := newTestStore(t, maxCost)
	before := liveHeap()
	var perEntryCost float64
	n := 0
	for offered := int64(0); offered < 10*maxCost; n++ {
		key := fmt.Sprintf("http://example.com/some/path/%d?q=%d", n, n)
		fh := overheadTestHeader(n)
		e := &entry{entryData: entryData{key: key, hash: keyHash([]byte(key)), status: 200, header: packStorable(fh, ResponseControl{}), body: s.bodies.bodyOf(make([]byte, 64))}}
		if perURL > 0 {
			e.parent = keyHash(fmt.Appendf(nil, "http://example.com/url/%d", n/perURL))
		}
		e.readHeader()
		e.computeCost()
		perEntryCost = float64(e.heapBytes() + e.body.cost())
		offered += e.cost
		s.set(e)
		if n%1000 == 999 {
			s.wait()
		}
	}
	s.wait()
	after := liveHeap()
	held := s.stats().Entries
	perEntryHeap := float64(int64(after-before)+s.bodies.stats().Used) / float64(held)
	t.Logf("%d offered, %d held: heap per entry %.0f B, cost per entry %.0f B (%.2f)", n, held, perEntryHeap, perEntryCost, perEntryHeap/perEntryCost)
	if perEntryHeap > 1.10*perEntryCost {
		t.Errorf("an entry takes %.0f B of heap but costs %.0f B: entryOverhead too small", perEntryHeap, perEntryCost)
	}
	runtime.KeepAlive(s)
}

// TestStorePurgeSeesPendingSets purges right after storing, while the sets
// may still wait in ristretto's buffer: a purge must remove them too.
func TestStorePurgeSeesPendingSets(t *testing.T) {
	for range 20 {
		s := newTestStore(t, 1<<20)
		for i := range 50 {
			s.set(testEntry(fmt.Sprintf("http://a/%d?", i), 10))
		}
		s.set(testEntry("http://b/x?", 10))
		if n := s.purgePrefix("http://a/"); n != 50 {
			t.Fatalf("purgePrefix removed %d entries, want 50", n)
		}
		if n := s.purgeKey("http://b/x?"); n != 1 {
			t.Fatalf("purgeKey removed %d entries, want 1", n)
		}
		if n := s.purgeKey("http://b/none?"); n != 0 {
			t.Fatalf("purgeKey of an absent key removed %d entries", n)
		}
		// dropKey does not wait, and still removes a set just offered.
		s.set(testEntry("http://c/x?", 10))
		s.dropKey("http://c/x?")
		s.wait()
		if st := s.stats(); st.Entries != 0 {
			t.Fatalf("%d entries left after purging everything", st.Entries)
		}
		s.rc().IterValues(func(e *entry) bool {
			t.Errorf("%s is still stored", e.key)
			return false
		})
	}
}

// TestEntrySize keeps entries and bodies among the objects Go's collector
// marks span by span (at most 512 bytes, without a malloc header).
func TestEntrySize(t *testing.T) {
	if n := unsafe.Sizeof(entry{}); n > 512 {
		t.Errorf("an entry takes %d bytes; keep it within 512", n)
	}
	if n := unsafe.Sizeof(body{}); n > 512 {
		t.Errorf("a body takes %d bytes; keep it within 512", n)
	}
	// Every miss allocates one: within the 1024-byte size class, a byte
	// more is 128 more per miss (the next class is 1152).
	if n := unsafe.Sizeof(exchange{}); n > 1024 {
		t.Errorf("an exchange takes %d bytes; keep it within 1024", n)
	}
}

func TestStorePoolSurvivesReload(t *testing.T) {
	c := newClock()
	cfg := Config{CacheName: "reload-test", MaxSize: 1 << 20}
	h1 := newTestHandler(t, cfg, c)
	o := static(c, 200, "kept", "Cache-Control", "max-age=60")
	get(t, h1, o, "http://example.com/reload")

	// The new config's handler is provisioned before the old one is
	// cleaned up, as Caddy does on a reload.
	h2 := newTestHandler(t, cfg, c)
	if err := h1.Cleanup(); err != nil {
		t.Fatal(err)
	}
	w := get(t, h2, o, "http://example.com/reload")
	wantStatus(t, w, []string{"hit"})

	// Another max_item_size keeps it (it bounds what a handler buffers).
	cfg2 := cfg
	cfg2.MaxItemSize = cfg.MaxSize / 2
	h4 := newTestHandler(t, cfg2, c)
	wantStatus(t, get(t, h4, o, "http://example.com/reload"), []string{"hit"})
	if err := h4.Cleanup(); err != nil {
		t.Fatal(err)
	}

	// A different size makes a different store.
	cfg3 := cfg
	cfg3.MaxSize = 2 << 20
	h3 := newTestHandler(t, cfg3, c)
	wantStatus(t, get(t, h3, o, "http://example.com/reload"), []string{"fwd=uri-miss"})

	// The last user closes the store, and says so: the next config's
	// misses go to the origin. The others, which left it to another
	// handler, said nothing.
	core, logs := observer.New(zapcore.InfoLevel)
	h1.logger, h2.logger, h3.logger, h4.logger = zap.New(core), zap.New(core), zap.New(core), zap.New(core)
	empty := newTestHandler(t, Config{CacheName: "reload-test", MaxSize: 4 << 20}, c)
	empty.logger = zap.New(core)
	if err := empty.Cleanup(); err != nil { // as after a failed load
		t.Fatal(err)
	}
	s := h2.store.(*store)
	s.wait()
	if err := h2.Cleanup(); err != nil {
		t.Fatal(err)
	}
	dropped := logs.FilterMessageSnippet("dropped a store").All()
	if len(dropped) != 1 || dropped[0].ContextMap()["entries"] != int64(1) || dropped[0].ContextMap()["max_size"] != int64(1<<20) {
		t.Errorf("logged %v; want the one store with entries dropped", logs.All())
	}
	if _, ok := stores.References(storePoolKey(&h2.Config)); ok {
		t.Error("store still in the pool after its last user left")
	}
	if s.get(keyHash([]byte("http://example.com/reload?")), []byte("http://example.com/reload?")) != nil {
		t.Error("closed store still answers")
	}
}

// TestCacheNameOneStorePerConfig: within one config (one provisioning
// context), handlers with one cache_name must agree on the sizes that
// shape its store; across configs (a reload) they need not.
func TestCacheNameOneStorePerConfig(t *testing.T) {
	config, unload := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer unload()
	provision := func(ctx caddy.Context, maxSize int64) (*Handler, error) {
		h := &Handler{Config: Config{CacheName: "shared-name", MaxSize: maxSize}}
		err := h.Provision(ctx)
		if err != nil {
			_ = h.Cleanup() // as Caddy does after a failed Provision
		} else {
			t.Cleanup(func() { _ = h.Cleanup() })
		}
		return h, err
	}
	a, err := provision(config, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	b, err := provision(config, 1<<20)
	if err != nil {
		t.Fatalf("same name and sizes in one config: %v", err)
	}
	if a.store != b.store {
		t.Error("same name and sizes in one config: two stores")
	}
	_, err = provision(config, 2<<20)
	if err == nil || !strings.Contains(err.Error(), `cache_name "shared-name" is also used with max_size 1MiB`) {
		t.Fatalf("another max_size under the same name in one config: got %v", err)
	}

	// The next config (a reload) may resize the store.
	next, unloadNext := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer unloadNext()
	if _, err := provision(next, 2<<20); err != nil {
		t.Fatalf("a reload that resizes the store: %v", err)
	}
	// Once the first config's handlers are gone, its name is free.
	_ = a.Cleanup()
	_ = b.Cleanup() // and again by t.Cleanup: Cleanup is idempotent
	if _, err := provision(config, 4<<20); err != nil {
		t.Fatalf("after the config's handlers were cleaned up: %v", err)
	}

	// Contexts that are no config's (a zero one, a background one, as
	// embedders and other modules' tests pass) claim nothing.
	for _, ctx := range []caddy.Context{{}, {Context: context.Background()}} {
		for _, size := range []int64{8 << 20, 16 << 20} {
			if _, err := provision(ctx, size); err != nil {
				t.Fatalf("provisioning with %#v: %v", ctx.Context, err)
			}
		}
	}
}

var _ caddy.Destructor = (*store)(nil)

// TestStoreWaitWhileClosing: wait (tests, admin purges) racing Destruct
// neither panics nor hangs (ristretto's Wait racing its Close can send on
// its closed buffer).
func TestStoreWaitWhileClosing(t *testing.T) {
	for range 50 {
		s, err := newStore("wait-test", 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for range 20 {
					s.wait()
				}
			})
		}
		_ = s.Destruct()
		wg.Wait()
	}
}

// TestStoreLetsGoOfRistrettoWhenClosed: a closed store that something
// still holds (a config Caddy keeps reachable for a while after a reload)
// no longer holds ristretto, whose sketches are about 1% of max_size, nor
// its miss counts (0.4%).
// Lookups, sets, purges and stats on it are misses and no-ops.
func TestStoreLetsGoOfRistrettoWhenClosed(t *testing.T) {
	s, err := newStore("closed-test", 64<<20)
	if err != nil {
		t.Fatal(err)
	}
	key := []byte("http://example.com/x?")
	e := testEntry(string(key), 4)
	if !s.set(e) {
		t.Fatal("set refused")
	}
	s.wait()
	r := weak.Make(s.rc())
	counts := weak.Make(s.useCounts())
	if err := s.Destruct(); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		runtime.GC()
		if r.Value() == nil && counts.Value() == nil {
			break
		}
	}
	if r.Value() != nil {
		t.Error("the closed store still holds ristretto")
	}
	if counts.Value() != nil || s.useCounts() != nil {
		t.Error("the closed store still holds (or makes) its miss counts")
	}
	if s.get(keyHash(key), key) != nil || s.set(testEntry(string(key), 5)) || s.purgeKey(string(key)) != 0 || s.purgeAll() != 0 {
		t.Error("a closed store answered, stored or purged")
	}
	if st := s.stats(); st.Bytes != 0 || st.Entries != 0 {
		t.Errorf("closed store stats %+v", st)
	}
	s.wait()
	runtime.KeepAlive(s)
}

// TestStoreDestructWhileStoring closes a store while other goroutines
// still store into it and purge it, as a request of an unloaded config
// or a background revalidation may: nothing panics (ristretto would, on
// a Set or Del racing its Close), every body is released, and the arena
// is unmapped once the last one is.
func TestStoreDestructWhileStoring(t *testing.T) {
	s, err := newStore("closing", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("http://a/%d/%d?", g, i%100)
				e := &entry{entryData: entryData{key: key, hash: keyHash([]byte(key)), status: 200, body: s.bodies.bodyOf(make([]byte, 1000))}}
				e.computeCost()
				s.set(e)
				if i%10 == 0 {
					s.purgeKey(key)
				}
			}
		}()
	}
	time.Sleep(20 * time.Millisecond)
	if err := s.Destruct(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond) // stores after the close
	close(stop)
	wg.Wait()
	if st := s.bodies.stats(); st.Used != 0 || st.Mapped != 0 || st.FallbackBytes != 0 {
		t.Errorf("after closing: %+v; want every body released and the arena unmapped", st)
	}
}

// TestStoreLookupsWhileClosing: lookups racing the store's close (the last
// handler of a store cleaned up while hits or background refreshes are in
// flight) are misses, never ristretto's "send on closed channel" panic.
func TestStoreLookupsWhileClosing(t *testing.T) {
	rounds := 300
	if testing.Short() {
		rounds = 50
	}
	probe := &entry{entryData: entryData{hash: keyHash([]byte("k"))}}
	for round := range rounds {
		s, err := newStore(fmt.Sprintf("closing-%d", round), 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		var stop atomic.Bool
		var wg sync.WaitGroup
		for range 3 {
			wg.Go(func() {
				for !stop.Load() {
					s.get(keyHash([]byte("k")), []byte("k"))
					s.has(probe)
				}
			})
		}
		_ = s.Destruct()
		stop.Store(true)
		wg.Wait()
	}
}

// TestStorePurgeTagDuringSet: a tag purged between a tagged entry's
// indexing and its offer to ristretto (whose Del is then queued before the
// Set) leaves nothing stored: later purges of the tag could not find it.
func TestStorePurgeTagDuringSet(t *testing.T) {
	s := newTestStore(t, 1<<20)
	testHookIndexed = func(e *entry) { s.purgeTag("t") }
	defer func() { testHookIndexed = nil }()
	s.set(testEntry("http://a/tagged?", 10, "t"))
	testHookIndexed = nil
	s.wait()
	if e := s.get(keyHash([]byte("http://a/tagged?")), []byte("http://a/tagged?")); e != nil {
		t.Fatalf("entry purged while being set is stored, outside the tag index (indexed: %v)", s.indexed(e.hash))
	}
	// Without a purge in between, the entry is stored and purgeable.
	s.set(testEntry("http://a/kept?", 10, "t"))
	s.wait()
	if n := s.purgeTag("t"); n != 1 {
		t.Errorf("purgeTag removed %d, want 1", n)
	}
}

// TestStorePurgeDuringSetLeavesNoIndex: a purge of everything (or of a
// prefix, or an unsafe method's invalidation of the URL) that comes
// between a tagged entry's indexing and its offer to ristretto leaves it
// not stored, and out of the index too: it stayed in the index, with its
// tags, for ever (nothing but a later entry under its hash or a purge of
// its very key or tag took it out), a slow leak under concurrent purges or
// POSTs to new URLs.
func TestStorePurgeDuringSetLeavesNoIndex(t *testing.T) {
	s := newTestStore(t, 1<<20)
	testHookIndexed = func(*entry) { s.purgeAll() }
	defer func() { testHookIndexed = nil }()
	for i := range 20 {
		e := testEntry(fmt.Sprintf("http://a/tagged/%d?", i), 10, fmt.Sprintf("tag-%d", i))
		e.epoch = s.epoch()
		s.set(e)
	}
	testHookIndexed = nil
	s.wait()
	stored := 0
	s.rc().IterValues(func(*entry) bool { stored++; return false })
	s.mu.Lock()
	byHash, tagged, tags := len(s.byHash), len(s.tagged), len(s.tags)
	s.mu.Unlock()
	if stored != 0 || byHash != 0 || tagged != 0 || tags != 0 {
		t.Errorf("after purges during their sets: %d stored; index of %d entries, %d tagged, %d tags; want none", stored, byHash, tagged, tags)
	}
}

// holdTake makes ristretto's goroutine stop as it takes off its buffer
// the first offer hold matches (of any store made after the call), until
// release is called. The test calls release before its stores are
// destructed: ristretto's Close waits for that goroutine.
func holdTake(t *testing.T, hold func(*entry) bool) (release func()) {
	ch := make(chan struct{})
	var held, closed sync.Once
	testHookTaken = func(e *entry) {
		if hold(e) {
			held.Do(func() { <-ch })
		}
	}
	// Registered before the test's stores, so run after they are closed.
	t.Cleanup(func() { testHookTaken = nil })
	return func() { closed.Do(func() { close(ch) }) }
}

// anyOffer matches every offer, for holdTake.
func anyOffer(*entry) bool { return true }

// TestStoreFindsOffersStillQueued: ristretto puts a new key in its map
// only once its goroutine has taken the set off its buffer and admitted
// it; until then get finds the offer among the queued ones, and a drop or
// a purge removes it from there too.
func TestStoreFindsOffersStillQueued(t *testing.T) {
	release := holdTake(t, anyOffer)
	s := newTestStore(t, 1<<20)
	a, b, c := testEntry("http://a/x?", 10), testEntry("http://a/y?", 10), testEntry("http://a/z?", 10, "tag")
	slots := map[uint64]bool{}
	for _, e := range []*entry{a, b, c} {
		slots[e.hash%queuedSlots] = true
	}
	if len(slots) != 3 {
		t.Fatal("test keys share a queued slot; pick others")
	}
	func() {
		defer release()
		for _, e := range []*entry{a, b, c} {
			if !s.set(e) {
				t.Fatalf("set %s dropped", e.key)
			}
		}
		for _, e := range []*entry{a, b, c} {
			if got := s.get(e.hash, []byte(e.key)); got != e {
				t.Errorf("get %s before ristretto took it: %v", e.key, got)
			}
		}
		if got := s.get(a.hash, []byte("http://a/other?")); got != nil {
			t.Error("a queued offer was found under another key with its hash")
		}
		if s.has(a) {
			t.Error("has reports an offer ristretto has not taken as stored")
		}
		s.dropKey(b.key)
		s.purgeTag("tag")
		if s.get(b.hash, []byte(b.key)) != nil || s.get(c.hash, []byte(c.key)) != nil {
			t.Error("a dropped or purged offer is still found")
		}
	}()
	s.wait()
	if got := s.get(a.hash, []byte(a.key)); got != a {
		t.Errorf("get %s once taken: %v", a.key, got)
	}
	if s.get(b.hash, []byte(b.key)) != nil || s.get(c.hash, []byte(c.key)) != nil {
		t.Error("a dropped or purged offer was stored")
	}
	s.purgeKey(a.key)
	if s.get(a.hash, []byte(a.key)) != nil {
		t.Error("a purged entry is still found")
	}
	for i := range s.queued {
		if e := s.queued[i].Load(); e != nil {
			t.Errorf("slot %d still holds %s, which left the store", i, e.key)
		}
	}
}

// TestStoreQueuedOfferPurgedByTagDuringSet: a tag purged while a tagged
// entry is being set (between indexing and the offer): set sees the
// entry is no longer indexed and deletes it, from ristretto and from its
// queued slot, so that get does not serve it after purgeTag said it was
// purged.
func TestStoreQueuedOfferPurgedByTagDuringSet(t *testing.T) {
	e := testEntry("http://a/tagged?", 10, "t")
	release := holdTake(t, func(x *entry) bool { return x == e })
	s := newTestStore(t, 1<<20)
	defer release()
	purged := -1
	testHookIndexed = func(*entry) { purged = s.purgeTag("t") }
	s.set(e)
	testHookIndexed = nil
	got := s.get(e.hash, []byte(e.key))
	release()
	s.wait()
	if purged != 1 {
		t.Fatalf("purgeTag during set removed %d, want 1", purged)
	}
	if got != nil {
		t.Error("entry purged by tag (purgeTag returned 1) is served from its queued slot after set returned")
	}
	if s.get(e.hash, []byte(e.key)) != nil {
		t.Error("stored after all")
	}
}

// TestStoreQueuedVariantPurgedDuringSet: the same for a variant whose URL
// is dropped while the variant is being set.
func TestStoreQueuedVariantPurgedDuringSet(t *testing.T) {
	url := "http://a/v?"
	parent := keyHash([]byte(url))
	v := testEntry("\x00"+url+"\x001\x00\x00gzip", 10)
	v.parent = parent
	release := holdTake(t, func(x *entry) bool { return x == v })
	s := newTestStore(t, 1<<20)
	defer release()
	testHookIndexed = func(*entry) { s.dropKey(url) }
	s.set(v)
	testHookIndexed = nil
	got := s.get(v.hash, []byte(v.key))
	release()
	s.wait()
	if got != nil {
		t.Error("variant whose URL was dropped during its set is served from its queued slot")
	}
}

// TestStoreAccountingMatchesRistretto: after concurrent sets, updates,
// drops and purges, once ristretto is idle, held and heldCost (which
// nearlyFull reads) are the count and cost of what it holds taken,
// pending the cost of what it holds untaken, and every queued slot holds
// an entry ristretto holds.
func TestStoreAccountingMatchesRistretto(t *testing.T) {
	s := newTestStore(t, 256<<10)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 20000 {
				k := (i*7 + g*13) % 300
				key := "http://a/" + string(rune('a'+k%26)) + "/" + string(rune('a'+k/26)) + "?"
				switch i % 23 {
				case 5:
					s.dropKey(key)
				case 11:
					s.purgeTag("t")
				case 17:
					if i%(23*40) == 17 {
						s.purgeAll()
					}
				default:
					var tags []string
					if k%5 == 0 {
						tags = []string{"t"}
					}
					s.set(testEntry(key, 100+(i%7)*400, tags...))
				}
			}
		})
	}
	wg.Wait()
	s.wait()
	var n, heldCost, pendingCost int64
	s.rc().IterValues(func(e *entry) bool {
		switch e.counted.Load() {
		case countHeld:
			n++
			heldCost += e.cost
		case countNew:
			pendingCost += e.cost
		default:
			t.Errorf("gone entry in ristretto: %s", e.key)
		}
		return false
	})
	if s.held.Load() != n || s.heldCost.Load() != heldCost || s.pending.Load() != pendingCost {
		t.Errorf("held %d/%d heldCost %d/%d pending %d/%d (counters/actual)", s.held.Load(), n, s.heldCost.Load(), heldCost, s.pending.Load(), pendingCost)
	}
	used := s.maxCost - s.rc().RemainingCost()
	t.Logf("ristretto used %d, heldCost %d, pending %d, nearlyFull %v", used, s.heldCost.Load(), s.pending.Load(), s.nearlyFull())
	for i := range s.queued {
		if e := s.queued[i].Load(); e != nil {
			if got, ok := s.lookup(e.hash); !ok || got != e {
				t.Errorf("slot %d holds %s, which ristretto does not hold", i, e.key)
			}
		}
	}
}

// TestStoreLaterOfferWins: two offers for one key while ristretto has not
// taken the first. Left to itself, ristretto admits the first and refuses
// the second (a set of a key it has by then); get served the second from
// its queued slot, then the first. The first is refused instead.
func TestStoreLaterOfferWins(t *testing.T) {
	key := "http://a/x?"
	a1, a2 := testEntry(key, 10), testEntry(key, 20)
	release := holdTake(t, func(x *entry) bool { return x == a1 })
	s := newTestStore(t, 1<<20)
	defer release()
	s.set(a1)
	s.set(a2)
	before := s.get(a2.hash, []byte(key))
	release()
	s.wait()
	after := s.get(a2.hash, []byte(key))
	if before != a2 || after != a2 {
		t.Errorf("served the newer offer from its slot, then the older one once ristretto took both")
	}
}

// collidingKey returns a key whose hash takes the queued slot of hash h.
func collidingKey(h uint64) string {
	for i := 0; ; i++ {
		k := fmt.Sprintf("http://z/%d?", i)
		if kh := keyHash([]byte(k)); kh%queuedSlots == h%queuedSlots && kh != h {
			return k
		}
	}
}

// TestDropIfStoredFindsAQueuedOfferWithoutItsSlot: an entry still in
// ristretto's buffer whose queued slot another hash's offer took is
// dropped all the same (a 304 disowned it).
func TestDropIfStoredFindsAQueuedOfferWithoutItsSlot(t *testing.T) {
	const key = "http://a/x?"
	old := testEntry(key, 10)
	release := holdTake(t, anyOffer)
	s := newTestStore(t, 1<<20)
	defer release()
	s.set(testEntry("http://a/other?", 10)) // taken first, and held there
	s.set(old)
	s.set(testEntry(collidingKey(old.hash), 10))
	dropped := s.dropIfStored(old)
	release()
	s.wait()
	if got := s.get(old.hash, []byte(key)); got != nil || !dropped {
		t.Errorf("dropIfStored = %v; stored after it: %v", dropped, got != nil)
	}
}

// TestStoreCheckThenActSparesANewerOffer: an entry another request
// offers while dropIfStored or replaceIfStored acts on an older one under
// its key (between the check that the older one is stored and the Del or
// Set) stays stored. The hook gives the other offer time to go through
// first; with the offer serialised behind the act, it goes after.
func TestStoreCheckThenActSparesANewerOffer(t *testing.T) {
	const key = "http://a/x?"
	for _, tc := range []struct {
		name string
		act  func(s *store, old *entry)
	}{
		{"dropIfStored", func(s *store, old *entry) { s.dropIfStored(old) }},
		{"replaceIfStored", func(s *store, old *entry) { s.replaceIfStored(old, testEntry(key, 30)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestStore(t, 1<<20)
			old := testEntry(key, 10)
			s.set(old)
			s.wait()
			if !s.has(old) {
				t.Fatal("old entry not stored")
			}
			newer := testEntry(key, 20)
			offered := make(chan struct{})
			testHookChecked = func(*entry) {
				go func() {
					s.set(newer)
					close(offered)
				}()
				select {
				case <-offered:
				case <-time.After(50 * time.Millisecond):
				}
			}
			defer func() { testHookChecked = nil }()
			tc.act(s, old)
			testHookChecked = nil
			<-offered
			s.wait()
			switch got := s.get(old.hash, []byte(key)); {
			case got == nil:
				t.Fatal("nothing stored after the act and the other offer, want the other offer")
			case got != newer:
				t.Fatalf("stored after the act and the other offer: a body of %d bytes, want the other offer's %d", got.body.Len(), newer.body.Len())
			}
		})
	}
}

// TestStoreConcurrentReplacementsEvictNothing: concurrent offers under one
// hash already stored (304 refreshes of a no-cache page, HEAD freshens)
// beside new entries, in a store far from full, evict and refuse nothing,
// and ristretto never counts more than max_size: a superseded replacement
// is not refused with a cost over max_size, which ristretto would take as
// the entry's cost.
func TestStoreConcurrentReplacementsEvictNothing(t *testing.T) {
	s := newTestStore(t, 4<<20) // the entries below take about 1 MiB
	for i := range 50 {
		s.set(testEntry(fmt.Sprintf("http://a/base%d?", i), 4000))
	}
	s.set(testEntry("http://a/hot?", 3000))
	s.wait()
	var stop atomic.Bool
	var over atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for !stop.Load() {
			if used := s.maxCost - s.rc().RemainingCost(); used > s.maxCost {
				over.Add(1)
			}
			runtime.Gosched()
		}
	})
	var writers sync.WaitGroup
	for range 4 {
		writers.Go(func() {
			for range 20_000 {
				s.set(testEntry("http://a/hot?", 3000))
			}
		})
	}
	writers.Go(func() {
		for i := range 2_000 {
			s.set(testEntry(fmt.Sprintf("http://a/n%d?", i%100), 2000))
			runtime.Gosched()
		}
	})
	writers.Wait()
	stop.Store(true)
	wg.Wait()
	s.wait()
	st := s.stats()
	missing := 0
	for i := range 50 {
		if k := fmt.Sprintf("http://a/base%d?", i); s.get(keyHash([]byte(k)), []byte(k)) == nil {
			missing++
		}
	}
	// (A new offer superseded by a later one still queued is refused, and
	// counted as a reject: not a loss.)
	if st.Evictions > 0 || missing > 0 || over.Load() > 0 {
		t.Errorf("store of %d bytes (max %d): %d evictions, %d of 50 older entries gone; ristretto counted more than max_size %d times", st.Bytes, st.MaxBytes, st.Evictions, missing, over.Load())
	}
}

// TestStoreNewerOfferWinsWithoutItsSlot: of two new offers for one key
// both in ristretto's buffer, the newer is stored, also when a third
// key's offer took their queued slot between them; and ristretto counts
// what is held (an older, larger offer admitted, the newer's cost taken
// for it, let the store pass max_size).
func TestStoreNewerOfferWinsWithoutItsSlot(t *testing.T) {
	const key = "http://a/x?"
	older, newer := testEntry(key, 400<<10), testEntry(key, 10)
	release := holdTake(t, anyOffer)
	s := newTestStore(t, 8<<20)
	defer release()
	s.set(older)
	s.set(newer)
	s.set(testEntry(collidingKey(older.hash), 10))
	release()
	s.wait()
	if got := s.get(older.hash, []byte(key)); got != newer {
		t.Fatalf("stored the older offer (%v), want the newer", got == older)
	}
	if policy, held := s.maxCost-s.rc().RemainingCost(), s.heldCost.Load(); policy != held {
		t.Errorf("ristretto counts %d bytes, the store holds %d", policy, held)
	}
}

// TestDropIfStoredFindsAnOfferBeingTaken: an entry ristretto has taken off
// its buffer and not yet put in its map, whose queued slot another hash's
// offer took, is dropped all the same.
func TestDropIfStoredFindsAnOfferBeingTaken(t *testing.T) {
	const key = "http://a/x?"
	old := testEntry(key, 10)
	atOld, locked := make(chan struct{}), make(chan struct{})
	testHookTaken = func(e *entry) {
		if e == old {
			close(atOld)
			<-locked
		}
	}
	t.Cleanup(func() { testHookTaken = nil })
	s := newTestStore(t, 1<<20)
	s.set(old)
	s.set(testEntry(collidingKey(old.hash), 10)) // takes old's queued slot
	<-atOld
	s.mu.Lock() // Cost(old) marks it held, then waits for the lock
	close(locked)
	until(t, "old to be held", func() bool { return old.counted.Load() == countHeld })
	res := make(chan bool, 1)
	go func() { res <- s.dropIfStored(old) }()
	var dropped bool
	select {
	case dropped = <-res: // decided without the lock
		s.mu.Unlock()
	case <-time.After(200 * time.Millisecond): // waits for the lock: let Cost go on
		s.mu.Unlock()
		dropped = <-res
	}
	s.wait()
	if got := s.get(old.hash, []byte(key)); got != nil || !dropped {
		t.Errorf("dropIfStored = %v; stored after it: %v", dropped, got != nil)
	}
}

// TestPurgedVariantsStayUnreachable: a purge by key removes the variants
// the index lists (at most maxVariantsPerURL of a URL); the others stay in
// ristretto under the old generation, unreachable. A miss keyed by the old
// record, in flight during the purge, used to store the record again under
// that generation, and every variant the purge had missed was served
// again. What a request fetched on lookups made before a purge is not
// stored (store.purgedSince), its record included.
func TestPurgedVariantsStayUnreachable(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{MaxSize: 64 << 20, MinUses: 1}, c)
	release := make(chan struct{})
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		v := r.Header.Get("X-V")
		if v == "slow" {
			<-release
		}
		w.Header().Set("Cache-Control", "max-age=300")
		w.Header().Set("Vary", "X-V")
		w.Header().Set("Date", c.date())
		_, _ = io.WriteString(w, "before the purge: "+v)
		return nil
	}}
	const page, n = "http://example.com/page", maxVariantsPerURL + 10
	for i := range n {
		get(t, h, o, page, "X-V", strconv.Itoa(i))
	}
	unlisted := strconv.Itoa(n - 1) // past the index's cap
	wantStatus(t, get(t, h, o, page, "X-V", unlisted), []string{"hit"})

	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = h.ServeHTTP(newWriter(), newRequest(http.MethodGet, page, "X-V", "slow"), o)
	}()
	until(t, "the slow miss to reach the origin", func() bool { return o.calls.Load() == n+1 })
	h.store.purgeKey(page)
	close(release)
	<-done
	h.store.wait()

	w := get(t, h, o, page, "X-V", unlisted)
	wantStatus(t, w, []string{"fwd=uri-miss"}, "hit")
	if n := o.calls.Load(); n != maxVariantsPerURL+12 {
		t.Errorf("origin called %d times", n)
	}
	// Nor was the in-flight miss's own variant stored.
	wantStatus(t, get(t, h, o, page, "X-V", "slow"), []string{"fwd=vary-miss"}, "hit")
}

// TestPurgeDuringAFillIsKept: a purge (by key, prefix, tag or of all) or
// an unsafe method's invalidation that comes while a response is being
// fetched keeps that response from being stored: it was fetched before,
// and may be what the purge was meant to remove. It used to be stored
// after the purge and served for its whole lifetime ("I published, then
// purged, and still get the old page").
func TestPurgeDuringAFillIsKept(t *testing.T) {
	const page = "http://example.com/doc"
	for _, tt := range []struct {
		name  string
		purge func(h *Handler, o *origin)
	}{
		{"key", func(h *Handler, _ *origin) { h.store.purgeKey(page) }},
		{"prefix", func(h *Handler, _ *origin) { h.store.purgePrefix("http://example.com/") }},
		{"tag", func(h *Handler, _ *origin) { h.store.purgeTag("docs") }},
		{"all", func(h *Handler, _ *origin) { h.store.purgeAll() }},
		{"unsafe method", func(h *Handler, o *origin) {
			if w := serve(t, h, o, newRequest(http.MethodPost, page)); w.Code != http.StatusNoContent {
				t.Fatalf("POST answered %d", w.Code)
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{}, c)
			var version atomic.Int32
			version.Store(1)
			started, resume := make(chan struct{}), make(chan struct{})
			o := &origin{}
			o.fn = func(w http.ResponseWriter, r *http.Request) error {
				if r.Method != http.MethodGet {
					w.WriteHeader(http.StatusNoContent)
					return nil
				}
				v := version.Load()
				w.Header().Set("Cache-Control", "max-age=600")
				w.Header().Set("Surrogate-Key", "docs")
				w.Header().Set("Date", c.date())
				if o.calls.Load() == 1 {
					close(started)
					<-resume
				}
				_, err := fmt.Fprintf(w, "v%d", v)
				return err
			}
			first := make(chan *httptest.ResponseRecorder, 1)
			go func() { first <- get(t, h, o, page) }()
			<-started
			version.Store(2) // the resource changes at the origin, then it is purged
			tt.purge(h, o)
			close(resume)
			if w := untilValue(t, "the fill to end", first); w.Body.String() != "v1" {
				t.Fatalf("the fill got %q", w.Body.String())
			}
			h.store.wait()
			w := get(t, h, o, page)
			wantStatus(t, w, []string{"fwd=uri-miss"}, "hit")
			if w.Body.String() != "v2" {
				t.Errorf("after the purge: %q, want the origin's v2", w.Body.String())
			}
		})
	}
}

func TestSizeString(t *testing.T) {
	for n, want := range map[int64]string{0: "0B", 1: "1B", 1000: "1KB", 1e6: "1MB", 1500000: "1500KB", 1001: "1001B", 1024: "1KiB", 1536: "1536B", 64 << 20: "64MiB", 3 << 30: "3GiB", 1 << 40: "1TiB", 1<<20 + 1024: "1025KiB"} {
		if got := SizeString(n); got != want {
			t.Errorf("SizeString(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestOverlappingPurgesCountEachEntryOnce: purges that overlap (a tag, a
// prefix, all, keys by invalidation, at once) each remove what they find,
// but an entry counts once, in the purge that claims it: the answers add
// up to the entries there were, and so does the purge count (a review saw
// twice as many purges as entries from a tag purge and a purge-all sent
// together).
func TestOverlappingPurgesCountEachEntryOnce(t *testing.T) {
	const n = 600
	for round := range 15 {
		s := newTestStore(t, 64<<20)
		for i := range n {
			s.set(testEntry(fmt.Sprintf("http://a/p/%d?", i), 16, "t"))
		}
		s.wait()
		if got := s.stats().Entries; got != n {
			t.Fatalf("round %d: %d entries stored, want %d", round, got, n)
		}
		before := s.purges.Load()
		var sum atomic.Int64
		var wg sync.WaitGroup
		for _, purge := range []func() int{
			func() int { return s.purgeTag("t") },
			func() int { return s.purgeAll() },
			func() int { return s.purgePrefix("http://a/p/") },
			func() int {
				m := 0
				for i := range n / 10 {
					m += s.dropKey(fmt.Sprintf("http://a/p/%d?", i*10))
				}
				return m
			},
		} {
			wg.Go(func() { sum.Add(int64(purge())) })
		}
		wg.Wait()
		s.wait()
		if got := sum.Load(); got != n {
			t.Errorf("round %d: the purges answered %d removed in all, want %d", round, got, n)
		}
		if got := s.purges.Load() - before; got != n {
			t.Errorf("round %d: purges counted %d, want %d", round, got, n)
		}
		if got := s.stats().Entries; got != 0 {
			t.Errorf("round %d: %d entries left", round, got)
		}
	}
}

// variantsUnder stores a variant record of url and n variants of it, the
// first first of them tagged firstTag and the rest restTag, and returns
// the record.
func variantsUnder(t *testing.T, s *store, url string, n, first int, firstTag, restTag string) *entry {
	t.Helper()
	rec := &entry{entryData: entryData{key: url, hash: keyHash([]byte(url)), record: true, vary: []string{"Accept"}, gen: 9}}
	rec.computeCost()
	if !s.set(rec) {
		t.Fatal("record dropped")
	}
	for i := range n {
		tag := restTag
		if i < first {
			tag = firstTag
		}
		v := testEntry(string(appendVariantKey(nil, []byte(url), rec.gen, strconv.Itoa(i))), 10, tag)
		v.parent = rec.hash
		if !s.set(v) {
			t.Fatalf("variant %d dropped", i)
		}
		if i%64 == 0 {
			s.wait() // (ristretto's set buffer drops what overflows it)
		}
	}
	s.wait()
	return rec
}

// TestTagPurgeKeepsARecordWithUnlistedVariants: the index lists at most
// maxVariantsPerURL variants of a URL; a tag purge of all it lists keeps
// the record the others need (a review: a version that dropped it made
// them unreachable, 10 hits turned into 10 misses).
func TestTagPurgeKeepsARecordWithUnlistedVariants(t *testing.T) {
	s := newTestStore(t, 64<<20)
	rec := variantsUnder(t, s, "http://a/many?", maxVariantsPerURL+3, maxVariantsPerURL, "listed", "more")
	if got := countStored(s); got != maxVariantsPerURL+4 {
		t.Fatalf("%d stored, want %d (the test needs every variant stored)", got, maxVariantsPerURL+4)
	}
	if n := s.purgeTag("listed"); n != maxVariantsPerURL {
		t.Errorf("purged %d, want %d", n, maxVariantsPerURL)
	}
	s.wait()
	if s.get(rec.hash, []byte(rec.key)) == nil {
		t.Error("the record went with variants left under it")
	}
}
