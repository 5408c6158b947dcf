package dashboard_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/strata-project/strata/dashboard"
)

// appMetrics are the app server's metrics as server/metrics.go names them.
type appMetrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	cache    *prometheus.CounterVec
	limits   *prometheus.CounterVec
	depth    prometheus.Gauge
	breaker  *prometheus.GaugeVec
	lag      *prometheus.GaugeVec
	usable   *prometheus.GaugeVec
}

func newAppMetrics() *appMetrics {
	m := &appMetrics{
		reg:      prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "strata_http_requests_total"}, []string{"route", "method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "strata_http_request_duration_seconds",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}}, []string{"route", "method"}),
		cache:   prometheus.NewCounterVec(prometheus.CounterOpts{Name: "strata_cache_reads_total"}, []string{"collection", "result"}),
		limits:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "strata_ratelimit_decisions_total"}, []string{"scope", "decision"}),
		depth:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "strata_writebehind_depth", ConstLabels: prometheus.Labels{"collection": "posts"}}),
		breaker: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "strata_breaker_state"}, []string{"name"}),
		lag:     prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "strata_replica_lag_seconds"}, []string{"shard", "node"}),
		usable:  prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "strata_replica_usable"}, []string{"shard", "node"}),
	}
	m.reg.MustRegister(m.requests, m.latency, m.cache, m.limits, m.depth, m.breaker, m.lag, m.usable)
	return m
}

func (m *appMetrics) serve(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	t.Cleanup(srv.Close)
	return srv
}

func TestPromSource(t *testing.T) {
	app1, app2 := newAppMetrics(), newAppMetrics()
	s1, s2 := app1.serve(t), app2.serve(t)
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()

	lbReg := prometheus.NewRegistry()
	lbReq := prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_lb_requests_total"})
	lbLimited := prometheus.NewCounter(prometheus.CounterOpts{Name: "strata_lb_rate_limited_total"})
	lbUp := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "strata_lb_backend_up"}, []string{"backend"})
	lbReg.MustRegister(lbReq, lbLimited, lbUp)
	lbUp.WithLabelValues("app1:1").Set(1)
	lbUp.WithLabelValues("app2:1").Set(0)
	lbSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer read-key" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		promhttp.HandlerFor(lbReg, promhttp.HandlerOpts{}).ServeHTTP(w, r)
	}))
	defer lbSrv.Close()

	for _, a := range []*appMetrics{app1, app2} {
		a.breaker.WithLabelValues("cache").Set(0)
		a.usable.WithLabelValues("0", "pg0").Set(1)
		a.usable.WithLabelValues("0", "pg0-r1").Set(1)
		a.lag.WithLabelValues("0", "pg0-r1").Set(0.02)
		a.usable.WithLabelValues("10", "pg10").Set(1)
		a.usable.WithLabelValues("2", "pg2").Set(1)
	}
	cacheLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer cacheLn.Close()

	src := dashboard.NewPromSource(dashboard.PromConfig{
		LB: []dashboard.PromTarget{{Name: "lb", URL: lbSrv.URL, Header: http.Header{"Authorization": {"Bearer read-key"}}}},
		Apps: []dashboard.PromTarget{
			{Name: "app-1", URL: s1.URL, Address: "app1:1", Target: "1"},
			{Name: "app-2", URL: s2.URL, Address: "app2:1", Target: "2"},
			{Name: "app-3", URL: dead.URL, Address: "app3:1", Target: "3"},
		},
		Cache: []dashboard.PromTarget{
			{Name: "cache-1", Address: cacheLn.Addr().String()},
			{Name: "cache-2", Address: dead.Listener.Addr().String()},
		},
		Timeout: 2 * time.Second,
		ShardTarget: func(shard, node, role string) string {
			if role == dashboard.RolePrimary {
				return shard
			}
			return shard + "/" + node
		},
	})
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	first, err := src.SnapshotAt(context.Background(), t0)
	if err != nil {
		t.Fatal(err)
	}
	if n := node(t, first, "App servers", "app-1"); n.RPS != nil || n.Health != dashboard.HealthUp {
		t.Fatalf("first snapshot app-1 = %+v: want up and no rate yet", n)
	}

	// Two seconds of traffic on app-1.
	app1.requests.WithLabelValues("/docs", "GET", "200").Add(150)
	app1.requests.WithLabelValues("/docs", "PUT", "201").Add(50)
	for range 99 {
		app1.latency.WithLabelValues("/docs", "GET").Observe(0.003) // (2.5 ms, 5 ms]
	}
	app1.latency.WithLabelValues("/docs", "GET").Observe(0.2)
	app1.cache.WithLabelValues("posts", "hit").Add(90)
	app1.cache.WithLabelValues("posts", "miss").Add(10)
	app1.cache.WithLabelValues("posts", "bypass").Add(50)
	app1.limits.WithLabelValues("collection", "limited").Add(4)
	app1.limits.WithLabelValues("collection", "allowed").Add(100)
	app1.depth.Set(17)
	app1.breaker.WithLabelValues("db").Set(1)
	app2.usable.WithLabelValues("0", "pg0-r1").Set(0)
	app2.lag.WithLabelValues("0", "pg0-r1").Set(3.5)
	lbReq.Add(500)
	lbLimited.Add(6)

	topo, err := src.SnapshotAt(context.Background(), t0.Add(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	want := func(what string, got *float64, v float64) {
		t.Helper()
		if got == nil || *got < v-1e-9 || *got > v+1e-9 {
			t.Errorf("%s = %v, want %v", what, deref(got), v)
		}
	}
	a1 := node(t, topo, "App servers", "app-1")
	want("app-1 rps", a1.RPS, 100)
	want("app-1 p99 ms", a1.P99MS, 5)
	want("app-1 hit ratio", a1.HitRatio, 0.9)
	want("app-1 limited/s", a1.LimitedPerSec, 2)
	want("app-1 write-behind", a1.WriteBehind, 17)
	if a1.Breaker != dashboard.BreakerHalfOpen || a1.Health != dashboard.HealthUp || a1.Target != "1" {
		t.Errorf("app-1 = breaker %q health %q target %q", a1.Breaker, a1.Health, a1.Target)
	}
	want("system p99 ms", topo.P99MS, 5)
	if a2 := node(t, topo, "App servers", "app-2"); a2.Health != dashboard.HealthEjected || a2.Breaker != dashboard.BreakerClosed {
		t.Errorf("app-2 = %+v, want ejected (the load balancer has it down)", a2)
	}
	if a3 := node(t, topo, "App servers", "app-3"); a3.Health != dashboard.HealthDown || !strings.Contains(a3.Note, "scrape failed") {
		t.Errorf("app-3 = %+v, want down with the scrape error", a3)
	}
	lb := node(t, topo, "Load balancer", "lb")
	want("lb rps", lb.RPS, 250)
	want("lb limited/s", lb.LimitedPerSec, 3)
	if c := node(t, topo, "Cache", "cache-1"); c.Health != dashboard.HealthUp {
		t.Errorf("cache-1 = %+v, want up", c)
	}
	if c := node(t, topo, "Cache", "cache-2"); c.Health != dashboard.HealthDown {
		t.Errorf("cache-2 = %+v, want down", c)
	}
	p := node(t, topo, "Shard 0", "pg0")
	r := node(t, topo, "Shard 0", "pg0-r1")
	if p.Role != dashboard.RolePrimary || p.Health != dashboard.HealthUp || p.Target != "0" {
		t.Errorf("pg0 = %+v, want an up primary with target 0", p)
	}
	if r.Role != dashboard.RoleReplica || r.Health != dashboard.HealthDown || r.Target != "0/pg0-r1" {
		t.Errorf("pg0-r1 = %+v, want a down replica (one app server cannot use it)", r)
	}
	want("pg0-r1 lag", r.LagSeconds, 3.5)
	var names []string
	for _, tier := range topo.Tiers {
		names = append(names, tier.Name)
	}
	if got := strings.Join(names, ","); got != "Load balancer,App servers,Cache,Shard 0,Shard 2,Shard 10" {
		t.Errorf("tiers = %s", got)
	}
}

func node(t *testing.T, topo dashboard.Topology, tier, name string) dashboard.Node {
	t.Helper()
	for _, tr := range topo.Tiers {
		if tr.Name != tier {
			continue
		}
		for _, n := range tr.Nodes {
			if n.Name == name {
				return n
			}
		}
	}
	t.Fatalf("no node %s in tier %s", name, tier)
	return dashboard.Node{}
}

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}

// bodyTransport answers every request with the next body.
type bodyTransport struct {
	mu     sync.Mutex // protects bodies
	bodies [][]byte
}

func (b *bodyTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	body := b.bodies[0]
	if len(b.bodies) > 1 {
		b.bodies = b.bodies[1:]
	}
	return &http.Response{StatusCode: 200, Body: io.NopCloser(bytes.NewReader(body)), Header: http.Header{}, Request: r}, nil
}

const seedMetrics = `# TYPE strata_http_requests_total counter
strata_http_requests_total{route="/docs",method="GET",code="200"} 10
# TYPE strata_http_request_duration_seconds histogram
strata_http_request_duration_seconds_bucket{route="/docs",method="GET",le="0.001"} 3
strata_http_request_duration_seconds_bucket{route="/docs",method="GET",le="+Inf"} 10
strata_http_request_duration_seconds_sum{route="/docs",method="GET"} 0.1
strata_http_request_duration_seconds_count{route="/docs",method="GET"} 10
# TYPE strata_replica_lag_seconds gauge
strata_replica_lag_seconds{shard="0",node="r1"} 0.5
strata_replica_usable{shard="0",node="r1"} 1
strata_breaker_state{name="db"} 2
strata_lb_backend_up{backend="a:1"} 0
`

// FuzzPromSource feeds scraped text after a good scrape: whatever a
// /metrics endpoint answers, the topology is JSON without NaN or Inf.
func FuzzPromSource(f *testing.F) {
	f.Add([]byte(seedMetrics))
	f.Add([]byte(strings.ReplaceAll(seedMetrics, "10", "1")))
	f.Add([]byte("strata_http_requests_total NaN\nstrata_replica_lag_seconds{shard=\"0\",node=\"r\"} +Inf\n"))
	f.Add([]byte("# TYPE h histogram\nstrata_http_request_duration_seconds_bucket{le=\"NaN\"} 5\n"))
	f.Add([]byte("strata_breaker_state{name=\"x\"} -7\nstrata_breaker_state{name=\"y\"} 1e300\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		tr := &bodyTransport{bodies: [][]byte{[]byte(seedMetrics), []byte(seedMetrics), body, body}}
		src := dashboard.NewPromSource(dashboard.PromConfig{
			LB:     []dashboard.PromTarget{{Name: "lb", URL: "http://lb.invalid/metrics"}},
			Apps:   []dashboard.PromTarget{{Name: "app", URL: "http://app.invalid/metrics", Address: "a:1"}},
			Client: &http.Client{Transport: tr},
		})
		t0 := time.Unix(1000, 0)
		if _, err := src.SnapshotAt(context.Background(), t0); err != nil {
			t.Fatal(err)
		}
		topo, err := src.SnapshotAt(context.Background(), t0.Add(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := json.Marshal(topo); err != nil {
			t.Fatalf("topology is not JSON: %v", err)
		}
	})
}
