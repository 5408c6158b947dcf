package ratelimit_test

import (
	"context"
	"errors"
	"math/rand/v2"

	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/strata-project/strata/ratelimit"
)

// t0 is the named origin of the instants of these tests.
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

const ms = time.Millisecond

// atLimiter is the in-memory form every limiter of the package has.
type atLimiter interface {
	ratelimit.Limiter
	AllowNAt(now time.Time, key string, n int) (ratelimit.Decision, error)
}

// step is one call of an exact sequence and its expected decision.
type step struct {
	at   time.Duration
	key  string
	n    int
	want ratelimit.Decision
}

func runSteps(t *testing.T, l atLimiter, steps []step) {
	t.Helper()
	for i, s := range steps {
		key := s.key
		if key == "" {
			key = "k"
		}
		got, err := l.AllowNAt(at(s.at), key, s.n)
		if err != nil {
			t.Fatalf("step %d (t=%v n=%d): %v", i, s.at, s.n, err)
		}
		if got != s.want {
			t.Fatalf("step %d (t=%v key=%s n=%d):\n got %+v\nwant %+v", i, s.at, key, s.n, got, s.want)
		}
	}
}

func allow(remaining int, reset time.Duration, limit int) ratelimit.Decision {
	return ratelimit.Decision{Allowed: true, Limit: limit, Remaining: remaining, ResetAfter: reset}
}

func deny(remaining int, retry, reset time.Duration, limit int) ratelimit.Decision {
	return ratelimit.Decision{Limit: limit, Remaining: remaining, RetryAfter: retry, ResetAfter: reset}
}

func TestGCRASequence(t *testing.T) {
	// 10 per second (T = 100ms), burst 3 (tau = 300ms).
	l, err := ratelimit.NewGCRA(ratelimit.GCRAConfig{Rate: ratelimit.PerSecond(10), Burst: 3})
	if err != nil {
		t.Fatal(err)
	}
	runSteps(t, l, []step{
		{at: 0, n: 1, want: allow(2, 100*ms, 3)},
		{at: 0, n: 1, want: allow(1, 200*ms, 3)},
		{at: 0, n: 1, want: allow(0, 300*ms, 3)},
		{at: 0, n: 1, want: deny(0, 100*ms, 300*ms, 3)},
		{at: 50 * ms, n: 1, want: deny(0, 50*ms, 250*ms, 3)},
		{at: 100 * ms, n: 1, want: allow(0, 300*ms, 3)},
		{at: 100 * ms, n: 0, want: allow(0, 300*ms, 3)}, // a query counts nothing
		{at: 350 * ms, n: 2, want: allow(0, 250*ms, 3)}, // TAT 400ms -> 600ms
		{at: 350 * ms, n: 1, want: deny(0, 50*ms, 250*ms, 3)},
		{at: 500 * ms, n: 1, want: allow(1, 200*ms, 3)}, // TAT 600ms -> 700ms
		{at: 900 * ms, n: 1, want: allow(2, 100*ms, 3)}, // TAT 900ms -> 1s
		{at: 10 * time.Second, n: 3, want: allow(0, 300*ms, 3)},
		{at: 0, key: "other", n: 3, want: allow(0, 300*ms, 3)}, // keys are independent
	})
	if p := l.Policy(); p.Quota != 3 || p.Window != 300*ms {
		t.Fatalf("Policy() = %+v, want 3 per 300ms", p)
	}
}

func TestFixedWindowSequenceAndEdgeBurst(t *testing.T) {
	l, err := ratelimit.NewFixedWindow(ratelimit.WindowConfig{Limit: 3, Window: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	runSteps(t, l, []step{
		{at: 0, n: 1, want: allow(2, time.Second, 3)},               // window [0s, 1s)
		{at: 900 * ms, n: 2, want: allow(0, 100*ms, 3)},             // full at the end
		{at: 999 * ms, n: 1, want: deny(0, ms, ms, 3)},              // denied
		{at: time.Second, n: 3, want: allow(0, time.Second, 3)},     // new window [1s, 2s)
		{at: 1500 * ms, n: 1, want: deny(0, 500*ms, 500*ms, 3)},     //
		{at: 4900 * ms, n: 0, want: allow(3, 0, 3)},                 // a query opens no window
		{at: 5 * time.Second, n: 1, want: allow(2, 1000*ms, 3)},     // window [5s, 6s)
		{at: 5900 * ms, n: 2, want: allow(0, 100*ms, 3)},            // 3 at the end ...
		{at: 6 * time.Second, n: 3, want: allow(0, time.Second, 3)}, // ... 3 at the start:
		{at: 6 * time.Second, n: 1, want: deny(0, time.Second, time.Second, 3)},
	})
	// The documented 2x edge burst: 5 events within 100ms (5.9s to 6.0s)
	// against a limit of 3 per second. Count it from fresh instants.
	l2, _ := ratelimit.NewFixedWindow(ratelimit.WindowConfig{Limit: 3, Window: time.Second})
	allowed := 0
	for _, d := range []time.Duration{0, 999 * ms, 999 * ms, 1000 * ms, 1000 * ms, 1000 * ms, 1001 * ms} {
		if dec, _ := l2.AllowNAt(at(d), "edge", 1); dec.Allowed {
			allowed++
		}
	}
	if allowed != 6 {
		t.Fatalf("%d allowed within 2ms around the edge, want 6 (2x the limit of 3)", allowed)
	}
}

func TestSlidingWindowSequence(t *testing.T) {
	l, err := ratelimit.NewSlidingWindow(ratelimit.WindowConfig{Limit: 4, Window: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	runSteps(t, l, []step{
		{at: 0, n: 4, want: allow(0, 2*time.Second, 4)},         // window [0,1s): curr=4
		{at: 500 * ms, n: 1, want: deny(0, 750*ms, 1500*ms, 4)}, // 4*0.75 + 1 <= 4 at 1.25s
		// At 1.25s: prev=4, weight 0.75 -> estimate 3, room for 1.
		{at: 1250 * ms, n: 1, want: allow(0, 1750*ms, 4)},
		// At 1.5s: estimate 4*0.5 + 1 = 3: room for 1, not for 2.
		{at: 1500 * ms, n: 2, want: deny(1, 250*ms, 1500*ms, 4)},
		{at: 1750 * ms, n: 2, want: allow(0, 1250*ms, 4)}, // 4*0.25 + 1 + 2 = 4
		// At 2.0s: prev=3, curr=0: estimate 3; room for 2 when 3*(1-e) <= 2,
		// at e = 1/3 s (rounded up to the nanosecond).
		{at: 2 * time.Second, n: 2, want: deny(1, 333333334, time.Second, 4)},
		{at: 2500 * ms, n: 2, want: allow(0, 1500*ms, 4)}, // 3*0.5=1.5 + 2 = 3.5
		{at: 10 * time.Second, n: 4, want: allow(0, 2*time.Second, 4)},
		{at: 13 * time.Second, n: 0, want: allow(4, 0, 4)}, // a query anchors nothing
		{at: 13500 * ms, n: 1, want: allow(3, 2*time.Second, 4)},
	})
}

func TestSlidingLogSequence(t *testing.T) {
	l, err := ratelimit.NewSlidingLog(ratelimit.WindowConfig{Limit: 3, Window: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	runSteps(t, l, []step{
		{at: 0, n: 1, want: allow(2, time.Second, 3)},
		{at: 200 * ms, n: 1, want: allow(1, time.Second, 3)},
		{at: 400 * ms, n: 1, want: allow(0, time.Second, 3)},
		{at: 600 * ms, n: 1, want: deny(0, 400*ms, 800*ms, 3)},  // the 0s event leaves at 1s
		{at: 600 * ms, n: 2, want: deny(0, 600*ms, 800*ms, 3)},  // the 0.2s one too
		{at: 1000 * ms, n: 1, want: allow(0, time.Second, 3)},   // 0s left the window
		{at: 1300 * ms, n: 2, want: deny(1, 100*ms, 700*ms, 3)}, // log 0.4s, 1.0s: wait for 0.4s to leave
		{at: 1400 * ms, n: 2, want: allow(0, time.Second, 3)},
		{at: 5 * time.Second, n: 3, want: allow(0, time.Second, 3)},
	})
}

func TestConcurrencySequence(t *testing.T) {
	l, err := ratelimit.NewConcurrency(ratelimit.ConcurrencyConfig{Max: 2})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	check := func(n int, want ratelimit.Decision) {
		t.Helper()
		got, err := l.AllowN(ctx, "k", n)
		if err != nil || got != want {
			t.Fatalf("AllowN(%d) = %+v, %v; want %+v", n, got, err, want)
		}
	}
	check(1, allow(1, 0, 2))
	check(1, allow(0, 0, 2))
	check(1, deny(0, 0, 0, 2))
	l.Release("k", 1)
	check(1, allow(0, 0, 2))
	l.Release("k", 2)
	check(2, allow(0, 0, 2))
	l.Release("k", 5) // over-release stops at zero
	check(0, allow(2, 0, 2))
	if l.Purge() != 0 {
		t.Fatalf("a key holding nothing survived Purge")
	}
	if p := l.Policy(); p.Quota != 2 || p.Window != 0 {
		t.Fatalf("Policy() = %+v", p)
	}
}

func allLimiters(t *testing.T, limit int) map[string]atLimiter {
	t.Helper()
	g, err1 := ratelimit.NewGCRA(ratelimit.GCRAConfig{Rate: ratelimit.PerSecond(limit), Burst: limit})
	f, err2 := ratelimit.NewFixedWindow(ratelimit.WindowConfig{Limit: limit, Window: time.Second})
	s, err3 := ratelimit.NewSlidingWindow(ratelimit.WindowConfig{Limit: limit, Window: time.Second})
	lg, err4 := ratelimit.NewSlidingLog(ratelimit.WindowConfig{Limit: limit, Window: time.Second})
	c, err5 := ratelimit.NewConcurrency(ratelimit.ConcurrencyConfig{Max: limit})
	if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
		t.Fatal(err)
	}
	return map[string]atLimiter{"gcra": g, "fixed": f, "sliding": s, "log": lg, "concurrency": c}
}

func TestInvalidInput(t *testing.T) {
	for name, l := range allLimiters(t, 5) {
		t.Run(name, func(t *testing.T) {
			if _, err := l.AllowNAt(t0, "k", -1); !errors.Is(err, ratelimit.ErrInvalidCost) {
				t.Errorf("n=-1: err = %v, want ErrInvalidCost", err)
			}
			d, err := l.AllowNAt(t0, "k", 6)
			if !errors.Is(err, ratelimit.ErrCostExceedsLimit) || d.Allowed || d.Limit != 5 {
				t.Errorf("n=6 > limit 5: %+v, %v; want denied with ErrCostExceedsLimit", d, err)
			}
			if d, err := l.AllowNAt(t0, "k", 5); err != nil || !d.Allowed {
				t.Errorf("n=limit: %+v, %v; want allowed", d, err)
			}
			if d, _ := l.AllowNAt(t0, "k", 1); d.Allowed || !errors.Is(d.Err(), ratelimit.ErrLimited) {
				t.Errorf("over the limit: %+v, Err()=%v; want denied, ErrLimited", d, d.Err())
			}
		})
	}
	for _, err := range []error{
		func() error { _, err := ratelimit.NewGCRA(ratelimit.GCRAConfig{}); return err }(),
		func() error {
			_, err := ratelimit.NewGCRA(ratelimit.GCRAConfig{Rate: ratelimit.Rate{Limit: 1}})
			return err
		}(),
		func() error {
			_, err := ratelimit.NewGCRA(ratelimit.GCRAConfig{Rate: ratelimit.PerSecond(1), Burst: -1})
			return err
		}(),
		func() error { _, err := ratelimit.NewFixedWindow(ratelimit.WindowConfig{Limit: 1}); return err }(),
		func() error { _, err := ratelimit.NewSlidingWindow(ratelimit.WindowConfig{Window: 1}); return err }(),
		func() error {
			_, err := ratelimit.NewSlidingLog(ratelimit.WindowConfig{Limit: -1, Window: 1})
			return err
		}(),
		func() error { _, err := ratelimit.NewConcurrency(ratelimit.ConcurrencyConfig{}); return err }(),
	} {
		if !errors.Is(err, ratelimit.ErrInvalidConfig) {
			t.Errorf("err = %v, want ErrInvalidConfig", err)
		}
	}
}

// TestGCRAIntervalProperty checks, over random traffic, that in any
// interval [a, b] the allowed cost is at most rate*(b-a) + burst.
func TestGCRAIntervalProperty(t *testing.T) {
	for seed := range uint64(50) {
		rng := rand.New(rand.NewPCG(seed, 42))
		rate := 1 + rng.IntN(50)
		period := time.Duration(1+rng.IntN(3)) * time.Second
		burst := 1 + rng.IntN(20)
		l, err := ratelimit.NewGCRA(ratelimit.GCRAConfig{Rate: ratelimit.Rate{Limit: rate, Period: period}, Burst: burst})
		if err != nil {
			t.Fatal(err)
		}
		type ev struct {
			t time.Duration
			n int
		}
		var granted []ev
		var now time.Duration
		for range 2000 {
			now += time.Duration(rng.Int64N(int64(3 * period / time.Duration(rate))))
			n := 1 + rng.IntN(burst)
			if d, err := l.AllowNAt(at(now), "k", n); err != nil {
				t.Fatal(err)
			} else if d.Allowed {
				granted = append(granted, ev{now, n})
			}
		}
		if len(granted) < 100 {
			t.Fatalf("seed %d: only %d granted, the test would prove little", seed, len(granted))
		}
		for i := range granted {
			sum := 0
			for j := i; j < len(granted); j++ {
				sum += granted[j].n
				span := granted[j].t - granted[i].t
				// rate*span/period + burst, compared in integers.
				if int64(sum-burst)*int64(period) > int64(rate)*int64(span) {
					t.Fatalf("seed %d: %d granted in [%v, %v] (%v), bound %d/%v * span + %d",
						seed, sum, granted[i].t, granted[j].t, span, rate, period, burst)
				}
			}
		}
	}
}

// TestParallelOneKey counts the calls allowed to parallel callers on one key
// at one instant: exactly the limit, never more.
func TestParallelOneKey(t *testing.T) {
	const limit, callers, calls = 100, 8, 50
	for name, l := range allLimiters(t, limit) {
		t.Run(name, func(t *testing.T) {
			var allowed atomic.Int64
			var wg sync.WaitGroup
			for range callers {
				wg.Go(func() {
					for range calls {
						if d, err := l.AllowNAt(t0, "hot", 1); err != nil {
							t.Error(err)
						} else if d.Allowed {
							allowed.Add(1)
						}
					}
				})
			}
			wg.Wait()
			if got := allowed.Load(); got != limit {
				t.Fatalf("%d of %d calls allowed, want exactly %d", got, callers*calls, limit)
			}
		})
	}
}

// TestGCRAAllowParallel counts the plain form's grants under parallel
// callers on one key: with a rate too slow to refill during the test, exactly
// the burst passes.
func TestGCRAAllowParallel(t *testing.T) {
	const burst, callers, calls = 100, 8, 50
	l, err := ratelimit.NewGCRA(ratelimit.GCRAConfig{Rate: ratelimit.PerHour(1), Burst: burst})
	if err != nil {
		t.Fatal(err)
	}
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for range callers {
		wg.Go(func() {
			for range calls {
				if l.Allow("hot") {
					allowed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if got := allowed.Load(); got != burst {
		t.Fatalf("%d of %d calls allowed, want exactly %d", got, callers*calls, burst)
	}
}

// TestGCRAAllowMatchesAllowN drives two limiters with the same configuration
// and clock, one through Allow and one through AllowN with cost 1, with random
// pauses: every decision is the same.
func TestGCRAAllowMatchesAllowN(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clk := ratelimit.NewCoarseClock(ms)
		defer clk.Close()
		cfg := ratelimit.GCRAConfig{Rate: ratelimit.PerSecond(50), Burst: 5, Clock: clk}
		a, err := ratelimit.NewGCRA(cfg)
		if err != nil {
			t.Fatal(err)
		}
		b, err := ratelimit.NewGCRA(cfg)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(7, 11))
		allowed := 0
		for i := range 2000 {
			key := "k" + strconv.Itoa(rng.IntN(3))
			d, err := b.AllowN(context.Background(), key, 1)
			if err != nil {
				t.Fatal(err)
			}
			if got := a.Allow(key); got != d.Allowed {
				t.Fatalf("call %d on %s: Allow %v, AllowN %+v", i, key, got, d)
			}
			if d.Allowed {
				allowed++
			}
			if rng.IntN(4) == 0 {
				time.Sleep(time.Duration(rng.IntN(40)) * ms)
				synctest.Wait()
			}
		}
		if allowed == 0 || allowed == 2000 {
			t.Fatalf("%d of 2000 allowed: the sequence must mix grants and denials", allowed)
		}
	})
}

// TestParallelConcurrencyHeld checks that the Concurrency limiter never has
// more than Max units in flight while callers acquire and release.
func TestParallelConcurrencyHeld(t *testing.T) {
	const maxInFlight = 3
	l, _ := ratelimit.NewConcurrency(ratelimit.ConcurrencyConfig{Max: maxInFlight})
	var inFlight, peak, allowed atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 2000 {
				d, _ := l.AllowN(context.Background(), "k", 1)
				if !d.Allowed {
					continue
				}
				allowed.Add(1)
				cur := inFlight.Add(1)
				for p := peak.Load(); cur > p && !peak.CompareAndSwap(p, cur); p = peak.Load() {
				}
				inFlight.Add(-1)
				l.Release("k", 1)
			}
		})
	}
	wg.Wait()
	if peak.Load() > maxInFlight || allowed.Load() == 0 {
		t.Fatalf("peak in flight %d (max %d), %d allowed", peak.Load(), maxInFlight, allowed.Load())
	}
}

// TestEvictionChangesNoDecision replays the same random traffic into two
// limiters of each kind, one of which is purged before every call, and
// requires identical decisions.
func TestEvictionChangesNoDecision(t *testing.T) {
	a, b := allLimiters(t, 4), allLimiters(t, 4)
	for name := range a {
		t.Run(name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(7, 7))
			var now time.Duration
			for i := range 3000 {
				now += time.Duration(rng.Int64N(int64(800 * ms)))
				key := strconv.Itoa(rng.IntN(5))
				n := rng.IntN(3)
				switch p := b[name].(type) {
				case interface{ Purge(time.Time) int }:
					p.Purge(at(now))
				case interface{ Purge() int }:
					p.Purge()
				}
				da, erra := a[name].AllowNAt(at(now), key, n)
				db, errb := b[name].AllowNAt(at(now), key, n)
				if da != db || (erra == nil) != (errb == nil) {
					t.Fatalf("call %d at %v: kept %+v, purged %+v", i, now, da, db)
				}
				if c, ok := a[name].(*ratelimit.Concurrency); ok && da.Allowed {
					c.Release(key, n)
					b[name].(*ratelimit.Concurrency).Release(key, n)
				}
			}
		})
	}
}

// TestManyKeysBoundedMemory cycles through ten million keys, each used once,
// and checks that the heap after GC stays bounded by the live keys, not by
// all the keys ever seen.
func TestManyKeysBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: ten million keys")
	}
	total := manyKeys // 10M; see race_test.go
	l, err := ratelimit.NewGCRA(ratelimit.GCRAConfig{Rate: ratelimit.PerSecond(1), Burst: 1})
	if err != nil {
		t.Fatal(err)
	}
	heap := func() uint64 {
		var m runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	// One new key every 10µs: with a 1s bucket and a 1s idle grace, about
	// 200,000 keys are not yet evictable at any instant.
	const step = 10 * time.Microsecond
	buf := make([]byte, 0, 32)
	var peak uint64
	for i := range total {
		buf = strconv.AppendInt(append(buf[:0], "client-"...), int64(i), 10)
		if d, _ := l.AllowNAt(at(time.Duration(i)*step), string(buf), 1); !d.Allowed {
			t.Fatalf("key %d denied on its first call", i)
		}
		if i%(total/10) == total/10-1 {
			peak = max(peak, heap())
		}
	}
	after := heap()
	keys := l.Len()
	t.Logf("%d keys: heap %d MB before, %d MB after, peak %d MB; %d keys held",
		total, before>>20, after>>20, peak>>20, keys)
	const liveBound = 2 * 200_000 * 4 // keys a shard may hold: live keys, twice, rounding
	if keys > liveBound {
		t.Errorf("%d keys held after %d, want at most %d", keys, total, liveBound)
	}
	// 10M entries would need well over 500 MB; the live set needs ~30 MB.
	if peak > before+128<<20 {
		t.Errorf("heap grew by %d MB, want < 128 MB", (peak-before)>>20)
	}
	if n := l.Purge(at(time.Duration(total)*step + 3*time.Second)); n != 0 {
		t.Errorf("Purge left %d keys after all went idle", n)
	}
}

// TestCoarseClock drives a CoarseClock on the fake clock of synctest: the
// plain form decides at the last tick, and Close stops the goroutine (the
// bubble would not end otherwise).
func TestCoarseClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clk := ratelimit.NewCoarseClock(10 * ms)
		defer clk.Close()
		l, err := ratelimit.NewGCRA(ratelimit.GCRAConfig{Rate: ratelimit.PerSecond(100), Burst: 1, Clock: clk})
		if err != nil {
			t.Fatal(err)
		}
		start := clk.Now()
		if !l.Allow("k") || l.Allow("k") {
			t.Fatal("burst 1: want allow then deny at one instant")
		}
		time.Sleep(5 * ms) // less than a tick: the clock has not moved
		synctest.Wait()
		if l.Allow("k") || clk.Now() != start {
			t.Fatalf("allowed before the clock advanced (clock at %v)", clk.Now().Sub(start))
		}
		time.Sleep(5 * ms) // the tick at 10ms
		synctest.Wait()
		if got := clk.Now().Sub(start); got != 10*ms {
			t.Fatalf("clock advanced by %v, want 10ms", got)
		}
		if !l.Allow("k") {
			t.Fatal("denied after a tick of one emission interval")
		}
		clk.Close()
		time.Sleep(50 * ms)
		if got := clk.Now().Sub(start); got != 10*ms {
			t.Fatalf("closed clock advanced to %v", got)
		}
	})
}

// TestParallelWithEviction counts the calls allowed on hot keys while
// another goroutine inserts new keys, so that shard tables are rebuilt and
// idle keys evicted under the callers' feet: every hot key still gets
// exactly its burst at one instant.
func TestParallelWithEviction(t *testing.T) {
	const burst, hot, idle, fresh, callers = 3, 500, 50_000, 200_000, 4
	l, err := ratelimit.NewGCRA(ratelimit.GCRAConfig{Rate: ratelimit.PerSecond(1), Burst: burst})
	if err != nil {
		t.Fatal(err)
	}
	for i := range idle {
		l.AllowNAt(t0, "idle-"+strconv.Itoa(i), 1) // full again (idle) after 1s
	}
	now := at(10 * time.Second)
	counts := make([]atomic.Int64, hot)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range fresh {
			l.AllowNAt(now, "new-"+strconv.Itoa(i), 1)
		}
	})
	for c := range callers {
		wg.Go(func() {
			for round := range 2 * burst {
				for i := range hot {
					k := (i*7 + c*131 + round) % hot
					if d, _ := l.AllowNAt(now, "hot-"+strconv.Itoa(k), 1); d.Allowed {
						counts[k].Add(1)
					}
				}
			}
		})
	}
	wg.Wait()
	for k := range counts {
		if got := counts[k].Load(); got != burst {
			t.Fatalf("hot key %d: %d allowed, want exactly %d", k, got, burst)
		}
	}
	// Inserting 200,000 keys rebuilds every shard's table at least once,
	// which drops every idle key and keeps every other.
	if n := l.Len(); n != hot+fresh {
		t.Fatalf("%d keys held, want %d: hot and new kept, idle evicted", n, hot+fresh)
	}
}

// TestConcurrencyWithRebuilds acquires and releases units of hot keys while
// another goroutine inserts new keys, so that tables are rebuilt (and their
// slots moved) under the callers' feet: every hot key grants exactly Max
// units, and gives every one of them back.
func TestConcurrencyWithRebuilds(t *testing.T) {
	const maxInFlight, hot, fresh, callers = 2, 300, 200_000, 4
	l, err := ratelimit.NewConcurrency(ratelimit.ConcurrencyConfig{Max: maxInFlight})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	granted := make([]atomic.Int64, hot)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range fresh {
			l.AllowN(ctx, "new-"+strconv.Itoa(i), 1)
		}
	})
	for c := range callers {
		wg.Go(func() {
			for i := range hot {
				k := (i*7 + c*131) % hot
				if d, _ := l.AllowN(ctx, "hot-"+strconv.Itoa(k), 1); d.Allowed {
					granted[k].Add(1)
				}
			}
		})
	}
	wg.Wait()
	for k := range granted {
		if got := granted[k].Load(); got != maxInFlight {
			t.Fatalf("hot key %d: %d granted of %d asked, want exactly %d", k, got, callers, maxInFlight)
		}
	}
	wg.Go(func() {
		for i := range fresh {
			l.AllowN(ctx, "newer-"+strconv.Itoa(i), 1)
		}
	})
	for range maxInFlight { // each holds one unit of every hot key
		wg.Go(func() {
			for round := range 20 {
				for i := range hot {
					k := "hot-" + strconv.Itoa(i)
					if round > 0 { // take the unit again, then give it back
						if d, _ := l.AllowN(ctx, k, 1); !d.Allowed {
							t.Errorf("%s, round %d: %+v, want the unit given back last round", k, round, d)
							return
						}
					}
					l.Release(k, 1)
				}
			}
		})
	}
	wg.Wait()
	for k := range hot {
		if d, _ := l.AllowN(ctx, "hot-"+strconv.Itoa(k), maxInFlight); !d.Allowed {
			t.Fatalf("hot key %d after every release: %+v", k, d)
		}
	}
}
