package ratelimit

import (
	"context"
	"fmt"
	"time"
)

// ConcurrencyConfig configures a Concurrency limiter.
type ConcurrencyConfig struct {
	// Max is the most units a key may hold at once. Required.
	Max int
}

// Concurrency limits how many units of work each key has in flight: AllowN
// acquires n units when the key holds at most Max-n, and the caller gives
// them back with Release when the work is done. A key holding nothing is
// evicted. Time plays no part: Decisions carry no RetryAfter or ResetAfter.
//
// Concurrency is safe for concurrent use.
type Concurrency struct {
	max   int
	clock clock
	store *wordStore // key -> units in flight
}

var _ Limiter = (*Concurrency)(nil)

// NewConcurrency returns a Concurrency limiter, or an error wrapping
// ErrInvalidConfig.
func NewConcurrency(cfg ConcurrencyConfig) (*Concurrency, error) {
	if cfg.Max <= 0 {
		return nil, fmt.Errorf("%w: max in flight %d must be positive", ErrInvalidConfig, cfg.Max)
	}
	c := &Concurrency{max: cfg.Max, clock: newClock()}
	c.store = newWordStore(0, func(held, _ int64) bool { return held == 0 })
	return c, nil
}

// Policy returns Max units, with no window.
func (c *Concurrency) Policy() Policy { return Policy{Quota: c.max} }

// AllowN acquires n units for key if the key holds at most Max-n. The
// caller must Release the same n for the same key when an allowed call's
// work is done; ctx is not used.
func (c *Concurrency) AllowN(_ context.Context, key string, n int) (Decision, error) {
	return c.acquire(c.clock.now(), key, n)
}

// AllowNAt is AllowN; now only drives the eviction of idle keys.
func (c *Concurrency) AllowNAt(now time.Time, key string, n int) (Decision, error) {
	return c.acquire(c.clock.nanos(now), key, n)
}

func (c *Concurrency) acquire(t int64, key string, n int) (Decision, error) {
	if err := checkCost(n, c.max); err != nil {
		return Decision{Limit: c.max}, err
	}
	e := c.store.get(key, t)
	for {
		held := e.Load()
		if held == wordMoved {
			e = c.store.getSettled(key, t)
			continue
		}
		if held+int64(n) > int64(c.max) {
			return Decision{Limit: c.max, Remaining: c.max - int(held)}, nil
		}
		if n == 0 || e.CompareAndSwap(held, held+int64(n)) {
			return Decision{Allowed: true, Limit: c.max, Remaining: c.max - int(held) - n}, nil
		}
	}
}

// Release gives back n units of key acquired by an allowed AllowN.
// Releasing more than the key holds is a caller bug; the count stops at 0.
func (c *Concurrency) Release(key string, n int) {
	e := c.store.lookup(key)
	if e == nil || n <= 0 {
		return
	}
	for {
		held := e.Load()
		if held == wordMoved {
			// Moved to a new table: look again once the rebuild is
			// done. (Keys holding units are never evicted.)
			if e = c.store.lookupSettled(key); e == nil {
				return
			}
			continue
		}
		if held <= 0 {
			return // nothing held: nothing to give back
		}
		if e.CompareAndSwap(held, max(held-int64(n), 0)) {
			return
		}
	}
}

// Len returns the number of keys held in memory.
func (c *Concurrency) Len() int { return c.store.len() }

// Purge evicts every key holding nothing and returns the number of keys left.
func (c *Concurrency) Purge() int { return c.store.purge(0) }
