package cache

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
)

// gather returns the metric families of ctx's registry by name.
func gather(t *testing.T, ctx caddy.Context) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := ctx.GetMetricsRegistry().Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	out := make(map[string]*dto.MetricFamily)
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// value returns the value of the metric in mf whose labels include want.
func value(mf *dto.MetricFamily, want map[string]string) (float64, bool) {
	if mf == nil {
		return 0, false
	}
next:
	for _, m := range mf.GetMetric() {
		labels := make(map[string]string)
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue next
			}
		}
		switch {
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue(), true
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

func TestMetrics(t *testing.T) {
	c := newClock()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	h := &Handler{Config: Config{CacheName: "metrics-test"}, now: c.Now}
	if err := h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer h.Cleanup()
	h.logger = zap.NewNop()
	// A second handler in the same config registers again without error.
	h2 := &Handler{Config: Config{CacheName: "metrics-test"}, now: c.Now}
	if err := h2.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer h2.Cleanup()
	h3 := &Handler{Config: Config{CacheName: "metrics-test", MinUses: 2}, now: c.Now}
	if err := h3.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	defer h3.Cleanup()
	h3.logger = zap.NewNop()

	o := static(c, 200, "m", "Cache-Control", "max-age=60")
	get(t, h, o, "http://example.com/m1")
	get(t, h, o, "http://example.com/m1")
	get(t, h, o, "http://example.com/m1")
	serve(t, h, o, newRequest("POST", "http://example.com/m2"))
	get(t, h3, o, "http://example.com/m3")
	get(t, h3, o, "http://example.com/m4")
	get(t, h, o, "http://example.com/m5")
	serve(t, h, o, newRequest("DELETE", "http://example.com/m5")) // invalidates m5
	// A response being recorded, and one refused beside it.
	bodies := h.store.(*store).bodies
	bodies.reserve(1000, 0, nil)
	defer bodies.unreserve(1000)
	bodies.reserve(bodies.recordLimit, 0, nil)
	bodies.noRoom.Add(1) // as when a body finds no room (TestSlowReadersOfEvictedBodiesBoundMemory)

	mfs := gather(t, ctx)
	resident := float64(minBlock) // a stored body's block
	if !bodiesMapped {
		resident = 0 // on the Go heap
	}
	for _, tc := range []struct {
		metric string
		labels map[string]string
		min    float64
	}{
		{"caddy_response_cache_requests_total", map[string]string{"cache": "metrics-test", "result": "hit"}, 2},
		{"caddy_response_cache_requests_total", map[string]string{"cache": "metrics-test", "result": "miss"}, 1},
		{"caddy_response_cache_requests_total", map[string]string{"cache": "metrics-test", "result": "bypass"}, 2},
		{"caddy_response_cache_entries", map[string]string{"cache": "metrics-test"}, 1},
		{"caddy_response_cache_bytes", map[string]string{"cache": "metrics-test"}, 1},
		{"caddy_response_cache_max_bytes", map[string]string{"cache": "metrics-test"}, defaultMaxSize},
		{"caddy_response_cache_stores_total", map[string]string{"cache": "metrics-test"}, 2},
		{"caddy_response_cache_purges_total", map[string]string{"cache": "metrics-test"}, 1},
		{"caddy_response_cache_min_uses_skips_total", map[string]string{"cache": "metrics-test"}, 2},
		{"caddy_response_cache_recording_bytes", map[string]string{"cache": "metrics-test"}, 1000},
		{"caddy_response_cache_recording_refusals_total", map[string]string{"cache": "metrics-test"}, 1},
		{"caddy_response_cache_no_room_total", map[string]string{"cache": "metrics-test"}, 1},
		{"caddy_response_cache_arena_resident_bytes", map[string]string{"cache": "metrics-test"}, resident},
		{"caddy_response_cache_arena_released_bytes_total", map[string]string{"cache": "metrics-test"}, 0},
	} {
		t.Run(tc.metric+labelString(tc.labels), func(t *testing.T) {
			got, ok := value(mfs[tc.metric], tc.labels)
			if !ok || got < tc.min {
				t.Errorf("%s%v = %v (found %v), want at least %v", tc.metric, tc.labels, got, ok, tc.min)
			}
		})
	}
	// No label may carry request-derived values.
	for name, mf := range mfs {
		if !strings.HasPrefix(name, "caddy_response_cache_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() != "cache" && l.GetName() != "result" {
					t.Errorf("%s has label %s", name, l.GetName())
				}
			}
		}
	}
}

func labelString(m map[string]string) string {
	var b strings.Builder
	for _, k := range []string{"cache", "result"} {
		if v, ok := m[k]; ok {
			b.WriteString("_" + v)
		}
	}
	return b.String()
}

// resultCounts returns requests_total by result for h's cache.
func resultCounts(h *Handler) map[string]float64 {
	counts := map[string]float64{}
	for _, r := range []string{resultHit, resultStale, resultMiss, resultRevalidate, resultCollapsed, resultBypass, resultError} {
		var m dto.Metric
		if err := cacheMetrics.requests.WithLabelValues(h.CacheName, r).Write(&m); err == nil && m.GetCounter().GetValue() > 0 {
			counts[r] = m.GetCounter().GetValue()
		}
	}
	return counts
}

// TestMetricsCountEachRequestOnce: requests_total counts every request
// under exactly one result: a collapsed waiter as collapsed (not also a
// miss), stale-if-error as stale (not also a revalidation), a 504 for a
// must-revalidate entry as an error.
func TestMetricsCountEachRequestOnce(t *testing.T) {
	c := newClock()
	h := newTestHandler(t, Config{}, c)
	release := make(chan struct{})
	concurrent(t, h, blocking(c, release, "x", "Cache-Control", "max-age=60"), release, 3, "http://example.com/c", 2)
	if got, want := resultCounts(h), map[string]float64{"miss": 1, "collapsed": 2}; !maps.Equal(got, want) {
		t.Errorf("3 coalesced misses counted %v, want %v", got, want)
	}

	h = newTestHandler(t, Config{}, c)
	get(t, h, static(c, 200, "x", "Cache-Control", "max-age=1, stale-if-error=60"), "http://example.com/s")
	get(t, h, static(c, 200, "x", "Cache-Control", "max-age=1, must-revalidate"), "http://example.com/m")
	c.Advance(5 * time.Second)
	failing := &origin{fn: func(w http.ResponseWriter, r *http.Request) error {
		if r.URL.Path == "/m" {
			return errors.New("unreachable")
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		return nil
	}}
	wantStatus(t, get(t, h, failing, "http://example.com/s"), []string{"detail=stale-if-error"})
	var he caddyhttp.HandlerError
	if err := h.ServeHTTP(httptest.NewRecorder(), newRequest(http.MethodGet, "http://example.com/m"), failing); !errors.As(err, &he) || he.StatusCode != http.StatusGatewayTimeout {
		t.Fatalf("must-revalidate with the origin down: %v, want a 504 error", err)
	}
	if got, want := resultCounts(h), map[string]float64{"miss": 2, "stale": 1, "error": 1}; !maps.Equal(got, want) {
		t.Errorf("counted %v, want %v", got, want)
	}
}

// TestMetricsOfARemovedCacheName: once no handler counts under a cache
// name (a reload renamed the cache), its requests_total series are no
// longer exported; while one does, they stay.
func TestMetricsOfARemovedCacheName(t *testing.T) {
	exported := func(cache string) bool {
		ch := make(chan prometheus.Metric, 64)
		cacheMetrics.requests.Collect(ch)
		close(ch)
		for m := range ch {
			var d dto.Metric
			_ = m.Write(&d)
			for _, l := range d.GetLabel() {
				if l.GetName() == "cache" && l.GetValue() == cache {
					return true
				}
			}
		}
		return false
	}
	c := newClock()
	provision := func() *Handler {
		h := &Handler{Config: Config{CacheName: "renamed-away"}, now: c.Now}
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		t.Cleanup(cancel)
		if err := h.Provision(ctx); err != nil {
			t.Fatal(err)
		}
		h.logger = zap.NewNop()
		return h
	}
	old, next := provision(), provision() // a reload: the new config first
	get(t, old, static(c, 200, "x", "Cache-Control", "max-age=60"), "http://example.com/x")
	_ = old.Cleanup()
	if !exported("renamed-away") {
		t.Fatal("series gone while a handler still counts under the name")
	}
	_ = next.Cleanup()
	if exported("renamed-away") {
		t.Error("series of a cache name no handler uses are still exported")
	}
}

// TestStoreCountersSurviveAResize: a reload that changes max_size starts a
// new store, but the cache name's counters go on from the old store's
// (a review: stores_total 41 → 0 on such a reload, which Prometheus reads
// as a reset while requests_total went on).
var resizeRuns atomic.Int32

func TestStoreCountersSurviveAResize(t *testing.T) {
	c := newClock()
	// A name of its own in each run (go test -count=3), so that no other
	// test's store of the name is live.
	name := fmt.Sprintf("resized-%d", resizeRuns.Add(1))
	provision := func(maxSize int64) (*Handler, caddy.Context) { return provisionNamed(t, c, name, maxSize) }
	stores := func(ctx caddy.Context) float64 {
		v, _ := value(gather(t, ctx)["caddy_response_cache_stores_total"], map[string]string{"cache": name})
		return v
	}
	cached := static(c, 200, "x", "Cache-Control", "max-age=60")
	old, _ := provision(1 << 20)
	for _, u := range []string{"/a", "/b"} {
		get(t, old, cached, "http://example.com"+u)
	}
	old.store.wait()
	next, ctx := provision(2 << 20) // a reload: the new config first
	_ = old.Cleanup()
	if got := stores(ctx); got != 2 {
		t.Errorf("stores_total after the resize: %v, want the old store's 2", got)
	}
	get(t, next, cached, "http://example.com/c")
	next.store.wait()
	if got := stores(ctx); got != 3 {
		t.Errorf("stores_total after a store into the new store: %v, want 3", got)
	}
	_ = next.Cleanup()
}

// TestCountersOfACacheNameThatLeftStartOver: once a cache name's last
// store closes (a reload renamed or removed the cache), a later config
// that names it again counts its store counters from 0, as it does
// requests_total (a review: stores_total, evictions_total and
// purges_total carried on from the old store while every requests_total
// series started over).
func TestCountersOfACacheNameThatLeftStartOver(t *testing.T) {
	c := newClock()
	name := fmt.Sprintf("left-%d", resizeRuns.Add(1))
	provision := func() (*Handler, caddy.Context) { return provisionNamed(t, c, name, 1<<20) }
	counters := func(ctx caddy.Context) (stores, misses float64) {
		mfs := gather(t, ctx)
		stores, _ = value(mfs["caddy_response_cache_stores_total"], map[string]string{"cache": name})
		misses, _ = value(mfs["caddy_response_cache_requests_total"], map[string]string{"cache": name, "result": resultMiss})
		return stores, misses
	}
	cached := static(c, 200, "x", "Cache-Control", "max-age=60")
	old, ctx := provision()
	for _, u := range []string{"/a", "/b"} {
		get(t, old, cached, "http://example.com"+u)
	}
	old.store.wait()
	if stores, misses := counters(ctx); stores != 2 || misses != 2 {
		t.Fatalf("before the name left: stores_total %v, misses %v; want 2 and 2", stores, misses)
	}
	_ = old.Cleanup() // a config without the name

	back, ctx := provision()
	get(t, back, cached, "http://example.com/c")
	back.store.wait()
	if stores, misses := counters(ctx); stores != 1 || misses != 1 {
		t.Errorf("the name back: stores_total %v, misses %v; want 1 and 1, both counted from 0", stores, misses)
	}
	_ = back.Cleanup()
	counted.Lock()
	_, kept := counted.retired[name]
	counted.Unlock()
	if kept {
		t.Error("the counters of a name no store has are kept")
	}
}

// TestAdminAPIRegistersTheMetrics: the admin API's Provision registers the
// cache's collectors in its config's registry, which the admin endpoint's
// /metrics serves, so that a config that fails to load before any of its
// response_cache handlers is provisioned still exports the running
// config's stores (a review: every series gone after such a load).
func TestAdminAPIRegistersTheMetrics(t *testing.T) {
	c := newClock()
	name := fmt.Sprintf("admin-%d", resizeRuns.Add(1))
	h, _ := provisionNamed(t, c, name, 1<<20)
	defer h.Cleanup()
	get(t, h, static(c, 200, "x", "Cache-Control", "max-age=60"), "http://example.com/a")
	h.store.wait()

	failed, cancelFailed := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancelFailed()
	if err := new(AdminAPI).Provision(failed); err != nil {
		t.Fatal(err)
	}
	mfs := gather(t, failed)
	if v, ok := value(mfs["caddy_response_cache_stores_total"], map[string]string{"cache": name}); !ok || v != 1 {
		t.Errorf("stores_total of the running store in the new config's registry: %v (exported: %v); want 1", v, ok)
	}
	if v, ok := value(mfs["caddy_response_cache_requests_total"], map[string]string{"cache": name, "result": resultMiss}); !ok || v != 1 {
		t.Errorf("requests_total of the running handler in the new config's registry: %v (exported: %v); want 1", v, ok)
	}
}

// provisionNamed provisions a handler of a store of its own cache name and
// maxSize (min_uses 1), in a config context of its own, and returns both.
func provisionNamed(t *testing.T, c *clock, name string, maxSize int64) (*Handler, caddy.Context) {
	t.Helper()
	h := &Handler{Config: Config{CacheName: name, MaxSize: maxSize, MinUses: 1}, now: c.Now}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	if err := h.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	h.logger = zap.NewNop()
	return h, ctx
}
