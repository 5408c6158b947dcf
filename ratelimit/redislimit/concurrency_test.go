package redislimit_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/strata-project/strata/engines"
	"github.com/strata-project/strata/internal/testenv"
	"github.com/strata-project/strata/ratelimit"
	"github.com/strata-project/strata/ratelimit/redislimit"
)

func newConc(t *testing.T, addr string, cfg redislimit.Config, cc redislimit.ConcurrencyConfig) *redislimit.Concurrency {
	t.Helper()
	cfg.Addrs = []string{addr}
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Second
	}
	l, err := redislimit.NewConcurrency(cfg, cc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// held returns the units Redis holds for key (members of its set).
func held(t *testing.T, l *redislimit.Concurrency, key string) int64 {
	t.Helper()
	c := l.Client()
	n, err := do(t, c, c.B().Zcard().Key(l.Key(key)).Build()).AsInt64()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func release(t *testing.T, l *redislimit.Concurrency, key string, n int) {
	t.Helper()
	if err := l.ReleaseContext(context.Background(), key, n); err != nil {
		t.Fatalf("ReleaseContext(%q, %d): %v", key, n, err)
	}
}

func TestConcurrencySequence(t *testing.T) {
	backends(t, func(t *testing.T, addr string) {
		a := newConc(t, addr, redislimit.Config{FailMode: redislimit.FailError}, redislimit.ConcurrencyConfig{Max: 3})
		b := newConc(t, addr, redislimit.Config{FailMode: redislimit.FailError}, redislimit.ConcurrencyConfig{Max: 3})
		if p := a.Policy(); p.Quota != 3 || p.Window != 0 {
			t.Fatalf("Policy = %+v", p)
		}
		ctx := context.Background()
		check := func(i int, l *redislimit.Concurrency, n int, want ratelimit.Decision) {
			t.Helper()
			got, err := l.AllowN(ctx, "k", n)
			if err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
			if got != want {
				t.Fatalf("step %d (n=%d):\n got %+v\nwant %+v", i, n, got, want)
			}
		}
		check(0, a, 0, ratelimit.Decision{Allowed: true, Limit: 3, Remaining: 3})
		if exists(t, a, "k") {
			t.Fatal("a query wrote the key")
		}
		check(1, a, 2, ratelimit.Decision{Allowed: true, Limit: 3, Remaining: 1})
		check(2, b, 2, ratelimit.Decision{Limit: 3, Remaining: 1})
		check(3, b, 1, ratelimit.Decision{Allowed: true, Limit: 3, Remaining: 0})
		check(4, a, 1, ratelimit.Decision{Limit: 3, Remaining: 0})
		check(5, a, 0, ratelimit.Decision{Allowed: true, Limit: 3, Remaining: 0})
		// b gives back its unit; a process gives back only its own units,
		// so a second release by b changes nothing.
		release(t, b, "k", 1)
		release(t, b, "k", 1)
		if h := held(t, a, "k"); h != 2 {
			t.Fatalf("Redis holds %d units, want a's 2", h)
		}
		check(6, b, 1, ratelimit.Decision{Allowed: true, Limit: 3, Remaining: 0})
		release(t, a, "k", 1)
		check(7, a, 1, ratelimit.Decision{Allowed: true, Limit: 3, Remaining: 0})
		release(t, a, "k", 2)
		release(t, b, "k", 1)
		if exists(t, a, "k") {
			t.Fatal("the key outlives its last unit")
		}
		if _, err := a.AllowN(ctx, "k", 4); !errors.Is(err, ratelimit.ErrCostExceedsLimit) {
			t.Fatalf("cost 4: %v, want ErrCostExceedsLimit", err)
		}
		if _, err := a.AllowN(ctx, "k", -1); !errors.Is(err, ratelimit.ErrInvalidCost) {
			t.Fatalf("cost -1: %v, want ErrInvalidCost", err)
		}
	})
}

// TestConcurrencyParallelNeverExceed: 64 callers in four processes hold
// units of one key while they work; the units in flight never exceed Max,
// every unit is given back, and the key is gone at the end.
func TestConcurrencyParallelNeverExceed(t *testing.T) {
	backends(t, func(t *testing.T, addr string) {
		const max = 5
		var ls []*redislimit.Concurrency
		for range 4 {
			ls = append(ls, newConc(t, addr, redislimit.Config{FailMode: redislimit.FailError}, redislimit.ConcurrencyConfig{Max: max}))
		}
		// Nobody gives back: exactly Max units are granted, in all.
		var units atomic.Int64
		var wg sync.WaitGroup
		for i := range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range 3 {
					n := 1 + (i+j)%2
					d, err := ls[i%4].AllowN(context.Background(), "full", n)
					if err != nil {
						t.Error(err)
						return
					}
					if d.Allowed {
						units.Add(int64(n))
					}
				}
			}()
		}
		wg.Wait()
		// Costs 1 and 2 fill the key, or leave one unit only a cost 1 fits.
		if got := units.Load(); got < max-1 || got > max {
			t.Fatalf("%d units granted without releases, want %d..%d", got, max-1, max)
		}
		if h := held(t, ls[0], "full"); h != units.Load() {
			t.Fatalf("Redis holds %d units, %d granted", h, units.Load())
		}
		// Callers give back as they finish: the units in flight never
		// exceed Max.
		var inFlight, peak, granted atomic.Int64
		for i := range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				l := ls[i%4]
				for j := range 20 {
					n := 1 + (i+j)%2
					d, err := l.AllowN(context.Background(), "hot", n)
					if err != nil {
						t.Error(err)
						return
					}
					if !d.Allowed {
						continue
					}
					granted.Add(1)
					now := inFlight.Add(int64(n))
					for p := peak.Load(); now > p && !peak.CompareAndSwap(p, now); p = peak.Load() {
					}
					inFlight.Add(-int64(n)) // the work is done: units given back after
					if err := l.ReleaseContext(context.Background(), "hot", n); err != nil {
						t.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		if p := peak.Load(); p > max || p < 1 {
			t.Fatalf("peak in flight %d, want 1..%d", p, max)
		}
		if granted.Load() == 0 {
			t.Fatal("nothing granted")
		}
		if exists(t, ls[0], "hot") {
			t.Fatalf("%d units still held after every release", held(t, ls[0], "hot"))
		}
	})
}

// TestConcurrencyKeysHaveTTL: a key holding units expires with its last
// unit, at most HoldTimeout after the latest acquisition.
func TestConcurrencyKeysHaveTTL(t *testing.T) {
	backends(t, func(t *testing.T, addr string) {
		l := newConc(t, addr, redislimit.Config{FailMode: redislimit.FailError}, redislimit.ConcurrencyConfig{Max: 3, HoldTimeout: time.Hour})
		for _, key := range []string{"a", "b", "c"} {
			allow(t, l, key, 2)
			if p := pttl(t, l, key); !about(p, time.Hour) {
				t.Fatalf("%s: PTTL %v, want about 1h", key, p)
			}
			allow(t, l, key, 1)
			if p := pttl(t, l, key); !about(p, time.Hour) {
				t.Fatalf("%s after a second unit: PTTL %v, want about 1h", key, p)
			}
		}
	})
}

// TestConcurrencyHoldTimeout: a unit never given back is reclaimed after
// HoldTimeout on the server's clock; the late release of the work that
// held it does not give back the unit of the work that came after.
func TestConcurrencyHoldTimeout(t *testing.T) {
	r := testenv.SharedRedis(t)
	const hold = 300 * time.Millisecond
	l := newConc(t, r.Addr(), redislimit.Config{FailMode: redislimit.FailError}, redislimit.ConcurrencyConfig{Max: 1, HoldTimeout: hold})
	start := time.Now()
	if d := allow(t, l, "k", 1); !d.Allowed {
		t.Fatalf("first: %+v", d)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !allow(t, l, "k", 1).Allowed { // the first unit is never given back
		if time.Now().After(deadline) {
			t.Fatal("unit not reclaimed 10s later")
		}
	}
	if el := time.Since(start); el < hold {
		t.Fatalf("reclaimed after %v, hold timeout %v", el, hold)
	}
	// The first work ends late and gives its unit back: the second work's
	// unit stays held.
	release(t, l, "k", 1)
	if d := allow(t, l, "k", 1); d.Allowed {
		t.Fatalf("after the late release: %+v, want denied (the second unit is held)", d)
	}
	release(t, l, "k", 1)
	if d := allow(t, l, "k", 1); !d.Allowed {
		t.Fatalf("after the second release: %+v", d)
	}
}

// TestConcurrencySkewedClocks: processes whose clocks disagree by hours
// share one limit, and their units are reclaimed on the server's clock.
func TestConcurrencySkewedClocks(t *testing.T) {
	r := testenv.SharedRedis(t)
	var ls []*redislimit.Concurrency
	for _, skew := range []time.Duration{-3 * time.Hour, 3 * time.Hour} {
		ls = append(ls, newConc(t, r.Addr(), redislimit.Config{FailMode: redislimit.FailError},
			redislimit.ConcurrencyConfig{Max: 2, HoldTimeout: time.Hour, Now: func() time.Time { return time.Now().Add(skew) }}))
	}
	got := 0
	for i := range 6 {
		if allow(t, ls[i%2], "k", 1).Allowed {
			got++
		}
	}
	if got != 2 {
		t.Fatalf("%d granted, want 2", got)
	}
	if p := pttl(t, ls[0], "k"); !about(p, time.Hour) {
		t.Fatalf("PTTL %v, want about 1h", p)
	}
	release(t, ls[1], "k", 1)
	if d := allow(t, ls[0], "k", 1); !d.Allowed || d.Remaining != 0 {
		t.Fatalf("after a release: %+v", d)
	}
}

// TestConcurrencyFailLocal: units granted by the local limiter while Redis
// is down are given back to it, those granted by Redis to Redis.
func TestConcurrencyFailLocal(t *testing.T) {
	r := testenv.Redis(t, engines.RedisOptions{})
	var errs atomic.Int64
	l := newConc(t, r.Addr(), redislimit.Config{Timeout: 200 * time.Millisecond, OnError: func(error) { errs.Add(1) }},
		redislimit.ConcurrencyConfig{Max: 1})
	if d := allow(t, l, "k", 1); !d.Allowed {
		t.Fatalf("from Redis: %+v", d)
	}
	if err := r.Kill(); err != nil {
		t.Fatal(err)
	}
	if d := allow(t, l, "k", 1); !d.Allowed {
		t.Fatalf("from the local limiter: %+v", d)
	}
	if d := allow(t, l, "k", 1); d.Allowed {
		t.Fatalf("local limiter at its max: %+v", d)
	}
	// The oldest unit is Redis's: giving it back fails (Redis is down) and
	// leaves the local unit held.
	if err := l.ReleaseContext(context.Background(), "k", 1); !errors.Is(err, redislimit.ErrUnavailable) {
		t.Fatalf("release to a dead Redis: %v, want ErrUnavailable", err)
	}
	if d := allow(t, l, "k", 1); d.Allowed {
		t.Fatalf("after releasing the Redis unit: %+v, want the local unit still held", d)
	}
	release(t, l, "k", 1) // the local unit
	if d := allow(t, l, "k", 1); !d.Allowed {
		t.Fatalf("after releasing the local unit: %+v", d)
	}
	if errs.Load() == 0 {
		t.Fatal("OnError never called")
	}
}

func TestConcurrencyConfigErrors(t *testing.T) {
	for _, cc := range []redislimit.ConcurrencyConfig{{}, {Max: -1}, {Max: 1, HoldTimeout: -time.Second}} {
		if _, err := redislimit.NewConcurrency(redislimit.Config{Addrs: []string{"127.0.0.1:1"}}, cc); !errors.Is(err, redislimit.ErrConfig) {
			t.Errorf("%+v: %v, want ErrConfig", cc, err)
		}
	}
	gcra, err := ratelimit.NewGCRA(ratelimit.GCRAConfig{Rate: ratelimit.PerSecond(1)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := redislimit.NewConcurrency(redislimit.Config{Addrs: []string{"127.0.0.1:1"}, Local: gcra}, redislimit.ConcurrencyConfig{Max: 1}); !errors.Is(err, redislimit.ErrConfig) {
		t.Errorf("a Local without Release: %v, want ErrConfig", err)
	}
}
