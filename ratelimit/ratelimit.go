package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"
)

// Sentinel errors. Errors returned by this package wrap one of them, so
// callers test with errors.Is.
var (
	// ErrLimited is returned by Decision.Err when the request was denied.
	ErrLimited = errors.New("ratelimit: limited")
	// ErrInvalidConfig is wrapped by constructors when a configuration is
	// unusable (zero or negative rate, limit or window).
	ErrInvalidConfig = errors.New("ratelimit: invalid config")
	// ErrInvalidCost is returned when a cost n is negative.
	ErrInvalidCost = errors.New("ratelimit: invalid cost")
	// ErrCostExceedsLimit is returned when a cost n is larger than the most a
	// key can ever be granted at once (the burst or limit): waiting would not
	// help, so the Decision says Allowed=false and RetryAfter=0.
	ErrCostExceedsLimit = errors.New("ratelimit: cost exceeds the limit")
)

// Decision is the outcome of one AllowN call. Every limiter, in memory or
// remote, reports its outcome in this form.
type Decision struct {
	// Allowed reports whether the n events may happen. When true, they
	// have been counted against the key.
	Allowed bool
	// Limit is the policy's quota: the most events a key can be granted at
	// once (the burst for GCRA, the limit for window limiters, the maximum
	// in flight for the concurrency limiter).
	Limit int
	// Remaining is how many more events of cost 1 the key could be granted
	// at the same instant, after this decision.
	Remaining int
	// RetryAfter is how long to wait before the same request can be
	// allowed. It is 0 when Allowed, and also 0 when it cannot be known
	// (the concurrency limiter) or when waiting would not help
	// (ErrCostExceedsLimit).
	RetryAfter time.Duration
	// ResetAfter is how long until the key is back to its full quota if no
	// more events arrive (0: it is full now, or it cannot be known).
	ResetAfter time.Duration
}

// Err returns nil when d is allowed, ErrLimited otherwise.
func (d Decision) Err() error {
	if d.Allowed {
		return nil
	}
	return ErrLimited
}

// Policy describes a limiter's quota for humans and for the IETF
// RateLimit-Policy header: Quota units per Window.
type Policy struct {
	// Quota is the number of units a key is granted per Window, the "q"
	// parameter of the RateLimit-Policy header.
	Quota int
	// Window is the time over which Quota applies, the "w" parameter. It is
	// 0 for limiters that are not time-based (the concurrency limiter).
	Window time.Duration
}

// Limiter is the interface shared by every limiter of Strata, in memory or
// remote. It is what the HTTP middleware consumes.
type Limiter interface {
	// AllowN reports whether n events for key may happen now and counts
	// them if so. A cost of 0 asks without counting. The error is non-nil
	// for invalid input (ErrInvalidCost, ErrCostExceedsLimit) or, for remote
	// limiters, when the store could not decide; a denial is not an error.
	AllowN(ctx context.Context, key string, n int) (Decision, error)
	// Policy describes the limit.
	Policy() Policy
}

// Rate is Limit events per Period.
type Rate struct {
	// Limit is the number of events per Period. It must be positive.
	Limit int
	// Period is the time the Limit applies to. It must be positive.
	Period time.Duration
}

// PerSecond returns a Rate of n events per second.
func PerSecond(n int) Rate { return Rate{Limit: n, Period: time.Second} }

// PerMinute returns a Rate of n events per minute.
func PerMinute(n int) Rate { return Rate{Limit: n, Period: time.Minute} }

// PerHour returns a Rate of n events per hour.
func PerHour(n int) Rate { return Rate{Limit: n, Period: time.Hour} }

// String formats r as "100/1m0s".
func (r Rate) String() string { return fmt.Sprintf("%d/%s", r.Limit, r.Period) }

// Interval returns the emission interval Period/Limit, rounded up to a whole
// nanosecond (so that a rounded rate never lets more through than asked) and
// at least 1ns. It is 0 when r is invalid.
func (r Rate) Interval() time.Duration {
	if r.Limit <= 0 || r.Period <= 0 {
		return 0
	}
	t := (r.Period + time.Duration(r.Limit) - 1) / time.Duration(r.Limit)
	return max(t, 1)
}

// maxSpan bounds every configured duration product (burst*interval, limit
// windows) so that instants plus spans never overflow int64 nanoseconds.
const maxSpan = math.MaxInt64 / 4

func checkCost(n, limit int) error {
	if n < 0 {
		return fmt.Errorf("%w: %d", ErrInvalidCost, n)
	}
	if n > limit {
		return fmt.Errorf("%w: cost %d, limit %d", ErrCostExceedsLimit, n, limit)
	}
	return nil
}
