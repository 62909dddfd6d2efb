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
// began a storable response goes on to store it only while somebody
// reads it or it makes progress, and not past the limit: a review saw a
// stalled origin (a 31 MB response that stopped after 100 KB) hold its
// request and the recording budget for as long as it stalled, and storing
// refused to every other large response meanwhile. Plain reverse_proxy
// ends such a request with its client.
func TestAbandonedFillEnds(t *testing.T) {
	for _, tc := range []struct {
		name     string
		length   int  // declared (0: none, the body is gathered whole)
		trickle  bool // a byte every few milliseconds, for ever
		waiter   bool // another request reads the fill as it arrives
		finishes bool // the origin sends the rest once the leader has left
	}{
		{name: "declared length, stalled", length: 1000},
		{name: "no length, stalled"},
		{name: "trickle", trickle: true},
		{name: "read by a waiter, stalled, then finished", length: 1000, waiter: true, finishes: true},
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
				for {
					select {
					case <-r.Context().Done():
						ended <- r.Context().Err()
						return r.Context().Err()
					case <-rest:
						_, err := io.WriteString(w, strings.Repeat("b", tc.length-100))
						ended <- err
						return err
					case <-time.After(5 * time.Millisecond):
						if tc.trickle {
							_, _ = io.WriteString(w, "t")
							http.NewResponseController(w).Flush()
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
			if tc.finishes {
				// Nobody but the waiter reads it, and no byte comes for
				// several checks: it goes on.
				time.Sleep(8 * h.coalesceWait)
				select {
				case err := <-ended:
					t.Fatalf("the origin request ended (%v) while a request read its response", err)
				default:
				}
				close(rest)
				if err := untilValue(t, "the origin to finish", ended); err != nil {
					t.Fatal(err)
				}
				<-done
				if w := untilValue(t, "the waiter's response", read); len(w.body) != tc.length {
					t.Errorf("the waiter got %d bytes, want %d", len(w.body), tc.length)
				}
				h.store.wait()
				wantStatus(t, get(t, h, o, url), []string{"hit"})
				return
			}
			if err := untilValue(t, "the abandoned fill to end", ended); !errors.Is(err, context.Canceled) {
				t.Errorf("origin request ended with %v", err)
			}
			<-done
			until(t, "its recording budget to be given back", func() bool { return h.store.arena().recording.Load() == 0 })
		})
	}
}
