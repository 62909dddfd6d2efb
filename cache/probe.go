package cache

import (
	"io"
	"net/http"
	"runtime"
	"time"
)

// contentProbeWait bounds how long a request of unknown length is waited
// on to tell whether it has content.
const contentProbeWait = 100 * time.Millisecond

// probed is what the probe's one-byte read returned.
type probed struct {
	b   byte
	n   int
	err error
}

// probe is a one-byte read of a request body running on a goroutine of
// its own: p is set before done is closed.
type probe struct {
	done chan struct{}
	p    probed
}

// probeContent reports whether r, whose length is unknown (an HTTP/2
// stream left open after its header; any HTTP/3 request without
// Content-Length), carries content, by reading one byte of it for at most
// contentProbeWait. An immediate end means none: r then has http.NoBody
// and a length of 0, so that it is forwarded as a request without
// content. A byte, an error, or no answer in time (a stream held open may
// still send some) means content; r.Body then replays what the probe
// read, so the next handler gets all of it. A probe that did not answer
// in time is still reading: the caller ends it with settleProbe before
// it returns from ServeHTTP.
func probeContent(r *http.Request) bool {
	body := r.Body
	if body == nil || body == http.NoBody {
		r.ContentLength = 0
		return false
	}
	pr := &probe{done: make(chan struct{})}
	go func() {
		defer close(pr.done)
		var b [1]byte
		n, err := body.Read(b[:])
		// An empty DATA frame (HTTP/3) reads as nothing and no error:
		// read on, a few times, for what follows it.
		for i := 0; n == 0 && err == nil && i < 8; i++ {
			n, err = body.Read(b[:])
		}
		pr.p = probed{b: b[0], n: n, err: err}
	}()
	// Mostly the stream has ended already: let the probe run at once,
	// and wait with a timer only when it has not answered.
	runtime.Gosched()
	select {
	case <-pr.done:
		return probeAnswered(r, body, pr.p)
	default:
	}
	t := time.NewTimer(contentProbeWait)
	defer t.Stop()
	select {
	case <-pr.done:
		return probeAnswered(r, body, pr.p)
	case <-t.C:
		r.Body = &probedBody{rest: body, probe: pr}
		return true
	}
}

// probeAnswered sets r up after the probe of body read p, and reports
// whether r has content.
func probeAnswered(r *http.Request, body io.ReadCloser, p probed) bool {
	if p.n == 0 && p.err == io.EOF {
		r.Body, r.ContentLength = http.NoBody, 0
		return false
	}
	r.Body = &probedBody{rest: body, first: p, got: true}
	return true
}

// contentSeen says, for the debug log, why r counts as a request with
// content: its header declared some, or the probe read some (or an
// error), or its stream was still open when the probe stopped waiting.
func contentSeen(r *http.Request) string {
	b, ok := r.Body.(*probedBody)
	switch {
	case !ok:
		return "declared"
	case b.got:
		return "read"
	}
	return "stream open after " + contentProbeWait.String()
}

// probedBody is a request body whose first read was the probe's.
type probedBody struct {
	rest  io.ReadCloser
	probe *probe // the probe still reading, until got
	first probed
	got   bool
}

func (b *probedBody) Read(p []byte) (int, error) {
	if !b.got {
		<-b.probe.done
		b.first, b.got = b.probe.p, true
	}
	if b.first.n > 0 {
		if len(p) == 0 {
			return 0, nil
		}
		p[0], b.first.n = b.first.b, 0
		return 1, nil
	}
	if err := b.first.err; err != nil {
		b.first.err = nil
		return 0, err
	}
	return b.rest.Read(p)
}

// Close closes the body, which also ends a probe still waiting on it.
func (b *probedBody) Close() error { return b.rest.Close() }

// probeSettleWait bounds how long settleProbe waits for a probe to end
// once the body is closed (HTTP/2 and HTTP/3 bodies end a read at once).
const probeSettleWait = time.Second

// settleProbe ends the probe of r's body if it is still reading: the
// handlers after the cache have returned, and nothing may read a request
// body once ServeHTTP returns (Caddy's access log reads the body's
// length then). It closes the body, as net/http would, and waits for the
// probe's read to return.
func settleProbe(body io.ReadCloser) {
	b, ok := body.(*probedBody)
	if !ok || b.probe == nil {
		return
	}
	select {
	case <-b.probe.done:
		return
	default:
	}
	_ = b.rest.Close()
	t := time.NewTimer(probeSettleWait)
	defer t.Stop()
	select {
	case <-b.probe.done:
	case <-t.C:
	}
}
