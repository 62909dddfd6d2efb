package cache

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestAbandonedFillEnds: a miss whose client leaves after the origin
// began a storable response goes on to store it while somebody reads it,
// or while it makes progress and does not hold the recording budget
// others are refused, and ends otherwise: a review saw a stalled origin (a
// 31 MB response that stopped after 100 KB) hold its request and the
// recording budget for as long as it stalled, and storing refused to every
// other large response meanwhile. Plain reverse_proxy ends such a request
// with its client. (A review of the first version, which ended every
// abandoned fill a minute after its client left: a 2 MB body arriving
// steadily at 25 KB/s was cut at 1.55 MB and fetched again.)
func TestAbandonedFillEnds(t *testing.T) {
	for _, tc := range []struct {
		name    string
		length  int  // declared (0: none, the body is gathered whole)
		steady  bool // 10 bytes every 5 ms, to length (for ever without)
		refuse  bool // another response is refused the recording budget meanwhile
		waiter  bool // another request reads the fill as it arrives
		rest    bool // the origin sends the rest when told (after a stall)
		stored  bool // the fill is finished and stored
		because string
	}{
		{name: "declared length, stalled", length: 1000},
		{name: "no length, stalled"},
		{name: "trickle, the budget refused to another", steady: true, refuse: true},
		{name: "declared length, steady past the limit, room", length: 1000, steady: true, stored: true,
			because: "a fill that comes steadily while the budget has room goes on"},
		{name: "read by a waiter, stalled, then finished", length: 1000, waiter: true, rest: true, stored: true,
			because: "a fill a request reads goes on"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{MaxItemSize: 1 << 20}, c)
			h.coalesceWait, h.abandonLimit = 50*time.Millisecond, 300*time.Millisecond
			ended := make(chan error, 1)
			answered, rest := make(chan struct{}), make(chan struct{})
			o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
				w.Header().Set("Cache-Control", "max-age=60")
				w.Header().Set("Date", c.date())
				if tc.length > 0 {
					w.Header().Set("Content-Length", strconv.Itoa(tc.length))
				}
				w.WriteHeader(http.StatusOK)
				_, _ = io.WriteString(w, strings.Repeat("a", 100))
				http.NewResponseController(w).Flush()
				close(answered)
				for sent := 100; ; {
					select {
					case <-r.Context().Done():
						ended <- r.Context().Err()
						return r.Context().Err()
					case <-rest:
						_, err := io.WriteString(w, strings.Repeat("b", tc.length-sent))
						ended <- err
						return err
					case <-time.After(5 * time.Millisecond):
						if tc.steady {
							_, _ = io.WriteString(w, strings.Repeat("s", 10))
							http.NewResponseController(w).Flush()
							if sent += 10; sent == tc.length {
								ended <- nil
								return nil
							}
						}
					}
				}
			}}
			const url = "http://example.com/abandoned"
			client, leave := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				defer close(done)
				_ = h.ServeHTTP(newWriter(), newRequest(http.MethodGet, url).WithContext(client), o)
			}()
			<-answered
			read := make(chan *writer, 1)
			if tc.waiter {
				reading := make(chan struct{})
				go func() {
					w := newWriter()
					w.onWrite = sync.OnceFunc(func() { close(reading) })
					_ = h.ServeHTTP(w, newRequest(http.MethodGet, url), o)
					read <- w
				}()
				<-reading
			}
			leave()
			if tc.refuse {
				time.Sleep(2 * h.coalesceWait) // after the client left, as the watcher counts
				a := h.store.arena()
				if a.reserve(a.recordLimit, 0, nil) {
					t.Fatal("the budget had room beside the fill")
				}
			}
			if tc.rest {
				// Nobody but the waiter reads it, and no byte comes for
				// several checks and past the limit: it goes on.
				time.Sleep(2 * h.abandonLimit)
				select {
				case err := <-ended:
					t.Fatalf("the origin request ended (%v) while a request read its response", err)
				default:
				}
				close(rest)
			}
			if !tc.stored {
				if err := untilValue(t, "the abandoned fill to end", ended); !errors.Is(err, context.Canceled) {
					t.Errorf("origin request ended with %v", err)
				}
				<-done
				until(t, "its recording budget to be given back", func() bool { return h.store.arena().recording.Load() == 0 })
				return
			}
			if err := untilValue(t, "the origin to finish", ended); err != nil {
				t.Fatalf("%s, but it ended with %v", tc.because, err)
			}
			<-done
			if tc.waiter {
				if w := untilValue(t, "the waiter's response", read); len(w.body) != tc.length {
					t.Errorf("the waiter got %d bytes, want %d", len(w.body), tc.length)
				}
			}
			h.store.wait()
			wantStatus(t, get(t, h, o, url), []string{"hit"})
		})
	}
}
