package benchmarks

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/maypok86/otter/v2"

	"github.com/strata-project/strata/cache"
	"github.com/strata-project/strata/cache/memstore"
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
// Strata's read path over the in-process store (breaker, tombstone check, negative entries,
// counters) against a raw otter v2 GetIfPresent of the same keys and values.
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
