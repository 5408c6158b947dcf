package benchmarks

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/maypok86/otter/v2"

	"github.com/strata-project/strata/cache"
	"github.com/strata-project/strata/cache/docsource"
	"github.com/strata-project/strata/cache/memstore"
	"github.com/strata-project/strata/cache/writebehind"
	"github.com/strata-project/strata/docstore/postgres"
	"github.com/strata-project/strata/engines"
)

const cacheBenchKeys = 100_000

func cacheBenchKeyNames() []string {
	keys := make([]string, cacheBenchKeys)
	for i := range keys {
		keys[i] = "user:" + strconv.Itoa(i)
	}
	return keys
}

// noSource fails every load: a hit benchmark that loads has gone wrong.
type noSource struct{}

func (noSource) Load(context.Context, string) ([]byte, int64, error) {
	panic("benchmark: unexpected load")
}
func (noSource) Write(context.Context, string, []byte) (int64, error) { panic("unexpected write") }
func (noSource) Delete(context.Context, string) (int64, error)        { panic("unexpected delete") }

// BenchmarkCacheAsideHitParallel: a cache hit on 100,000 keys from parallel callers, through
// Strata's read path over the in-process store (pending-invalidation check, tombstone and
// negative entries, the hit counter; an in-process store is read without a breaker, through
// memstore.Peek) against a raw otter v2 GetIfPresent of the same keys and values.
func BenchmarkCacheAsideHitParallel(b *testing.B) {
	keys := cacheBenchKeyNames()
	value := []byte(`{"name":"ada","id":1}`)
	b.Run("strata", func(b *testing.B) {
		store, err := memstore.New(memstore.Config{MaxBytes: 256 << 20})
		if err != nil {
			b.Fatal(err)
		}
		defer store.Close()
		c, err := cache.New(cache.Config{Store: store, Source: noSource{}})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		ctx := context.Background()
		for _, k := range keys {
			store.SetIfNewer(ctx, k, cache.Entry{Value: value, Version: 1}, time.Hour)
		}
		var seed atomic.Uint64
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := int(seed.Add(7919))
			for pb.Next() {
				v, err := c.Get(ctx, keys[i%cacheBenchKeys])
				if err != nil || len(v) == 0 {
					b.Fatal("miss")
				}
				i++
			}
		})
	})
	b.Run("otter", func(b *testing.B) {
		oc := otter.Must(&otter.Options[string, []byte]{MaximumSize: 2 * cacheBenchKeys})
		defer oc.StopAllGoroutines()
		for _, k := range keys {
			oc.Set(k, value)
		}
		var seed atomic.Uint64
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := int(seed.Add(7919))
			for pb.Next() {
				v, ok := oc.GetIfPresent(keys[i%cacheBenchKeys])
				if !ok || len(v) == 0 {
					b.Fatal("miss")
				}
				i++
			}
		})
	})
}

// BenchmarkWriteBehind: acknowledged writes to PostgreSQL (fsync on) from 32 parallel
// writers over 1,000 keys, through write-behind (acknowledged once in the local log, synced
// with group commit; the flusher coalesces and applies in the background) against
// write-through (each write commits in PostgreSQL, then sets the cache). The write-behind
// figure is the acknowledgement rate; the backlog is flushed after the timer stops.
func BenchmarkWriteBehind(b *testing.B) {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "strata-bench-writebehind-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	pg, err := engines.StartPostgres(ctx, engines.PostgresOptions{Dir: dir, Durable: true})
	if err != nil {
		if engines.IsMissingBinary(err) {
			b.Skip(err)
		}
		b.Fatal(err)
	}
	b.Cleanup(func() { pg.Close() })
	db, err := postgres.Open(ctx, postgres.Config{DSN: pg.Primary.DSN("postgres"), MaxConns: 32})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	src := docsource.New(db, "bench")
	value := []byte(`{"name":"ada","n":1}`)
	var round atomic.Int64
	keyOf := func(i int) string { return "k" + strconv.Itoa(i%1000) }

	b.Run("write-through", func(b *testing.B) {
		store, _ := memstore.New(memstore.Config{})
		defer store.Close()
		c, err := cache.New(cache.Config{Store: store, Source: src})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		var seq atomic.Int64
		b.SetParallelism(16)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := c.WriteThrough(ctx, keyOf(int(seq.Add(1))), value); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
	})
	b.Run("write-behind", func(b *testing.B) {
		q, err := writebehind.OpenLog(writebehind.LogConfig{Dir: fmt.Sprintf("%s/queue-%d", dir, round.Add(1))})
		if err != nil {
			b.Fatal(err)
		}
		w, err := writebehind.New(writebehind.Config{Queue: q, Target: src, MaxPending: 100_000,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			b.Fatal(err)
		}
		defer w.Close()
		var seq atomic.Int64
		b.SetParallelism(16)
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := w.Write(ctx, keyOf(int(seq.Add(1))), value); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "writes/s")
		b.StopTimer()
		fctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		if err := w.Flush(fctx); err != nil {
			b.Fatal(err)
		}
	})
}
