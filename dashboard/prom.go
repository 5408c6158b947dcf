package dashboard

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// PromMetrics is the table that maps Prometheus metric names to a node's
// figures. Change a field to follow a renamed metric; an empty name turns
// the figure off.
type PromMetrics struct {
	// Figures of an app server.

	// Requests is a counter of requests (all series summed): RPS.
	Requests string
	// Latency is a histogram of request durations in seconds (all series
	// merged): P99MS, over the time between two scrapes.
	Latency string
	// CacheReads is a counter of cache reads with a result label: HitRatio
	// is CacheHit over all results but CacheBypass.
	CacheReads, CacheResultLabel, CacheHit, CacheBypass string
	// RateLimit is a counter of rate-limit decisions: LimitedPerSec counts
	// those whose LimitLabel is LimitedValue.
	RateLimit, LimitLabel, LimitedValue string
	// WriteBehind is a gauge of write-behind depth (series summed).
	WriteBehind string
	// BreakerState is a gauge per breaker, 0 closed, 1 half-open, 2 open:
	// the worst one is the node's Breaker.
	BreakerState string
	// ReplicaLag (seconds) and ReplicaUsable (0 or 1) are gauges with
	// ShardLabel and NodeLabel: they make the shard tiers. A node with a
	// usable series but no lag series is a primary.
	ReplicaLag, ReplicaUsable, ShardLabel, NodeLabel string

	// Figures of a load balancer.

	// LBRequests is a counter of requests received: the load balancer's RPS.
	LBRequests string
	// LBLimited is a counter of requests refused by the edge rate limit.
	LBLimited string
	// LBBackendUp is a gauge per backend (BackendLabel, the address), 1
	// when the backend takes requests: an app server whose Address has 0
	// here is shown ejected.
	LBBackendUp, BackendLabel string
}

// DefaultPromMetrics returns the names exported by Strata's app server and
// load balancer.
func DefaultPromMetrics() PromMetrics {
	return PromMetrics{
		Requests:         "strata_http_requests_total",
		Latency:          "strata_http_request_duration_seconds",
		CacheReads:       "strata_cache_reads_total",
		CacheResultLabel: "result",
		CacheHit:         "hit",
		CacheBypass:      "bypass",
		RateLimit:        "strata_ratelimit_decisions_total",
		LimitLabel:       "decision",
		LimitedValue:     "limited",
		WriteBehind:      "strata_writebehind_depth",
		BreakerState:     "strata_breaker_state",
		ReplicaLag:       "strata_replica_lag_seconds",
		ReplicaUsable:    "strata_replica_usable",
		ShardLabel:       "shard",
		NodeLabel:        "node",
		LBRequests:       "strata_lb_requests_total",
		LBLimited:        "strata_lb_rate_limited_total",
		LBBackendUp:      "strata_lb_backend_up",
		BackendLabel:     "backend",
	}
}

// PromTarget is one node whose metrics are scraped.
type PromTarget struct {
	// Name is the node's name in the picture.
	Name string
	// URL is the node's Prometheus text endpoint, such as
	// "http://127.0.0.1:8081/metrics". For a cache node it may be empty:
	// the node is then up when Address accepts a TCP connection.
	URL string
	// Address is the node's address; for an app server, the address the
	// load balancer knows it by.
	Address string
	// Target is the chaos target of the node (Node.Target).
	Target string
	// Header is added to each scrape, such as the Authorization of the
	// load balancer's admin listener.
	Header http.Header
}

// PromConfig configures a PromSource.
type PromConfig struct {
	// LB, Apps and Cache are the nodes of each tier. Shards come from the
	// app servers' replica metrics.
	LB, Apps, Cache []PromTarget
	// Metrics maps metric names to figures. The zero value means
	// DefaultPromMetrics().
	Metrics PromMetrics
	// Client makes the scrapes. Nil means a client that follows no
	// redirects.
	Client *http.Client
	// Timeout bounds one scrape (or cache dial). Default 800ms.
	Timeout time.Duration
	// MaxBytes bounds a scraped body. Default 8 MiB.
	MaxBytes int64
	// ShardTarget returns the chaos target of a shard's node (role is
	// RolePrimary or RoleReplica), such as the shard's 1-based index for
	// `strata up`. Nil gives the shards' nodes no target, hence no buttons.
	ShardTarget func(shard, node, role string) string
}

// PromSource is a Source that scrapes Prometheus text endpoints and turns
// the samples into a Topology. Counters become rates over the time between
// two successive snapshots, so the first snapshot has no rates. It is safe
// for concurrent use, though the Dashboard never calls it concurrently.
type PromSource struct {
	cfg PromConfig

	mu   sync.Mutex           // protects prev
	prev map[string]scrapeSet // last successful scrape by URL
}

var _ Source = (*PromSource)(nil)

// ErrScrape is wrapped by the errors of failed scrapes, which show in the
// notes of the nodes.
var ErrScrape = errors.New("dashboard: scrape failed")

// NewPromSource returns a PromSource for cfg.
func NewPromSource(cfg PromConfig) *PromSource {
	if cfg.Metrics == (PromMetrics{}) {
		cfg.Metrics = DefaultPromMetrics()
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 800 * time.Millisecond
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = 8 << 20
	}
	if cfg.ShardTarget == nil {
		cfg.ShardTarget = func(shard, node, role string) string { return "" }
	}
	return &PromSource{cfg: cfg, prev: map[string]scrapeSet{}}
}

// Snapshot scrapes every target and returns the topology.
func (p *PromSource) Snapshot(ctx context.Context) (Topology, error) {
	return p.SnapshotAt(ctx, time.Now())
}

// sample is one series of a family: its labels and value, or its
// cumulative buckets for a histogram.
type sample struct {
	labels  map[string]string
	value   float64
	buckets []bucket
}

type bucket struct{ le, count float64 }

// scrapeSet is one scrape: samples by family name.
type scrapeSet struct {
	at  time.Time
	fam map[string][]sample
}

// parseScrape reads Prometheus text.
func parseScrape(r io.Reader, at time.Time) (scrapeSet, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(r)
	if err != nil {
		return scrapeSet{}, err
	}
	s := scrapeSet{at: at, fam: make(map[string][]sample, len(fams))}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			smp := sample{labels: make(map[string]string, len(m.GetLabel()))}
			for _, l := range m.GetLabel() {
				smp.labels[l.GetName()] = l.GetValue()
			}
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				smp.value = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				smp.value = m.GetGauge().GetValue()
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				for _, b := range h.GetBucket() {
					if math.IsNaN(b.GetUpperBound()) {
						continue
					}
					smp.buckets = append(smp.buckets, bucket{b.GetUpperBound(), float64(b.GetCumulativeCount())})
				}
				if n := len(smp.buckets); n == 0 || !math.IsInf(smp.buckets[n-1].le, 1) {
					smp.buckets = append(smp.buckets, bucket{math.Inf(1), float64(h.GetSampleCount())})
				}
			default:
				smp.value = m.GetUntyped().GetValue()
			}
			if math.IsNaN(smp.value) || math.IsInf(smp.value, 0) {
				continue
			}
			s.fam[name] = append(s.fam[name], smp)
		}
	}
	return s, nil
}

// sum adds the values of name's series whose label has one of the values
// (any series when label is empty); ok is false when no series matched.
func (s scrapeSet) sum(name, label string, match func(string) bool) (v float64, ok bool) {
	if name == "" {
		return 0, false
	}
	for _, smp := range s.fam[name] {
		if label == "" || match(smp.labels[label]) {
			v += smp.value
			ok = true
		}
	}
	return v, ok
}

// merged returns name's histogram buckets summed over all series, by upper
// bound, in increasing order.
func (s scrapeSet) merged(name string) []bucket {
	by := map[float64]float64{}
	for _, smp := range s.fam[name] {
		for _, b := range smp.buckets {
			by[b.le] += b.count
		}
	}
	out := make([]bucket, 0, len(by))
	for le, c := range by {
		out = append(out, bucket{le, c})
	}
	slices.SortFunc(out, func(a, b bucket) int { return cmp.Compare(a.le, b.le) })
	return out
}

// rate is the per-second increase from prev to cur; nil without a previous
// scrape or time between them. A counter that went down was reset: its
// increase is its new value.
func rate(prev, cur float64, prevOK, curOK bool, dt time.Duration) *float64 {
	if !prevOK || !curOK || dt <= 0 {
		return nil
	}
	d := cur - prev
	if d < 0 {
		d = cur
	}
	return Num(d / dt.Seconds())
}

// quantile returns the q quantile of the observations between two
// cumulative histograms, interpolating linearly within a bucket; nil when
// nothing was observed. A quantile in the +Inf bucket is the largest finite
// bound.
func quantile(q float64, prev, cur []bucket) *float64 {
	before := map[float64]float64{}
	for _, b := range prev {
		before[b.le] = b.count
	}
	delta := make([]bucket, len(cur))
	reset := false
	for i, b := range cur {
		delta[i] = bucket{b.le, b.count - before[b.le]}
		if delta[i].count < 0 {
			reset = true
		}
	}
	if reset {
		copy(delta, cur)
	}
	if len(delta) == 0 || delta[len(delta)-1].count <= 0 {
		return nil
	}
	total := delta[len(delta)-1].count
	rank := q * total
	lower, below := 0.0, 0.0
	for _, b := range delta {
		if b.count >= rank {
			if math.IsInf(b.le, 1) {
				return Num(lower)
			}
			in := b.count - below
			if in <= 0 {
				return Num(b.le)
			}
			return Num(lower + (b.le-lower)*(rank-below)/in)
		}
		if !math.IsInf(b.le, 1) {
			lower = b.le
		}
		below = max(below, b.count)
	}
	return Num(lower)
}

// fetch scrapes one URL.
func (p *PromSource) fetch(ctx context.Context, t PromTarget, now time.Time) (scrapeSet, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.URL, nil)
	if err != nil {
		return scrapeSet{}, fmt.Errorf("%w: %w", ErrScrape, err)
	}
	for k, v := range t.Header {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	res, err := p.cfg.Client.Do(req)
	if err != nil {
		return scrapeSet{}, fmt.Errorf("%w: %w", ErrScrape, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return scrapeSet{}, fmt.Errorf("%w: %s: status %d", ErrScrape, t.URL, res.StatusCode)
	}
	s, err := parseScrape(io.LimitReader(res.Body, p.cfg.MaxBytes), now)
	if err != nil {
		return scrapeSet{}, fmt.Errorf("%w: %s: %w", ErrScrape, t.URL, err)
	}
	return s, nil
}

type result struct {
	cur, prev scrapeSet
	hasPrev   bool
	err       error
}

// SnapshotAt is Snapshot with rates computed as if the scrapes were made at
// now.
func (p *PromSource) SnapshotAt(ctx context.Context, now time.Time) (Topology, error) {
	all := slices.Concat(p.cfg.LB, p.cfg.Apps)
	results := make([]result, len(all))
	cacheUp := make([]error, len(p.cfg.Cache))
	var wg sync.WaitGroup
	for i, t := range all {
		wg.Go(func() { results[i].cur, results[i].err = p.fetch(ctx, t, now) })
	}
	for i, t := range p.cfg.Cache {
		wg.Go(func() { cacheUp[i] = p.probe(ctx, t, now) })
	}
	wg.Wait()

	p.mu.Lock()
	for i, t := range all {
		if results[i].err != nil {
			delete(p.prev, t.URL)
			continue
		}
		results[i].prev, results[i].hasPrev = p.prev[t.URL]
		p.prev[t.URL] = results[i].cur
	}
	p.mu.Unlock()
	return p.build(results[:len(p.cfg.LB)], results[len(p.cfg.LB):], cacheUp), nil
}

// probe checks a cache node: a scrape when it has a URL, else a TCP dial.
func (p *PromSource) probe(ctx context.Context, t PromTarget, now time.Time) error {
	if t.URL != "" {
		_, err := p.fetch(ctx, t, now)
		return err
	}
	if t.Address == "" {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", t.Address)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrScrape, err)
	}
	return c.Close()
}

func is(v string) func(string) bool { return func(s string) bool { return s == v } }
func anyValue(string) bool          { return true }

// build turns the scrapes into a Topology.
func (p *PromSource) build(lbs, apps []result, cacheErr []error) Topology {
	m := p.cfg.Metrics
	var topo Topology
	backendUp := map[string]bool{}

	lbTier := Tier{Name: "Load balancer"}
	for i, r := range lbs {
		t := p.cfg.LB[i]
		n := Node{Name: t.Name, Address: t.Address, Role: RoleLB, Target: t.Target}
		if r.err != nil {
			n.Health, n.Note = HealthDown, r.err.Error()
		} else {
			n.Health = HealthUp
			dt := r.cur.at.Sub(r.prev.at)
			cv, cok := r.cur.sum(m.LBRequests, "", anyValue)
			pv, _ := r.prev.sum(m.LBRequests, "", anyValue)
			n.RPS = rate(pv, cv, r.hasPrev, cok, dt)
			cv, cok = r.cur.sum(m.LBLimited, "", anyValue)
			pv, _ = r.prev.sum(m.LBLimited, "", anyValue)
			n.LimitedPerSec = rate(pv, cv, r.hasPrev, cok, dt)
			for _, s := range r.cur.fam[m.LBBackendUp] {
				backendUp[s.labels[m.BackendLabel]] = s.value > 0
			}
		}
		lbTier.Nodes = append(lbTier.Nodes, n)
	}
	if len(lbTier.Nodes) > 0 {
		topo.Tiers = append(topo.Tiers, lbTier)
	}

	type replicaKey struct{ shard, node string }
	type replicaState struct {
		lag            *float64
		usable, unused int
		isReplica      bool
	}
	replicas := map[replicaKey]*replicaState{}
	var allPrev, allCur []bucket
	var anyLatency bool

	appTier := Tier{Name: "App servers"}
	for i, r := range apps {
		t := p.cfg.Apps[i]
		n := Node{Name: t.Name, Address: t.Address, Role: RoleApp, Target: t.Target}
		if r.err != nil {
			n.Health, n.Note = HealthDown, r.err.Error()
			appTier.Nodes = append(appTier.Nodes, n)
			continue
		}
		n.Health = HealthUp
		if up, known := backendUp[t.Address]; known && !up {
			n.Health = HealthEjected
		}
		dt := r.cur.at.Sub(r.prev.at)
		counter := func(name, label string, match func(string) bool) *float64 {
			// A series absent from the previous scrape starts at zero.
			cv, cok := r.cur.sum(name, label, match)
			pv, _ := r.prev.sum(name, label, match)
			return rate(pv, cv, r.hasPrev, cok, dt)
		}
		n.RPS = counter(m.Requests, "", anyValue)
		n.LimitedPerSec = counter(m.RateLimit, m.LimitLabel, is(m.LimitedValue))
		if r.hasPrev && m.Latency != "" {
			cur, prev := r.cur.merged(m.Latency), r.prev.merged(m.Latency)
			if q := quantile(0.99, prev, cur); q != nil {
				n.P99MS = Num(*q * 1000)
			}
			allCur, allPrev = addBuckets(allCur, cur), addBuckets(allPrev, prev)
			anyLatency = true
		}
		hits := counter(m.CacheReads, m.CacheResultLabel, is(m.CacheHit))
		reads := counter(m.CacheReads, m.CacheResultLabel, func(v string) bool { return v != m.CacheBypass })
		if hits != nil && reads != nil && *reads > 0 {
			n.HitRatio = Num(min(1, *hits / *reads))
		}
		if v, ok := r.cur.sum(m.WriteBehind, "", anyValue); ok {
			n.WriteBehind = Num(v)
		}
		if len(r.cur.fam[m.BreakerState]) > 0 {
			worst := 0.0
			for _, s := range r.cur.fam[m.BreakerState] {
				worst = max(worst, s.value)
			}
			n.Breaker = [...]string{BreakerClosed, BreakerHalfOpen, BreakerOpen}[int(min(2, worst))]
		}
		for _, s := range r.cur.fam[m.ReplicaUsable] {
			k := replicaKey{s.labels[m.ShardLabel], s.labels[m.NodeLabel]}
			st := replicas[k]
			if st == nil {
				st = &replicaState{}
				replicas[k] = st
			}
			if s.value > 0 {
				st.usable++
			} else {
				st.unused++
			}
		}
		for _, s := range r.cur.fam[m.ReplicaLag] {
			k := replicaKey{s.labels[m.ShardLabel], s.labels[m.NodeLabel]}
			st := replicas[k]
			if st == nil {
				st = &replicaState{}
				replicas[k] = st
			}
			st.isReplica = true
			if st.lag == nil || s.value > *st.lag {
				st.lag = Num(s.value)
			}
		}
		appTier.Nodes = append(appTier.Nodes, n)
	}
	if len(appTier.Nodes) > 0 {
		topo.Tiers = append(topo.Tiers, appTier)
	}
	if anyLatency {
		if q := quantile(0.99, allPrev, allCur); q != nil {
			topo.P99MS = Num(*q * 1000)
		}
	}

	cacheTier := Tier{Name: "Cache"}
	for i, t := range p.cfg.Cache {
		n := Node{Name: t.Name, Address: t.Address, Role: RoleCache, Target: t.Target, Health: HealthUp}
		if cacheErr[i] != nil {
			n.Health, n.Note = HealthDown, cacheErr[i].Error()
		}
		cacheTier.Nodes = append(cacheTier.Nodes, n)
	}
	if len(cacheTier.Nodes) > 0 {
		topo.Tiers = append(topo.Tiers, cacheTier)
	}

	keys := make([]replicaKey, 0, len(replicas))
	for k := range replicas {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b replicaKey) int {
		if c := naturalCompare(a.shard, b.shard); c != 0 {
			return c
		}
		pa, pb := !replicas[a].isReplica, !replicas[b].isReplica
		if pa != pb { // the primary first
			if pa {
				return -1
			}
			return 1
		}
		return naturalCompare(a.node, b.node)
	})
	for _, k := range keys {
		st := replicas[k]
		name := "Shard " + k.shard
		if len(topo.Tiers) == 0 || topo.Tiers[len(topo.Tiers)-1].Name != name {
			topo.Tiers = append(topo.Tiers, Tier{Name: name})
		}
		n := Node{Name: k.node, Role: RolePrimary, LagSeconds: st.lag, Health: HealthUp}
		if st.isReplica {
			n.Role = RoleReplica
		}
		if st.unused > 0 {
			n.Health = HealthDown
			n.Note = fmt.Sprintf("not usable for %d of %d app servers", st.unused, st.unused+st.usable)
		}
		n.Target = p.cfg.ShardTarget(k.shard, k.node, n.Role)
		last := &topo.Tiers[len(topo.Tiers)-1]
		last.Nodes = append(last.Nodes, n)
	}
	return topo
}

// addBuckets adds b's counts to acc by upper bound.
func addBuckets(acc, b []bucket) []bucket {
	for _, x := range b {
		i := slices.IndexFunc(acc, func(y bucket) bool { return y.le == x.le })
		if i < 0 {
			acc = append(acc, x)
			continue
		}
		acc[i].count += x.count
	}
	slices.SortFunc(acc, func(a, b bucket) int { return cmp.Compare(a.le, b.le) })
	return acc
}

// naturalCompare orders "2" before "10".
func naturalCompare(a, b string) int {
	x, errA := strconv.Atoi(a)
	y, errB := strconv.Atoi(b)
	if errA == nil && errB == nil {
		return cmp.Compare(x, y)
	}
	return cmp.Compare(a, b)
}
