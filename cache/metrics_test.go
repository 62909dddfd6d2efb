package cache

import (
	"context"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
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

	mfs := gather(t, ctx)
	for _, tc := range []struct {
		metric string
		labels map[string]string
		min    float64
	}{
		{"caddy_response_cache_requests_total", map[string]string{"cache": "metrics-test", "result": "hit"}, 2},
		{"caddy_response_cache_requests_total", map[string]string{"cache": "metrics-test", "result": "miss"}, 1},
		{"caddy_response_cache_requests_total", map[string]string{"cache": "metrics-test", "result": "bypass"}, 1},
		{"caddy_response_cache_entries", map[string]string{"cache": "metrics-test"}, 1},
		{"caddy_response_cache_bytes", map[string]string{"cache": "metrics-test"}, 1},
		{"caddy_response_cache_max_bytes", map[string]string{"cache": "metrics-test"}, defaultMaxSize},
		{"caddy_response_cache_stores_total", map[string]string{"cache": "metrics-test"}, 1},
		{"caddy_response_cache_min_uses_skips_total", map[string]string{"cache": "metrics-test"}, 2},
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
