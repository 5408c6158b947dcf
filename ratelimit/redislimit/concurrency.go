package redislimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/strata-project/strata/breaker"
	"github.com/strata-project/strata/ratelimit"
)

// ConcurrencyConfig configures a Concurrency limiter.
type ConcurrencyConfig struct {
	// Max is the most units a key may hold at once, over every process
	// sharing the Redis. Required.
	Max int
	// HoldTimeout is how long an acquired unit counts at most: a unit not
	// given back by then (its process died, or Release could not reach
	// Redis) is reclaimed, so a key is never locked out for good. Work that
	// outlives it is no longer counted. Default (0): one minute.
	HoldTimeout time.Duration
	// Now is the local clock that times this process's own record of the
	// units it holds (see Concurrency). Only durations measured on it
	// matter; decisions use the Redis server's clock alone. Default nil:
	// time.Now (monotonic).
	Now func() time.Time
}

// releaser is what a FailLocal limiter of Concurrency must also be.
type releaser interface{ Release(key string, n int) }

// Concurrency is ratelimit.Concurrency with its state in Redis or Redis
// Cluster: at most Max units of work in flight per key over every process.
// A key is a sorted set of the units held, each scored by the instant
// (on the Redis server's clock) it is reclaimed, acquisition plus
// HoldTimeout; the set expires with its last unit. AllowN acquires n units
// when the key holds at most Max-n, and Release gives them back. It
// implements ratelimit.Limiter (and the HTTP middleware's Releaser) and is
// safe for concurrent use.
//
// Units carry no owner in the interface: Release(key, n) gives back n of
// the units this process holds for key, the oldest first. Each process
// therefore keeps the ids of the units it acquired, and removes exactly
// those from Redis. Giving back the oldest is what keeps the limit: a unit
// reclaimed after HoldTimeout is the oldest of its process, so the late
// Release of work that outlived HoldTimeout takes that reclaimed unit, not
// the unit of other work still in flight. A process forgets a unit 2 ×
// HoldTimeout after acquiring it; work released later than that may give
// back a newer unit. A call abandoned by its context after Redis granted it
// leaves its units held until HoldTimeout.
//
// Units granted by the FailMode (FailLocal's limiter, FailOpen) are
// recorded too, and given back where they came from.
type Concurrency struct {
	c      *core
	max    int
	hold   time.Duration
	now    func() time.Time
	idBase string // this limiter's prefix of acquisition ids
	seq    atomic.Uint64

	held      sync.Map // key -> *holding
	count     atomic.Int64
	sweepAt   atomic.Int64 // count that triggers the next sweep
	sweepLock sync.Mutex
}

var (
	_ ratelimit.Limiter = (*Concurrency)(nil)
	_ releaser          = (*Concurrency)(nil)
)

// holding is this process's record of the units it holds for one key.
type holding struct {
	mu    sync.Mutex // protects units and dead
	units []acquired // oldest first
	dead  bool       // removed from the map: look the key up again
}

// acquired is one allowed AllowN whose units are not all given back.
type acquired struct {
	seq  uint64 // the acquisition id's number: members idBase+seq:1..:left
	left int    // units not given back yet
	src  source
	at   int64 // local instant of the call, ns
}

// NewConcurrency connects to Redis and returns a Concurrency limiter; cfg is
// used as by New, except Rate and Burst, which are ignored. It fails with an
// error wrapping ErrConfig for an unusable configuration.
func NewConcurrency(cfg Config, cc ConcurrencyConfig) (*Concurrency, error) {
	if cc.Max <= 0 {
		return nil, fmt.Errorf("%w: max in flight %d must be positive", ErrConfig, cc.Max)
	}
	if cc.HoldTimeout < 0 || cc.HoldTimeout > maxWindow {
		return nil, fmt.Errorf("%w: hold timeout %v", ErrConfig, cc.HoldTimeout)
	}
	if cc.HoldTimeout == 0 {
		cc.HoldTimeout = time.Minute
	}
	if cfg.Local != nil && cfg.FailMode == FailLocal {
		if _, ok := cfg.Local.(releaser); !ok {
			return nil, fmt.Errorf("%w: Local %T has no Release method", ErrConfig, cfg.Local)
		}
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("redislimit: acquisition ids: %w", err)
	}
	l := &Concurrency{max: cc.Max, hold: cc.HoldTimeout, now: cc.Now, idBase: hex.EncodeToString(b[:]) + "."}
	if l.now == nil {
		epoch := time.Now()
		l.now = func() time.Time { return epoch.Add(time.Since(epoch)) }
	}
	l.sweepAt.Store(1024)
	holdUS := int64((cc.HoldTimeout + time.Microsecond - 1) / time.Microsecond)
	alg := algorithm{script: concScript, sha: concSHA, prefix: "strata:rlc:", withID: true, stride: 2,
		args: []string{strconv.FormatInt(holdUS, 10), strconv.Itoa(cc.Max)},
		decide: func(res *reply, n int) ratelimit.Decision {
			held := int(res[1])
			if res[0] == 1 {
				return ratelimit.Decision{Allowed: true, Limit: cc.Max, Remaining: cc.Max - held - n}
			}
			return ratelimit.Decision{Limit: cc.Max, Remaining: cc.Max - held}
		}}
	c, err := newCore(cfg, cc.Max, alg, func() (ratelimit.Limiter, error) {
		return ratelimit.NewConcurrency(ratelimit.ConcurrencyConfig{Max: cc.Max})
	})
	if err != nil {
		return nil, err
	}
	l.c = c
	return l, nil
}

// AllowN acquires n units for key if the key holds at most Max-n over every
// process. The caller must Release the same n for the same key when an
// allowed call's work is done. A cost of 0 asks without acquiring.
func (l *Concurrency) AllowN(ctx context.Context, key string, n int) (ratelimit.Decision, error) {
	seq := l.seq.Add(1)
	at := l.now().UnixNano()
	d, src, err := l.c.allowN(ctx, key, n, l.idBase+strconv.FormatUint(seq, 36))
	if err == nil && d.Allowed && n > 0 {
		l.record(key, acquired{seq: seq, left: n, src: src, at: at})
	}
	return d, err
}

// record adds a to key's holding, forgetting the units acquired more than
// 2 × HoldTimeout ago.
func (l *Concurrency) record(key string, a acquired) {
	for {
		v, ok := l.held.Load(key)
		if !ok {
			var loaded bool
			v, loaded = l.held.LoadOrStore(key, &holding{})
			if !loaded {
				if c := l.count.Add(1); c >= l.sweepAt.Load() {
					l.sweep(a.at)
				}
			}
		}
		h := v.(*holding)
		h.mu.Lock()
		if h.dead {
			h.mu.Unlock()
			continue
		}
		h.forget(a.at - 2*int64(l.hold))
		h.units = append(h.units, a)
		h.mu.Unlock()
		return
	}
}

// forget drops the acquisitions older than before. Called with h.mu held.
func (h *holding) forget(before int64) {
	i := 0
	for i < len(h.units) && h.units[i].at < before {
		i++
	}
	if i > 0 {
		h.units = append(h.units[:0], h.units[i:]...)
	}
}

// sweep forgets old acquisitions of every key and drops the keys left with
// none, so memory follows the number of keys with units held.
func (l *Concurrency) sweep(now int64) {
	if !l.sweepLock.TryLock() {
		return
	}
	defer l.sweepLock.Unlock()
	l.held.Range(func(k, v any) bool {
		h := v.(*holding)
		if h.mu.TryLock() {
			h.forget(now - 2*int64(l.hold))
			if len(h.units) == 0 && !h.dead {
				h.dead = true
				l.held.Delete(k)
				l.count.Add(-1)
			}
			h.mu.Unlock()
		}
		return true
	})
	l.sweepAt.Store(max(2*l.count.Load(), 1024))
}

// Release gives back n units of key acquired by allowed AllowN calls of
// this limiter, within Timeout; see ReleaseContext. Errors go to
// Config.OnError: units that could not be given back are reclaimed after
// HoldTimeout.
func (l *Concurrency) Release(key string, n int) {
	ctx, cancel := context.WithTimeout(context.Background(), l.c.timeout)
	defer cancel()
	if err := l.ReleaseContext(ctx, key, n); err != nil && l.c.onError != nil {
		l.c.onError(err)
	}
}

// ReleaseContext gives back n units of key that this limiter holds, the
// oldest first: those held in Redis are removed from it in one call
// (bounded by Timeout and ctx), those of the FailMode are given back to it.
// Giving back more than this process holds for key gives back what it
// holds. The error wraps ErrUnavailable when Redis could not be reached;
// the units it held there are then reclaimed after HoldTimeout.
func (l *Concurrency) ReleaseContext(ctx context.Context, key string, n int) error {
	if n <= 0 {
		return nil
	}
	var members []string
	local := 0
	for {
		v, ok := l.held.Load(key)
		if !ok {
			return nil
		}
		h := v.(*holding)
		h.mu.Lock()
		if h.dead {
			h.mu.Unlock()
			continue
		}
		for n > 0 && len(h.units) > 0 {
			a := &h.units[0]
			take := min(n, a.left)
			switch a.src {
			case fromRedis:
				id := l.idBase + strconv.FormatUint(a.seq, 36) + ":"
				for j := range take {
					members = append(members, id+strconv.Itoa(a.left-j))
				}
			case fromLocal:
				local += take
			}
			a.left -= take
			n -= take
			if a.left == 0 {
				h.units = h.units[1:]
			}
		}
		if len(h.units) == 0 {
			h.units = nil
			h.dead = true
			l.held.Delete(key)
			l.count.Add(-1)
		}
		h.mu.Unlock()
		break
	}
	if local > 0 {
		if r, ok := l.c.local.(releaser); ok {
			r.Release(key, local)
		}
	}
	if len(members) == 0 {
		return nil
	}
	tok, err := l.c.br.Allow()
	if err != nil {
		return fmt.Errorf("%w: release: %w", ErrUnavailable, err)
	}
	cctx, cancel := context.WithTimeout(ctx, l.c.timeout)
	defer cancel()
	err = l.c.client.Do(cctx, l.c.client.B().Zrem().Key(l.c.prefix+key).Member(members...).Build()).Error()
	switch {
	case err == nil:
		tok.Done(nil)
		return nil
	case ctx.Err() != nil:
		tok.Done(context.Canceled) // the caller gave up: not Redis's fault
	default:
		tok.Done(err)
	}
	return fmt.Errorf("%w: release: %w", ErrUnavailable, err)
}

// Policy returns Max units, with no window.
func (l *Concurrency) Policy() ratelimit.Policy { return ratelimit.Policy{Quota: l.max} }

// Close stops the workers and closes the client if the limiter built it.
// Close may be called more than once.
func (l *Concurrency) Close() error { l.c.close(); return nil }

// Client returns the rueidis client the limiter uses.
func (l *Concurrency) Client() rueidis.Client { return l.c.client }

// Key returns the Redis key that holds key's state.
func (l *Concurrency) Key(key string) string { return l.c.prefix + key }

// Breaker returns the breaker that guards Redis.
func (l *Concurrency) Breaker() *breaker.Breaker { return l.c.br }
