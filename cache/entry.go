package cache

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
)

// generations numbers variant records process-wide, so a record that
// replaces another never matches the other's variants.
var generations atomic.Uint64

// entry is one stored object. It is immutable once handed to the store:
// hits read it from many goroutines without locks, and an update (a 304
// refresh) makes a new entry that shares body and header values.
//
// An entry is either a response or, for a URL whose responses Vary, a
// variant record: the record lives under the URL key and lists the Vary
// field names and a generation; the responses live under variant keys
// derived from the URL key, the generation and the request's values of the
// Vary fields (see variantKey). Purging or replacing the record orphans
// the variants of the old generation, so a purge of the URL is effective
// immediately even before the variants themselves are deleted.
//
// An entry stays within 512 bytes (TestEntrySize): Go's collector marks
// objects up to that size span by span, cheaply. Embedding the body (576
// bytes in all) made BenchmarkGCWithEntries twice as slow, though it
// saved an object per entry.
type entry struct {
	entryData
	exited atomic.Bool // set by exit
	// counted is countNew while the entry's cost is pending (store.pending)
	// until ristretto takes it off its buffer, then countHeld (counted in
	// store.held) until it exits, then countGone. An entry that exits
	// while still new (ristretto can put a replacement in place before
	// taking it off the buffer) releases its pending cost then, and is
	// never counted as held.
	counted atomic.Int32
	// displaced marks an offer that took another entry's place in the
	// store's index, which a rejection of the offer gives back.
	displaced bool
	// firstUse marks an entry offered on its URL's first miss; used is
	// set when a request first finds it. The store counts both
	// (store.firstUses).
	firstUse bool
	used     atomic.Bool
	// purged is set by the one purge or invalidation that counts e as
	// removed (claimPurge), of all the overlapping ones that find it.
	purged atomic.Bool
	id     uint64 // serial number, set when offered to the store
	// epoch is the store's purge count when the fill that made e began
	// (store.epoch); 0 for entries that are not checked against purges.
	epoch uint64
}

// claimPurge reports whether this purge is the first to remove e, the
// one that counts it.
func (e *entry) claimPurge() bool { return e != nil && e.purged.CompareAndSwap(false, true) }

// urlKey is the key of e's URL: e's key, or for a variant the URL key
// appendVariantKey put in it, after a NUL, the generation (digits) and a
// NUL, and before a NUL and e's varyKey.
func (e *entry) urlKey() string {
	if e.parent == 0 || e.record || len(e.key) < 2 || e.key[0] != 0 {
		return e.key
	}
	k := e.key[1:]
	i := strings.IndexByte(k, 0)
	if i < 0 || len(k)-i-1 < len(e.varyKey)+1 {
		return e.key
	}
	k = k[i+1:]
	return k[:len(k)-len(e.varyKey)-1]
}

// entryData is the content of an entry: what a refreshed copy shares.
type entryData struct {
	// key is the full cache key; ristretto keeps only its hash, so a Get
	// compares it to rule out a 64-bit collision.
	key  string
	hash uint64
	// parent is the hash of the URL key of a variant (0 otherwise); the
	// store indexes variants under it so removing the URL removes them.
	parent uint64

	// record marks a variant record: vary and gen are set, nothing else.
	record bool
	vary   []string // canonical Vary field names (record and its variants)
	gen    uint64   // generation of a record, and of a variant's record
	// varyKey is the normalised request values of vary (a variant).
	varyKey string

	status int
	header fields // the storable fields, Content-Length included
	// body is never written after storing; hits write it as is, holding
	// a reference (see body). The entry holds one reference while the
	// store has it, released by exit.
	body *body

	// reqVary holds the request's values of the Vary fields, replayed on a
	// conditional request (RFC 9111 §4.3.1).
	reqVary fields
	// preset holds the caching fields that handlers before the cache set
	// for the request that stored the response (see presetFields): with
	// header, the fields decide freshness and storability (rc, fresh),
	// again after a 304; hits send their own request's instead.
	preset fields

	// fresh holds the freshness inputs (RFC 9111 §4.2): lifetime, corrected
	// initial age, response time; rc the response's directives.
	fresh Freshness
	rc    ResponseControl

	// validator reports an ETag or Last-Modified to revalidate with.
	validator bool
	// server is what the handler after the cache did with the client's
	// Server field (recorder.server): dropped (reverse_proxy does), a hit
	// drops it too unless the stored response has the origin's; added
	// after, a hit keeps its own in front of the stored lines.
	server serverFate
	// proxied: reverse_proxy made the response (recorder.proxied): a hit
	// adds its lines after those handlers before the cache set.
	proxied bool

	tags []string // surrogate keys (Surrogate-Key / Cache-Tag)
	cost int64
}

// currentAge is the entry's age at now (RFC 9111 §4.2.3).
func (e *entry) currentAge(now time.Time) time.Duration { return e.fresh.Age(now) }

// Per-entry memory the cost accounts for besides body, header and key
// bytes. TestEntryOverheadMatchesHeap (store_test.go) stores entries with
// ten header fields and 64-byte bodies and compares the live heap per
// entry with the cost with these constants, in a store that holds all it
// is offered and in one filled ten times over, evicting: the second holds
// its maps at about twice the slots of what it holds (deleted slots stay,
// and ristretto's policy keeps its own map of costs), and sets the
// constants (a review found 1.08-1.40 times the cost on the heap of a full
// cache when they were measured without evictions). They cover:
//   - ristretto: its storeItem (48 B) in a sharded Go map and the
//     policy's keyCosts slot, each at twice the slots when evicting; its
//     admission counters are sized once from max_size (see newStore) and
//     are a fixed baseline, not per entry;
//   - this package: the entry struct (a 416 B size class), the body's
//     handle and the rounding of small allocations to size classes.
//
// Linked entries (variants and tagged entries) also take a slot in the
// store's index, linkedOverhead: its byHash and children maps (about 240 B
// per variant in a store that evicts, 3 or 500 variants per URL).
//
// Each tag of a tagged entry takes, besides its string, tagOverhead in the
// store's tag index: a slot there and, for a tag no other entry has (the
// per-item ids of Surrogate-Key lists), a map of its own. Measured in that
// test's "eight tags each" run: about 265 B per tag in all; charged at 56 B
// before, eight distinct tags per entry put the live heap at 0.86 × the
// store's counted bytes where the cost promises at most 0.5 ×.
const (
	entryOverhead  = 840
	linkedOverhead = 300
	tagOverhead    = 232
)

// stringOverhead is the string header kept for each string an entry holds.
const stringOverhead = 16

// heapFactor is what a byte held on the Go heap costs in the process's
// memory: by default (GOGC=100) the heap grows to twice its live data
// before it is collected. A byte of a body in the arena costs one.
const heapFactor = 2

// computeCost sets e.cost: the memory the entry takes in the process, as
// closely as can be known without the runtime's help, so that the sum of
// costs (ristretto's MaxCost, max_size) bounds the memory the cache
// really uses: its bodies' arena blocks, and heapFactor times what it
// holds on the Go heap.
func (e *entry) computeCost() {
	e.cost = heapFactor*e.heapBytes() + e.body.cost()
}

// heapBytes estimates what the entry holds on the Go heap, besides its
// body.
func (e *entry) heapBytes() int64 {
	c := int64(entryOverhead) + allocSize(int64(len(e.key)))
	if e.linked() {
		c += linkedOverhead
	}
	c += e.header.heapBytes() + e.reqVary.heapBytes() + e.preset.heapBytes()
	for _, f := range e.vary {
		c += stringOverhead + int64(len(f))
	}
	for _, t := range e.tags {
		// the tag string and its slot in the entry, and its place in
		// the tag index
		c += stringOverhead + int64(len(t)) + tagOverhead
	}
	return c
}

// sizeClasses are the Go runtime's small allocation size classes
// (internal/runtime/gc.SizeClassToSize, Go 1.26); a []byte of n bytes
// really occupies the next class up, and a large one whole 8 KiB pages.
var sizeClasses = [...]int64{8, 16, 24, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240, 256, 288, 320, 352, 384, 416, 448, 480, 512, 576, 640, 704, 768, 896, 1024, 1152, 1280, 1408, 1536, 1792, 2048, 2304, 2688, 3072, 3200, 3456, 4096, 4864, 5376, 6144, 6528, 6784, 6912, 8192, 9472, 9728, 10240, 10880, 12288, 13568, 14336, 16384, 18432, 19072, 20480, 21760, 24576, 27264, 28672, 32768}

// allocSize is the heap footprint of an allocation of n bytes.
func allocSize(n int64) int64 {
	if n <= 0 {
		return 0
	}
	if n > 32768 {
		const page = 8192
		return (n + page - 1) / page * page
	}
	lo, hi := 0, len(sizeClasses)-1
	for lo < hi {
		mid := (lo + hi) / 2
		if sizeClasses[mid] < n {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return sizeClasses[lo]
}

// exit releases the entry's reference to its body, once: when the store
// lets go of the entry, or when the entry is not stored after all.
func (e *entry) exit() {
	if e != nil && e.exited.CompareAndSwap(false, true) {
		e.body.release()
	}
}

// readHeader sets what the entry derives from its stored fields: whether
// it has a validator, and its tags.
func (e *entry) readHeader() {
	e.validator = e.header.has("Etag") || e.header.has("Last-Modified")
	e.tags = parseTags(&e.header)
}

const (
	countNew int32 = iota
	countHeld
	countGone
)

// linked reports whether the store indexes e: a variant (purged with its
// URL) or a tagged entry (purged by tag). Other entries are found by hash
// in ristretto itself.
func (e *entry) linked() bool { return e.parent != 0 || len(e.tags) > 0 }

// withHeader returns a copy of e with a new header and freshness inputs,
// sharing the body (used after a 304 refresh). The copy holds no
// reference to the body: the caller acquires one if it stores the copy.
func (e *entry) withHeader(h fields) *entry {
	e2 := &entry{entryData: e.entryData}
	e2.header = h
	return e2
}

// newEntry builds the entry for a complete, storable response, or
// returns nil when the arena has no room for its body.
func (h *Handler) newEntry(x *exchange, rec *recorder) *entry {
	b, ok := rec.takeBody()
	if !ok {
		return nil
	}
	return h.newEntryWith(x, rec, b)
}

// newEntryWith builds the entry for a storable response with body.
func (h *Handler) newEntryWith(x *exchange, rec *recorder, body *body) *entry {
	status := rec.status
	if x.wholeAs200 {
		status = http.StatusOK
		delete(rec.header, "Content-Range")
	}
	if hasBody(status) && !declaresLength(rec.header, body.Len()) {
		// The client's header map has its own entry: replacing this one
		// does not touch it.
		rec.header["Content-Length"] = []string{strconv.Itoa(body.Len())}
	}
	if _, dated := rec.header["Date"]; !dated {
		// Stored with the time it was received (RFC 9110 §6.6.1), so that
		// hits carry it with their Age rather than the time of the hit.
		rec.header["Date"] = []string{rec.responseTime.UTC().Format(http.TimeFormat)}
	}
	e := &entry{entryData: entryData{
		status: status,
		header: packStorable(x.withoutProxyCookie(rec.header), x.rc),
		body:   body,
		fresh:  x.fresh,
		rc:     x.rc,
		vary:   x.vary,

		server:  rec.server,
		proxied: rec.proxied,
	}, firstUse: x.firstUse}
	if x.preset != nil {
		e.preset = packFields(x.preset, nil)
	}
	e.epoch = x.epoch
	h.finishEntry(e, x)
	return e
}

// declaresLength reports whether h has exactly one Content-Length, n in
// canonical form (what would be stored otherwise).
func declaresLength(h http.Header, n int) bool {
	cl := h["Content-Length"]
	var buf [20]byte
	return len(cl) == 1 && cl[0] == string(strconv.AppendInt(buf[:0], int64(n), 10))
}

// hasBody reports whether a stored response of status has a body (and a
// Content-Length).
func hasBody(status int) bool {
	return status != http.StatusNoContent && status != http.StatusNotModified
}

// finishEntry fills the derived fields of e and its key.
func (h *Handler) finishEntry(e *entry, x *exchange) {
	e.readHeader()
	urlKey := x.flightKey // the URL key, as a string already, when leading a flight
	if urlKey == "" || x.variantKey != nil {
		urlKey = string(x.urlKey)
	}
	if len(e.vary) > 0 {
		record, isNew := h.varyRecord(urlKey, x.urlHash, e.vary, x.record)
		if isNew {
			record.epoch = x.epoch
			x.newRecord = record // stored with e (finish)
		}
		// varyKey is the end of key, not a string of its own: a copy
		// is as long as the request values of the Vary fields (a review:
		// 2,000-byte ones held 27% more heap than the cost counts).
		vk := requestVaryKey(e.vary, x.r)
		e.key = string(appendVariantKey(nil, x.urlKey, record.gen, vk))
		e.varyKey = e.key[len(e.key)-len(vk):]
		e.gen = record.gen // for waiters of other variants (learnVariant)
		e.parent = x.urlHash
		// A copy: the request's own strings are not kept alive.
		e.reqVary = packFields(x.r.Header, func(f string) bool { return !slices.Contains(e.vary, f) })
	} else {
		e.key = urlKey
	}
	e.hash = xxhash.Sum64String(e.key)
	e.computeCost()
}

// varyRecord returns the variant record of a URL, and whether it is a new
// one (not stored: the caller stores it with the variant), made when the
// store shows none or its Vary fields differ: of the generation of
// known (the record the request was keyed by, if any) when its fields are
// the same, so that the variants keyed by it stay reachable (the store may
// not show a record it was just offered: ristretto applies sets
// asynchronously, and a later offer can take its queued slot; the store
// refuses the record if the URL was purged since known was looked up:
// store.purgedSince), otherwise of a new generation, orphaning the
// variants of the old.
func (h *Handler) varyRecord(urlKey string, urlHash uint64, fields []string, known *entry) (record *entry, isNew bool) {
	if cur := h.store.get(urlHash, []byte(urlKey)); cur != nil && cur.record && equalFields(cur.vary, fields) {
		return cur, false
	}
	gen := generations.Add(1)
	if known != nil && known.gen != 0 && equalFields(known.vary, fields) {
		gen = known.gen
	}
	r := &entry{entryData: entryData{key: urlKey, hash: urlHash, record: true, vary: fields, gen: gen}}
	r.computeCost()
	return r, true
}

func equalFields(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
