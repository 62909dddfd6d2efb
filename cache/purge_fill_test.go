package cache

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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

// TestUnrelatedPurgeKeepsTheFill: a purge by tag of something else, or of
// a key sharing the page's slot, while a miss of a busy URL was at the
// origin made the store refuse that miss's response, whose body was then
// freed before its waiters could take it: each asked the origin alone.
// Purges keep out only what they match (store.recent, keyPurges), and a
// purge of the page itself, which the store refuses, still answers the
// waiters that came before it once (the leader keeps the body for them).
func TestUnrelatedPurgeKeepsTheFill(t *testing.T) {
	for _, tc := range []struct {
		name   string
		purge  func(h *Handler, o *origin)
		stored bool
	}{
		{"purge of another tag", func(h *Handler, _ *origin) { h.store.purgeTag("some-other-tag") }, true},
		{"POST to another URL", func(h *Handler, o *origin) {
			// Another URL whose key hash shares the page's purge slot (any
			// client can find one: 4096 tries on average) used to make
			// the store refuse the fill: slots are only a filter now.
			want := xxhash.Sum64String("http://example.com/busy") % purgeSlots
			for i := 0; ; i++ {
				u := "http://example.com/api/comment?n=" + strconv.Itoa(i)
				if xxhash.Sum64String(u)%purgeSlots == want {
					serve(t, h, o, newRequest(http.MethodPost, u))
					return
				}
			}
		}, true},
		{"POSTs to 5,000 other URLs", func(h *Handler, o *origin) {
			// Each invalidation used to be remembered, whether or not
			// anything of its URL was stored or being fetched, and past
			// 4,096 the oldest counted as a purge of everything: any
			// client could keep every fill under way from being stored.
			for i := range 5000 {
				serve(t, h, o, newRequest(http.MethodPost, "http://example.com/beacon/"+strconv.Itoa(i)))
			}
		}, true},
		{"POST to the page itself", func(h *Handler, o *origin) {
			serve(t, h, o, newRequest(http.MethodPost, "http://example.com/busy"))
		}, false},
		{"purge of the page itself", func(h *Handler, _ *origin) {
			// The store refuses the fill and frees its body, but the
			// waiters, who came before the purge, still get it once.
			h.store.purgeKey("http://example.com/busy")
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) { unrelatedPurgeDuringAFill(t, tc.purge, tc.stored) })
	}
}

func unrelatedPurgeDuringAFill(t *testing.T, purge func(h *Handler, o *origin), wantStored bool) {
	const page = "http://example.com/busy"
	h, o, first, resume := busyPage(t, page)
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

// busyPage starts a GET of page through a new handler whose origin holds
// its first answer (a stored page) until resume is closed, and answers
// unsafe requests 204; it returns once that GET is at the origin.
func busyPage(t *testing.T, page string) (h *Handler, o *origin, first <-chan any, resume chan struct{}) {
	t.Helper()
	c := newClock()
	h = newTestHandler(t, Config{}, c)
	started := make(chan struct{})
	resume = make(chan struct{})
	o = &origin{}
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
	first = serveAsync(h, httptest.NewRecorder(), newRequest(http.MethodGet, page), o)
	<-started
	return h, o, first, resume
}

func posts(o *origin) int32 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.byMethod[http.MethodPost]
}

// TestConcurrentPrefixPurgesKeepOutTheFill: concurrent purges by prefix
// each keep out a fill of their prefix that began before them. They number
// themselves (purgeSeq) before taking recentMu, so one numbered first could
// take the lock last and lower recentSeq, and purgedSince's fast path
// missed the later purge; recentSeq only rises now.
func TestConcurrentPrefixPurgesKeepOutTheFill(t *testing.T) {
	s := newTestStore(t, 1<<20)
	for trial := 0; trial < 20000; trial++ {
		var wg sync.WaitGroup
		start := make(chan struct{})
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				s.markRecent(fmt.Sprintf("http://p%d/", g), "")
			}()
		}
		close(start)
		wg.Wait()
		last := s.purgeSeq.Load()
		if got := s.recentSeq.Load(); got != last {
			// The fill of the later purge's prefix that began just before it.
			var later recentPurge
			s.recentMu.Lock()
			for _, p := range s.recent {
				if p.seq == last {
					later = p
				}
			}
			s.recentMu.Unlock()
			e := testEntry(later.prefix.s+"doc", 10)
			e.epoch = last - 1
			if !s.purgedSince(e) {
				e.body.acquire()
				s.set(e)
				s.wait()
				stored := s.get(e.hash, []byte(e.key)) != nil
				t.Fatalf("stored after the purge: %v; "+"trial %d: recentSeq %d after purge %d: a fill of %s begun before its purge is not kept out", stored, trial, got, last, later.prefix.s)
			}
		}
	}
}

// TestCoalescedBodiesReturnToTheArena stresses the coalesced paths that
// take a body reference after f.wait (held answers, kept bodies the store
// refused, clients that leave, variants, streaming fills, purges, drops
// by outdated), then purges everything: the arena must be empty.
func TestCoalescedBodiesReturnToTheArena(t *testing.T) {
	before := overReleases.Load()
	c := newClock()
	h := newTestHandler(t, Config{MaxSize: 128 << 10}, c)
	s := h.store.(*store)
	bodyFor := func(path string) string {
		n, _ := strconv.Atoi(strings.TrimPrefix(path, "/c/"))
		return strings.Repeat(string(rune('a'+n%26)), 200+n%5*7000)
	}
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		if r.Method == http.MethodPost {
			w.WriteHeader(http.StatusNoContent)
			return nil
		}
		b := bodyFor(r.URL.Path)
		hdr := w.Header()
		hdr.Set("Date", c.date())
		hdr.Set("Cache-Control", "max-age=600")
		hdr.Set("Surrogate-Key", "t"+r.URL.Path[len(r.URL.Path)-1:])
		if strings.HasSuffix(r.URL.Path, "3") {
			hdr.Set("Vary", "Accept-Language")
		}
		if !strings.HasSuffix(r.URL.Path, "7") {
			hdr.Set("Content-Length", strconv.Itoa(len(b)))
		}
		time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond)
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(b[:len(b)/2]))
		time.Sleep(time.Duration(rand.IntN(2)) * time.Millisecond)
		_, err := w.Write([]byte(b[len(b)/2:]))
		return err
	}}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			switch i % 4 {
			case 0:
				s.purgeKey(fmt.Sprintf("http://example.com/c/%d", i%8))
			case 1:
				s.purgePrefix("http://example.com/c/1")
			case 2:
				s.purgeTag(fmt.Sprintf("t%d", i%10))
			case 3:
				_ = h.ServeHTTP(&captureWriter{h: make(http.Header)}, newRequest(http.MethodPost, fmt.Sprintf("http://example.com/c/%d", i%8)), o)
			}
			time.Sleep(500 * time.Microsecond)
		}
	}()
	deadline := time.Now().Add(8 * time.Second)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 400 && time.Now().Before(deadline); i++ {
				path := fmt.Sprintf("/c/%d", rand.IntN(8))
				r := newRequest(http.MethodGet, "http://example.com"+path, "Accept-Language", []string{"en", "de"}[rand.IntN(2)])
				var cancel context.CancelFunc = func() {}
				if rand.IntN(3) == 0 {
					var ctx context.Context
					ctx, cancel = context.WithTimeout(r.Context(), time.Duration(rand.IntN(3000))*time.Microsecond)
					r = r.WithContext(ctx)
				}
				w := &captureWriter{h: make(http.Header)}
				func() {
					defer func() { _ = recover() }()
					_ = h.ServeHTTP(w, r, o)
				}()
				cancel()
				if w.code == http.StatusOK && r.Context().Err() == nil && w.body.String() != bodyFor(path) {
					t.Errorf("%s: got %d bytes, want %d", path, w.body.Len(), len(bodyFor(path)))
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	time.Sleep(50 * time.Millisecond)
	h.bg.wait()
	s.wait()
	wantNoBodyLeaked(t, s, before)
}

// TestWaitedBeforeThePurgeGetsTheAnswer: a request that waited for a fill
// before its key was purged gets the fill's answer once (Handler.outdated's
// contract), whatever other keys were purged or invalidated meanwhile: an
// unrelated POST between the fill's start and the wait must not make it
// ask the origin again.
func TestWaitedBeforeThePurgeGetsTheAnswer(t *testing.T) {
	const page = "http://example.com/busy"
	h, o, first, resume := busyPage(t, page)
	// An unrelated unsafe request (its own key, another slot).
	serve(t, h, o, newRequest(http.MethodPost, "http://example.com/api/comment"))
	w := httptest.NewRecorder()
	waiter := serveAsync(h, w, newRequest(http.MethodGet, page), o)
	until(t, "the request to wait", func() bool { return h.flights.waiting(page) == 1 })
	h.store.purgeKey(page) // after the request began to wait
	close(resume)
	untilValue(t, "the fill", first)
	untilValue(t, "the waiter", waiter)
	if n := o.calls.Load() - posts(o); n != 1 {
		t.Errorf("origin asked %d times: the request that waited before the purge did not get the fill's answer", n)
	}
	if !strings.Contains(w.Header().Get("Cache-Status"), "collapsed") {
		t.Errorf("Cache-Status %q, want the collapsed answer", w.Header().Get("Cache-Status"))
	}
}

// TestDrainWithoutWaitersAllocatesNothing: drain runs at the end of every
// stored miss a request leads, almost always with nobody waiting, and then
// allocates nothing (it made a channel each time: one more allocation per
// stored miss).
func TestDrainWithoutWaitersAllocatesNothing(t *testing.T) {
	fs := make([]flight, 300)
	i := 0
	if n := testing.AllocsPerRun(100, func() { fs[i].drain(time.Second); i++ }); n != 0 {
		t.Errorf("drain with no waiters: %v allocs, want 0", n)
	}
}

// TestPurgedKeysAreBounded: the store remembers the latest purgeKeys
// purged keys; an older one counts as a purge of everything, so a fill
// that began before it is still kept out.
func TestPurgedKeysAreBounded(t *testing.T) {
	s := newTestStore(t, 1<<20)
	e := testEntry("http://a/doc", 10)
	e.epoch = s.epoch() // began before the purges
	s.mark(e.hash)
	for i := range purgeKeys + 10 {
		s.mark(uint64(i) + 1<<40)
	}
	if len(s.keyPurges) > purgeKeys || len(s.keyOrder) > purgeKeys {
		t.Errorf("%d keys remembered, in a ring of %d; want at most %d", len(s.keyPurges), len(s.keyOrder), purgeKeys)
	}
	if !s.purgedSince(e) {
		t.Error("a fill that began before a purge of its key, since forgotten, is not kept out")
	}
	later := testEntry("http://a/other", 10)
	later.epoch = s.epoch() // began after every purge
	if s.purgedSince(later) {
		t.Error("a fill that began after the purges is kept out")
	}
}

// TestForgottenPurgeFoldRace: a purge of an entry's key that another
// purge folds into the mark for everything (the ring is full) while
// purgedSince looks is still seen: purgedSince read that mark first, then
// the keys, and missed it in between (a race: it tries many times).
func TestForgottenPurgeFoldRace(t *testing.T) {
	if testing.Short() {
		t.Skip("a race it tries thousands of times to lose")
	}
	s := newTestStore(t, 1<<20)
	e := testEntry("http://a/doc", 10)
	other := uint64(1 << 40)
	for range purgeKeys {
		other++
		s.mark(other)
	}
	misses := 0
	for trial := 0; trial < 6000 && misses == 0; trial++ {
		e.epoch = s.epoch() // the fill begins
		s.mark(e.hash)      // its key is purged
		for range purgeKeys - 1 {
			other++
			s.mark(other)
		}
		// The key's purge is now the oldest in the ring: the next mark
		// folds it into allMark.
		var done atomic.Bool
		var go1 atomic.Bool
		other++
		o := other
		go func() {
			for !go1.Load() {
				runtime.Gosched()
			}
			s.mark(o)
			done.Store(true)
		}()
		go1.Store(true)
		for !done.Load() {
			if !s.purgedSince(e) {
				misses++
				break
			}
			// With one P (or its thread descheduled on a busy machine)
			// the marking goroutine runs only once this one yields: a
			// bare spin waited for async preemption (10 ms or more) on
			// each of 6000 trials. With two Ps the calls above still
			// overlap the mark.
			runtime.Gosched()
		}
		for !done.Load() {
			runtime.Gosched()
		}
		if !s.purgedSince(e) {
			t.Fatal("after the fold: not kept out")
		}
	}
	if misses > 0 {
		t.Errorf("purgedSince missed a purge of the entry's own key while it was folded into allMark")
	}
}

// TestTagPurgeDuringAVariantFillStoresNoRecord: a URL's first variant,
// tagged, is being fetched when its tag is purged: the store refuses the
// variant, and its new variant record is not stored alone either (a
// review: it stayed, counted, and made the next request a vary-miss).
func TestTagPurgeDuringAVariantFillStoresNoRecord(t *testing.T) {
	const page = "http://example.com/varied"
	c := newClock()
	h := newTestHandler(t, Config{MinUses: 1}, c)
	started, resume := make(chan struct{}), make(chan struct{})
	o := &origin{}
	o.fn = func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Vary", "Accept-Language")
		w.Header().Set("Surrogate-Key", "news")
		w.Header().Set("Date", c.date())
		if o.calls.Load() == 1 {
			close(started)
			<-resume
		}
		_, err := w.Write([]byte("page"))
		return err
	}
	req := func() *http.Request {
		r := newRequest(http.MethodGet, page)
		r.Header.Set("Accept-Language", "fr")
		return r
	}
	first := serveAsync(h, httptest.NewRecorder(), req(), o)
	<-started
	h.store.purgeTag("news")
	close(resume)
	untilValue(t, "the fill", first)
	h.store.wait()
	if n := countStored(h.store.(*store)); n != 0 {
		t.Errorf("%d entries stored after the purge of the fill's tag, want none (no record alone)", n)
	}
	w := serve(t, h, o, req())
	if cs := w.Header().Get("Cache-Status"); !strings.Contains(cs, "fwd=uri-miss") {
		t.Errorf("the next request: Cache-Status %q, want a uri-miss", cs)
	}
}

// TestTagPurgeOfOneVariantKeepsAnotherBeingFilled: a tag purge takes the
// only stored variant of a URL while another variant, of a declared
// length, is being filled; that one is stored under the URL's record and
// found by the next request (a review: a tag purge that dropped the
// record left it unreachable).
func TestTagPurgeOfOneVariantKeepsAnotherBeingFilled(t *testing.T) {
	const page = "http://example.com/varied"
	c := newClock()
	h := newTestHandler(t, Config{MinUses: 1}, c)
	started, resume := make(chan struct{}), make(chan struct{})
	var frSent atomic.Bool
	o := &origin{}
	o.fn = func(w http.ResponseWriter, r *http.Request) error {
		lang := r.Header.Get("Accept-Language")
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Vary", "Accept-Language")
		w.Header().Set("Surrogate-Key", "tag-"+lang)
		w.Header().Set("Date", c.date())
		w.Header().Set("Content-Length", "7")
		if lang == "fr" && !frSent.Swap(true) { // the first fr only
			w.WriteHeader(http.StatusOK)
			w.Write([]byte("page"))
			close(started)
			<-resume
		}
		_, err := w.Write([]byte(map[string]string{"en": "page-en", "fr": "-fr"}[lang]))
		return err
	}
	req := func(lang string) *http.Request {
		r := newRequest(http.MethodGet, page)
		r.Header.Set("Accept-Language", lang)
		return r
	}
	serve(t, h, o, req("en"))
	h.store.wait()
	fill := serveAsync(h, httptest.NewRecorder(), req("fr"), o)
	<-started
	if n := h.store.purgeTag("tag-en"); n != 1 {
		t.Errorf("purged %d, want 1", n)
	}
	close(resume)
	untilValue(t, "the fill", fill)
	h.store.wait()
	w := serve(t, h, o, req("fr"))
	if cs := w.Header().Get("Cache-Status"); !strings.Contains(cs, "; hit") || w.Body.String() != "page-fr" {
		t.Errorf("fr after the purge of en's tag: Cache-Status %q, body %q; want a hit of page-fr", cs, w.Body.String())
	}
}
