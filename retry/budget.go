package retry

import (
	"fmt"
	"sync"
	"time"
)

// BudgetConfig configures a [Budget]. The zero value is valid: retries may add 20% to the
// requests seen in the last 10 seconds, plus 10 retries per second.
type BudgetConfig struct {
	// Ratio is the share of requests that may be retried (0.2 lets retries add 20% load).
	// Default 0.2. Must be >= 0; 0 is taken as the default, so a budget of only MinPerSecond
	// needs a tiny ratio such as 1e-9.
	Ratio float64

	// MinPerSecond is a floor of retries per second allowed whatever the request rate, so that
	// a lightly used client can still retry. Default 10. Must be >= 0.
	MinPerSecond float64

	// Window is how long requests and retries are remembered. Default 10s.
	Window time.Duration
}

// budgetBuckets is the number of buckets the window slides by.
const budgetBuckets = 10

// Budget bounds retries across many calls, as Envoy's and Linkerd's retry budgets do: over the
// last Window, retries may not exceed MinPerSecond*Window plus Ratio times the requests (first
// attempts) seen. During an outage every call fails; without a budget, each caller's retries
// multiply the load on the struggling dependency by MaxAttempts. It is safe for concurrent use.
type Budget struct {
	ratio   float64
	reserve float64 // MinPerSecond * Window
	width   time.Duration

	mu      sync.Mutex // protects the fields below
	buckets [budgetBuckets]budgetBucket
	base    time.Time // start of epoch 0; zero until first use
}

type budgetBucket struct {
	epoch             int64
	requests, retries int
}

// NewBudget returns a budget, or an error wrapping [ErrInvalidConfig].
func NewBudget(cfg BudgetConfig) (*Budget, error) {
	if !(cfg.Ratio >= 0) || !(cfg.MinPerSecond >= 0) || cfg.Window < 0 {
		return nil, fmt.Errorf("%w: budget ratio, rate and window must be >= 0", ErrInvalidConfig)
	}
	if cfg.Ratio == 0 {
		cfg.Ratio = 0.2
	}
	if cfg.MinPerSecond == 0 {
		cfg.MinPerSecond = 10
	}
	if cfg.Window == 0 {
		cfg.Window = 10 * time.Second
	}
	b := &Budget{
		ratio:   cfg.Ratio,
		reserve: cfg.MinPerSecond * cfg.Window.Seconds(),
		width:   max(cfg.Window/budgetBuckets, 1),
	}
	for i := range b.buckets {
		b.buckets[i].epoch = -1
	}
	return b, nil
}

// Request records a first attempt (it earns Ratio of a retry).
func (b *Budget) Request() { b.RequestAt(time.Now()) }

// RequestAt is Request at the instant now.
func (b *Budget) RequestAt(now time.Time) {
	b.mu.Lock()
	b.bucketLocked(now).requests++
	b.mu.Unlock()
}

// TryRetry reports whether a retry may be made now, and if so spends it.
func (b *Budget) TryRetry() bool { return b.TryRetryAt(time.Now()) }

// TryRetryAt is TryRetry at the instant now.
func (b *Budget) TryRetryAt(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	cur := b.bucketLocked(now)
	requests, retries := 0, 0
	for _, bk := range b.buckets {
		if bk.epoch > cur.epoch-budgetBuckets && bk.epoch <= cur.epoch {
			requests += bk.requests
			retries += bk.retries
		}
	}
	if float64(retries+1) > b.reserve+b.ratio*float64(requests) {
		return false
	}
	cur.retries++
	return true
}

// bucketLocked returns the bucket of instant now, emptied if it held an older epoch.
func (b *Budget) bucketLocked(now time.Time) *budgetBucket {
	if b.base.IsZero() {
		b.base = now
	}
	e := int64(0)
	if d := now.Sub(b.base); d > 0 {
		e = int64(d / b.width)
	}
	bk := &b.buckets[e%budgetBuckets]
	if bk.epoch != e {
		*bk = budgetBucket{epoch: e}
	}
	return bk
}
