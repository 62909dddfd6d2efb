package cache

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// Purges and invalidations: what they count and what they leave alone
// (found by a review of the change that made overlapping purges count
// each entry once).

// TestDropOfQueuedOfferCounts: an offer still in ristretto's buffer
// is served (get finds it in its queued slot); an invalidation that
// removes it removes an entry, and counts it (purge answers, purges_total).
func TestDropOfQueuedOfferCounts(t *testing.T) {
	url := "http://a/v?"
	v := testEntry("\x00"+url+"\x001\x00\x00gzip", 10)
	v.parent = keyHash([]byte(url))
	release := holdTake(t, anyOffer)
	s := newTestStore(t, 1<<20)
	func() {
		defer release()
		if !s.set(v) {
			t.Fatal("set dropped")
		}
		if got := s.get(v.hash, []byte(v.key)); got != v {
			t.Fatalf("queued variant not served: %v", got)
		}
		before := s.purges.Load()
		if n := s.invalidateKey(url); n != 1 {
			t.Errorf("invalidation removed the variant being served and counted %d, want 1", n)
		}
		if got := s.purges.Load() - before; got != 1 {
			t.Errorf("purges counted %d, want 1", got)
		}
		if s.get(v.hash, []byte(v.key)) != nil {
			t.Error("still served")
		}
	}()
	s.wait()
}

// TestUnsafeRequestsDoNotCountAsUses: invalidations of a URL that is
// not cached (POSTs to it) are no lookups of it: they must not raise its
// standing in ristretto's admission policy.
func TestUnsafeRequestsDoNotCountAsUses(t *testing.T) {
	s := newTestStore(t, 1<<20)
	var stored []*entry
	for i := 0; s.stats().Rejects == 0 && i < 200; i++ {
		e := testEntry(fmt.Sprintf("http://a/p/%d?", i), 32<<10)
		s.set(e)
		s.wait()
		stored = append(stored, e)
	}
	// The stored entries are each asked for a few times.
	for range 4 {
		for _, e := range stored {
			s.lookup(e.hash)
		}
	}
	time.Sleep(100 * time.Millisecond)
	admitted := func(key string) bool {
		e := testEntry(key, 32<<10)
		s.set(e)
		s.wait()
		return s.has(e)
	}
	if admitted("http://a/control?") {
		t.Skip("a new key is admitted without any use: the store is not full")
	}
	const posted = "http://a/form?"
	for range 300 {
		s.invalidateKey(posted) // POSTs to a URL that is not cached
	}
	time.Sleep(100 * time.Millisecond)
	if admitted(posted) {
		t.Errorf("a URL never looked up, only POSTed to 300 times, is admitted into a full store where a new URL is refused: unsafe requests counted as uses")
	}
}

// TestPurgeKeyOfHostlessRequest: an HTTP/1.0 request without Host is
// cached under a key with an empty host; the admin purge must accept the
// key the cache reports (status_key) for it.
func TestPurgeKeyOfHostlessRequest(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{CacheName: "admin-hostless", MinUses: 1}, c)
	o := static(c, 200, "page", "Cache-Control", "max-age=60")
	api := AdminAPI{}
	for _, port := range []int{80, 8080} {
		mk := func() *http.Request {
			r := newRequest(http.MethodGet, "http://example.net/a")
			r.Host = ""
			r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/1.0", 1, 0
			return r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}))
		}
		serve(t, h, o, mk())
		h.store.wait()
		wantStatus(t, serve(t, h, o, mk()), []string{"hit"})
		key := keyOf(t, h, mk())
		w := httptest.NewRecorder()
		body := `{"key":"` + key + `"}`
		err := api.handlePurge(w, httptest.NewRequest(http.MethodPost, "/response_cache/purge", strings.NewReader(body)))
		if err != nil || !strings.Contains(w.Body.String(), `"purged":1`) {
			t.Errorf("port %d: purge of the stored key %q: err %v, answer %s; want 1 purged", port, key, err, w.Body.String())
		}
	}
}
