package lb

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
)

// Policy names a load-balancing policy.
type Policy string

// The policies. The zero Policy means P2CEWMA.
const (
	// P2CEWMA picks two backends at random and sends to the one with the
	// lower peak-EWMA latency times (outstanding requests + 1). The default.
	P2CEWMA Policy = "p2c-ewma"
	// RoundRobin takes the backends in turn.
	RoundRobin Policy = "round-robin"
	// WeightedRoundRobin takes the backends in turn in proportion to their
	// weights, interleaved smoothly (as nginx does).
	WeightedRoundRobin Policy = "weighted-round-robin"
	// LeastOutstanding sends to the backend with the fewest requests in
	// flight.
	LeastOutstanding Policy = "least-outstanding"
	// ConsistentHash sends requests with the same key (HashConfig) to the
	// same backend, moving to the next one on the ring when that backend's
	// load exceeds the bound (consistent hashing with bounded loads).
	ConsistentHash Policy = "consistent-hash"
	// Random picks uniformly at random.
	Random Policy = "random"
)

// Pick is one selection: the candidate backends and what the selector may
// use to choose. A Pick is reused across requests of one connection; it is
// not safe for concurrent use.
type Pick struct {
	// Backends are the candidates, in configuration order.
	Backends []*Backend
	// Key is the hash of the request's affinity key, when HasKey.
	Key    uint64
	HasKey bool

	now    int64 // monotonic ns
	tried  [8]*Backend
	ntried int
	panic  bool // ignore health and ejection: nothing else is left
}

// Eligible reports whether b may take this request: it is available (healthy,
// ready, not drained or ejected) and was not already tried for it.
func (p *Pick) Eligible(b *Backend) bool {
	for _, t := range p.tried[:p.ntried] {
		if t == b {
			return false
		}
	}
	if p.panic {
		return b.state.Load()&(stateAdminDrain|stateNotReady|stateRemoved) == 0
	}
	return b.available(p.now)
}

// Score returns b's peak-EWMA cost: its latency estimate, decayed since the
// last observation, times its outstanding requests plus one.
func (p *Pick) Score(b *Backend, tau float64) float64 {
	b.mu.Lock()
	l, at := b.ewma, b.ewmaStamp
	b.mu.Unlock()
	if el := p.now - at; el > 0 && at != 0 {
		l *= math.Exp(-float64(el) / tau)
	}
	return (l + 1) * float64(b.inflight.Load()+1)
}

// Selector chooses a backend for a request, or returns nil when no
// candidate is eligible. Implementations must be safe for concurrent use.
type Selector interface {
	Select(p *Pick) *Backend
}

// SelectorFunc adapts a function to Selector.
type SelectorFunc func(p *Pick) *Backend

// Select calls f(p).
func (f SelectorFunc) Select(p *Pick) *Backend { return f(p) }

var _ Selector = SelectorFunc(nil)

func newSelector(pol Policy, bs []*Backend, o *options) (Selector, error) {
	switch pol {
	case P2CEWMA, "":
		return &p2c{tau: float64(o.decay)}, nil
	case RoundRobin:
		return &roundRobin{}, nil
	case WeightedRoundRobin:
		return &weightedRR{cur: make([]int, len(bs))}, nil
	case LeastOutstanding:
		return SelectorFunc(leastOutstanding), nil
	case Random:
		return SelectorFunc(random), nil
	case ConsistentHash:
		return newRing(bs, o.loadFactor), nil
	}
	return nil, fmt.Errorf("%w: unknown policy %q", ErrInvalidConfig, pol)
}

type p2c struct{ tau float64 }

func (s *p2c) Select(p *Pick) *Backend {
	bs := p.Backends
	n := len(bs)
	if n < 2 {
		return scan(p, 0)
	}
	for range 3 {
		i := rand.IntN(n)
		j := rand.IntN(n - 1)
		if j >= i {
			j++
		}
		a, b := bs[i], bs[j]
		ea, eb := p.Eligible(a), p.Eligible(b)
		switch {
		case ea && eb:
			if p.Score(b, s.tau) < p.Score(a, s.tau) {
				return b
			}
			return a
		case ea:
			return a
		case eb:
			return b
		}
	}
	return scan(p, rand.IntN(n))
}

// scan returns the first eligible backend from index start on, wrapping.
func scan(p *Pick, start int) *Backend {
	n := len(p.Backends)
	for k := range n {
		if b := p.Backends[(start+k)%n]; p.Eligible(b) {
			return b
		}
	}
	return nil
}

type roundRobin struct{ next atomic.Uint64 }

func (s *roundRobin) Select(p *Pick) *Backend {
	n := len(p.Backends)
	if n == 0 {
		return nil
	}
	// Take a fresh turn for each ineligible backend, so that the eligible
	// ones share the load evenly.
	for range n {
		if b := p.Backends[s.next.Add(1)%uint64(n)]; p.Eligible(b) {
			return b
		}
	}
	return nil
}

// weightedRR is nginx's smooth weighted round robin.
type weightedRR struct {
	mu  sync.Mutex
	cur []int // protected by mu
}

func (s *weightedRR) Select(p *Pick) *Backend {
	s.mu.Lock()
	defer s.mu.Unlock()
	best, total := -1, 0
	for i, b := range p.Backends {
		if i >= len(s.cur) || !p.Eligible(b) {
			continue
		}
		w := b.Weight()
		s.cur[i] += w
		total += w
		if best < 0 || s.cur[i] > s.cur[best] {
			best = i
		}
	}
	if best < 0 {
		return nil
	}
	s.cur[best] -= total
	return p.Backends[best]
}

func leastOutstanding(p *Pick) *Backend {
	n := len(p.Backends)
	if n == 0 {
		return nil
	}
	start := rand.IntN(n)
	var best *Backend
	var bestN int64
	for k := range n {
		b := p.Backends[(start+k)%n]
		if !p.Eligible(b) {
			continue
		}
		if v := b.inflight.Load(); best == nil || v < bestN {
			best, bestN = b, v
		}
	}
	return best
}

func random(p *Pick) *Backend {
	n := len(p.Backends)
	if n == 0 {
		return nil
	}
	for range 3 {
		if b := p.Backends[rand.IntN(n)]; p.Eligible(b) {
			return b
		}
	}
	return scan(p, rand.IntN(n))
}

// ring is a consistent-hash ring with bounded loads: a key goes to the first
// backend clockwise from its hash whose outstanding requests are below
// ceil(loadFactor * (total outstanding + 1) / backends).
type ring struct {
	points     []ringPoint
	loadFactor float64
}

type ringPoint struct {
	hash uint64
	idx  int
}

// vnodesPerWeight is the number of ring points per unit of weight.
const vnodesPerWeight = 100

func newRing(bs []*Backend, loadFactor float64) *ring {
	r := &ring{loadFactor: loadFactor}
	var buf [64]byte
	for i, b := range bs {
		for v := range b.Weight() * vnodesPerWeight {
			k := append(buf[:0], b.addr...)
			k = append(k, '#')
			k = appendInt(k, int64(v))
			r.points = append(r.points, ringPoint{hashBytes(k), i})
		}
	}
	slices.SortFunc(r.points, func(a, b ringPoint) int {
		switch {
		case a.hash < b.hash:
			return -1
		case a.hash > b.hash:
			return 1
		}
		return a.idx - b.idx
	})
	return r
}

func (r *ring) Select(p *Pick) *Backend {
	if !p.HasKey || len(r.points) == 0 {
		return leastOutstanding(p)
	}
	var total int64
	for _, b := range p.Backends {
		total += b.inflight.Load()
	}
	bound := int64(math.Ceil(r.loadFactor * float64(total+1) / float64(len(p.Backends))))
	i, _ := slices.BinarySearchFunc(r.points, p.Key, func(pt ringPoint, k uint64) int {
		switch {
		case pt.hash < k:
			return -1
		case pt.hash > k:
			return 1
		}
		return 0
	})
	var fallback *Backend
	for k := range len(r.points) {
		pt := r.points[(i+k)%len(r.points)]
		b := p.Backends[pt.idx]
		if !p.Eligible(b) {
			continue
		}
		if b.inflight.Load() < bound {
			return b
		}
		if fallback == nil {
			fallback = b
		}
	}
	return fallback
}

// hashBytes is FNV-1a 64 followed by a finalizer (from splitmix64), so that
// nearby keys spread over the ring; the same in every process.
func hashBytes(b []byte) uint64 {
	h := uint64(14695981039346656037)
	for _, c := range b {
		h ^= uint64(c)
		h *= 1099511628211
	}
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}
