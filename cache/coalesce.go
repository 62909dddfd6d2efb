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
	// waiters counts the requests waiting (for metrics and tests).
	waiters atomic.Int32
	// answered is set when the leader's response header arrives, and
	// answering (made by a waiter that joins before) closed then; both
	// under the group's lock. The wait bound counts from there.
	answered  bool
	answering chan struct{}
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
		if f.done == nil {
			f.done = make(chan struct{})
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
// again. Only the first call counts.
func (g *flightGroup) finish(key string, f *flight, e *entry, status int) {
	f.once.Do(func() {
		g.mu.Lock()
		if g.m[key] == f {
			delete(g.m, key)
		}
		f.e, f.status = e, status
		done := f.done
		g.mu.Unlock()
		if done != nil {
			close(done)
		}
	})
}

// joined reports whether any request joined f (a flight of g).
func (g *flightGroup) joined(f *flight) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return f.done != nil
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
// entry (nil: go to the origin).
func (f *flight) wait(ctx context.Context, answering <-chan struct{}, limit time.Duration) (*entry, error) {
	f.waiters.Add(1)
	defer f.waiters.Add(-1)
	if answering != nil {
		select {
		case <-f.done:
			return f.e, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-answering:
		}
	}
	timer := time.NewTimer(limit)
	defer timer.Stop()
	select {
	case <-f.done:
		return f.e, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-timer.C:
		return nil, nil
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
