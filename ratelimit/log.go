package ratelimit

import (
	"context"
	"sync"
	"time"
)

// SlidingLog is the exact sliding window: it keeps the instant of every
// event a key was granted in the last Window and allows n more only if the
// log then holds at most Limit. Its memory per key is bounded by Limit
// instants (8 bytes each), allocated as the log grows, and a key whose log
// is empty is evicted.
//
// It is exact and the most memory-hungry; prefer it for small limits.
//
// SlidingLog is safe for concurrent use.
type SlidingLog struct{ w windowLimiter[logEntry] }

type logEntry struct {
	mu   sync.Mutex // protects the fields below
	dead bool
	buf  []int64 // ring of granted instants, oldest at head
	head int
	n    int // instants in the ring
}

// at returns the i-th oldest instant.
func (e *logEntry) at(i int) int64 { return e.buf[(e.head+i)%len(e.buf)] }

// expire drops the instants older than now-win.
func (e *logEntry) expire(now, win int64) {
	for e.n > 0 && e.buf[e.head] <= now-win {
		e.head = (e.head + 1) % len(e.buf)
		e.n--
	}
	if e.n == 0 {
		e.head = 0
	}
}

// push appends k copies of t, growing the ring up to limit instants.
func (e *logEntry) push(t int64, k, limit int) {
	if e.n+k > len(e.buf) {
		size := min(max(2*len(e.buf), e.n+k, 4), limit)
		buf := make([]int64, size)
		for i := range e.n {
			buf[i] = e.at(i)
		}
		e.buf, e.head = buf, 0
	}
	for range k {
		e.buf[(e.head+e.n)%len(e.buf)] = t
		e.n++
	}
}

var _ Limiter = (*SlidingLog)(nil)

// NewSlidingLog returns a SlidingLog limiter, or an error wrapping
// ErrInvalidConfig.
func NewSlidingLog(cfg WindowConfig) (*SlidingLog, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	l := &SlidingLog{w: windowLimiter[logEntry]{clock: newClock(), limit: cfg.Limit, window: int64(cfg.Window)}}
	win, limit := int64(cfg.Window), cfg.Limit
	l.w.store = newStore(func(*logEntry) {}, func(e *logEntry, now int64) bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.expire(now-idleGrace, win)
		e.dead = e.n == 0
		return e.dead
	})
	l.w.decide = func(e *logEntry, t int64, n int) (Decision, bool) {
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.dead {
			return Decision{}, false
		}
		e.expire(t, win)
		if e.n > 0 {
			t = max(t, e.at(e.n-1)) // keep the log sorted
		}
		if e.n+n > limit {
			// The oldest e.n+n-limit instants must leave the window.
			return Decision{
				Limit:      limit,
				Remaining:  limit - e.n,
				RetryAfter: time.Duration(e.at(e.n+n-limit-1) + win - t),
				ResetAfter: time.Duration(e.at(e.n-1) + win - t),
			}, true
		}
		e.push(t, n, limit)
		d := Decision{Allowed: true, Limit: limit, Remaining: limit - e.n}
		if e.n > 0 {
			d.ResetAfter = time.Duration(e.at(e.n-1) + win - t)
		}
		return d, true
	}
	return l, nil
}

// Policy returns Limit events per Window.
func (l *SlidingLog) Policy() Policy {
	return Policy{Quota: l.w.limit, Window: time.Duration(l.w.window)}
}

// AllowN is AllowNAt(time.Now(), key, n); ctx is not used.
func (l *SlidingLog) AllowN(_ context.Context, key string, n int) (Decision, error) {
	return l.w.allow(l.w.clock.now(), key, n)
}

// AllowNAt decides n events for key at instant now.
func (l *SlidingLog) AllowNAt(now time.Time, key string, n int) (Decision, error) {
	return l.w.allow(l.w.clock.nanos(now), key, n)
}

// Len returns the number of keys held in memory.
func (l *SlidingLog) Len() int { return l.w.store.len() }

// Purge evicts every key idle at now and returns the number of keys left.
func (l *SlidingLog) Purge(now time.Time) int { return l.w.store.purge(l.w.clock.nanos(now)) }
