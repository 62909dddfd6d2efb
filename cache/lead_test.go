package cache

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// These tests are about clients that read slower than their origin
// sends, or not at all: a storable body is recorded at the origin's
// pace, whatever its client does, as far as the lead budget allows (see
// recorder.decouple, holdLead).

// pieceOrigin answers with body in writes of piece bytes, flushing after
// each, as reverse_proxy does for a body of unknown length; without
// Content-Length unless declared. Once wrote bytes are written it waits
// for gate, if set. sent counts the bytes written.
type pieceOrigin struct {
	*origin
	sent atomic.Int64
}

func newPieceOrigin(c *clock, body []byte, piece int, declared bool, wrote int, gate <-chan struct{}) *pieceOrigin {
	o := &pieceOrigin{origin: &origin{}}
	o.fn = func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Date", c.date())
		if declared {
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		}
		rc := http.NewResponseController(w)
		for off := 0; off < len(body); {
			if gate != nil && off >= wrote {
				<-gate
				gate = nil
			}
			n := min(piece, len(body)-off)
			if _, err := w.Write(body[off : off+n]); err != nil {
				return err
			}
			_ = rc.Flush()
			off += n
			o.sent.Store(int64(off))
		}
		return nil
	}
	return o
}

// breakOffFirst makes o break its first response off after its body, as
// reverse_proxy does when its origin does (panic(http.ErrAbortHandler)).
func (o *pieceOrigin) breakOffFirst() {
	fn := o.fn
	o.fn = func(w http.ResponseWriter, r *http.Request) error {
		if o.calls.Load() > 1 {
			return fn(w, r)
		}
		_ = fn(w, r)
		panic(http.ErrAbortHandler)
	}
}

// stallingWriter takes the first allow bytes, then holds every Write
// until release is closed: a client that stops reading.
type stallingWriter struct {
	*syncWriter
	allow   int
	release chan struct{}
	stalled atomic.Bool
}

func newStallingWriter(allow int) *stallingWriter {
	return &stallingWriter{syncWriter: newSyncWriter(), allow: allow, release: make(chan struct{})}
}

func (w *stallingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	n := len(w.body)
	w.mu.Unlock()
	if n+len(p) > w.allow {
		w.stalled.Store(true)
		<-w.release
	}
	return w.syncWriter.Write(p)
}

// releaseWhole lets client read, and checks that its response, which done
// reports the end of, ends without a panic and with body whole.
func releaseWhole(t *testing.T, client *stallingWriter, done <-chan any, body []byte) {
	t.Helper()
	close(client.release)
	if p := untilValue(t, "the response to end", done); p != nil {
		t.Fatalf("handler panicked: %v", p)
	}
	if _, got := client.got(); got != string(body) {
		t.Fatalf("the client got %d bytes, differing from the origin's %d", len(got), len(body))
	}
}

// leadStalledWithWaiter starts a GET of target through h, whose client
// stops reading after 40000 bytes, and, once o has sent 100000 bytes (and
// waits at its gate), a second one that waits for the first; it returns
// the first's client and what each request ends with (see serveAsync).
func leadStalledWithWaiter(t *testing.T, h *Handler, o *pieceOrigin, target string) (leader *stallingWriter, leaderDone, waiterDone <-chan any) {
	t.Helper()
	leader = newStallingWriter(40000)
	leaderDone = serveAsync(h, leader, newRequest(http.MethodGet, target), o)
	until(t, "the origin to have sent 100000 bytes", func() bool { return o.sent.Load() == 100000 })
	waiterDone = serveAsync(h, newSyncWriter(), newRequest(http.MethodGet, target), o)
	until(t, "a request to wait for the leader", func() bool { return h.flights.waiting(target) == 1 })
	return leader, leaderDone, waiterDone
}

// releaseLeader lets the leader's client of leadStalledWithWaiter read,
// fails t if the waiter panicked, and returns what the leader's handler
// ended with (nil, or what it panicked with).
func releaseLeader(t *testing.T, leader *stallingWriter, leaderDone, waiterDone <-chan any) any {
	t.Helper()
	close(leader.release)
	if p := untilValue(t, "the waiter's response", waiterDone); p != nil {
		t.Fatalf("waiter panicked: %v", p)
	}
	return untilValue(t, "the leader's response", leaderDone)
}

// bodyOf returns n bytes that differ from one offset to the next, so
// that a byte written twice, or lost, shows.
func bodyOf(n int) []byte {
	b := make([]byte, 0, n+16)
	for i := 0; len(b) < n; i++ {
		b = fmt.Appendf(b, "%07d,", i)
	}
	return b[:n]
}

func arenaOf(h *Handler) *arena { return h.store.(*store).bodies }

// TestStalledClientDoesNotHoldUpARecording: a storable response without
// Content-Length is recorded and stored at its origin's pace while its
// client reads nothing, and the client, once it reads, gets all of it.
// The recorder wrote to its client itself: a client that stopped reading
// held the recording, and the recording budget with it, until Caddy's
// server timed its write out (a security review: 14 such clients kept
// other responses of several MB from being stored); and the requests
// waiting for it waited 10 s, then went to the origin each.
func TestStalledClientDoesNotHoldUpARecording(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cfg      Config
		declared bool
	}{
		{"unknown length", Config{}, false},
		{"unknown length, coalesce off", Config{Coalesce: new(false)}, false},
		// A declared length is recorded ahead of its client when others
		// read it as it arrives; without them too, now.
		{"declared length, coalesce off", Config{Coalesce: new(false)}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, tc.cfg, c)
			body := bodyOf(1 << 20)
			o := newPieceOrigin(c, body, 10000, tc.declared, 0, nil)
			const target = "http://example.com/stalled"
			client := newStallingWriter(40000)
			done := serveAsync(h, client, newRequest(http.MethodGet, target), o)
			until(t, "the body to be recorded and stored while its client reads nothing", func() bool {
				st := arenaOf(h).stats()
				return client.stalled.Load() && o.sent.Load() == int64(len(body)) && st.Recording == 0 && st.Used+st.FallbackBytes > 0 // (the heap holds bodies without mmap)
			})
			h.store.wait()
			if st := arenaOf(h).stats(); st.Leading != 0 {
				t.Errorf("%d bytes of the lead budget held once the body is stored", st.Leading)
			}
			w := get(t, h, o, target)
			wantStatus(t, w, []string{"hit"})
			if !bytes.Equal(w.Body.Bytes(), body) {
				t.Error("the hit's body differs from the origin's")
			}
			select {
			case <-done:
				t.Fatal("the handler returned before its client had the body")
			default:
			}
			close(client.release)
			if p := untilValue(t, "the stalled client's response to end", done); p != nil {
				t.Fatalf("handler panicked: %v", p)
			}
			if _, got := client.got(); got != string(body) {
				t.Errorf("the stalled client got %d bytes, differing from the origin's %d", len(got), len(body))
			}
			if n := o.calls.Load(); n != 1 {
				t.Errorf("origin called %d times, want 1", n)
			}
			checkNoLeftovers(t, h)
		})
	}
}

// checkNoLeftovers checks h holds no recording or lead budget and no
// over-released body once its requests are over.
func checkNoLeftovers(t *testing.T, h *Handler) {
	t.Helper()
	until(t, "the budgets to be given back", func() bool {
		st := arenaOf(h).stats()
		return st.Recording == 0 && st.Leading == 0
	})
	if n := overReleases.Load(); n != 0 {
		t.Errorf("%d releases past zero", n)
	}
}

// TestStalledClientOfAResponsePastMaxItemSize: a response without
// Content-Length that turns out larger than max_item_size, recorded ahead
// of a client that stopped reading, is not stored; the recording budget
// is given back at once, and what the client is yet to get is held in
// the lead budget until it has it; then the rest comes at its pace. Every
// byte arrives once, in order, including those of the write that passed
// max_item_size (recorded in part).
func TestStalledClientOfAResponsePastMaxItemSize(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{MaxSize: 8 << 20, MaxItemSize: 256 << 10}, c)
	body := bodyOf(400 << 10) // 262144 is 26 writes of 10000 and 2144 bytes of the 27th, which waits
	o := newPieceOrigin(c, body, 10000, false, 0, nil)
	const target = "http://example.com/past-max-item-size"
	client := newStallingWriter(40000)
	done := serveAsync(h, client, newRequest(http.MethodGet, target), o)
	until(t, "the recording to stop past max_item_size while the client reads nothing", func() bool {
		st := arenaOf(h).stats()
		return client.stalled.Load() && o.sent.Load() >= 260000 && st.Recording == 0
	})
	st := arenaOf(h).stats()
	if st.Leading < 256<<10-40000-scratchSize || st.Leading > st.LeadLimit {
		t.Errorf("lead budget holds %d bytes (of %d); want what the client is yet to get of the first 256 KiB", st.Leading, st.LeadLimit)
	}
	if n := o.sent.Load(); n >= int64(len(body)) {
		t.Errorf("the origin sent all %d bytes while the client read nothing: past max_item_size the response goes at its client's pace", n)
	}
	releaseWhole(t, client, done, body)
	wantStatus(t, get(t, h, o, target), []string{"fwd=uri-miss"})
	checkNoLeftovers(t, h)
}

// TestLeadBudgetTakenRecordsAtTheClientsPace: once the lead budget (a
// sixteenth of max_size) is taken, a response goes at its client's pace,
// as it did before there was one, and is still stored; what it held of
// the budget is given back.
func TestLeadBudgetTakenRecordsAtTheClientsPace(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{MaxSize: 1 << 20}, c) // max_item_size 128 KiB, lead budget 64 KiB
	if got := arenaOf(h).leadLimit; got != 64<<10 {
		t.Fatalf("lead budget of a 1 MiB cache = %d, want 64 KiB", got)
	}
	body := bodyOf(120 << 10)
	o := newPieceOrigin(c, body, 10000, false, 0, nil)
	const target = "http://example.com/lead-taken"
	client := newStallingWriter(40000)
	done := serveAsync(h, client, newRequest(http.MethodGet, target), o)
	until(t, "the recording to wait for its client", func() bool {
		return client.stalled.Load() && o.sent.Load() >= 100000
	})
	if st := arenaOf(h).stats(); st.Recording == 0 || st.Leading > st.LeadLimit {
		t.Errorf("recording %d bytes, leading %d (of %d): want the recording waiting, within the lead budget", st.Recording, st.Leading, st.LeadLimit)
	}
	if n := o.sent.Load(); n >= int64(len(body)) {
		t.Errorf("the origin sent all %d bytes past the lead budget", n)
	}
	releaseWhole(t, client, done, body)
	h.store.wait()
	w := get(t, h, o, target)
	wantStatus(t, w, []string{"hit"})
	if !bytes.Equal(w.Body.Bytes(), body) {
		t.Error("the hit's body differs from the origin's")
	}
	checkNoLeftovers(t, h)
}

// TestRecordedAheadClientGetsFlushes: a client whose writer follows the
// body gets what the origin flushed when it flushed (a stream of events,
// say), not when more comes.
func TestRecordedAheadClientGetsFlushes(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	gate := make(chan struct{})
	body := bodyOf(60000)
	o := newPieceOrigin(c, body, 10000, false, 50000, gate) // waits once it has sent 50000
	client := newSyncWriter()
	done := serveAsync(h, client, newRequest(http.MethodGet, "http://example.com/events"), o)
	until(t, "the client to have and flush what the origin sent", func() bool {
		f := client.flushes()
		return len(f) > 0 && f[len(f)-1] == 50000
	})
	close(gate)
	if p := untilValue(t, "the response to end", done); p != nil {
		t.Fatalf("handler panicked: %v", p)
	}
	if _, got := client.got(); got != string(body) {
		t.Fatalf("the client got %d bytes, differing from the origin's", len(got))
	}
}

// TestRecordedAheadClientOfABrokenResponse: when the origin breaks a body
// of unknown length off, a client that reads behind it gets every byte
// that came, then its response is aborted as reverse_proxy aborts it;
// nothing is stored.
func TestRecordedAheadClientOfABrokenResponse(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	body := bodyOf(150000) // of more, which never comes
	o := newPieceOrigin(c, body, 10000, false, 0, nil)
	o.breakOffFirst()
	const target = "http://example.com/broken"
	client := newStallingWriter(40000)
	done := serveAsync(h, client, newRequest(http.MethodGet, target), o)
	until(t, "the origin to break off", func() bool { return o.sent.Load() == 150000 })
	close(client.release)
	if p := untilValue(t, "the response to end", done); p != http.ErrAbortHandler {
		t.Fatalf("handler ended with %v, want a panic with http.ErrAbortHandler", p)
	}
	if _, got := client.got(); got != string(body) {
		t.Fatalf("the client got %d bytes, want the 150000 that came", len(got))
	}
	wantStatus(t, get(t, h, o, target), []string{"fwd=uri-miss"})
	checkNoLeftovers(t, h)
}

// TestWriterOfAGrowingBodyWritesAllOnAFlushAtTheEnd: a writer that
// returned from await for a flush, and found the fill ended once it
// looked, wrote what had come meanwhile. It returned at once (a review:
// the last write of responses that flushed after every write was lost
// for their own client, under the race detector within 300 of them).
func TestWriterOfAGrowingBodyWritesAllOnAFlushAtTheEnd(t *testing.T) {
	b := (*arena)(nil).newGrowingBody(1 << 20)
	f := new(bodyFill)
	b.fill.Store(f)
	data := bodyOf(3000)
	_, _ = b.Write(data)
	f.advance(1000, time.Now())
	f.markFlushed(1000) // the origin flushed after 1000 bytes
	w := newSyncWriter()
	_, _ = w.Write(data[:1000]) // what the client has
	f.mu.Lock()                 // the writer returns from await for the flush, and waits in over
	done := make(chan error, 1)
	go func() { done <- b.writeGrowing(context.Background(), w, f, 1000) }()
	time.Sleep(50 * time.Millisecond)
	f.filled.Store(3000) // the rest came, and the body ended
	f.ended = true
	f.mu.Unlock()
	if err := untilValue(t, "the writer to end", done); err != nil {
		t.Fatal(err)
	}
	if _, got := w.got(); got != string(data) {
		t.Errorf("the client got %d bytes of %d", len(got), len(data))
	}
}

// TestRecordedAheadClientsGetEveryByte: responses that flush after every
// write, each followed by its client's writer, reach their clients whole
// (see TestWriterOfAGrowingBodyWritesAllOnAFlushAtTheEnd).
func TestRecordedAheadClientsGetEveryByte(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	body := bodyOf(34000)
	for i := range 200 {
		o := newPieceOrigin(c, body, 500, false, 0, nil)
		client := newSyncWriter()
		_ = h.ServeHTTP(client, newRequest(http.MethodGet, fmt.Sprintf("http://example.com/every-byte/%d", i)), o)
		if _, got := client.got(); got != string(body) {
			t.Fatalf("response %d: the client got %d bytes of %d", i, len(got), len(body))
		}
	}
	checkNoLeftovers(t, h)
}

// panickyWriter panics at its first Write past allow bytes.
type panickyWriter struct {
	*syncWriter
	allow int
}

func (w *panickyWriter) Write(p []byte) (int, error) {
	if _, b := w.got(); len(b)+len(p) > w.allow {
		panic("the client's writer broke")
	}
	return w.syncWriter.Write(p)
}

// TestClientWriterPanicReachesTheHandler: a panic of the client's
// ResponseWriter in the goroutine that writes it behind the recording
// comes out of the handler, where net/http recovers it and aborts the
// response, as it did when the handler wrote the client itself; in the
// goroutine it would have ended the process.
func TestClientWriterPanicReachesTheHandler(t *testing.T) {
	for _, declared := range []bool{false, true} {
		t.Run(fmt.Sprintf("declared %v", declared), func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{Coalesce: new(false)}, c)
			o := newPieceOrigin(c, bodyOf(100000), 10000, declared, 0, nil)
			client := &panickyWriter{syncWriter: newSyncWriter(), allow: 50000}
			done := serveAsync(h, client, newRequest(http.MethodGet, "http://example.com/panicky"), o)
			if p := untilValue(t, "the handler to end", done); p != "the client's writer broke" {
				t.Fatalf("handler ended with %v, want the writer's panic", p)
			}
			checkNoLeftovers(t, h)
		})
	}
}

// TestRecordedAheadBodyLongerThanDeclared: a next handler that writes
// past its Content-Length is refused the rest, as net/http refuses it
// (reverse_proxy then aborts), also while the client's writer follows
// the body; the client gets the declared bytes. The rest was taken and
// dropped, and the origin read to its end.
func TestRecordedAheadBodyLongerThanDeclared(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{Coalesce: new(false)}, c)
	body := bodyOf(60000)
	var refused atomic.Bool
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Content-Length", "50000")
		for off := 0; off < len(body); off += 10000 {
			if _, err := w.Write(body[off : off+10000]); err != nil {
				refused.Store(true)
				return err
			}
		}
		return nil
	}}
	client := newSyncWriter()
	_ = h.ServeHTTP(client, newRequest(http.MethodGet, "http://example.com/longer"), o)
	if !refused.Load() {
		t.Error("the bytes past Content-Length were taken")
	}
	if _, got := client.got(); got != string(body[:50000]) {
		t.Errorf("the client got %d bytes, want the 50000 declared", len(got))
	}
	checkNoLeftovers(t, h)
}

// stallPanicWriter holds its first Write past allow until release is
// closed; then that Write panics (panicNow) or goes through and the next
// one panics.
type stallPanicWriter struct {
	*stallingWriter
	panicNow bool
	calls    atomic.Int32
}

func (w *stallPanicWriter) Write(p []byte) (int, error) {
	_, b := w.got()
	if len(b)+len(p) > w.allow && w.calls.Add(1) > 1 {
		panic("the client's writer broke")
	}
	n, err := w.stallingWriter.Write(p)
	if w.stalled.Load() && w.panicNow {
		panic("the client's writer broke")
	}
	return n, err
}

// TestClientWriterPanicReleasesTheStoredBody: a client's writer that
// panics once its body is stored (handed over to it with a reference,
// takeBody), before it took the stored copy or while it writes from it,
// leaves the stored body the store's reference alone (a review: one more
// for ever, and its arena blocks never returned).
func TestClientWriterPanicReleasesTheStoredBody(t *testing.T) {
	for _, tc := range []struct {
		name     string
		panicNow bool
	}{{"before-taking-the-stored-copy", true}, {"writing-from-the-stored-copy", false}} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			h := newTestHandler(t, Config{Coalesce: new(false)}, c)
			body := bodyOf(100000)
			o := newPieceOrigin(c, body, 10000, false, 0, nil)
			target := "http://example.com/panicky-leak/" + tc.name
			client := &stallPanicWriter{stallingWriter: newStallingWriter(45000), panicNow: tc.panicNow}
			done := serveAsync(h, client, newRequest(http.MethodGet, target), o)
			until(t, "the body to be stored while the client is stalled", func() bool {
				st := arenaOf(h).stats()
				return client.stalled.Load() && o.sent.Load() == int64(len(body)) && st.Recording == 0 && st.Used+st.FallbackBytes > 0 // (the heap holds bodies without mmap)
			})
			close(client.release)
			if p := untilValue(t, "the handler to end", done); p != "the client's writer broke" {
				t.Fatalf("handler ended with %v, want the writer's panic", p)
			}
			checkNoLeftovers(t, h)
			h.store.wait()
			key := keyOf(t, h, newRequest(http.MethodGet, target))
			e := h.store.(*store).get(keyHash([]byte(key)), []byte(key))
			if e == nil {
				t.Fatal("the response was not stored")
			}
			if n := e.body.refs.Load(); n != 1 {
				t.Errorf("the stored body holds %d references once its request is over, want 1 (the store's)", n)
			}
			h.store.(*store).dropIfStored(e)
			h.store.wait()
			until(t, "the arena to be empty once the entry is dropped", func() bool { return arenaOf(h).stats().Used == 0 })
		})
	}
}

// TestBrokenOffRecordingLetsWaitersGoAtOnce: when the origin breaks a body
// of unknown length off (reverse_proxy panics with http.ErrAbortHandler)
// while the leader's client reads nothing, the requests waiting for the
// response go to the origin at once, as endFill lets them for a body of
// declared length (a review: once the leader's client had what was
// recorded, or after the coalescing bound).
func TestBrokenOffRecordingLetsWaitersGoAtOnce(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	body := bodyOf(150000)
	gate := make(chan struct{})
	o := newPieceOrigin(c, body, 10000, false, 100000, gate)
	o.breakOffFirst()
	const target = "http://example.com/broken-waiters"
	leader, leaderDone, waiterDone := leadStalledWithWaiter(t, h, o, target)
	close(gate)
	until(t, "the origin to break off", func() bool { return o.sent.Load() == 150000 })
	if !within(3*time.Second, func() bool { return o.calls.Load() == 2 }) {
		t.Error("the waiter did not go to the origin once the response broke off")
	}
	if p := releaseLeader(t, leader, leaderDone, waiterDone); p != http.ErrAbortHandler {
		t.Fatalf("leader ended with %v", p)
	}
	checkNoLeftovers(t, h)
}

// TestNoRoomAtTheEndLetsWaitersGoAtOnce: a body of unknown length that
// finds no room in the arena at its end (takeBody) lets its waiters go
// then, and is dropped once the leader's client has it (a review: the
// waiters waited for that client).
func TestNoRoomAtTheEndLetsWaitersGoAtOnce(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{MaxSize: 4 << 20}, c)
	data := bodyOf(150000)
	gate := make(chan struct{})
	o := newPieceOrigin(c, data, 10000, false, 100000, gate)
	const target = "http://example.com/no-room-waiters"
	leader, leaderDone, waiterDone := leadStalledWithWaiter(t, h, o, target)
	a := arenaOf(h)
	var fillers []*body
	for {
		b, ok := a.newBody(64 << 10)
		if !ok {
			break
		}
		fillers = append(fillers, b)
	}
	defer func() {
		for _, b := range fillers {
			b.release()
		}
	}()
	close(gate)
	until(t, "the origin to end", func() bool { return o.sent.Load() == 150000 })
	if !within(3*time.Second, func() bool { return o.calls.Load() == 2 }) {
		t.Error("the waiter did not go to the origin once the body found no room")
	}
	if p := releaseLeader(t, leader, leaderDone, waiterDone); p != nil {
		t.Fatalf("leader panicked: %v", p)
	}
	if _, got := leader.got(); got != string(data) {
		t.Errorf("the leader's client got %d bytes", len(got))
	}
	checkNoLeftovers(t, h)
}

// TestUnannouncedTrailersLetWaitersGoAtOnce: a body of unknown length that
// ends with trailer fields no Trailer field announced is not stored: its
// waiters go, and its recording budget is given back, then, not once the
// leader's client has it (finishTrailers waits for that, a review).
func TestUnannouncedTrailersLetWaitersGoAtOnce(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	data := bodyOf(150000)
	gate := make(chan struct{})
	o := newPieceOrigin(c, data, 10000, false, 100000, gate)
	fn := o.fn
	o.fn = func(w http.ResponseWriter, r *http.Request) error {
		err := fn(w, r)
		w.Header().Set(http.TrailerPrefix+"X-Checksum", "abc")
		return err
	}
	const target = "http://example.com/trailer-waiters"
	leader, leaderDone, waiterDone := leadStalledWithWaiter(t, h, o, target)
	close(gate)
	until(t, "the origin to end", func() bool { return o.sent.Load() == 150000 })
	if !within(3*time.Second, func() bool { return arenaOf(h).stats().Recording == 0 }) {
		t.Errorf("the recording budget holds %d bytes of an unstorable response while its client reads nothing", arenaOf(h).stats().Recording)
	}
	if !within(3*time.Second, func() bool { return o.calls.Load() == 2 }) {
		t.Error("the waiter did not go to the origin once the response ended unstorable")
	}
	if p := releaseLeader(t, leader, leaderDone, waiterDone); p != nil {
		t.Fatalf("leader panicked: %v", p)
	}
	checkNoLeftovers(t, h)
}

// within polls cond for at most d.
func within(d time.Duration, cond func() bool) bool {
	for end := time.Now().Add(d); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			return false
		}
	}
	return true
}

// TestEveryWritePastContentLengthIsRefused: while the client's writer
// follows the body, every write past Content-Length is refused, as
// net/http refuses them, not only the first (a review).
func TestEveryWritePastContentLengthIsRefused(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{Coalesce: new(false)}, c)
	data := bodyOf(70000)
	var errs []error
	o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Content-Length", "50000")
		for off := 0; off < len(data); off += 10000 {
			_, err := w.Write(data[off : off+10000])
			errs = append(errs, err)
		}
		return nil
	}}
	client := newSyncWriter()
	_ = h.ServeHTTP(client, newRequest(http.MethodGet, "http://example.com/longer2"), o)
	if errs[6] == nil {
		t.Errorf("the second write past Content-Length was taken (%v)", errs)
	}
	checkNoLeftovers(t, h)
}

type sizeWriter struct {
	*syncWriter
	sizes []int
}

func (w *sizeWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.sizes = append(w.sizes, len(p))
	w.mu.Unlock()
	return w.syncWriter.Write(p)
}

// TestNoWriterWhereTheLeadBudgetTakesNoWrite: reverse_proxy writes up to
// 32 KiB at a time; a lead budget of less than two pieces (max_size under
// 512 KiB) cannot hold one such write: no writer is started (a review:
// one was, and recoupled at once, its two 16 KiB writes showing).
func TestNoWriterWhereTheLeadBudgetTakesNoWrite(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{MaxSize: 384 << 10, Coalesce: new(false)}, c)
	data := bodyOf(128 << 10)
	o := newPieceOrigin(c, data, 32<<10, false, 0, nil)
	client := &sizeWriter{syncWriter: newSyncWriter()}
	_ = h.ServeHTTP(client, newRequest(http.MethodGet, "http://example.com/lead-under-two"), o)
	for _, n := range client.sizes {
		if n != 32<<10 {
			t.Errorf("a writer was started (and recoupled at once): client writes %v", client.sizes)
			break
		}
	}
	if _, got := client.got(); got != string(data) {
		t.Error("body differs")
	}
}

// TestStalledClientsPastTheLeadBudgetHoldNoMoreRecording: clients that
// read nothing, past what the lead budget lets their responses be
// recorded ahead of them, hold no more of the recording budget than when
// responses were recorded at their clients' pace, and the lead budget
// besides: one that ran ahead lends what the lead budget holds back to
// the recording budget while it waits (a review saw one stalled HTTP/2
// stream hold 4 MiB of each where it had held 96 KiB); the next is not
// recorded ahead at all. Both are stored once their clients read.
func TestStalledClientsPastTheLeadBudgetHoldNoMoreRecording(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{MaxSize: 4 << 20}, c)                         // recording budget 512 KiB, lead budget 256 KiB
	bodies := map[string][]byte{"a": bodyOf(400 << 10), "b": bodyOf(100 << 10)} // fitting the recording budget together
	const allow = 40000
	start := func(name string) (*stallingWriter, *pieceOrigin, <-chan any) {
		o := newPieceOrigin(c, bodies[name], 10000, false, 0, nil)
		client := newStallingWriter(allow)
		done := serveAsync(h, client, newRequest(http.MethodGet, "http://example.com/"+name), o)
		return client, o, done
	}
	// A whole write more than the client has, in pieces: what a response
	// recorded at its client's pace holds of the recording budget.
	const paced = (allow + 10000 + scratchSize - 1) / scratchSize * scratchSize
	a, oa, doneA := start("a")
	until(t, "the first response to run ahead as far as the lead budget goes, and wait", func() bool {
		return a.stalled.Load() && arenaOf(h).stats().Leading >= arenaOf(h).leadLimit-2*scratchSize && oa.sent.Load() < int64(len(bodies["a"]))
	})
	time.Sleep(20 * time.Millisecond) // (for it to lend, and wait)
	if st := arenaOf(h).stats(); st.Recording > paced {
		t.Errorf("one stalled client: the recording budget holds %d bytes, leading %d; want at most %d, as at its pace", st.Recording, st.Leading, paced)
	}
	b, ob, doneB := start("b")
	until(t, "the second client to stall", func() bool { return b.stalled.Load() && ob.sent.Load() >= allow })
	time.Sleep(20 * time.Millisecond)
	if st := arenaOf(h).stats(); st.Recording > 2*paced || st.Leading > st.LeadLimit {
		t.Errorf("two stalled clients: the recording budget holds %d bytes, leading %d (of %d); want at most %d, as at their pace", st.Recording, st.Leading, st.LeadLimit, 2*paced)
	}
	close(a.release)
	close(b.release)
	for _, d := range []<-chan any{doneA, doneB} {
		if p := untilValue(t, "the responses to end", d); p != nil {
			t.Fatalf("handler panicked: %v", p)
		}
	}
	for name, w := range map[string]*stallingWriter{"a": a, "b": b} {
		if _, got := w.got(); got != string(bodies[name]) {
			t.Errorf("client %s got %d bytes, differing from the origin's %d", name, len(got), len(bodies[name]))
		}
	}
	h.store.wait()
	for _, name := range []string{"a", "b"} {
		wantStatus(t, get(t, h, oa, "http://example.com/"+name), []string{"hit"})
	}
	checkNoLeftovers(t, h)
}
