package cache

import (
	"context"
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
	// failed: the origin failed the leader's revalidation (see fail);
	// written and read like e. (Beside leaderGone: in what was padding,
	// which keeps the exchange within its 1 KiB size class.)
	failed bool
	cancel func()
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
	// ended counts, by URL key hash (a slot of them), the flights that
	// ended (finish): a request that misses in the store and then finds
	// no flight to join checks the store again when a flight of its URL
	// ended in between (see endedMark).
	ended [endedSlots]atomic.Uint32
}

// endedSlots is how many counters ended spreads the URL key hashes over:
// a collision costs a request that leads a flight one store lookup more.
const endedSlots = 256

// endedMark returns the count of ended flights of the URLs whose key
// hashes like urlHash's. A request reads it before it looks in the store:
// when it has changed by the time the request finds no flight to join,
// a flight of its URL may have stored its response after the lookup and
// ended before the join, and the store is looked at again (without it, a
// second request reached the origin: a flakiness hunt saw 2 origin
// requests for 200 concurrent misses).
func (g *flightGroup) endedMark(urlHash uint64) uint16 {
	return uint16(g.ended[urlHash%endedSlots].Load()) // lookup to join is far shorter than 65,536 flights
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

// rekey moves f, a flight of g under from that has not been answered,
// to the key to, and reports whether it did: not when another flight has
// that key. The requests that joined f under from wait on as they were
// (their later left or drop under from find no flight there, and do
// nothing: an abandoned fill is ended by watchAbandoned instead).
func (g *flightGroup) rekey(from, to string, f *flight) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, taken := g.m[to]; taken || g.m[from] != f || f.answered {
		return false
	}
	delete(g.m, from)
	g.m[to] = f
	return true
}

// yield removes f, a flight of g under key that nobody waits for and
// whose response has not begun, and reports whether it did: its leader
// joins another flight instead.
func (g *flightGroup) yield(key string, f *flight) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.m[key] != f || f.answered || f.waiters.Load() > 0 {
		return false
	}
	delete(g.m, key)
	return true
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
// of f, a flight of the URL whose key hashes to urlHash, and ends the
// flight, so that later requests look in the store again. Only the first
// call counts; after publish, it only ends the flight.
func (g *flightGroup) finish(key string, urlHash uint64, f *flight, e *entry, status int) {
	g.end(key, urlHash, f, e, status, false)
}

// fail ends f as finish does with no entry, telling its waiters that the
// origin failed the leader's revalidation: no response came (status 0),
// or a server error (status). Waiters holding a stale response of their
// own answer with it where stale-if-error allows, or with the 504 a
// response that must be revalidated calls for, as the leader did, rather
// than each try the failing origin (a review: ten waiters sent ten
// requests to an origin that hung, each answered after twice its
// timeout).
func (g *flightGroup) fail(key string, urlHash uint64, f *flight, status int) {
	g.end(key, urlHash, f, nil, status, true)
}

func (g *flightGroup) end(key string, urlHash uint64, f *flight, e *entry, status int, failed bool) {
	f.once.Do(func() {
		g.mu.Lock()
		if g.m[key] == f {
			// Counted before the flight leaves: a request that then
			// finds none to join sees the count changed (endedMark).
			g.ended[urlHash%endedSlots].Add(1)
			delete(g.m, key)
		}
		if f.published {
			g.mu.Unlock()
			return
		}
		f.e, f.status, f.failed = e, status, failed
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
// entry (nil: go to the origin), whether the origin failed (see fail)
// and the origin's status (read only once
// the leader has published: a waiter whose limit passed must not read
// what the leader may still be writing) with a reference to its body, which the
// caller releases: the leader keeps the body until its waiters have taken
// theirs (drain), so that a response the store refused, and freed, still
// answers them.
func (f *flight) wait(ctx context.Context, answering <-chan struct{}, limit time.Duration) (e *entry, failed bool, status int, err error) {
	defer f.stopWaiting() // counted by join
	if answering != nil {
		select {
		case <-f.done:
			return f.take(), f.failed, f.status, nil
		case <-ctx.Done():
			return nil, false, 0, ctx.Err()
		case <-answering:
		}
	}
	timer := time.NewTimer(limit)
	defer timer.Stop()
	select {
	case <-f.done:
		return f.take(), f.failed, f.status, nil
	case <-ctx.Done():
		return nil, false, 0, ctx.Err()
	case <-timer.C:
		return nil, false, 0, nil
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
