package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// blocking answers after release is closed, with the given fields.
func blocking(c *clock, release <-chan struct{}, body string, fields ...string) *origin {
	inner := static(c, 200, body, fields...)
	return &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		<-release
		return inner.fn(w, r)
	}}
}

// concurrent runs n GETs of target through h at once and returns their
// responses once they have all finished; before releasing the origin it
// waits until waiters of them wait on the leader.
func concurrent(t *testing.T, h *Handler, o *origin, release chan struct{}, n int, target string, waiters int, fields ...string) []*httptest.ResponseRecorder {
	t.Helper()
	key := keyOf(t, h, newRequest(http.MethodGet, target))
	return burst(t, h, o, release, n, target, "waiters to join", func() bool { return h.flights.waiting(key) == waiters }, fields...)
}

// burst runs n GETs of target through h at once, releases the origin once
// placed reports that they are where they should be (waiting on a
// leader, at the origin), and returns their responses once they have all
// finished.
func burst(t *testing.T, h *Handler, o *origin, release chan struct{}, n int, target, where string, placed func() bool, fields ...string) []*httptest.ResponseRecorder {
	t.Helper()
	out := make([]*httptest.ResponseRecorder, n)
	var wg sync.WaitGroup
	for i := range n {
		out[i] = httptest.NewRecorder()
		wg.Go(func() {
			if err := h.ServeHTTP(out[i], newRequest(http.MethodGet, target, fields...), o); err != nil {
				t.Error(err)
			}
		})
	}
	until(t, where, placed)
	close(release)
	wg.Wait()
	h.store.wait()
	return out
}

func TestCoalescedMisses(t *testing.T) {
	n := 200
	if testing.Short() {
		n = 50
	}
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	release := make(chan struct{})
	o := blocking(c, release, "shared body", "Cache-Control", "max-age=60")
	out := concurrent(t, h, o, release, n, "http://example.com/hot", n-1)
	if calls := o.calls.Load(); calls != 1 {
		t.Errorf("origin called %d times for %d concurrent misses, want 1", calls, n)
	}
	collapsed := 0
	for _, w := range out {
		if w.Code != 200 || w.Body.String() != "shared body" {
			t.Fatalf("answer %d %q", w.Code, w.Body.String())
		}
		if hasParam(w.Header().Get("Cache-Status"), "collapsed") {
			collapsed++
			wantStatus(t, w, []string{"fwd=uri-miss", "fwd-status=200", "ttl=60"})
		}
	}
	if collapsed != n-1 {
		t.Errorf("%d collapsed answers, want %d", collapsed, n-1)
	}
}

func TestCoalescedUncacheableGoesToOrigin(t *testing.T) {
	const n = 20
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	release := make(chan struct{})
	o := blocking(c, release, "mine", "Cache-Control", "private, max-age=60")
	out := concurrent(t, h, o, release, n, "http://example.com/private", n-1)
	if calls := o.calls.Load(); calls != n {
		t.Errorf("origin called %d times, want %d: a private answer is not shared", calls, n)
	}
	for _, w := range out {
		if w.Body.String() != "mine" || hasParam(w.Header().Get("Cache-Status"), "collapsed") {
			t.Errorf("answer %q, Cache-Status %q", w.Body.String(), w.Header().Get("Cache-Status"))
		}
	}
}

func TestCoalescedOtherVariantGoesToOrigin(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	release := make(chan struct{})
	var calls atomic.Int32
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		if calls.Add(1) == 1 {
			<-release
		}
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Vary", "Accept-Language")
		w.Header().Set("Date", c.date())
		_, _ = io.WriteString(w, "lang="+r.Header.Get("Accept-Language"))
		return nil
	}}
	leader := httptest.NewRecorder()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = h.ServeHTTP(leader, newRequest(http.MethodGet, "http://example.com/lang", "Accept-Language", "fr"), o)
	}()
	until(t, "the leader to reach the origin", func() bool { return calls.Load() == 1 })
	waiter := httptest.NewRecorder()
	waited := make(chan struct{})
	go func() {
		defer close(waited)
		_ = h.ServeHTTP(waiter, newRequest(http.MethodGet, "http://example.com/lang", "Accept-Language", "de"), o)
	}()
	until(t, "the waiter to join", func() bool { return h.flights.waiting("http://example.com/lang") == 1 })
	close(release)
	<-done
	<-waited
	if leader.Body.String() != "lang=fr" || waiter.Body.String() != "lang=de" {
		t.Errorf("leader %q, waiter %q", leader.Body.String(), waiter.Body.String())
	}
}

func TestCoalescedLeaderDisconnect(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	cont := make(chan struct{})
	var originCtxErr atomic.Value
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Date", c.date())
		_, _ = io.WriteString(w, "part one, ")
		<-cont
		originCtxErr.Store(errString(r.Context().Err()))
		_, err := io.WriteString(w, "part two")
		return err
	}}
	ctx, cancel := context.WithCancel(context.Background())
	lw := newWriter()
	lw.failFrom = len("part one, ")
	leaderDone := make(chan struct{})
	go func() {
		defer close(leaderDone)
		r := newRequest(http.MethodGet, "http://example.com/dc").WithContext(ctx)
		_ = h.ServeHTTP(lw, r, o)
	}()
	until(t, "the leader to reach the origin", func() bool { return o.calls.Load() == 1 })
	waiter := httptest.NewRecorder()
	waited := make(chan struct{})
	go func() {
		defer close(waited)
		_ = h.ServeHTTP(waiter, newRequest(http.MethodGet, "http://example.com/dc"), o)
	}()
	until(t, "the waiter to join", func() bool { return h.flights.waiting("http://example.com/dc") == 1 })
	cancel() // the leader's client goes away mid-body
	close(cont)
	<-leaderDone
	<-waited
	if got := originCtxErr.Load(); got != "" {
		t.Errorf("origin request was cancelled with its client: %v", got)
	}
	if waiter.Body.String() != "part one, part two" {
		t.Errorf("waiter got %q", waiter.Body.String())
	}
	wantStatus(t, waiter, []string{"collapsed"})
	if calls := o.calls.Load(); calls != 1 {
		t.Errorf("origin called %d times, want 1", calls)
	}
	h.store.wait()
	wantStatus(t, get(t, h, o, "http://example.com/dc"), []string{"hit"})
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestCoalesceOff(t *testing.T) {
	const n = 10
	c := newClock()
	off := false
	h := newTestHandler(t, Config{Coalesce: &off}, c)
	release := make(chan struct{})
	o := blocking(c, release, "x", "Cache-Control", "max-age=60")
	out := burst(t, h, o, release, n, "http://example.com/off", "every request to reach the origin", func() bool { return o.calls.Load() == n })
	for _, w := range out {
		if strings.Contains(w.Header().Get("Cache-Status"), "collapsed") {
			t.Error("collapsed with coalesce off")
		}
	}
}

// TestFlightWaitPastItsBound: a wait whose bound passes once the leader's
// response began returns no entry and no status: the caller must not read
// the flight, which its leader writes when it ends (-race catches such a
// read only now and then; this states the contract).
func TestFlightWaitPastItsBound(t *testing.T) {
	var g flightGroup
	f, _, _ := g.join("k", new(flight))
	_, _, answering := g.join("k", new(flight))
	g.answered(f)
	e, failed, status, err := f.wait(context.Background(), answering, time.Millisecond)
	if e != nil || failed || status != 0 || err != nil {
		t.Errorf("wait past its bound = %v, %v, %d, %v; want nil, false, 0, nil", e, failed, status, err)
	}
	g.finish("k", 1, f, &entry{entryData: entryData{key: "k"}}, 200)
}

func TestFlightGroup(t *testing.T) {
	var g flightGroup
	f, leader, _ := g.join("k", new(flight))
	if !leader {
		t.Fatal("first join does not lead")
	}
	f2, leader2, answering := g.join("k", new(flight))
	if leader2 || f2 != f || answering == nil {
		t.Fatal("second join leads, gets another flight or no answering channel")
	}
	g.answered(f)
	if _, _, late := g.join("k", new(flight)); late != nil {
		t.Error("a join after the answer began waits for it to begin")
	}
	e := &entry{entryData: entryData{key: "k"}}
	g.finish("k", 1, f, e, 200)
	g.finish("k", 1, f, nil, 0) // only the first finish counts
	if got, _, status, err := f.wait(context.Background(), answering, time.Minute); got != e || status != 200 || err != nil {
		t.Errorf("wait = %v, %d, %v", got, status, err)
	}
	if _, leader, _ := g.join("k", new(flight)); !leader {
		t.Error("a join after finish does not lead a new flight")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	g.join("other", new(flight))
	f3, _, answering3 := g.join("other", new(flight))
	if _, _, _, err := f3.wait(ctx, answering3, time.Minute); err == nil {
		t.Error("wait ignores its context")
	}
}

// TestCoalescedWaitNotBoundedBeforeTheAnswer: the wait bound counts from
// the leader's response header: an origin slower than the bound to answer
// still gets one request.
func TestCoalescedWaitNotBoundedBeforeTheAnswer(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	// The bound is long enough for the answer to arrive whole once begun,
	// even under the race detector (a bound of 1 ms was not, now and
	// then), and far shorter than the wait for the origin's header.
	h.coalesceWait = 200 * time.Millisecond
	release := make(chan struct{})
	o := blocking(c, release, "slow", "Cache-Control", "max-age=60")
	out := make(chan *httptest.ResponseRecorder, 2)
	for range 2 {
		go func() {
			w := httptest.NewRecorder()
			_ = h.ServeHTTP(w, newRequest(http.MethodGet, "http://example.com/slow"), o)
			out <- w
		}()
	}
	key := keyOf(t, h, newRequest(http.MethodGet, "http://example.com/slow"))
	until(t, "the second request to wait", func() bool { return h.flights.waiting(key) == 1 })
	time.Sleep(500 * time.Millisecond) // far past the bound: the waiter must still wait
	close(release)
	for range 2 {
		if w := untilValue(t, "an answer", out); w.Body.String() != "slow" {
			t.Errorf("body %q", w.Body.String())
		}
	}
	if n := o.calls.Load(); n != 1 {
		t.Errorf("origin called %d times, want 1: the waiter gave up before the origin answered", n)
	}
}

// TestCoalescedFillEndsWithClientAndConfig checks that a fill, through
// the contexts derived from it (as the HTTP transport derives one per
// request), outlives its client alone and a config unload alone, and ends
// once both are gone, in either order.
func TestCoalescedFillEndsWithClientAndConfig(t *testing.T) {
	for _, unloadFirst := range []bool{false, true} {
		name := "client leaves, then config unloads"
		if unloadFirst {
			name = "config unloads, then client leaves"
		}
		t.Run(name, func(t *testing.T) {
			c := newClock()
			h, unload := newUnloadableHandler(t, Config{}, c)
			derivedErr := make(chan error, 1)
			o := &origin{}
			o.fn = func(w http.ResponseWriter, r *http.Request) error {
				if o.calls.Load() > 1 {
					return nil // the waiter's own request, once the fill has ended
				}
				derived, cancel := context.WithCancelCause(r.Context())
				defer cancel(nil)
				<-derived.Done()
				derivedErr <- r.Context().Err()
				return derived.Err()
			}
			client, leave := context.WithCancel(context.Background())
			defer leave()
			done := make(chan struct{})
			go func() {
				defer close(done)
				_ = h.ServeHTTP(newWriter(), newRequest(http.MethodGet, "http://example.com/unload").WithContext(client), o)
			}()
			until(t, "the fill to reach the origin", func() bool { return o.calls.Load() == 1 })
			// Somebody waits for it (a fill nobody waits for ends with
			// its client: TestAbandonedMissEndsWithItsClient).
			waited := make(chan struct{})
			go func() {
				defer close(waited)
				_ = h.ServeHTTP(newWriter(), newRequest(http.MethodGet, "http://example.com/unload"), o)
			}()
			until(t, "a request to wait for the fill", func() bool { return h.flights.waiting("http://example.com/unload") == 1 })
			first, second := leave, unload
			if unloadFirst {
				first, second = unload, leave
			}
			first() // one of the two does not end the fill...
			select {
			case err := <-derivedErr:
				t.Fatalf("the fill ended with the first: %v", err)
			case <-time.After(50 * time.Millisecond):
			}
			second() // ...both do
			err := untilValue(t, "the fill to end", derivedErr)
			if !errors.Is(err, context.Canceled) {
				t.Errorf("fill context error %v, want context.Canceled", err)
			}
			<-done
			<-waited
		})
	}
}

// TestAbandonedMissEndsWithItsClient: a miss whose client leaves before
// the origin answers, while nobody waits for it, ends its origin request,
// as through plain reverse_proxy: clients that leave (on purpose, or after
// a timeout of their own, with unique URLs of a slow endpoint) left an
// origin request behind each. Once the origin has answered with a
// response to store, the fill goes on without its client, and is stored.
func TestAbandonedMissEndsWithItsClient(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	ended := make(chan error, 1)
	answered, leave := make(chan struct{}), make(chan struct{})
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		if r.URL.Path == "/hangs" {
			<-r.Context().Done()
			ended <- r.Context().Err()
			return r.Context().Err()
		}
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Content-Length", "10")
		w.Header().Set("Date", c.date())
		_, _ = io.WriteString(w, "first")
		close(answered)
		<-leave
		if err := r.Context().Err(); err != nil {
			return err // (as the transport would stop reading)
		}
		_, err := io.WriteString(w, "-rest")
		return err
	}}
	client, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = h.ServeHTTP(newWriter(), newRequest(http.MethodGet, "http://example.com/hangs").WithContext(client), o)
	}()
	until(t, "the miss to reach the origin", func() bool { return o.calls.Load() == 1 })
	cancel()
	if err := untilValue(t, "the origin request to end with its client", ended); !errors.Is(err, context.Canceled) {
		t.Errorf("origin request ended with %v", err)
	}
	<-done

	client, cancel = context.WithCancel(context.Background())
	defer cancel()
	done = make(chan struct{})
	go func() {
		defer close(done)
		_ = h.ServeHTTP(newWriter(), newRequest(http.MethodGet, "http://example.com/answers").WithContext(client), o)
	}()
	<-answered
	cancel()
	// Not a condition to wait for: time for a wrong cancellation (it runs
	// on a goroutine of its own) to reach the origin's context, so that
	// the check above would see it. Passing does not depend on it.
	time.Sleep(20 * time.Millisecond)
	close(leave)
	<-done
	h.store.wait()
	w := get(t, h, o, "http://example.com/answers")
	wantStatus(t, w, []string{"hit"})
	if w.Body.String() != "first-rest" {
		t.Errorf("stored body %q", w.Body.String())
	}
}

// TestFillContext checks the context of a fill: it keeps the request's
// values but not its cancellation, ends when both its client and its
// config are gone, and contexts derived from it through WithValue (as the
// reverse proxy and the transport derive them for every request) register
// with its cancellation instead of starting a goroutine each to watch it.
// A fill that is over leaves the set; one started after the unload ends
// with its client.
func TestFillContext(t *testing.T) {
	type key struct{}
	client, leave := context.WithCancel(context.WithValue(context.Background(), key{}, "request value"))
	life, unload := context.WithCancel(context.Background())
	defer unload()
	fills := new(fillSet)
	ctx, f := fills.start(client, life)
	defer fills.end(f)

	if v := ctx.Value(key{}); v != "request value" {
		t.Errorf("Value = %v, want the request's value", v)
	}
	leave()
	if ctx.Err() != nil {
		t.Fatal("the fill ended with its client")
	}

	const n = 200
	before := runtime.NumGoroutine()
	derived := make([]context.Context, n)
	for i := range derived {
		ctx, cancel := context.WithCancelCause(context.WithValue(ctx, derivedKey(i), i))
		defer cancel(nil)
		derived[i] = ctx
	}
	if grew := runtime.NumGoroutine() - before; grew >= n/2 {
		t.Errorf("deriving %d contexts started %d goroutines, want none", n, grew)
	}
	unload()
	for i, ctx := range derived {
		untilValue(t, "a derived context to end with the fill", ctx.Done())
		if !errors.Is(ctx.Err(), context.Canceled) {
			t.Fatalf("derived context %d: Err = %v after the client left and the config was unloaded, want context.Canceled", i, ctx.Err())
		}
	}

	// A fill that is over ends, and leaves the set.
	client2, leave2 := context.WithCancel(context.Background())
	defer leave2()
	fills2 := new(fillSet)
	ctx2, f2 := fills2.start(client2, context.Background())
	fills2.end(f2)
	if ctx2.Err() == nil || len(fills2.inFlight) != 0 {
		t.Errorf("after the fill: context error %v, %d fills in flight", ctx2.Err(), len(fills2.inFlight))
	}
	// A fill started after the unload ends with its client.
	client3, leave3 := context.WithCancel(context.Background())
	ctx3, f3 := fills.start(client3, life)
	defer fills.end(f3)
	leave3()
	untilValue(t, "a fill started after the unload to end with its client", ctx3.Done())
}

// TestCoalescedRefreshNotShared: when the 304 answering a coalesced
// revalidation makes the response unfit for sharing (a Set-Cookie, or
// private), the waiters are not served the leader's refreshed response;
// they ask the origin themselves (RFC 9111 §4.3.4, §3; the rulebook's
// coalescing rule).
func TestCoalescedRefreshNotShared(t *testing.T) {
	for _, field := range [][2]string{
		{"Set-Cookie", "sid=%d"},
		{"Cache-Control", "private, max-age=60, x-call=%d"},
	} {
		t.Run(field[0], func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{}, c)
			get(t, h, validating(c, `"v1"`, "payload", "Cache-Control", "max-age=60"), "http://example.com/coal304")
			c.Advance(2 * time.Minute)
			release := make(chan struct{})
			var seq atomic.Int32
			o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
				<-release
				w.Header().Set("Date", c.date())
				w.Header().Set("Etag", `"v1"`)
				w.Header().Set("Cache-Control", "max-age=60")
				w.Header().Set(field[0], fmt.Sprintf(field[1], seq.Add(1)))
				w.WriteHeader(http.StatusNotModified)
				return nil
			}}
			const n = 5
			out := concurrent(t, h, o, release, n, "http://example.com/coal304", n-1)
			if calls := o.calls.Load(); calls != n {
				t.Errorf("origin called %d times, want %d (each client on its own)", calls, n)
			}
			seen := map[string]bool{}
			for i, w := range out {
				if w.Code != 200 || w.Body.String() != "payload" {
					t.Errorf("client %d: %d %q", i, w.Code, w.Body.String())
				}
				wantStatus(t, w, []string{"fwd=stale", "fwd-status=304"}, "collapsed")
				v := w.Header().Get(field[0])
				if seen[v] {
					t.Errorf("client %d got %s %q, another client's", i, field[0], v)
				}
				seen[v] = true
			}
		})
	}
}

// TestCoalescedFailedRevalidation: waiters of a revalidation the origin
// fails (no response, or a server error) answer with their stale response
// where stale-if-error allows, and with the 504 must-revalidate calls for
// when no response came, as the leader does, rather than each try the
// failing origin (a review: ten waiters sent ten requests to an origin
// that hung, each answered after twice reverse_proxy's timeout). Where
// neither applies they still go to the origin themselves.
func TestCoalescedFailedRevalidation(t *testing.T) {
	boom := errors.New("dial tcp: connection refused")
	const n = 5 // a leader and its waiters
	for _, tc := range []struct {
		name   string
		cc     string
		status int // the origin's answer to the revalidation; 0: no response
		calls  int32
		code   int      // the waiters' status
		parts  []string // in the waiters' Cache-Status
		result string   // every client's requests_total result
	}{
		{"no response, stale-if-error", "max-age=60, stale-if-error=600", 0, 1, 200, []string{"fwd=stale", "collapsed", "detail=stale-if-error"}, resultStale},
		{"503, stale-if-error", "max-age=60, stale-if-error=600", 503, 1, 200, []string{"fwd=stale", "fwd-status=503", "collapsed", "detail=stale-if-error"}, resultStale},
		{"no response, must-revalidate", "max-age=60, must-revalidate", 0, 1, 504, []string{"fwd=stale", "collapsed", "detail=must-revalidate"}, resultError},
		{"503, must-revalidate", "max-age=60, must-revalidate", 503, n, 503, []string{"fwd=stale", "fwd-status=503"}, resultRevalidate},
		{"no response, no stale allowed", "max-age=60", 0, n, 0, nil, resultRevalidate},
		{"503, no stale allowed", "max-age=60", 503, n, 503, []string{"fwd=stale", "fwd-status=503"}, resultRevalidate},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{}, c)
			const url = "http://example.com/failing"
			get(t, h, validating(c, `"v1"`, "payload", "Cache-Control", tc.cc), url)
			c.Advance(2 * time.Minute)
			release := make(chan struct{})
			o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
				<-release
				if tc.status == 0 {
					return boom
				}
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, "origin error")
				return nil
			}}
			results := map[string]prometheus.Counter{resultStale: h.m.stale, resultError: h.m.errors, resultRevalidate: h.m.revalidate, resultCollapsed: h.m.collapsed}
			before := map[string]float64{}
			for r, m := range results {
				before[r] = counterValue(m)
			}
			out := make([]*httptest.ResponseRecorder, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				out[i] = httptest.NewRecorder()
				wg.Go(func() { errs[i] = h.ServeHTTP(out[i], newRequest(http.MethodGet, url), o) })
			}
			key := keyOf(t, h, newRequest(http.MethodGet, url))
			until(t, "waiters to join", func() bool { return h.flights.waiting(key) == n-1 })
			close(release)
			wg.Wait()
			if calls := o.calls.Load(); calls != tc.calls {
				t.Errorf("origin called %d times for %d clients, want %d", calls, n, tc.calls)
			}
			for r, m := range results {
				want := 0.0
				if r == tc.result {
					want = n
				}
				if got := counterValue(m) - before[r]; got != want {
					t.Errorf("requests_total{result=%q} counted %v of the %d clients, want %v", r, got, n, want)
				}
			}
			waiters := 0
			for i, w := range out {
				if tc.calls == 1 && !hasParam(w.Header().Get("Cache-Status"), "collapsed") {
					continue // the leader
				}
				waiters++
				code := w.Code
				var he caddyhttp.HandlerError
				switch {
				case errors.As(errs[i], &he):
					code = he.StatusCode
				case errors.Is(errs[i], boom):
					code = 0
				case errs[i] != nil:
					t.Fatalf("client %d: %v", i, errs[i])
				}
				if code != tc.code {
					t.Errorf("client %d: status %d (%v), want %d", i, code, errs[i], tc.code)
				}
				if code == 200 && w.Body.String() != "payload" {
					t.Errorf("client %d: %q, want the stale response", i, w.Body.String())
				}
				wantStatus(t, w, tc.parts)
			}
			if tc.calls == 1 && waiters != n-1 {
				t.Errorf("%d clients answered as waiters, want %d", waiters, n-1)
			}
		})
	}
}

// TestCoalescedUnstoredServerErrorTellsWaiters: a revalidation answered
// with a server error that is not stored (not storable; storable but
// stale on arrival, max-age=0 with a validator; or grown past
// max_item_size without Content-Length) answers no waiter, and tells them
// the origin failed: a waiter whose own request allows stale-if-error
// (where the leader's does not) answers from its stale response, with no
// second origin request (reviews: the last two asked again).
func TestCoalescedUnstoredServerErrorTellsWaiters(t *testing.T) {
	for _, tc := range []struct {
		name   string
		fields []string
		size   int
	}{
		{"not storable", []string{"Cache-Control", "no-store"}, 10},
		{"stale on arrival", []string{"Cache-Control", "max-age=0", "Etag", `"e1"`}, 10},
		{"past max_item_size", []string{"Cache-Control", "max-age=60"}, 8 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{MaxItemSize: 1 << 10}, c)
			const url = "http://example.com/unstored-error"
			get(t, h, validating(c, `"v1"`, "payload", "Cache-Control", "max-age=60"), url)
			c.Advance(2 * time.Minute)
			release := make(chan struct{})
			o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
				<-release
				for i := 0; i+1 < len(tc.fields); i += 2 {
					w.Header().Set(tc.fields[i], tc.fields[i+1])
				}
				w.Header().Set("Date", c.date())
				w.WriteHeader(http.StatusServiceUnavailable)
				chunk := strings.Repeat("x", 512)
				for n := 0; n < tc.size; n += len(chunk) {
					_, _ = io.WriteString(w, chunk[:min(len(chunk), tc.size-n)])
				}
				return nil
			}}
			leader := httptest.NewRecorder()
			var wg sync.WaitGroup
			wg.Go(func() { _ = h.ServeHTTP(leader, newRequest(http.MethodGet, url), o) })
			until(t, "the leader to reach the origin", func() bool { return o.calls.Load() == 1 })
			waiter := httptest.NewRecorder()
			wg.Go(func() {
				_ = h.ServeHTTP(waiter, newRequest(http.MethodGet, url, "Cache-Control", "stale-if-error=600"), o)
			})
			until(t, "the waiter to join", func() bool { return h.flights.waiting(keyOf(t, h, newRequest(http.MethodGet, url))) == 1 })
			close(release)
			wg.Wait()
			if leader.Code != http.StatusServiceUnavailable {
				t.Errorf("leader: %d, want the origin's 503", leader.Code)
			}
			if waiter.Code != 200 || waiter.Body.String() != "payload" || o.calls.Load() != 1 {
				t.Errorf("waiter: %d %q after %d origin calls; want the stale response from the leader's one", waiter.Code, waiter.Body.String(), o.calls.Load())
			}
			wantStatus(t, waiter, []string{"fwd=stale", "fwd-status=503", "collapsed", "detail=stale-if-error"})
		})
	}
}

// TestCoalescedResendAfterAnOutdatingRevalidation: a revalidation whose
// 304 shows the stored response outdated is sent again as a miss
// (askAgain, which drops the entry); when that send fails, its waiters,
// whose stored response is outdated, ask the origin themselves rather
// than answer must-revalidate's 504 for it (a review), whether the send
// got no response or a 503.
func TestCoalescedResendAfterAnOutdatingRevalidation(t *testing.T) {
	boom := errors.New("dial tcp: connection refused")
	for _, tc := range []struct {
		name   string
		status int // the send again's answer; 0: none
	}{
		{"503", 503},
		{"no response", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{}, c)
			const url = "http://example.com/outdated"
			get(t, h, validating(c, `"v1"`, "payload", "Cache-Control", "max-age=60, must-revalidate"), url)
			c.Advance(2 * time.Minute)
			release := make(chan struct{})
			o := &origin{}
			o.fn = func(w http.ResponseWriter, r *http.Request) error {
				w.Header().Set("Date", c.date())
				switch o.calls.Load() {
				case 1: // the leader's revalidation: another version
					<-release
					w.Header().Set("Etag", `"other"`)
					w.WriteHeader(http.StatusNotModified)
					return nil
				case 2: // its send again
					if tc.status == 0 {
						return boom
					}
					w.WriteHeader(tc.status)
					_, _ = io.WriteString(w, "origin error")
					return nil
				}
				w.Header().Set("Cache-Control", "max-age=60")
				_, _ = io.WriteString(w, "new payload")
				return nil
			}
			var wg sync.WaitGroup
			var werr error
			wg.Go(func() { _ = h.ServeHTTP(httptest.NewRecorder(), newRequest(http.MethodGet, url), o) })
			until(t, "the leader to reach the origin", func() bool { return o.calls.Load() == 1 })
			waiter := httptest.NewRecorder()
			wg.Go(func() { werr = h.ServeHTTP(waiter, newRequest(http.MethodGet, url), o) })
			until(t, "the waiter to join", func() bool { return h.flights.waiting(keyOf(t, h, newRequest(http.MethodGet, url))) == 1 })
			close(release)
			wg.Wait()
			if werr != nil || waiter.Code != 200 || waiter.Body.String() != "new payload" {
				t.Errorf("waiter: %d %q, error %v, Cache-Status %q; want the origin's new response", waiter.Code, waiter.Body.String(), werr, waiter.Header().Get("Cache-Status"))
			}
		})
	}
}

// TestCoalescedRefreshShared: waiters of a revalidation answered with a
// plain 304 are served the refreshed entry, saying so.
func TestCoalescedRefreshShared(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	get(t, h, validating(c, `"v1"`, "payload", "Cache-Control", "max-age=60"), "http://example.com/coal304ok")
	c.Advance(2 * time.Minute)
	release := make(chan struct{})
	inner := validating(c, `"v1"`, "payload", "Cache-Control", "max-age=60")
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		<-release
		return inner.fn(w, r)
	}}
	out := concurrent(t, h, o, release, 5, "http://example.com/coal304ok", 4)
	if calls := o.calls.Load(); calls != 1 {
		t.Errorf("origin called %d times, want 1", calls)
	}
	collapsed := 0
	for _, w := range out {
		if w.Code != 200 || w.Body.String() != "payload" {
			t.Errorf("%d %q", w.Code, w.Body.String())
		}
		if hasParam(w.Header().Get("Cache-Status"), "collapsed") {
			collapsed++
			wantStatus(t, w, []string{"fwd=stale", "fwd-status=304", "ttl=60"})
		}
	}
	if collapsed != 4 {
		t.Errorf("%d collapsed answers, want 4", collapsed)
	}
}

// TestCoalescedStaleOnArrivalReleasesWaiters: waiters of a response that is
// stale on arrival (no-cache: it could answer none of them) go to the
// origin at its header, not at its end, which for a live stream such as
// server-sent events never comes. So do those of an event stream with a
// lifetime (its own or default_ttl's), which is never stored: a waiter
// would get its events only at its end, a hit would replay old ones; and
// those of any response marked Incremental: ?1 (RFC 10036, which Caddy's
// reverse_proxy never buffers), a live stream as well (a review's NDJSON
// tail: a second client got nothing until it ended, then later ones a
// replay). And those of a long download fresh only by Last-Modified under
// heuristic_max off, stale on arrival under that config (a review: held
// for the 10 s limit).
func TestCoalescedStaleOnArrivalReleasesWaiters(t *testing.T) {
	for _, tc := range []struct{ cc, stream string }{
		{"no-cache", "sse"}, {"max-age=60", "sse"}, {"", "sse"},
		{"max-age=60", "incremental"}, {"", "incremental"},
		{"", "heuristic off"},
	} {
		cc := tc.cc
		t.Run(tc.stream+" Cache-Control "+cc, func(t *testing.T) {
			c := newClock()
			cfg := Config{DefaultTTL: caddy.Duration(10 * time.Second)}
			if tc.stream == "heuristic off" {
				cfg.HeuristicMax = -1
			}
			h := newTestHandler(t, cfg, c)
			release, streaming, stop := make(chan struct{}), make(chan struct{}), make(chan struct{})
			o := &origin{}
			o.fn = func(w http.ResponseWriter, r *http.Request) error {
				switch tc.stream {
				case "sse":
					w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
				case "incremental":
					w.Header().Set("Content-Type", "application/x-ndjson")
					w.Header().Set("Incremental", "?1")
				default:
					w.Header().Set("Content-Type", "application/octet-stream")
					w.Header().Set("Last-Modified", c.Now().Add(-48*time.Hour).UTC().Format(http.TimeFormat))
				}
				if cc != "" {
					w.Header().Set("Cache-Control", cc)
				}
				if o.calls.Load() > 1 {
					_, _ = io.WriteString(w, "data: own stream\n\n")
					return nil
				}
				<-release
				_, _ = io.WriteString(w, "data: tick\n\n")
				close(streaming)
				<-stop // the stream goes on until the test ends
				return nil
			}
			leader := make(chan struct{})
			go func() {
				defer close(leader)
				_ = h.ServeHTTP(newWriter(), newRequest(http.MethodGet, "http://example.com/events"), o)
			}()
			key := keyOf(t, h, newRequest(http.MethodGet, "http://example.com/events"))
			until(t, "the leader to reach the origin", func() bool { return o.calls.Load() == 1 })
			waiter := make(chan *httptest.ResponseRecorder, 1)
			go func() {
				w := httptest.NewRecorder()
				_ = h.ServeHTTP(w, newRequest(http.MethodGet, "http://example.com/events"), o)
				waiter <- w
			}()
			until(t, "the second client to wait", func() bool { return h.flights.waiting(key) == 1 })
			close(release)
			<-streaming
			// The stream goes on: the waiter must be answered before it ends.
			w := untilValue(t, "the waiter to be answered while the leader streams", waiter)
			if w.Body.String() != "data: own stream\n\n" {
				t.Errorf("waiter got %q, want its own answer from the origin", w.Body.String())
			}
			close(stop)
			<-leader
			h.store.wait()
			if w := get(t, h, o, "http://example.com/events"); hasParam(w.Header().Get("Cache-Status"), "hit") {
				t.Errorf("an event stream was stored: Cache-Status %q", w.Header().Get("Cache-Status"))
			}
		})
	}
}

// TestCoalescedWaitIsBounded: a waiter behind a fresh response that keeps
// streaming goes to the origin itself once the wait limit passes.
func TestCoalescedWaitIsBounded(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	h.coalesceWait = 20 * time.Millisecond
	streaming, stop := make(chan struct{}), make(chan struct{})
	o := &origin{}
	o.fn = func(w http.ResponseWriter, r *http.Request) error {
		if o.calls.Load() > 1 {
			_, _ = io.WriteString(w, "own answer")
			return nil
		}
		w.Header().Set("Cache-Control", "max-age=60")
		_, _ = io.WriteString(w, "part of a long download")
		close(streaming)
		<-stop
		return nil
	}
	leader := make(chan struct{})
	go func() {
		defer close(leader)
		_ = h.ServeHTTP(newWriter(), newRequest(http.MethodGet, "http://example.com/long"), o)
	}()
	defer func() { close(stop); <-leader }()
	<-streaming
	waiter := make(chan *httptest.ResponseRecorder, 1)
	go func() {
		w := httptest.NewRecorder()
		_ = h.ServeHTTP(w, newRequest(http.MethodGet, "http://example.com/long"), o)
		waiter <- w
	}()
	if w := untilValue(t, "the waiter to give up waiting", waiter); w.Body.String() != "own answer" {
		t.Errorf("waiter got %q, want its own answer from the origin", w.Body.String())
	}
}

// TestOrphanedFillDoesNotHoldUpShutdown: a fill whose client has gone
// (kept for the clients that might wait for it) ends when its HTTP server
// starts to shut down. Caddy's stop waits for the handlers to return
// before it ends the config's context, and such a fill on a slow origin
// used to keep the process up until the origin finished.
//
// Also when the handler's first fill came over HTTP/3, whose requests
// carry no *http.Server (quic-go's server has its own): the hook was
// registered with the first fill's server only.
func TestOrphanedFillDoesNotHoldUpShutdown(t *testing.T) {
	t.Run("first fill", func(t *testing.T) { orphanedFillDoesNotHoldUpShutdown(t, false) })
	t.Run("after an HTTP/3 fill", func(t *testing.T) { orphanedFillDoesNotHoldUpShutdown(t, true) })
}

func orphanedFillDoesNotHoldUpShutdown(t *testing.T, afterHTTP3 bool) {
	h, unload := newUnloadableHandler(t, Config{}, newClock())
	if afterHTTP3 {
		// A request as http3 hands it over: no http.ServerContextKey.
		get(t, h, static(newClock(), 200, "x", "Cache-Control", "max-age=60"), "https://example.com/first")
	}
	reached := make(chan struct{})
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		close(reached)
		<-r.Context().Done() // an origin that answers only when the fill ends
		return r.Context().Err()
	}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = h.ServeHTTP(w, caddyhttp.PrepareRequest(r, caddy.NewReplacer(), nil, nil), o)
	}))
	defer srv.Close()
	defer unload() // before Close, which waits for the handler, if the test fails
	client, leave := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(client, http.MethodGet, srv.URL+"/orphan", nil)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		if res, err := srv.Client().Do(req); err == nil {
			res.Body.Close()
		}
	}()
	untilValue(t, "the fill to reach the origin", reached)
	leave()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Config.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v: the orphaned fill held it up", err)
	}
}

// derivedKey keys the values of contexts derived in tests.
type derivedKey int

// TestWaitersOfAnotherVariantCoalesce: misses that waited under the URL's
// key for a response that turned out to vary, and that do not match it
// (another Accept-Encoding), wait for one fill of their own variant
// rather than each going to the origin: one origin request per variant.
func TestWaitersOfAnotherVariantCoalesce(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	gate := make(chan struct{})
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		if r.Header.Get("X-Hold") != "" {
			<-gate
		}
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Vary", "Accept-Encoding")
		_, err := io.WriteString(w, "body for "+r.Header.Get("Accept-Encoding"))
		return err
	}}
	const url = "http://example.com/styles.css"
	type answer struct {
		enc  string
		body string
		cs   string
	}
	answers := make(chan answer, 8)
	send := func(enc string, fields ...string) {
		go func() {
			w := httptest.NewRecorder()
			_ = h.ServeHTTP(w, newRequest(http.MethodGet, url, append([]string{"Accept-Encoding", enc}, fields...)...), o)
			answers <- answer{enc, w.Body.String(), w.Header().Get("Cache-Status")}
		}()
	}
	send("gzip", "X-Hold", "1")
	until(t, "the leader to reach the origin", func() bool { return o.calls.Load() == 1 })
	for _, enc := range []string{"br", "br", "br", "gzip", "gzip"} {
		send(enc)
	}
	key := keyOf(t, h, newRequest(http.MethodGet, url))
	until(t, "five requests to wait for the leader", func() bool { return h.flights.waiting(key) == 5 })
	close(gate)
	collapsed := 0
	for range 6 {
		a := untilValue(t, "an answer", answers)
		if a.body != "body for "+a.enc {
			t.Errorf("%s: body %q", a.enc, a.body)
		}
		if hasParam(a.cs, "collapsed") {
			collapsed++
		}
	}
	if collapsed != 4 {
		t.Errorf("%d of 6 answers collapsed; want all but the two that reached the origin", collapsed)
	}
	if got := o.calls.Load(); got != 2 {
		t.Errorf("origin saw %d requests for 6 concurrent misses of 2 variants; want 2", got)
	}
}

// TestVaryRecordKeepsTheKnownGeneration: a fill whose URL's record the
// store does not show (not applied yet, refused, or its queued slot taken)
// recreates it with the generation its request was keyed by, when the
// Vary fields agree, so that the variants keyed by it stay reachable; a
// new generation otherwise.
func TestVaryRecordKeepsTheKnownGeneration(t *testing.T) {
	h := newTestHandler(t, Config{}, newClock())
	const url = "http://example.com/v"
	known := &entry{entryData: entryData{key: url, record: true, vary: []string{"Accept-Encoding"}, gen: 12345}}
	if r, _ := h.varyRecord(url, keyHash([]byte(url)), []string{"Accept-Encoding"}, known); r.gen != known.gen {
		t.Errorf("same fields: generation %d, want the known %d", r.gen, known.gen)
	}
	h.store.wait()
	if r, _ := h.varyRecord(url+"2", keyHash([]byte(url+"2")), []string{"Accept-Language"}, known); r.gen == known.gen {
		t.Error("other fields: the known generation was reused")
	}
	if r, _ := h.varyRecord(url+"3", keyHash([]byte(url+"3")), []string{"Accept-Encoding"}, nil); r.gen == known.gen || r.gen == 0 {
		t.Errorf("no known record: generation %d", r.gen)
	}
}

// TestUnstoredMissEndsWithItsClient: once a miss's answer is known not to
// be recorded (not storable, an event stream, longer than max_item_size at
// its header or past it mid-body), nobody can read it but its client, and
// its origin request ends when that client leaves, as through plain
// reverse_proxy, rather than at the origin's next write or its end: a
// server-sent event stream without heartbeats kept an origin connection
// open per departed subscriber. The same when the client left before the
// answer came (others waiting then) and the answer is not recorded.
func TestUnstoredMissEndsWithItsClient(t *testing.T) {
	for _, tc := range []struct {
		name      string
		fields    []string
		body      string // sent at once; the origin then waits for the client to leave
		leaveLate bool   // the client leaves before the header, a second request waiting
	}{
		{name: "private", fields: []string{"Cache-Control", "private, max-age=60"}},
		{name: "no lifetime", fields: []string{"Content-Type", "text/plain"}},
		{name: "event stream", fields: []string{"Cache-Control", "max-age=60", "Content-Type", "text/event-stream"}},
		{name: "Incremental stream", fields: []string{"Cache-Control", "max-age=60", "Content-Type", "application/x-ndjson", "Incremental", "?1"}},
		{name: "declared past max_item_size", fields: []string{"Cache-Control", "max-age=60", "Content-Length", "100000"}},
		{name: "past max_item_size mid-body", fields: []string{"Cache-Control", "max-age=60"}, body: strings.Repeat("x", 1500)},
		{name: "private after the client left", fields: []string{"Cache-Control", "private, max-age=60"}, leaveLate: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{MaxItemSize: 1000}, c)
			ended := make(chan error, 2)
			answer, answered := make(chan struct{}), make(chan struct{})
			var once sync.Once
			o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
				if tc.leaveLate {
					<-answer
				}
				for i := 0; i+1 < len(tc.fields); i += 2 {
					w.Header().Set(tc.fields[i], tc.fields[i+1])
				}
				w.Header().Set("Date", c.date())
				w.WriteHeader(http.StatusOK)
				_, _ = io.WriteString(w, "data: x\n\n"+tc.body)
				http.NewResponseController(w).Flush()
				once.Do(func() { close(answered) })
				<-r.Context().Done()
				ended <- r.Context().Err()
				return r.Context().Err()
			}}
			const url = "http://example.com/stream"
			client, leave := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				defer close(done)
				_ = h.ServeHTTP(newWriter(), newRequest(http.MethodGet, url).WithContext(client), o)
			}()
			if tc.leaveLate {
				until(t, "the miss to reach the origin", func() bool { return o.calls.Load() == 1 })
				waiter, stop := context.WithCancel(context.Background())
				defer stop()
				go func() { _ = h.ServeHTTP(newWriter(), newRequest(http.MethodGet, url).WithContext(waiter), o) }()
				until(t, "a second request to wait", func() bool { return h.flights.waiting(url) == 1 })
				leave()
				close(answer)
				<-answered
				// The waiter, released, asks the origin itself; its own
				// request ends with it.
				defer func() {
					until(t, "the waiter to reach the origin", func() bool { return o.calls.Load() == 2 })
					stop()
					_ = untilValue(t, "the waiter's origin request to end", ended)
				}()
			} else {
				<-answered
				leave()
			}
			if err := untilValue(t, "the origin request to end with its client", ended); !errors.Is(err, context.Canceled) {
				t.Errorf("origin request ended with %v", err)
			}
			<-done
		})
	}
}

// TestAbandonedMissEndsWhenItsWaitersLeaveToo: a miss of a hanging URL
// whose leader and waiters all leave before the origin answers ends its
// origin request, whichever leaves last: once a request had joined, it
// went on (two requests per URL undid TestAbandonedMissEndsWithItsClient).
func TestAbandonedMissEndsWhenItsWaitersLeaveToo(t *testing.T) {
	for _, leaderFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("leader leaves first: %v", leaderFirst), func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{}, c)
			ended := make(chan error, 1)
			o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
				select {
				case <-r.Context().Done():
				case <-time.After(5 * time.Second): // (a bound: the test fails below)
				}
				ended <- r.Context().Err()
				return r.Context().Err()
			}}
			const target = "http://example.com/hangs"
			lctx, leaderLeaves := context.WithCancel(context.Background())
			wctx, waiterLeaves := context.WithCancel(context.Background())
			ldone := serveAsync(h, newSyncWriter(), newRequest(http.MethodGet, target).WithContext(lctx), o)
			until(t, "the miss to reach the origin", func() bool { return o.calls.Load() == 1 })
			wdone := serveAsync(h, newSyncWriter(), newRequest(http.MethodGet, target).WithContext(wctx), o)
			until(t, "the waiter to wait", func() bool { return h.flights.waiting(target) == 1 })
			first, second := waiterLeaves, leaderLeaves
			if leaderFirst {
				first, second = leaderLeaves, waiterLeaves
			}
			first()
			if leaderFirst {
				until(t, "the fill to know its leader left", func() bool {
					h.flights.mu.Lock()
					defer h.flights.mu.Unlock()
					f := h.flights.m[target]
					return f != nil && f.leaderGone
				})
			}
			second()
			if err := untilValue(t, "the origin request to end", ended); err == nil {
				t.Error("the origin request went on after the leader and its only waiter had left")
			}
			untilValue(t, "the waiter to return", wdone)
			untilValue(t, "the leader to return", ldone)
		})
	}
}

// TestWaiterPastItsBoundReadsNothingOfTheLeader: a waiter whose wait bound
// passes after the leader's response began goes to the origin without
// reading what the leader writes when it finishes (a data race -race
// reports otherwise). The clock is time.Now, as in production: a test
// clock that orders goroutines would hide the race.
func TestWaiterPastItsBoundReadsNothingOfTheLeader(t *testing.T) {
	h := newTestHandler(t, Config{MinUses: 1}, nil)
	h.coalesceWait = time.Millisecond
	start, more := make(chan struct{}), make(chan struct{})
	o := &origin{}
	o.fn = func(w http.ResponseWriter, r *http.Request) error {
		if o.calls.Load() > 1 { // the waiter's own request
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusServiceUnavailable)
			return nil
		}
		<-start
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Date", time.Now().UTC().Format(http.TimeFormat))
		w.WriteHeader(http.StatusOK) // no Content-Length: nothing published early
		_, _ = io.WriteString(w, "first")
		<-more
		_, err := io.WriteString(w, "rest")
		return err
	}
	const target = "http://example.com/status-race"
	leaderDone := serveAsync(h, newSyncWriter(), newRequest(http.MethodGet, target), o)
	until(t, "the leader at the origin", func() bool { return o.calls.Load() == 1 })
	waiter := newSyncWriter()
	waiterDone := serveAsync(h, waiter, newRequest(http.MethodGet, target), o)
	until(t, "a waiter", func() bool { return h.flights.waiting(target) == 1 })
	close(start)
	// A pause, not a wait on the origin's count: observing the waiter
	// there and then letting the leader go on would order the two, and
	// -race would see nothing.
	time.Sleep(200 * time.Millisecond)
	close(more)
	untilValue(t, "leader", leaderDone)
	untilValue(t, "waiter", waiterDone)
	if n := o.calls.Load(); n != 2 {
		// The waiter was not run for 200 ms and took the leader's
		// answer instead: correct, but nothing raced.
		t.Logf("%d origin calls: the waiter's bound did not pass in time", n)
	}
}

// TestLeaderLooksAgainAfterAFlightEnded: a request whose lookup missed
// while another request's fill of its URL was still under way, and whose
// join came after that fill was stored and its flight ended, finds no
// flight to join. It looks in the store again (its URL's flights ended
// since its lookup) and is answered from there, rather than leading a
// second origin request (a flakiness hunt saw 2 origin requests for 200
// concurrent misses); without a flight ended since, it goes to the origin.
func TestLeaderLooksAgainAfterAFlightEnded(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{MinUses: 1}, c)
	o := static(c, 200, "body", "Cache-Control", "max-age=60")
	const url = "http://example.com/late"
	late := func(mark uint16) *httptest.ResponseRecorder {
		return lateMiss(t, h, o, newRequest(http.MethodGet, url), mark)
	}
	urlHash := keyHash([]byte(keyOf(t, h, newRequest(http.MethodGet, url))))
	mark := h.flights.endedMark(urlHash) // read before its lookup, which misses
	get(t, h, o, url)                    // meanwhile another request fills the URL
	w := late(mark)
	if n := o.calls.Load(); n != 1 {
		t.Errorf("origin called %d times, want 1 (the late request answered from the store)", n)
	}
	wantStatus(t, w, []string{"collapsed"})
	if w.Body.String() != "body" {
		t.Errorf("body %q", w.Body.String())
	}
	// No flight ended since its lookup: it leads, to the origin.
	late(h.flights.endedMark(urlHash))
	if n := o.calls.Load(); n != 2 {
		t.Errorf("origin called %d times, want 2 (a request with nothing new to find leads)", n)
	}
}

// lateMiss forwards r as a miss whose lookup in the store came when the
// flights of its URL's slot had ended mark times (see endedMark), and
// waits for the store to apply what it offered.
func lateMiss(t testing.TB, h *Handler, next caddyhttp.Handler, r *http.Request, mark uint16) *httptest.ResponseRecorder {
	t.Helper()
	key := keyOf(t, h, r)
	x := &exchange{fwd: "uri-miss", rq: requestControl(r.Header), urlHash: keyHash([]byte(key)), urlKey: []byte(key),
		epoch: h.store.epoch(), endedMark: mark, result: h.m.miss}
	w := httptest.NewRecorder()
	if err := h.forward(w, r, next, x); err != nil {
		t.Error(err)
	}
	h.store.wait()
	return w
}

// TestLeaderFollowsTheRecordAfterAFlightEnded is
// TestLeaderLooksAgainAfterAFlightEnded for a URL whose responses vary:
// what the late request finds in the store is the URL's variant record,
// which it follows to its own variant.
func TestLeaderFollowsTheRecordAfterAFlightEnded(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{MinUses: 1}, c)
	o := static(c, 200, "body", "Cache-Control", "max-age=60", "Vary", "Accept-Language")
	const url = "http://example.com/late"
	late := func(mark uint16, lang string) *httptest.ResponseRecorder {
		return lateMiss(t, h, o, newRequest(http.MethodGet, url, "Accept-Language", lang), mark)
	}
	urlHash := keyHash([]byte(keyOf(t, h, newRequest(http.MethodGet, url))))
	mark := h.flights.endedMark(urlHash)       // read before its lookup, which misses
	get(t, h, o, url, "Accept-Language", "fr") // meanwhile another request fills the URL
	w := late(mark, "fr")
	if n := o.calls.Load(); n != 1 {
		t.Errorf("origin called %d times, want 1 (the late request answered from the store)", n)
	}
	wantStatus(t, w, []string{"collapsed"})
	if w.Body.String() != "body" {
		t.Errorf("body %q", w.Body.String())
	}
	// Another language: the record says its variant is not stored.
	w = late(mark, "de")
	if n := o.calls.Load(); n != 2 {
		t.Errorf("origin called %d times, want 2 (another variant goes to the origin)", n)
	}
	wantStatus(t, w, []string{"fwd=vary-miss"})
	for _, lang := range []string{"fr", "de"} {
		wantStatus(t, get(t, h, o, url, "Accept-Language", lang), []string{"hit"})
	}
	if n := o.calls.Load(); n != 2 {
		t.Errorf("origin called %d times, want 2 (both variants stored, under one record)", n)
	}
}

// germanOnHold is an origin whose responses vary on Accept-Language and
// whose German ones wait for release; de counts its German requests.
func germanOnHold(c *clock) (o *origin, de *atomic.Int32, release chan struct{}) {
	de, release = new(atomic.Int32), make(chan struct{})
	return &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Vary", "Accept-Language")
		w.Header().Set("Date", c.date())
		if r.Header.Get("Accept-Language") == "de" {
			de.Add(1)
			<-release
		}
		_, _ = io.WriteString(w, "body-"+r.Header.Get("Accept-Language"))
		return nil
	}}, de, release
}

// TestLateVaryMissIsJoinable: a late miss that follows the record to a
// variant not stored leads that variant's flight, which the variant's
// next requests (keyed by the record they find) join, rather than send a
// second request for it to the origin (a review of followRecord's first
// version, which left the late miss under its URL's key).
func TestLateVaryMissIsJoinable(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{MinUses: 1}, c)
	o, de, release := germanOnHold(c)
	const url = "http://example.com/late"
	urlHash := keyHash([]byte(keyOf(t, h, newRequest(http.MethodGet, url))))
	mark := h.flights.endedMark(urlHash)       // read before its lookup, which misses
	get(t, h, o, url, "Accept-Language", "fr") // meanwhile: the record and fr stored
	h.store.wait()
	late := make(chan *httptest.ResponseRecorder)
	go func() { late <- lateMiss(t, h, o, newRequest(http.MethodGet, url, "Accept-Language", "de"), mark) }()
	until(t, "the late de miss to reach the origin", func() bool { return de.Load() == 1 })
	next := make(chan *httptest.ResponseRecorder)
	go func() { next <- get(t, h, o, url, "Accept-Language", "de") }()
	until(t, "the next de request to wait", func() bool {
		r := newRequest(http.MethodGet, url, "Accept-Language", "de")
		e := h.store.get(urlHash, []byte(keyOf(t, h, r)))
		return e != nil && h.flights.waiting(string(appendVariantKey(nil, []byte(keyOf(t, h, r)), e.gen, requestVaryKey(e.vary, r)))) == 1
	})
	close(release)
	wantStatus(t, <-late, []string{"fwd=vary-miss"})
	w := <-next
	wantStatus(t, w, []string{"collapsed"})
	if w.Body.String() != "body-de" {
		t.Errorf("body %q", w.Body.String())
	}
	if n := de.Load(); n != 1 {
		t.Errorf("variant de fetched %d times, want 1", n)
	}
}

// TestLateRevalidationKeepsItsStatus: a revalidation whose URL came to
// vary meanwhile, finding the new record when it looks again, is still
// fwd=stale (a review: it was relabelled vary-miss).
func TestLateRevalidationKeepsItsStatus(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{MinUses: 1}, c)
	vary := false
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Cache-Control", "max-age=1")
		w.Header().Set("ETag", `"v1"`)
		w.Header().Set("Date", c.date())
		if vary {
			w.Header().Set("Vary", "Accept-Language")
		}
		_, _ = io.WriteString(w, "body")
		return nil
	}}
	const url = "http://example.com/stale-late"
	get(t, h, o, url, "Accept-Language", "de")
	h.store.wait()
	c.Advance(5 * time.Second)
	r := newRequest(http.MethodGet, url, "Accept-Language", "de")
	key := keyOf(t, h, r)
	urlHash := keyHash([]byte(key))
	stale := h.store.get(urlHash, []byte(key))
	mark := h.flights.endedMark(urlHash)
	vary = true
	get(t, h, o, url, "Accept-Language", "fr") // revalidates; now varies: the record and fr
	h.store.wait()
	x := &exchange{fwd: "stale", stale: stale, rq: requestControl(r.Header), urlHash: urlHash, urlKey: []byte(key),
		epoch: h.store.epoch(), endedMark: mark, result: h.m.revalidate}
	w := httptest.NewRecorder()
	if err := h.forward(w, r, o, x); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, w, []string{"fwd=stale"}, "fwd=vary-miss")
}

// TestLateVaryMissJoinsTheVariantsFlight: a late miss that follows the
// record to a variant whose flight another request leads already joins
// that flight, whether the other is a late miss too (whose flight moved
// to the variant's key) or a request that found the record (a review of
// followRecord's second version: a second origin request).
func TestLateVaryMissJoinsTheVariantsFlight(t *testing.T) {
	for _, firstLate := range []bool{true, false} {
		t.Run(fmt.Sprintf("first late %v", firstLate), func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{MinUses: 1}, c)
			o, de, release := germanOnHold(c)
			const url = "http://example.com/late"
			de1 := func() *http.Request { return newRequest(http.MethodGet, url, "Accept-Language", "de") }
			urlHash := keyHash([]byte(keyOf(t, h, de1())))
			mark := h.flights.endedMark(urlHash)       // read before their lookups, which miss
			get(t, h, o, url, "Accept-Language", "fr") // meanwhile: the record and fr stored
			h.store.wait()
			answers := make(chan *httptest.ResponseRecorder, 2)
			if firstLate {
				go func() { answers <- lateMiss(t, h, o, de1(), mark) }()
			} else {
				go func() { answers <- serve(t, h, o, de1()) }()
			}
			until(t, "the first de miss to reach the origin", func() bool { return de.Load() == 1 })
			go func() { answers <- lateMiss(t, h, o, de1(), mark) }()
			urlKey := []byte(keyOf(t, h, de1()))
			record := h.store.get(urlHash, urlKey)
			variant := string(appendVariantKey(nil, urlKey, record.gen, requestVaryKey(record.vary, de1())))
			until(t, "the late de miss to wait", func() bool { return h.flights.waiting(variant) == 1 })
			close(release)
			for range 2 {
				if w := <-answers; w.Body.String() != "body-de" {
					t.Errorf("body %q (Cache-Status %q)", w.Body.String(), w.Header().Get("Cache-Status"))
				}
			}
			if n := de.Load(); n != 1 {
				t.Errorf("variant de fetched %d times, want 1", n)
			}
		})
	}
}

// TestCoalescedRevalidationEndedByAnUnload: a config unload (a reload, or
// the server shutting down) ends the fill of a revalidation whose leader's
// client has gone; the origin did not fail, so its waiters, whose clients
// are still there, ask it themselves (a review of 2b2b7be: they got the
// 504 of must-revalidate, or the stale response, as for a failure). The
// origin here returns its context's error, as a handler may (and
// reverse_proxy's 499 error wraps); mostly reverse_proxy writes a 499
// instead, which waiters take as a response not stored.
func TestCoalescedRevalidationEndedByAnUnload(t *testing.T) {
	for _, tc := range []struct{ name, cc string }{
		{"must-revalidate", "max-age=60, must-revalidate"},
		{"stale-if-error", "max-age=60, stale-if-error=600"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			h, unload := newUnloadableHandler(t, Config{}, c)
			const url = "http://example.com/unloaded"
			get(t, h, validating(c, `"v1"`, "payload", "Cache-Control", tc.cc), url)
			c.Advance(2 * time.Minute)
			healthy := validating(c, `"v2"`, "new payload", "Cache-Control", tc.cc)
			o := &origin{}
			o.fn = func(w http.ResponseWriter, r *http.Request) error {
				if o.calls.Load() == 1 { // the leader's fill: ends only when its context does
					<-r.Context().Done()
					return r.Context().Err()
				}
				return healthy.fn(w, r)
			}
			client, leave := context.WithCancel(context.Background())
			defer leave()
			leaderDone := make(chan struct{})
			go func() {
				defer close(leaderDone)
				_ = h.ServeHTTP(httptest.NewRecorder(), newRequest(http.MethodGet, url).WithContext(client), o)
			}()
			until(t, "the leader to reach the origin", func() bool { return o.calls.Load() == 1 })
			w := httptest.NewRecorder()
			var werr error
			waited := make(chan struct{})
			go func() {
				defer close(waited)
				werr = h.ServeHTTP(w, newRequest(http.MethodGet, url), o)
			}()
			key := keyOf(t, h, newRequest(http.MethodGet, url))
			until(t, "the waiter to join", func() bool { return h.flights.waiting(key) == 1 })
			leave()  // the leader's client goes: the fill goes on for the waiter
			unload() // a reload: the fill now ends with its (gone) client
			<-leaderDone
			<-waited
			if werr != nil || w.Code != 200 || w.Body.String() != "new payload" {
				t.Errorf("waiter: err %v, %d %q, Cache-Status %q; want the origin's new response (the origin never failed; %d origin calls)",
					werr, w.Code, w.Body.String(), w.Header().Get("Cache-Status"), o.calls.Load())
			}
		})
	}
}

// counterValue reads c.
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	_ = c.Write(&m)
	return m.GetCounter().GetValue()
}
