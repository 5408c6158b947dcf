package retry_test

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/strata-project/strata/retry"
)

func TestBulkheadBoundedWait(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, err := retry.NewBulkhead(2, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		for range 2 {
			if err := b.Acquire(ctx); err != nil {
				t.Fatal(err)
			}
		}
		start := time.Now()
		if err := b.Acquire(ctx); !errors.Is(err, retry.ErrBulkheadFull) || time.Since(start) != time.Second {
			t.Fatalf("got %v after %v, want ErrBulkheadFull after 1s", err, time.Since(start))
		}
		// A slot freed during the wait is taken.
		time.AfterFunc(300*time.Millisecond, b.Release)
		start = time.Now()
		if err := b.Acquire(ctx); err != nil || time.Since(start) != 300*time.Millisecond {
			t.Fatalf("got %v after %v, want a slot after 300ms", err, time.Since(start))
		}
		// The caller's context ends the wait.
		cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		if err := b.Acquire(cctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("got %v, want the context's error", err)
		}
		if b.InFlight() != 2 {
			t.Fatalf("in flight %d, want 2", b.InFlight())
		}
	})
}

func TestBulkheadNoWait(t *testing.T) {
	b, _ := retry.NewBulkhead(1, 0)
	if err := b.Acquire(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := b.Do(context.Background(), func(context.Context) error { return nil }); !errors.Is(err, retry.ErrBulkheadFull) {
		t.Fatalf("got %v, want ErrBulkheadFull", err)
	}
	if _, err := retry.NewBulkhead(0, 0); !errors.Is(err, retry.ErrInvalidConfig) {
		t.Fatalf("NewBulkhead(0, 0): %v", err)
	}
}

func TestBulkheadLimitUnderLoad(t *testing.T) {
	const limit = 4
	b, _ := retry.NewBulkhead(limit, time.Second)
	var inFlight, peak, ran atomic.Int64
	var wg sync.WaitGroup
	for range 200 {
		wg.Go(func() {
			_ = b.Do(context.Background(), func(context.Context) error {
				n := inFlight.Add(1)
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
				runtime.Gosched()
				ran.Add(1)
				inFlight.Add(-1)
				return nil
			})
		})
	}
	wg.Wait()
	if p := peak.Load(); p > limit || p < 1 || ran.Load() == 0 {
		t.Fatalf("peak %d (limit %d), ran %d", p, limit, ran.Load())
	}
}

func TestTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		slow := func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
		start := time.Now()
		err := retry.Timeout(context.Background(), 2*time.Second, slow)
		if !errors.Is(err, retry.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != 2*time.Second {
			t.Fatalf("got %v after %v", err, time.Since(start))
		}
		// The caller's own cancellation is not reported as a timeout.
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(time.Second, cancel)
		if err := retry.Timeout(ctx, time.Hour, slow); !errors.Is(err, context.Canceled) || errors.Is(err, retry.ErrTimeout) {
			t.Fatalf("got %v, want context.Canceled only", err)
		}
		if err := retry.Timeout(context.Background(), time.Hour, func(context.Context) error { return nil }); err != nil {
			t.Fatal(err)
		}
	})
}
