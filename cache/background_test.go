package cache

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// TestBackgroundRefreshStopsReadingWhatItCannotStore: a stale-while-
// revalidate refresh whose new response will not be stored (it grew past
// max_item_size, or is no-store now) reads it no further than
// max_item_size, since nobody reads it (it read to the end, or to its 30 s
// timeout: a grown video, refreshed at every stale hit within
// stale-while-revalidate). A small one is read to its end (aborting makes
// reverse_proxy log a warning).
func TestBackgroundRefreshStopsReadingWhatItCannotStore(t *testing.T) {
	const maxItem = 64 << 10
	for _, tc := range []struct {
		name    string
		cc      string
		size    int
		readMax int64 // most body bytes the origin may write
	}{
		{name: "grew past max_item_size", cc: "max-age=1, stale-while-revalidate=60", size: 8 << 20, readMax: maxItem + 32<<10},
		{name: "no-store now", cc: "no-store", size: 8 << 20, readMax: maxItem + 32<<10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{MaxSize: 1 << 20, MaxItemSize: maxItem}, c)
			var version atomic.Int32
			var written atomic.Int64
			chunk := strings.Repeat("z", 4<<10)
			o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
				w.Header().Set("Date", c.date())
				if version.Load() == 0 {
					w.Header().Set("Cache-Control", "max-age=1, stale-while-revalidate=60")
					w.Header().Set("Etag", `"v1"`)
					_, _ = w.Write([]byte("small v1"))
					return nil
				}
				w.Header().Set("Cache-Control", tc.cc)
				w.Header().Set("Etag", `"v2"`)
				for n := 0; n < tc.size; n += len(chunk) {
					if _, err := w.Write([]byte(chunk)); err != nil {
						return err
					}
					written.Add(int64(len(chunk)))
				}
				return nil
			}}
			get(t, h, o, "http://example.com/grows")
			h.store.wait()
			version.Store(1)
			c.Advance(2 * time.Second)
			w := get(t, h, o, "http://example.com/grows")
			wantStatus(t, w, []string{"hit", "detail=stale-while-revalidate"})
			h.bg.wait()
			h.store.wait()
			if n := written.Load(); n > tc.readMax {
				t.Errorf("the refresh read %d bytes of a response it could not store (at most %d wanted)", n, tc.readMax)
			}
		})
	}
}

// TestBackgroundRefreshReadsSmallUnstorableBodies: a refresh answered with
// a small response it will not store reads it to its end, without an
// error (which reverse_proxy would log as a warning).
func TestBackgroundRefreshReadsSmallUnstorableBodies(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	var version atomic.Int32
	var writeErr atomic.Value
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Date", c.date())
		if version.Load() == 0 {
			w.Header().Set("Cache-Control", "max-age=1, stale-while-revalidate=60")
			_, _ = w.Write([]byte("v1"))
			return nil
		}
		w.Header().Set("Cache-Control", "no-store")
		for range 4 {
			if _, err := w.Write([]byte(strings.Repeat("n", 1<<10))); err != nil {
				writeErr.Store(err)
				return err
			}
		}
		return nil
	}}
	get(t, h, o, "http://example.com/small")
	h.store.wait()
	version.Store(1)
	c.Advance(2 * time.Second)
	get(t, h, o, "http://example.com/small")
	h.bg.wait()
	if err := writeErr.Load(); err != nil {
		t.Errorf("the refresh aborted a 4 KiB body: %v", err)
	}
}

// TestFailingRefreshesBackOff: while the origin is down, a key's stale
// hits under stale-while-revalidate go on being served, but its refreshes
// wait a backoff after each failure (1 s, doubling up to 30 s) rather than
// try the origin at every hit; the first failure of a streak is logged as
// a warning, the others at debug, and the first success after them at
// info, after which a failure is a new streak.
//
// A refresh answered with a response it does not store backs off the
// same way, without a warning: each stale hit would otherwise start one
// (a review: 200 refreshes reading max_item_size each in 10 s of stale
// hits on an object grown past it).
func TestFailingRefreshesBackOff(t *testing.T) {
	const maxItem = 64 << 10
	for _, down := range []struct {
		name   string
		fail   func(w http.ResponseWriter) error
		warned int // warnings and "succeeded again" lines of a streak
	}{
		{"unreachable", func(http.ResponseWriter) error { return errors.New("dial tcp: connection refused") }, 1},
		{"server error", func(w http.ResponseWriter) error { w.WriteHeader(http.StatusBadGateway); return nil }, 1},
		{"not storable", func(w http.ResponseWriter) error {
			w.Header().Set("Cache-Control", "no-store")
			_, err := w.Write([]byte("personal"))
			return err
		}, 0},
		{"past max_item_size", func(w http.ResponseWriter) error {
			chunk := make([]byte, 4<<10)
			for range 4 * maxItem / len(chunk) {
				if _, err := w.Write(chunk); err != nil {
					panic(http.ErrAbortHandler) // as reverse_proxy does when its client's Write fails
				}
			}
			return nil
		}, 0},
		{"unannounced trailers", func(w http.ResponseWriter) error {
			// Read to the end, then not stored (a review: held only when
			// the recorder had stopped buffering).
			w.Header().Set("Cache-Control", "max-age=1, stale-while-revalidate=86400")
			_, err := w.Write([]byte("grpc-web"))
			w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
			return err
		}, 0},
	} {
		t.Run(down.name, func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{MaxItemSize: maxItem}, c)
			logs := observeLogs(h)
			var failing atomic.Bool
			o := refreshedOrigin(c, "86400", &failing, down.fail)
			const url = "http://example.com/feed"
			get(t, h, o, url)
			h.store.wait()
			failing.Store(true)
			c.Advance(2 * time.Second)
			staleHits := func(n int) int32 {
				t.Helper()
				before := o.calls.Load()
				for range n {
					wantStatus(t, get(t, h, o, url), []string{"hit", "detail=stale-while-revalidate"})
					h.bg.wait()
				}
				return o.calls.Load() - before
			}
			if n := staleHits(20); n != 1 {
				t.Fatalf("20 stale hits tried the origin %d times, want 1", n)
			}
			for i, wait := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
				c.Advance(wait - time.Millisecond)
				if n := staleHits(3); n != 0 {
					t.Fatalf("failure %d: %d tries before its backoff of %v passed", i+1, n, wait)
				}
				c.Advance(time.Millisecond)
				if n := staleHits(3); n != 1 {
					t.Fatalf("failure %d: %d tries once its backoff of %v passed, want 1", i+1, n, wait)
				}
			}
			c.Advance(5 * time.Minute) // the backoff is at most 30 s (and the entry within its window; the streak goes on for streakQuiet)
			if n := staleHits(1); n != 1 {
				t.Fatalf("%d tries 30 s after the last failure, want 1", n)
			}
			if n := logs.FilterLevelExact(zapcore.WarnLevel).FilterMessageSnippet("background revalidation failed").Len(); n != down.warned {
				t.Errorf("%d warnings for one streak, want %d: %v", n, down.warned, logs.All())
			}
			failing.Store(false)
			c.Advance(time.Minute)
			if n := staleHits(1); n != 1 {
				t.Fatalf("%d tries once the origin is back, want 1", n)
			}
			if n := logs.FilterMessage("background revalidation succeeded again").Len(); n != down.warned {
				t.Errorf("the end of the streak was logged %d times, want %d", n, down.warned)
			}
			wantStatus(t, get(t, h, o, url), []string{"hit"})
			// A new streak starts with the shortest backoff.
			failing.Store(true)
			c.Advance(2 * time.Second)
			if n := staleHits(2); n != 1 {
				t.Fatalf("new streak: %d tries, want 1", n)
			}
			c.Advance(time.Second)
			if n := staleHits(1); n != 1 {
				t.Fatalf("new streak: %d tries after 1 s, want 1", n)
			}
		})
	}
}

// TestFailedRefreshesAreBounded: the keys whose refreshes failed are
// remembered up to maxFailedKeys; past it, a new one takes the place of
// another, so that it still backs off (a large outage is when the bound is
// reached), preferring one whose backoff has passed.
func TestFailedRefreshesAreBounded(t *testing.T) {
	b := background{refreshes: new(refreshes)}
	now := time.Unix(1e9, 0)
	fail := func(key string, at time.Time) {
		t.Helper()
		if !b.start(key, at) {
			t.Fatalf("key %s could not start", key)
		}
		b.done(key, refreshFailed, at)
		b.wg.Done()
	}
	for i := range maxFailedKeys {
		fail(strconv.Itoa(i), now)
	}
	// All within their backoff: a new key still takes a place.
	fail("new", now)
	if len(b.failed) != maxFailedKeys {
		t.Fatalf("%d keys remembered, want %d", len(b.failed), maxFailedKeys)
	}
	if b.start("new", now) {
		t.Fatal("the new key's failure was not remembered: it would try the origin at every hit")
	}
	// One key's backoff has passed: a few more new keys take places,
	// and keys still within their backoff mostly stay.
	later := now.Add(minRefreshBackoff)
	for i := range 8 {
		fail("newer"+strconv.Itoa(i), later)
	}
	if len(b.failed) != maxFailedKeys {
		t.Errorf("%d keys remembered, want %d", len(b.failed), maxFailedKeys)
	}
	// Holds of answers not stored, for new keys, take the place of no
	// backoff of a failure still running (a review: 1,000 refusals ended
	// 973 backoffs of 30 s), only of passed ones and of other holds.
	b = background{refreshes: new(refreshes)}
	for i := range maxFailedKeys {
		fail(strconv.Itoa(i), now)
	}
	for i := range 1000 {
		key, outcome := "held"+strconv.Itoa(i), []refreshOutcome{refreshUnstored, refreshRefused}[i%2]
		if !b.start(key, now) {
			t.Fatalf("key %s could not start", key)
		}
		b.done(key, outcome, now)
		b.wg.Done()
	}
	if n := len(b.failed); n != maxFailedKeys || b.failed["held0"].until != (time.Time{}) {
		t.Errorf("after 1,000 holds of new keys among %d running backoffs of failures: %d keys, a hold kept: %v; want the failures' only", maxFailedKeys, n, b.failed["held0"].until != (time.Time{}))
	}
	// A hold takes the place of a passed backoff.
	held := 0
	for i := range 1000 {
		key := "later" + strconv.Itoa(i)
		b.start(key, later.Add(time.Minute))
		b.done(key, refreshUnstored, later.Add(time.Minute))
		b.wg.Done()
		if _, ok := b.failed[key]; ok {
			held++
		}
	}
	if held != 1000 || len(b.failed) != maxFailedKeys {
		t.Errorf("once backoffs passed, %d of 1,000 holds kept (%d keys); want all (%d)", held, len(b.failed), maxFailedKeys)
	}
	// A new failure takes the place of a hold rather than of another
	// failure's running backoff, where the few it samples have one.
	b = background{refreshes: new(refreshes)}
	for i := range maxFailedKeys {
		key := strconv.Itoa(i)
		b.start(key, now)
		b.done(key, []refreshOutcome{refreshFailed, refreshUnstored}[i%2], now)
		b.wg.Done()
	}
	for i := range 100 {
		fail("failing"+strconv.Itoa(i), now)
	}
	lost := 0
	for i := 0; i < maxFailedKeys; i += 2 {
		if _, ok := b.failed[strconv.Itoa(i)]; !ok {
			lost++
		}
	}
	if lost > 5 { // 100 × (1/2)⁸ expected
		t.Errorf("100 new failures among as many failures as holds ended %d running backoffs of failures", lost)
	}
}

// TestRefreshBackoffIsCapped: a key that keeps failing is tried again at
// most maxRefreshBackoff after its last failure.
func TestRefreshBackoffIsCapped(t *testing.T) {
	b := background{refreshes: new(refreshes)}
	now := time.Unix(1e9, 0)
	var delay time.Duration
	for i := range 12 {
		if !b.start("k", now) {
			t.Fatalf("failure %d: not started once its backoff passed", i+1)
		}
		b.done("k", refreshFailed, now)
		b.wg.Done()
		delay = b.failed["k"].until.Sub(now)
		if b.start("k", now.Add(delay-time.Millisecond)) {
			t.Fatalf("failure %d: started before its backoff of %v passed", i+1, delay)
		}
		now = now.Add(delay)
	}
	if delay != maxRefreshBackoff {
		t.Errorf("after 12 failures the backoff is %v, want %v", delay, maxRefreshBackoff)
	}
}

// TestRefreshStreaksOfEitherKind: a key's refreshes back off through a
// streak of failures or one of answers not stored, each from the shortest
// delay; an answer not stored ends a streak of failures (its count
// returned negated, for the "succeeded again" line) and is no failure, and
// a failure after such answers begins a streak of its own, warned about.
// A storable answer others' recordings left no room for holds the next
// refresh back a second, ends a streak of failures (the origin answered)
// and leaves one of answers not stored as it was.
func TestRefreshStreaksOfEitherKind(t *testing.T) {
	b := background{refreshes: new(refreshes)}
	now := time.Unix(1e9, 0)
	for i, step := range []struct {
		outcome refreshOutcome
		want    int           // what done returns
		delay   time.Duration // the backoff after it
		failing bool
	}{
		{refreshFailed, 1, time.Second, true},
		{refreshFailed, 2, 2 * time.Second, true},
		{refreshRefused, -2, time.Second, false}, // the origin answered
		{refreshFailed, 1, time.Second, true},
		{refreshFailed, 2, 2 * time.Second, true},
		{refreshUnstored, -2, time.Second, false},
		{refreshUnstored, 0, 2 * time.Second, false},
		{refreshRefused, 0, time.Second, false}, // this streak goes on
		{refreshUnstored, 0, 4 * time.Second, false},
		{refreshFailed, 1, time.Second, true},
		{refreshSucceeded, -1, 0, false},
		{refreshRefused, 0, time.Second, false},
		{refreshUnstored, 0, time.Second, false},
	} {
		if !b.start("k", now) {
			t.Fatalf("step %d: not started once its backoff passed", i+1)
		}
		got := b.done("k", step.outcome, now)
		b.wg.Done()
		delay := b.failed["k"].until.Sub(now)
		if step.delay == 0 {
			delay = 0
			if _, ok := b.failed["k"]; ok {
				delay = -1
			}
		}
		if got != step.want || delay != step.delay || b.failing("k", now) != step.failing {
			t.Errorf("step %d: done %d, backoff %v, failing %v; want %d, %v, %v", i+1, got, delay, b.failing("k", now), step.want, step.delay, step.failing)
		}
		now = now.Add(max(delay, 0))
	}
}

// TestRefreshesAreSharedAcrossAReload: the configs that share a store (a
// reload that keeps cache_name and max_size) share its refreshes: a key
// being refreshed by the old config's handler is not refreshed again by
// the new one's, and a failed refresh's backoff holds for both (a review:
// three refreshes of one key at once across two reloads, and a failing
// origin asked at every reload).
func TestRefreshesAreSharedAcrossAReload(t *testing.T) {
	c := newClock()
	name := fmt.Sprintf("reloaded-%d", testCacheSeq.Add(1))
	old := newTestHandler(t, Config{CacheName: name}, c)
	release := make(chan struct{})
	var failing atomic.Bool
	o := refreshedOrigin(c, "86400", &failing, func(w http.ResponseWriter) error {
		w.WriteHeader(http.StatusServiceUnavailable)
		return nil
	})
	answer := o.fn
	o.fn = func(w http.ResponseWriter, r *http.Request) error {
		if o.calls.Load() == 2 {
			<-release // the first refresh
		}
		return answer(w, r)
	}
	const url = "http://example.com/shared"
	get(t, old, o, url)
	c.Advance(2 * time.Second)
	wantStatus(t, get(t, old, o, url), []string{"hit", "detail=stale-while-revalidate"})
	until(t, "the old config's refresh to reach the origin", func() bool { return o.calls.Load() == 2 })

	next := newTestHandler(t, Config{CacheName: name}, c) // the reload
	if next.store != old.store {
		t.Fatal("the reload did not keep the store")
	}
	wantStatus(t, get(t, next, o, url), []string{"hit", "detail=stale-while-revalidate"})
	next.bg.wait()
	if n := o.calls.Load(); n != 2 {
		t.Errorf("origin called %d times; want 2: the new config refreshed a key the old one was refreshing", n)
	}
	close(release)
	old.bg.wait()
	old.store.wait()

	failing.Store(true)
	c.Advance(2 * time.Second)
	wantStatus(t, get(t, next, o, url), []string{"hit", "detail=stale-while-revalidate"})
	next.bg.wait()
	if n := o.calls.Load(); n != 3 {
		t.Fatalf("origin called %d times; want 3 (a refresh that fails)", n)
	}
	newer := newTestHandler(t, Config{CacheName: name}, c) // another reload, within the backoff
	wantStatus(t, get(t, newer, o, url), []string{"hit", "detail=stale-while-revalidate"})
	newer.bg.wait()
	if n := o.calls.Load(); n != 3 {
		t.Errorf("origin called %d times; want 3: a reload ended the failed refresh's backoff", n)
	}
}

// TestRefreshStreakEndsWhenQuiet: a key's streak of failed refreshes
// ends once none was tried for streakQuiet after its backoff (the key
// fetched in the foreground meanwhile, or nobody asked), so that an
// outage a day later is warned about and backs off from 1 s again. (A
// review: the streak, kept by the store across reloads, went on for the
// process's life once no background refresh succeeded.)
func TestRefreshStreakEndsWhenQuiet(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	logs := observeLogs(h)
	var failing atomic.Bool
	o := refreshedOrigin(c, "60", &failing, func(http.ResponseWriter) error { return errors.New("dial tcp: connection refused") })
	const url = "http://example.com/streak"
	get(t, h, o, url)
	failing.Store(true)
	c.Advance(2 * time.Second)
	wantStatus(t, get(t, h, o, url), []string{"hit", "detail=stale-while-revalidate"})
	h.bg.wait()
	// The outage ends; the entry leaves its stale window and is
	// revalidated in the foreground, successfully.
	failing.Store(false)
	c.Advance(2 * time.Minute)
	wantStatus(t, get(t, h, o, url), []string{"fwd=stale", "fwd-status=200"})
	// A day later, a new outage: the refresh fails again, in a reload's
	// handler that shares the store.
	c.Advance(24 * time.Hour)
	get(t, h, o, url) // foreground again (past the window): stored fresh
	failing.Store(true)
	next := newTestHandler(t, Config{CacheName: h.CacheName}, c)
	next.logger = h.logger
	c.Advance(2 * time.Second)
	wantStatus(t, get(t, next, o, url), []string{"hit", "detail=stale-while-revalidate"})
	next.bg.wait()
	if n := logs.FilterLevelExact(zapcore.WarnLevel).FilterMessageSnippet("background revalidation failed").Len(); n != 2 {
		t.Errorf("%d warnings for two outages a day apart, want 2", n)
	}
	before := o.calls.Load()
	c.Advance(time.Second) // a new streak's first backoff
	wantStatus(t, get(t, next, o, url), []string{"hit", "detail=stale-while-revalidate"})
	next.bg.wait()
	if n := o.calls.Load() - before; n != 1 {
		t.Errorf("%d refreshes 1 s after the new outage's first failure, want 1 (its backoff carried on the old streak)", n)
	}
}

// TestRefreshInFlightKeepsItsStreak: a refresh that starts within its
// streak's quiet time and ends past it was tried within it: the streak
// goes on (no second warning, the doubled backoff), or ends with its
// "succeeded again" line (a review: the refresh started a new streak).
func TestRefreshInFlightKeepsItsStreak(t *testing.T) {
	for _, outcome := range []string{"fails", "succeeds"} {
		t.Run(outcome, func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{}, c)
			logs := observeLogs(h)
			var failing, block atomic.Bool
			entered := make(chan struct{}, 1)
			release := make(chan struct{})
			o := refreshedOrigin(c, "86400", &failing, func(http.ResponseWriter) error {
				return caddyhttp.Error(http.StatusBadGateway, errors.New("dial tcp: connection refused"))
			})
			answer := o.fn
			o.fn = func(w http.ResponseWriter, r *http.Request) error {
				if block.Load() {
					entered <- struct{}{}
					<-release
				}
				return answer(w, r)
			}
			const url = "http://example.com/inflight"
			get(t, h, o, url)
			h.store.wait()
			failing.Store(true)
			c.Advance(2 * time.Second)
			get(t, h, o, url) // refresh 1 fails: warning, backoff 1 s
			h.bg.wait()
			// Tried again 9 min 59 s after the backoff: the streak goes on.
			c.Advance(time.Second + streakQuiet - time.Second)
			block.Store(true)
			if outcome == "succeeds" {
				failing.Store(false)
			}
			get(t, h, o, url)
			<-entered
			c.Advance(3 * time.Second) // the refresh takes 3 s (a dial timeout)
			block.Store(false)
			close(release)
			h.bg.wait()
			warns := logs.FilterLevelExact(zapcore.WarnLevel).FilterMessageSnippet("background revalidation failed").Len()
			succ := logs.FilterMessage("background revalidation succeeded again").Len()
			if outcome == "fails" {
				if warns != 1 {
					t.Errorf("%d warnings for one streak (its second refresh was tried within streakQuiet), want 1", warns)
				}
				before := o.calls.Load()
				c.Advance(time.Second)
				get(t, h, o, url)
				h.bg.wait()
				if n := o.calls.Load() - before; n != 0 {
					t.Errorf("refreshed 1 s after the streak's 2nd failure (want backoff 2 s): the streak restarted")
				}
			} else if succ != 1 {
				t.Errorf("%d 'succeeded again' lines after a warned streak whose refresh succeeded, want 1", succ)
			}
		})
	}
}

// TestRefreshHandlersOwnErrorIsNoFailure: a background refresh that gets a
// handler's own error (an error directive's 410) is no failure of the
// origin, as in the foreground: no warning, no backoff (a review: both).
func TestRefreshHandlersOwnErrorIsNoFailure(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	logs := observeLogs(h)
	var gone atomic.Bool
	o := refreshedOrigin(c, "600", &gone, func(http.ResponseWriter) error {
		return caddyhttp.Error(http.StatusGone, errors.New("error directive"))
	})
	const url = "http://example.com/bg-gone"
	staleRefresh(t, h, o, c, url, &gone)
	if n := logs.FilterLevelExact(zapcore.WarnLevel).FilterMessageSnippet("background revalidation failed").Len(); n != 0 {
		t.Errorf("a handler's own 410 in a refresh logged %d 'background revalidation failed' warnings (and backs off); originFailure says it is no origin failure", n)
	}
	if h.bg.failing(keyOf(t, h, newRequest(http.MethodGet, url)), c.Now()) {
		t.Errorf("the key is in a failure streak after a handler's own 410")
	}
}

// TestRefreshOfAnUnstoredBodyIsNoFailure: a refresh answered with a body
// past max_item_size stops reading it, and reverse_proxy aborts on the
// recorder's error (http.ErrAbortHandler). The origin answered, yet a 200
// counted as a failed refresh (a review): the key backed off as if the
// origin were down, without a warning, and a later outage's first failure
// was not warned about. A server error stays a failure, now warned about
// (the abort skipped the warning). Then an outage: its first failure is
// warned about after a 200, its streak goes on after a 503.
func TestRefreshOfAnUnstoredBodyIsNoFailure(t *testing.T) {
	for _, status := range []int{http.StatusOK, http.StatusServiceUnavailable} {
		c := newClock()
		h := newTestHandler(t, Config{MaxItemSize: 64 << 10}, c)
		logs := observeLogs(h)
		var grown, outage atomic.Bool
		chunk := make([]byte, 4<<10)
		o := refreshedOrigin(c, "600", &grown, func(w http.ResponseWriter) error {
			if outage.Load() {
				return errors.New("dial tcp: connection refused")
			}
			w.Header().Set("Date", c.date())
			w.Header().Set("Cache-Control", "max-age=1, stale-while-revalidate=600")
			w.WriteHeader(status)
			for range 64 { // 256 KiB
				if _, err := w.Write(chunk); err != nil {
					panic(http.ErrAbortHandler) // as reverse_proxy does when its client's Write fails
				}
			}
			return nil
		})
		url := fmt.Sprintf("http://example.com/bg-grown-%d", status)
		staleRefresh(t, h, o, c, url, &grown)
		if n := o.calls.Load(); n != 2 {
			t.Fatalf("%d: the origin was asked %d times, want 2 (the miss and the refresh)", status, n)
		}
		failing := h.bg.failing(keyOf(t, h, newRequest(http.MethodGet, url)), c.Now())
		warned := logs.FilterLevelExact(zapcore.WarnLevel).FilterMessageSnippet("background revalidation failed").Len()
		if want := status >= 500; failing != want || warned != map[bool]int{true: 1}[want] {
			t.Errorf("%d past max_item_size: in a failure streak %v, %d warnings; want %v and %d", status, failing, warned, want, map[bool]int{true: 1}[want])
		}
		outage.Store(true)
		c.Advance(time.Second) // the backoff of either
		get(t, h, o, url)
		h.bg.wait()
		if n := o.calls.Load(); n != 3 {
			t.Fatalf("%d, then an outage: the origin was asked %d times, want 3", status, n)
		}
		if n := logs.FilterLevelExact(zapcore.WarnLevel).FilterMessageSnippet("background revalidation failed").Len(); n != 1 {
			t.Errorf("%d, then an outage: %d warnings, want 1 (one streak of failures)", status, n)
		}
	}
}

// TestRefreshRefusedRoomWaitsASecond: a refresh whose storable answer is
// refused for the recording budget (others being recorded) says nothing
// of the origin: its key's next refresh waits a second, not a doubling
// backoff (a review: the fifth refusal in a row held a refresh that would
// have been stored for 16 s).
func TestRefreshRefusedRoomWaitsASecond(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{MaxSize: 1 << 20}, c) // a budget of 128 KiB
	more := make(chan struct{})
	var v2 atomic.Bool
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Date", c.date())
		if r.URL.Path == "/slow" { // takes most of the budget until more
			w.Header().Set("Cache-Control", "max-age=60")
			w.Header().Set("Content-Length", strconv.Itoa(100<<10))
			_, _ = w.Write(make([]byte, 1<<10))
			<-more
			_, err := w.Write(make([]byte, 99<<10))
			return err
		}
		w.Header().Set("Cache-Control", "max-age=1, stale-while-revalidate=600")
		body := []byte("v1")
		if v2.Load() {
			body = bytes.Repeat([]byte("2"), 60<<10)
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, err := w.Write(body)
		return err
	}}
	const url = "http://example.com/page"
	get(t, h, o, url)
	h.store.wait()
	v2.Store(true)
	slow := serveAsync(h, newSyncWriter(), newRequest(http.MethodGet, "http://example.com/slow"), o)
	until(t, "the slow fill to reserve its length", func() bool { return h.store.(*store).bodies.recording.Load() == 100<<10 })
	c.Advance(2 * time.Second)
	for i := range 4 {
		before := o.calls.Load()
		wantStatus(t, get(t, h, o, url), []string{"hit", "detail=stale-while-revalidate"})
		h.bg.wait()
		if n := o.calls.Load() - before; n != 1 {
			t.Fatalf("refusal %d: %d refreshes, want 1 (a second after the last)", i+1, n)
		}
		c.Advance(time.Second)
	}
	close(more)
	untilValue(t, "the slow fill to end", slow)
	h.store.wait()
	wantStatus(t, get(t, h, o, url), []string{"hit", "detail=stale-while-revalidate"})
	h.bg.wait()
	h.store.wait()
	if w := get(t, h, o, url); w.Body.Len() != 60<<10 {
		t.Errorf("once the budget is free, a refresh stores v2: got %d bytes, %s", w.Body.Len(), w.Header().Get("Cache-Status"))
	}
}

// TestRefreshedBy304IsNotHeld: a refresh answered 304 updated the
// stored response: no hold, so the key's next stale hit refreshes it
// again at once, however often that is.
func TestRefreshedBy304IsNotHeld(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Date", c.date())
		w.Header().Set("Cache-Control", "max-age=1, stale-while-revalidate=600")
		w.Header().Set("Etag", `"v1"`)
		if r.Header.Get("If-None-Match") == `"v1"` {
			w.WriteHeader(http.StatusNotModified)
			return nil
		}
		_, err := io.WriteString(w, "v1")
		return err
	}}
	const url = "http://example.com/revalidated"
	get(t, h, o, url)
	h.store.wait()
	for i := range 5 {
		c.Advance(1500 * time.Millisecond) // stale again, half a second after
		before := o.calls.Load()
		wantStatus(t, get(t, h, o, url), []string{"hit", "detail=stale-while-revalidate"})
		h.bg.wait()
		if n := o.calls.Load() - before; n != 1 {
			t.Fatalf("stale hit %d: %d refreshes, want 1", i+1, n)
		}
	}
}

// TestRefreshDroppedByTheStoreWaitsASecond: a refresh whose new entry, or
// whose 304's update, the store refused (its queue of sets full) says
// nothing of the origin: the next refresh waits a second, not a doubling
// backoff, and a dropped 304 update is no update (a review: it held
// nothing, so every stale hit sent another conditional request).
func TestRefreshDroppedByTheStoreWaitsASecond(t *testing.T) {
	for _, use304 := range []bool{false, true} {
		c := newClock()
		h := newTestHandler(t, Config{}, c)
		s := h.store.(*store)
		var busy atomic.Bool
		o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
			if busy.Load() {
				s.pending.Add(s.pendingLimit) // ristretto's buffer is behind
			}
			w.Header().Set("Date", c.date())
			w.Header().Set("Cache-Control", "max-age=1, stale-while-revalidate=600")
			w.Header().Set("Etag", `"v1"`)
			if use304 && r.Header.Get("If-None-Match") == `"v1"` {
				w.WriteHeader(http.StatusNotModified)
				return nil
			}
			_, err := io.WriteString(w, "v1")
			return err
		}}
		url := fmt.Sprintf("http://example.com/dropped-%v", use304)
		get(t, h, o, url)
		h.store.wait()
		busy.Store(true)
		c.Advance(2 * time.Second)
		for i := range 3 {
			before := o.calls.Load()
			wantStatus(t, get(t, h, o, url), []string{"hit", "detail=stale-while-revalidate"})
			h.bg.wait()
			wantStatus(t, get(t, h, o, url), []string{"hit", "detail=stale-while-revalidate"}) // within the hold
			h.bg.wait()
			n := o.calls.Load() - before
			s.pending.Add(-s.pendingLimit * int64(n)) // each refresh's backlog, gone
			c.Advance(time.Second)
			if n != 1 {
				t.Fatalf("304 %v, dropped refresh %d: %d refreshes, want 1 (a second apart)", use304, i+1, n)
			}
		}
	}
}

// TestRefreshServerErrorKeepsTheStaleResponse: a refresh answered with a
// storable server error is the origin failing (RFC 9111 §4.3.3 lets the
// cache act so): the stale response stays within stale-while-revalidate
// (a review: the 503 was stored over it and served as a hit, while the
// warning said the stale response stays). Not so a 404, a full answer.
func TestRefreshServerErrorKeepsTheStaleResponse(t *testing.T) {
	for _, status := range []int{http.StatusServiceUnavailable, http.StatusNotFound} {
		c := newClock()
		h := newTestHandler(t, Config{}, c)
		logs := observeLogs(h)
		var down atomic.Bool
		o := refreshedOrigin(c, "600", &down, func(w http.ResponseWriter) error {
			w.Header().Set("Date", c.date())
			w.Header().Set("Cache-Control", "max-age=60")
			w.WriteHeader(status)
			_, err := io.WriteString(w, "error page")
			return err
		})
		url := fmt.Sprintf("http://example.com/refresh-%d", status)
		staleRefresh(t, h, o, c, url, &down)
		h.store.wait()
		w := get(t, h, o, url)
		warned := logs.FilterLevelExact(zapcore.WarnLevel).FilterMessageSnippet("background revalidation failed").Len()
		if stays := status >= 500; stays != (w.Code == http.StatusOK && w.Body.String() == "v") || warned != map[bool]int{true: 1}[stays] {
			t.Errorf("after a refresh answered %d: %d %q (%s), %d warnings; want the stale 200 kept: %v", status, w.Code, w.Body.String(), w.Header().Get("Cache-Status"), warned, stays)
		}
	}
}

// TestRefresh304ForAGoneEntryIsNotHeld: a 304 for an entry purged while
// its refresh was at the origin updates nothing, and says the origin
// answered: the key is not held back (a review: it was, as an answer not
// stored).
func TestRefresh304ForAGoneEntryIsNotHeld(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	const url = "http://example.com/purged-meanwhile"
	var purge atomic.Bool
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Date", c.date())
		w.Header().Set("Cache-Control", "max-age=1, stale-while-revalidate=600")
		w.Header().Set("Etag", `"v1"`)
		if r.Header.Get("If-None-Match") == `"v1"` {
			if purge.Load() {
				h.store.purgeKey(url)
			}
			w.WriteHeader(http.StatusNotModified)
			return nil
		}
		_, err := io.WriteString(w, "v1")
		return err
	}}
	staleRefresh(t, h, o, c, url, &purge)
	key := keyOf(t, h, newRequest(http.MethodGet, url))
	h.bg.mu.Lock()
	f, held := h.bg.failed[key]
	h.bg.mu.Unlock()
	if held {
		t.Errorf("a 304 for a purged entry holds its key back: %+v", f)
	}
}

// TestRefreshForeverLackingIsHeld: a refresh that lacks a value of its
// client's request goes again at once, with it; not one whose placeholder
// could not be learned (maxClientKeys), which lacks it every time: it is
// held back as an answer not stored (a review: a refresh at every stale
// hit, none stored).
func TestRefreshForeverLackingIsHeld(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	for i := range maxClientKeys {
		h.clientKeys.learn("learned." + strconv.Itoa(i))
	}
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		repl := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		w.Header().Set("Date", c.date())
		w.Header().Set("Cache-Control", "max-age=1, stale-while-revalidate=600")
		_, err := io.WriteString(w, repl.ReplaceAll("tenant={tenant}", "-"))
		return err
	}}
	const url = "http://example.com/lacking"
	get(t, h, o, url)
	h.store.wait()
	c.Advance(2 * time.Second)
	before := o.calls.Load()
	for range 20 {
		wantStatus(t, get(t, h, o, url), []string{"hit", "detail=stale-while-revalidate"})
		h.bg.wait()
	}
	if n := o.calls.Load() - before; n != 1 {
		t.Errorf("20 stale hits, a refresh never stored: %d refreshes, want 1", n)
	}
}

// staleRefresh stores url's response from o (fresh for a second, then
// stale-while-revalidate), sets flip (its next answers change), lets the entry go stale and serves one
// stale hit, whose background refresh it waits for.
func staleRefresh(t *testing.T, h *Handler, o *origin, c *clock, url string, flip *atomic.Bool) {
	t.Helper()
	get(t, h, o, url)
	h.store.wait()
	flip.Store(true)
	c.Advance(2 * time.Second)
	wantStatus(t, get(t, h, o, url), []string{"hit", "detail=stale-while-revalidate"})
	h.bg.wait()
}

// refreshedOrigin answers "v", fresh for a second and then served stale
// for swr seconds while refreshed in the background; while down is set,
// fail answers instead.
func refreshedOrigin(c *clock, swr string, down *atomic.Bool, fail func(w http.ResponseWriter) error) *origin {
	return &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		if down.Load() {
			return fail(w)
		}
		w.Header().Set("Date", c.date())
		w.Header().Set("Cache-Control", "max-age=1, stale-while-revalidate="+swr)
		_, _ = w.Write([]byte("v"))
		return nil
	}}
}

// observeLogs makes h log, from debug level up, to the logs it returns.
func observeLogs(h *Handler) *observer.ObservedLogs {
	core, logs := observer.New(zapcore.DebugLevel)
	h.logger = zap.New(core)
	return logs
}
