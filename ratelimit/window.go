package ratelimit

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// WindowConfig configures the window limiters: FixedWindow, SlidingWindow
// and SlidingLog.
type WindowConfig struct {
	// Limit is the most events a key may have in one Window. Required.
	Limit int
	// Window is the length of a window. Required.
	Window time.Duration
}

func (c WindowConfig) check() error {
	if c.Limit <= 0 || c.Window <= 0 || c.Window > maxSpan {
		return fmt.Errorf("%w: limit %d per window %v must be positive", ErrInvalidConfig, c.Limit, c.Window)
	}
	return nil
}

// windowLimiter is the part shared by the mutex-per-key window limiters:
// the store, the clock and the plain forms of the methods.
type windowLimiter[E any] struct {
	clock  clock
	limit  int
	window int64
	store  *store[E]
	decide func(e *E, now int64, n int) (Decision, bool) // false: e is dead
}

func (w *windowLimiter[E]) allow(t int64, key string, n int) (Decision, error) {
	if err := checkCost(n, w.limit); err != nil {
		return Decision{Limit: w.limit}, err
	}
	for {
		if d, ok := w.decide(w.store.get(key, t), t, n); ok {
			return d, nil
		}
	}
}

// FixedWindow counts events per key in consecutive windows of fixed length:
// a key's window opens at its first event (or the first event after its
// previous window ended) and the count starts again at zero when it ends.
//
// It is the cheapest window limiter, and its known weakness is the window
// edge: a key may spend its full Limit at the end of one window and its
// full Limit again at the start of the next, so up to 2*Limit events can
// pass within a span barely longer than an instant. Use SlidingWindow or
// GCRA when that matters.
//
// FixedWindow is safe for concurrent use.
type FixedWindow struct{ w windowLimiter[fixedEntry] }

type fixedEntry struct {
	mu      sync.Mutex // protects the fields below
	dead    bool
	started bool
	start   int64 // opening instant of the current window
	count   int
}

var _ Limiter = (*FixedWindow)(nil)

// NewFixedWindow returns a FixedWindow limiter, or an error wrapping
// ErrInvalidConfig.
func NewFixedWindow(cfg WindowConfig) (*FixedWindow, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	l := &FixedWindow{w: windowLimiter[fixedEntry]{clock: newClock(), limit: cfg.Limit, window: int64(cfg.Window)}}
	win := int64(cfg.Window)
	l.w.store = newStore(func(*fixedEntry) {}, func(e *fixedEntry, now int64) bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		e.dead = !e.started || now-idleGrace-e.start >= win
		return e.dead
	})
	l.w.decide = func(e *fixedEntry, t int64, n int) (Decision, bool) {
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.dead {
			return Decision{}, false
		}
		if !e.started || t-e.start >= win {
			if n == 0 {
				// A query opens no window: the key is simply full.
				return Decision{Allowed: true, Limit: cfg.Limit, Remaining: cfg.Limit}, true
			}
			e.started, e.start, e.count = true, t, 0
		}
		reset := time.Duration(max(e.start+win-t, 0))
		if e.count+n > cfg.Limit {
			return Decision{Limit: cfg.Limit, Remaining: cfg.Limit - e.count, RetryAfter: reset, ResetAfter: reset}, true
		}
		e.count += n
		if e.count == 0 {
			reset = 0
		}
		return Decision{Allowed: true, Limit: cfg.Limit, Remaining: cfg.Limit - e.count, ResetAfter: reset}, true
	}
	return l, nil
}

// Policy returns Limit events per Window.
func (l *FixedWindow) Policy() Policy {
	return Policy{Quota: l.w.limit, Window: time.Duration(l.w.window)}
}

// AllowN is AllowNAt(time.Now(), key, n); ctx is not used.
func (l *FixedWindow) AllowN(_ context.Context, key string, n int) (Decision, error) {
	return l.w.allow(l.w.clock.now(), key, n)
}

// AllowNAt decides n events for key at instant now.
func (l *FixedWindow) AllowNAt(now time.Time, key string, n int) (Decision, error) {
	return l.w.allow(l.w.clock.nanos(now), key, n)
}

// Len returns the number of keys held in memory.
func (l *FixedWindow) Len() int { return l.w.store.len() }

// Purge evicts every key idle at now and returns the number of keys left.
func (l *FixedWindow) Purge(now time.Time) int { return l.w.store.purge(l.w.clock.nanos(now)) }

// SlidingWindow is the sliding-window counter: it keeps a key's counts for
// the current and the previous window and estimates the events of the last
// Window as previous*(1-elapsed/Window) + current, which assumes the
// previous window's events were evenly spread. It needs two counters per
// key, whatever the limit, and has no 2x edge burst; the estimate can let
// through somewhat more or fewer events than an exact log when traffic is
// uneven.
//
// A key's windows are anchored at its first event; after two idle windows
// the key starts afresh, anchored at its next event.
//
// SlidingWindow is safe for concurrent use.
type SlidingWindow struct{ w windowLimiter[slidingEntry] }

type slidingEntry struct {
	mu         sync.Mutex // protects the fields below
	dead       bool
	started    bool
	start      int64 // opening instant of the current window
	prev, curr int
}

var _ Limiter = (*SlidingWindow)(nil)

// NewSlidingWindow returns a SlidingWindow limiter, or an error wrapping
// ErrInvalidConfig.
func NewSlidingWindow(cfg WindowConfig) (*SlidingWindow, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	l := &SlidingWindow{w: windowLimiter[slidingEntry]{clock: newClock(), limit: cfg.Limit, window: int64(cfg.Window)}}
	win, limit := int64(cfg.Window), cfg.Limit
	l.w.store = newStore(func(*slidingEntry) {}, func(e *slidingEntry, now int64) bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		el := now - idleGrace - e.start
		e.dead = !e.started || el >= 2*win || (el >= win && e.curr == 0)
		return e.dead
	})
	l.w.decide = func(e *slidingEntry, t int64, n int) (Decision, bool) {
		e.mu.Lock()
		defer e.mu.Unlock()
		if e.dead {
			return Decision{}, false
		}
		el := t - e.start
		switch {
		case !e.started || el >= 2*win:
			if n == 0 {
				// A query anchors no window: the key is simply full.
				return Decision{Allowed: true, Limit: limit, Remaining: limit}, true
			}
			e.started, e.start, e.prev, e.curr, el = true, t, 0, 0, 0
		case el >= win:
			e.start, e.prev, e.curr, el = e.start+win, e.curr, 0, el-win
		case el < 0:
			el = 0 // an instant slightly older than the window's start
		}
		// weighted previous count: prev*(win-el)/win, exact when the
		// result is an integer (the product fits float64's mantissa).
		wprev := float64(e.prev) * float64(win-el) / float64(win)
		est := wprev + float64(e.curr)
		if est+float64(n) <= float64(limit) {
			e.curr += n
			return Decision{
				Allowed:    true,
				Limit:      limit,
				Remaining:  int(float64(limit) - est - float64(n)),
				ResetAfter: slidingReset(e, el, win),
			}, true
		}
		return Decision{
			Limit:      limit,
			Remaining:  max(int(float64(limit)-est), 0),
			RetryAfter: slidingRetry(e, el, win, limit, n),
			ResetAfter: slidingReset(e, el, win),
		}, true
	}
	return l, nil
}

// slidingReset is the time until the estimate reaches zero.
func slidingReset(e *slidingEntry, el, win int64) time.Duration {
	switch {
	case e.curr > 0:
		return time.Duration(2*win - el)
	case e.prev > 0:
		return time.Duration(win - el)
	}
	return 0
}

// slidingRetry is the time until the estimate has room for n: the smallest
// elapsed time e (in the current window, then in the next) at which
// prev*(win-e)/win + curr + n <= limit.
func slidingRetry(en *slidingEntry, el, win int64, limit, n int) time.Duration {
	if room := limit - n - en.curr; room >= 0 && en.prev > 0 {
		// prev*(win-e) <= room*win  <=>  e >= win - room*win/prev
		e := win - int64(float64(room)*float64(win)/float64(en.prev))
		if e < win {
			return time.Duration(max(e-el, 1))
		}
	}
	// In the next window, curr becomes the previous count and the new
	// count is 0: curr*(win-e) <= (limit-n)*win.
	e := int64(0)
	if en.curr > limit-n {
		e = win - int64(float64(limit-n)*float64(win)/float64(en.curr))
	}
	return time.Duration(win - el + e)
}

// Policy returns Limit events per Window.
func (l *SlidingWindow) Policy() Policy {
	return Policy{Quota: l.w.limit, Window: time.Duration(l.w.window)}
}

// AllowN is AllowNAt(time.Now(), key, n); ctx is not used.
func (l *SlidingWindow) AllowN(_ context.Context, key string, n int) (Decision, error) {
	return l.w.allow(l.w.clock.now(), key, n)
}

// AllowNAt decides n events for key at instant now.
func (l *SlidingWindow) AllowNAt(now time.Time, key string, n int) (Decision, error) {
	return l.w.allow(l.w.clock.nanos(now), key, n)
}

// Len returns the number of keys held in memory.
func (l *SlidingWindow) Len() int { return l.w.store.len() }

// Purge evicts every key idle at now and returns the number of keys left.
func (l *SlidingWindow) Purge(now time.Time) int { return l.w.store.purge(l.w.clock.nanos(now)) }
