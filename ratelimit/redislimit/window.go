package redislimit

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"github.com/strata-project/strata/breaker"
	"github.com/strata-project/strata/ratelimit"
)

// maxWindow bounds a window (and the concurrency hold timeout) as package
// ratelimit does, which also keeps the scripts' microsecond instants plus
// two windows below 2^53, exact in Lua's doubles.
const maxWindow = math.MaxInt64 / 4

// windowArgs checks w and returns the scripts' fixed arguments: the window
// in microseconds (rounded up) and the limit.
func windowArgs(w ratelimit.WindowConfig) ([]string, int64, error) {
	if w.Limit <= 0 || w.Window <= 0 || w.Window > maxWindow {
		return nil, 0, fmt.Errorf("%w: limit %d per window %v must be positive", ErrConfig, w.Limit, w.Window)
	}
	us := int64((w.Window + time.Microsecond - 1) / time.Microsecond)
	return []string{strconv.FormatInt(us, 10), strconv.Itoa(w.Limit)}, us, nil
}

// us converts microseconds of a script reply to a Duration, never negative.
func us(v int64) time.Duration { return time.Duration(max(v, 0)) * time.Microsecond }

// FixedWindow is ratelimit.FixedWindow with its state in Redis or Redis
// Cluster: a key's window opens at its first event, on the Redis server's
// clock, and its count starts again at zero when the window ends, so up to
// 2*Limit events can pass around a window edge. A key is a hash of two
// fields that expires when its window ends. FixedWindow implements
// ratelimit.Limiter and is safe for concurrent use.
type FixedWindow struct {
	c *core
	w ratelimit.WindowConfig
}

var _ ratelimit.Limiter = (*FixedWindow)(nil)

// NewFixedWindow connects to Redis and returns a FixedWindow of w.Limit
// events per w.Window; cfg is used as by New, except Rate and Burst, which
// are ignored. Windows are timed in whole microseconds, the resolution of
// the server's clock, rounded up. It fails with an error wrapping ErrConfig
// for an unusable configuration.
func NewFixedWindow(cfg Config, w ratelimit.WindowConfig) (*FixedWindow, error) {
	args, _, err := windowArgs(w)
	if err != nil {
		return nil, err
	}
	limit := w.Limit
	alg := algorithm{script: fixedScript, sha: fixedSHA, prefix: "strata:rlf:", args: args, stride: 3,
		decide: func(res *reply, n int) ratelimit.Decision {
			ok, count, left := res[0] == 1, int(res[1]), us(res[2])
			d := ratelimit.Decision{Allowed: ok, Limit: limit, Remaining: limit - count, ResetAfter: left}
			if !ok {
				d.RetryAfter = left
			} else if count == 0 {
				d.ResetAfter = 0
			}
			return d
		}}
	c, err := newCore(cfg, limit, alg, func() (ratelimit.Limiter, error) { return ratelimit.NewFixedWindow(w) })
	if err != nil {
		return nil, err
	}
	return &FixedWindow{c: c, w: w}, nil
}

// AllowN decides n events for key on Redis, as GCRA.AllowN does: batched,
// within Timeout, and by the FailMode when Redis cannot decide.
func (l *FixedWindow) AllowN(ctx context.Context, key string, n int) (ratelimit.Decision, error) {
	d, _, err := l.c.allowN(ctx, key, n, "")
	return d, err
}

// Policy returns Limit events per Window.
func (l *FixedWindow) Policy() ratelimit.Policy {
	return ratelimit.Policy{Quota: l.w.Limit, Window: l.w.Window}
}

// Close stops the workers and closes the client if the limiter built it.
// Close may be called more than once.
func (l *FixedWindow) Close() error { l.c.close(); return nil }

// Client returns the rueidis client the limiter uses.
func (l *FixedWindow) Client() rueidis.Client { return l.c.client }

// Key returns the Redis key that holds key's state.
func (l *FixedWindow) Key(key string) string { return l.c.prefix + key }

// Breaker returns the breaker that guards Redis.
func (l *FixedWindow) Breaker() *breaker.Breaker { return l.c.br }

// SlidingWindow is ratelimit.SlidingWindow with its state in Redis or Redis
// Cluster: the sliding-window counter, which keeps a key's counts of the
// current and the previous window (anchored at the key's first event, on
// the Redis server's clock) and allows n more when
// previous*(1-elapsed/Window) + current + n <= Limit. A key is a hash of
// three fields, whatever the limit, that expires when the estimate is back
// at zero. SlidingWindow implements ratelimit.Limiter and is safe for
// concurrent use.
type SlidingWindow struct {
	c *core
	w ratelimit.WindowConfig
}

var _ ratelimit.Limiter = (*SlidingWindow)(nil)

// NewSlidingWindow connects to Redis and returns a SlidingWindow of
// w.Limit events per w.Window, as NewFixedWindow does.
func NewSlidingWindow(cfg Config, w ratelimit.WindowConfig) (*SlidingWindow, error) {
	args, win, err := windowArgs(w)
	if err != nil {
		return nil, err
	}
	limit := w.Limit
	alg := algorithm{script: slidingScript, sha: slidingSHA, prefix: "strata:rls:", args: args, stride: 4,
		decide: func(res *reply, n int) ratelimit.Decision {
			return slidingDecision(res[0] == 1, res[1], res[2], res[3], win, limit, n)
		}}
	c, err := newCore(cfg, limit, alg, func() (ratelimit.Limiter, error) { return ratelimit.NewSlidingWindow(w) })
	if err != nil {
		return nil, err
	}
	return &SlidingWindow{c: c, w: w}, nil
}

// slidingDecision computes a Decision from the script's counts as
// ratelimit.SlidingWindow does: p and c are the previous and current counts
// before the decision, el the time elapsed in the current window and win
// the window, in microseconds.
func slidingDecision(ok bool, p, c, el, win int64, limit, n int) ratelimit.Decision {
	est := float64(p)*float64(win-el)/float64(win) + float64(c)
	if ok {
		return ratelimit.Decision{
			Allowed:    true,
			Limit:      limit,
			Remaining:  int(float64(limit) - est - float64(n)),
			ResetAfter: us(slidingReset(p, c+int64(n), el, win)),
		}
	}
	return ratelimit.Decision{
		Limit:      limit,
		Remaining:  max(int(float64(limit)-est), 0),
		RetryAfter: us(slidingRetry(p, c, el, win, int64(limit), int64(n))),
		ResetAfter: us(slidingReset(p, c, el, win)),
	}
}

// slidingReset is the time until the estimate reaches zero.
func slidingReset(p, c, el, win int64) int64 {
	switch {
	case c > 0:
		return 2*win - el
	case p > 0:
		return win - el
	}
	return 0
}

// slidingRetry is the time until the estimate has room for n: the smallest
// elapsed time e (in the current window, then in the next) at which
// p*(win-e)/win + c + n <= limit.
func slidingRetry(p, c, el, win, limit, n int64) int64 {
	if room := limit - n - c; room >= 0 && p > 0 {
		e := win - int64(float64(room)*float64(win)/float64(p))
		if e < win {
			return max(e-el, 1)
		}
	}
	e := int64(0)
	if c > limit-n {
		e = win - int64(float64(limit-n)*float64(win)/float64(c))
	}
	return win - el + e
}

// AllowN decides n events for key on Redis, as GCRA.AllowN does.
func (l *SlidingWindow) AllowN(ctx context.Context, key string, n int) (ratelimit.Decision, error) {
	d, _, err := l.c.allowN(ctx, key, n, "")
	return d, err
}

// Policy returns Limit events per Window.
func (l *SlidingWindow) Policy() ratelimit.Policy {
	return ratelimit.Policy{Quota: l.w.Limit, Window: l.w.Window}
}

// Close stops the workers and closes the client if the limiter built it.
// Close may be called more than once.
func (l *SlidingWindow) Close() error { l.c.close(); return nil }

// Client returns the rueidis client the limiter uses.
func (l *SlidingWindow) Client() rueidis.Client { return l.c.client }

// Key returns the Redis key that holds key's state.
func (l *SlidingWindow) Key(key string) string { return l.c.prefix + key }

// Breaker returns the breaker that guards Redis.
func (l *SlidingWindow) Breaker() *breaker.Breaker { return l.c.br }

// SlidingLog is ratelimit.SlidingLog with its state in Redis or Redis
// Cluster: the exact sliding window. A key is a list of the instants (on
// the Redis server's clock) of the events granted in the last Window,
// oldest first, never more than Limit of them, and expires Window after the
// newest. It is exact and, at one list entry per unit granted in the last
// Window, the most memory-hungry; prefer it for small limits. SlidingLog implements
// ratelimit.Limiter and is safe for concurrent use.
type SlidingLog struct {
	c *core
	w ratelimit.WindowConfig
}

var _ ratelimit.Limiter = (*SlidingLog)(nil)

// NewSlidingLog connects to Redis and returns a SlidingLog of w.Limit
// events per w.Window, as NewFixedWindow does.
func NewSlidingLog(cfg Config, w ratelimit.WindowConfig) (*SlidingLog, error) {
	args, _, err := windowArgs(w)
	if err != nil {
		return nil, err
	}
	limit := w.Limit
	alg := algorithm{script: logScript, sha: logSHA, prefix: "strata:rll:", args: args, stride: 4,
		decide: func(res *reply, n int) ratelimit.Decision {
			d := ratelimit.Decision{Allowed: res[0] == 1, Limit: limit, Remaining: limit - int(res[1]), ResetAfter: us(res[3])}
			if !d.Allowed {
				d.RetryAfter = max(us(res[2]), time.Microsecond)
			}
			return d
		}}
	c, err := newCore(cfg, limit, alg, func() (ratelimit.Limiter, error) { return ratelimit.NewSlidingLog(w) })
	if err != nil {
		return nil, err
	}
	return &SlidingLog{c: c, w: w}, nil
}

// AllowN decides n events for key on Redis, as GCRA.AllowN does.
func (l *SlidingLog) AllowN(ctx context.Context, key string, n int) (ratelimit.Decision, error) {
	d, _, err := l.c.allowN(ctx, key, n, "")
	return d, err
}

// Policy returns Limit events per Window.
func (l *SlidingLog) Policy() ratelimit.Policy {
	return ratelimit.Policy{Quota: l.w.Limit, Window: l.w.Window}
}

// Close stops the workers and closes the client if the limiter built it.
// Close may be called more than once.
func (l *SlidingLog) Close() error { l.c.close(); return nil }

// Client returns the rueidis client the limiter uses.
func (l *SlidingLog) Client() rueidis.Client { return l.c.client }

// Key returns the Redis key that holds key's state.
func (l *SlidingLog) Key(key string) string { return l.c.prefix + key }

// Breaker returns the breaker that guards Redis.
func (l *SlidingLog) Breaker() *breaker.Breaker { return l.c.br }
