package redislimit_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/strata-project/strata/breaker"
	"github.com/strata-project/strata/engines"
	"github.com/strata-project/strata/internal/testenv"
	"github.com/strata-project/strata/ratelimit"
	"github.com/strata-project/strata/ratelimit/redislimit"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func newGCRA(t *testing.T, addr string, cfg redislimit.Config) *redislimit.GCRA {
	t.Helper()
	cfg.Addrs = []string{addr}
	if cfg.Timeout == 0 {
		cfg.Timeout = 2 * time.Second // generous: the machine may be busy
	}
	g, err := redislimit.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

func allow(t *testing.T, l ratelimit.Limiter, key string, n int) ratelimit.Decision {
	t.Helper()
	d, err := l.AllowN(context.Background(), key, n)
	if err != nil {
		t.Fatalf("AllowN(%q, %d): %v", key, n, err)
	}
	return d
}

// A rate of 3 per hour: one token every 20 minutes, so the seconds a test
// takes cannot change an outcome.
var slow = ratelimit.Rate{Limit: 3, Period: time.Hour}

func TestExactSequence(t *testing.T) {
	r := testenv.SharedRedis(t)
	g := newGCRA(t, r.Addr(), redislimit.Config{Rate: slow, FailMode: redislimit.FailError})
	const T = 20 * time.Minute
	if p := g.Policy(); p.Quota != 3 || p.Window != 3*T {
		t.Fatalf("Policy = %+v, want 3 per 1h", p)
	}
	for i, want := range []int{2, 1, 0} {
		d := allow(t, g, "k", 1)
		if !d.Allowed || d.Remaining != want || d.Limit != 3 || d.RetryAfter != 0 {
			t.Fatalf("call %d: %+v, want allowed with %d remaining", i, d, want)
		}
		if full := time.Duration(i+1) * T; d.ResetAfter > full || d.ResetAfter < full-time.Minute {
			t.Fatalf("call %d: ResetAfter %v, want about %v", i, d.ResetAfter, full)
		}
	}
	d := allow(t, g, "k", 1)
	if d.Allowed || d.Remaining != 0 || d.RetryAfter > T || d.RetryAfter < T-time.Minute {
		t.Fatalf("4th call: %+v, want denied, retry after about %v", d, T)
	}
	// A cost-0 query counts nothing; a cost of 2 waits for two tokens.
	if d := allow(t, g, "k", 0); !d.Allowed || d.Remaining != 0 {
		t.Fatalf("query: %+v", d)
	}
	if d := allow(t, g, "k", 2); d.Allowed || d.RetryAfter < 2*T-time.Minute || d.RetryAfter > 2*T {
		t.Fatalf("cost 2: %+v", d)
	}
	// Other keys are independent; a cost of the whole burst passes once.
	if d := allow(t, g, "other", 3); !d.Allowed || d.Remaining != 0 {
		t.Fatalf("other key, cost 3: %+v", d)
	}
	if _, err := g.AllowN(context.Background(), "k", 4); !errors.Is(err, ratelimit.ErrCostExceedsLimit) {
		t.Fatalf("cost 4: %v, want ErrCostExceedsLimit", err)
	}
	if _, err := g.AllowN(context.Background(), "k", -1); !errors.Is(err, ratelimit.ErrInvalidCost) {
		t.Fatalf("cost -1: %v, want ErrInvalidCost", err)
	}
}

func TestKeysHaveTTL(t *testing.T) {
	r := testenv.SharedRedis(t)
	g := newGCRA(t, r.Addr(), redislimit.Config{Rate: slow, FailMode: redislimit.FailError})
	d := allow(t, g, "ttl", 2)
	pttl, err := r.Do(context.Background(), "PTTL", g.Key("ttl"))
	if err != nil {
		t.Fatal(err)
	}
	ms, _ := pttl.(int64)
	// The key lives until the bucket is full again, no longer.
	if ms <= 0 || time.Duration(ms)*time.Millisecond > d.ResetAfter+time.Millisecond || time.Duration(ms)*time.Millisecond < d.ResetAfter-time.Minute {
		t.Fatalf("PTTL = %dms, ResetAfter %v", ms, d.ResetAfter)
	}
	// A denial and a query write nothing: still one key.
	allow(t, g, "ttl", 2)
	allow(t, g, "none", 0)
	if n, err := r.Do(context.Background(), "DBSIZE"); err != nil || n.(int64) != 1 {
		t.Fatalf("DBSIZE = %v, %v, want 1", n, err)
	}
}

func TestParallelClientsNeverExceed(t *testing.T) {
	r := testenv.SharedRedis(t)
	rate := ratelimit.Rate{Limit: 100, Period: time.Hour} // one token per 36s
	var clients []*redislimit.GCRA
	for range 4 { // four clients, as four processes would have
		clients = append(clients, newGCRA(t, r.Addr(), redislimit.Config{Rate: rate, FailMode: redislimit.FailError}))
	}
	start := time.Now()
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				d, err := clients[i%4].AllowN(context.Background(), "hot", 1)
				if err != nil {
					t.Error(err)
					return
				}
				if d.Allowed {
					allowed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	limit := 100 + int64(time.Since(start)/(36*time.Second))
	if got := allowed.Load(); got < 100 || got > limit {
		t.Fatalf("allowed %d of 640, want 100..%d", got, limit)
	}
}

func TestCluster(t *testing.T) {
	c := testenv.SharedRedisCluster(t)
	g := newGCRA(t, c.Addrs()[0], redislimit.Config{Rate: slow, Burst: 2, FailMode: redislimit.FailError})
	ctx := context.Background()
	masters := map[int]bool{}
	const keys = 60
	var wg sync.WaitGroup
	var allowed [keys]atomic.Int64
	for i := range keys {
		key := fmt.Sprint("user-", i)
		m, err := c.MasterOf(ctx, 0, g.Key(key))
		if err != nil {
			t.Fatal(err)
		}
		masters[m] = true
		for range 3 { // concurrent calls: batches mix slots
			wg.Add(1)
			go func() {
				defer wg.Done()
				d, err := g.AllowN(ctx, key, 1)
				if err != nil {
					t.Error(err)
				} else if d.Allowed {
					allowed[i].Add(1)
				}
			}()
		}
	}
	wg.Wait()
	if len(masters) < 2 {
		t.Fatalf("keys on %d masters, want several", len(masters))
	}
	for i := range allowed {
		if got := allowed[i].Load(); got != 2 {
			t.Fatalf("key %d: %d allowed of 3, want 2", i, got)
		}
	}
}

// TestSkewedClocks: two processes whose clocks disagree by two hours share
// one limit, because only the Redis server's TIME enters a decision.
func TestSkewedClocks(t *testing.T) {
	r := testenv.SharedRedis(t)
	rate := ratelimit.Rate{Limit: 10, Period: time.Hour}
	var ls []ratelimit.Limiter
	for _, skew := range []time.Duration{-time.Hour, time.Hour} {
		g := newGCRA(t, r.Addr(), redislimit.Config{Rate: rate, FailMode: redislimit.FailError})
		h, err := redislimit.NewHybrid(g, redislimit.HybridConfig{Batch: 2, LeaseTTL: time.Hour,
			Now: func() time.Time { return time.Now().Add(skew) }})
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, g, h)
	}
	total := 0
	for i := range 40 {
		key := []string{"plain", "hybrid"}[i%4/2]
		if allow(t, ls[i%4], key, 1).Allowed {
			total++
		}
	}
	if total != 20 {
		t.Fatalf("allowed %d over two keys, want 10 each", total)
	}
}

// TestHybridLeaseExpires: tokens leased and not spent are dropped when the
// lease ends; they are not spent later.
func TestHybridLeaseExpires(t *testing.T) {
	r := testenv.SharedRedis(t)
	g := newGCRA(t, r.Addr(), redislimit.Config{Rate: ratelimit.Rate{Limit: 10, Period: time.Hour}, FailMode: redislimit.FailError})
	var offset atomic.Int64
	h, err := redislimit.NewHybrid(g, redislimit.HybridConfig{Batch: 5, LeaseTTL: time.Minute,
		Now: func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }})
	if err != nil {
		t.Fatal(err)
	}
	if d := allow(t, h, "k", 1); !d.Allowed || d.Remaining != 4 {
		t.Fatalf("first: %+v, want allowed from a lease of 5", d)
	}
	// Redis holds 5 of 10: a plain caller sees it.
	if d := allow(t, g, "k", 0); d.Remaining != 5 {
		t.Fatalf("Redis remaining %d, want 5", d.Remaining)
	}
	offset.Store(int64(2 * time.Minute)) // the lease has ended
	got := 0
	for range 10 {
		if allow(t, h, "k", 1).Allowed {
			got++
		}
	}
	if got != 5 { // a fresh lease of the last 5; the 4 unspent ones are gone
		t.Fatalf("after the lease ended: %d allowed, want 5", got)
	}
}

// TestHybridBound: N processes on one key at a high rate; the total allowed
// stays within rate×W + burst + Bound(N).
func TestHybridBound(t *testing.T) {
	r := testenv.SharedRedis(t)
	const N = 4
	rate := ratelimit.PerSecond(2000)
	var hs []*redislimit.Hybrid
	for range N {
		g := newGCRA(t, r.Addr(), redislimit.Config{Rate: rate, Burst: 100, FailMode: redislimit.FailError})
		h, err := redislimit.NewHybrid(g, redislimit.HybridConfig{Batch: 20, LeaseTTL: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		hs = append(hs, h)
	}
	var allowed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	stopAt := start.Add(300 * time.Millisecond)
	for i := range 4 * N {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stopAt) {
				d, err := hs[i%N].AllowN(context.Background(), "hot", 1)
				if err != nil {
					t.Error(err)
					return
				}
				if d.Allowed {
					allowed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	w := time.Since(start) // every server decision fell inside [start, start+w]
	limit := int64(w.Seconds()*2000) + 100 + int64(hs[0].Bound(N))
	if got := allowed.Load(); got > limit || got <= 100 {
		t.Fatalf("allowed %d in %v, want more than the burst and at most %d", got, w, limit)
	}
	t.Logf("allowed %d in %v (bound %d)", allowed.Load(), w, limit)
}

// TestRedisDown kills or pauses Redis under each FailMode: decisions follow
// the mode within the timeout, the breaker opens, and it closes once Redis
// is back.
func TestRedisDown(t *testing.T) {
	modes := []struct {
		mode  redislimit.FailMode
		check func(d ratelimit.Decision, err error) error
	}{
		{redislimit.FailOpen, func(d ratelimit.Decision, err error) error {
			if err != nil || !d.Allowed {
				return fmt.Errorf("%+v, %v: want allowed", d, err)
			}
			return nil
		}},
		{redislimit.FailClosed, func(d ratelimit.Decision, err error) error {
			if err != nil || d.Allowed || d.RetryAfter != time.Second {
				return fmt.Errorf("%+v, %v: want denied, retry after 1s", d, err)
			}
			return nil
		}},
		{redislimit.FailError, func(d ratelimit.Decision, err error) error {
			if !errors.Is(err, redislimit.ErrUnavailable) {
				return fmt.Errorf("%+v, %v: want ErrUnavailable", d, err)
			}
			return nil
		}},
		{redislimit.FailLocal, func(d ratelimit.Decision, err error) error {
			if err != nil || d.Limit != 3 {
				return fmt.Errorf("%+v, %v: want the local limiter's decision", d, err)
			}
			return nil
		}},
	}
	for _, fault := range []string{"kill", "pause"} {
		for _, m := range modes {
			t.Run(fault+"/"+m.mode.String(), func(t *testing.T) {
				r := testenv.Redis(t, engines.RedisOptions{})
				br, err := breaker.New(breaker.Config{ConsecutiveFailures: 3, OpenDuration: 200 * time.Millisecond})
				if err != nil {
					t.Fatal(err)
				}
				const timeout = 100 * time.Millisecond
				g := newGCRA(t, r.Addr(), redislimit.Config{Rate: slow, FailMode: m.mode, Breaker: br, Timeout: timeout})
				if d := allow(t, g, "k", 1); !d.Allowed || d.Remaining != 2 {
					t.Fatalf("before the fault: %+v", d)
				}
				if fault == "kill" {
					if err := r.Kill(); err != nil {
						t.Fatal(err)
					}
				} else {
					if err := r.Pause(); err != nil {
						t.Fatal(err)
					}
				}
				ctx := context.Background()
				for i := 0; br.State() != breaker.Open; i++ {
					if i == 10 {
						t.Fatalf("breaker %v after 10 failed calls", br.State())
					}
					start := time.Now()
					d, err := g.AllowN(ctx, "k", 1)
					if el := time.Since(start); el > timeout+time.Second {
						t.Fatalf("call took %v, timeout %v", el, timeout)
					}
					if err := m.check(d, err); err != nil {
						t.Fatalf("Redis down, call %d: %v", i, err)
					}
				}
				// Open: decided at once without asking Redis.
				start := time.Now()
				d, err := g.AllowN(ctx, "k", 1)
				if el := time.Since(start); el > timeout/2 {
					t.Fatalf("call with the breaker open took %v", el)
				}
				if err := m.check(d, err); err != nil {
					t.Fatalf("breaker open: %v", err)
				}
				if fault == "kill" {
					rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
					defer cancel()
					if err := r.Restart(rctx); err != nil {
						t.Fatal(err)
					}
				} else if err := r.Resume(); err != nil {
					t.Fatal(err)
				}
				// Once Redis is back, the breaker closes after its open period
				// and decisions come from Redis again (after a kill the state
				// was lost: a fresh key has 2 left after one event).
				deadline := time.Now().Add(30 * time.Second)
				for br.State() != breaker.Closed {
					if time.Now().After(deadline) {
						t.Fatalf("breaker still %v 30s after Redis came back", br.State())
					}
					allow2(g, "probe")
					time.Sleep(20 * time.Millisecond) // polling for the open period to pass
				}
				if d := allow(t, g, "fresh", 1); !d.Allowed || d.Remaining != 2 {
					t.Fatalf("after recovery: %+v", d)
				}
			})
		}
	}
}

func allow2(l ratelimit.Limiter, key string) { _, _ = l.AllowN(context.Background(), key, 1) }
