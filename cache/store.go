package cache

import (
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"
	"github.com/cespare/xxhash/v2"
	"github.com/dgraph-io/ristretto/v2"
)

// storage is what the handler and the admin API need from a store. It
// never exposes ristretto: entries go in and out by the xxhash of their
// full key, and the full key is compared on the way out.
type storage interface {
	// get returns the entry stored under key (whose xxhash is hash), or
	// nil. It does not allocate.
	get(hash uint64, key []byte) *entry
	// set offers e to the store, which takes over the entry's reference
	// to its body (released when the store lets go of it, or at once if
	// the offer is dropped). Storing is asynchronous and may still be
	// refused by the admission policy after set returns true; false means
	// the offer was dropped outright.
	set(e *entry) bool
	// arena is where the store's bodies are recorded.
	arena() *arena
	// has reports whether e itself (not a newer entry for its key) is
	// stored right now.
	has(e *entry) bool
	// dropIfStored removes e's key, as dropKey does, if e itself is what
	// the store holds under it, and reports whether it did. replaceIfStored
	// offers e in old's place (as set does) if old is what the store
	// holds, and reports whether it was (held) and whether the store took
	// e (stored, as set reports); it takes over e's reference to its body
	// either way. Neither acts on a newer entry another request offered
	// meanwhile.
	dropIfStored(e *entry) bool
	replaceIfStored(old, e *entry) (held, stored bool)
	// purgeKey removes the entry for key and, when key is a URL whose
	// responses vary, all its variants; purgePrefix every entry whose key
	// starts with prefix; purgeTag every entry tagged tag; purgeAll
	// everything. Each returns how many entries it removed, counting the
	// sets offered before the call.
	purgeKey(key string) int
	// dropKey removes what purgeKey would, without waiting for the sets
	// still in ristretto's buffer (it is called on the request path); the
	// count it returns may miss those sets, which it removes all the same.
	dropKey(key string) int
	// invalidateKey is dropKey for an unsafe method's invalidation: like
	// a purge, it also keeps fills under way (fetchBegins) from storing.
	invalidateKey(key string) int
	// fetchBegins records an exchange with the origin for the URL key
	// key, hashing to h, before its request goes, so that a purge or an
	// invalidation of its URL that comes meanwhile reaches it: it notes
	// the listener port key carries (listenerPorts; set notes them too),
	// and counts the exchange (an invalidation marks only keys that may
	// be fetched). fetchEnds uncounts it.
	fetchBegins(key []byte, h uint64)
	fetchEnds(h uint64)
	// epoch is what a fill records as it begins; set refuses an entry
	// whose epoch is older than a purge or invalidation of its key
	// (purgedSince).
	epoch() uint64
	purgedSince(e *entry) bool
	// keyMark is the latest purge mark of the key hashing to h (with
	// the mark for all): what a request that looks it up came after.
	keyMark(h uint64) uint64
	// purgedBefore reports whether e's key was purged after e's fill
	// began and before a request that read epoch and mark began.
	purgedBefore(e *entry, epoch, mark uint64) bool
	purgePrefix(prefix string) int
	purgeTag(tag string) int
	purgeAll() int
	// keyTemplates returns the key templates noted with noteKeyTemplate,
	// the latest last. The slice is not to be modified.
	keyTemplates() []string
	// stats reports the store's size and counters.
	stats() storeStats
	// wait blocks until every set offered so far has been applied.
	wait()
}

// storeStats is a snapshot of a store, as reported by the admin API and
// the metrics.
type storeStats struct {
	Cache    string `json:"cache"`     // the cache_name
	Entries  int    `json:"entries"`   // responses and variant records held
	Bytes    int64  `json:"bytes"`     // their cost: body, header and key bytes
	MaxBytes int64  `json:"max_bytes"` // max_size
	// Counters since the store began (a change of cache_name or
	// max_size begins a new one): responses offered and taken into
	// ristretto's buffer (then held, or refused by its admission policy:
	// Rejects), offers it dropped from its buffer (not in Stores), entries
	// evicted, and entries purged (through the admin API, invalidations,
	// and revalidations that showed them out of date).
	Stores    uint64 `json:"stores"`
	Drops     uint64 `json:"drops"`
	Rejects   uint64 `json:"rejects"`
	Evictions uint64 `json:"evictions"`
	Purges    uint64 `json:"purges"`
	// Bodies is the memory holding the stored bodies: mapped and used
	// arena bytes, and bodies (or parts) that did not fit and live on
	// the Go heap.
	Bodies arenaStats `json:"bodies"`
	// FirstMisses is what min_uses auto judges by.
	FirstMisses firstUseReport `json:"first_misses"`
}

// pendingSlack is what may wait in ristretto's buffer before an offer of
// any size (up to max_item_size) still goes: a variant's record, offered
// just before the variant, or a few small responses. With none, a
// response near max_item_size, or over max_size/8 when max_item_size is
// raised, was dropped on its URL's first fill whenever its record waited.
const pendingSlack = 64 << 10

// Sizing of ristretto's admission counters: ten per expected item
// (ristretto's guidance), the number of items estimated from max_size and
// an assumed mean object of 4 KiB, at least 1024 and at most 4 Mi items
// (about 120 MB of counters, for caches of 16 GiB and more).
const (
	assumedMeanObject = 4 << 10
	minExpectedItems  = 1 << 10
	maxExpectedItems  = 4 << 20
	countersPerItem   = 10
	maxTagsPerEntry   = 64
	maxTagLength      = 256
	maxVariantsPerURL = 1024
	queuedSlots       = 256 // store.queued
	swapStripes       = 64  // store.swaps
	purgeSlots        = 4096
	purgeKeys         = 4096
	recentPurges      = 64
)

// store is the ristretto-backed storage. Ristretto keeps values by 64-bit
// hash only, so the store keeps its own index of the entries it cannot
// find by a key's hash: the variants of a URL, to purge them with it, and
// tagged entries, to purge by tag (see entry.linked). Other entries are
// found in ristretto by hash, and purging by prefix walks ristretto's
// values. The index is bounded by the cache itself: an entry leaves it
// when ristretto evicts or rejects it or when it is purged or replaced,
// so it holds at most the admitted entries (MaxCost / entryOverhead) plus
// the sets still in ristretto's buffer.
//
// Indexing only linked entries keeps the common miss, a plain response,
// out of a map as large as the cache: with every entry indexed, the
// lookups, inserts and deletes in it (on set, and on ristretto's
// goroutine for every eviction and rejection) cost about 2 µs per stored
// miss of a full cache (BenchmarkMiss/fill). The index holds no pointer
// to an entry except for tagged entries: the garbage collector marks
// every pointer on every cycle (BenchmarkGCWithEntries).
type store struct {
	name    string
	maxCost int64
	// cache is ristretto, until Destruct: dropping it then lets its
	// sketches go while a config Caddy has not yet let go of still
	// holds the store. Load it with rc.
	cache  atomic.Pointer[ristretto.Cache[uint64, *entry]]
	bodies *arena

	// mu protects the index maps. It is never held while calling into
	// ristretto except Get (ristretto calls back into the index from its
	// own goroutine, and Del blocks on that goroutine's buffer).
	mu       sync.Mutex
	byHash   map[uint64]indexed
	tagged   map[uint64]*entry              // the indexed entries with tags
	children map[uint64]map[uint64]struct{} // URL key hash → variant hashes
	tags     map[string]map[uint64]struct{} // tag → entry hashes
	// newest is, by hash, the id of the latest offer still in ristretto's
	// buffer (until its Cost is taken, or it is dropped): the Cost
	// function refuses an older new offer under the hash, which
	// ristretto would otherwise admit and then refuse the newer one as
	// an update of it, keeping the older response and the newer's cost.
	newest map[uint64]uint64

	// pending is the cost of the entries offered to ristretto and not yet
	// taken off its set buffer (ristretto calls the Cost function as it
	// takes each one). The buffer holds up to 32768 items whatever their
	// size, so under a burst of misses it could hold many times max_size;
	// set drops offers beyond pendingLimit instead, unless what waits
	// before the offer is at most pendingSlack.
	pending      atomic.Int64
	pendingLimit int64
	// lastTaken is the hash of the entry ristretto took off its buffer
	// last. Ristretto calls the Cost function before it puts a new entry
	// in its map, one entry at a time: an entry no longer pending and not
	// yet found may be that one (see dropKey).
	lastTaken atomic.Uint64

	// held counts the entries ristretto holds: taken off its buffer (the
	// Cost function) and not yet exited (OnExit); heldCost is their cost,
	// what ristretto counts against maxCost.
	held, heldCost atomic.Int64

	// queued holds the latest offers, a slot each by hash. Ristretto puts
	// a new key in its map only once its goroutine has taken the set off
	// its buffer and admitted it, so a request right after a fill (a
	// page's second reference to a script; the cache-tests suite's second
	// request) would miss and go to the origin again, for up to
	// milliseconds under load. Get looks here when ristretto misses. An
	// offer leaves its slot when it leaves the store (OnExit), is dropped
	// or purged, or when a later offer takes the slot (then it is a miss,
	// as it was without this).
	queued [queuedSlots]atomic.Pointer[entry]
	// swaps serialises, a stripe of hashes each, every offer (set) with
	// the checks-then-acts on what is stored under a hash (dropIfStored,
	// replaceIfStored), so that a newer response another request offers
	// between the check and the act is neither dropped nor overwritten
	// by an older one. Ristretto applies a replacement at once and queues
	// a new key behind any deletion already queued, so the order of the
	// calls is the order of their effects.
	swaps [swapStripes]sync.Mutex
	// hints are the keys whose requests skip coalescing for a while; an
	// offer or a purge under a key clears its hint.
	hints uncacheableHints
	// asIs are the keys whose conditional misses go to the origin as they
	// came for a while: the last one fetched whole was not stored (see
	// fetchWhole).
	asIs uncacheableHints

	stores, drops, rejects, evictions, purges atomic.Uint64

	// ports are those the listener marks of the keys offered carry (see
	// listenerPorts), for purges and invalidations by key.
	ports listenerPorts

	// purgeSeq numbers purges and invalidations (from 1); marks holds,
	// per slot of key hashes, the number of the last that removed a key
	// hashing there (a filter: most keys' slots show no purge since their
	// fill began), keyPurges that of the last purge of each key (the
	// latest purgeKeys of them, in keyOrder; older ones are folded into
	// allMark), allMark the last purge of everything. A fill that began
	// before a purge of its key (its entry's epoch) is not stored: it may
	// be what the purge was meant to remove.
	purgeSeq atomic.Uint64
	marks    [purgeSlots]atomic.Uint64
	// fetching counts, per slot of URL key hashes, the exchanges with the
	// origin under way (fetchBegins): an unsafe method's invalidation
	// marks a key only where a fill may be under way, so that
	// invalidations of keys nothing fetches (which any client can send by
	// the thousand) do not push the marks of fills in flight out into
	// allMark, which would keep every fill in flight from being stored.
	fetching  [purgeSlots]atomic.Int32
	keysMu    sync.RWMutex
	keyPurges map[uint64]uint64
	keyOrder  []keyPurge // a ring of purgeKeys, from keyNext once full
	keyNext   int
	allMark   atomic.Uint64
	// recent are the latest purges by prefix or tag (at most
	// recentPurges; older ones are folded into allMark), and recentSeq
	// the number of the newest, so that a purge of /blog/ or of a tag
	// does not keep out every fetch in flight.
	recentMu  sync.Mutex
	recent    []recentPurge
	recentSeq atomic.Uint64

	// counts holds the misses of each URL, counted by handlers with any
	// min_uses but 1 (useCounts makes it on first use, once: countsOnce).
	// It lives with the store, so the counts survive config reloads that
	// keep it, and goes at Destruct, as ristretto does.
	counts     atomic.Pointer[useSketch]
	countsOnce sync.Once
	items      int64 // the entries the store is sized for
	// templateUses are the key templates (Config.Key) of the handlers
	// that have used the store, the latest last (see noteKeyTemplate),
	// guarded by templatesMu; templates publishes their names for
	// invalidations, which reach the entries each would have stored for
	// a URL (Handler.invalidate), so that a reload back to an earlier
	// key does not find what a POST under another key invalidated.
	templatesMu  sync.Mutex
	templateUses []*templateUse
	templates    atomic.Pointer[[]string]

	// firstUses counts the entries offered on their URL's first miss and
	// how many were used, for min_uses auto.
	firstUses firstUseStats

	// life guards ristretto's channels against Close: set and del hold
	// it for reading, Destruct for writing while it marks the store
	// closed (ristretto panics on a Set or Del racing its Close).
	life   sync.RWMutex
	closed bool
	// closing is set as Destruct begins. Lookups do not take life: a Get
	// racing ristretto's Close can panic (its read buffer sends on a
	// closed channel), which is then a miss.
	closing atomic.Bool

	// refreshes are the background revalidations of the store's
	// handlers, of every config that shares it (see background). (Last:
	// the fields before keep the layout they were measured with.)
	refreshes refreshes
}

// indexed is what the index keeps of an entry, with no pointers.
type indexed struct {
	id     uint64 // the entry's serial number (entry.id)
	parent uint64 // a variant's URL key hash (entry.parent)
	tagged bool   // the entry has tags: it is in store.tagged
}

// serials numbers the entries offered to stores, so that the index tells
// an entry from a later one under the same hash.
var serials atomic.Uint64

var _ storage = (*store)(nil)
var _ caddy.Destructor = (*store)(nil)

// expectedItems is how many entries a store of maxCost bytes is sized for.
func expectedItems(maxCost int64) int64 {
	return max(minExpectedItems, min(maxCost/assumedMeanObject, maxExpectedItems))
}

// newStore makes a store holding at most maxCost bytes of entries.
func newStore(name string, maxCost int64) (*store, error) {
	items := expectedItems(maxCost)
	s := &store{
		name:     name,
		maxCost:  maxCost,
		byHash:   make(map[uint64]indexed),
		tagged:   make(map[uint64]*entry),
		children: make(map[uint64]map[uint64]struct{}),
		tags:     make(map[string]map[uint64]struct{}),
		newest:   make(map[uint64]uint64),
		// About an eighth of max_size at most waits in ristretto's buffer
		// (one offer more when at most pendingSlack waited before it).
		pendingLimit: max(maxCost/8, 64<<10),
		bodies:       newArena(maxCost),
		items:        items,
	}
	c, err := ristretto.NewCache(&ristretto.Config[uint64, *entry]{
		NumCounters:        items * countersPerItem,
		MaxCost:            maxCost,
		BufferItems:        64,
		IgnoreInternalCost: true, // entryOverhead counts it, in bytes
		OnEvict:            s.onEvict,
		OnReject:           s.onReject,
		// Called once for every value a Set accepted, when it leaves
		// (evicted, rejected, deleted, replaced, cleared), and with nil
		// for deletions of keys with no value.
		OnExit: func(e *entry) {
			if e == nil {
				return
			}
			s.queued[e.hash%queuedSlots].CompareAndSwap(e, nil)
			switch e.counted.Swap(countGone) {
			case countHeld:
				s.held.Add(-1)
				s.heldCost.Add(-e.cost)
			case countNew:
				// Never taken off the buffer: a replacement that
				// ristretto put in place while its buffer was full, or
				// one evicted before its update was taken.
				s.pending.Add(-e.cost)
				s.mu.Lock()
				s.untrackLocked(e)
				s.mu.Unlock()
			}
			e.exit()
		},
		// Sets pass cost 0 so that this runs, on ristretto's goroutine,
		// for every set taken off the buffer.
		Cost: func(e *entry) int64 {
			if testHookTaken != nil {
				testHookTaken(e)
			}
			s.lastTaken.Store(e.hash)
			if e.counted.CompareAndSwap(countNew, countHeld) {
				s.pending.Add(-e.cost)
				s.held.Add(1)
				s.heldCost.Add(e.cost)
				// A new offer superseded by a later one for its hash
				// still queued: refuse it (a cost over maxCost), or
				// ristretto would admit it and refuse the later one.
				// Not a replacement (its hash is in ristretto's map):
				// ristretto put it in place at Set, and takes the cost
				// of an update as the entry's cost in its policy, so a
				// refusal would count max_size more than is held and
				// evict or refuse other entries until the next update.
				s.mu.Lock()
				newest, queued := s.newest[e.hash]
				s.untrackLocked(e)
				s.mu.Unlock()
				if queued && newest > e.id {
					if _, replacing := s.lookup(e.hash); !replacing {
						return s.maxCost + 1
					}
				}
			}
			return e.cost
		},
	})
	if err != nil {
		return nil, fmt.Errorf("creating store for cache %q: %w", name, err)
	}
	s.cache.Store(c)
	s.purgeSeq.Store(1) // epochs start at 1; 0 means an entry not checked
	s.firstUses.full = s.nearlyFull
	return s, nil
}

// nearlyFull reports whether the entries held and offered take 7/8 of
// maxCost or more: a new entry then soon takes another's place, or is
// refused.
func (s *store) nearlyFull() bool {
	return s.heldCost.Load()+s.pending.Load() >= s.maxCost-s.maxCost/8
}

// Destruct closes ristretto when the last handler using the store goes
// (caddy.UsagePool calls it). Closing releases every entry; the arena is
// unmapped once the requests still reading bodies are done.
func (s *store) Destruct() error {
	retireStore(s)
	s.closing.Store(true)
	s.life.Lock()
	s.closed = true
	s.life.Unlock()
	for i := range s.queued {
		s.queued[i].Store(nil)
	}
	s.rc().Close()
	s.cache.Store(nil)
	s.countsOnce.Do(func() {}) // none made from now on
	s.counts.Store(nil)
	s.bodies.close()
	return nil
}

// useCounts returns the store's miss counts, made on the first call, or
// nil once the store is closed.
func (s *store) useCounts() *useSketch {
	if u := s.counts.Load(); u != nil {
		return u
	}
	s.countsOnce.Do(func() { s.counts.Store(newUseSketch(s.items)) })
	return s.counts.Load()
}

// rc is ristretto, or nil once the store is closed. Under life (read)
// with closed false, it is not nil.
func (s *store) rc() *ristretto.Cache[uint64, *entry] { return s.cache.Load() }

func (s *store) arena() *arena { return s.bodies }

func keyHash(key []byte) uint64 { return xxhash.Sum64(key) }

func (s *store) get(hash uint64, key []byte) *entry {
	e, ok := s.lookup(hash)
	if !ok {
		e = s.queuedEntry(hash)
	}
	if e == nil || e.key != string(key) {
		return nil
	}
	return e
}

// queuedEntry returns the latest offer under hash, if its slot still
// holds it and it has not left the store: one still in ristretto's
// buffer, or taken and not yet in its map. Its body may be released
// meanwhile (ristretto refused it), which acquire tells.
func (s *store) queuedEntry(hash uint64) *entry {
	e := s.queued[hash%queuedSlots].Load()
	if e == nil || e.hash != hash || e.counted.Load() == countGone || s.closing.Load() {
		return nil
	}
	return e
}

// unqueue empties the slot of hash if it holds an offer under hash.
func (s *store) unqueue(hash uint64) {
	slot := &s.queued[hash%queuedSlots]
	if e := slot.Load(); e != nil && e.hash == hash {
		slot.CompareAndSwap(e, nil)
	}
}

func (s *store) has(e *entry) bool {
	cur, ok := s.lookup(e.hash)
	return ok && cur == e
}

// lookup is ristretto's Get, but the panic of a Get racing ristretto's
// Close is a miss (see closing); any other panic goes on.
func (s *store) lookup(hash uint64) (e *entry, ok bool) {
	defer func() {
		if s.closing.Load() && recover() != nil {
			e, ok = nil, false
		}
	}()
	c := s.rc()
	if c == nil {
		return nil, false
	}
	return c.Get(hash)
}

func (s *store) fetchBegins(key []byte, h uint64) {
	s.ports.noteBytes(key)
	s.fetching[h%purgeSlots].Add(1)
}

func (s *store) fetchEnds(h uint64) { s.fetching[h%purgeSlots].Add(-1) }

func (s *store) set(e *entry) bool {
	s.ports.note(e.urlKey())
	mu := s.stripe(e.hash)
	mu.Lock()
	defer mu.Unlock()
	return s.setLocked(e)
}

// stripe is the lock of swaps that hash is under.
func (s *store) stripe(hash uint64) *sync.Mutex { return &s.swaps[hash%swapStripes] }

// holds reports whether e itself is what the store has under its hash: in
// ristretto's map, or on its way there, as the latest offer still in the
// buffer (newest) or taken off it and not yet in the map (held, not yet
// exited). Called under the hash's stripe, so no offer for it comes
// between.
func (s *store) holds(e *entry) bool {
	if cur, inMap := s.lookup(e.hash); inMap {
		return cur == e
	}
	if e.counted.Load() == countHeld {
		return true
	}
	s.mu.Lock()
	id, queued := s.newest[e.hash]
	s.mu.Unlock()
	return queued && id == e.id
}

func (s *store) dropIfStored(e *entry) bool {
	mu := s.stripe(e.hash)
	mu.Lock()
	defer mu.Unlock()
	if !s.holds(e) {
		return false
	}
	if testHookChecked != nil {
		testHookChecked(e)
	}
	s.dropKey(e.key)
	return true
}

func (s *store) replaceIfStored(old, e *entry) (held, stored bool) {
	mu := s.stripe(old.hash)
	mu.Lock()
	defer mu.Unlock()
	if e.hash != old.hash || !s.holds(old) {
		e.exit()
		return false, false
	}
	if testHookChecked != nil {
		testHookChecked(old)
	}
	return true, s.setLocked(e)
}

// setLocked is set, under the stripe of e's hash.
func (s *store) setLocked(e *entry) bool {
	s.life.RLock()
	defer s.life.RUnlock()
	if s.closed || (e.epoch != 0 && s.purgedSince(e)) {
		e.exit()
		return false
	}
	if p := s.pending.Add(e.cost); p > s.pendingLimit && p-e.cost > pendingSlack {
		s.pending.Add(-e.cost)
		s.drops.Add(1)
		e.exit()
		return false
	}
	// An entry that replaces another under its hash takes ristretto's
	// update path: the new value is in place at once, keeps the old one's
	// slot in the admission policy, and is counted by the Cost function
	// when the update is taken off the buffer (or by OnExit, when the
	// buffer was full or the slot was evicted first).
	e.id = serials.Add(1)
	s.clearHints(e.hash)
	if e.parent != 0 {
		s.clearHints(e.parent)
	}
	s.mu.Lock()
	prev, hadPrev := s.byHash[e.hash]
	prevEntry := s.tagged[e.hash]
	e.displaced = s.addLocked(e)
	s.newest[e.hash] = e.id
	s.mu.Unlock()
	if testHookIndexed != nil {
		testHookIndexed(e)
	}
	slot := &s.queued[e.hash%queuedSlots]
	slot.Store(e)
	c := s.rc()
	if c.Set(e.hash, e, 0) {
		if e.linked() && !s.indexed(e.hash) || e.epoch != 0 && s.purgedSince(e) {
			// A purge (of a tag, or a variant's URL) took e out of the
			// index after it was indexed and queued its deletion before
			// this Set: e would be stored where no purge finds it. Or a
			// purge came since the check above, and its deletion may
			// have gone before this Set. Out of the index too: no purge
			// to come would find it there, nor would ristretto's
			// callbacks (a deletion is no eviction).
			s.mu.Lock()
			s.removeLocked(e)
			s.mu.Unlock()
			slot.CompareAndSwap(e, nil)
			c.Del(e.hash)
		}
		s.stores.Add(1)
		if e.firstUse {
			s.firstUses.record(1, 0)
		}
		return true
	}
	// Dropped: the key was not in ristretto's map (a replacement always
	// succeeds), so what was indexed before, if anything, is again.
	s.pending.Add(-e.cost)
	e.counted.Store(countGone)
	slot.CompareAndSwap(e, nil)
	s.mu.Lock()
	_, other := s.byHash[e.hash]
	if (s.removeLocked(e) || !other) && hadPrev {
		s.indexLocked(e.hash, prev, prevEntry)
	}
	s.untrackLocked(e)
	s.mu.Unlock()
	s.drops.Add(1)
	e.exit() // ristretto calls OnExit only for what it accepted
	return false
}

func (s *store) wait() {
	s.life.RLock()
	defer s.life.RUnlock()
	if !s.closed {
		s.rc().Wait() // ristretto's Wait racing its Close can send on a closed channel
	}
}

// testHookIndexed, when set by a test, runs in set between indexing an
// entry and offering it to ristretto.
var testHookIndexed func(*entry)

// testHookChecked, when set by a test, runs in dropIfStored and
// replaceIfStored between the check that the entry is stored and the act.
var testHookChecked func(*entry)

// testHookTaken, when set by a test, runs on ristretto's goroutine as it
// takes an offer off its buffer.
var testHookTaken func(*entry)

// indexed reports whether the index has an entry under hash.
func (s *store) indexed(hash uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.byHash[hash]
	return ok
}

// addLocked indexes e if it is linked, replacing whatever was indexed
// under its hash, and reports whether it replaced something.
func (s *store) addLocked(e *entry) bool {
	x, ok := s.byHash[e.hash]
	if ok && x.id == e.id {
		return false
	}
	if ok {
		s.unindexLocked(e.hash, x)
	}
	if e.linked() {
		s.indexLocked(e.hash, indexed{id: e.id, parent: e.parent, tagged: len(e.tags) > 0}, e)
	}
	return ok
}

// indexLocked indexes x under h, with its variant and tag links; e is the
// entry, needed only when x is tagged.
func (s *store) indexLocked(h uint64, x indexed, e *entry) {
	s.byHash[h] = x
	if x.parent != 0 {
		set := s.children[x.parent]
		if set == nil {
			set = make(map[uint64]struct{})
			s.children[x.parent] = set
		}
		if len(set) < maxVariantsPerURL {
			set[h] = struct{}{}
		}
	}
	if !x.tagged || e == nil {
		return
	}
	s.tagged[h] = e
	for _, t := range e.tags {
		set := s.tags[t]
		if set == nil {
			set = make(map[uint64]struct{})
			s.tags[t] = set
		}
		set[h] = struct{}{}
	}
}

// removeLocked drops e from the index if it is what is indexed under its
// hash, and reports whether it was.
func (s *store) removeLocked(e *entry) bool {
	x, ok := s.byHash[e.hash]
	if !ok || x.id != e.id {
		return false
	}
	s.unindexLocked(e.hash, x)
	return true
}

// unindexLocked drops the entry indexed as x under h.
func (s *store) unindexLocked(h uint64, x indexed) {
	delete(s.byHash, h)
	if x.parent != 0 {
		if set := s.children[x.parent]; set != nil {
			delete(set, h)
			if len(set) == 0 {
				delete(s.children, x.parent)
			}
		}
	}
	if !x.tagged {
		return
	}
	e := s.tagged[h]
	delete(s.tagged, h)
	if e == nil {
		return
	}
	for _, t := range e.tags {
		if set := s.tags[t]; set != nil {
			delete(set, h)
			if len(set) == 0 {
				delete(s.tags, t)
			}
		}
	}
}

// clearHints clears both kinds of hint (hints, asIs) of the key hashing
// to h, which an offer or a purge under it ends; clearAllHints all of
// them.
func (s *store) clearHints(h uint64) {
	s.hints.clear(h)
	s.asIs.clear(h)
}

func (s *store) clearAllHints() {
	s.hints.clearAll()
	s.asIs.clearAll()
}

// untrackLocked forgets e as the latest offer under its hash (see
// newest), if it is.
func (s *store) untrackLocked(e *entry) {
	if id, ok := s.newest[e.hash]; ok && id == e.id {
		delete(s.newest, e.hash)
	}
}

// onEvict runs on ristretto's goroutine for every entry it evicts.
func (s *store) onEvict(it *ristretto.Item[*entry]) {
	if it.Value == nil {
		return
	}
	s.evictions.Add(1)
	if it.Value.linked() {
		s.mu.Lock()
		s.removeLocked(it.Value)
		s.mu.Unlock()
	}
}

// onReject runs on ristretto's goroutine for every set it refuses. A set
// for a key that was already admitted by an earlier, still-buffered set
// is also "rejected" while the earlier value stays; the index then points
// back at what ristretto holds.
func (s *store) onReject(it *ristretto.Item[*entry]) {
	e := it.Value
	if e == nil {
		return
	}
	s.rejects.Add(1)
	if !e.linked() && !e.displaced {
		return // nothing of it is indexed, and it took no one's place
	}
	s.mu.Lock()
	_, other := s.byHash[e.hash]
	if s.removeLocked(e) || !other {
		if cur, ok := s.lookup(it.Key); ok && cur != nil {
			s.addLocked(cur)
		}
	}
	s.mu.Unlock()
}

func (s *store) stats() storeStats {
	var bytes int64
	if c := s.rc(); c != nil {
		bytes = s.maxCost - c.RemainingCost()
	}
	return storeStats{
		Cache:       s.name,
		Entries:     int(max(0, s.held.Load())),
		Bytes:       bytes,
		MaxBytes:    s.maxCost,
		Stores:      s.stores.Load(),
		Drops:       s.drops.Load(),
		Rejects:     s.rejects.Load(),
		Evictions:   s.evictions.Load(),
		Purges:      s.purges.Load(),
		Bodies:      s.bodies.stats(),
		FirstMisses: s.firstUses.report(),
	}
}

// stores holds the live stores, one per cache name and store-shaping
// configuration, so that a config reload that keeps them keeps the
// cached entries (caddy.UsagePool: LoadOrNew in Provision, Delete in
// Cleanup; the last Delete closes ristretto).
var stores = caddy.NewUsagePool()

// storePoolKey names the store a handler with config c uses: its
// cache_name and max_size, which shapes it (max_item_size bounds what a
// handler buffers, not the store, so a reload that changes it keeps the
// entries).
func storePoolKey(c *Config) string {
	return fmt.Sprintf("%s/max_size=%d", c.CacheName, c.MaxSize)
}

// names records, per config, the store each cache_name stands for, so that
// one config cannot give a name two stores (two sets of entries that
// metrics, stats and purges could not tell apart). A config is told by the
// Done channel of the context Caddy provisions its modules with: the http
// app wraps that context per server, the channel is the config's.
var names = caddy.NewUsagePool()

// configName is a cache_name in a config.
type configName struct {
	config <-chan struct{}
	name   string
}

// nameSizes are the sizes a config's handlers give a cache_name.
type nameSizes struct{ maxSize, maxItemSize int64 }

// claimName records that a handler of config uses c's cache_name with c's
// sizes, or reports that another handler of config uses it with others.
// Each claim that succeeds is released with releaseName.
func claimName(config <-chan struct{}, c *Config) error {
	k, want := configName{config, c.CacheName}, nameSizes{c.MaxSize, c.MaxItemSize}
	if v, loaded := names.LoadOrStore(k, want); loaded {
		if have := v.(nameSizes); have != want {
			_, _ = names.Delete(k) // LoadOrStore counted this handler
			return fmt.Errorf("cache_name %q is also used with max_size %s and max_item_size %s in this config, here with %s and %s: "+
				"response_cache handlers with one cache_name share one store, so give them the same sizes, or different names",
				c.CacheName, SizeString(have.maxSize), SizeString(have.maxItemSize), SizeString(c.MaxSize), SizeString(c.MaxItemSize))
		}
	}
	return nil
}

// StoreIdentity returns the cache_name, max_size and max_item_size c is
// provisioned with, defaults applied: the handlers of one config that
// share a cache_name share one store, and must agree on the sizes (the
// Caddyfile adapter checks it, to say where).
func (c *Config) StoreIdentity() (name string, maxSize, maxItemSize int64) {
	name, maxSize, maxItemSize = c.CacheName, c.MaxSize, c.MaxItemSize
	if maxSize == 0 {
		maxSize = defaultMaxSize
	}
	if maxItemSize == 0 && maxSize > 0 {
		maxItemSize = max(1, min(maxSize/8, maxDefaultItemSize))
	}
	if name == "" {
		name = defaultCacheName
	}
	return name, maxSize, maxItemSize
}

// SizeString renders a byte count as a Caddyfile size would spell it:
// in the largest binary unit that divides it (64MiB), else the largest
// decimal one (1500KB, for 1.5MB), else in bytes.
func SizeString(n int64) string {
	for _, u := range []struct {
		size int64
		unit string
	}{{1 << 40, "TiB"}, {1 << 30, "GiB"}, {1 << 20, "MiB"}, {1 << 10, "KiB"}, {1e12, "TB"}, {1e9, "GB"}, {1e6, "MB"}, {1e3, "KB"}} {
		if n != 0 && n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.unit
		}
	}
	return strconv.FormatInt(n, 10) + "B"
}

// releaseName releases a claim of claimName.
func releaseName(config <-chan struct{}, name string) {
	_, _ = names.Delete(configName{config, name})
}

// liveStores calls f for every live store (for the admin API and the
// metrics collector).
func liveStores(f func(s *store) bool) {
	stores.Range(func(_, v any) bool {
		if s, ok := v.(*store); ok {
			return f(s)
		}
		return true
	})
}

// maxKeyTemplates bounds the key templates a store remembers that no
// provisioned handler uses: past it, the oldest is forgotten, with a
// purge of the store if entries were stored under it, since
// invalidations would no longer reach them. The templates of loaded
// configs are never forgotten (a config may use more), and one under
// which nothing was stored is forgotten as soon as no handler uses it (a
// config that failed to load), without a purge.
const maxKeyTemplates = 8

// templateUse is what a store knows of a key template: how many
// provisioned handlers use it (a config's handlers until its Cleanup,
// whether it loaded or not), whether one of them offered an entry, and
// whether the store forgot it.
type templateUse struct {
	s         *store
	template  string
	handlers  int // guarded by store.templatesMu
	stored    atomic.Bool
	forgotten atomic.Bool
}

// noteKeyTemplate notes that a handler keys its entries with template,
// until it releases the claim returned.
func (s *store) noteKeyTemplate(template string) *templateClaim {
	s.templatesMu.Lock()
	defer s.templatesMu.Unlock()
	var use *templateUse
	if i := slices.IndexFunc(s.templateUses, func(u *templateUse) bool { return u.template == template }); i >= 0 {
		use = s.templateUses[i]
		s.templateUses = slices.Delete(s.templateUses, i, i+1)
	} else {
		use = &templateUse{s: s, template: template}
	}
	use.handlers++
	s.templateUses = append(s.templateUses, use) // the latest last
	s.publishTemplatesLocked()
	return &templateClaim{templateUse: use}
}

// publishTemplatesLocked publishes the names of templateUses.
func (s *store) publishTemplatesLocked() {
	names := make([]string, len(s.templateUses))
	for i, u := range s.templateUses {
		names[i] = u.template
	}
	s.templates.Store(&names)
}

// templateClaim is one handler's count in a templateUse, until release.
// The handler keeps it past its Cleanup: requests of an unloaded config
// may still be finishing, and ask it whether to store (markStored).
type templateClaim struct {
	*templateUse
	released atomic.Bool
}

// markStored notes that the claim's handler offers an entry keyed by its
// template, and reports whether it may: false once the store forgot the
// template (the entry would be out of reach of invalidations). Forgetting
// sets forgotten before it reads stored, and this the other way round:
// one of them sees the other (a purge then refuses an entry whose fill
// began before it).
func (c *templateClaim) markStored() bool {
	if c == nil {
		return true
	}
	if !c.stored.Load() {
		c.stored.Store(true)
	}
	return !c.forgotten.Load()
}

// release uncounts the claim's handler (once: it is cleaned up). When no
// handler uses the template any more, a template nothing was stored
// under is forgotten at once; then, past maxKeyTemplates unused ones, the
// oldest is, with a purge of the store if something was stored under it
// (forgot is then that template).
func (c *templateClaim) release() (forgot string) {
	if c == nil || !c.released.CompareAndSwap(false, true) {
		return ""
	}
	s := c.s
	s.templatesMu.Lock()
	defer s.templatesMu.Unlock()
	c.handlers--
	if c.handlers > 0 {
		return ""
	}
	if !c.stored.Load() {
		if testHookForgetting != nil {
			testHookForgetting(c.templateUse)
		}
		if !s.forgetLocked(c.templateUse) {
			// A late request marked it meanwhile, and may store.
			forgot = c.template
			s.purgeAll()
		}
	}
	for {
		var oldest *templateUse
		unused := 0
		for _, u := range s.templateUses {
			if u.handlers == 0 {
				if oldest == nil {
					oldest = u
				}
				unused++
			}
		}
		if unused <= maxKeyTemplates {
			break
		}
		if !s.forgetLocked(oldest) {
			forgot = oldest.template
			s.purgeAll()
		}
	}
	s.publishTemplatesLocked()
	return forgot
}

// testHookForgetting, if set, runs as release is about to forget a
// template nothing was stored under.
var testHookForgetting func(*templateUse)

// forgetLocked forgets u and reports whether nothing was stored under
// it, as markStored tells (see there).
func (s *store) forgetLocked(u *templateUse) (clean bool) {
	u.forgotten.Store(true)
	s.templateUses = slices.DeleteFunc(s.templateUses, func(v *templateUse) bool { return v == u })
	return !u.stored.Load()
}

func (s *store) keyTemplates() []string {
	if p := s.templates.Load(); p != nil {
		return *p
	}
	return nil
}
