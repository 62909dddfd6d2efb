package cache

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
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
