package breaker_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/strata-project/strata/breaker"
)

var errBoom = errors.New("boom")

// t0 is a named instant far from the real clock: a breaker that consulted the wall clock instead
// of the instants it is given would see 25 years pass between calls.
var t0 = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

func mustNew(t *testing.T, cfg breaker.Config) *breaker.Breaker {
	t.Helper()
	b, err := breaker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// call makes one complete call at instant now with result err, returning the admission error.
func call(b *breaker.Breaker, now time.Time, err error) error {
	tok, aerr := b.AllowAt(now)
	if aerr != nil {
		return aerr
	}
	tok.DoneAt(now, err)
	return nil
}

// step is one call in a transition table: at instant at, with result err; want is the admission
// error expected, state the state expected afterwards.
type step struct {
	at    time.Duration
	err   error
	want  error
	state breaker.State
}

func runSteps(t *testing.T, b *breaker.Breaker, steps []step) {
	t.Helper()
	for i, s := range steps {
		if got := call(b, at(s.at), s.err); !errors.Is(got, s.want) || (got == nil) != (s.want == nil) {
			t.Fatalf("step %d at %v: admission error %v, want %v", i, s.at, got, s.want)
		}
		if got := b.State(); got != s.state {
			t.Fatalf("step %d at %v: state %v, want %v", i, s.at, got, s.state)
		}
	}
}

func TestTransitions(t *testing.T) {
	const (
		C = breaker.Closed
		H = breaker.HalfOpen
		O = breaker.Open
	)
	cfg := breaker.Config{ConsecutiveFailures: 3, OpenDuration: 10 * time.Second}
	tests := []struct {
		name  string
		cfg   breaker.Config
		steps []step
	}{
		{"closed stays closed on successes", cfg, []step{
			{0, nil, nil, C}, {1, nil, nil, C},
		}},
		{"closed to open after consecutive failures", cfg, []step{
			{0, errBoom, nil, C}, {1, errBoom, nil, C}, {2, errBoom, nil, O},
		}},
		{"a success resets the failure streak", cfg, []step{
			{0, errBoom, nil, C}, {1, errBoom, nil, C}, {2, nil, nil, C},
			{3, errBoom, nil, C}, {4, errBoom, nil, C}, {5, errBoom, nil, O},
		}},
		{"ignored results neither trip nor reset", cfg, []step{
			{0, errBoom, nil, C}, {1, errBoom, nil, C}, {2, context.Canceled, nil, C},
			{3, errBoom, nil, O},
		}},
		{"open refuses until the open duration has passed", cfg, []step{
			{0, errBoom, nil, C}, {0, errBoom, nil, C}, {0, errBoom, nil, O},
			{time.Second, nil, breaker.ErrOpen, O},
			{10*time.Second - 1, nil, breaker.ErrOpen, O},
		}},
		{"open to half-open to closed on a probe success", cfg, []step{
			{0, errBoom, nil, C}, {0, errBoom, nil, C}, {0, errBoom, nil, O},
			{10 * time.Second, nil, nil, C},
		}},
		{"half-open to open on a probe failure", cfg, []step{
			{0, errBoom, nil, C}, {0, errBoom, nil, C}, {0, errBoom, nil, O},
			{10 * time.Second, errBoom, nil, O},
			{15 * time.Second, nil, breaker.ErrOpen, O},
			{20 * time.Second, nil, nil, C},
		}},
		{"half-open needs M successes", breaker.Config{ConsecutiveFailures: 1, OpenDuration: time.Second, HalfOpenSuccesses: 3}, []step{
			{0, errBoom, nil, O},
			{time.Second, nil, nil, H}, {time.Second, nil, nil, H}, {time.Second, nil, nil, C},
		}},
		{"an ignored probe frees its slot and counts for nothing", breaker.Config{ConsecutiveFailures: 1, OpenDuration: time.Second}, []step{
			{0, errBoom, nil, O},
			{time.Second, context.Canceled, nil, H}, {time.Second, nil, nil, C},
		}},
		{"failure ratio over a count window", breaker.Config{FailureRatio: 0.5, MinCalls: 4, WindowCalls: 4}, []step{
			{0, nil, nil, C}, {0, errBoom, nil, C}, {0, nil, nil, C}, {0, errBoom, nil, O},
		}},
		{"failure ratio waits for MinCalls", breaker.Config{FailureRatio: 0.5, MinCalls: 3, WindowCalls: 10}, []step{
			{0, errBoom, nil, C}, {0, errBoom, nil, C}, {0, errBoom, nil, O},
		}},
		{"count window forgets old calls", breaker.Config{FailureRatio: 0.5, MinCalls: 4, WindowCalls: 4}, []step{
			{0, errBoom, nil, C}, {0, nil, nil, C}, {0, nil, nil, C}, {0, nil, nil, C},
			{0, nil, nil, C},                                             // the first failure slides out: 0 of 4
			{0, errBoom, nil, C}, {0, nil, nil, C}, {0, errBoom, nil, O}, // 2 of 4
		}},
		{"time window forgets old buckets", breaker.Config{FailureRatio: 0.5, MinCalls: 4, WindowDuration: 10 * time.Second, WindowBuckets: 10}, []step{
			{0, errBoom, nil, C}, {0, errBoom, nil, C}, {time.Second, nil, nil, C},
			// at 10s the failures at 0s have left the window: 2 calls, below MinCalls
			{10 * time.Second, nil, nil, C},
			{10 * time.Second, errBoom, nil, C}, // 1 failure of 3
			{10 * time.Second, errBoom, nil, O}, // 2 failures of 4
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			runSteps(t, mustNew(t, tt.cfg), tt.steps)
		})
	}
}

func TestSlowCallRatio(t *testing.T) {
	b := mustNew(t, breaker.Config{SlowCallRatio: 0.5, SlowCallDuration: time.Second, MinCalls: 2, WindowCalls: 10})
	slow := func(start time.Duration, took time.Duration) {
		t.Helper()
		tok, err := b.AllowAt(at(start))
		if err != nil {
			t.Fatal(err)
		}
		tok.DoneAt(at(start+took), nil)
	}
	slow(0, 10*time.Millisecond)
	slow(0, 20*time.Millisecond)
	slow(0, 2*time.Second)
	if got := b.State(); got != breaker.Closed {
		t.Fatalf("1 slow of 3: state %v, want closed", got)
	}
	slow(0, time.Second)
	if got := b.State(); got != breaker.Open {
		t.Fatalf("2 slow of 4: state %v, want open", got)
	}
	if s := b.Stats(); s.Slow != 2 || s.Successes != 4 {
		t.Fatalf("stats %+v: want 2 slow, 4 successes", s)
	}
}

func TestOpenBackoff(t *testing.T) {
	b := mustNew(t, breaker.Config{
		ConsecutiveFailures: 1, OpenDuration: time.Second, OpenBackoff: 2, MaxOpenDuration: 5 * time.Second,
	})
	now := t0
	if err := call(b, now, errBoom); err != nil {
		t.Fatal(err)
	}
	// Each failed probe re-opens for twice as long, capped at 5s.
	for i, d := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second} {
		if err := call(b, now.Add(d-1), nil); !errors.Is(err, breaker.ErrOpen) {
			t.Fatalf("trip %d: at open+%v got %v, want ErrOpen", i+1, d-1, err)
		}
		now = now.Add(d)
		if err := call(b, now, errBoom); err != nil {
			t.Fatalf("trip %d: probe at open+%v refused: %v", i+1, d, err)
		}
	}
	// A close resets the backoff: the next trip opens for 1s again.
	now = now.Add(5 * time.Second)
	if err := call(b, now, nil); err != nil || b.State() != breaker.Closed {
		t.Fatalf("probe success: err %v, state %v", err, b.State())
	}
	_ = call(b, now, errBoom)
	if err := call(b, now.Add(time.Second), nil); err != nil {
		t.Fatalf("after a close the open duration should be back to 1s: %v", err)
	}
}

// The seed admitted every call once its timeout had passed: half-open was as open as closed.
func TestSeedFlawHalfOpenAdmitsUnlimitedCalls(t *testing.T) {
	b := mustNew(t, breaker.Config{ConsecutiveFailures: 1, OpenDuration: time.Second, HalfOpenProbes: 2})
	_ = call(b, t0, errBoom)
	now := at(time.Second)
	var toks []breaker.Token
	for range 2 {
		tok, err := b.AllowAt(now)
		if err != nil {
			t.Fatalf("probe refused: %v", err)
		}
		toks = append(toks, tok)
	}
	for range 3 {
		if _, err := b.AllowAt(now); !errors.Is(err, breaker.ErrTooManyProbes) {
			t.Fatalf("third concurrent probe: got %v, want ErrTooManyProbes", err)
		}
	}
	if s := b.Stats(); s.RejectedProbes != 3 || s.State != breaker.HalfOpen {
		t.Fatalf("stats %+v: want 3 rejected probes, half-open", s)
	}
	toks[0].DoneAt(now, nil) // frees a slot (1 of 2 successes)
	if _, err := b.AllowAt(now); err != nil {
		t.Fatalf("a finished probe should free its slot: %v", err)
	}
}

// The seed kept counting successes from one half-open period into the next: a success left over
// from a period that ended in failure helped close the next one early.
func TestSeedFlawSuccessCountNotResetOnHalfOpen(t *testing.T) {
	b := mustNew(t, breaker.Config{ConsecutiveFailures: 1, OpenDuration: time.Second, HalfOpenProbes: 2, HalfOpenSuccesses: 2})
	_ = call(b, t0, errBoom)
	p1, _ := b.AllowAt(at(time.Second))
	p2, _ := b.AllowAt(at(time.Second))
	p1.DoneAt(at(time.Second), nil)     // 1 success of 2
	p2.DoneAt(at(time.Second), errBoom) // re-opens
	if got := b.State(); got != breaker.Open {
		t.Fatalf("state %v after a failed probe, want open", got)
	}
	if err := call(b, at(2*time.Second), nil); err != nil {
		t.Fatal(err)
	}
	if got := b.State(); got != breaker.HalfOpen {
		t.Fatalf("one success in a new half-open period closed the breaker (state %v): the count was carried over", got)
	}
	if err := call(b, at(2*time.Second), nil); err != nil || b.State() != breaker.Closed {
		t.Fatalf("second success: err %v, state %v, want closed", err, b.State())
	}
}

// The seed only re-opened once its failure counter passed the threshold again, so a half-open
// failure could leave the breaker half-open and admitting calls.
func TestSeedFlawHalfOpenFailureDoesNotReopen(t *testing.T) {
	b := mustNew(t, breaker.Config{ConsecutiveFailures: 5, OpenDuration: time.Second})
	for range 5 {
		_ = call(b, t0, errBoom)
	}
	if err := call(b, at(time.Second), errBoom); err != nil {
		t.Fatal(err)
	}
	if got := b.State(); got != breaker.Open {
		t.Fatalf("state %v after one failed probe, want open", got)
	}
	if err := call(b, at(time.Second+time.Millisecond), nil); !errors.Is(err, breaker.ErrOpen) {
		t.Fatalf("call right after a failed probe: %v, want ErrOpen", err)
	}
}

// The seed measured the open period with datetime.utcnow(): wall-clock, not monotonic, and not
// injectable. Here the instants given are all that count: 25 years of real time between t0 and
// the test run do not end an open period of 1 minute.
func TestSeedFlawReadsWallClock(t *testing.T) {
	b := mustNew(t, breaker.Config{ConsecutiveFailures: 1, OpenDuration: time.Minute})
	_ = call(b, t0, errBoom)
	if err := call(b, at(time.Minute-time.Nanosecond), nil); !errors.Is(err, breaker.ErrOpen) {
		t.Fatalf("got %v, want ErrOpen: the breaker did not use the instant it was given", err)
	}
	if err := call(b, at(time.Minute), nil); err != nil {
		t.Fatalf("got %v at the end of the open period", err)
	}
}

// The plain forms read the monotonic clock; under synctest, fake time drives them.
func TestOpenDurationWithClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := mustNew(t, breaker.Config{ConsecutiveFailures: 1, OpenDuration: time.Minute})
		ctx := context.Background()
		fail := func(context.Context) error { return errBoom }
		ok := func(context.Context) error { return nil }
		if err := b.Do(ctx, fail); !errors.Is(err, errBoom) {
			t.Fatal(err)
		}
		time.Sleep(time.Minute - time.Nanosecond)
		if err := b.Do(ctx, ok); !errors.Is(err, breaker.ErrOpen) {
			t.Fatalf("before the open period ended: %v, want ErrOpen", err)
		}
		time.Sleep(time.Nanosecond)
		if err := b.Do(ctx, ok); err != nil || b.State() != breaker.Closed {
			t.Fatalf("after the open period: err %v, state %v", err, b.State())
		}
	})
}

// A result from a call admitted in an earlier generation must not decide the current state.
func TestStaleResultsIgnored(t *testing.T) {
	b := mustNew(t, breaker.Config{ConsecutiveFailures: 1, OpenDuration: time.Second})
	slow, _ := b.AllowAt(t0) // admitted while closed
	_ = call(b, t0, errBoom) // trips
	probe, err := b.AllowAt(at(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	slow.DoneAt(at(time.Second), nil) // late success from the closed generation
	if got := b.State(); got != breaker.HalfOpen {
		t.Fatalf("a stale success changed the state to %v", got)
	}
	probe.DoneAt(at(time.Second), nil)
	if got := b.State(); got != breaker.Closed {
		t.Fatalf("state %v after the probe succeeded, want closed", got)
	}
	late, _ := b.AllowAt(at(time.Second))
	_ = call(b, at(time.Second), errBoom) // trips again
	// A stale failure must not re-open (or extend) anything either: the next probe goes through.
	late.DoneAt(at(2*time.Second), errBoom)
	if err := call(b, at(2*time.Second), nil); err != nil {
		t.Fatalf("probe after a stale failure: %v", err)
	}
}

func TestPanicCountsAsFailure(t *testing.T) {
	b := mustNew(t, breaker.Config{ConsecutiveFailures: 1})
	func() {
		defer func() {
			if r := recover(); r != "kaboom" {
				t.Fatalf("recovered %v, want the original panic", r)
			}
		}()
		_ = b.Do(context.Background(), func(context.Context) error { panic("kaboom") })
	}()
	if s := b.Stats(); s.State != breaker.Open || s.Failures != 1 {
		t.Fatalf("after a panic: %+v, want open with 1 failure", s)
	}
}

func TestExecute(t *testing.T) {
	b := mustNew(t, breaker.Config{ConsecutiveFailures: 1})
	v, err := breaker.Execute(context.Background(), b, func(context.Context) (int, error) { return 42, nil })
	if v != 42 || err != nil {
		t.Fatalf("got %d, %v", v, err)
	}
	_, _ = breaker.Execute(context.Background(), b, func(context.Context) (int, error) { return 0, errBoom })
	v, err = breaker.Execute(context.Background(), b, func(context.Context) (int, error) { return 1, nil })
	if v != 0 || !errors.Is(err, breaker.ErrOpen) {
		t.Fatalf("got %d, %v; want 0, ErrOpen", v, err)
	}
}

func TestCallerCancellationIsNotAFailure(t *testing.T) {
	b := mustNew(t, breaker.Config{ConsecutiveFailures: 1})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := b.Do(ctx, func(ctx context.Context) error { return fmt.Errorf("query: %w", ctx.Err()) })
	if !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	if s := b.Stats(); s.State != breaker.Closed || s.Ignored != 1 || s.Failures != 0 {
		t.Fatalf("stats %+v: want closed, 1 ignored", s)
	}
	// A custom classifier decides otherwise.
	b = mustNew(t, breaker.Config{ConsecutiveFailures: 1, Classify: func(err error) breaker.Outcome {
		if err != nil {
			return breaker.Failure
		}
		return breaker.Success
	}})
	_ = b.Do(ctx, func(ctx context.Context) error { return ctx.Err() })
	if got := b.State(); got != breaker.Open {
		t.Fatalf("custom classifier: state %v, want open", got)
	}
}

func TestAllowFunc(t *testing.T) {
	b := mustNew(t, breaker.Config{ConsecutiveFailures: 1})
	done, err := b.AllowFunc()
	if err != nil {
		t.Fatal(err)
	}
	done(errBoom)
	if _, err := b.AllowFunc(); !errors.Is(err, breaker.ErrOpen) {
		t.Fatalf("got %v, want ErrOpen", err)
	}
	var zero breaker.Token
	zero.Done(errBoom) // must not panic
}

func TestOnStateChange(t *testing.T) {
	var got []breaker.Transition
	b := mustNew(t, breaker.Config{
		Name: "db", ConsecutiveFailures: 1, OpenDuration: time.Second,
		OnStateChange: func(tr breaker.Transition) { got = append(got, tr) },
	})
	_ = call(b, t0, errBoom)
	_ = call(b, at(time.Second), errBoom)
	_ = call(b, at(2*time.Second), nil)
	want := []breaker.Transition{
		{"db", breaker.Closed, breaker.Open, 1, t0},
		{"db", breaker.Open, breaker.HalfOpen, 2, at(time.Second)},
		{"db", breaker.HalfOpen, breaker.Open, 3, at(time.Second)},
		{"db", breaker.Open, breaker.HalfOpen, 4, at(2 * time.Second)},
		{"db", breaker.HalfOpen, breaker.Closed, 5, at(2 * time.Second)},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("transitions\n got %v\nwant %v", got, want)
	}
	if s := b.Stats(); s.Trips != 2 || s.Generation != 5 || s.Rejected != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestStats(t *testing.T) {
	b := mustNew(t, breaker.Config{ConsecutiveFailures: 3})
	_ = call(b, t0, nil)
	_ = call(b, t0, errBoom)
	_ = call(b, t0, errBoom)
	want := breaker.Stats{State: breaker.Closed, ConsecutiveFailures: 2, Successes: 1, Failures: 2}
	if got := b.Stats(); got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	_ = call(b, t0, errBoom)
	_ = call(b, t0, nil)
	want = breaker.Stats{State: breaker.Open, Generation: 1, Failures: 3, Successes: 1, Rejected: 1, Trips: 1}
	if got := b.Stats(); got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
}

func TestNewValidates(t *testing.T) {
	for _, cfg := range []breaker.Config{
		{ConsecutiveFailures: -1},
		{FailureRatio: 1.5},
		{SlowCallRatio: -0.1},
		{OpenBackoff: 0.5},
		{OpenDuration: -time.Second},
		{HalfOpenProbes: -1},
	} {
		if _, err := breaker.New(cfg); !errors.Is(err, breaker.ErrInvalidConfig) {
			t.Errorf("New(%+v): %v, want ErrInvalidConfig", cfg, err)
		}
	}
}

// 1,000 goroutines hammer a half-open breaker; a counter inside the protected function checks
// that no more than N probes are ever in flight.
func TestHalfOpenProbeLimitUnderLoad(t *testing.T) {
	const probes = 3
	b := mustNew(t, breaker.Config{
		ConsecutiveFailures: 1, OpenDuration: time.Nanosecond,
		HalfOpenProbes: probes, HalfOpenSuccesses: 1 << 30, // stay half-open
	})
	_ = call(b, time.Now(), errBoom)
	for b.State() != breaker.HalfOpen {
		_ = call(b, time.Now(), context.Canceled) // move to half-open; canceled frees the slot
	}
	var inFlight, peak, ran, refused atomic.Int64
	protected := func(context.Context) error {
		n := inFlight.Add(1)
		for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
		}
		runtime.Gosched()
		ran.Add(1)
		inFlight.Add(-1)
		return nil
	}
	var wg sync.WaitGroup
	for range 1000 {
		wg.Go(func() {
			for range 20 {
				switch err := b.Do(context.Background(), protected); {
				case err == nil:
				case errors.Is(err, breaker.ErrTooManyProbes):
					refused.Add(1)
				default:
					t.Errorf("unexpected error %v", err)
				}
			}
		})
	}
	wg.Wait()
	if p := peak.Load(); p > probes || p < 1 {
		t.Fatalf("peak probes in flight %d, want 1..%d", p, probes)
	}
	if ran.Load() == 0 || refused.Load() == 0 {
		t.Fatalf("ran %d, refused %d: the test did not exercise the limit", ran.Load(), refused.Load())
	}
	if s := b.Stats(); s.State != breaker.HalfOpen || int64(s.RejectedProbes) != refused.Load() {
		t.Fatalf("stats %+v, refused %d", s, refused.Load())
	}
}

// Concurrent successes and failures, racing with trips: every call is accounted for exactly
// once, as a success, a failure or a refusal.
func TestClosedConcurrentCallsAllCounted(t *testing.T) {
	b := mustNew(t, breaker.Config{ConsecutiveFailures: 2})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				var err error
				if g == 0 && i%2 == 0 {
					err = errBoom // one goroutine fails every other call
				}
				_ = b.Do(context.Background(), func(context.Context) error { return err })
			}
		})
	}
	wg.Wait()
	s := b.Stats()
	if s.Successes+s.Failures+s.Rejected != 16000 {
		t.Fatalf("stats %+v: calls lost", s)
	}
}
