package integration

import (
	"bufio"
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// cacheFront is a Caddyfile with response_cache (options as given) in front
// of one origin.
func cacheFront(frontPort int, origin *backend, options string) string {
	return globals() + fmt.Sprintf(`
http://127.0.0.1:%d {
	response_cache {
		cache_name itest
		%s
	}
	reverse_proxy %s
}
`, frontPort, options, origin.addr)
}

// cacheStats decodes the admin API's /response_cache/stats into v.
func cacheStats(t testing.TB, v any) {
	t.Helper()
	status, body := adminGet(t, "/response_cache/stats")
	if status != http.StatusOK {
		t.Fatalf("stats: %d %s", status, body)
	}
	if err := json.Unmarshal([]byte(body), v); err != nil {
		t.Fatalf("stats: %v", err)
	}
}

func cacheStatus(r result) string { return r.header.Get("Cache-Status") }

func isHit(r result) bool { return strings.HasPrefix(cacheStatus(r), "itest; hit") }

// untilHit requests url until the cache answers it as a hit, and returns
// that answer: a request that comes while the fill that stores it is
// still ending (its clients may have their answers before) is answered
// by that fill (collapsed).
func untilHit(t *testing.T, c *http.Client, url string) result {
	t.Helper()
	var r result
	waitFor(t, url+" to be a hit", 5*time.Second, func() bool { r = do(t, c, "GET", url, nil); return isHit(r) })
	return r
}

// TestCacheEndToEnd walks the main caching rules through a real Caddy and a
// real origin, counting origin requests.
func TestCacheEndToEnd(t *testing.T) {
	var mu sync.Mutex
	etagHits := 0
	failing := false
	origin := startBackend(t, "origin", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		fail := failing
		mu.Unlock()
		switch {
		case strings.HasPrefix(r.URL.Path, "/fresh"):
			w.Header().Set("Cache-Control", "max-age=60")
			fmt.Fprintf(w, "fresh %s %d", r.URL.Path, time.Now().UnixNano())
		case r.URL.Path == "/nostore":
			w.Header().Set("Cache-Control", "no-store")
			fmt.Fprint(w, "nostore")
		case r.URL.Path == "/private":
			w.Header().Set("Cache-Control", "private, max-age=60")
			fmt.Fprint(w, "private")
		case r.URL.Path == "/cookie":
			w.Header().Set("Cache-Control", "max-age=60")
			w.Header().Set("Set-Cookie", "session=secret")
			fmt.Fprint(w, "cookie")
		case r.URL.Path == "/vary":
			w.Header().Set("Cache-Control", "max-age=60")
			w.Header().Set("Vary", "Accept-Language")
			fmt.Fprintf(w, "lang=%s", r.Header.Get("Accept-Language"))
		case r.URL.Path == "/etag":
			if fail {
				http.Error(w, "down", http.StatusServiceUnavailable)
				return
			}
			w.Header().Set("Cache-Control", "max-age=0, stale-if-error=60")
			w.Header().Set("ETag", `"v1"`)
			if r.Header.Get("If-None-Match") == `"v1"` {
				mu.Lock()
				etagHits++
				mu.Unlock()
				w.WriteHeader(http.StatusNotModified)
				return
			}
			fmt.Fprint(w, "etag body v1")
		case r.URL.Path == "/range":
			w.Header().Set("Cache-Control", "max-age=60")
			fmt.Fprint(w, "0123456789abcdefghij")
		case r.URL.Path == "/post":
			w.WriteHeader(http.StatusNoContent)
		default:
			http.NotFound(w, r)
		}
	})
	frontPort := freePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", frontPort)
	c := newClient()
	startCaddy(t, cacheFront(frontPort, origin, "max_size 16MiB"))

	originCalls := func() int64 { return origin.hits.Load() }

	t.Run("fresh response is stored and served with Age", func(t *testing.T) {
		n := originCalls()
		first := do(t, c, "GET", base+"/fresh/a", nil)
		if isHit(first) || !strings.Contains(cacheStatus(first), "fwd=uri-miss") {
			t.Errorf("first Cache-Status = %q; want a uri-miss", cacheStatus(first))
		}
		var second result
		waitFor(t, "the entry to be stored", 5*time.Second, func() bool {
			second = do(t, c, "GET", base+"/fresh/a", nil)
			return isHit(second)
		})
		if second.body != first.body {
			t.Errorf("hit body %q; stored %q", second.body, first.body)
		}
		if _, err := strconv.Atoi(second.header.Get("Age")); err != nil {
			t.Errorf("hit Age = %q; want a number", second.header.Get("Age"))
		}
		before := originCalls()
		for i := 0; i < 20; i++ {
			if r := do(t, c, "GET", base+"/fresh/a", nil); !isHit(r) {
				t.Fatalf("repeat %d not a hit: %q", i, cacheStatus(r))
			}
		}
		if got := originCalls() - before; got != 0 {
			t.Errorf("20 hits reached the origin %d times", got)
		}
		t.Logf("origin calls for one fresh URL: %d", originCalls()-n)
	})

	t.Run("HEAD and Range answered from the stored GET", func(t *testing.T) {
		do(t, c, "GET", base+"/range", nil)
		waitFor(t, "the entry to be stored", 5*time.Second, func() bool {
			return isHit(do(t, c, "GET", base+"/range", nil))
		})
		n := originCalls()
		head := do(t, c, "HEAD", base+"/range", nil)
		if head.status != 200 || head.body != "" || !isHit(head) {
			t.Errorf("HEAD: status %d, body %q, Cache-Status %q", head.status, head.body, cacheStatus(head))
		}
		part := do(t, c, "GET", base+"/range", map[string]string{"Range": "bytes=2-5"})
		if part.status != http.StatusPartialContent || part.body != "2345" {
			t.Errorf("Range: status %d body %q; want 206 \"2345\"", part.status, part.body)
		}
		if cr := part.header.Get("Content-Range"); cr != "bytes 2-5/20" {
			t.Errorf("Content-Range = %q", cr)
		}
		if originCalls() != n {
			t.Errorf("HEAD/Range reached the origin")
		}
	})

	t.Run("uncacheable responses always reach the origin", func(t *testing.T) {
		for _, path := range []string{"/nostore", "/private", "/cookie"} {
			n := originCalls()
			for i := 0; i < 3; i++ {
				r := do(t, c, "GET", base+path, nil)
				if isHit(r) {
					t.Errorf("%s served from cache: %q", path, cacheStatus(r))
				}
			}
			if got := originCalls() - n; got != 3 {
				t.Errorf("%s: origin saw %d of 3 requests", path, got)
			}
		}
	})

	t.Run("variants coexist", func(t *testing.T) {
		for _, lang := range []string{"en", "fr"} {
			do(t, c, "GET", base+"/vary", map[string]string{"Accept-Language": lang})
		}
		for _, lang := range []string{"en", "fr"} {
			var r result
			waitFor(t, "variant "+lang, 5*time.Second, func() bool {
				r = do(t, c, "GET", base+"/vary", map[string]string{"Accept-Language": lang})
				return isHit(r)
			})
			if r.body != "lang="+lang {
				t.Errorf("variant %s served %q", lang, r.body)
			}
		}
		r := do(t, c, "GET", base+"/vary", map[string]string{"Accept-Language": "de"})
		if !strings.Contains(cacheStatus(r), "fwd=vary-miss") {
			t.Errorf("new variant Cache-Status = %q; want vary-miss", cacheStatus(r))
		}
	})

	t.Run("POST invalidates the URI", func(t *testing.T) {
		do(t, c, "GET", base+"/fresh/inv", nil)
		waitFor(t, "the entry to be stored", 5*time.Second, func() bool {
			return isHit(do(t, c, "GET", base+"/fresh/inv", nil))
		})
		if r := do(t, c, "POST", base+"/fresh/inv", nil); isHit(r) {
			t.Fatalf("POST answered from cache")
		}
		if r := do(t, c, "GET", base+"/fresh/inv", nil); isHit(r) {
			t.Errorf("GET after POST still a hit: %q", cacheStatus(r))
		}
	})

	t.Run("stale entry revalidated with If-None-Match; stale-if-error", func(t *testing.T) {
		first := do(t, c, "GET", base+"/etag", nil)
		if first.body != "etag body v1" {
			t.Fatalf("body %q", first.body)
		}
		// max-age=0: every later request revalidates the stored entry.
		var r result
		waitFor(t, "a revalidation answered 304", 5*time.Second, func() bool {
			r = do(t, c, "GET", base+"/etag", nil)
			mu.Lock()
			defer mu.Unlock()
			return etagHits > 0
		})
		if r.status != 200 || r.body != "etag body v1" {
			t.Errorf("after a 304 the client got %d %q; want the stored 200", r.status, r.body)
		}
		cond := do(t, c, "GET", base+"/etag", map[string]string{"If-None-Match": `"v1"`})
		if cond.status != http.StatusNotModified {
			t.Errorf("conditional client got %d; want 304", cond.status)
		}
		mu.Lock()
		failing = true
		mu.Unlock()
		r = do(t, c, "GET", base+"/etag", nil)
		if r.status != 200 || r.body != "etag body v1" {
			t.Errorf("origin failing: got %d %q; want the stale 200 (stale-if-error)", r.status, r.body)
		}
		mu.Lock()
		failing = false
		mu.Unlock()
	})

	t.Run("a config reload keeps the cache", func(t *testing.T) {
		do(t, c, "GET", base+"/fresh/reload", nil)
		waitFor(t, "the entry to be stored", 5*time.Second, func() bool {
			return isHit(do(t, c, "GET", base+"/fresh/reload", nil))
		})
		loadConfig(t, adminPort, cacheFront(frontPort, origin, "max_size 16MiB"))
		c.CloseIdleConnections() // the old config's connections are closing
		if r := do(t, c, "GET", base+"/fresh/reload", nil); !isHit(r) {
			t.Errorf("after reloading the same config: %q; want a hit", cacheStatus(r))
		}
	})

	t.Run("admin purge", func(t *testing.T) {
		do(t, c, "GET", base+"/fresh/purge", nil)
		waitFor(t, "the entry to be stored", 5*time.Second, func() bool {
			return isHit(do(t, c, "GET", base+"/fresh/purge", nil))
		})
		if status, body := adminPost(t, "/response_cache/purge", `{"all": true}`); status != 200 {
			t.Fatalf("purge: %d %s", status, body)
		}
		if r := do(t, c, "GET", base+"/fresh/purge", nil); isHit(r) {
			t.Errorf("hit after purge all")
		}
	})

	t.Run("bodies live in the arena and go back to it", func(t *testing.T) {
		type bodies struct {
			Mapped int64 `json:"mapped_bytes"`
			Used   int64 `json:"used_bytes"`
			Heap   int64 `json:"heap_bytes"`
		}
		stats := func() bodies {
			var st []struct {
				Cache  string `json:"cache"`
				Bodies bodies `json:"bodies"`
			}
			if cacheStats(t, &st); len(st) != 1 {
				t.Fatalf("stats: %d caches, want 1", len(st))
			}
			return st[0].Bodies
		}
		adminPost(t, "/response_cache/purge", `{"all": true}`)
		for i := range 5 {
			url := fmt.Sprintf("%s/fresh/arena-%d", base, i)
			first := do(t, c, "GET", url, nil)
			waitFor(t, "the entry to be stored", 5*time.Second, func() bool { return isHit(do(t, c, "GET", url, nil)) })
			if hit := do(t, c, "GET", url, nil); hit.body != first.body {
				t.Errorf("hit body %q, want the stored %q", hit.body, first.body)
			}
		}
		b := stats()
		switch {
		case bodiesMapped && (b.Used == 0 || b.Mapped < b.Used || b.Heap != 0):
			t.Errorf("after storing 5 bodies: %+v; want them in the arena", b)
		case !bodiesMapped && (b.Heap == 0 || b.Mapped != 0):
			t.Errorf("after storing 5 bodies: %+v; want them on the heap, in a build without mmap", b)
		}
		adminPost(t, "/response_cache/purge", `{"all": true}`)
		waitFor(t, "the bodies to be freed", 5*time.Second, func() bool { b := stats(); return b.Used == 0 && b.Heap == 0 })
	})
}

// TestCacheConfigAndOriginErrors: one cache_name with two sizes in one
// config is refused at load (the running config stays); an unreachable
// origin's 502 says the cache forwarded the request.
func TestCacheConfigAndOriginErrors(t *testing.T) {
	origin := startBackend(t, "origin", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprint(w, "up")
	})
	frontPort := freePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", frontPort)
	c := newClient()
	startCaddy(t, cacheFront(frontPort, origin, "max_size 1MiB"))

	second := fmt.Sprintf(`
http://127.0.0.1:%d {
	response_cache {
		cache_name itest
		max_size 2MiB
	}
	reverse_proxy %s
}
`, freePort(t), origin.addr)
	err := tryLoadConfig(adminPort, cacheFront(frontPort, origin, "max_size 1MiB")+second)
	// Refused when adapting, with both lines (quoted in the admin API's JSON).
	if err == nil || !strings.Contains(err.Error(), `cache_name \"itest\" is used at Caddyfile:`) ||
		!strings.Contains(err.Error(), "here with 2MiB and 256KiB") || !strings.Contains(err.Error(), "different names, at Caddyfile:") {
		t.Fatalf("loading one cache_name with two sizes: %v; want the cache_name error with both lines", err)
	}
	if r := do(t, c, "GET", base+"/still", nil); r.status != 200 || r.body != "up" {
		t.Fatalf("after the refused load: %d %q; want the running config to answer", r.status, r.body)
	}

	// An origin that cannot be reached (a closed port), behind a front on
	// a port of its own: on frontPort the replaced config's server may
	// still answer a kept connection for a moment after POST /load.
	ports := freePorts(t, 2) // distinct: a front proxying to itself waits on its own fill
	downPort := ports[0]
	startCaddy(t, cacheFront(downPort, &backend{addr: fmt.Sprintf("127.0.0.1:%d", ports[1])}, "max_size 1MiB"))
	r := do(t, c, "GET", fmt.Sprintf("http://127.0.0.1:%d/down", downPort), nil)
	if r.status != http.StatusBadGateway || cacheStatus(r) != "itest; fwd=uri-miss" {
		t.Errorf("unreachable origin: %d, Cache-Status %q; want 502 with \"itest; fwd=uri-miss\"", r.status, cacheStatus(r))
	}
	// Requests the cache passes on say so on Caddy's error response too
	// (a review: a POST's or a GET with a body's 502 had no Cache-Status).
	for _, method := range []string{"POST", "DELETE", "OPTIONS"} {
		r := do(t, c, method, fmt.Sprintf("http://127.0.0.1:%d/down", downPort), nil)
		if r.status != http.StatusBadGateway || cacheStatus(r) != "itest; fwd=method" {
			t.Errorf("unreachable origin, %s: %d, Cache-Status %q; want 502 with \"itest; fwd=method\"", method, r.status, cacheStatus(r))
		}
	}
	req, _ := http.NewRequest("GET", fmt.Sprintf("http://127.0.0.1:%d/down", downPort), strings.NewReader("content"))
	if res, err := c.Do(req); err != nil {
		t.Errorf("GET with a body: %v", err)
	} else {
		res.Body.Close()
		if res.StatusCode != http.StatusBadGateway || res.Header.Get("Cache-Status") != "itest; fwd=bypass" {
			t.Errorf("unreachable origin, GET with a body: %d, Cache-Status %q; want 502 with \"itest; fwd=bypass\"", res.StatusCode, res.Header.Get("Cache-Status"))
		}
	}
}

// TestCacheEarlyHintsStayOnThe103: the fields of a 103 from the origin
// reach the client with the 103, not with the final response, on a miss
// and on the hit after it, as with plain reverse_proxy.
func TestCacheEarlyHintsStayOnThe103(t *testing.T) {
	origin := startBackend(t, "origin", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprint(w, "final")
	})
	frontPort := freePort(t)
	startCaddy(t, cacheFront(frontPort, origin, "max_size 1MiB"))
	url := fmt.Sprintf("http://127.0.0.1:%d/early", frontPort)
	c := newClient()
	for i, want := range []string{"fwd=uri-miss", "hit"} {
		var hints []string
		trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
			hints = append(hints, fmt.Sprint(code, " ", h.Get("Link")))
			return nil
		}}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", url, nil)
		if i == 1 {
			waitFor(t, "the entry to be stored", 5*time.Second, func() bool { return isHit(do(t, c, "GET", url, nil)) })
		}
		res, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if cs := res.Header.Get("Cache-Status"); !strings.Contains(cs, want) || string(body) != "final" {
			t.Fatalf("response %d: Cache-Status %q, body %q; want %s", i, cs, body, want)
		}
		if l := res.Header.Get("Link"); l != "" {
			t.Errorf("%s: the final response carries the 103's Link %q", want, l)
		}
		if i == 0 && (len(hints) != 1 || hints[0] != "103 </style.css>; rel=preload") {
			t.Errorf("miss: 1xx responses %q; want the 103 with its Link", hints)
		}
	}
}

// TestCacheCoalescing sends 200 concurrent requests for one uncached URL:
// the origin must see one. With min_uses 2 the first miss is not stored,
// nor coalesced: the second leads, and the rest are answered from it (a
// third may go too when two count their use at the same instant).
func TestCacheCoalescing(t *testing.T) {
	for _, tc := range []struct {
		options  string
		min, max int64 // origin requests
	}{{"", 1, 1}, {"min_uses 2", 2, 3}} {
		t.Run(strings.ReplaceAll(cmp.Or(tc.options, "defaults"), " ", "_"), func(t *testing.T) {
			testCoalescing(t, tc.options, tc.min, tc.max)
		})
	}
}

func testCoalescing(t *testing.T, options string, minHits, maxHits int64) {
	release := make(chan struct{})
	origin := startBackend(t, "slow", func(w http.ResponseWriter, r *http.Request) {
		<-release
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprint(w, "filled once")
	})
	frontPort := freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d/hot", frontPort)
	startCaddy(t, cacheFront(frontPort, origin, options))
	c := newClient()

	const clients = 200
	results := make([]result, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() { results[i] = do(t, c, "GET", url, nil) })
	}
	// Let the requests pile up behind the first one, then answer it.
	waitFor(t, "the first requests to reach the origin", 10*time.Second, func() bool { return origin.hits.Load() >= minHits })
	time.Sleep(300 * time.Millisecond) // give the other 199 time to arrive; only affects how many collapse, not correctness
	close(release)
	wg.Wait()
	collapsed := 0
	for i, r := range results {
		if r.status != 200 || r.body != "filled once" {
			t.Fatalf("client %d: %d %q", i, r.status, r.body)
		}
		if strings.Contains(cacheStatus(r), "collapsed") {
			collapsed++
		}
	}
	t.Logf("%d concurrent misses: %d origin requests, %d collapsed", clients, origin.hits.Load(), collapsed)
	hits := origin.hits.Load()
	if hits < minHits || hits > maxHits {
		t.Errorf("origin saw %d requests for %d concurrent misses; want %d to %d", hits, clients, minHits, maxHits)
	}
	untilHit(t, c, url)
	if got := origin.hits.Load(); got != hits {
		t.Errorf("origin saw %d requests, then %d; want no more once stored", hits, got)
	}
}

// TestCacheConditionalMissesFill: after a deploy purges a page, returning
// browsers revalidate it with If-None-Match at once. Through a real Caddy,
// those concurrent conditional misses reach the origin once, without the
// conditional, every client gets its 304 from the cache, and the page is
// stored for the next unconditional request.
func TestCacheConditionalMissesFill(t *testing.T) {
	release := make(chan struct{})
	var conditional atomic.Int32
	origin := startBackend(t, "etag", func(w http.ResponseWriter, r *http.Request) {
		<-release
		if r.Header.Get("If-None-Match") != "" {
			conditional.Add(1)
		}
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Etag", `"v1"`)
		if r.Header.Get("If-None-Match") == `"v1"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		fmt.Fprint(w, "the page")
	})
	frontPort := freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d/page", frontPort)
	startCaddy(t, cacheFront(frontPort, origin, ""))
	c := newClient()

	const clients = 50
	results := make([]result, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() { results[i] = do(t, c, "GET", url, map[string]string{"If-None-Match": `"v1"`}) })
	}
	waitFor(t, "the first request to reach the origin", 10*time.Second, func() bool { return origin.hits.Load() >= 1 })
	time.Sleep(300 * time.Millisecond) // give the others time to arrive; only affects how many collapse
	close(release)
	wg.Wait()
	for i, r := range results {
		if r.status != http.StatusNotModified || r.body != "" {
			t.Fatalf("client %d: %d %q (%s), want a 304", i, r.status, r.body, cacheStatus(r))
		}
	}
	if got := origin.hits.Load(); got != 1 {
		t.Errorf("origin saw %d requests for %d concurrent conditional misses; want 1", got, clients)
	}
	if n := conditional.Load(); n != 0 {
		t.Errorf("%d requests reached the origin with If-None-Match; want the miss fetched whole", n)
	}
	if r := untilHit(t, c, url); r.body != "the page" {
		t.Errorf("the next request: %q, Cache-Status %q; want a hit with the page", r.body, cacheStatus(r))
	}
	if got := origin.hits.Load(); got != 1 {
		t.Errorf("origin saw %d requests; want 1", got)
	}
}

// TestCacheHeaderDirectiveBeforeTheCache: Caddy orders header before
// response_cache, and the Cache-Control it sets reaches the client with
// the origin's: the cache decides by both. A path the site marks private
// is not stored though its origin says max-age; a path the site marks
// public with a max-age is, though its origin says nothing.
func TestCacheHeaderDirectiveBeforeTheCache(t *testing.T) {
	origin := startBackend(t, "origin", func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/account") {
			w.Header().Set("Cache-Control", "max-age=60")
		}
		fmt.Fprintf(w, "%s %d", r.URL.Path, time.Now().UnixNano())
	})
	frontPort := freePort(t)
	startCaddy(t, globals()+fmt.Sprintf(`
http://127.0.0.1:%d {
	header /account/* Cache-Control "private, no-store"
	header /static/* Cache-Control "public, max-age=3600"
	response_cache {
		cache_name itest
	}
	reverse_proxy %s
}
`, frontPort, origin.addr))
	c := newClient()
	base := fmt.Sprintf("http://127.0.0.1:%d", frontPort)
	for _, tc := range []struct {
		path   string
		stored bool
		cc     []string
	}{
		{"/account/me", false, []string{"private, no-store", "max-age=60"}},
		{"/static/app.js", true, []string{"public, max-age=3600"}},
	} {
		first := do(t, c, "GET", base+tc.path, nil)
		second := do(t, c, "GET", base+tc.path, nil)
		if isHit(second) != tc.stored || (second.body == first.body) != tc.stored {
			t.Errorf("%s: second request %q (%s), want stored %v", tc.path, second.body, cacheStatus(second), tc.stored)
		}
		for _, r := range []result{first, second} {
			if got := r.header.Values("Cache-Control"); !slices.Equal(got, tc.cc) {
				t.Errorf("%s: Cache-Control %q, want %q", tc.path, got, tc.cc)
			}
		}
	}
}

// TestCacheRangeForWholeBody: browsers' media elements ask for a video
// with Range: bytes=0-. Through a real Caddy in front of an origin that
// serves ranges (Go's ServeContent, as a file server), concurrent such
// misses reach the origin once, without Range, get the whole body as a
// 206, and fill the cache that later ranges (a seek, Safari's probe) hit.
// A probe for part of an uncached object goes out as it came, and so does
// Safari's next request (bytes 0 to the length the probe gave, minus one),
// whose 206 is of the whole body: it is stored as the 200.
func TestCacheRangeForWholeBody(t *testing.T) {
	content := strings.Repeat("0123456789abcdef", 4096) // 64 KiB
	release := make(chan struct{})
	var mu sync.Mutex
	var sentRanges []string
	origin := startBackend(t, "media", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		sentRanges = append(sentRanges, r.URL.Path+" "+r.Header.Get("Range"))
		mu.Unlock()
		if r.URL.Path == "/video" {
			<-release
		}
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Content-Type", "video/mp4")
		http.ServeContent(w, r, "", time.Unix(1e9, 0), strings.NewReader(content))
	})
	frontPort := freePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", frontPort)
	startCaddy(t, cacheFront(frontPort, origin, ""))
	c := newClient()

	const clients = 20
	results := make([]result, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() { results[i] = do(t, c, "GET", base+"/video", map[string]string{"Range": "bytes=0-"}) })
	}
	waitFor(t, "the first request to reach the origin", 10*time.Second, func() bool { return origin.hits.Load() >= 1 })
	time.Sleep(300 * time.Millisecond) // let the others arrive; only affects how many collapse
	close(release)
	wg.Wait()
	wantRange := fmt.Sprintf("bytes 0-%d/%d", len(content)-1, len(content))
	for i, r := range results {
		if r.status != http.StatusPartialContent || r.body != content || r.header.Get("Content-Range") != wantRange {
			t.Fatalf("client %d: %d, %d bytes, Content-Range %q; want 206, %d bytes, %q", i, r.status, len(r.body), r.header.Get("Content-Range"), len(content), wantRange)
		}
	}
	if got := origin.hits.Load(); got != 1 {
		t.Errorf("origin saw %d requests for %d concurrent bytes=0- misses; want 1", got, clients)
	}
	mu.Lock()
	if len(sentRanges) == 0 || sentRanges[0] != "/video " {
		t.Errorf("origin requests (path, Range): %q; want /video without Range", sentRanges)
	}
	mu.Unlock()

	waitFor(t, "the video to be stored", 5*time.Second, func() bool {
		return isHit(do(t, c, "GET", base+"/video", map[string]string{"Range": "bytes=0-1"}))
	})
	n := origin.hits.Load()
	seek := do(t, c, "GET", base+"/video", map[string]string{"Range": "bytes=1000-1999"})
	if seek.status != http.StatusPartialContent || seek.body != content[1000:2000] || !isHit(seek) {
		t.Errorf("seek: %d, %d bytes, Cache-Status %q; want a 206 hit of 1000 bytes", seek.status, len(seek.body), cacheStatus(seek))
	}
	if origin.hits.Load() != n {
		t.Error("a range of the stored video reached the origin")
	}

	probe := do(t, c, "GET", base+"/other", map[string]string{"Range": "bytes=0-1"})
	if probe.status != http.StatusPartialContent || probe.body != "01" || probe.header.Get("Content-Range") != fmt.Sprintf("bytes 0-1/%d", len(content)) {
		t.Errorf("probe of an uncached object: %d %q Content-Range %q", probe.status, probe.body, probe.header.Get("Content-Range"))
	}
	mu.Lock()
	if last := sentRanges[len(sentRanges)-1]; last != "/other bytes=0-1" {
		t.Errorf("the probe reached the origin as %q, want its Range", last)
	}
	mu.Unlock()
	// Safari's next request, for bytes 0 to the length its probe learnt
	// minus one, goes as it came too; the origin's 206 is of the whole
	// body, stored as its 200.
	allRange := fmt.Sprintf("bytes=0-%d", len(content)-1)
	all := do(t, c, "GET", base+"/other", map[string]string{"Range": allRange})
	if all.status != http.StatusPartialContent || all.body != content || all.header.Get("Content-Range") != wantRange {
		t.Errorf("after the probe: %d, %d bytes, Content-Range %q", all.status, len(all.body), all.header.Get("Content-Range"))
	}
	mu.Lock()
	if last := sentRanges[len(sentRanges)-1]; last != "/other "+allRange {
		t.Errorf("the request for the whole length reached the origin as %q, want its Range", last)
	}
	mu.Unlock()
	waitFor(t, "the other video to be stored", 5*time.Second, func() bool {
		return isHit(do(t, c, "GET", base+"/other", map[string]string{"Range": "bytes=10-19"}))
	})
}

// gzipFront starts a Caddy that serves origin on a free port through
// response_cache (with options), then encode gzip, then reverse_proxy
// (the order the README offers, by hand, to store compressed variants),
// and returns the URL of /enc on it, with a gzip GET of it stored.
func gzipFront(t *testing.T, origin *backend, options string) (url string, c *http.Client) {
	t.Helper()
	frontPort := freePort(t)
	url = fmt.Sprintf("http://127.0.0.1:%d/enc", frontPort)
	startCaddy(t, globalsWith("\torder response_cache before encode\n")+fmt.Sprintf(`
http://127.0.0.1:%d {
	response_cache {
		%s
	}
	encode gzip
	reverse_proxy %s
}
`, frontPort, options, origin.addr))
	c = newClient()
	gz := map[string]string{"Accept-Encoding": "gzip"}
	do(t, c, "GET", url, gz)
	waitFor(t, "the gzip response to be stored", 5*time.Second, func() bool { return isHitOf(do(t, c, "GET", url, gz)) })
	return url, c
}

// isHitOf reports whether r was a hit, of whichever cache_name.
func isHitOf(r result) bool { return strings.Contains(cacheStatus(r), "; hit") }

// TestCacheWholeRangeThroughEncodeKeepsVariants: behind encode, which
// leaves 206s alone (no compression, no Vary), a 206 of the whole body is
// not stored over the URL's gzip variant (found by a review: it was, and
// gzip clients then got the identity body).
func TestCacheWholeRangeThroughEncodeKeepsVariants(t *testing.T) {
	page := strings.Repeat("a page to compress. ", 300)
	origin := startBackend(t, "origin", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Etag", `"v1"`)
		w.Header().Set("Content-Type", "text/html")
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader(page))
	})
	url, c := gzipFront(t, origin, "cache_name itest-encode-range")
	gz := map[string]string{"Accept-Encoding": "gzip"}
	whole := do(t, c, "GET", url, map[string]string{"Range": fmt.Sprintf("bytes=0-%d", len(page)-1), "Accept-Encoding": "identity"})
	if whole.status != http.StatusPartialContent || whole.body != page {
		t.Fatalf("whole range: %d, %d bytes", whole.status, len(whole.body))
	}
	time.Sleep(200 * time.Millisecond) // time for a wrong store to be applied, were it offered
	r := do(t, c, "GET", url, gz)
	if r.header.Get("Content-Encoding") != "gzip" || !isHitOf(r) {
		t.Errorf("gzip client after a whole range: Content-Encoding %q Vary %q Cache-Status %q; want the stored gzip variant",
			r.header.Get("Content-Encoding"), r.header.Values("Vary"), cacheStatus(r))
	}
}

// TestCacheUncacheableURLsSkipCoalescing: after a URL's response was not
// storable (no Cache-Control at all; `private` from an API behind CORS
// middleware, which varies every response on Origin; or a storable one
// that turned out not to be: a body of unknown length past max_item_size,
// trailer fields no Trailer field announced), its concurrent requests
// reach the origin together rather than one after another's response
// header (or, for the last two, its body's end or its first max_item_size
// bytes).
func TestCacheUncacheableURLsSkipCoalescing(t *testing.T) {
	cacheable := []string{"Cache-Control", "max-age=60"}
	for _, tc := range []struct {
		name    string
		fields  []string // the origin's
		request map[string]string
		options string // the response_cache block's
		body    func(w http.ResponseWriter)
	}{
		{"no Cache-Control", nil, nil, "", nil},
		{"CORS API, private", []string{"Cache-Control", "max-age=0, private, must-revalidate", "Vary", "Origin"},
			map[string]string{"Origin": "https://app.example.com"}, "", nil},
		{"logged-in long poll renewing its session", []string{"Cache-Control", "no-store, no-cache, must-revalidate", "Set-Cookie", "session=s2; Path=/"},
			map[string]string{"Cookie": "session=s1"}, "", nil},
		{"past max_item_size, unknown length", cacheable, nil, "max_item_size 1KiB", func(w http.ResponseWriter) {
			for range 4 {
				fmt.Fprint(w, strings.Repeat("x", 512))
				w.(http.Flusher).Flush() // chunked, no Content-Length
			}
		}},
		{"undeclared trailers", cacheable, nil, "", func(w http.ResponseWriter) {
			fmt.Fprint(w, `{"user":"ann"}`)
			w.(http.Flusher).Flush() // chunked: a Content-Length would leave no room for trailers
			w.Header().Set(http.TrailerPrefix+"Checksum", "abc")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { uncacheableURLSkipsCoalescing(t, tc.fields, tc.request, tc.options, tc.body) })
	}
}

func uncacheableURLSkipsCoalescing(t *testing.T, fields []string, request map[string]string, options string, body func(http.ResponseWriter)) {
	const clients = 8
	var inFlight, most atomic.Int32
	var armed atomic.Bool
	all := make(chan struct{})
	var once sync.Once
	origin := startBackend(t, "api", func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		if n == clients {
			once.Do(func() { close(all) })
		}
		if armed.Load() {
			// Answer once every client is here; bounded, so that a
			// request held behind another's header ends the test.
			select {
			case <-all:
			case <-time.After(3 * time.Second):
			}
		}
		for i := 0; i+1 < len(fields); i += 2 {
			w.Header().Set(fields[i], fields[i+1])
		}
		if o := r.Header.Get("Origin"); o != "" {
			w.Header().Set("Access-Control-Allow-Origin", o)
		}
		if body != nil {
			body(w)
			return
		}
		fmt.Fprint(w, `{"user":"ann"}`)
	})
	frontPort := freePort(t)
	startCaddy(t, cacheFront(frontPort, origin, options))
	c := newClient()
	url := fmt.Sprintf("http://127.0.0.1:%d/api/me", frontPort)
	if r := do(t, c, "GET", url, request); r.status != 200 || !strings.Contains(cacheStatus(r), "fwd=uri-miss") {
		t.Fatalf("first request: %d, Cache-Status %q", r.status, cacheStatus(r))
	}
	most.Store(0)
	armed.Store(true)
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			if r := do(t, c, "GET", url, request); r.status != 200 || strings.Contains(cacheStatus(r), "collapsed") {
				t.Errorf("%d, Cache-Status %q", r.status, cacheStatus(r))
			}
		})
	}
	wg.Wait()
	if got := most.Load(); got != clients {
		t.Errorf("the origin saw at most %d of %d concurrent requests for a URL never stored at once; want all", got, clients)
	}
}

// TestCacheMinUses: with min_uses 2 a URL is stored on its second miss.
func TestCacheMinUses(t *testing.T) {
	origin := startBackend(t, "origin", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		fmt.Fprintf(w, "body of %s", r.URL.Path)
	})
	frontPort := freePort(t)
	startCaddy(t, cacheFront(frontPort, origin, "min_uses 2"))
	c := newClient()
	url := fmt.Sprintf("http://127.0.0.1:%d/twice", frontPort)
	want := []string{
		"itest; fwd=uri-miss; fwd-status=200; detail=min-uses",
		"itest; fwd=uri-miss; fwd-status=200",
	}
	for i, status := range want {
		r := do(t, c, "GET", url, nil)
		if r.status != 200 || r.body != "body of /twice" || cacheStatus(r) != status {
			t.Fatalf("request %d: %d %q, Cache-Status %q, want %q", i+1, r.status, r.body, cacheStatus(r), status)
		}
	}
	// ristretto applies sets asynchronously: wait for the hit.
	waitFor(t, "the second miss to be stored", 5*time.Second, func() bool { return isHit(do(t, c, "GET", url, nil)) })
	if got := origin.hits.Load(); got != 2 {
		t.Errorf("origin saw %d requests, want 2", got)
	}
}

// TestCacheMinUsesAuto: by default, once almost none of the responses
// stored on a URL's first miss are asked for again, the cache stops
// storing first misses (detail=min-uses), still stores a URL's second miss,
// and goes back to storing first misses when URLs come back again.
func TestCacheMinUsesAuto(t *testing.T) {
	body := strings.Repeat("r", 8<<10)
	origin := startBackend(t, "origin", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		fmt.Fprint(w, body)
	})
	frontPort := freePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", frontPort)
	// A store of its own, with counts of its own: Caddy keeps a store
	// across configs with the same cache_name and sizes, and so across
	// runs of this test in one process. It is small, so that the URLs
	// asked for once fill it: auto skips first misses only in a store
	// that is nearly full.
	size := 1<<20 + time.Now().UnixNano()%(64<<10)
	startCaddy(t, cacheFront(frontPort, origin, fmt.Sprintf("max_size %d", size)))
	c := newClient()
	skipping := func() bool {
		t.Helper()
		var st []struct {
			MaxBytes    int64 `json:"max_bytes"`
			FirstMisses struct {
				Stored, Used uint64
				Skipping     bool
			} `json:"first_misses"`
		}
		cacheStats(t, &st)
		for _, s := range st {
			if s.MaxBytes == size {
				t.Logf("first_misses: %+v", s.FirstMisses)
				return s.FirstMisses.Skipping
			}
		}
		t.Fatalf("stats: no store of max_size %d in %+v", size, st)
		return false
	}
	get := func(path string) string {
		t.Helper()
		r := do(t, c, "GET", base+path, nil)
		if r.status != 200 || r.body != body {
			t.Fatalf("GET %s: %d, %d bytes of body", path, r.status, len(r.body))
		}
		return cacheStatus(r)
	}
	skipped, last := 0, ""
	for i := range 400 {
		path := fmt.Sprintf("/once/%d", i)
		if strings.Contains(get(path), "detail=min-uses") {
			skipped, last = skipped+1, path
		}
	}
	if skipped < 250 {
		t.Fatalf("%d of 400 first misses of URLs asked for once were not stored, want all but the first 64 and one in 16", skipped)
	}
	if !skipping() {
		t.Error("stats: first_misses.skipping is false after the flood")
	}
	if cs := get(last); strings.Contains(cs, "detail=min-uses") {
		t.Errorf("second miss of %s: Cache-Status %q, want it stored", last, cs)
	}
	// Emptied, the store has room again: first misses are stored, though
	// the counts still say almost none were used.
	if status, body := adminPost(t, "/response_cache/purge", `{"cache": "itest", "all": true}`); status != 200 {
		t.Fatalf("purge: %d %s", status, body)
	}
	if skipping() {
		t.Error("stats: first_misses.skipping is still true in an empty store")
	}
	for i := range 50 {
		path := fmt.Sprintf("/again/%d", i)
		if cs := get(path); strings.Contains(cs, "detail=min-uses") {
			t.Fatalf("first miss of %s in an emptied store: Cache-Status %q, want it stored", path, cs)
		}
		// Stored asynchronously: the store finds its latest offers
		// itself, but one in a slot another offer took is found once
		// ristretto takes it (under load, a moment later).
		waitFor(t, "the second request for "+path+" to hit", 5*time.Second, func() bool { return strings.Contains(get(path), "hit") })
	}
	t.Logf("first misses not stored: %d of 400 asked for once", skipped)
}

// bodyFigures are the recording and lead budgets of a store, from the
// admin API's stats.
type bodyFigures struct {
	Used      int64  `json:"used_bytes"` // arena
	Heap      int64  `json:"heap_bytes"` // bodies on the Go heap (all of them where nothing is mapped)
	Recording int64  `json:"recording_bytes"`
	Limit     int64  `json:"recording_limit_bytes"`
	Refusals  uint64 `json:"recording_refusals"`
	Leading   int64  `json:"leading_bytes"`
	LeadLimit int64  `json:"lead_limit_bytes"`
}

// bodiesOf returns the budgets of the store of max_size maxSize.
func bodiesOf(t *testing.T, c *http.Client, maxSize int64) bodyFigures {
	t.Helper()
	var st []struct {
		MaxBytes int64       `json:"max_bytes"`
		Bodies   bodyFigures `json:"bodies"`
	}
	cacheStats(t, &st)
	for _, s := range st {
		if s.MaxBytes == maxSize {
			return s.Bodies
		}
	}
	t.Fatalf("stats: no store of max_size %d in %+v", maxSize, st)
	return bodyFigures{}
}

// TestCacheRecordingBudgetUnderABurst: many concurrent misses of distinct
// large responses take at most an eighth of max_size while they are being
// recorded (the others are streamed, not stored), every client gets its
// whole body, and the budget is free again once they end.
func TestCacheRecordingBudgetUnderABurst(t *testing.T) {
	const clients, size = 20, 1 << 20
	release := make(chan struct{})
	var once sync.Once
	defer once.Do(func() { close(release) })
	origin := startBackend(t, "burst", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Content-Length", strconv.Itoa(size))
		body := bytes.Repeat([]byte(r.URL.Path[len(r.URL.Path)-1:]), size)
		_, _ = w.Write(body[:64<<10])
		w.(http.Flusher).Flush()
		<-release
		_, _ = w.Write(body[64<<10:])
	})
	frontPort := freePort(t)
	maxSize := int64(16<<20 + 4096) // its own: an eighth is 2 MiB
	startCaddy(t, cacheFront(frontPort, origin, fmt.Sprintf("max_size %d", maxSize)))
	c := newClient()
	stats := func() bodyFigures { t.Helper(); return bodiesOf(t, c, maxSize) }

	type answer struct {
		path, status string
		res          *http.Response
		err          error
	}
	// The store outlives a test run (-count): count from here, on new URLs.
	before, run := stats().Refusals, time.Now().UnixNano()
	answers := make(chan answer, clients)
	for i := range clients {
		go func() {
			path := fmt.Sprintf("/burst/%d/%d", run, i%10)
			if i >= 10 {
				path += "x"
			}
			res, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d%s", frontPort, path))
			a := answer{path: path, res: res, err: err}
			if err == nil {
				a.status = res.Header.Get("Cache-Status")
			}
			answers <- a
		}()
	}
	var got []answer
	for range clients {
		a := <-answers
		if a.err != nil {
			t.Fatalf("GET %s: %v", a.path, a.err)
		}
		got = append(got, a)
	}
	// Every client has its header; every origin response is held after
	// its first 64 KiB.
	st := stats()
	t.Logf("during the burst: %+v", st)
	if st.Limit != maxSize/8 {
		t.Errorf("recording limit = %d, want %d (an eighth of max_size)", st.Limit, maxSize/8)
	}
	if st.Recording > st.Limit {
		t.Errorf("%d bytes being recorded at once, over the budget of %d", st.Recording, st.Limit)
	}
	refused := 0
	for _, a := range got {
		if strings.Contains(a.status, "detail=recording-budget") {
			refused++
		}
	}
	if want := clients - int(st.Limit/size); refused < want || uint64(refused) != st.Refusals-before {
		t.Errorf("%d responses say detail=recording-budget, stats count %d refusals; want at least %d", refused, st.Refusals-before, want)
	}
	once.Do(func() { close(release) })
	for _, a := range got {
		b, err := io.ReadAll(a.res.Body)
		a.res.Body.Close()
		if err != nil || len(b) != size || !bytes.Equal(b, bytes.Repeat(b[:1], size)) || b[0] != a.path[len(a.path)-1] {
			t.Errorf("%s: %d bytes (%v); want its %d bytes intact", a.path, len(b), err, size)
		}
	}
	waitFor(t, "the recording budget to be free", 5*time.Second, func() bool { return stats().Recording == 0 })
	// Those refused were not marked uncacheable: their next miss is stored.
	for _, a := range got {
		if strings.Contains(a.status, "detail=recording-budget") {
			untilHit(t, c, fmt.Sprintf("http://127.0.0.1:%d%s", frontPort, a.path))
			break
		}
	}
}

// TestCacheClientsThatDoNotReadHoldNoRecording: clients that ask for
// large responses without Content-Length and read nothing do not hold
// their recordings: each is recorded and stored at the origin's pace
// (a hit for the next client while its first still reads nothing), the
// recording budget is free again, and each stalled client, once it
// reads, gets its body whole. A security review saw 14 such clients hold
// the budget until Caddy timed their writes out, while other responses of
// several MB went unstored (detail=recording-budget).
func TestCacheClientsThatDoNotReadHoldNoRecording(t *testing.T) {
	const stalled, size = 4, 6 << 20 // larger than what loopback buffers hold (3-4 MB)
	piece := func(path string) []byte { return bytes.Repeat([]byte(path[len(path)-1:]), 32<<10) }
	origin := startBackend(t, "chunked", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		p := piece(r.URL.Path)
		for sent := 0; sent < size; sent += len(p) {
			if _, err := w.Write(p); err != nil {
				return
			}
			w.(http.Flusher).Flush() // no Content-Length: chunked
		}
	})
	frontPort := freePort(t)
	// Its own store; the lead budget (a sixteenth, 32 MiB) holds all four
	// bodies, however little of them the connections' buffers take in.
	const maxSize = 512<<20 + 8192
	startCaddy(t, cacheFront(frontPort, origin, fmt.Sprintf("max_size %d", maxSize)))
	c := newClient()
	stats := func() bodyFigures { t.Helper(); return bodiesOf(t, c, maxSize) }
	run := time.Now().UnixNano() // new URLs for every run (-count)
	base := fmt.Sprintf("http://127.0.0.1:%d", frontPort)
	var conns []net.Conn
	defer func() {
		for _, conn := range conns {
			conn.Close()
		}
	}()
	var paths []string
	for i := range stalled {
		path := fmt.Sprintf("/stalled/%d/%c", run, 'a'+i)
		conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", frontPort))
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
		paths = append(paths, path)
		if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", path, frontPort); err != nil {
			t.Fatal(err)
		}
	}
	// Each is stored while its client reads nothing.
	for _, path := range paths {
		r := untilHit(t, c, base+path)
		if len(r.body) != size || !bytes.Equal([]byte(r.body), bytes.Repeat(piece(path)[:1], size)) {
			t.Errorf("%s: the hit has %d bytes, want its %d intact", path, len(r.body), size)
		}
	}
	st := stats()
	t.Logf("while %d clients read nothing: %+v", stalled, st)
	if st.Recording != 0 {
		t.Errorf("%d bytes of the recording budget held while every response is stored", st.Recording)
	}
	if st.Leading != 0 || st.LeadLimit != maxSize/16 {
		t.Errorf("lead budget: %d held of %d; want none held once stored, of a sixteenth of max_size", st.Leading, st.LeadLimit)
	}
	// Another large response is stored meanwhile.
	other := fmt.Sprintf("/stalled/%d/z", run)
	if r := do(t, c, "GET", base+other, nil); len(r.body) != size || strings.Contains(r.header.Get("Cache-Status"), "detail=recording-budget") {
		t.Errorf("%s: %d bytes, Cache-Status %q; want %d bytes, recorded", other, len(r.body), r.header.Get("Cache-Status"), size)
	}
	untilHit(t, c, base+other)
	// The stalled clients read now, and get all of theirs.
	for i, conn := range conns {
		_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("%s: %v", paths[i], err)
		}
		b, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil || len(b) != size || !bytes.Equal(b, bytes.Repeat(piece(paths[i])[:1], size)) {
			t.Errorf("%s: the stalled client got %d bytes (%v); want its %d intact", paths[i], len(b), err, size)
		}
	}
	if n := origin.hits.Load(); n != stalled+1 {
		t.Errorf("origin asked %d times, want %d (once a URL)", n, stalled+1)
	}
}

// TestCachePurgesLogToALogOfTheirOwn: a log that includes the admin API's
// logger gets each purge's line (a soak found none there: the logger wrote
// to the default log only, which excludes what another log includes).
func TestCachePurgesLogToALogOfTheirOwn(t *testing.T) {
	origin := startBackend(t, "purge-log", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		_, _ = io.WriteString(w, "logged")
	})
	file := filepath.Join(t.TempDir(), "purges.log")
	frontPort := freePort(t)
	startCaddy(t, globalsWith(fmt.Sprintf("\tlog purges {\n\t\toutput file %s\n\t\tinclude admin.api.response_cache\n\t}\n", file))+
		strings.TrimPrefix(cacheFront(frontPort, origin, "max_size 16MiB"), globals()))
	url := fmt.Sprintf("http://127.0.0.1:%d/purge-log", frontPort)
	untilHit(t, newClient(), url)
	if status, body := adminPost(t, "/response_cache/purge", fmt.Sprintf(`{"key": %q}`, url)); status != 200 {
		t.Fatalf("purge: %d %s", status, body)
	}
	var line map[string]any
	waitFor(t, "the purge's line in "+file, 5*time.Second, func() bool {
		b, _ := os.ReadFile(file)
		for l := range strings.Lines(string(b)) {
			if json.Unmarshal([]byte(l), &line) == nil && line["msg"] == "purged" {
				return true
			}
		}
		return false
	})
	if line["logger"] != "admin.api.response_cache" || line["key"] != url || line["purged"] != 1.0 {
		t.Errorf("logged %v; want the purge of %s by admin.api.response_cache, 1 purged", line, url)
	}
}

// TestCacheWriteTimeoutEndsWhatStalledClientsHold: what a client that
// stops reading holds (here the stored body its response is written from,
// kept in the arena after a purge) is held until its connection, or its
// HTTP/2 stream, ends; the server's write timeout, which README advises for
// this, ends it. The stalled client never reads, and gets a body cut short
// once it does.
func TestCacheWriteTimeoutEndsWhatStalledClientsHold(t *testing.T) {
	const size = 6 << 20 // more than loopback buffers (3-4 MB) or an HTTP/2 client's window (4 MiB) take in
	p := bytes.Repeat([]byte("w"), 32<<10)
	origin := startBackend(t, "write-timeout", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		for sent := 0; sent < size; sent += len(p) {
			if _, err := w.Write(p); err != nil {
				return
			}
			w.(http.Flusher).Flush() // no Content-Length: chunked
		}
	})
	frontPort := freePort(t)
	const maxSize = 256<<20 + 4096 // its own store
	startCaddy(t, globalsWith("\tservers {\n\t\tprotocols h1 h2c\n\t\ttimeouts {\n\t\t\twrite 4s\n\t\t}\n\t}\n")+fmt.Sprintf(`
http://127.0.0.1:%d {
	response_cache {
		cache_name itest
		max_size %d
		max_item_size 8MiB
	}
	reverse_proxy %s
}
`, frontPort, maxSize, origin.addr))
	c := newClient()
	h2c := &http.Transport{Protocols: new(http.Protocols)}
	h2c.Protocols.SetUnencryptedHTTP2(true)
	defer h2c.CloseIdleConnections()
	// stall sends a GET for path and returns its body unread.
	for proto, stall := range map[string]func(path string) io.ReadCloser{
		"HTTP/1.1": func(path string) io.ReadCloser {
			conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", frontPort))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", path, frontPort); err != nil {
				t.Fatal(err)
			}
			return &unreadResponse{conn: conn}
		},
		"h2c": func(path string) io.ReadCloser {
			res, err := (&http.Client{Transport: h2c}).Get(fmt.Sprintf("http://127.0.0.1:%d%s", frontPort, path))
			if err != nil {
				t.Fatal(err)
			}
			if res.ProtoMajor != 2 {
				t.Fatalf("%s, want HTTP/2", res.Proto)
			}
			return res.Body
		},
	} {
		t.Run(proto, func(t *testing.T) {
			path := fmt.Sprintf("/stalled/%d", time.Now().UnixNano())
			start := time.Now()
			body := stall(path)
			defer body.Close()
			// Stored while its client reads nothing, then purged: its
			// body stays in the arena while the stalled client's writer
			// has it to write...
			untilHit(t, c, fmt.Sprintf("http://127.0.0.1:%d%s", frontPort, path))
			if status, b := adminPost(t, "/response_cache/purge", `{"cache": "itest", "all": true}`); status != 200 {
				t.Fatalf("purge: %d %s", status, b)
			}
			bodies := func() int64 { st := bodiesOf(t, c, maxSize); return st.Used + st.Heap }
			held := bodies()
			if since := time.Since(start); held < size && since < 4*time.Second {
				t.Fatalf("%d bytes of bodies held %v after the request, before its write timeout; want the %d the stalled client's writer holds", held, since, size)
			}
			// ...until the write timeout ends its response (its client
			// still reads nothing).
			for time.Since(start) < 30*time.Second && bodies() != 0 {
				time.Sleep(100 * time.Millisecond)
			}
			st := bodiesOf(t, c, maxSize)
			t.Logf("held %d bytes while stalled; after the write timeout: %+v", held, st)
			if st.Used != 0 || st.Heap != 0 || st.Leading != 0 || st.Recording != 0 {
				t.Errorf("after the write timeout bodies hold %d bytes (%d on the heap), the budgets %d (lead) and %d (recording); want none", st.Used, st.Heap, st.Leading, st.Recording)
			}
			b, err := io.ReadAll(body)
			if err == nil || len(b) >= size {
				t.Errorf("the stalled client read %d bytes and %v; want a body cut short by an error", len(b), err)
			}
		})
	}
}

// unreadResponse is the body of the response to a request sent on conn,
// whose header it reads only at its first Read.
type unreadResponse struct {
	conn net.Conn
	body io.ReadCloser
}

func (u *unreadResponse) Read(p []byte) (int, error) {
	if u.body == nil {
		_ = u.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		res, err := http.ReadResponse(bufio.NewReader(u.conn), nil)
		if err != nil {
			return 0, err
		}
		u.body = res.Body
	}
	return u.body.Read(p)
}

func (u *unreadResponse) Close() error { return u.conn.Close() }

// TestCacheStreamsLargeBodies sends a body far larger than max_item_size
// through the cache: it must arrive whole and intact, not be stored, and not
// be held in memory.
func TestCacheStreamsLargeBodies(t *testing.T) {
	const size = 256 << 20 // 256 MiB against a 1 MiB max_item_size
	chunk := bytes.Repeat([]byte("0123456789abcdef"), 4096)
	origin := startBackend(t, "big", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Content-Length", strconv.Itoa(size))
		for sent := 0; sent < size; sent += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	want := sha256.New()
	for sent := 0; sent < size; sent += len(chunk) {
		want.Write(chunk)
	}
	frontPort := freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d/big", frontPort)
	startCaddy(t, cacheFront(frontPort, origin, "max_size 8MiB\n\t\tmax_item_size 1MiB"))
	c := newClient()

	runtime.GC()
	rssBefore := rssBytes(t)
	var heapPeak uint64
	for i := 0; i < 2; i++ {
		res, err := c.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		got := sha256.New()
		buf := make([]byte, 1<<20)
		var n int64
		for {
			m, err := res.Body.Read(buf)
			got.Write(buf[:m])
			n += int64(m)
			if n%(32<<20) < int64(m) {
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				heapPeak = max(heapPeak, ms.HeapInuse)
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("reading the body: %v", err)
			}
		}
		res.Body.Close()
		if n != size || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
			t.Fatalf("request %d: got %d bytes (sha mismatch: %v); want %d intact", i, n, !bytes.Equal(got.Sum(nil), want.Sum(nil)), size)
		}
		if strings.HasPrefix(res.Header.Get("Cache-Status"), "itest; hit") {
			t.Fatalf("request %d: a body over max_item_size was served from cache", i)
		}
	}
	rssAfter := rssBytes(t)
	t.Logf("streamed 2 x %d MiB: RSS %d -> %d MiB, peak heap in use %d MiB",
		size>>20, rssBefore>>20, rssAfter>>20, heapPeak>>20)
	if origin.hits.Load() != 2 {
		t.Errorf("origin saw %d requests; want 2 (nothing stored)", origin.hits.Load())
	}
	// Both the client and Caddy live in this process: allow for their
	// buffers, but a buffered copy of the body (256 MiB) must not appear.
	if growth := int64(rssAfter) - int64(rssBefore); growth > 64<<20 {
		t.Errorf("RSS grew by %d MiB while streaming; the body was buffered", growth>>20)
	}
	if heapPeak > 96<<20 {
		t.Errorf("heap in use peaked at %d MiB while streaming a %d MiB body", heapPeak>>20, size>>20)
	}
}

// rssBytes returns this process's resident set size.
func rssBytes(t testing.TB) uint64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("parsing %q: %v", line, err)
			}
			return kb << 10
		}
	}
	t.Skip("no VmRSS in /proc/self/status")
	return 0
}

// TestCacheRevalidationThroughProxy revalidates through reverse_proxy: a
// 304 that adds Set-Cookie is never shared with coalesced waiters, and a
// 304 whose ETag is not the stored one makes the cache send the client's
// request again (reverse_proxy runs twice for one request).
func TestCacheRevalidationThroughProxy(t *testing.T) {
	var mu sync.Mutex
	version := "v1"
	var release chan struct{} // when set, conditional requests wait for it
	var conditional, cookies int
	origin := startBackend(t, "origin", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		v, wait := version, release
		mu.Unlock()
		w.Header().Set("Cache-Control", "max-age=0") // stored, revalidated on every use
		w.Header().Set("Etag", `"`+v+`"`)
		if r.Header.Get("If-None-Match") != "" {
			mu.Lock()
			conditional++
			mu.Unlock()
			if wait != nil {
				<-wait
				mu.Lock()
				cookies++
				w.Header().Set("Set-Cookie", fmt.Sprintf("sid=%d", cookies))
				w.Header().Set("Cache-Control", "max-age=60") // fresh: waiters could share it
				mu.Unlock()
			}
			// Answers 304 whatever was asked: an origin whose replicas
			// disagree about the current version.
			w.WriteHeader(http.StatusNotModified)
			return
		}
		fmt.Fprintf(w, "body %s", v)
	})
	frontPort := freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d/doc", frontPort)
	startCaddy(t, cacheFront(frontPort, origin, ""))
	c := newClient()
	if r := do(t, c, "GET", url, nil); r.body != "body v1" {
		t.Fatalf("first answer %q", r.body)
	}
	// ristretto applies sets asynchronously: a revalidation shows the
	// entry is in.
	stored := func() {
		waitFor(t, "the entry to be stored", 5*time.Second, func() bool {
			return strings.HasPrefix(cacheStatus(do(t, c, "GET", url, nil)), "itest; fwd=stale; fwd-status=304")
		})
	}
	stored()

	// Concurrent revalidations whose 304 sets a cookie: each client gets
	// its own.
	mu.Lock()
	release = make(chan struct{})
	mu.Unlock()
	const clients = 20
	results := make([]result, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() { results[i] = do(t, c, "GET", url, nil) })
	}
	waitFor(t, "a revalidation to reach the origin", 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return conditional > 0
	})
	time.Sleep(200 * time.Millisecond) // let the others join; only affects how many wait
	mu.Lock()
	close(release) // the waiters' own revalidations get cookies too
	mu.Unlock()
	wg.Wait()
	seen := map[string]bool{}
	for i, r := range results {
		cookie := r.header.Get("Set-Cookie")
		if r.status != 200 || r.body != "body v1" || cookie == "" || seen[cookie] || strings.Contains(cacheStatus(r), "collapsed") {
			t.Errorf("client %d: %d %q Set-Cookie %q Cache-Status %q", i, r.status, r.body, cookie, cacheStatus(r))
		}
		seen[cookie] = true
	}

	// A 304 with Set-Cookie is not storable: the entry was dropped.
	mu.Lock()
	release = nil
	mu.Unlock()
	if r := do(t, c, "GET", url, nil); !strings.HasPrefix(cacheStatus(r), "itest; fwd=uri-miss") {
		t.Errorf("after 304s with Set-Cookie: Cache-Status %q, want a miss", cacheStatus(r))
	}
	stored()
	mu.Lock()
	version = "v2"
	mu.Unlock()
	before := origin.hits.Load()
	r := do(t, c, "GET", url, nil)
	if r.status != 200 || r.body != "body v2" || r.header.Get("Etag") != `"v2"` {
		t.Errorf("after a 304 for another ETag: %d %q ETag %q, want the v2 200", r.status, r.body, r.header.Get("Etag"))
	}
	if got := cacheStatus(r); !strings.HasPrefix(got, "itest; fwd=stale; fwd-status=200") {
		t.Errorf("Cache-Status %q", got)
	}
	if n := origin.hits.Load() - before; n != 2 {
		t.Errorf("origin saw %d requests, want 2 (the 304, then the request again)", n)
	}
	// v2 is stored: revalidating it gets a 304 that selects it.
	stored()
	if r = do(t, c, "GET", url, nil); r.body != "body v2" {
		t.Errorf("revalidating v2: %q, Cache-Status %q", r.body, cacheStatus(r))
	}
}

// TestCacheHeadFreshensThroughProxy: a HEAD that reaches the origin
// through reverse_proxy while a GET response is stored updates that
// response when the origin's 200 matches it, and drops it when the
// origin's ETag has moved on (RFC 9111 §4.3.5).
func TestCacheHeadFreshensThroughProxy(t *testing.T) {
	var mu sync.Mutex
	version, control := "v1", "max-age=0"
	origin := startBackend(t, "origin", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		v, cc := version, control
		mu.Unlock()
		w.Header().Set("Cache-Control", cc)
		w.Header().Set("Etag", `"`+v+`"`)
		if r.Header.Get("If-None-Match") == `"`+v+`"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		fmt.Fprintf(w, "body %s", v) // net/http sends its length, not the body, for a HEAD
	})
	frontPort := freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d/head", frontPort)
	startCaddy(t, cacheFront(frontPort, origin, ""))
	c := newClient()
	do(t, c, "GET", url, nil)
	waitFor(t, "the entry to be stored", 5*time.Second, func() bool {
		return strings.HasPrefix(cacheStatus(do(t, c, "GET", url, nil)), "itest; fwd=stale; fwd-status=304")
	})

	// The stored response is stale; the origin's HEAD answer matches it
	// and makes it fresh for a minute.
	mu.Lock()
	control = "max-age=60"
	mu.Unlock()
	r := do(t, c, "HEAD", url, nil)
	if r.status != 200 || r.header.Get("Content-Length") != "7" || !strings.HasPrefix(cacheStatus(r), "itest; fwd=stale; fwd-status=200") {
		t.Fatalf("HEAD: %d Content-Length %q Cache-Status %q", r.status, r.header.Get("Content-Length"), cacheStatus(r))
	}
	before := origin.hits.Load()
	waitFor(t, "the HEAD's update to be stored", 5*time.Second, func() bool {
		r = do(t, c, "GET", url, map[string]string{"Cache-Control": "only-if-cached"})
		return r.status == 200
	})
	if r.body != "body v1" || !strings.HasPrefix(cacheStatus(r), "itest; hit") || origin.hits.Load() != before {
		t.Errorf("after the HEAD: %d %q Cache-Status %q, origin asked %d more times; want a fresh hit",
			r.status, r.body, cacheStatus(r), origin.hits.Load()-before)
	}

	// The origin moves on; a HEAD that asks for validation learns it.
	mu.Lock()
	version = "v2"
	mu.Unlock()
	r = do(t, c, "HEAD", url, map[string]string{"Cache-Control": "no-cache"})
	if r.status != 200 || r.header.Get("Etag") != `"v2"` || !strings.HasPrefix(cacheStatus(r), "itest; fwd=request; fwd-status=200") {
		t.Fatalf("HEAD with no-cache: %d ETag %q Cache-Status %q", r.status, r.header.Get("Etag"), cacheStatus(r))
	}
	if r = do(t, c, "GET", url, map[string]string{"Cache-Control": "only-if-cached, max-stale"}); r.status != http.StatusGatewayTimeout {
		t.Errorf("after a HEAD with another ETag: %d %q Cache-Status %q, want the v1 response dropped", r.status, r.body, cacheStatus(r))
	}
	if r = do(t, c, "GET", url, nil); r.body != "body v2" {
		t.Errorf("GET after the drop: %q", r.body)
	}
}

// TestCacheHeadThroughEncode: behind encode, a HEAD that encode leaves
// uncompressed (it cannot size it) says nothing of the stored gzip
// response, whose fields (Vary: Accept-Encoding among them) stay as
// they were.
func TestCacheHeadThroughEncode(t *testing.T) {
	page := strings.Repeat("a page to compress. ", 300) // over 2 KiB: no Content-Length from net/http
	origin := startBackend(t, "origin", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Etag", `"v1"`)
		w.Header().Set("Vary", "Origin")
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, page)
	})
	url, c := gzipFront(t, origin, "cache_name itest\n\t\tmin_uses 1")
	gz := map[string]string{"Accept-Encoding": "gzip"}
	head := do(t, c, "HEAD", url, map[string]string{"Accept-Encoding": "gzip", "Cache-Control": "no-cache"})
	if head.status != 200 || head.header.Get("Content-Encoding") != "" {
		t.Fatalf("HEAD: %d Content-Encoding %q; the test needs encode to leave it uncompressed", head.status, head.header.Get("Content-Encoding"))
	}
	r := do(t, c, "GET", url, gz)
	vary := strings.Join(r.header.Values("Vary"), ", ")
	if r.header.Get("Content-Encoding") != "gzip" || !strings.Contains(vary, "Accept-Encoding") || !isHitOf(r) {
		t.Errorf("after the HEAD: Content-Encoding %q, Vary %q, Cache-Status %q; want the stored gzip hit with Vary: Accept-Encoding",
			r.header.Get("Content-Encoding"), vary, cacheStatus(r))
	}
}

// TestCacheMissSurvivesReload: a miss still streaming from the origin
// when the config is reloaded completes, as it does through a plain
// reverse_proxy (Caddy lets the old config's requests finish but ends its
// context at once, which used to end the cache's fill with it).
func TestCacheMissSurvivesReload(t *testing.T) {
	const chunks, chunk = 20, 4096
	started := make(chan struct{}, 1)
	resume := make(chan struct{})
	origin := startBackend(t, "origin", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		for i := range chunks {
			if i == chunks/2 {
				select {
				case started <- struct{}{}:
				default:
				}
				<-resume
			}
			w.Write(bytes.Repeat([]byte{byte('a' + i)}, chunk))
			w.(http.Flusher).Flush()
		}
	})
	frontPort := freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d/reload", frontPort)
	startCaddy(t, cacheFront(frontPort, origin, ""))
	c := newClient()
	answer := make(chan asyncResult, 1)
	go func() { answer <- doAsync(c, "GET", url) }()
	<-started
	loadConfig(t, adminPort, cacheFront(frontPort, origin, "default_ttl 1s"))
	close(resume)
	var r asyncResult
	select {
	case r = <-answer:
	case <-time.After(10 * time.Second):
		t.Fatal("the miss did not complete")
	}
	if r.err != nil || r.status != 200 || len(r.body) != chunks*chunk {
		t.Errorf("miss across a reload: %v, %d with %d of %d bytes", r.err, r.status, len(r.body), chunks*chunk)
	}
}

// TestCacheEventStreamEndsWithItsClient: a subscriber of a server-sent
// event stream (never stored) that leaves ends its origin request, as
// through plain reverse_proxy: the cache led a coalescing flight for the
// new URL, whose origin request outlived its client until the origin's
// next event, and an endpoint without heartbeats kept a connection open
// per departed subscriber.
func TestCacheEventStreamEndsWithItsClient(t *testing.T) {
	ended := make(chan error, 1)
	origin := startBackend(t, "events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "max-age=60")
		io.WriteString(w, "data: first\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
			ended <- r.Context().Err()
		case <-time.After(20 * time.Second):
			ended <- nil
		}
	})
	frontPort := freePort(t)
	startCaddy(t, cacheFront(frontPort, origin, ""))
	ctx, leave := context.WithCancel(context.Background())
	defer leave()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/events?session=1", frontPort), nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := newClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	line, err := bufio.NewReader(res.Body).ReadString('\n')
	if err != nil || line != "data: first\n" {
		t.Fatalf("first event: %q, %v", line, err)
	}
	leave()
	select {
	case err := <-ended:
		if err == nil {
			t.Fatal("the origin request outlived its client by 20 s")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the origin request outlived its client by 10 s")
	}
}

// TestCacheUpgradePassesThrough: a connection upgrade (WebSocket and the
// like) through response_cache bypasses the cache, reaches the backend and
// carries data both ways; two at once to one URL do not wait on each
// other.
func TestCacheUpgradePassesThrough(t *testing.T) {
	origin := startBackend(t, "upgrade", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "want Upgrade: echo", http.StatusBadRequest)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("hijack: %v", err)
			return
		}
		defer conn.Close()
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		_ = brw.Flush()
		_, _ = io.Copy(conn, brw) // echo until the client closes
	})
	frontPort := freePort(t)
	startCaddy(t, cacheFront(frontPort, origin, ""))

	dial := func() (net.Conn, *bufio.Reader) {
		conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", frontPort), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n", frontPort)
		br := bufio.NewReader(conn)
		res, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("reading the upgrade response: %v", err)
		}
		if res.StatusCode != http.StatusSwitchingProtocols || res.Header.Get("Cache-Status") != "itest; fwd=bypass; fwd-status=101" {
			t.Fatalf("upgrade answered %d, Cache-Status %q", res.StatusCode, res.Header.Get("Cache-Status"))
		}
		return conn, br
	}
	// The first stays open while the second is made.
	first, firstR := dial()
	defer first.Close()
	second, secondR := dial()
	defer second.Close()
	for i, c := range []struct {
		conn net.Conn
		r    *bufio.Reader
	}{{first, firstR}, {second, secondR}} {
		msg := fmt.Sprintf("ping %d\n", i)
		if _, err := io.WriteString(c.conn, msg); err != nil {
			t.Fatal(err)
		}
		got, err := c.r.ReadString('\n')
		if err != nil || got != msg {
			t.Errorf("connection %d echoed %q, %v; want %q", i, got, err, msg)
		}
	}
}

// TestCacheKeyIsTheOriginalURI: two handle_path blocks strip their prefix
// before their caches (which share one store), so /api/logo and
// /static/logo both reach the cache as /logo; each keeps its own entry.
// (respond, ordered before response_cache, is put after it in a route.)
func TestCacheKeyIsTheOriginalURI(t *testing.T) {
	frontPort := freePort(t)
	startCaddy(t, globals()+fmt.Sprintf(`
http://127.0.0.1:%d {
	handle_path /api/* {
		route {
			response_cache {
				cache_name itest
				default_ttl 1m
			}
			respond "API resource {path}"
		}
	}
	handle_path /static/* {
		route {
			response_cache {
				cache_name itest
				default_ttl 1m
			}
			respond "STATIC file {path}"
		}
	}
}
`, frontPort))
	c := newClient()
	base := fmt.Sprintf("http://127.0.0.1:%d", frontPort)
	want := map[string]string{"/api/logo": "API resource /logo", "/static/logo": "STATIC file /logo"}
	for _, p := range []string{"/api/logo", "/static/logo"} {
		if r := do(t, c, "GET", base+p, nil); r.body != want[p] {
			t.Errorf("%s: %q (%s)", p, r.body, cacheStatus(r))
		}
	}
	for _, p := range []string{"/api/logo", "/static/logo"} {
		waitFor(t, p+" to be stored", 5*time.Second, func() bool {
			r := do(t, c, "GET", base+p, nil)
			if r.body != want[p] {
				t.Fatalf("%s: %q (%s), another URI's response", p, r.body, cacheStatus(r))
			}
			return isHit(r)
		})
	}
}

// TestCacheAskAgainThroughAffinity: when a 304 does not select the stored
// response and the cache sends the request again, lb_policy affinity sees
// a new request, not a retry: a keyed client reaches the same upstream
// twice, and a client without a cookie still gets exactly one.
func TestCacheAskAgainThroughAffinity(t *testing.T) {
	var mu sync.Mutex
	var seen []string // backend(If-None-Match) per origin request
	backends := make([]*backend, 3)
	for i := range backends {
		name := fmt.Sprintf("b%d", i)
		backends[i] = startBackend(t, name, func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			seen = append(seen, fmt.Sprintf("%s(%s)", name, r.Header.Get("If-None-Match")))
			mu.Unlock()
			if r.Header.Get("If-None-Match") != "" {
				w.Header().Set("Etag", `"other"`) // replicas out of step
				w.WriteHeader(http.StatusNotModified)
				return
			}
			w.Header().Set("Etag", `"a"`)
			w.Header().Set("Cache-Control", "max-age=0") // stored, revalidated on every use
			fmt.Fprint(w, "body")
		})
	}
	frontPort := freePort(t)
	startCaddy(t, globals()+fmt.Sprintf(`
http://127.0.0.1:%d {
	response_cache {
		cache_name itest
		min_uses 1
	}
	reverse_proxy %s %s %s {
		lb_policy affinity {http.request.header.X-Key} {
			cookie aff {
				secret integration-test-secret-0123456789
			}
		}
	}
}
`, frontPort, backends[0].addr, backends[1].addr, backends[2].addr))
	c := newClient()
	// askedAgain repeats a request until one is a revalidation answered by
	// the cache's second send, and returns it with what the origin saw.
	askedAgain := func(url string, header map[string]string) (result, []string) {
		var r result
		var got []string
		waitFor(t, "a revalidation asked again", 5*time.Second, func() bool {
			mu.Lock()
			seen = nil
			mu.Unlock()
			r = do(t, c, "GET", url, header)
			mu.Lock()
			defer mu.Unlock()
			got = seen
			return len(got) == 2
		})
		return r, got
	}

	url := fmt.Sprintf("http://127.0.0.1:%d/obj", frontPort)
	alice := map[string]string{"X-Key": "alice"}
	home := do(t, c, "GET", url, alice).header.Get("X-Backend")
	r, got := askedAgain(url, alice)
	if want := []string{home + `("a")`, home + "()"}; !slices.Equal(got, want) || r.body != "body" {
		t.Errorf("alice (upstream %s): origin saw %v, want %v; body %q", home, got, want, r.body)
	}

	url2 := fmt.Sprintf("http://127.0.0.1:%d/obj2", frontPort)
	do(t, c, "GET", url2, alice)
	r, got = askedAgain(url2, nil) // no key, no cookie: the policy issues one
	if cookies := r.header.Values("Set-Cookie"); len(cookies) != 1 || !strings.HasPrefix(cookies[0], "aff=") {
		t.Errorf("cookie-less client asked again (origin saw %v): Set-Cookie %q, want one affinity cookie", got, cookies)
	}
	// Each send issues a fresh id (the first one's cookie went with the
	// response that was not used), so the two may reach different
	// upstreams; the cookie the client keeps is the one for the upstream
	// that answered.

	// The 200 the send again got is stored: the cookie the policy issued
	// for it is its own, not the origin's (it was taken for the origin's,
	// and the 200 not stored). The next request revalidates it.
	if cs := cacheStatus(do(t, c, "GET", url2, nil)); !strings.Contains(cs, "fwd=stale") {
		t.Errorf("after a send again for a cookie-less client, the next request: Cache-Status %q, want fwd=stale (its 200 stored)", cs)
	}
}

// TestCacheWaitersStreamAnArrivingBody: concurrent misses of a large
// object (a video on its release) read it as it arrives from the one
// origin request, even when the first client, whose request that is,
// reads nothing. They used to wait for the whole body and, past the
// coalescing bound (10 s after the header), each asked the origin for all
// of it; a first client that stopped reading held them all that long.
func TestCacheWaitersStreamAnArrivingBody(t *testing.T) {
	const size, half, clients = 8 << 20, 4 << 20, 20
	chunk := bytes.Repeat([]byte("0123456789abcdef"), 4096)
	release := make(chan struct{})
	var releaseOnce sync.Once
	defer releaseOnce.Do(func() { close(release) })
	origin := startBackend(t, "video", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=600")
		w.Header().Set("Content-Length", strconv.Itoa(size))
		for sent := 0; sent < size; sent += len(chunk) {
			if sent == half {
				w.(http.Flusher).Flush()
				<-release
			}
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	frontPort := freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d/video.mp4", frontPort)
	startCaddy(t, cacheFront(frontPort, origin, "max_size 64MiB\n\t\tmax_item_size 32MiB"))

	// The first client sends its request and reads nothing.
	stalled, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", frontPort))
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	if err := stalled.(*net.TCPConn).SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(stalled, "GET /video.mp4 HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", frontPort)
	waitFor(t, "the first request to reach the origin", 10*time.Second, func() bool { return origin.hits.Load() == 1 })

	c := newClient()
	var read [clients]atomic.Int64
	sums := make([][]byte, clients)
	statuses := make([]string, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			res, err := c.Get(url)
			if err != nil {
				t.Errorf("client %d: %v", i, err)
				return
			}
			defer res.Body.Close()
			statuses[i] = res.Header.Get("Cache-Status")
			h := sha256.New()
			buf := make([]byte, 64<<10)
			for {
				n, err := res.Body.Read(buf)
				h.Write(buf[:n])
				read[i].Add(int64(n))
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Errorf("client %d after %d bytes: %v", i, read[i].Load(), err)
					return
				}
			}
			sums[i] = h.Sum(nil)
		})
	}
	// The origin has sent half and waits: every client has that half, but
	// for what its connection's write buffers hold back (up to 6 KiB: a
	// body of declared length is not flushed, through plain reverse_proxy
	// either; under load the last pieces of the half arrive small and stay
	// there until more comes, which failed this test 1 time in 6 to 12).
	const heldBack = 8 << 10
	waitFor(t, "every client to read the half that has arrived", 20*time.Second, func() bool {
		for i := range read {
			if read[i].Load() < half-heldBack {
				return false
			}
		}
		return true
	})
	releaseOnce.Do(func() { close(release) })
	wg.Wait()

	want := sha256.New()
	for sent := 0; sent < size; sent += len(chunk) {
		want.Write(chunk)
	}
	for i := range clients {
		if read[i].Load() != size || !bytes.Equal(sums[i], want.Sum(nil)) {
			t.Errorf("client %d read %d bytes (intact: %v), want %d", i, read[i].Load(), bytes.Equal(sums[i], want.Sum(nil)), size)
		}
		if !strings.Contains(statuses[i], "collapsed") {
			t.Errorf("client %d: Cache-Status %q, want collapsed", i, statuses[i])
		}
	}
	if n := origin.hits.Load(); n != 1 {
		t.Errorf("origin saw %d requests for %d concurrent misses; want 1", n, clients+1)
	}
	if r := untilHit(t, c, url); len(r.body) != size {
		t.Errorf("after the fill: %d bytes; want a hit of %d", len(r.body), size)
	}
	if n := origin.hits.Load(); n != 1 {
		t.Errorf("origin saw %d requests; want 1", n)
	}
}

// TestCacheRevalidationKeepsTheAffinityCookie: a page revalidated on every
// use (no-cache with an ETag, typical of HTML) is answered from the entry
// after the origin's 304; the affinity cookie lb_policy affinity issued
// for that request reaches the client with it, and pins it. It was lost,
// so such clients were never pinned.
func TestCacheRevalidationKeepsTheAffinityCookie(t *testing.T) {
	backends := make([]*backend, 3)
	for i := range backends {
		backends[i] = startBackend(t, fmt.Sprintf("b%d", i), func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Etag", `"v1"`)
			w.Header().Set("Cache-Control", "no-cache")
			if r.Header.Get("If-None-Match") == `"v1"` {
				w.WriteHeader(http.StatusNotModified)
				return
			}
			fmt.Fprint(w, "page")
		})
	}
	frontPort := freePort(t)
	startCaddy(t, globals()+fmt.Sprintf(`
http://127.0.0.1:%d {
	response_cache {
		cache_name itest
	}
	reverse_proxy %s %s %s {
		lb_policy affinity {
			cookie aff {
				secret integration-test-secret-0123456789
			}
		}
	}
}
`, frontPort, backends[0].addr, backends[1].addr, backends[2].addr))
	c := newClient()
	url := fmt.Sprintf("http://127.0.0.1:%d/index.html", frontPort)
	do(t, c, "GET", url, nil) // stores the page
	r := do(t, c, "GET", url, nil)
	if !strings.Contains(cacheStatus(r), "fwd-status=304") || r.body != "page" {
		t.Fatalf("second request: %q %s; want the entry after a 304", r.body, cacheStatus(r))
	}
	cookies := r.header.Values("Set-Cookie")
	if len(cookies) != 1 || !strings.HasPrefix(cookies[0], "aff=") {
		t.Fatalf("revalidated answer's Set-Cookie %q; want the affinity cookie", cookies)
	}
	pinned := r.header.Get("X-Backend")
	cookie := strings.SplitN(cookies[0], ";", 2)[0]
	for range 5 {
		if r := do(t, c, "GET", url, map[string]string{"Cookie": cookie}); r.header.Get("X-Backend") != pinned {
			t.Fatalf("with its cookie the client went to %s, not %s", r.header.Get("X-Backend"), pinned)
		}
	}
}

// TestCachePurgeDuringAFill: a purge through the admin API that comes
// while a response is being fetched keeps that response out of the
// store: "I published, then purged, and still got the old page" happened
// whenever the purge landed during a fetch.
func TestCachePurgeDuringAFill(t *testing.T) {
	var version atomic.Int32
	version.Store(1)
	started, resume := make(chan struct{}), make(chan struct{})
	var once sync.Once
	origin := startBackend(t, "origin", func(w http.ResponseWriter, r *http.Request) {
		v := version.Load()
		body := bytes.Repeat([]byte(fmt.Sprintf("v%d ", v)), 4096)
		w.Header().Set("Cache-Control", "public, max-age=600")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body[:1024])
		w.(http.Flusher).Flush()
		if v == 1 {
			once.Do(func() { close(started) })
			<-resume
		}
		_, _ = w.Write(body[1024:])
	})
	frontPort := freePort(t)
	startCaddy(t, cacheFront(frontPort, origin, "min_uses 1"))
	c := newClient()
	url := fmt.Sprintf("http://127.0.0.1:%d/doc", frontPort)
	first := make(chan asyncResult, 1)
	go func() { first <- doAsync(c, "GET", url) }()
	<-started
	version.Store(2) // the resource changes at the origin, then it is purged
	if status, body := adminPost(t, "/response_cache/purge", fmt.Sprintf(`{"key":%q}`, url)); status != http.StatusOK {
		close(resume)
		t.Fatalf("purge: %d %s", status, body)
	}
	close(resume)
	if r := <-first; r.err != nil || r.status != 200 || !strings.HasPrefix(r.body, "v1 ") {
		t.Fatalf("the fill: %v %d %.10q", r.err, r.status, r.body)
	}
	after := do(t, c, "GET", url, nil)
	if isHit(after) || !strings.HasPrefix(after.body, "v2 ") {
		t.Errorf("after a purge during the fill: %q, body %.10q; want a miss with the origin's v2", cacheStatus(after), after.body)
	}
}

// TestCacheHitsGoThroughGuardsAndEncode: ordered just before
// reverse_proxy, the cache answers hits inside what Caddy orders before
// the proxy: a respond guard still refuses blocked clients once the
// response is stored, encode compresses hits for the clients that accept
// it (one entry for all), and a guard inside a handle block runs before
// that block's cache (found by a review: ordered before encode, hits
// skipped all of these).
func TestCacheHitsGoThroughGuardsAndEncode(t *testing.T) {
	page := strings.Repeat("a page to compress. ", 2000)
	origin := startBackend(t, "origin", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Content-Type", "text/html")
		w.Header().Set("Content-Length", strconv.Itoa(len(page)))
		// In pieces, with a declared length: the cache hands the client's
		// writes (and encode's setting up of its header) to a goroutine
		// of their own.
		for i := 0; i < len(page); i += 10000 {
			_, _ = io.WriteString(w, page[i:min(i+10000, len(page))])
			http.NewResponseController(w).Flush()
		}
	})
	ports := freePorts(t, 2) // distinct: one port twice is an ambiguous site definition
	frontPort, adminPort := ports[0], ports[1]
	startCaddy(t, globals()+fmt.Sprintf(`
http://127.0.0.1:%d {
	@blocked header X-Blocked 1
	respond @blocked "Forbidden" 403
	encode gzip
	response_cache {
		cache_name itest-order
	}
	reverse_proxy %s
}
http://127.0.0.1:%d {
	handle /admin/* {
		@anonymous not header X-User *
		respond @anonymous "Unauthorized" 401
		response_cache {
			cache_name itest-order
		}
		reverse_proxy %s
	}
}
`, frontPort, origin.addr, adminPort, origin.addr))
	c := newClient()
	base := fmt.Sprintf("http://127.0.0.1:%d", frontPort)
	admin := fmt.Sprintf("http://127.0.0.1:%d", adminPort)

	// Stored ...
	do(t, c, "GET", base+"/page", nil)
	waitFor(t, "/page to be stored", 5*time.Second, func() bool { return isHitOf(do(t, c, "GET", base+"/page", nil)) })
	// ... the guard still answers blocked clients ...
	if r := do(t, c, "GET", base+"/page", map[string]string{"X-Blocked": "1"}); r.status != http.StatusForbidden || r.body != "Forbidden" {
		t.Errorf("a blocked client got %d %q (%s) once the page was stored", r.status, r.body, cacheStatus(r))
	}
	// ... and encode compresses the hit for gzip clients, not for others.
	gz := do(t, c, "GET", base+"/page", map[string]string{"Accept-Encoding": "gzip"})
	if !isHitOf(gz) || gz.header.Get("Content-Encoding") != "gzip" {
		t.Errorf("gzip client: %s, Content-Encoding %q; want a compressed hit", cacheStatus(gz), gz.header.Get("Content-Encoding"))
	} else if zr, err := gzip.NewReader(strings.NewReader(gz.body)); err != nil {
		t.Errorf("gzip body: %v", err)
	} else if b, err := io.ReadAll(zr); err != nil || string(b) != page {
		t.Errorf("gzip hit decompressed to %d bytes (%v), not the page", len(b), err)
	}
	if id := do(t, c, "GET", base+"/page", map[string]string{"Accept-Encoding": "identity"}); !isHitOf(id) || id.body != page {
		t.Errorf("identity client: %s, %d bytes", cacheStatus(id), len(id.body))
	}

	// A handle block's guard runs before its cache, for hits too.
	user := map[string]string{"X-User": "alice"}
	do(t, c, "GET", admin+"/admin/report", user)
	waitFor(t, "/admin/report to be stored", 5*time.Second, func() bool { return isHitOf(do(t, c, "GET", admin+"/admin/report", user)) })
	if r := do(t, c, "GET", admin+"/admin/report", nil); r.status != http.StatusUnauthorized {
		t.Errorf("anonymous after alice: %d %q (%s)", r.status, r.body, cacheStatus(r))
	}
}

// TestCacheHandleResponseNotStored: a response reverse_proxy's
// handle_response routes make (Caddy's X-Accel-Redirect example: the
// upstream decides who may download, file_server sends the file) has
// none of the upstream's fields; file_server's Last-Modified alone would
// give it a heuristic lifetime, and a hit would hand the file to clients
// the upstream turns away (found by a review). What the upstream says
// (private, no-cache, Vary: Cookie, max-age=0) cannot be carried over to
// it (a review of a first fix, which judged the upstream's response,
// found Vary and no-cache lost), so it is not stored, whatever the
// upstream says; neither is a route's 200 for an upstream 500. A
// file_server behind forward_auth (a round trip before the cache, none
// behind it) is stored as usual. With copy_response_headers, the
// upstream's Server comes after Caddy's, as without the cache.
func TestCacheHandleResponseNotStored(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "report.txt"), []byte("TOP SECRET"), 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-240 * time.Hour)
	if err := os.Chtimes(filepath.Join(dir, "report.txt"), old, old); err != nil {
		t.Fatal(err)
	}
	upstream := startBackend(t, "upstream", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Server", "upstream")
		switch {
		case strings.HasPrefix(r.URL.Path, "/auth"):
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusOK)
		case strings.HasPrefix(r.URL.Path, "/broken"):
			w.WriteHeader(http.StatusInternalServerError)
		case r.Header.Get("Cookie") != "session=ok":
			w.Header().Set("Cache-Control", "private, no-store")
			w.WriteHeader(http.StatusForbidden)
		case strings.HasPrefix(r.URL.Path, "/public"):
			w.Header().Set("Cache-Control", "public, max-age=60")
			w.Header().Set("Vary", "Cookie")
			w.Header().Set("X-Accel-Redirect", "/report.txt")
		default:
			w.Header().Set("Cache-Control", "private, no-store")
			w.Header().Set("X-Accel-Redirect", "/report.txt")
		}
	})
	ports := freePorts(t, 3)
	accel := func(port int, cache string) string {
		return fmt.Sprintf(`
http://127.0.0.1:%d {
	%s
	reverse_proxy %s {
		@accel header X-Accel-Redirect *
		handle_response @accel {
			copy_response_headers {
				include Server
			}
			root * %s
			rewrite * {rp.header.X-Accel-Redirect}
			method * GET
			file_server
		}
		@error status 5xx
		handle_response @error {
			respond "sorry" 200
		}
	}
}
`, port, cache, upstream.addr, dir)
	}
	startCaddy(t, globals()+accel(ports[0], "response_cache {\n\t\tcache_name accel\n\t\tdefault_ttl 30s\n\t}")+accel(ports[2], "")+fmt.Sprintf(`
http://127.0.0.1:%d {
	forward_auth %s {
		uri /auth
	}
	response_cache {
		cache_name behind-auth
	}
	root * %s
	file_server
}
`, ports[1], upstream.addr, dir))
	c := newClient()
	base := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	paid := do(t, c, "GET", base+"/download/1", map[string]string{"Cookie": "session=ok"})
	if paid.status != http.StatusOK || paid.body != "TOP SECRET" {
		t.Fatalf("paying user: %d %q", paid.status, paid.body)
	}
	want := do(t, c, "GET", fmt.Sprintf("http://127.0.0.1:%d/download/1", ports[2]), map[string]string{"Cookie": "session=ok"})
	if got := paid.header.Values("Server"); !slices.Equal(got, want.header.Values("Server")) {
		t.Errorf("Server %q, without the cache %q", got, want.header.Values("Server"))
	}
	if other := do(t, c, "GET", base+"/download/1", nil); other.status != http.StatusForbidden || isHitOf(other) {
		t.Errorf("after a private X-Accel-Redirect: %d %q (%s), want the upstream's 403", other.status, other.body, cacheStatus(other))
	}
	do(t, c, "GET", base+"/public/1", map[string]string{"Cookie": "session=ok"})
	if pub := do(t, c, "GET", base+"/public/1", nil); pub.status != http.StatusForbidden || isHitOf(pub) {
		t.Errorf("after a public X-Accel-Redirect varying by cookie: %d %q (%s), want the upstream's 403", pub.status, pub.body, cacheStatus(pub))
	}
	do(t, c, "GET", base+"/broken", nil)
	if again := do(t, c, "GET", base+"/broken", nil); isHitOf(again) {
		t.Errorf("a route's 200 for an upstream 500 was stored: %s", cacheStatus(again))
	}
	auth := fmt.Sprintf("http://127.0.0.1:%d/report.txt", ports[1])
	do(t, c, "GET", auth, nil)
	if r := do(t, c, "GET", auth, nil); !isHitOf(r) {
		t.Errorf("file_server behind forward_auth: %s, want a hit", cacheStatus(r))
	}
}

// TestCacheInErrorRoutesPassesThrough: a response_cache in handle_errors
// would key an error page by the URI alone (found by a review: the 404
// page stored for /missing answered a blocked request's 403 of it); it
// passes error routes' requests on untouched.
func TestCacheInErrorRoutesPassesThrough(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "err"), 0o755); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-120 * time.Hour)
	for code, page := range map[string]string{"404": "not found page", "403": "forbidden page"} {
		f := filepath.Join(dir, "err", code+".html")
		if err := os.WriteFile(f, []byte(page), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(f, old, old); err != nil {
			t.Fatal(err)
		}
	}
	port := freePort(t)
	startCaddy(t, globals()+fmt.Sprintf(`
http://127.0.0.1:%d {
	root * %s
	@blocked header X-Blocked 1
	error @blocked 403
	file_server
	handle_errors {
		rewrite * /err/{err.status_code}.html
		response_cache {
			cache_name errors
			min_uses 1
		}
		file_server
	}
}
`, port, dir))
	c := newClient()
	url := fmt.Sprintf("http://127.0.0.1:%d/missing", port)
	for range 2 {
		if r := do(t, c, "GET", url, nil); r.status != http.StatusNotFound || r.body != "not found page" || cacheStatus(r) != "" {
			t.Errorf("missing: %d %q (Cache-Status %q), want the 404 page, not through the cache", r.status, r.body, cacheStatus(r))
		}
	}
	if r := do(t, c, "GET", url, map[string]string{"X-Blocked": "1"}); r.status != http.StatusForbidden || r.body != "forbidden page" {
		t.Errorf("blocked: %d %q (Cache-Status %q), want the 403 page", r.status, r.body, cacheStatus(r))
	}
}

// TestCacheKeepsFieldsSetBeforeIt: through reverse_proxy, fields handlers
// before the cache set (a header directive's Set-Cookie and Link, as
// forward_auth copies its cookies) keep their lines in front of the
// origin's, as without the cache (found by a review: the origin's field
// replaced them, and forward_auth's affinity cookie never reached its
// client); they are not stored, and a deferred replacement before the
// cache edits the client's lines only, not the stored ones.
func TestCacheKeepsFieldsSetBeforeIt(t *testing.T) {
	origin := startBackend(t, "origin", func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/cookie") {
			w.Header().Set("Set-Cookie", "o=1")
		}
		w.Header().Set("Link", "</o.css>; rel=preload")
		w.Header().Set("X-A", "orig")
		w.Header().Set("Cache-Control", "public, max-age=60")
		fmt.Fprint(w, "page")
	})
	ports := freePorts(t, 2)
	site := func(port int, cache string) string {
		return fmt.Sprintf(`
http://127.0.0.1:%d {
	header +Set-Cookie "pre=1"
	header Link "</pre.css>; rel=preload"
	header >X-A "o" "oo"
	%s
	reverse_proxy %s
}
`, port, cache, origin.addr)
	}
	startCaddy(t, globals()+site(ports[0], "response_cache {\n\t\tcache_name itest\n\t}")+site(ports[1], ""))
	c := newClient()
	for _, path := range []string{"/cookie", "/page"} {
		want := do(t, c, "GET", fmt.Sprintf("http://127.0.0.1:%d%s", ports[1], path), nil)
		for i := range 2 {
			r := do(t, c, "GET", fmt.Sprintf("http://127.0.0.1:%d%s", ports[0], path), nil)
			if path == "/page" && i == 1 && !isHit(r) {
				t.Errorf("%s: %s, want a hit", path, cacheStatus(r))
			}
			for _, f := range []string{"Set-Cookie", "Link", "X-A"} {
				if got := r.header.Values(f); !slices.Equal(got, want.header.Values(f)) {
					t.Errorf("%s, request %d (%s): %s %q, without the cache %q", path, i+1, cacheStatus(r), f, got, want.header.Values(f))
				}
			}
		}
	}
}

// TestCacheServerAndViaAsWithoutIt: a reverse_proxy response whose Via a
// header directive between the cache and reverse_proxy deletes, from an
// origin that sends its own Server, is still stored (a review found it
// taken for a handle_response route's); a Server line a handler after the
// cache adds follows Caddy's on hits as on the miss.
func TestCacheServerAndViaAsWithoutIt(t *testing.T) {
	origin := startBackend(t, "origin", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Server", "nginx")
		w.Header().Set("Cache-Control", "public, max-age=60")
		fmt.Fprint(w, "page")
	})
	ports := freePorts(t, 2)
	startCaddy(t, globals()+fmt.Sprintf(`
http://127.0.0.1:%d {
	route {
		response_cache {
			cache_name itest
		}
		header -Via
		reverse_proxy %s
	}
}
http://127.0.0.1:%d {
	route {
		response_cache {
			cache_name itest
		}
		header +Server "app/1"
		header Cache-Control "public, max-age=60"
		respond "hi"
	}
}
`, ports[0], origin.addr, ports[1]))
	c := newClient()
	url := fmt.Sprintf("http://127.0.0.1:%d/page", ports[0])
	do(t, c, "GET", url, nil)
	if r := do(t, c, "GET", url, nil); !isHit(r) || r.header.Get("Server") != "nginx" {
		t.Errorf("without Via: %s, Server %q; want a hit from nginx", cacheStatus(r), r.header.Values("Server"))
	}
	url = fmt.Sprintf("http://127.0.0.1:%d/s", ports[1])
	for _, want := range []string{"fwd=uri-miss", "hit"} {
		r := do(t, c, "GET", url, nil)
		if !strings.Contains(cacheStatus(r), want) || !slices.Equal(r.header.Values("Server"), []string{"Caddy", "app/1"}) {
			t.Errorf("%s: Server %q (%s), want [Caddy app/1] as without the cache", want, r.header.Values("Server"), cacheStatus(r))
		}
	}
}

// TestCacheHostileRequestsDoNotPoison: requests a security review used to
// store their answers for other clients, through a real reverse_proxy: a
// Host naming another port (origins build redirects and links from Host,
// which reverse_proxy forwards as sent), a Vary member that is no field
// name, and a varying field the request names in Connection, which
// reverse_proxy drops, so that the origin answers as if it were absent.
func TestCacheHostileRequestsDoNotPoison(t *testing.T) {
	origin := startBackend(t, "origin", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		switch r.URL.Path {
		case "/redir":
			w.Header().Set("Location", "http://"+r.Host+"/new")
			w.WriteHeader(http.StatusMovedPermanently)
		case "/acct":
			w.Header().Set("Vary", "Cookie User-Agent")
			fmt.Fprintf(w, "account of %q", r.Header.Get("Cookie"))
		case "/lang":
			w.Header().Set("Vary", "Accept-Language")
			fmt.Fprintf(w, "language %q", r.Header.Get("Accept-Language"))
		}
	})
	frontPort := freePort(t)
	startCaddy(t, cacheFront(frontPort, origin, ""))
	c := newClient()
	base := fmt.Sprintf("http://127.0.0.1:%d", frontPort)
	host := fmt.Sprintf("127.0.0.1:%d", frontPort)

	for _, evil := range []string{"127.0.0.1:1", "127.0.0.1:", "127.0.0.1"} {
		do(t, c, "GET", base+"/redir", map[string]string{"Host": evil, "Cache-Control": "no-cache"})
		if r := do(t, c, "GET", base+"/redir", nil); r.header.Get("Location") != "http://"+host+"/new" {
			t.Errorf("after a request with Host %q: Location %q (%s), want http://%s/new", evil, r.header.Get("Location"), cacheStatus(r), host)
		}
	}

	do(t, c, "GET", base+"/acct", map[string]string{"Cookie": "sid=alice"})
	if r := do(t, c, "GET", base+"/acct", map[string]string{"Cookie": "sid=bob"}); r.body != `account of "sid=bob"` {
		t.Errorf("Vary: Cookie User-Agent: bob got %q (%s)", r.body, cacheStatus(r))
	}

	do(t, c, "GET", base+"/lang", map[string]string{"Accept-Language": "fr", "Connection": "Accept-Language"})
	if r := do(t, c, "GET", base+"/lang", map[string]string{"Accept-Language": "fr"}); r.body != `language "fr"` {
		t.Errorf("after a request naming Accept-Language in Connection: a French reader got %q (%s)", r.body, cacheStatus(r))
	}
	if r := untilHit(t, c, base+"/lang?x"); r.status != 200 {
		t.Errorf("a plain request is not stored: %d", r.status)
	}
}

// TestCacheMissThroughEncodeCompressesAsWithoutIt: a miss whose body the
// origin writes in small pieces (declared length) is compressed by encode
// as it is without the cache. The cache's writer flushed its client each
// time it caught up with the origin, and each flush ended one of encode's
// compressed blocks: a review measured 107 KB for a 100 KB page that
// gzip takes to 11.5 KB, and small pages lost their Content-Length.
func TestCacheMissThroughEncodeCompressesAsWithoutIt(t *testing.T) {
	page := strings.Repeat("a line of a page that compresses well. ", 1000)
	small := strings.Repeat("body { margin: 0 } ", 400)
	origin := startBackend(t, "origin", func(w http.ResponseWriter, r *http.Request) {
		body := page
		if strings.HasPrefix(r.URL.Path, "/small") {
			body = small
		}
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Content-Type", "text/html")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		for i := 0; i < len(body); i += 500 {
			_, _ = io.WriteString(w, body[i:min(i+500, len(body))])
			http.NewResponseController(w).Flush()
			time.Sleep(200 * time.Microsecond) // time for the cache's writer to catch up
		}
	})
	ports := freePorts(t, 2)
	startCaddy(t, globals()+fmt.Sprintf(`
http://127.0.0.1:%d {
	encode gzip
	response_cache {
		cache_name itest-encode-flush
		min_uses 1
	}
	reverse_proxy %s
}
http://127.0.0.1:%d {
	encode gzip
	reverse_proxy %s
}
`, ports[0], origin.addr, ports[1], origin.addr))
	c := newClient()
	gz := map[string]string{"Accept-Encoding": "gzip"}
	gunzip := func(s string) string {
		zr, err := gzip.NewReader(strings.NewReader(s))
		if err != nil {
			t.Fatalf("not gzip: %v", err)
		}
		b, err := io.ReadAll(zr)
		if err != nil {
			t.Fatalf("gunzip: %v", err)
		}
		return string(b)
	}
	for _, tc := range []struct{ path, body string }{{"/page", page}, {"/small.css", small}} {
		plain := do(t, c, "GET", fmt.Sprintf("http://127.0.0.1:%d%s", ports[1], tc.path), gz)
		url := fmt.Sprintf("http://127.0.0.1:%d%s", ports[0], tc.path)
		miss := do(t, c, "GET", url, gz)
		if !strings.Contains(cacheStatus(miss), "fwd=uri-miss") {
			t.Fatalf("%s: first request's Cache-Status %q, want a miss", tc.path, cacheStatus(miss))
		}
		var hit result
		waitFor(t, url+" to be a hit", 5*time.Second, func() bool { hit = do(t, c, "GET", url, gz); return isHitOf(hit) })
		for name, r := range map[string]result{"without the cache": plain, "miss": miss, "hit": hit} {
			if got := gunzip(r.body); got != tc.body {
				t.Fatalf("%s %s: %d bytes decompressed, want the page's %d", tc.path, name, len(got), len(tc.body))
			}
		}
		// Without flushes in between, encode compresses the one stream
		// alike; a few bytes of slack for the deflate's own choices.
		if len(miss.body) > len(plain.body)+16 {
			t.Errorf("%s: miss compressed to %d bytes, %d without the cache", tc.path, len(miss.body), len(plain.body))
		}
		if len(hit.body) > len(plain.body)+16 {
			t.Errorf("%s: hit compressed to %d bytes, %d without the cache", tc.path, len(hit.body), len(plain.body))
		}
		if cl := plain.header.Get("Content-Length"); cl != "" && miss.header.Get("Content-Length") != cl {
			t.Errorf("%s: miss Content-Length %q, %q without the cache", tc.path, miss.header.Get("Content-Length"), cl)
		}
	}
}

// TestCacheMustRevalidateErrorGoesToHandleErrors: when a stale response
// that must be revalidated cannot be, because the origin is down, the
// cache's 504 is an error the site's handle_errors answers, as
// reverse_proxy's 502 is without the cache (a review: the cache wrote a
// bare 504, and the site's error page was lost).
func TestCacheMustRevalidateErrorGoesToHandleErrors(t *testing.T) {
	origin := startBackend(t, "origin", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=1, must-revalidate")
		_, _ = io.WriteString(w, "the page")
	})
	port := freePort(t)
	startCaddy(t, globals()+fmt.Sprintf(`
http://127.0.0.1:%d {
	response_cache {
		cache_name itest-must-revalidate
	}
	reverse_proxy %s
	handle_errors {
		respond "error page {err.status_code}" {err.status_code}
	}
}
`, port, origin.addr))
	c := newClient()
	url := fmt.Sprintf("http://127.0.0.1:%d/mr", port)
	do(t, c, "GET", url, nil)
	waitFor(t, url+" to be a hit", 5*time.Second, func() bool { return isHitOf(do(t, c, "GET", url, nil)) })
	_ = origin.srv.Close()
	// Stale after its max-age of 1 s (Age counts whole seconds).
	var r result
	waitFor(t, "the stored response to be stale", 5*time.Second, func() bool {
		r = do(t, c, "GET", url, nil)
		return !isHitOf(r)
	})
	if r.status != http.StatusGatewayTimeout || r.body != "error page 504" || !strings.Contains(cacheStatus(r), "detail=must-revalidate") {
		t.Errorf("stale must-revalidate response, origin down: %d %q, Cache-Status %q; want handle_errors' page for a 504, and the cache's Cache-Status",
			r.status, r.body, cacheStatus(r))
	}
}

// TestCacheStaleIfErrorKeepsTheOriginConnection: while the origin answers
// 503 (an error page streamed in two pieces) and the cache answers with
// its stored response (stale-if-error), the error page is still read to
// its end, so reverse_proxy keeps its connection to the origin, as it does
// without the cache: refusing its first write dialled the origin anew for
// every request of an outage (a review: 4 connections for 5 requests).
func TestCacheStaleIfErrorKeepsTheOriginConnection(t *testing.T) {
	var conns atomic.Int32
	var down atomic.Bool
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	origin := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if down.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = io.WriteString(w, "<html><head>")
				w.(http.Flusher).Flush()
				time.Sleep(5 * time.Millisecond)
				_, _ = io.WriteString(w, "</head>down</html>")
				return
			}
			w.Header().Set("Cache-Control", "max-age=1, stale-if-error=600")
			_, _ = io.WriteString(w, "stored")
		}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		},
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = origin.Serve(l) }()
	t.Cleanup(func() { _ = origin.Close() })
	port := freePort(t)
	startCaddy(t, globals()+fmt.Sprintf(`
http://127.0.0.1:%d {
	response_cache {
		cache_name sie-conn
	}
	reverse_proxy %s
}
`, port, l.Addr()))
	c := newClient()
	url := fmt.Sprintf("http://127.0.0.1:%d/page", port)
	if r := do(t, c, "GET", url, nil); r.body != "stored" {
		t.Fatalf("first request: %d %q", r.status, r.body)
	}
	down.Store(true)
	time.Sleep(2100 * time.Millisecond) // max-age=1 runs out (Age counts whole seconds)
	for range 4 {
		r := do(t, c, "GET", url, nil)
		if r.status != http.StatusOK || r.body != "stored" || !strings.Contains(cacheStatus(r), "detail=stale-if-error") {
			t.Fatalf("during the outage: %d %q, Cache-Status %q; want the stored 200", r.status, r.body, cacheStatus(r))
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections to the origin for 5 requests; want 1 (each 503 read to its end, its connection kept)", n)
	}
}

// TestCacheClientConditionalThroughEncode: an origin that compresses
// itself and tags its gzip response as Caddy's encode does ("v1-gzip"),
// behind encode in the default order. encode strips "-gzip" from the
// client's If-None-Match before the cache sees it, as it does for an
// origin; the cache still answers the tag its client holds with a 304, on
// a conditional miss and on hits, as plain reverse_proxy gets the
// origin's 304 (found by a review: every such revalidation was a whole
// 200).
func TestCacheClientConditionalThroughEncode(t *testing.T) {
	page := strings.Repeat("a page its origin compresses. ", 200)
	var gzipped bytes.Buffer
	zw := gzip.NewWriter(&gzipped)
	zw.Write([]byte(page))
	zw.Close()
	var calls atomic.Int32
	origin := startBackend(t, "origin", func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Vary", "Accept-Encoding")
		w.Header().Set("Content-Type", "text/plain")
		body, etag := page, `"v1"`
		if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			body, etag = gzipped.String(), `"v1-gzip"`
			w.Header().Set("Content-Encoding", "gzip")
		}
		w.Header().Set("Etag", etag)
		fmt.Fprint(w, body)
	})
	frontPort := freePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", frontPort)
	startCaddy(t, globalsWith("")+fmt.Sprintf(`
http://127.0.0.1:%d {
	encode gzip
	response_cache {
		cache_name itest
	}
	reverse_proxy %s
}
`, frontPort, origin.addr))
	c := newClient()
	holds := map[string]string{"Accept-Encoding": "gzip", "If-None-Match": `"v1-gzip"`}
	if r := do(t, c, "GET", base+"/cond", holds); r.status != http.StatusNotModified {
		t.Errorf("conditional miss: %d, Cache-Status %q; want 304", r.status, cacheStatus(r))
	}
	r := untilHit(t, c, base+"/cond")
	if r.status != http.StatusOK || r.body != page {
		t.Fatalf("hit: %d, %d bytes", r.status, len(r.body))
	}
	if r := do(t, c, "GET", base+"/cond", holds); r.status != http.StatusNotModified || !isHit(r) {
		t.Errorf("conditional hit: %d, Cache-Status %q; want a 304 hit", r.status, cacheStatus(r))
	}
	other := map[string]string{"Accept-Encoding": "gzip", "If-None-Match": `"v2-gzip"`}
	if r := do(t, c, "GET", base+"/cond", other); r.status != http.StatusOK || !isHit(r) {
		t.Errorf("another tag: %d, Cache-Status %q; want the stored 200", r.status, cacheStatus(r))
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("origin requests: %d, want 1", n)
	}
}

// TestCacheMediaRangesUnderTemplates: under a site-wide templates, which
// renders only its MIME types and streams the rest, a stored video
// answers Range requests with 206s, as the origin does through plain
// reverse_proxy (found by a review: every range of a stored video was the
// whole 200, and Safari does not play a video whose bytes=0-1 probe gets
// one); a stored page still gets the whole 200, rendered.
func TestCacheMediaRangesUnderTemplates(t *testing.T) {
	video := strings.Repeat("\x00\x01video bytes\xff", 5000)
	const page = `<p>{{.Req.URL.Path}}</p>`
	origin := startBackend(t, "origin", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		body := video
		w.Header().Set("Content-Type", "video/mp4")
		if r.URL.Path == "/page" {
			body = page
			w.Header().Set("Content-Type", "text/html")
		}
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader(body))
	})
	frontPort := freePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", frontPort)
	startCaddy(t, globalsWith("")+fmt.Sprintf(`
http://127.0.0.1:%d {
	templates
	response_cache {
		cache_name itest
	}
	reverse_proxy %s
}
`, frontPort, origin.addr))
	c := newClient()
	whole := map[string]string{"Range": "bytes=0-"}
	if r := do(t, c, "GET", base+"/v.mp4", whole); r.status != http.StatusPartialContent || r.body != video {
		t.Fatalf("bytes=0- miss: %d, %d bytes", r.status, len(r.body))
	}
	waitFor(t, "the video to be stored", 5*time.Second, func() bool { return isHit(do(t, c, "GET", base+"/v.mp4", nil)) })
	for _, rng := range [][2]int{{0, 1}, {100, 199}} {
		r := do(t, c, "GET", base+"/v.mp4", map[string]string{"Range": fmt.Sprintf("bytes=%d-%d", rng[0], rng[1])})
		if r.status != http.StatusPartialContent || r.body != video[rng[0]:rng[1]+1] || !isHit(r) {
			t.Errorf("bytes %d-%d: %d, %d bytes, Cache-Status %q; want a 206 hit of them", rng[0], rng[1], r.status, len(r.body), cacheStatus(r))
		}
	}
	untilHit(t, c, base+"/page")
	r := do(t, c, "GET", base+"/page", map[string]string{"Range": "bytes=0-3"})
	if r.status != http.StatusOK || r.body != "<p>/page</p>" {
		t.Errorf("a range of a page under templates: %d %q; want the whole page, rendered", r.status, r.body)
	}
}

// TestCacheMetricsSurviveAFailedLoad: a config that fails to load before
// any of its response_cache handlers is provisioned leaves the running
// config's series on the admin endpoint's /metrics, which Caddy then
// serves from the failed config's registry (a review: every
// caddy_response_cache_* series gone until the next config that loaded;
// the admin API's module now registers them there).
func TestCacheMetricsSurviveAFailedLoad(t *testing.T) {
	origin := startBackend(t, "metered", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=60")
		_, _ = io.WriteString(w, "metered")
	})
	frontPort := freePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", frontPort)
	c := newClient()
	startCaddy(t, cacheFront(frontPort, origin, "max_size 1MiB"))
	misses := func() string {
		t.Helper()
		status, body := adminGet(t, "/metrics")
		if status != http.StatusOK {
			t.Fatalf("GET /metrics: %d", status)
		}
		for l := range strings.Lines(body) {
			if strings.HasPrefix(l, `caddy_response_cache_requests_total{cache="itest",result="miss"} `) {
				return strings.TrimSpace(l[strings.LastIndexByte(l, ' ')+1:])
			}
		}
		return "none"
	}
	do(t, c, "GET", base+"/metered-1", nil)
	before := misses()
	if before == "none" {
		t.Fatal("no miss counted before the failed load")
	}

	// Caddy provisions the handle block (ordered before response_cache)
	// first, and its weight names no upstream.
	err := tryLoadConfig(adminPort, globals()+fmt.Sprintf(`
http://127.0.0.1:%d {
	handle /elsewhere/* {
		reverse_proxy %s {
			lb_policy affinity {uri} {
				weight 127.0.0.1:1 2
			}
		}
	}
	response_cache {
		cache_name itest
		max_size 1MiB
	}
	reverse_proxy %s
}
`, frontPort, origin.addr, origin.addr))
	if err == nil || !strings.Contains(err.Error(), "matches no upstream") {
		t.Fatalf("loading a config whose handle block fails: %v; want the weight's error", err)
	}
	if got := misses(); got != before {
		t.Errorf("misses on /metrics after the failed load: %s; want the running config's %s", got, before)
	}
	do(t, c, "GET", base+"/metered-2", nil)
	if got, want := misses(), before; got == want || got == "none" {
		t.Errorf("misses on /metrics after another miss: %s (before it %s); want it counted", got, want)
	}
}
