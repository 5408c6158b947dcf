package retry

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"
)

// ErrBudgetExhausted is joined to the last error when the shared [Budget] refuses a retry.
var ErrBudgetExhausted = errors.New("retry: budget exhausted")

// ErrInvalidConfig is wrapped by the errors constructors return for invalid settings.
var ErrInvalidConfig = errors.New("retry: invalid config")

// Jitter selects how a [Backoff] randomises its delays.
type Jitter uint8

const (
	// FullJitter draws each delay uniformly from [0, min(MaxDelay, BaseDelay*Multiplier^n)).
	FullJitter Jitter = iota
	// DecorrelatedJitter draws each delay uniformly from [BaseDelay, 3*previous delay), capped
	// at MaxDelay.
	DecorrelatedJitter
	// NoJitter uses min(MaxDelay, BaseDelay*Multiplier^n) as is. For tests and for callers that
	// are the only client of the dependency.
	NoJitter
)

// Policy says how to retry a call. The zero value is valid: 3 attempts in all, full-jitter
// exponential backoff from 100ms doubling up to 10s, no elapsed-time limit, no budget. A Policy
// is safe for concurrent use once built, if its Rand function is.
type Policy struct {
	// MaxAttempts is the number of attempts, the first included. Default 3; 1 disables retries.
	MaxAttempts int

	// MaxElapsed stops retrying when the next attempt would start later than MaxElapsed after
	// the first one. Default 0: no limit.
	MaxElapsed time.Duration

	// BaseDelay is the first delay's scale. Default 100ms.
	BaseDelay time.Duration

	// MaxDelay caps every delay computed by the backoff (not a server's Retry-After). Default 10s.
	MaxDelay time.Duration

	// Multiplier grows the delay scale at each retry for FullJitter and NoJitter. Default 2.
	Multiplier float64

	// Jitter selects the randomisation. Default FullJitter.
	Jitter Jitter

	// Retryable says whether an error is worth another attempt. Default nil: [DefaultRetryable].
	Retryable func(err error) bool

	// Budget, when not nil, is consulted before every retry and told of every first attempt,
	// so that retries stay a bounded share of the traffic it sees. Default nil: no budget.
	Budget *Budget

	// Rand returns a uniform number in [0, 1). Default nil: math/rand/v2's Float64. Tests
	// inject a fixed sequence.
	Rand func() float64

	// OnRetry, when not nil, is called before each wait with the attempt that failed (1 for
	// the first), its error and the delay before the next attempt. Default nil.
	OnRetry func(attempt int, err error, delay time.Duration)
}

// DefaultRetryable is the classification used when [Policy.Retryable] is nil: every non-nil
// error is retryable, except context errors (the caller's deadline or cancellation) and errors
// marked with [Permanent].
func DefaultRetryable(err error) bool {
	return err != nil &&
		!errors.Is(err, context.Canceled) &&
		!errors.Is(err, context.DeadlineExceeded) &&
		!errors.As(err, new(*permanentError))
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as not worth retrying under [DefaultRetryable]. errors.Is and errors.As
// still see err through the mark. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err}
}

// Backoff produces the delays of one retried call. It is not safe for concurrent use; each call
// gets its own from [Policy.Backoff].
type Backoff struct {
	base, maxDelay time.Duration
	mult           float64
	jitter         Jitter
	rand           func() float64
	n              int
	prev           time.Duration
}

// Backoff returns a new delay sequence with the policy's settings.
func (p *Policy) Backoff() *Backoff {
	b := &Backoff{
		base:     p.BaseDelay,
		maxDelay: p.MaxDelay,
		mult:     p.Multiplier,
		jitter:   p.Jitter,
		rand:     p.Rand,
	}
	if b.base <= 0 {
		b.base = 100 * time.Millisecond
	}
	if b.maxDelay <= 0 {
		b.maxDelay = 10 * time.Second
	}
	if b.mult < 1 {
		b.mult = 2
	}
	if b.rand == nil {
		b.rand = rand.Float64
	}
	b.prev = b.base
	return b
}

// Next returns the delay before the next retry.
func (b *Backoff) Next() time.Duration {
	if b.jitter == DecorrelatedJitter {
		hi := min(3*float64(b.prev), float64(b.maxDelay))
		d := float64(b.base) + b.rand()*max(hi-float64(b.base), 0)
		b.prev = time.Duration(min(d, float64(b.maxDelay)))
		return b.prev
	}
	scale := min(float64(b.base)*math.Pow(b.mult, float64(b.n)), float64(b.maxDelay))
	b.n++
	if b.jitter == NoJitter {
		return time.Duration(scale)
	}
	return time.Duration(b.rand() * scale)
}

// Do calls fn until it succeeds, returns an error that is not retryable, or the policy gives
// up, and returns fn's last error. Between attempts it waits for the backoff delay, or for the
// server's Retry-After when the error carries one (see [RetryAfter]); if that wait would pass
// MaxElapsed it gives up at once. When the budget refuses a retry, the error matches both
// [ErrBudgetExhausted] and fn's last error. When ctx ends during a wait, the error matches both
// ctx's error and fn's last error.
func (p *Policy) Do(ctx context.Context, fn func(context.Context) error) error {
	_, err := Get(ctx, p, func(ctx context.Context) (struct{}, error) { return struct{}{}, fn(ctx) })
	return err
}

// Get is [Policy.Do] for a function that returns a value: it returns the value of the attempt
// that succeeded, or fn's last value and error.
func Get[T any](ctx context.Context, p *Policy, fn func(context.Context) (T, error)) (T, error) {
	maxAttempts := p.MaxAttempts
	if maxAttempts <= 0 {
		maxAttempts = 3
	}
	retryable := p.Retryable
	if retryable == nil {
		retryable = DefaultRetryable
	}
	if p.Budget != nil {
		p.Budget.Request()
	}
	start := time.Now()
	var bo *Backoff
	var timer *time.Timer
	for attempt := 1; ; attempt++ {
		v, err := fn(ctx)
		if err == nil || attempt >= maxAttempts || !retryable(err) {
			return v, err
		}
		if bo == nil {
			bo = p.Backoff()
		}
		delay := bo.Next()
		if ra, ok := RetryAfter(err); ok {
			delay = ra
		}
		if p.MaxElapsed > 0 && time.Since(start)+delay > p.MaxElapsed {
			return v, err
		}
		if p.Budget != nil && !p.Budget.TryRetry() {
			return v, errors.Join(ErrBudgetExhausted, err)
		}
		if p.OnRetry != nil {
			p.OnRetry(attempt, err, delay)
		}
		if timer == nil {
			timer = time.NewTimer(delay)
			defer timer.Stop()
		} else {
			timer.Reset(delay)
		}
		select {
		case <-ctx.Done():
			return v, fmt.Errorf("retry: %w while waiting (last error: %w)", context.Cause(ctx), err)
		case <-timer.C:
		}
	}
}
