package retry

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrBulkheadFull is returned when a [Bulkhead] has no free slot within its maximum wait.
var ErrBulkheadFull = errors.New("retry: bulkhead full")

// ErrTimeout is the cause of the context [Timeout] gives its function, and is wrapped by the
// error Timeout returns when its own deadline, not the caller's, ended the call.
var ErrTimeout = errors.New("retry: timeout")

// Bulkhead bounds the number of concurrent calls to a dependency, so that one slow dependency
// cannot take every goroutine or connection of the caller. A call that finds no free slot
// waits at most the bulkhead's maximum wait. It is safe for concurrent use.
type Bulkhead struct {
	slots   chan struct{}
	maxWait time.Duration
}

// NewBulkhead returns a bulkhead admitting maxConcurrent calls at once; a call waits at most
// maxWait for a slot (0: it does not wait). It returns an error wrapping [ErrInvalidConfig] if
// maxConcurrent < 1 or maxWait < 0.
func NewBulkhead(maxConcurrent int, maxWait time.Duration) (*Bulkhead, error) {
	if maxConcurrent < 1 || maxWait < 0 {
		return nil, fmt.Errorf("%w: bulkhead needs maxConcurrent >= 1 and maxWait >= 0", ErrInvalidConfig)
	}
	return &Bulkhead{slots: make(chan struct{}, maxConcurrent), maxWait: maxWait}, nil
}

// Acquire takes a slot, waiting at most the maximum wait. It returns [ErrBulkheadFull] if none
// freed in time, or ctx's error if ctx ended first. Every successful Acquire must be followed
// by one Release.
func (b *Bulkhead) Acquire(ctx context.Context) error {
	select {
	case b.slots <- struct{}{}:
		return nil
	default:
	}
	if b.maxWait == 0 {
		return ErrBulkheadFull
	}
	t := time.NewTimer(b.maxWait)
	defer t.Stop()
	select {
	case b.slots <- struct{}{}:
		return nil
	case <-t.C:
		return ErrBulkheadFull
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// Release frees a slot taken by Acquire.
func (b *Bulkhead) Release() { <-b.slots }

// Do calls fn holding a slot, and returns Acquire's error without calling fn if none is free.
func (b *Bulkhead) Do(ctx context.Context, fn func(context.Context) error) error {
	if err := b.Acquire(ctx); err != nil {
		return err
	}
	defer b.Release()
	return fn(ctx)
}

// InFlight returns the number of slots taken.
func (b *Bulkhead) InFlight() int { return len(b.slots) }

// Timeout calls fn with a context that ends after d, with [ErrTimeout] as its cause. If fn
// returns an error after that deadline passed, while ctx itself is still live, the error wraps
// both ErrTimeout and fn's error. fn must honour its context: Timeout does not abandon it.
func Timeout(ctx context.Context, d time.Duration, fn func(context.Context) error) error {
	tctx, cancel := context.WithTimeoutCause(ctx, d, ErrTimeout)
	defer cancel()
	err := fn(tctx)
	if err != nil && ctx.Err() == nil && errors.Is(context.Cause(tctx), ErrTimeout) {
		return fmt.Errorf("%w after %v: %w", ErrTimeout, d, err)
	}
	return err
}
