// Command slow-origin is the origin of bench/run.sh latency: it answers
// every request after a fixed delay, without Cache-Control (a typical API
// response, which a cache cannot store), with a Cache-Control given in the
// cc query parameter otherwise, and a Vary given in the vary parameter
// (with vary=Origin it answers like CORS middleware, echoing the Origin
// in Access-Control-Allow-Origin). With -pace it declares the body's
// length and sends it in 64 KiB pieces spread over that time (the origin
// of bench/run.sh burst, whose responses stay in flight). A request with
// an n query parameter gets a body of n bytes instead, its length
// declared, or, with chunked=1, sent without Content-Length (the origin of
// bench/run.sh mixed). It listens on 127.0.0.1 only.
//
//	go run ./bench/slow-origin -port 9000 -delay 20ms
package main

import (
	"flag"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

func main() {
	port := flag.Int("port", 0, "port to listen on, on 127.0.0.1")
	delay := flag.Duration("delay", 20*time.Millisecond, "time before each response")
	size := flag.Int("size", 512, "body size in bytes")
	pace := flag.Duration("pace", 0, "time over which the body is sent, with its length declared (0: at once)")
	flag.Parse()
	body := []byte(strings.Repeat("x", *size))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(*delay)
		w.Header().Set("Content-Type", "application/json")
		if cc := r.URL.Query().Get("cc"); cc != "" {
			w.Header().Set("Cache-Control", cc)
		}
		if vary := r.URL.Query().Get("vary"); vary != "" {
			w.Header().Set("Vary", vary)
			if o := r.Header.Get("Origin"); o != "" {
				w.Header().Set("Access-Control-Allow-Origin", o)
			}
		}
		if n, err := strconv.Atoi(r.URL.Query().Get("n")); err == nil && n > 0 {
			writeSized(w, n, r.URL.Query().Get("chunked") == "1")
			return
		}
		if *pace <= 0 {
			_, _ = w.Write(body)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		const piece = 64 << 10
		pieces := (len(body) + piece - 1) / piece
		for i := 0; i < len(body); i += piece {
			if _, err := w.Write(body[i:min(i+piece, len(body))]); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			time.Sleep(*pace / time.Duration(pieces))
		}
	})
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(*port))
	log.Fatal(http.ListenAndServe(addr, h))
}

var filler = []byte(strings.Repeat("mixed sizes ", 32<<10/12+1))[:32<<10]

// writeSized sends a body of n bytes, in 32 KiB writes, its length
// declared or, when chunked, not (the header is sent first, so that Go's
// server sends the body chunked whatever its size).
func writeSized(w http.ResponseWriter, n int, chunked bool) {
	if chunked {
		w.(http.Flusher).Flush()
	} else {
		w.Header().Set("Content-Length", strconv.Itoa(n))
	}
	for n > 0 {
		c, err := w.Write(filler[:min(n, len(filler))])
		if err != nil {
			return
		}
		n -= c
	}
}
