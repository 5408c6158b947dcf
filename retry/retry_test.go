package retry_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/strata-project/strata/retry"
)

var errBoom = errors.New("boom")

// seq returns a random source that yields vs in turn.
func seq(vs ...float64) func() float64 {
	i := 0
	return func() float64 { v := vs[i%len(vs)]; i++; return v }
}

const ms = time.Millisecond

func TestBackoffDelays(t *testing.T) {
	rs := []float64{0.5, 0.25, 0.75, 0.5, 0.5}
	tests := []struct {
		jitter retry.Jitter
		want   []time.Duration
	}{
		// scale 100, 200, 400, 800, 1000 (capped) times the random numbers
		{retry.FullJitter, []time.Duration{50 * ms, 50 * ms, 300 * ms, 400 * ms, 500 * ms}},
		// base + r*(min(3*prev, max) - base), prev starting at base
		{retry.DecorrelatedJitter, []time.Duration{200 * ms, 225 * ms, 531250 * time.Microsecond, 550 * ms, 550 * ms}},
		{retry.NoJitter, []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, 1000 * ms}},
	}
	for _, tt := range tests {
		p := retry.Policy{BaseDelay: 100 * ms, MaxDelay: time.Second, Jitter: tt.jitter, Rand: seq(rs...)}
		bo := p.Backoff()
		for i, want := range tt.want {
			if got := bo.Next(); got != want {
				t.Errorf("jitter %d: delay %d = %v, want %v", tt.jitter, i, got, want)
			}
		}
	}
}

// failing returns a function that fails n times with err, then succeeds, counting its calls.
func failing(n int, err error, calls *int) func(context.Context) error {
	return func(context.Context) error {
		*calls++
		if *calls <= n {
			return err
		}
		return nil
	}
}

func TestDoWaitsTheBackoffDelays(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var delays []time.Duration
		p := retry.Policy{MaxAttempts: 4, Jitter: retry.NoJitter, BaseDelay: 100 * ms,
			OnRetry: func(_ int, _ error, d time.Duration) { delays = append(delays, d) }}
		calls := 0
		start := time.Now()
		if err := p.Do(context.Background(), failing(2, errBoom, &calls)); err != nil {
			t.Fatal(err)
		}
		if calls != 3 || time.Since(start) != 300*ms || len(delays) != 2 {
			t.Fatalf("calls %d, elapsed %v, delays %v; want 3 calls over 300ms", calls, time.Since(start), delays)
		}
	})
}

func TestDoStops(t *testing.T) {
	tests := []struct {
		name      string
		p         retry.Policy
		err       error
		wantCalls int
	}{
		{"max attempts", retry.Policy{MaxAttempts: 3}, errBoom, 3},
		{"default max attempts", retry.Policy{}, errBoom, 3},
		{"permanent error", retry.Policy{MaxAttempts: 5}, retry.Permanent(errBoom), 1},
		{"deadline is not retried", retry.Policy{MaxAttempts: 5}, context.DeadlineExceeded, 1},
		{"custom classifier", retry.Policy{MaxAttempts: 5, Retryable: func(error) bool { return false }}, errBoom, 1},
		// delays 100ms, 200ms, 400ms: the third retry would start after 700ms > 500ms
		{"max elapsed", retry.Policy{MaxAttempts: 10, Jitter: retry.NoJitter, MaxElapsed: 500 * ms}, errBoom, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				calls := 0
				err := tt.p.Do(context.Background(), failing(100, tt.err, &calls))
				if !errors.Is(err, tt.err) || calls != tt.wantCalls {
					t.Fatalf("err %v after %d calls; want %v after %d", err, calls, tt.err, tt.wantCalls)
				}
			})
		})
	}
}

func TestDoHonoursRetryAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := retry.Policy{MaxAttempts: 2, Jitter: retry.NoJitter, BaseDelay: ms}
		calls := 0
		start := time.Now()
		err := p.Do(context.Background(), failing(1, &retry.RetryAfterError{Err: errBoom, After: 7 * time.Second}, &calls))
		if err != nil || calls != 2 {
			t.Fatalf("err %v, calls %d", err, calls)
		}
		if got := time.Since(start); got != 7*time.Second {
			t.Fatalf("waited %v, want the server's 7s", got)
		}
	})
}

func TestDoRetryAfterBeyondMaxElapsedGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := retry.Policy{MaxAttempts: 5, MaxElapsed: time.Minute}
		calls := 0
		start := time.Now()
		err := p.Do(context.Background(), failing(5, &retry.RetryAfterError{Err: errBoom, After: time.Hour}, &calls))
		if !errors.Is(err, errBoom) || calls != 1 || time.Since(start) != 0 {
			t.Fatalf("err %v, calls %d, waited %v: want to give up at once", err, calls, time.Since(start))
		}
	})
}

func TestDoStopsOnContextCancel(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(50*ms, cancel)
		p := retry.Policy{MaxAttempts: 5, Jitter: retry.NoJitter, BaseDelay: time.Second}
		calls := 0
		start := time.Now()
		err := p.Do(ctx, failing(5, errBoom, &calls))
		if !errors.Is(err, context.Canceled) || !errors.Is(err, errBoom) || calls != 1 {
			t.Fatalf("err %v, calls %d", err, calls)
		}
		if got := time.Since(start); got != 50*ms {
			t.Fatalf("returned after %v, want 50ms", got)
		}
	})
}

func TestGet(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := 0
		v, err := retry.Get(context.Background(), &retry.Policy{}, func(context.Context) (string, error) {
			if n++; n < 3 {
				return "", errBoom
			}
			return "ok", nil
		})
		if v != "ok" || err != nil || n != 3 {
			t.Fatalf("got %q, %v after %d calls", v, err, n)
		}
	})
}

func TestBudget(t *testing.T) {
	t0 := time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)
	b, err := retry.NewBudget(retry.BudgetConfig{Ratio: 0.2, MinPerSecond: 1, Window: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		b.RequestAt(t0)
	}
	// 10 retries of floor (1/s over 10s) + 20% of 10 requests = 12.
	for i := range 12 {
		if !b.TryRetryAt(t0) {
			t.Fatalf("retry %d refused", i+1)
		}
	}
	if b.TryRetryAt(t0.Add(9 * time.Second)) {
		t.Fatal("13th retry in the window allowed")
	}
	// Five more requests earn one more retry.
	for range 5 {
		b.RequestAt(t0.Add(9 * time.Second))
	}
	if !b.TryRetryAt(t0.Add(9 * time.Second)) {
		t.Fatal("retry earned by 5 requests refused")
	}
	if b.TryRetryAt(t0.Add(9 * time.Second)) {
		t.Fatal("retry beyond the earned one allowed")
	}
	// Once t0's bucket has left the window, its 12 retries no longer count.
	if !b.TryRetryAt(t0.Add(10 * time.Second)) {
		t.Fatal("retry refused after the window slid past the old retries")
	}
}

func TestBudgetStopsRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b, _ := retry.NewBudget(retry.BudgetConfig{Ratio: 0.5, MinPerSecond: 1e-9})
		p := retry.Policy{MaxAttempts: 3, Budget: b}
		var calls atomic.Int64
		fail := func(context.Context) error { calls.Add(1); return errBoom }
		var budgetErrs atomic.Int64
		var wg sync.WaitGroup
		for range 100 {
			wg.Go(func() {
				if err := p.Do(context.Background(), fail); errors.Is(err, retry.ErrBudgetExhausted) {
					if !errors.Is(err, errBoom) {
						t.Errorf("budget error %v does not carry the last error", err)
					}
					budgetErrs.Add(1)
				}
			})
		}
		wg.Wait()
		// Without a budget: 300 calls. With it, retries stay within half the requests.
		if got := calls.Load(); got > 150 || got < 100 || budgetErrs.Load() == 0 {
			t.Fatalf("%d calls, %d budget refusals: want 100..150 calls and some refusals", got, budgetErrs.Load())
		}
	})
}

func TestNewBudgetValidates(t *testing.T) {
	for _, cfg := range []retry.BudgetConfig{{Ratio: -1}, {MinPerSecond: -1}, {Window: -time.Second}} {
		if _, err := retry.NewBudget(cfg); !errors.Is(err, retry.ErrInvalidConfig) {
			t.Errorf("NewBudget(%+v): %v", cfg, err)
		}
	}
}
