package retry

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
)

// ErrLimited is returned when an [AIMD] limiter is at its current concurrency limit.
var ErrLimited = errors.New("retry: concurrency limit reached")

// AIMDConfig configures an [AIMD] limiter. The zero value is valid.
type AIMDConfig struct {
	// InitialLimit is the starting concurrency limit. Default 20.
	InitialLimit int
	// MinLimit is the floor of the limit. Default 1.
	MinLimit int
	// MaxLimit is the ceiling of the limit. Default 1000.
	MaxLimit int
	// Decrease multiplies the limit after an overload signal; 0 < Decrease < 1. Default 0.9.
	Decrease float64
	// IsOverload says whether a call's error signals that the dependency is overloaded.
	// Default nil: every error except context.Canceled does.
	IsOverload func(err error) bool
}

// AIMD is an adaptive concurrency limiter: additive increase, multiplicative decrease, as in
// TCP congestion control and Netflix's concurrency-limits. Each success of a call made while
// the limiter was at least half used raises the limit by 1/limit (about one per round of calls);
// each overload signal multiplies it by Decrease. Calls beyond the limit are refused at once
// with [ErrLimited], so a caller sheds load instead of queueing behind a saturated dependency.
// It is safe for concurrent use.
type AIMD struct {
	minLimit, maxLimit float64
	decrease           float64
	isOverload         func(error) bool

	mu       sync.Mutex // protects the fields below
	limit    float64
	inFlight int
}

// NewAIMD returns a limiter, or an error wrapping [ErrInvalidConfig].
func NewAIMD(cfg AIMDConfig) (*AIMD, error) {
	if cfg.InitialLimit < 0 || cfg.MinLimit < 0 || cfg.MaxLimit < 0 || cfg.Decrease < 0 || cfg.Decrease >= 1 {
		return nil, fmt.Errorf("%w: AIMD limits must be >= 0 and Decrease in [0, 1)", ErrInvalidConfig)
	}
	l := &AIMD{
		minLimit:   float64(max(cfg.MinLimit, 1)),
		maxLimit:   float64(cmp.Or(cfg.MaxLimit, 1000)),
		decrease:   cfg.Decrease,
		isOverload: cfg.IsOverload,
		limit:      float64(cmp.Or(cfg.InitialLimit, 20)),
	}
	if l.decrease == 0 {
		l.decrease = 0.9
	}
	if l.minLimit > l.maxLimit {
		return nil, fmt.Errorf("%w: MinLimit above MaxLimit", ErrInvalidConfig)
	}
	l.limit = min(max(l.limit, l.minLimit), l.maxLimit)
	return l, nil
}

// AIMDPermit is one call admitted by [AIMD.Acquire]. Report its result with one call to Done.
type AIMDPermit struct {
	l      *AIMD
	probed bool // the limiter was at least half used when the call was admitted
}

// Acquire admits one call, or returns [ErrLimited] if the limit is reached.
func (l *AIMD) Acquire() (AIMDPermit, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if float64(l.inFlight) >= l.limit {
		return AIMDPermit{}, ErrLimited
	}
	l.inFlight++
	return AIMDPermit{l: l, probed: 2*float64(l.inFlight) >= l.limit}, nil
}

// Done releases the call's slot and adapts the limit to its result.
func (p AIMDPermit) Done(err error) {
	l := p.l
	if l == nil {
		return
	}
	overload := err != nil && !errors.Is(err, context.Canceled)
	if l.isOverload != nil {
		overload = l.isOverload(err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.inFlight--
	switch {
	case overload:
		l.limit = max(l.limit*l.decrease, l.minLimit)
	case err == nil && p.probed:
		l.limit = min(l.limit+1/l.limit, l.maxLimit)
	}
}

// errPanicked is what a panic in AIMD.Do is reported as: an overload signal.
var errPanicked = errors.New("retry: function panicked")

// Do calls fn if the limiter admits it, and adapts the limit to its result. A panic in fn
// releases the slot, counts as an overload signal, and continues to unwind.
func (l *AIMD) Do(ctx context.Context, fn func(context.Context) error) error {
	p, err := l.Acquire()
	if err != nil {
		return err
	}
	returned := false
	defer func() {
		if !returned {
			p.Done(errPanicked)
		}
	}()
	err = fn(ctx)
	returned = true
	p.Done(err)
	return err
}

// Limit returns the current limit, rounded down.
func (l *AIMD) Limit() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return int(l.limit)
}
