package benchmarks

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/strata-project/strata/cache"
	"github.com/strata-project/strata/cache/redisstore"
)

// BenchmarkCacheAsideHitRedisParallel: a cache hit served through Redis, 64 callers, 1,000
// keys of a 1 KiB value. strata is a cache-aside read through cache.Cache over redisstore
// (the breaker, the pending-invalidation check, a versioned entry; rueidis, with the Gets
// of concurrent callers gathered into MGETs); go-redis is a plain GET of the same value;
// strata-nobatch is strata with one GET per call (MaxGetBatch -1), for reference; strata-csc
// adds client-side caching (RESP3 tracking, invalidated by the server).
func BenchmarkCacheAsideHitRedisParallel(b *testing.B) {
	ctx := context.Background()
	r := benchRedis(b, "cache-redis")

	const keys = 1000
	value := bytes.Repeat([]byte("x"), 1024)
	names := make([]string, keys)
	for i := range names {
		names[i] = fmt.Sprint("user:", i)
	}
	par := max(1, 64/runtime.GOMAXPROCS(0))

	fill, err := redisstore.New(redisstore.Config{Addrs: []string{r.Addr()}, Timeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer fill.Close()
	for _, k := range names {
		if _, err := fill.SetIfNewer(ctx, k, cache.Entry{Value: value, Version: 1}, 0); err != nil {
			b.Fatal(err)
		}
	}

	runStore := func(b *testing.B, cfg redisstore.Config) {
		c := redisCache(b, r.Addr(), cfg)
		var next atomic.Uint64
		b.SetParallelism(par)
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := next.Add(7919)
			for pb.Next() {
				i++
				v, err := c.Get(ctx, names[i%keys])
				if err != nil || len(v) != len(value) {
					b.Errorf("Get = %d bytes, %v", len(v), err)
					return
				}
			}
		})
	}
	b.Run("strata", func(b *testing.B) { runStore(b, redisstore.Config{}) })
	b.Run("strata-nobatch", func(b *testing.B) { runStore(b, redisstore.Config{MaxGetBatch: -1}) })
	b.Run("strata-csc", func(b *testing.B) { runStore(b, redisstore.Config{ClientCacheTTL: time.Minute}) })
	b.Run("go-redis", func(b *testing.B) {
		c := goredis.NewClient(&goredis.Options{Addr: r.Addr()})
		defer c.Close()
		for _, k := range names {
			if err := c.Set(ctx, k, value, 0).Err(); err != nil {
				b.Fatal(err)
			}
		}
		var next atomic.Uint64
		b.SetParallelism(par)
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := next.Add(7919)
			for pb.Next() {
				i++
				v, err := c.Get(ctx, names[i%keys]).Bytes()
				if err != nil || len(v) != len(value) {
					b.Errorf("GET = %d bytes, %v", len(v), err)
					return
				}
			}
		})
	})
}

// BenchmarkCacheAsideHitRedisSerial: one caller reading one 1 KiB key through cache.Cache
// over redisstore, so each read is a lone round trip: strata gathers concurrent Gets into
// MGETs, strata-nobatch sends one GET per call. Gathering must cost a lone caller nothing.
func BenchmarkCacheAsideHitRedisSerial(b *testing.B) {
	ctx := context.Background()
	r := benchRedis(b, "cache-redis-serial")
	fill, err := redisstore.New(redisstore.Config{Addrs: []string{r.Addr()}, Timeout: 5 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer fill.Close()
	if _, err := fill.SetIfNewer(ctx, "k", cache.Entry{Value: bytes.Repeat([]byte("x"), 1024), Version: 1}, 0); err != nil {
		b.Fatal(err)
	}
	run := func(b *testing.B, cfg redisstore.Config) {
		c := redisCache(b, r.Addr(), cfg)
		for b.Loop() {
			if v, err := c.Get(ctx, "k"); err != nil || len(v) != 1024 {
				b.Fatalf("Get = %d bytes, %v", len(v), err)
			}
		}
	}
	b.Run("strata", func(b *testing.B) { run(b, redisstore.Config{}) })
	b.Run("strata-nobatch", func(b *testing.B) { run(b, redisstore.Config{MaxGetBatch: -1}) })
}

// redisCache opens a cache.Cache over a redisstore of addr built from cfg, closed when b
// ends. Its timeout is generous: a call that timed out would fall through to noSource and
// end the run, where a slow one is measured like any other.
func redisCache(b *testing.B, addr string, cfg redisstore.Config) *cache.Cache {
	b.Helper()
	cfg.Addrs, cfg.Timeout = []string{addr}, 5*time.Second
	s, err := redisstore.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	c, err := cache.New(cache.Config{Store: s, Source: noSource{}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}
