package cache

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Prometheus metrics of response_cache. The collectors are built once
// per process and registered into each config's registry; the only
// labels are the cache name (from the config) and a fixed result set.
var cacheMetrics = struct {
	once     sync.Once
	requests *prometheus.CounterVec
	skips    *prometheus.CounterVec
	stores   *storeCollector
}{}

// Results counted by caddy_response_cache_requests_total.
const (
	resultHit        = "hit"        // served fresh from the cache
	resultStale      = "stale"      // served stale (max-stale, stale-while-revalidate, stale-if-error)
	resultMiss       = "miss"       // forwarded: nothing stored
	resultRevalidate = "revalidate" // forwarded: a stored entry needed validation
	resultCollapsed  = "collapsed"  // served from a concurrent miss's response
	resultBypass     = "bypass"     // a method or protocol switch the cache does not answer
	resultError      = "error"      // 504 from the cache (only-if-cached, must-revalidate)
)

func initMetrics() {
	cacheMetrics.once.Do(func() {
		cacheMetrics.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "caddy",
			Subsystem: "response_cache",
			Name:      "requests_total",
			Help:      "Requests handled by response_cache, by cache name and result.",
		}, []string{"cache", "result"})
		cacheMetrics.skips = prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "caddy",
			Subsystem: "response_cache",
			Name:      "min_uses_skips_total",
			Help:      "Storable responses streamed without being stored because their URL had missed fewer than min_uses times.",
		}, []string{"cache"})
		cacheMetrics.stores = newStoreCollector()
	})
}

// register adds c to reg, tolerating an earlier registration of it.
func register(reg *prometheus.Registry, c prometheus.Collector) {
	if reg == nil {
		return
	}
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if err != nil && !errors.As(err, &are) {
		panic(err)
	}
}

// handlerMetrics are the counters of one handler, resolved once so the
// hot path only increments.
type handlerMetrics struct {
	hit, stale, miss, revalidate, collapsed, bypass, errors prometheus.Counter
	// minUsesSkips counts the misses not stored for min_uses.
	minUsesSkips prometheus.Counter
}

// registerMetrics adds the cache's collectors to reg, a config's
// registry: its handlers call it, and so does the admin API's Provision,
// since the admin endpoint's /metrics serves the registry of the config
// last loaded from before its apps are provisioned. A config that then
// fails to load before any response_cache handler is provisioned still
// exports the running config's series (a review: every series gone
// after such a load, until the next one that loaded).
func registerMetrics(reg *prometheus.Registry) {
	initMetrics()
	register(reg, cacheMetrics.requests)
	register(reg, cacheMetrics.skips)
	register(reg, cacheMetrics.stores)
}

func newHandlerMetrics(reg *prometheus.Registry, cache string) handlerMetrics {
	registerMetrics(reg)
	c := func(result string) prometheus.Counter {
		return cacheMetrics.requests.WithLabelValues(cache, result)
	}
	metricUsers.Lock()
	metricUsers.n[cache]++
	metricUsers.Unlock()
	return handlerMetrics{
		hit:        c(resultHit),
		stale:      c(resultStale),
		miss:       c(resultMiss),
		revalidate: c(resultRevalidate),
		collapsed:  c(resultCollapsed),
		bypass:     c(resultBypass),
		errors:     c(resultError),

		minUsesSkips: cacheMetrics.skips.WithLabelValues(cache),
	}
}

// metricUsers counts the handlers counting under each cache name.
var metricUsers = struct {
	sync.Mutex
	n map[string]int
}{n: make(map[string]int)}

// releaseMetrics is newHandlerMetrics undone when a handler is cleaned up:
// once no handler counts under a cache name (it was renamed or removed),
// its series stop being exported.
func releaseMetrics(cache string) {
	metricUsers.Lock()
	defer metricUsers.Unlock()
	if metricUsers.n[cache]--; metricUsers.n[cache] > 0 {
		return
	}
	delete(metricUsers.n, cache)
	for _, r := range []string{resultHit, resultStale, resultMiss, resultRevalidate, resultCollapsed, resultBypass, resultError} {
		cacheMetrics.requests.DeleteLabelValues(cache, r)
	}
	cacheMetrics.skips.DeleteLabelValues(cache)
}

// storeCollector reports the live stores when scraped: size gauges and
// the counters ristretto's callbacks keep. Stores of the same cache name
// (briefly two, during a reload that resizes it) are summed.
type storeCollector struct {
	bytes, maxBytes, entries           *prometheus.Desc
	stores, rejects, evictions, drop   *prometheus.Desc
	purges                             *prometheus.Desc
	arenaMapped, arenaUsed, heapBodies *prometheus.Desc
	arenaResident, arenaReleased       *prometheus.Desc
	recording, refusals, noRoom        *prometheus.Desc
	leading                            *prometheus.Desc
}

func newStoreCollector() *storeCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("caddy_response_cache_"+name, help, []string{"cache"}, nil)
	}
	return &storeCollector{
		bytes:     d("bytes", "Bytes held by the cache (the sum of entry costs)."),
		maxBytes:  d("max_bytes", "The cache's max_size."),
		entries:   d("entries", "Entries held by the cache (responses and variant records)."),
		stores:    d("stores_total", "Entries offered to the store and taken into its buffer (then held, or rejected by admission); dropped offers are counted in drops_total."),
		rejects:   d("rejects_total", "Entries the store's admission policy refused."),
		evictions: d("evictions_total", "Entries evicted to make room."),
		drop:      d("drops_total", "Entries dropped because the store's buffer was full, or held too much."),
		purges:    d("purges_total", "Responses removed by purges (variant records not counted), by unsafe requests' invalidations and by revalidations showing a stored response out of date."),

		arenaMapped:   d("arena_mapped_bytes", "Bytes of memory mapped for bodies, outside the Go heap."),
		arenaUsed:     d("arena_used_bytes", "Bytes of the body arena in use by bodies, stored and being recorded."),
		arenaResident: d("arena_resident_bytes", "Bytes of the body arena in the process's memory: those in use, and free pages kept for the next bodies (at most an eighth of max_size more)."),
		arenaReleased: d("arena_released_bytes_total", "Bytes of freed arena blocks given back to the system, past the eighth of max_size kept; the bodies stored there next fault them in again."),
		heapBodies:    d("heap_body_bytes", "Bytes of bodies that did not fit in the arena and live on the Go heap."),
		recording:     d("recording_bytes", "Bytes reserved by responses being recorded, not yet stored."),
		refusals:      d("recording_refusals_total", "Storable responses streamed without being stored because others being recorded took the recording budget (an eighth of max_size; a quarter for responses others wait for)."),
		leading:       d("leading_bytes", "Bytes of responses without Content-Length recorded ahead of their clients, which those have yet to get (at most a sixteenth of max_size; past it, a response is recorded at its client's pace)."),
		noRoom:        d("no_room_total", "Storable responses not stored because the body arena had no free block and the heap's allowance for bodies (a thirty-second of max_size) was taken: evicted bodies still being sent to slow clients, or fragmentation."),
	}
}

// Describe implements prometheus.Collector.
func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.bytes, c.maxBytes, c.entries, c.stores, c.rejects, c.evictions, c.drop, c.purges, c.arenaMapped, c.arenaUsed, c.arenaResident, c.arenaReleased, c.heapBodies, c.recording, c.refusals, c.noRoom, c.leading} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	sum := make(map[string]storeStats)
	counted.Lock()
	for s := range counted.live {
		t := sum[s.name]
		t.add(s.stats(), true)
		sum[s.name] = t
	}
	for name, t := range sum {
		t.add(counted.retired[name], false)
		sum[name] = t
	}
	counted.Unlock()
	for name, t := range sum {
		ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(t.Bytes), name)
		ch <- prometheus.MustNewConstMetric(c.maxBytes, prometheus.GaugeValue, float64(t.MaxBytes), name)
		ch <- prometheus.MustNewConstMetric(c.entries, prometheus.GaugeValue, float64(t.Entries), name)
		ch <- prometheus.MustNewConstMetric(c.stores, prometheus.CounterValue, float64(t.Stores), name)
		ch <- prometheus.MustNewConstMetric(c.rejects, prometheus.CounterValue, float64(t.Rejects), name)
		ch <- prometheus.MustNewConstMetric(c.evictions, prometheus.CounterValue, float64(t.Evictions), name)
		ch <- prometheus.MustNewConstMetric(c.drop, prometheus.CounterValue, float64(t.Drops), name)
		ch <- prometheus.MustNewConstMetric(c.purges, prometheus.CounterValue, float64(t.Purges), name)
		ch <- prometheus.MustNewConstMetric(c.arenaMapped, prometheus.GaugeValue, float64(t.Bodies.Mapped), name)
		ch <- prometheus.MustNewConstMetric(c.arenaUsed, prometheus.GaugeValue, float64(t.Bodies.Used), name)
		ch <- prometheus.MustNewConstMetric(c.arenaResident, prometheus.GaugeValue, float64(t.Bodies.Resident), name)
		ch <- prometheus.MustNewConstMetric(c.arenaReleased, prometheus.CounterValue, float64(t.Bodies.Released), name)
		ch <- prometheus.MustNewConstMetric(c.heapBodies, prometheus.GaugeValue, float64(t.Bodies.FallbackBytes), name)
		ch <- prometheus.MustNewConstMetric(c.recording, prometheus.GaugeValue, float64(t.Bodies.Recording), name)
		ch <- prometheus.MustNewConstMetric(c.refusals, prometheus.CounterValue, float64(t.Bodies.RecordingRefusals), name)
		ch <- prometheus.MustNewConstMetric(c.noRoom, prometheus.CounterValue, float64(t.Bodies.NoRoom), name)
		ch <- prometheus.MustNewConstMetric(c.leading, prometheus.GaugeValue, float64(t.Bodies.Leading), name)
	}
}

var _ prometheus.Collector = (*storeCollector)(nil)

// add adds st's counters to t, and its gauges with gauges.
func (t *storeStats) add(st storeStats, gauges bool) {
	if gauges {
		t.Bytes += st.Bytes
		t.MaxBytes += st.MaxBytes
		t.Entries += st.Entries
		t.Bodies.Mapped += st.Bodies.Mapped
		t.Bodies.Used += st.Bodies.Used
		t.Bodies.Resident += st.Bodies.Resident
		t.Bodies.FallbackBytes += st.Bodies.FallbackBytes
		t.Bodies.Recording += st.Bodies.Recording
		t.Bodies.Leading += st.Bodies.Leading
	}
	t.Stores += st.Stores
	t.Rejects += st.Rejects
	t.Evictions += st.Evictions
	t.Drops += st.Drops
	t.Purges += st.Purges
	t.Bodies.Released += st.Bodies.Released
	t.Bodies.RecordingRefusals += st.Bodies.RecordingRefusals
	t.Bodies.NoRoom += st.Bodies.NoRoom
}

// counted is what the collector reports: the stores Provision made, and
// the final counters of those closed since, by cache name, which it adds
// to the live stores' of the name, so that a reload that replaces a store
// (a new max_size) does not reset its name's counters (a review saw
// stores_total go 41 → 0, breaking increase() and ratios against
// requests_total). One lock makes a store's leaving and its counters'
// retiring one step for a scrape.
var counted struct {
	sync.Mutex
	live    map[*store]struct{}
	retired map[string]storeStats
}

// trackStore adds s to what the collector reports.
func trackStore(s *store) {
	counted.Lock()
	defer counted.Unlock()
	if counted.live == nil {
		counted.live = make(map[*store]struct{})
		counted.retired = make(map[string]storeStats)
	}
	counted.live[s] = struct{}{}
}

// retireStore moves s's counters, as they are as it closes, to its cache
// name's retired ones while another store of the name lives (the new
// store of a reload that resized it, provisioned before the old config
// is cleaned up). The last store of a name takes them with it: the name
// left the config, its requests_total series went with its last handler
// (releaseMetrics), and a later config that names it again counts every
// series from 0 alike (a review saw stores_total carry on from the old
// store where requests_total started over).
func retireStore(s *store) {
	counted.Lock()
	defer counted.Unlock()
	if _, ok := counted.live[s]; !ok {
		return
	}
	delete(counted.live, s)
	for other := range counted.live {
		if other.name == s.name {
			t := counted.retired[s.name]
			t.add(s.stats(), false)
			counted.retired[s.name] = t
			return
		}
	}
	delete(counted.retired, s.name)
}
