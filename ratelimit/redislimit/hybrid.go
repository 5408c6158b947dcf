package redislimit

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/strata-project/strata/ratelimit"
)

// HybridConfig configures a Hybrid limiter.
type HybridConfig struct {
	// Batch is the most tokens one lease takes from Redis (k). Larger
	// batches mean fewer round trips and a larger overshoot bound (see
	// Hybrid). Default (0): Burst/10, at least 1. It must not exceed Burst.
	Batch int
	// LeaseTTL is how long leased tokens may be spent; unspent tokens are
	// dropped when it ends (they are not given back). Default (0): the time
	// the batch represents at the sustained rate (Batch × interval), at
	// least 1s, so that a key used less often than every few milliseconds
	// still spends most of what it leases.
	LeaseTTL time.Duration
	// Now is the local clock that times leases. Only durations measured on
	// it matter, so an offset from other processes' clocks changes nothing.
	// Default nil: time.Now (monotonic).
	Now func() time.Time
}

// Hybrid is a limiter for very high rates: each process leases batches of
// tokens from the shared GCRA state in Redis (one script call takes up to
// Batch tokens at once) and spends them in memory without a round trip. It
// implements ratelimit.Limiter and is safe for concurrent use.
//
// # Overshoot bound
//
// Redis grants tokens by GCRA on its own clock, so the tokens leased in any
// interval of length W total at most rate×W + Burst. A token is spent at
// most LeaseTTL after the lease was requested, and each process holds at
// most one lease per key, of at most Batch tokens. With N processes sharing
// a key, the events allowed in any interval of length W are therefore at
// most
//
//	rate×W + Burst + min(N×Batch, rate×LeaseTTL)
//
// that is, beyond GCRA's own rate×W + Burst by at most N×Batch (the leases
// still held when the interval starts) and never by more than a lease
// period's worth of the rate ([Hybrid.Bound]). The other side of the trade: tokens leased by a process
// that does not spend them are unavailable to the others until its lease
// ends, so a key can be denied while fewer than rate×W + Burst events
// passed in total.
//
// Decisions that need Redis (a new lease, a cost-0 query) follow the GCRA's
// timeout, breaker and FailMode. Remaining on a locally granted decision is
// the tokens left in this process's lease.
type Hybrid struct {
	g        *GCRA
	batch    int
	leaseTTL time.Duration
	now      func() time.Time
	argBatch string

	leases    sync.Map // string -> *lease
	count     atomic.Int64
	sweepAt   atomic.Int64 // count that triggers the next sweep
	sweepLock sync.Mutex
}

var _ ratelimit.Limiter = (*Hybrid)(nil)

type lease struct {
	tokens  atomic.Int64 // tokens left in the current lease
	expires atomic.Int64 // local instant (ns since epoch of Now) the lease ends
	full    atomic.Int64 // local instant the Redis bucket was full again as of the lease
	mu      sync.Mutex   // serialises refills; protects dead
	dead    bool         // evicted from the map: look the key up again
}

// NewHybrid returns a Hybrid that leases from g's state in Redis (same keys,
// rate and burst: plain GCRA callers and Hybrid callers share one limit).
// g must stay open while the Hybrid is used. It fails with an error
// wrapping ErrConfig when Batch is negative or exceeds the burst.
func NewHybrid(g *GCRA, cfg HybridConfig) (*Hybrid, error) {
	h := &Hybrid{g: g, batch: cfg.Batch, leaseTTL: cfg.LeaseTTL, now: cfg.Now}
	if h.batch == 0 {
		h.batch = max(1, g.burst/10)
	}
	if h.batch < 0 || h.batch > g.burst {
		return nil, fmt.Errorf("%w: batch %d must be in [1, burst %d]", ErrConfig, cfg.Batch, g.burst)
	}
	if h.leaseTTL <= 0 {
		h.leaseTTL = max(time.Duration(int64(h.batch)*g.interval), time.Second)
	}
	if h.now == nil {
		epoch := time.Now()
		h.now = func() time.Time { return epoch.Add(time.Since(epoch)) }
	}
	h.argBatch = strconv.Itoa(h.batch)
	h.sweepAt.Store(1024)
	return h, nil
}

// Policy returns the GCRA's policy.
func (h *Hybrid) Policy() ratelimit.Policy { return h.g.Policy() }

// Bound returns the overshoot bound for n processes: the most events beyond
// rate×W + Burst that can pass in any interval W, min(n×Batch,
// rate×LeaseTTL) rounded up.
func (h *Hybrid) Bound(n int) int {
	byTime := (int64(h.leaseTTL) + h.g.interval - 1) / h.g.interval
	return int(min(int64(n)*int64(h.batch), byTime))
}

// AllowN decides n events for key: from this process's lease when it holds
// enough unexpired tokens, otherwise by taking a new lease of up to Batch
// tokens (at least n) from Redis. A cost of 0 asks Redis without counting.
func (h *Hybrid) AllowN(ctx context.Context, key string, n int) (ratelimit.Decision, error) {
	if n == 0 {
		return h.g.AllowN(ctx, key, 0)
	}
	if err := h.g.c.checkCost(n); err != nil {
		return ratelimit.Decision{Limit: h.g.burst}, err
	}
	now := h.now().UnixNano()
	e := h.entry(key, now)
	if d, ok := h.spend(e, now, n); ok {
		return d, nil
	}
	for {
		e.mu.Lock()
		if !e.dead {
			break
		}
		e.mu.Unlock()
		e = h.entry(key, now)
	}
	defer e.mu.Unlock()
	if d, ok := h.spend(e, now, n); ok { // another caller refilled meanwhile
		return d, nil
	}
	return h.refill(ctx, e, key, n)
}

// spend takes n tokens from e's lease if it is live and holds enough.
func (h *Hybrid) spend(e *lease, now int64, n int) (ratelimit.Decision, bool) {
	if now >= e.expires.Load() {
		return ratelimit.Decision{}, false
	}
	for {
		t := e.tokens.Load()
		if t < int64(n) {
			return ratelimit.Decision{}, false
		}
		if e.tokens.CompareAndSwap(t, t-int64(n)) {
			return ratelimit.Decision{
				Allowed:    true,
				Limit:      h.g.burst,
				Remaining:  int(t) - n,
				ResetAfter: time.Duration(max(e.full.Load()-now, 0)),
			}, true
		}
	}
}

// refill takes a new lease from Redis and spends n of it. Called with e.mu
// held.
func (h *Hybrid) refill(ctx context.Context, e *lease, key string, n int) (ratelimit.Decision, error) {
	tok, err := h.g.c.br.Allow()
	if err != nil {
		d, _, err := h.g.c.fail(ctx, key, n, err)
		return d, err
	}
	start := h.now().UnixNano() // the lease runs from before Redis decided
	cctx, cancel := context.WithTimeout(ctx, h.g.c.timeout)
	vals, err := leaseScript.Exec(cctx, h.g.c.client, []string{h.g.c.prefix + key},
		[]string{h.g.argT, h.g.argTau, strconv.Itoa(n), h.argBatch}).AsIntSlice()
	cancel()
	if err == nil && len(vals) != 2 {
		err = fmt.Errorf("redislimit: lease script returned %d values", len(vals))
	}
	if err != nil {
		if ctx.Err() != nil {
			tok.Done(context.Canceled)
			return ratelimit.Decision{Limit: h.g.burst}, ctx.Err()
		}
		tok.Done(err)
		if h.g.c.onError != nil {
			h.g.c.onError(err)
		}
		d, _, err := h.g.c.fail(ctx, key, n, err)
		return d, err
	}
	tok.Done(nil)
	m, nd := vals[0], vals[1]
	if m < 0 {
		return h.g.decision(-nd-1, n), nil
	}
	// Tokens of an older lease are dropped: a process holds one lease.
	e.expires.Store(0)
	e.tokens.Store(m - int64(n))
	e.full.Store(start + nd)
	e.expires.Store(start + int64(h.leaseTTL))
	return ratelimit.Decision{
		Allowed:    true,
		Limit:      h.g.burst,
		Remaining:  int(m) - n,
		ResetAfter: time.Duration(nd),
	}, nil
}

// entry returns key's lease, creating it if absent; inserts sweep expired
// leases when the map has doubled since the last sweep.
func (h *Hybrid) entry(key string, now int64) *lease {
	if v, ok := h.leases.Load(key); ok {
		return v.(*lease)
	}
	v, loaded := h.leases.LoadOrStore(key, &lease{})
	if !loaded {
		if c := h.count.Add(1); c >= h.sweepAt.Load() {
			h.sweep(now)
		}
	}
	return v.(*lease)
}

// sweep removes the leases that have ended, so memory follows the number
// of keys with a live lease.
func (h *Hybrid) sweep(now int64) {
	if !h.sweepLock.TryLock() {
		return
	}
	defer h.sweepLock.Unlock()
	h.leases.Range(func(k, v any) bool {
		e := v.(*lease)
		if e.mu.TryLock() {
			if now >= e.expires.Load() {
				e.dead = true
				h.leases.Delete(k)
				h.count.Add(-1)
			}
			e.mu.Unlock()
		}
		return true
	})
	h.sweepAt.Store(max(2*h.count.Load(), 1024))
}

// Len returns the number of keys with a lease entry in memory.
func (h *Hybrid) Len() int { return int(h.count.Load()) }
