package benchmarks

import (
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/strata-project/strata/ratelimit"
	"golang.org/x/time/rate"
)

// rateLimitKeys is the number of distinct keys of the keyed benchmarks.
const rateLimitKeys = 10_000

// rateLimitPerSecond and rateLimitBurst are high enough that every call is
// allowed, so both implementations run their "allowed" path.
const (
	rateLimitPerSecond = 1_000_000_000
	rateLimitBurst     = 1_000_000_000
)

func rateLimitKeySet() []string {
	keys := make([]string, rateLimitKeys)
	for i := range keys {
		keys[i] = "client-" + strconv.Itoa(i)
	}
	return keys
}

// benchGCRA calls Allow on keys in turn from parallel callers, after one call on each key
// of created (none when nil) before the timer starts.
func benchGCRA(b *testing.B, created, keys []string, clk *ratelimit.CoarseClock) {
	l, err := ratelimit.NewGCRA(ratelimit.GCRAConfig{
		Rate:  ratelimit.PerSecond(rateLimitPerSecond),
		Burst: rateLimitBurst,
		Clock: clk,
	})
	if err != nil {
		b.Fatal(err)
	}
	for _, k := range created {
		l.Allow(k)
	}
	var denied atomic.Int64
	var next atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(7919)) // spread goroutines over the key set
		for pb.Next() {
			if !l.Allow(keys[i%len(keys)]) {
				denied.Add(1)
			}
			i++
		}
	})
	if denied.Load() != 0 {
		b.Fatalf("%d calls denied, want all allowed", denied.Load())
	}
}

// BenchmarkRateLimitKeyedParallel compares one keyed limiter decision under
// parallel callers, every call on a different key of a pre-generated set of
// 10,000, cycling.
//
//   - strata: ratelimit.GCRA (lock-free sharded table, one atomic int64
//     per key), reading the monotonic clock on every call.
//   - strata-coarseclock: the same with a ratelimit.CoarseClock of 1ms
//     resolution, which replaces the clock read by a load from memory.
//   - x-time-rate: one golang.org/x/time/rate.Limiter per key in a sync.Map,
//     Load and, on a miss, LoadOrStore, then Allow (the common pattern; the
//     Load first spares the peer an allocation per call).
func BenchmarkRateLimitKeyedParallel(b *testing.B) {
	keys := rateLimitKeySet()
	b.Run("strata", func(b *testing.B) {
		benchGCRA(b, nil, keys, nil)
	})
	b.Run("strata-coarseclock", func(b *testing.B) {
		clk := ratelimit.NewCoarseClock(time.Millisecond)
		defer clk.Close()
		benchGCRA(b, nil, keys, clk)
	})
	b.Run("x-time-rate", func(b *testing.B) { benchXTimeRate(b, nil, keys) })
}

// BenchmarkRateLimitKeyedShuffledParallel is BenchmarkRateLimitKeyedParallel
// with the keys first seen in one order and then called in another (a fixed
// random permutation), as traffic does: the keyed benchmark above calls the
// keys in the order in which they were created, which lets the memory
// prefetcher follow the peer's per-key objects, allocated one after another
// in that order. Both implementations see every key once, in creation order,
// before the timer starts.
func BenchmarkRateLimitKeyedShuffledParallel(b *testing.B) {
	created := rateLimitKeySet()
	keys := slices.Clone(created)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(keys), func(i, j int) { keys[i], keys[j] = keys[j], keys[i] })
	b.Run("strata", func(b *testing.B) {
		benchGCRA(b, created, keys, nil)
	})
	b.Run("strata-coarseclock", func(b *testing.B) {
		clk := ratelimit.NewCoarseClock(time.Millisecond)
		defer clk.Close()
		benchGCRA(b, created, keys, clk)
	})
	b.Run("x-time-rate", func(b *testing.B) { benchXTimeRate(b, created, keys) })
}

// benchXTimeRate is benchGCRA for the peer: one rate.Limiter per key in a sync.Map, Load and,
// on a miss, LoadOrStore, then Allow (the common pattern; the Load first spares an
// allocation per call). The keys of created get their limiter before the timer starts.
func benchXTimeRate(b *testing.B, created, keys []string) {
	var m sync.Map
	limit := rate.Limit(rateLimitPerSecond)
	for _, k := range created {
		m.Store(k, rate.NewLimiter(limit, rateLimitBurst))
	}
	var denied atomic.Int64
	var next atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(7919))
		for pb.Next() {
			key := keys[i%len(keys)]
			v, ok := m.Load(key)
			if !ok {
				v, _ = m.LoadOrStore(key, rate.NewLimiter(limit, rateLimitBurst))
			}
			if !v.(*rate.Limiter).Allow() {
				denied.Add(1)
			}
			i++
		}
	})
	if denied.Load() != 0 {
		b.Fatalf("%d calls denied, want all allowed", denied.Load())
	}
}

// BenchmarkClockReadParallel measures the floor under the keyed families' plain form: the
// monotonic clock read that every decision of it makes (time-since, as Strata's GCRA reads
// it), next to the full time.Now the x/time/rate Limiter reads. Not a peer comparison.
func BenchmarkClockReadParallel(b *testing.B) {
	epoch := time.Now()
	for _, tc := range []struct {
		name string
		read func() int64
	}{
		{"time-since", func() int64 { return int64(time.Since(epoch)) }},
		{"time-now", func() int64 { return time.Now().UnixNano() }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var sink atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				var s int64
				for pb.Next() {
					s += tc.read()
				}
				sink.Add(s)
			})
			if sink.Load() == 0 {
				b.Fatal("the clock never advanced")
			}
		})
	}
}
