package benchmarks

import (
	"context"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"
	goredis "github.com/redis/go-redis/v9"

	"github.com/strata-project/strata/ratelimit"
	"github.com/strata-project/strata/ratelimit/redislimit"
)

// BenchmarkRateLimitRedisParallel: one rate-limit decision on a shared local Redis, 64
// concurrent callers, 1,000 keys, every call allowed (a rate of 10^9 per second).
//
//   - strata: redislimit.GCRA, a GCRA Lua script on the server's clock through rueidis;
//     concurrent decisions are gathered into one script call per round trip.
//   - redis_rate: go-redis/redis_rate v10 on go-redis v9, Allow with PerSecond(10^9).
//   - strata-hybrid: redislimit.Hybrid, which leases batches of tokens from the same
//     GCRA state in Redis and spends them in process memory.
func BenchmarkRateLimitRedisParallel(b *testing.B) {
	ctx := context.Background()
	r := benchRedis(b, "ratelimit-redis")

	const keys = 1000
	const perSecond = 1_000_000_000
	names := make([]string, keys)
	for i := range names {
		names[i] = "client-" + strconv.Itoa(i)
	}
	par := max(1, 64/runtime.GOMAXPROCS(0))

	run := func(b *testing.B, allow func(key string) (bool, error)) {
		var next atomic.Uint64
		var denied atomic.Int64
		b.SetParallelism(par)
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := next.Add(7919)
			for pb.Next() {
				i++
				ok, err := allow(names[i%keys])
				if err != nil {
					b.Errorf("allow: %v", err)
					return
				}
				if !ok {
					denied.Add(1)
				}
			}
		})
		b.StopTimer()
		if denied.Load() != 0 {
			b.Fatalf("%d calls denied, want all allowed", denied.Load())
		}
	}

	b.Run("strata", func(b *testing.B) {
		l, err := redislimit.New(redislimit.Config{
			Addrs:    []string{r.Addr()},
			Rate:     ratelimit.PerSecond(perSecond),
			Timeout:  5 * time.Second,
			FailMode: redislimit.FailError,
		})
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		run(b, func(key string) (bool, error) {
			d, err := l.AllowN(ctx, key, 1)
			return d.Allowed, err
		})
	})
	b.Run("redis_rate", func(b *testing.B) {
		c := goredis.NewClient(&goredis.Options{Addr: r.Addr(), PoolSize: 64})
		defer c.Close()
		lim := redis_rate.NewLimiter(c)
		limit := redis_rate.PerSecond(perSecond)
		run(b, func(key string) (bool, error) {
			res, err := lim.Allow(ctx, key, limit)
			if err != nil {
				return false, err
			}
			return res.Allowed > 0, nil
		})
	})
	b.Run("strata-hybrid", func(b *testing.B) {
		l, err := redislimit.New(redislimit.Config{
			Addrs:    []string{r.Addr()},
			Rate:     ratelimit.PerSecond(perSecond),
			Timeout:  5 * time.Second,
			FailMode: redislimit.FailError,
		})
		if err != nil {
			b.Fatal(err)
		}
		defer l.Close()
		h, err := redislimit.NewHybrid(l, redislimit.HybridConfig{Batch: 1000})
		if err != nil {
			b.Fatal(err)
		}
		run(b, func(key string) (bool, error) {
			d, err := h.AllowN(ctx, key, 1)
			return d.Allowed, err
		})
	})
}
