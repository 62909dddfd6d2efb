package cache

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// This file gives each fill (a miss others may wait for) a context
// that outlives its client while others wait, and ends every fill when
// the config unloads or the server shuts down.

// fillSet gives the fills of a handler (misses others may wait for) their
// contexts, and keeps those in flight. A fill's context has the values of
// its client's request context and ends only once both the client has
// gone and the handler's config is unloaded (life ends): the fill
// outlives its own client for the clients waiting for it, until the
// config goes; and it outlives a config reload for its client, as a plain
// reverse_proxy request does (Caddy lets the requests of the old config
// finish, but ends its context at once). At the unload, each fill in
// flight is set to end with its client.
//
// A fill's context is a cancelCtx, so that the contexts the reverse proxy
// and the HTTP transport derive from it register with it rather than
// start a goroutine each to watch it. Keeping the fills in a set, rather
// than registering each with its client, costs 3 allocations per fill
// instead of 7.
type fillSet struct {
	watch    sync.Once // registers unload with the config's life, at the first fill
	mu       sync.Mutex
	inFlight map[*fill]struct{}
	unloaded bool
	// servers are the HTTP servers unload is registered with, each at
	// its first fill (an HTTP/3 request carries none: quic-go's server
	// is not an *http.Server).
	servers map[*http.Server]struct{}
}

// fill is the parent of a fill's context: the values of the client's
// request context, without its end.
type fill struct {
	client context.Context
	cancel context.CancelFunc
	// body is the fill others read as it arrives, once published (see
	// streamToWaiters): after the unload it outlives its client while
	// they read it (see clientGone).
	body atomic.Pointer[bodyFill]
	// clientOnly: the fill's answer is not recorded, so nobody but its
	// client reads it, and it ends with its client (exchange.unrecorded).
	clientOnly atomic.Bool
	// recorded counts the body bytes the origin has sent (recorder.Write),
	// for watchAbandoned.
	recorded atomic.Int64
}

// maxAbandonedFill bounds how long a fill goes on, once its client has
// gone, while nobody reads it and the recording budget it holds (an eighth
// of max_size) is refused to other responses: past it, it ends, unstored.
// Varnish and nginx finish such a fetch to store it as long as each read
// comes within 60 s, as this one does while the budget has room; a
// trickle (a stream that heartbeats, an origin that crawls) would
// otherwise keep others from being stored for hours.
const maxAbandonedFill = time.Minute

// watchAbandoned watches f, the fill x leads, whose client has gone (while
// others waited, or after the origin began a response to store; ctx is
// f's context, done when the fill ends). It checks every stall, from when
// the client left, and ends the fill at the first check that finds nobody
// reading it or waiting for it and either no byte arrived since the last
// check or, limit after the client left, the recording budget refused a
// response since then: a fill for nobody that stalls, or that trickles
// while holding what others need, no longer holds an origin connection
// and the budget, as through plain reverse_proxy, whose request ends with
// its client; one that comes steadily while there is room is stored.
func watchAbandoned(ctx context.Context, x *exchange, f *fill, a *arena, stall, limit time.Duration) {
	if stall <= 0 {
		stall = maxCoalesceWait // (a ticker panics at 0)
	}
	left := time.Now()
	last := f.recorded.Load()
	refused := a.refused()
	t := time.NewTicker(stall)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			n := f.recorded.Load()
			if x.lead.waiters.Load() == 0 && x.fill.readers.Load() == 0 &&
				(n == last || now.Sub(left) >= limit && a.refused() != refused) {
				f.cancel()
				return
			}
			last = n
		}
	}
}

// clientGone ends the fill, whose client has gone after the unload,
// unless requests read its body as it arrives: then the last of them
// ends it (bodyFill.orphan), as Caddy lets them, requests of the old
// config, finish.
func (f *fill) clientGone() {
	if b := f.body.Load(); b != nil && b.orphan(f.cancel) {
		return
	}
	f.cancel()
}

func (f *fill) Deadline() (time.Time, bool) { return time.Time{}, false }
func (f *fill) Done() <-chan struct{}       { return nil }
func (f *fill) Err() error                  { return nil }
func (f *fill) Value(key any) any           { return f.client.Value(key) }

// start returns the context of a fill for the request context client,
// under the config whose context is life; end ends it.
//
// The set unloads when life ends, and also when the HTTP server that
// serves client starts to shut down: when Caddy stops, it waits for its
// servers' handlers to return before it ends the config's context, and a
// fill whose client has gone would hold that up until its origin
// finished.
func (s *fillSet) start(client, life context.Context) (context.Context, *fill) {
	s.watch.Do(func() { context.AfterFunc(life, s.unload) })
	srv, _ := client.Value(http.ServerContextKey).(*http.Server)
	f := &fill{client: client}
	ctx, cancel := context.WithCancel(f)
	f.cancel = cancel
	s.mu.Lock()
	if _, ok := s.servers[srv]; srv != nil && !ok {
		if s.servers == nil {
			s.servers = make(map[*http.Server]struct{})
		}
		s.servers[srv] = struct{}{}
		srv.RegisterOnShutdown(s.unload)
	}
	if s.unloaded {
		s.mu.Unlock()
		context.AfterFunc(client, f.clientGone)
		return ctx, f
	}
	if s.inFlight == nil {
		s.inFlight = make(map[*fill]struct{})
	}
	s.inFlight[f] = struct{}{}
	s.mu.Unlock()
	return ctx, f
}

// end ends a fill that is over.
func (s *fillSet) end(f *fill) {
	s.mu.Lock()
	delete(s.inFlight, f)
	s.mu.Unlock()
	f.cancel()
}

// unload sets each fill in flight to end with its client (at once if the
// client has gone), or after it with the last request that reads it (see
// clientGone). It may be called more than once.
func (s *fillSet) unload() {
	s.mu.Lock()
	s.unloaded = true
	fills := s.inFlight
	s.inFlight = nil
	s.mu.Unlock()
	for f := range fills {
		context.AfterFunc(f.client, f.clientGone)
	}
}
