package cache

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/cespare/xxhash/v2"
)

// TestRequestAfterAPurgeDoesNotReadTheFill: a request that comes after a
// purge of a key, while a fill of that key which began before the purge
// is in flight, gets the origin's answer, not that fill, which the store
// refuses as possibly what the purge removed: while the origin has not
// answered, and while the body arrives (a request that came then read the
// old body to its end, for as long as it took).
func TestRequestAfterAPurgeDoesNotReadTheFill(t *testing.T) {
	const page = "http://example.com/doc"
	for _, streaming := range []bool{false, true} {
		t.Run(fmt.Sprintf("streaming=%v", streaming), func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{}, c)
			var version atomic.Int32
			version.Store(1)
			started, header, resume := make(chan struct{}), make(chan struct{}), make(chan struct{})
			o := &origin{}
			o.fn = func(w http.ResponseWriter, r *http.Request) error {
				v := version.Load()
				body := fmt.Sprintf("v%d-body-of-the-page", v)
				w.Header().Set("Cache-Control", "max-age=600")
				w.Header().Set("Date", c.date())
				if o.calls.Load() == 1 {
					close(started)
					if streaming {
						w.Header().Set("Content-Length", strconv.Itoa(len(body)))
						w.WriteHeader(http.StatusOK)
						_, _ = w.Write([]byte(body[:3]))
						close(header)
						<-resume
						_, err := w.Write([]byte(body[3:]))
						return err
					}
					<-resume
				}
				_, err := w.Write([]byte(body))
				return err
			}
			first := serveAsync(h, newSyncWriter(), newRequest(http.MethodGet, page), o)
			<-started
			if streaming {
				<-header
			}
			version.Store(2) // the resource changes at the origin, then it is purged
			h.store.purgeKey(page)

			// A request that comes after the purge.
			after := newSyncWriter()
			afterDone := serveAsync(h, after, newRequest(http.MethodGet, page), o)
			if !streaming {
				until(t, "the request after the purge to wait", func() bool { return h.flights.waiting(page) == 1 })
			} else {
				until(t, "the request after the purge to be answered", func() bool { code, _ := after.got(); return code != 0 })
			}
			close(resume)
			untilValue(t, "the fill to end", first)
			untilValue(t, "the request after the purge", afterDone)
			_, b := after.got()
			if b != "v2-body-of-the-page" {
				t.Errorf("a request that came after the purge got %q (the fill that began before it), want v2", b)
			}
		})
	}
}

// TestPurgeBetweenCheckAndSet: a purge of a key that comes while a fill
// of it, begun before the purge, is being set (after setLocked's
// purgedSince check, before ristretto's Set) does not return with the
// fill stored: the store checks again after the Set.
func TestPurgeBetweenCheckAndSet(t *testing.T) {
	const key = "http://a/doc"
	s := newTestStore(t, 1<<20)
	e := testEntry(key, 10)
	e.epoch = s.epoch() // the fill began before the purge
	purged := false
	testHookIndexed = func(*entry) {
		if !purged {
			purged = true
			s.purgeKey(key)
		}
	}
	defer func() { testHookIndexed = nil }()
	s.set(e)
	testHookIndexed = nil
	s.wait()
	if got := s.get(e.hash, []byte(key)); got != nil {
		t.Errorf("the fill that began before the purge is stored after purgeKey returned")
	}
}

// TestPurgeDuringARefreshWins: a 304 refresh's replaceIfStored racing a
// purge (after its holds check) stored the refreshed entry after the
// purge: it now carries its request's epoch (refresh), and the store
// checks it again after its Set.
func TestPurgeDuringARefreshWins(t *testing.T) {
	const key = "http://a/doc"
	s := newTestStore(t, 1<<20)
	old := testEntry(key, 10)
	s.set(old)
	s.wait()
	refreshed := old.withHeader(old.header)
	refreshed.epoch = s.epoch()
	refreshed.body.acquire()
	testHookChecked = func(*entry) { s.purgeKey(key) }
	defer func() { testHookChecked = nil }()
	s.replaceIfStored(old, refreshed)
	testHookChecked = nil
	s.wait()
	if got := s.get(old.hash, []byte(key)); got != nil {
		t.Errorf("the refreshed entry is stored after purgeKey returned")
	}
}

// TestUnrelatedPurgeKeepsTheFill: a purge by tag of something else while
// a miss of a busy URL was at the origin made the store refuse that miss's
// response (every purge by tag or prefix kept out every fetch in flight),
// whose body was then freed before its waiters could take it: each asked
// the origin alone. Purges by prefix and tag now keep out only what they
// match (store.recent).
func TestUnrelatedPurgeKeepsTheFill(t *testing.T) {
	for _, tc := range []struct {
		name   string
		purge  func(h *Handler, o *origin)
		stored bool
	}{
		{"purge of another tag", func(h *Handler, _ *origin) { h.store.purgeTag("some-other-tag") }, true},
		{"POST to another URL", func(h *Handler, o *origin) {
			// Another URL whose key hash shares the page's purge slot (any
			// client can find one: 4096 tries on average): the store
			// refuses the fill, and frees its body, but its waiters, who
			// came before, still get it.
			want := xxhash.Sum64String("http://example.com/busy") % purgeSlots
			for i := 0; ; i++ {
				u := "http://example.com/api/comment?n=" + strconv.Itoa(i)
				if xxhash.Sum64String(u)%purgeSlots == want {
					serve(t, h, o, newRequest(http.MethodPost, u))
					return
				}
			}
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) { unrelatedPurgeDuringAFill(t, tc.purge, tc.stored) })
	}
}

func unrelatedPurgeDuringAFill(t *testing.T, purge func(h *Handler, o *origin), wantStored bool) {
	const page = "http://example.com/busy"
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	started, resume := make(chan struct{}), make(chan struct{})
	o := &origin{}
	o.fn = func(w http.ResponseWriter, r *http.Request) error {
		if r.Method == http.MethodPost {
			w.WriteHeader(http.StatusNoContent)
			return nil
		}
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Date", c.date())
		if o.calls.Load() == 1 {
			close(started)
			<-resume
		}
		_, err := w.Write([]byte("page"))
		return err
	}
	first := serveAsync(h, httptest.NewRecorder(), newRequest(http.MethodGet, page), o)
	<-started
	const waiters = 5
	var done []<-chan any
	for range waiters {
		done = append(done, serveAsync(h, httptest.NewRecorder(), newRequest(http.MethodGet, page), o))
	}
	until(t, "the waiters to wait", func() bool { return h.flights.waiting(page) == waiters })
	purge(h, o) // nothing to do with this page
	close(resume)
	untilValue(t, "the fill", first)
	for _, d := range done {
		untilValue(t, "a waiter", d)
	}
	if n := o.calls.Load() - posts(o); n != 1 {
		t.Errorf("origin called %d times for one miss and %d waiters, want 1", n, waiters)
	}
	h.store.wait()
	if stored := h.store.get(keyHash([]byte(page)), []byte(page)) != nil; stored != wantStored {
		t.Errorf("stored: %v, want %v", stored, wantStored)
	}
}

func posts(o *origin) int32 {
	o.mu.Lock()
	defer o.mu.Unlock()
	var n int32
	for _, r := range o.reqs {
		if r.Method == http.MethodPost {
			n++
		}
	}
	return n
}
