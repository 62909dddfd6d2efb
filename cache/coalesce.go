package cache

import (
	"context"
	"math"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// flight is one origin request that concurrent misses for the same key
// wait on. The leader publishes its outcome with finish: the entry it
// stored, or nil when the response cannot be shared (then the waiters go
// to the origin themselves). It publishes as early as it knows: at the
// response's header for an uncacheable response, when the body passes
// max_item_size, or when the body is complete.
type flight struct {
	// done is made by the first waiter (most misses have none) and closed
	// by finish; both under the group's lock.
	done chan struct{}
	once sync.Once
	e    *entry // written before done is closed; read after
	// status is the origin's status for e (304 for a refresh), written
	// and read like e.
	status int
	// waiters counts the requests waiting: counted by join, under the
	// group's lock, until wait returns.
	waiters atomic.Int32
	// leaderGone is set when the leader's client has gone while requests
	// waited; cancel ends the fill (set by its leader). Both under the
	// group's lock.
	leaderGone bool
	cancel     func()
	// drained is closed by the last waiter to stop waiting once the
	// leader is in drain (draining set), so that the leader may let go of
	// the body it kept for them.
	drained   chan struct{}
	draining  atomic.Bool
	drainOnce sync.Once
	// answered is set when the leader's response header arrives, and
	// answering (made by a waiter that joins before) closed then; both
	// under the group's lock. The wait bound counts from there.
	answered  bool
	answering chan struct{}
	// published is set when the leader answers the waiters with an entry
	// whose body is still arriving (see publish); under the group's lock.
	published bool
}

// flightGroup coalesces requests by key. The zero value is ready to use.
type flightGroup struct {
	mu sync.Mutex // protects m
	m  map[string]*flight
}

// join returns the flight for key and whether the caller leads it (and
// must call finish). The caller leads lead, a zero flight it provides,
// when no flight for key is in the air. A waiter also gets a channel
// closed when the leader's response header arrives (nil if it has).
func (g *flightGroup) join(key string, lead *flight) (f *flight, leader bool, answering <-chan struct{}) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f, ok := g.m[key]; ok {
		f.waiters.Add(1) // until wait returns
		if f.done == nil {
			f.done = make(chan struct{})
			if f.published {
				close(f.done) // answered already: wait returns at once
			}
		}
		if !f.answered {
			if f.answering == nil {
				f.answering = make(chan struct{})
			}
			answering = f.answering
		}
		return f, false, answering
	}
	if g.m == nil {
		g.m = make(map[string]*flight)
	}
	g.m[key] = lead
	return lead, true, nil
}

// answered records that the response of f (a flight of g) has begun.
func (g *flightGroup) answered(f *flight) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !f.answered {
		f.answered = true
		if f.answering != nil {
			close(f.answering)
		}
	}
}

// finish publishes e, fetched with the origin's status, to the waiters
// of f and ends the flight, so that later requests look in the store
// again. Only the first call counts; after publish, it only ends the
// flight.
func (g *flightGroup) finish(key string, f *flight, e *entry, status int) {
	f.once.Do(func() {
		g.mu.Lock()
		if g.m[key] == f {
			delete(g.m, key)
		}
		if f.published {
			g.mu.Unlock()
			return
		}
		f.e, f.status = e, status
		done := f.done
		g.mu.Unlock()
		if done != nil {
			close(done)
		}
	})
}

// publish answers the waiters of f, and the requests that join it until
// it ends, with e, whose body is still arriving (body.fill), fetched with
// the origin's status: they need not wait for its end. The flight stays
// in the group until finish, so that requests that come meanwhile, which
// would not find e in the store yet, join it rather than go to the
// origin. It reports false, doing nothing, when the flight has ended.
func (g *flightGroup) publish(key string, f *flight, e *entry, status int) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.m[key] != f {
		return false
	}
	f.e, f.status, f.published = e, status, true
	if f.done != nil {
		close(f.done)
	}
	return true
}

// abandon ends f, a flight of g under key whose leader's client has gone,
// if nobody waits for it and its response has not begun: the fill is then
// for nobody, and the caller cancels it. Requests that come later start a
// flight of their own. While some wait, the last to leave ends it (left).
func (g *flightGroup) abandon(key string, f *flight) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f.answered || g.m[key] != f {
		return false
	}
	if f.waiters.Load() > 0 {
		f.leaderGone = true
		return false
	}
	delete(g.m, key)
	return true
}

// setCancel records how to end f's fill (see left).
func (g *flightGroup) setCancel(f *flight, cancel func()) {
	g.mu.Lock()
	f.cancel = cancel
	g.mu.Unlock()
}

// left is called by a request that stopped waiting for f, a flight of g
// under key: when it was the last, the leader's client has gone and the
// response has not begun, it ends the fill, as abandon would have.
func (g *flightGroup) left(key string, f *flight) {
	g.mu.Lock()
	var cancel func()
	if f.leaderGone && f.waiters.Load() == 0 && !f.answered && g.m[key] == f {
		delete(g.m, key)
		cancel = f.cancel
	}
	g.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// drop ends f, a flight of g under key answered with an entry no request
// is to be answered with any more (Handler.outdated), so that the
// requests that come next start a flight of their own rather than each
// ask the origin alone.
func (g *flightGroup) drop(key string, f *flight) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.m[key] == f {
		delete(g.m, key)
	}
}

// joined reports whether requests wait for f (a flight of g) now: not
// those that joined and left (their client gone, the wait bound passed,
// or released by an answer they could not use).
func (g *flightGroup) joined(f *flight) bool {
	return f.waiters.Load() > 0
}

// maxCoalesceWait bounds how long a request waits for another's response
// once that response has begun: past it, it goes to the origin itself, so
// that a fresh response that streams for minutes, or never ends, holds
// nobody but its own client. Before the response begins there is no
// bound: an origin slow to answer is the one coalescing protects (nginx's
// proxy_cache_lock_timeout, 5 s by default, counts from the start).
const maxCoalesceWait = 10 * time.Second

// wait blocks until the leader publishes, ctx ends or limit passes after
// answering is closed (at once if it is nil), and returns the published
// entry (nil: go to the origin) and the origin's status (read only once
// the leader has published: a waiter whose limit passed must not read
// what the leader may still be writing) with a reference to its body, which the
// caller releases: the leader keeps the body until its waiters have taken
// theirs (drain), so that a response the store refused, and freed, still
// answers them.
func (f *flight) wait(ctx context.Context, answering <-chan struct{}, limit time.Duration) (*entry, int, error) {
	defer f.stopWaiting() // counted by join
	if answering != nil {
		select {
		case <-f.done:
			return f.take(), f.status, nil
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		case <-answering:
		}
	}
	timer := time.NewTimer(limit)
	defer timer.Stop()
	select {
	case <-f.done:
		return f.take(), f.status, nil
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	case <-timer.C:
		return nil, 0, nil
	}
}

// take returns the published entry with a reference to its body; nil if
// there is none, or its body is gone.
func (f *flight) take() *entry {
	if e := f.e; e != nil && e.body.acquire() {
		return e
	}
	return nil
}

// stopWaiting uncounts a waiter; the last tells a draining leader.
func (f *flight) stopWaiting() {
	if f.waiters.Add(-1) == 0 && f.draining.Load() {
		f.drainOnce.Do(func() { close(f.drained) })
	}
}

// drain waits, at most limit, until the waiters of f, which has ended
// (finish), have taken what it answered them with.
func (f *flight) drain(limit time.Duration) {
	if f.waiters.Load() == 0 {
		return // finished: nobody joins any more
	}
	f.drained = make(chan struct{})
	f.draining.Store(true)
	if f.waiters.Load() == 0 {
		return
	}
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-f.drained:
	case <-t.C:
	}
}

// waiting returns how many requests wait on the flight for key.
func (g *flightGroup) waiting(key string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f, ok := g.m[key]; ok {
		return int(f.waiters.Load())
	}
	return 0
}

// uncacheableHints remember, for a while, the flight keys whose last
// response was not storable for a reason of its own (private, no-store,
// no freshness, Vary: *), so that their next requests do not coalesce: a
// request that joins a flight waits for the leader's response header
// before it learns it must go to the origin itself, which doubles its
// time to first byte, and for a busy URL that is never stored (an API
// answering without Cache-Control, a per-user page) that would be every
// concurrent request (Varnish's hit-for-miss); responses found unstorable
// only at their end (too large, trailers) hint too (hintUnstorable). A
// hint skips the wait, and sends a client's conditional miss as it came
// rather than fetch a whole response likely not stored: a response that
// turns out storable is stored, and storing anything under
// the key, or purging it, clears the hint. Hints are not consulted when a
// stale entry is revalidated: its URL was storable, and its refresh is
// what coalescing keeps from stampeding the origin.
//
// The table is the store's, but each handler sees only its own hints (by
// its generation): whether a response is storable depends on the
// handler's config (default_ttl, targeted fields), and the handlers of a
// config being replaced go on answering, and setting hints, until the
// new config takes over. Coalescing is per handler too.
//
// A slot per key hash holds the hash's top 16 bits, the generation (16
// bits) and the expiry in seconds since hintEpoch (32 bits, until 2156);
// a hint another key overwrites is lost (that key coalesces again).
type uncacheableHints struct {
	slots [hintSlots]atomic.Uint64
}

const (
	hintSlots = 1024
	// hintTTL is how long a key's requests go to the origin without
	// waiting for one another after an uncacheable response.
	hintTTL = 2 * time.Minute

	hintTagMask = 1<<64 - 1<<48
)

// hintEpoch is where hint expiries count from.
var hintEpoch = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC).Unix()

// hintGenerations numbers handlers for their hints (see
// uncacheableHints); the 16 bits a slot keeps wrap after 65536 handlers,
// long after the first of them has been unloaded (8 bits would not be: a
// config of 256 handlers would give each, at every reload, its
// predecessor's generation).
var hintGenerations atomic.Uint32

func nextHintGeneration() uint16 { return uint16(hintGenerations.Add(1)) }

// hintScope is whom an uncacheable response speaks for (see
// exchange.tellsUncacheable).
type hintScope uint8

const (
	hintNone      hintScope = iota
	hintLikeThese           // requests like its own (hintClass)
	hintKey                 // every request under its key
)

// Class hints are kept in the slot of the key's hash mixed with one of
// these (hintClass), so that each class of requests has its own: those
// with Authorization (API clients), those with a cookie but no
// Authorization (browsers), and those with neither. An API client's
// answer says nothing of a browser's.
var hintSalts = [...]uint64{0x6a09e667f3bcc909, 0xbb67ae8584caa73b, 0x3c6ef372fe94f82b}

// hintClass returns the hash under which a hint for the requests of r's
// class is kept, for the key hashing to h.
func hintClass(h uint64, r *http.Request) uint64 {
	switch {
	case len(r.Header["Authorization"]) > 0:
		return h ^ hintSalts[2]
	case len(r.Header["Cookie"]) > 0:
		return h ^ hintSalts[1]
	}
	return h ^ hintSalts[0]
}

// hasCredentials reports whether r carries a cookie or Authorization.
func hasCredentials(r *http.Request) bool {
	return len(r.Header["Cookie"]) > 0 || len(r.Header["Authorization"]) > 0
}

// hint remembers, for the handler of generation gen, that a response under
// the key hashing to h, to request r, was not storable at now, for the
// requests that scope names.
func (u *uncacheableHints) hint(h uint64, scope hintScope, r *http.Request, gen uint16, now time.Time) {
	switch scope {
	case hintKey:
		u.set(h, gen, now)
	case hintLikeThese:
		u.set(hintClass(h, r), gen, now)
	}
}

// skips reports whether r, under the key hashing to h, skips coalescing for
// the handler of generation gen: a hint of the key's, or of r's class.
func (u *uncacheableHints) skips(h uint64, r *http.Request, gen uint16, now func() time.Time) bool {
	return u.has(h, gen, now) || u.has(hintClass(h, r), gen, now)
}

// set remembers, for the handler of generation gen, that the key hashing
// to h had an uncacheable response at now.
func (u *uncacheableHints) set(h uint64, gen uint16, now time.Time) {
	exp := now.Add(hintTTL).Unix() - hintEpoch
	if exp <= 0 || exp > math.MaxUint32 {
		return // a clock this cache cannot count with: no hint
	}
	u.slots[h%hintSlots].Store(h&hintTagMask | uint64(gen)<<32 | uint64(exp))
}

// has reports whether the handler of generation gen found the key hashing
// to h uncacheable less than hintTTL before the time now returns (read
// only when the slot holds such a hint).
func (u *uncacheableHints) has(h uint64, gen uint16, now func() time.Time) bool {
	v := u.slots[h%hintSlots].Load()
	if v == 0 || v&hintTagMask != h&hintTagMask || uint16(v>>32) != gen {
		return false
	}
	return now().Unix()-hintEpoch < int64(v&math.MaxUint32)
}

// clear forgets every handler's hints for the key hashing to h, its
// classes' too.
func (u *uncacheableHints) clear(h uint64) {
	u.clearSlot(h)
	for _, salt := range hintSalts {
		u.clearSlot(h ^ salt)
	}
}

// clearSlot forgets the hint for h, if its slot holds one.
func (u *uncacheableHints) clearSlot(h uint64) {
	slot := &u.slots[h%hintSlots]
	if v := slot.Load(); v != 0 && v&hintTagMask == h&hintTagMask {
		slot.CompareAndSwap(v, 0)
	}
}

// clearAll forgets every hint.
func (u *uncacheableHints) clearAll() {
	for i := range u.slots {
		u.slots[i].Store(0)
	}
}
