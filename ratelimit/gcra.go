package ratelimit

import (
	"context"
	"fmt"
	"time"
)

// GCRAConfig configures a GCRA limiter.
type GCRAConfig struct {
	// Rate is the sustained rate. Required: a zero Rate is invalid.
	Rate Rate
	// Burst is the most events a key can be granted at once (the bucket
	// size). Default (0): Rate.Limit.
	Burst int
	// Clock, when set, is read by the plain forms (Allow, AllowN) instead
	// of the system's monotonic clock: cheaper, at the price of up to one
	// resolution of lag (see CoarseClock). AllowNAt is not affected. The
	// caller owns the clock and closes it. Default (nil): the monotonic
	// clock is read on every call.
	Clock *CoarseClock
}

// GCRA is a keyed token bucket implemented as the Generic Cell Rate
// Algorithm: each key holds one int64, its theoretical arrival time (TAT),
// updated with a compare-and-swap loop. A key allows at most
// rate*T + burst events in any interval of length T.
//
// Keys whose bucket has been full for a second are evicted when an insert
// rebuilds their shard's table. A full bucket is exactly the state of a key
// that has no entry, so eviction changes no decision.
//
// GCRA is safe for concurrent use.
type GCRA struct {
	clock    clock
	interval int64 // emission interval T, ns
	tau      int64 // burst * T, ns
	burst    int
	store    *wordStore // key -> theoretical arrival time
}

// tatEmpty is the TAT of a fresh entry: far in the past.
const tatEmpty = wordMoved + 1

var _ Limiter = (*GCRA)(nil)

// NewGCRA returns a GCRA limiter, or an error wrapping ErrInvalidConfig.
func NewGCRA(cfg GCRAConfig) (*GCRA, error) {
	t := int64(cfg.Rate.Interval())
	if t <= 0 {
		return nil, fmt.Errorf("%w: rate %v must be positive", ErrInvalidConfig, cfg.Rate)
	}
	burst := cfg.Burst
	if burst == 0 {
		burst = cfg.Rate.Limit
	}
	if burst < 0 || int64(burst) > maxSpan/t {
		return nil, fmt.Errorf("%w: burst %d", ErrInvalidConfig, cfg.Burst)
	}
	clk := newClock()
	if cfg.Clock != nil {
		clk = clock{epoch: cfg.Clock.epoch, coarse: cfg.Clock}
	}
	g := &GCRA{clock: clk, interval: t, tau: int64(burst) * t, burst: burst}
	g.store = newWordStore(tatEmpty, func(tat, now int64) bool { return tat <= now-idleGrace })
	return g, nil
}

// Policy returns Burst events per Burst*interval: the bucket size and the
// time an empty bucket takes to fill.
func (g *GCRA) Policy() Policy {
	return Policy{Quota: g.burst, Window: time.Duration(g.tau)}
}

// Allow reports whether one event for key may happen now, as AllowN.
func (g *GCRA) Allow(key string) bool {
	// The decision of allow without its Decision: no division on this path.
	t := g.clock.now()
	if g.burst < 1 {
		return false
	}
	e := g.store.get(key, t)
	for {
		tat := e.Load()
		if tat == wordMoved {
			e = g.store.getSettled(key, t)
			continue
		}
		newTAT := max(tat, t) + g.interval
		if t < newTAT-g.tau {
			return false
		}
		if e.CompareAndSwap(tat, newTAT) {
			return true
		}
	}
}

// AllowN decides n events for key now: at time.Now() (its monotonic
// reading), or at the reading of the configured CoarseClock. ctx is not
// used: the decision is local and never blocks.
func (g *GCRA) AllowN(_ context.Context, key string, n int) (Decision, error) {
	return g.allow(g.clock.now(), key, n)
}

// AllowNAt decides n events for key at instant now.
func (g *GCRA) AllowNAt(now time.Time, key string, n int) (Decision, error) {
	return g.allow(g.clock.nanos(now), key, n)
}

func (g *GCRA) allow(t int64, key string, n int) (Decision, error) {
	if err := checkCost(n, g.burst); err != nil {
		return Decision{Limit: g.burst}, err
	}
	inc := int64(n) * g.interval
	e := g.store.get(key, t)
	for {
		tat := e.Load()
		if tat == wordMoved {
			// Moved to a new table or evicted under us: look again once
			// the rebuild is done.
			e = g.store.getSettled(key, t)
			continue
		}
		base := max(tat, t)
		newTAT := base + inc
		if allowAt := newTAT - g.tau; t < allowAt {
			return Decision{
				Limit:      g.burst,
				Remaining:  int((g.tau - (base - t)) / g.interval),
				RetryAfter: time.Duration(allowAt - t),
				ResetAfter: time.Duration(base - t),
			}, nil
		}
		if n == 0 || e.CompareAndSwap(tat, newTAT) {
			return Decision{
				Allowed:    true,
				Limit:      g.burst,
				Remaining:  int((g.tau - (newTAT - t)) / g.interval),
				ResetAfter: time.Duration(newTAT - t),
			}, nil
		}
	}
}

// Len returns the number of keys held in memory.
func (g *GCRA) Len() int { return g.store.len() }

// Purge evicts every key idle at now and returns the number of keys left.
// Inserts already evict idle keys as they go; Purge is for releasing
// memory right after a spike of distinct keys.
func (g *GCRA) Purge(now time.Time) int { return g.store.purge(g.clock.nanos(now)) }
