package server

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-project/strata/breaker"
	"github.com/strata-project/strata/ratelimit"
	"github.com/strata-project/strata/replica"
)

// metrics are the server's Prometheus metrics, on the registry given in Config.
type metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	cacheOps *prometheus.CounterVec
	limits   *prometheus.CounterVec
}

func newMetrics(reg *prometheus.Registry) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_http_requests_total",
			Help: "HTTP requests by route, method and status code.",
		}, []string{"route", "method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "strata_http_request_duration_seconds",
			Help:    "HTTP request latency by route and method.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "method"}),
		cacheOps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_cache_reads_total",
			Help: "Document reads by collection and cache result (hit, miss, stale, bypass).",
		}, []string{"collection", "result"}),
		limits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strata_ratelimit_decisions_total",
			Help: "Rate-limit decisions by scope (collection, key) and decision (allowed, limited, error).",
		}, []string{"scope", "decision"}),
	}
	reg.MustRegister(m.requests, m.latency, m.cacheOps, m.limits)
	return m
}

// methods bounds the method label to the methods the API knows.
var methods = map[string]bool{"GET": true, "HEAD": true, "PUT": true, "PATCH": true, "DELETE": true, "POST": true}

func (m *metrics) request(route, method string, status int, d time.Duration) {
	if !methods[method] {
		method = "other"
	}
	m.requests.WithLabelValues(route, method, strconv.Itoa(status)).Inc()
	m.latency.WithLabelValues(route, method).Observe(d.Seconds())
}

func (m *metrics) cache(collection, result string) {
	m.cacheOps.WithLabelValues(collection, result).Inc()
}

// pendingWrites exports a write-behind queue's depth.
func (m *metrics) pendingWrites(reg *prometheus.Registry, collection string, depth func() int) {
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "strata_writebehind_depth",
		Help:        "Acknowledged writes not yet in the store, by collection.",
		ConstLabels: prometheus.Labels{"collection": collection},
	}, func() float64 { return float64(depth()) }))
}

// observe registers collectors for breakers and replicas.
func (m *metrics) observe(reg *prometheus.Registry, breakers map[string]*breaker.Breaker, replicas map[string]func() []replica.NodeStatus) {
	if len(breakers) > 0 {
		reg.MustRegister(breakerCollector(breakers))
	}
	if len(replicas) > 0 {
		reg.MustRegister(replicaCollector(replicas))
	}
}

var (
	breakerStateDesc = prometheus.NewDesc("strata_breaker_state",
		"Circuit breaker state: 0 closed, 1 half-open, 2 open.", []string{"name"}, nil)
	breakerTripsDesc = prometheus.NewDesc("strata_breaker_trips_total",
		"Transitions to open.", []string{"name"}, nil)
	breakerRejectedDesc = prometheus.NewDesc("strata_breaker_rejected_total",
		"Calls refused by the breaker.", []string{"name"}, nil)
	replicaLagDesc = prometheus.NewDesc("strata_replica_lag_seconds",
		"Replay lag of each replica, as the router measures it.", []string{"shard", "node"}, nil)
	replicaUsableDesc = prometheus.NewDesc("strata_replica_usable",
		"1 when the node may serve reads (replicas) or take writes (primary).", []string{"shard", "node"}, nil)
)

type breakerCollector map[string]*breaker.Breaker

func (c breakerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- breakerStateDesc
	ch <- breakerTripsDesc
	ch <- breakerRejectedDesc
}

func (c breakerCollector) Collect(ch chan<- prometheus.Metric) {
	for name, b := range c {
		st := b.Stats()
		ch <- prometheus.MustNewConstMetric(breakerStateDesc, prometheus.GaugeValue, float64(st.State), name)
		ch <- prometheus.MustNewConstMetric(breakerTripsDesc, prometheus.CounterValue, float64(st.Trips), name)
		ch <- prometheus.MustNewConstMetric(breakerRejectedDesc, prometheus.CounterValue, float64(st.Rejected+st.RejectedProbes), name)
	}
}

type replicaCollector map[string]func() []replica.NodeStatus

func (c replicaCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- replicaLagDesc
	ch <- replicaUsableDesc
}

func (c replicaCollector) Collect(ch chan<- prometheus.Metric) {
	for shard, status := range c {
		for _, n := range status() {
			usable := n.Usable
			if n.Configured == replica.RolePrimary || n.Role == replica.RolePrimary {
				usable = n.Writable
			} else {
				ch <- prometheus.MustNewConstMetric(replicaLagDesc, prometheus.GaugeValue, n.Lag.Seconds(), shard, n.Name)
			}
			v := 0.0
			if usable {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(replicaUsableDesc, prometheus.GaugeValue, v, shard, n.Name)
		}
	}
}

// countingLimiter counts a limiter's decisions.
type countingLimiter struct {
	ratelimit.Limiter
	m     *metrics
	scope string
}

// AllowN implements ratelimit.Limiter.
func (l countingLimiter) AllowN(ctx context.Context, key string, n int) (ratelimit.Decision, error) {
	d, err := l.Limiter.AllowN(ctx, key, n)
	switch {
	case err != nil:
		l.m.limits.WithLabelValues(l.scope, "error").Inc()
	case d.Allowed:
		l.m.limits.WithLabelValues(l.scope, "allowed").Inc()
	default:
		l.m.limits.WithLabelValues(l.scope, "limited").Inc()
	}
	return d, err
}
