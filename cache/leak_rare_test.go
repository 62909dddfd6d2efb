package cache

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// serveChecked serves r through h and reports whether the response
// completed: false when the handler aborted it (http.ErrAbortHandler, as
// reverse_proxy does for a broken stream); any other panic fails t.
func serveChecked(t *testing.T, h *Handler, w http.ResponseWriter, r *http.Request, o *origin) (completed bool) {
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				t.Errorf("%s %s: panic %v", r.Method, r.URL, v)
			}
			completed = false
		}
	}()
	if err := h.ServeHTTP(w, r, o); err != nil {
		t.Errorf("%s %s: %v", r.Method, r.URL, err)
		return false
	}
	return true
}

// TestRarePathsReturnBodies drives, concurrently and with a small store
// that evicts, the paths TestBodiesReturnToTheArena does not: 304s that
// do not select the stored response, HEADs that freshen or invalidate a
// stale GET, responses that turn uncacheable, 206s of another version, tag
// purges and unsafe-method invalidations; then every block must be back
// and every body intact. (From a review of body lifetimes.)
func TestRarePathsReturnBodies(t *testing.T) {
	before := overReleases.Load()
	c := newClock()
	h := newTestHandler(t, Config{MaxSize: 192 << 10, StaleIfError: caddy.Duration(time.Hour), MinUses: 1}, c)
	s := h.store.(*store)
	var ver atomic.Int32
	bodyFor := func(path string, v int) string {
		n, _ := strconv.Atoi(strings.TrimPrefix(path, "/p/"))
		size := 100 + (n*7+v)%9*2500
		unit := fmt.Sprintf("%s-%d|", path, v)
		return strings.Repeat(unit, size/len(unit)+1)[:size]
	}
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		hdr := w.Header()
		hdr.Set("Date", c.date())
		if r.Method == http.MethodPost {
			w.WriteHeader(http.StatusNoContent)
			return nil
		}
		v := int(ver.Load())
		n, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/p/"))
		switch (n + v) % 11 {
		case 3:
			hdr.Set("Cache-Control", "no-store")
		case 5:
			w.WriteHeader(http.StatusBadGateway)
			return nil
		default:
			hdr.Set("Cache-Control", "max-age=5")
		}
		etag := fmt.Sprintf(`"%s-%d"`, r.URL.Path, v)
		hdr.Set("Etag", etag)
		hdr.Set("X-Ver", strconv.Itoa(v))
		hdr.Set("Surrogate-Key", "k"+strconv.Itoa(n%4))
		if inm := r.Header.Get("If-None-Match"); inm != "" && rand.IntN(2) == 0 {
			if inm != etag {
				hdr.Set("Etag", `"other"`) // a 304 for another response
			}
			w.WriteHeader(http.StatusNotModified)
			return nil
		}
		b := bodyFor(r.URL.Path, v)
		if r.Header.Get("Range") == "bytes=0-9" && len(b) > 10 {
			hdr.Set("Content-Range", "bytes 0-9/"+strconv.Itoa(len(b)))
			hdr.Set("Content-Length", "10")
			w.WriteHeader(http.StatusPartialContent)
			_, _ = w.Write([]byte(b[:10]))
			return nil
		}
		if n%2 == 0 {
			hdr.Set("Content-Length", strconv.Itoa(len(b)))
		}
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			_, _ = w.Write([]byte(b[:len(b)/2]))
			_, _ = w.Write([]byte(b[len(b)/2:]))
		}
		return nil
	}}
	var wg sync.WaitGroup
	var bad, served atomic.Int32
	deadline := time.Now().Add(3 * time.Second)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				path := fmt.Sprintf("/p/%d", rand.IntN(16))
				r := newRequest(http.MethodGet, "http://example.com"+path)
				switch rand.IntN(8) {
				case 0:
					r.Method = http.MethodHead
				case 1:
					r.Header.Set("Range", "bytes=0-9")
				case 2:
					r.Header.Set("Cache-Control", "no-cache")
				case 3:
					r.Header.Set("If-None-Match", `"x"`)
				}
				w := &captureWriter{h: make(http.Header)}
				if serveChecked(t, h, w, r, o) && r.Method == http.MethodGet && w.code == http.StatusOK {
					served.Add(1)
					v, _ := strconv.Atoi(w.h.Get("X-Ver"))
					if want := bodyFor(path, v); w.body.String() != want && bad.Add(1) < 5 {
						t.Errorf("%s v%d: %d bytes, want %d, first difference at %d", path, v, w.body.Len(), len(want), firstDifference(w.body.String(), want))
					}
				}
				switch {
				case g == 0 && i%15 == 0:
					c.Advance(6 * time.Second)
				case g == 1 && i%25 == 0:
					ver.Add(1)
				case g == 2 && i%30 == 0:
					s.purgeTag("k" + strconv.Itoa(i%4))
				case g == 3 && i%20 == 0:
					serveChecked(t, h, &captureWriter{h: make(http.Header)}, newRequest(http.MethodPost, "http://example.com"+path), o)
				}
			}
		}()
	}
	wg.Wait()
	h.bg.wait()
	s.wait()
	if served.Load() == 0 {
		t.Fatal("no full response was checked")
	}
	t.Logf("%d full responses checked; store %+v", served.Load(), s.stats())
	wantNoBodyLeaked(t, s, before)
}

// TestReloadMidTraffic destroys the store (a reload that changes the
// cache) while hits, fills, coalesced waiters, slow clients and
// background refreshes read its bodies: every response that completes must
// be intact, and once all are done the arena must be unmapped with
// nothing held. (From a review of body lifetimes.)
func TestReloadMidTraffic(t *testing.T) {
	before := overReleases.Load()
	c := newClock()
	h := newTestHandler(t, Config{MaxSize: 1 << 20, StaleWhileRevalidate: caddy.Duration(30 * time.Second)}, c)
	s := h.store.(*store)
	bodyFor := func(path string, v int) string {
		n, _ := strconv.Atoi(strings.TrimPrefix(path, "/r/"))
		size := 300 + n%6*37000 // up to 185 KiB: several 64 KiB chunks
		var b strings.Builder
		for b.Len() < size {
			fmt.Fprintf(&b, "%s.v%d;", path, v)
		}
		return b.String()[:size]
	}
	var ver atomic.Int32
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		v := int(ver.Load())
		b := bodyFor(r.URL.Path, v)
		hdr := w.Header()
		hdr.Set("Date", c.date())
		hdr.Set("Cache-Control", "max-age=1")
		hdr.Set("X-Ver", strconv.Itoa(v))
		if !strings.HasSuffix(r.URL.Path, "5") {
			hdr.Set("Content-Length", strconv.Itoa(len(b)))
		}
		w.WriteHeader(http.StatusOK)
		for i := 0; i < len(b); i += 16 << 10 {
			if _, err := w.Write([]byte(b[i:min(len(b), i+16<<10)])); err != nil {
				return err
			}
			time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond)
		}
		return nil
	}}
	var wg sync.WaitGroup
	var bad, checked atomic.Int32
	var destroyed atomic.Bool
	start := time.Now()
	for g := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Since(start) < 3*time.Second; i++ {
				path := fmt.Sprintf("/r/%d", rand.IntN(12))
				r := newRequest(http.MethodGet, "http://example.com"+path)
				ranged := rand.IntN(4) == 0
				if ranged {
					r.Header.Set("Range", "bytes=100-70000")
				}
				w := &slowWriter{captureWriter: captureWriter{h: make(http.Header)}}
				if rand.IntN(3) == 0 {
					w.pause = time.Duration(rand.IntN(200)) * time.Microsecond
				}
				if serveChecked(t, h, w, r, o) && (w.code == http.StatusOK || w.code == http.StatusPartialContent) {
					checked.Add(1)
					v, _ := strconv.Atoi(w.h.Get("X-Ver"))
					want := bodyFor(path, v)
					if w.code == http.StatusPartialContent {
						want = want[100:min(len(want), 70001)]
					}
					if got := w.body.String(); got != want && bad.Add(1) < 5 {
						t.Errorf("%s v%d (%d): %d bytes, want %d, first difference at %d", path, v, w.code, len(got), len(want), firstDifference(got, want))
					}
				}
				if g == 0 && i%20 == 0 {
					c.Advance(2 * time.Second)
					ver.Add(1)
				}
				if g == 1 && time.Since(start) > 1500*time.Millisecond && destroyed.CompareAndSwap(false, true) {
					_ = h.Cleanup()
				}
			}
		}()
	}
	wg.Wait()
	h.bg.wait()
	if !destroyed.Load() || checked.Load() == 0 {
		t.Fatalf("destroyed %v, %d responses checked: the test proved nothing", destroyed.Load(), checked.Load())
	}
	t.Logf("%d responses checked", checked.Load())
	until(t, "the arena unmapped", func() bool {
		st := s.bodies.stats()
		return st.Used == 0 && st.FallbackBytes == 0 && st.Mapped == 0 && st.Recording == 0
	})
	if n := overReleases.Load() - before; n != 0 {
		t.Errorf("%d bodies released more often than acquired", n)
	}
}

// slowWriter is a captureWriter whose writes may pause: a slow client.
type slowWriter struct {
	captureWriter
	pause time.Duration
}

func (w *slowWriter) Write(p []byte) (int, error) {
	time.Sleep(w.pause)
	return w.captureWriter.Write(p)
}

func (w *slowWriter) Flush() {}

// firstDifference is the index of the first byte where a and b differ.
func firstDifference(a, b string) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
