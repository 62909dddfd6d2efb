package cache

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestBodiesReturnToTheArena runs every path that takes or shares a body
// reference (misses that store, hits, Range, HEAD, variants, 304
// refreshes, stale-while-revalidate, stale-if-error, coalesced waiters,
// evictions of a small cache, replacements, purges) concurrently, then
// empties the store: every arena block must be free again, nothing
// released twice, and every response intact.
func TestBodiesReturnToTheArena(t *testing.T) {
	before := overReleases.Load()
	c := newClock()
	const maxSize = 256 << 10 // small: the run evicts constantly
	h := newTestHandler(t, Config{MaxSize: maxSize, StaleIfError: 3600_000_000_000}, c)
	s := h.store.(*store)

	bodyFor := func(path string) string {
		n, _ := strconv.Atoi(strings.TrimPrefix(path, "/o/"))
		size := 100 + n%7*3000 // 100 B to 18 KiB: several block orders
		return strings.Repeat(string(rune('a'+n%26)), size)
	}
	var mu sync.Mutex
	failing := false
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		mu.Lock()
		fail := failing
		mu.Unlock()
		if fail && r.URL.Path < "/o/5" {
			w.WriteHeader(http.StatusServiceUnavailable)
			return nil
		}
		b := bodyFor(r.URL.Path)
		hdr := w.Header()
		hdr.Set("Date", c.date())
		hdr.Set("Etag", `"`+r.URL.Path+`"`)
		hdr.Set("Cache-Control", "max-age=10, stale-while-revalidate=5")
		if strings.HasSuffix(r.URL.Path, "3") {
			hdr.Set("Vary", "Accept-Language")
		}
		if r.Header.Get("If-None-Match") == hdr.Get("Etag") {
			w.WriteHeader(http.StatusNotModified)
			return nil
		}
		if !strings.HasSuffix(r.URL.Path, "7") { // some of unknown length
			hdr.Set("Content-Length", strconv.Itoa(len(b)))
		}
		_, _ = w.Write([]byte(b))
		return nil
	}}

	var wg sync.WaitGroup
	errs := make(chan string, 64)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 300; i++ {
				path := fmt.Sprintf("/o/%d", (i*7+g)%80)
				want := bodyFor(path)
				r := newRequest(http.MethodGet, "http://example.com"+path, "Accept-Language", []string{"en", "de"}[i%2])
				switch i % 5 {
				case 1:
					r.Method = http.MethodHead
				case 2:
					r.Header.Set("Range", "bytes=10-49")
				}
				w := &captureWriter{h: make(http.Header)}
				if err := h.ServeHTTP(w, r, o); err != nil {
					errs <- err.Error()
					return
				}
				switch {
				case r.Method == http.MethodHead && w.body.Len() == 0:
					want = "" // from the cache (the fake origin writes bodies for HEAD)
				case w.code == http.StatusPartialContent:
					want = want[10:50]
				}
				if w.code == http.StatusOK || w.code == http.StatusPartialContent {
					if w.body.String() != want {
						errs <- fmt.Sprintf("%s %s: got %d bytes %.20q, want %d bytes %.20q", r.Method, path, w.body.Len(), w.body.String(), len(want), want)
						return
					}
				}
				switch {
				case g == 0 && i%50 == 0:
					c.Advance(11 * time.Second) // stale: swr, 304s, stale-if-error
				case g == 1 && i%60 == 0:
					mu.Lock()
					failing = !failing
					mu.Unlock()
				case g == 2 && i%100 == 0:
					s.purgePrefix("http://example.com/o/1")
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	h.bg.wait()
	s.wait()
	if st := s.stats(); st.Evictions+st.Rejects == 0 || st.Bodies.Used+st.Bodies.FallbackBytes == 0 {
		t.Errorf("the run neither evicted nor held anything (%+v): it proves nothing", st)
	}
	wantNoBodyLeaked(t, s, before)
}

// wantNoBodyLeaked purges everything from s and fails t unless its arena
// is then empty and no body was released more often than acquired since
// overReleases was before. At once: a handler returns holding no
// reference of its own (a client's writer goroutine drops its reference
// before the handler hears it ended), and s.wait() lets ristretto's
// goroutine apply the purge.
func wantNoBodyLeaked(t *testing.T, s *store, before uint64) {
	t.Helper()
	s.purgeAll()
	s.wait()
	if st := s.bodies.stats(); st.Used != 0 || st.FallbackBytes != 0 {
		t.Errorf("after purging everything the arena still holds %d bytes (%d on the heap): a body reference leaked", st.Used, st.FallbackBytes)
	}
	if st := s.bodies.stats(); st.Recording != 0 {
		t.Errorf("with nothing in flight %d bytes of the recording budget are still reserved", st.Recording)
	}
	if n := overReleases.Load() - before; n != 0 {
		t.Errorf("%d bodies released more often than acquired", n)
	}
}

// captureWriter records a response for concurrent tests.
type captureWriter struct {
	h    http.Header
	code int
	body strings.Builder
}

func (w *captureWriter) Header() http.Header { return w.h }
func (w *captureWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}
func (w *captureWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.body.Write(p)
}
