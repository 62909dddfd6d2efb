package cache

import (
	"bytes"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// gatedBodyWriter blocks its first Write, once entered is closed, until
// release is closed: a client that reads slowly.
type gatedBodyWriter struct {
	*syncWriter
	entered, release chan struct{}
	once             sync.Once
}

func (w *gatedBodyWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.entered); <-w.release })
	return w.syncWriter.Write(p)
}

// TestSlowReadersOfEvictedBodiesBoundMemory: bodies purged (or evicted)
// while slow clients still read them keep their arena blocks; once those
// fill the arena, further misses go to the heap only up to its allowance
// and are then streamed whole without being stored, rather than held on
// the heap however many slow clients there are. Once the readers are
// done, misses are stored again. Bodies of declared length find no room at
// their header; those of unknown length when they are moved into the
// arena at their end.
func TestSlowReadersOfEvictedBodiesBoundMemory(t *testing.T) {
	t.Run("declared length", func(t *testing.T) { testSlowReadersBoundMemory(t, true) })
	t.Run("unknown length", func(t *testing.T) { testSlowReadersBoundMemory(t, false) })
}

func testSlowReadersBoundMemory(t *testing.T, declared bool) {
	c := newClock()
	h := newTestHandler(t, Config{MaxSize: 1 << 20, MinUses: 1}, c)
	const size = 48 << 10
	content := func(path string) []byte { return bytes.Repeat([]byte(path+";"), size)[:size] }
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Date", c.date())
		if declared {
			w.Header().Set("Content-Length", strconv.Itoa(size))
		}
		w.WriteHeader(http.StatusOK)
		_, err := w.Write(content(r.URL.Path))
		return err
	}}
	a := h.store.arena()
	release := make(chan struct{})
	var readers sync.WaitGroup
	var slow []*gatedBodyWriter
	var paths []string
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
		readers.Wait()
	}()
	var noRoom uint64
	for i := range 2 * a.maxChunks {
		path := "/o" + strconv.Itoa(i)
		url := "http://example.com" + path
		w := get(t, h, o, url)
		if w.Code != http.StatusOK || !bytes.Equal(w.Body.Bytes(), content(path)) {
			t.Fatalf("miss %d: status %d, %d bytes, not the origin's", i, w.Code, w.Body.Len())
		}
		h.store.wait()
		if n := a.stats().NoRoom; n > noRoom {
			// Streamed, not stored (said at the header when the length
			// is declared): nothing to read slowly, and the next request
			// has the whole body too.
			if hasDetail := strings.Contains(w.Header().Get("Cache-Status"), "detail=no-room"); hasDetail != declared {
				t.Errorf("a miss not stored for want of room: Cache-Status %q", w.Header().Get("Cache-Status"))
			}
			if w := get(t, h, o, url); !bytes.Equal(w.Body.Bytes(), content(path)) {
				t.Fatalf("after a miss not stored, %s gave %d bytes (%q)", path, w.Body.Len(), w.Header()["Cache-Status"])
			}
			h.store.wait()
			noRoom = a.stats().NoRoom
			continue
		}
		// A slow client starts reading the stored body, then the body
		// leaves the store under it.
		sw := &gatedBodyWriter{syncWriter: newSyncWriter(), entered: make(chan struct{}), release: release}
		readers.Add(1)
		go func() {
			defer readers.Done()
			_ = h.ServeHTTP(sw, newRequest(http.MethodGet, url), o)
		}()
		<-sw.entered
		slow, paths = append(slow, sw), append(paths, path)
		h.store.purgeAll()
		if st := a.stats(); st.FallbackBytes > a.heapLimit {
			t.Fatalf("after %d slow readers the heap holds %d bytes of bodies, over its allowance of %d", len(slow), st.FallbackBytes, a.heapLimit)
		}
	}
	st := a.stats()
	t.Logf("%d slow readers, %d misses not stored for want of room: %+v", len(slow), noRoom, st)
	if noRoom == 0 {
		t.Fatal("the arena never ran out of room")
	}
	if st.Mapped > int64(a.maxChunks)<<a.chunkShift {
		t.Errorf("mapped %d bytes, over the arena's %d chunks", st.Mapped, a.maxChunks)
	}

	close(release)
	readers.Wait()
	for i, sw := range slow {
		if sw.code != http.StatusOK || !bytes.Equal(sw.body, content(paths[i])) {
			t.Errorf("slow reader %d got %d bytes, not its body", i, len(sw.body))
		}
	}
	if st := a.stats(); st.Used != 0 || st.FallbackBytes != 0 {
		t.Errorf("readers done and the store empty, yet %+v", st)
	}
	const again = "http://example.com/again"
	get(t, h, o, again)
	h.store.wait()
	wantStatus(t, get(t, h, o, again), []string{"hit"})
}

// TestStoreClosedMidFillStillCoalesces: a response being recorded when
// its store closes (a reload) still answers the requests waiting for it,
// however large: its arena then allocates on the heap past the allowance
// (the recording budget bounds what is being recorded), as before that
// allowance (found by a review of it: each waiter had gone to the origin).
func TestStoreClosedMidFillStillCoalesces(t *testing.T) {
	for _, declared := range []bool{true, false} {
		t.Run("declared="+strconv.FormatBool(declared), func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{MaxSize: 1 << 20}, c)
			const size = 100 << 10 // over the heap allowance of 32 KiB
			content := bytes.Repeat([]byte("closed;"), size)[:size]
			gate := make(chan struct{})
			o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
				<-gate
				w.Header().Set("Cache-Control", "max-age=60")
				if declared {
					w.Header().Set("Content-Length", strconv.Itoa(size))
				}
				w.WriteHeader(http.StatusOK)
				_, err := w.Write(content)
				return err
			}}
			const target = "http://example.com/closed"
			out := make([]*syncWriter, 4)
			var wg sync.WaitGroup
			for i := range out {
				out[i] = newSyncWriter()
				wg.Add(1)
				go func() {
					defer wg.Done()
					_ = h.ServeHTTP(out[i], newRequest(http.MethodGet, target), o)
				}()
			}
			until(t, "three waiters", func() bool { return h.flights.waiting(target) == 3 })
			_ = h.store.(*store).Destruct()
			close(gate)
			wg.Wait()
			for i, w := range out {
				if w.code != http.StatusOK || !bytes.Equal(w.body, content) {
					t.Errorf("client %d: %d, %d bytes", i, w.code, len(w.body))
				}
			}
			if n := o.calls.Load(); n != 1 {
				t.Errorf("%d origin requests, want 1", n)
			}
			if st := h.store.arena().stats(); st.Used != 0 || st.FallbackBytes != 0 || st.Recording != 0 || st.NoRoom != 0 {
				t.Errorf("after: %+v", st)
			}
		})
	}
}
