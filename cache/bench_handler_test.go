package cache

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dgraph-io/ristretto/v2"
)

// BenchmarkHit serves a stored response; b.SetBytes makes the MB/s the
// body throughput. The writer is reused so that allocs/op are the
// handler's own.
func BenchmarkHit(b *testing.B) {
	for _, size := range []int{1 << 10, 100 << 10} {
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			c := newClock()
			h := newTestHandler(b, Config{}, c)
			o := static(c, 200, strings.Repeat("a", size), "Cache-Control", "max-age=3600",
				"Content-Type", "text/html; charset=utf-8", "Etag", `"abc"`, "Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT")
			get(b, h, o, "http://example.com/bench?x=1")
			r := newRequest(http.MethodGet, "http://example.com/bench?x=1", "Accept-Encoding", "gzip", "User-Agent", "bench")
			w := &resetWriter{h: make(http.Header)}
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				_ = h.ServeHTTP(w, r, o)
			}
			if o.calls.Load() != 1 {
				b.Fatalf("origin called %d times", o.calls.Load())
			}
		})
	}
}

// reportCPU reports the process's CPU time per op since cpu0 (from
// processCPU) as cpu-ns/op: on a shared machine, steadier than the wall
// clock's ns/op, and it counts the collector's and ristretto's
// goroutines.
func reportCPU(b *testing.B, cpu0 int64) {
	if cpu1 := processCPU(); cpu0 >= 0 && cpu1 >= 0 && b.N > 0 {
		b.ReportMetric(float64(cpu1-cpu0)/float64(b.N), "cpu-ns/op")
	}
}

// BenchmarkMiss compares calling the origin directly with going through
// the cache: "pass" is an uncacheable response (recorder, header copy,
// storability check), "fill" a storable one under a new key each time
// (plus buffering, entry building and the ristretto Set; the new query
// string costs one allocation of the benchmark's own), "untried" the
// same with min_uses 2, where no URL comes back (a sketch count and the
// storability check, no buffering, no Set).
func BenchmarkMiss(b *testing.B) {
	const size = 1 << 10
	body := strings.Repeat("m", size)
	b.Run("direct", func(b *testing.B) {
		c := newClock()
		o := static(c, 200, body, "Cache-Control", "no-store", "Content-Length", strconv.Itoa(size))
		r := newRequest(http.MethodGet, "http://example.com/miss")
		w := &resetWriter{h: make(http.Header)}
		b.SetBytes(size)
		b.ReportAllocs()
		cpu0 := processCPU()
		for b.Loop() {
			clear(w.h)
			_ = o.ServeHTTP(w, r)
		}
		reportCPU(b, cpu0)
	})
	b.Run("pass", func(b *testing.B) {
		c := newClock()
		off := false
		h := newTestHandler(b, Config{Coalesce: &off}, c)
		o := static(c, 200, body, "Cache-Control", "no-store", "Content-Length", strconv.Itoa(size))
		r := newRequest(http.MethodGet, "http://example.com/miss")
		w := &resetWriter{h: make(http.Header)}
		b.SetBytes(size)
		b.ReportAllocs()
		cpu0 := processCPU()
		for b.Loop() {
			clear(w.h)
			_ = h.ServeHTTP(w, r, o)
		}
		reportCPU(b, cpu0)
	})
	fill := func(b *testing.B, cfg Config) {
		c := newClock()
		o := static(c, 200, body, "Cache-Control", "max-age=60", "Content-Length", strconv.Itoa(size))
		// Fill the store first, through a handler that stores every miss
		// and shares it (same cache_name and sizes): what is measured is
		// a full store, whose sets evict or are refused, and where auto
		// judges (it skips first misses only in a nearly full store).
		cfg.CacheName = fmt.Sprintf("bench-%d", testCacheSeq.Add(1))
		filler := newTestHandler(b, Config{MaxSize: cfg.MaxSize, MinUses: 1, CacheName: cfg.CacheName}, c)
		for i := 0; !filler.store.(*store).nearlyFull(); i++ {
			if i > 1<<20 {
				b.Fatal("the store never filled up")
			}
			_ = filler.ServeHTTP(&resetWriter{h: make(http.Header)}, newRequest(http.MethodGet, "http://example.com/prefill?"+strconv.Itoa(i)), o)
		}
		filler.store.wait()
		benchUniqueMisses(b, newTestHandler(b, cfg, c), o, "http://example.com/miss", size)
	}
	// Unique URLs into a full cache: fill stores every miss (min_uses 1),
	// auto (the default) stops storing most of them once almost none of
	// those it stored were asked for again, untried stores none (min_uses 2).
	b.Run("fill", func(b *testing.B) { fill(b, Config{MaxSize: 64 << 20, MinUses: 1}) })
	b.Run("auto", func(b *testing.B) { fill(b, Config{MaxSize: 64 << 20}) })
	b.Run("untried", func(b *testing.B) { fill(b, Config{MaxSize: 64 << 20, MinUses: 2}) })
}

// BenchmarkHitParallel serves one stored response from every P.
func BenchmarkHitParallel(b *testing.B) {
	c := newClock()
	h := newTestHandler(b, Config{}, c)
	o := static(c, 200, strings.Repeat("p", 1<<10), "Cache-Control", "max-age=3600")
	get(b, h, o, "http://example.com/par")
	b.SetBytes(1 << 10)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r := newRequest(http.MethodGet, "http://example.com/par")
		w := &resetWriter{h: make(http.Header)}
		for pb.Next() {
			clear(w.h)
			_ = h.ServeHTTP(w, r, o)
		}
	})
}

// TestMemoryBoundedByMaxSize fills a cache with ten times max_size of
// unique responses through the handler and reports the live heap against
// max_size. With -v it prints the figures quoted in the report.
func TestMemoryBoundedByMaxSize(t *testing.T) {
	// RESPONSE_CACHE_MEMTEST_MIB sets a larger size (the report's 64 MiB
	// figures); the default keeps the test to a few seconds.
	maxSize := int64(8 << 20)
	if testing.Short() {
		maxSize = 4 << 20
	}
	if v, err := strconv.Atoi(os.Getenv("RESPONSE_CACHE_MEMTEST_MIB")); err == nil && v > 0 {
		maxSize = int64(v) << 20
	}
	t.Run("default GC", func(t *testing.T) { fillAndMeasure(t, maxSize) })
	// GOMEMLIMIT guidance: max_size x 1.25 plus the process's baseline.
	t.Run("memory limit", func(t *testing.T) {
		if os.Getenv("RESPONSE_CACHE_MEMTEST_MIB") == "" {
			t.Skip("a measurement (many GC cycles): set RESPONSE_CACHE_MEMTEST_MIB")
		}
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		limit := maxSize*5/4 + int64(ms.HeapInuse) + 8<<20
		old := debug.SetMemoryLimit(limit)
		defer debug.SetMemoryLimit(old)
		t.Logf("memory limit %.1f MiB", float64(limit)/(1<<20))
		fillAndMeasure(t, maxSize)
	})
}

func fillAndMeasure(t *testing.T, maxSize int64) {
	heap := func() runtime.MemStats {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms
	}
	base := heap()
	c := newClock()
	h := newTestHandler(t, Config{MaxSize: maxSize}, c)
	// Bodies of 1 to 16 KiB, half with a known length; ten header fields.
	bodies := make([]string, 16)
	for i := range bodies {
		bodies[i] = strings.Repeat("x", (i+1)<<10)
	}
	// A plain handler: the test origin would keep every request.
	o := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		body := bodies[n%len(bodies)]
		hd := w.Header()
		setTypicalFields(hd, c, strconv.Itoa(n))
		if n%2 == 0 {
			hd.Set("Content-Length", strconv.Itoa(len(body)))
		}
		_, _ = w.Write([]byte(body))
		return nil
	})
	var filled, peakInuse uint64
	w := &resetWriter{h: make(http.Header)}
	for i := 0; filled < uint64(10*maxSize); i++ {
		r := newRequest(http.MethodGet, "http://example.com/obj?n="+strconv.Itoa(i))
		clear(w.h)
		if err := h.ServeHTTP(w, r, o); err != nil {
			t.Fatal(err)
		}
		filled += uint64(len(bodies[i%len(bodies)]))
		if i%2000 == 0 {
			h.store.wait()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			peakInuse = max(peakInuse, ms.HeapInuse)
		}
	}
	h.store.wait()
	st := h.store.stats()
	end := heap()
	live := int64(end.HeapAlloc) - int64(base.HeapAlloc)
	inuse := int64(end.HeapInuse) - int64(base.HeapInuse)
	mib := func(n int64) float64 { return float64(n) / (1 << 20) }
	t.Logf("max_size %.0f MiB, filled %.0f MiB: %d entries, cost %.1f MiB, evictions %d, rejects %d",
		mib(maxSize), mib(int64(filled)), st.Entries, mib(st.Bytes), st.Evictions, st.Rejects)
	t.Logf("baseline before the cache: HeapAlloc %.1f MiB, HeapInuse %.1f MiB; after: HeapIdle %.1f MiB, HeapReleased %.1f MiB, %d GCs",
		mib(int64(base.HeapAlloc)), mib(int64(base.HeapInuse)), mib(int64(end.HeapIdle)), mib(int64(end.HeapReleased)), end.NumGC-base.NumGC)
	t.Logf("after GC: HeapAlloc +%.1f MiB (%.2f x max_size), HeapInuse +%.1f MiB (%.2f x), HeapSys %.1f MiB; peak HeapInuse during fill %.1f MiB (%.2f x, GOGC=%d)",
		mib(live), float64(live)/float64(maxSize), mib(inuse), float64(inuse)/float64(maxSize),
		mib(int64(end.HeapSys)), mib(int64(peakInuse)), float64(peakInuse)/float64(maxSize), gogc())
	held := live + st.Bodies.Mapped
	t.Logf("bodies: arena mapped %.1f MiB, used %.1f MiB, on the heap %.1f MiB; live heap + arena %.1f MiB (%.2f x max_size)",
		mib(st.Bodies.Mapped), mib(st.Bodies.Used), mib(st.Bodies.FallbackBytes), mib(held), float64(held)/float64(maxSize))
	if st.Bytes > maxSize {
		t.Errorf("store cost %d exceeds max_size %d", st.Bytes, maxSize)
	}
	// The live heap (entries, index, ristretto's counters) and the arena
	// stay close to max_size: the cost accounts for what an entry holds.
	// (The race detector's shadow memory inflates the heap.)
	if float64(held) > 1.2*float64(maxSize) && !raceEnabled {
		t.Errorf("live heap + arena %.1f MiB exceeds 1.2 x max_size", mib(held))
	}
	runtime.KeepAlive(h)
}

func gogc() int {
	v := debug.SetGCPercent(100)
	debug.SetGCPercent(v)
	return v
}

// setTypicalFields sets the fields a typical cacheable response carries,
// with an ETag and request id from id.
func setTypicalFields(hd http.Header, c *clock, id string) {
	hd.Set("Cache-Control", "max-age=3600")
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Etag", `"`+id+`"`)
	hd.Set("Date", c.date())
	hd.Set("Last-Modified", "Mon, 01 Jan 2024 00:00:00 GMT")
	hd.Set("Server", "origin")
	hd.Set("X-Request-Id", id)
}

// BenchmarkGCWithEntries measures a full garbage collection with 50,000
// stored 1 KiB responses (ten header fields each) in the heap: the
// marking their metadata costs every cycle, which misses pay for.
func BenchmarkGCWithEntries(b *testing.B) {
	c := newClock()
	h := newTestHandler(b, Config{MaxSize: 1 << 30}, c)
	body := strings.Repeat("g", 1<<10)
	o := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		hd := w.Header()
		setTypicalFields(hd, c, r.URL.RawQuery)
		hd.Set("Vary", "Accept-Encoding")
		hd.Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = io.WriteString(w, body)
		return nil
	})
	w := &resetWriter{h: make(http.Header)}
	for i := range 50000 {
		clear(w.h)
		_ = h.ServeHTTP(w, newRequest(http.MethodGet, "http://example.com/gc?"+strconv.Itoa(i)), o)
	}
	h.store.wait()
	entries := h.store.stats().Entries
	for b.Loop() {
		runtime.GC()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(entries), "entries")
	b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "heap-MiB")
}

// BenchmarkRistrettoFloor is the least a stored miss into a full cache
// can cost with ristretto: a Get that misses and a Set of a new key, into
// a 256 MiB cache of 2.6 KB items, with the store's counters and with a
// tenth of them, counting ristretto's own goroutine (run with -cpu 1 for
// the whole CPU cost).
func BenchmarkRistrettoFloor(b *testing.B) {
	const maxCost, cost = 256 << 20, 2600
	for _, counters := range []int64{expectedItems(maxCost) * countersPerItem, expectedItems(maxCost) * countersPerItem / 10} {
		b.Run(fmt.Sprintf("counters=%d", counters), func(b *testing.B) {
			c, err := ristretto.NewCache(&ristretto.Config[uint64, *entry]{
				NumCounters: counters, MaxCost: maxCost, BufferItems: 64, IgnoreInternalCost: true,
			})
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			var k uint64
			next := func() uint64 { k++; return k * 0x9E3779B97F4A7C15 }
			for i := range 2 * maxCost / cost { // fill, and then some
				h := next()
				c.Get(h)
				c.Set(h, &entry{}, cost)
				if i%1024 == 0 {
					c.Wait()
				}
			}
			c.Wait()
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				h := next()
				c.Get(h)
				c.Set(h, &entry{}, cost)
				if i++; i%256 == 0 {
					c.Wait() // ristretto's work is counted, not left buffered
				}
			}
			c.Wait()
		})
	}
}

// BenchmarkHitRatio replays Zipf-distributed requests (s = 1.01 and 1.2,
// over 1M URLs) through a cache with room for about 2% of them, for each
// min_uses, and reports the share of requests answered from the cache
// (hit%) and of misses offered to the store (offered%; ristretto admits
// some of them). Each op is one request; compare
// variants at the same -benchtime, e.g. -benchtime=400000x.
func BenchmarkHitRatio(b *testing.B) {
	const urls = 1 << 20
	body := strings.Repeat("z", 1<<10)
	for _, s := range []float64{1.01, 1.2} {
		for _, uses := range []int{1, 0, 2} {
			name := "min_uses=" + strconv.Itoa(uses)
			if uses == 0 {
				name = "min_uses=auto"
			}
			b.Run(fmt.Sprintf("s=%.2f/%s", s, name), func(b *testing.B) {
				c := newClock()
				h := newTestHandler(b, Config{MaxSize: 48 << 20, MinUses: uses}, c)
				o := static(c, 200, body, "Cache-Control", "max-age=86400")
				zipf := rand.NewZipf(rand.New(rand.NewPCG(1, 2)), s, 1, urls-1)
				hits := 0
				for b.Loop() {
					w := get(b, h, o, "http://example.com/z/"+strconv.FormatUint(zipf.Uint64(), 10))
					if hasParam(w.Header().Get("Cache-Status"), "hit") {
						hits++
					}
				}
				st := h.store.stats()
				b.ReportMetric(100*float64(hits)/float64(b.N), "hit%")
				b.ReportMetric(100*float64(st.Stores)/float64(b.N-hits), "offered%")
			})
		}
	}
}

// benchUniqueMisses measures h's misses of target under a new query each
// time, answered by o with a body of size bytes, and fails if the last
// was not a miss.
func benchUniqueMisses(b *testing.B, h *Handler, o caddyhttp.Handler, target string, size int64) {
	r := newRequest(http.MethodGet, target)
	// The key is the URI as the client sent it: vary that one too.
	sent := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request).URL
	w := &resetWriter{h: make(http.Header)}
	b.SetBytes(size)
	b.ReportAllocs()
	i := 0
	cpu0 := processCPU()
	for b.Loop() {
		i++
		r.URL.RawQuery = strconv.Itoa(i)
		sent.RawQuery = r.URL.RawQuery
		clear(w.h)
		_ = h.ServeHTTP(w, r, o)
	}
	reportCPU(b, cpu0)
	if cs := w.h.Get("Cache-Status"); !strings.Contains(cs, "fwd=uri-miss") {
		b.Fatalf("measured something other than misses: Cache-Status %q", cs)
	}
}

// BenchmarkMissInPieces measures misses of 64 KiB bodies that arrive in
// four writes, flushed (as reverse_proxy writes one of unknown length),
// each stored (min_uses 1), into a 64 MiB cache that soon evicts (its
// arena reuses its pages, as a full cache does): past the first
// write, the client's writes follow the recording in a goroutine of
// their own (see recorder.decouple), whose cost this shows against
// direct, the origin alone.
func BenchmarkMissInPieces(b *testing.B) {
	const size, piece = 64 << 10, 16 << 10
	body := []byte(strings.Repeat("p", size))
	for _, declared := range []bool{true, false} {
		c := newClock()
		o := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
			w.Header().Set("Cache-Control", "max-age=60")
			w.Header().Set("Date", c.date())
			if declared {
				w.Header().Set("Content-Length", strconv.Itoa(size))
			}
			rc := http.NewResponseController(w)
			for off := 0; off < size; off += piece {
				if _, err := w.Write(body[off : off+piece]); err != nil {
					return err
				}
				_ = rc.Flush()
			}
			return nil
		}}
		name := map[bool]string{true: "declared", false: "unknown"}[declared]
		b.Run(name+"/direct", func(b *testing.B) {
			w := &resetWriter{h: make(http.Header)}
			r := newRequest(http.MethodGet, "http://example.com/pieces")
			b.SetBytes(size)
			b.ReportAllocs()
			for b.Loop() {
				clear(w.h)
				_ = o.ServeHTTP(w, r)
			}
		})
		b.Run(name+"/stored", func(b *testing.B) {
			h := newTestHandler(b, Config{MaxSize: 64 << 20, MinUses: 1}, c)
			benchUniqueMisses(b, h, o, "http://example.com/pieces", size)
		})
	}
}
