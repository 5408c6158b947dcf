package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/strata-project/strata/cache"
	"github.com/strata-project/strata/cache/cachetest"
	"github.com/strata-project/strata/cache/redisstore"
	"github.com/strata-project/strata/engines"
	"github.com/strata-project/strata/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// testTimeout replaces the 250ms default where a test checks behaviour, not faults: the
// machine running tests may be loaded.
const testTimeout = 5 * time.Second

func open(t *testing.T, cfg redisstore.Config) *redisstore.Store {
	t.Helper()
	s, err := redisstore.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func openClose(t *testing.T, cfg redisstore.Config) *redisstore.Store {
	t.Helper()
	s := open(t, cfg)
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformanceStandalone(t *testing.T) {
	r := testenv.SharedRedis(t)
	cachetest.Run(t, func(t *testing.T) cache.Store {
		return open(t, redisstore.Config{Addrs: []string{r.Addr()}, Timeout: testTimeout})
	})
}

func TestConformanceClientCache(t *testing.T) {
	r := testenv.SharedRedis(t)
	cachetest.Run(t, func(t *testing.T) cache.Store {
		return open(t, redisstore.Config{Addrs: []string{r.Addr()}, ClientCacheTTL: time.Second, Timeout: testTimeout})
	})
}

func TestConformanceCluster(t *testing.T) {
	c := testenv.SharedRedisCluster(t)
	cachetest.Run(t, func(t *testing.T) cache.Store {
		return open(t, redisstore.Config{Addrs: c.Addrs(), Timeout: testTimeout})
	})
}

func TestNewWithoutAddrs(t *testing.T) {
	if _, err := redisstore.New(redisstore.Config{}); !errors.Is(err, cache.ErrConfig) {
		t.Fatalf("New(zero Config) = %v, want cache.ErrConfig", err)
	}
}

func TestEncodingRoundTrip(t *testing.T) {
	r := testenv.SharedRedis(t)
	s := openClose(t, redisstore.Config{Addrs: []string{r.Addr()}, Timeout: testTimeout})
	ctx := context.Background()
	for i, e := range []cache.Entry{
		{Value: []byte("v"), Version: 1},
		{Value: []byte{}, Version: 0},
		{Value: []byte("neg-version"), Version: -7},
		{Version: 3, Negative: true},
		{Value: []byte("max"), Version: 1<<63 - 1},
		{Value: []byte("min"), Version: -1 << 63},
	} {
		k := fmt.Sprint("k", i)
		if res, err := s.SetIfNewer(ctx, k, e, time.Hour); err != nil || res != cache.Stored {
			t.Fatalf("SetIfNewer(%+v) = %v, %v", e, res, err)
		}
		got, ok, err := s.Get(ctx, k)
		if err != nil || !ok || got.Version != e.Version || got.Negative != e.Negative ||
			string(got.Value) != string(e.Value) || (got.Value == nil) != e.Negative {
			t.Fatalf("Get = %+v, %v, %v; want %+v", got, ok, err, e)
		}
	}
	// Versions far apart in the high half and the low half order correctly.
	if res, _ := s.SetIfNewer(ctx, "k4", cache.Entry{Value: []byte("x"), Version: 1<<62 + 1}, time.Hour); res != cache.Refused {
		t.Fatalf("set below the max version = %v, want Refused", res)
	}
	if err := s.Invalidate(ctx, "k0", 1<<40, time.Hour); err != nil {
		t.Fatal(err)
	}
	if res, _ := s.SetIfNewer(ctx, "k0", cache.Entry{Value: []byte("x"), Version: 1<<40 - 1}, time.Hour); res != cache.Refused {
		t.Fatalf("set below a tombstone at 2^40 = %v, want Refused", res)
	}
	if res, _ := s.SetIfNewer(ctx, "k0", cache.Entry{Value: []byte("x"), Version: 1<<40 + 1<<32}, time.Hour); res != cache.Stored {
		t.Fatalf("set above a tombstone at 2^40 = %v, want Stored", res)
	}
}

// raceRule has many goroutines race SetIfNewer (even versions) and Invalidate (odd versions)
// on a few keys; the final state must be what the rule says: the highest version wins, an
// entry if it is even, a tombstone if odd.
func raceRule(t *testing.T, stores []cache.Store) {
	ctx := context.Background()
	const keys, workers, ops = 8, 32, 100
	var maxV [keys]atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := stores[w%len(stores)]
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for range ops {
				k := rng.IntN(keys)
				v := rng.Int64N(1000) + 1
				var err error
				if v%2 == 0 {
					_, err = s.SetIfNewer(ctx, fmt.Sprint("race", k), cache.Entry{Value: []byte(fmt.Sprint("v", v)), Version: v}, time.Hour)
				} else {
					err = s.Invalidate(ctx, fmt.Sprint("race", k), v, time.Hour)
				}
				if err != nil {
					t.Error(err)
					return
				}
				for {
					cur := maxV[k].Load()
					if v <= cur || maxV[k].CompareAndSwap(cur, v) {
						break
					}
				}
			}
		}()
	}
	wg.Wait()
	s := stores[0]
	for k := range keys {
		key, want := fmt.Sprint("race", k), maxV[k].Load()
		if want == 0 {
			continue
		}
		e, ok, err := s.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if want%2 == 0 {
			if !ok || e.Version != want || string(e.Value) != fmt.Sprint("v", want) {
				t.Errorf("%s: Get = %+v, %v; want entry at %d", key, e, ok, want)
			}
			continue
		}
		if ok {
			t.Errorf("%s: Get = %+v; want a tombstone at %d (a miss)", key, e, want)
		}
		if res, _ := s.SetIfNewer(ctx, key, cache.Entry{Value: []byte("x"), Version: want - 1}, time.Hour); res != cache.Refused {
			t.Errorf("%s: set below the tombstone = %v, want Refused", key, res)
		}
		if res, _ := s.SetIfNewer(ctx, key, cache.Entry{Value: []byte("x"), Version: want}, time.Hour); res != cache.Stored {
			t.Errorf("%s: set at the tombstone's version = %v, want Stored", key, res)
		}
	}
}

func TestStaleSetRuleUnderRaceStandalone(t *testing.T) {
	r := testenv.SharedRedis(t)
	var stores []cache.Store
	for range 3 {
		stores = append(stores, openClose(t, redisstore.Config{Addrs: []string{r.Addr()}, Timeout: testTimeout}))
	}
	raceRule(t, stores)
}

func TestStaleSetRuleUnderRaceCluster(t *testing.T) {
	c := testenv.SharedRedisCluster(t)
	var stores []cache.Store
	for range 3 {
		stores = append(stores, openClose(t, redisstore.Config{Addrs: c.Addrs(), Timeout: testTimeout}))
	}
	raceRule(t, stores)
}

// Keys spread over every master of the cluster, and each is read back.
func TestClusterKeysOnAllMasters(t *testing.T) {
	c := testenv.SharedRedisCluster(t)
	s := openClose(t, redisstore.Config{Addrs: c.Addrs(), Timeout: testTimeout})
	ctx := context.Background()
	const n = 300
	for i := range n {
		if _, err := s.SetIfNewer(ctx, fmt.Sprint("spread", i), cache.Entry{Value: []byte(fmt.Sprint(i)), Version: 1}, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		e, ok, err := s.Get(ctx, fmt.Sprint("spread", i))
		if err != nil || !ok || string(e.Value) != fmt.Sprint(i) {
			t.Fatalf("Get spread%d = %+v, %v, %v", i, e, ok, err)
		}
	}
	masters, total := 0, int64(0)
	for i, node := range c.Nodes {
		role, err := c.Role(ctx, i)
		if err != nil {
			t.Fatal(err)
		}
		if role != "master" {
			continue
		}
		v, err := node.Do(ctx, "DBSIZE")
		if err != nil {
			t.Fatal(err)
		}
		size, _ := v.(int64)
		if size == 0 {
			t.Errorf("master %d holds no key", i)
		}
		masters++
		total += size
	}
	if masters < 3 || total != n {
		t.Fatalf("%d masters hold %d keys, want >= 3 masters holding %d", masters, total, n)
	}
}

// 1,000 concurrent misses of one key, spread over three stores (three clients, as three app
// servers would have) sharing one Redis, cause exactly one load when misses go through Lease.
func TestStampedeOneLoad(t *testing.T) {
	r := testenv.SharedRedis(t)
	var stores []*redisstore.Store
	for range 3 {
		stores = append(stores, openClose(t, redisstore.Config{Addrs: []string{r.Addr()}, Timeout: 5 * time.Second}))
	}
	ctx := context.Background()
	var loads atomic.Int64
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 1000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := stores[i%3]
			<-start
			for {
				if e, ok, err := s.Get(ctx, "hot"); err != nil {
					t.Error(err)
					return
				} else if ok {
					if string(e.Value) != "row" {
						t.Errorf("Get = %q", e.Value)
					}
					return
				}
				l, ok, err := s.Lease(ctx, "hot", 10*time.Second)
				if err != nil {
					t.Error(err)
					return
				}
				if !ok {
					// Someone else fills: wait for the fill by polling the store.
					time.Sleep(time.Millisecond)
					continue
				}
				// Holding the lease: check again (a fill may have landed since our miss).
				if _, ok, err := s.Get(ctx, "hot"); err == nil && !ok {
					loads.Add(1)
					if _, err := s.SetIfNewer(ctx, "hot", cache.Entry{Value: []byte("row"), Version: 1}, time.Hour); err != nil {
						t.Error(err)
					}
				}
				if err := l.Release(ctx); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	if n := loads.Load(); n != 1 {
		t.Fatalf("%d loads, want exactly 1", n)
	}
}

// A released lease can be taken again; a stolen lease (expired and re-taken) is not released
// by its old holder.
func TestLeaseToken(t *testing.T) {
	r := testenv.SharedRedis(t)
	s := openClose(t, redisstore.Config{Addrs: []string{r.Addr()}, Timeout: testTimeout})
	ctx := context.Background()
	l1, ok, err := s.Lease(ctx, "k", 50*time.Millisecond)
	if err != nil || !ok {
		t.Fatalf("Lease = %v, %v", ok, err)
	}
	// Wait for the lease to expire by asking Redis, not by sleeping a guessed time.
	deadline := time.Now().Add(5 * time.Second)
	var l2 cache.Lease
	for time.Now().Before(deadline) {
		if l2, ok, err = s.Lease(ctx, "k", time.Hour); err != nil {
			t.Fatal(err)
		} else if ok {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if l2 == nil {
		t.Fatal("lease never expired")
	}
	if err := l1.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.Lease(ctx, "k", time.Hour); ok {
		t.Fatal("the expired holder's Release freed the new holder's lease")
	}
	if err := l2.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.Lease(ctx, "k", time.Hour); !ok {
		t.Fatal("lease not free after its holder released it")
	}
}

// With client-side caching, once the invalidation for a key reached a store, its Get
// returns what another client's completed SetIfNewer or Invalidate installed.
func TestClientCacheInvalidationBound(t *testing.T) {
	r := testenv.SharedRedis(t)
	inval := make(chan string, 1024)
	reader := openClose(t, redisstore.Config{
		Addrs:          []string{r.Addr()},
		ClientCacheTTL: time.Hour, // the bound must come from invalidation, not expiry
		Timeout:        testTimeout,
		OnInvalidate: func(keys []string) {
			for _, k := range keys {
				inval <- k
			}
		},
	})
	writer := openClose(t, redisstore.Config{Addrs: []string{r.Addr()}, Timeout: testTimeout})
	ctx := context.Background()
	waitInval := func(key string) {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case k := <-inval:
				if k == key {
					return
				}
			case <-timeout:
				t.Fatalf("no invalidation of %s", key)
			}
		}
	}
	for i := range 50 {
		key := fmt.Sprint("csc", i)
		v := int64(2*i + 1)
		if _, err := writer.SetIfNewer(ctx, key, cache.Entry{Value: []byte(fmt.Sprint(v)), Version: v}, time.Hour); err != nil {
			t.Fatal(err)
		}
		// Cache it in the reader (twice: the second is served from process memory).
		for range 2 {
			if e, ok, err := reader.Get(ctx, key); err != nil || !ok || e.Version != v {
				t.Fatalf("reader Get = %+v, %v, %v; want version %d", e, ok, err, v)
			}
		}
		// Any invalidation of an older write reached the reader before its Get's reply (same
		// connection, in order): drop those notifications.
		for len(inval) > 0 {
			<-inval
		}
		if i%2 == 0 {
			if _, err := writer.SetIfNewer(ctx, key, cache.Entry{Value: []byte("new"), Version: v + 1}, time.Hour); err != nil {
				t.Fatal(err)
			}
			waitInval(key)
			if e, ok, err := reader.Get(ctx, key); err != nil || !ok || e.Version != v+1 {
				t.Fatalf("after invalidation: Get = %+v, %v, %v; want version %d", e, ok, err, v+1)
			}
		} else {
			if err := writer.Invalidate(ctx, key, v+1, time.Hour); err != nil {
				t.Fatal(err)
			}
			waitInval(key)
			if e, ok, err := reader.Get(ctx, key); err != nil || ok {
				t.Fatalf("after invalidation: Get = %+v, %v, %v; want a miss", e, ok, err)
			}
		}
	}
}

func TestPausedRedis(t *testing.T) {
	r := testenv.Redis(t, engines.RedisOptions{})
	for _, csc := range []time.Duration{0, time.Second} {
		t.Run(fmt.Sprint("csc=", csc), func(t *testing.T) {
			s := openClose(t, redisstore.Config{Addrs: []string{r.Addr()}, Timeout: 100 * time.Millisecond, ClientCacheTTL: csc})
			cachetest.Recovers(t, s)
			if err := r.Pause(); err != nil {
				t.Fatal(err)
			}
			cachetest.Unavailable(t, s, time.Second)
			if err := r.Resume(); err != nil {
				t.Fatal(err)
			}
			cachetest.Recovers(t, s)
		})
	}
}

func TestKilledRedis(t *testing.T) {
	r := testenv.Redis(t, engines.RedisOptions{})
	s := openClose(t, redisstore.Config{Addrs: []string{r.Addr()}, Timeout: 100 * time.Millisecond})
	cachetest.Recovers(t, s)
	if err := r.Kill(); err != nil {
		t.Fatal(err)
	}
	cachetest.Unavailable(t, s, time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	cachetest.Recovers(t, s)
}

func TestNewUnreachable(t *testing.T) {
	port, err := engines.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	_, err = redisstore.New(redisstore.Config{Addrs: []string{fmt.Sprint("127.0.0.1:", port)}})
	if !errors.Is(err, cache.ErrUnavailable) {
		t.Fatalf("New(unreachable) = %v, want cache.ErrUnavailable", err)
	}
}

// TestKilledRedisFailsFast: with the server gone, a call fails at once (connection refused)
// instead of retrying until its timeout, so that a request meeting a dead cache is not
// slowed by it and the breaker opens after a few fast failures.
func TestKilledRedisFailsFast(t *testing.T) {
	r := testenv.Redis(t, engines.RedisOptions{})
	s := openClose(t, redisstore.Config{Addrs: []string{r.Addr()}, Timeout: 3 * time.Second})
	cachetest.Recovers(t, s)
	if err := r.Kill(); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		start := time.Now()
		_, _, err := s.Get(context.Background(), "k")
		if err == nil {
			t.Fatalf("call %d: Get succeeded with the server killed", i)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("call %d: Get took %v to fail with the server killed (timeout 3s): want a fast failure", i, d)
		}
	}
}

// mgetCalls returns how many MGET commands r has run.
func mgetCalls(t *testing.T, r *engines.Redis) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := r.Do(ctx, "INFO", "commandstats")
	if err != nil {
		t.Fatal(err)
	}
	info, _ := v.(string)
	_, rest, ok := strings.Cut(info, "cmdstat_mget:calls=")
	if !ok {
		return 0
	}
	n, err := strconv.Atoi(rest[:strings.IndexByte(rest, ',')])
	if err != nil {
		t.Fatalf("INFO commandstats: %v", err)
	}
	return n
}

// TestGetBatchesConcurrentReads: concurrent Gets of a standalone Redis are gathered into
// MGETs (fewer commands than Gets) and each caller gets its own key's answer: a value, a
// miss for a tombstone, a miss for a key never set; with MaxGetBatch -1, no MGET at all.
func TestGetBatchesConcurrentReads(t *testing.T) {
	r := testenv.SharedRedis(t)
	for _, batch := range []int{0, -1} {
		t.Run(fmt.Sprint("MaxGetBatch=", batch), func(t *testing.T) {
			s := openClose(t, redisstore.Config{Addrs: []string{r.Addr()}, Timeout: testTimeout, MaxGetBatch: batch})
			ctx := context.Background()
			const keys = 120 // 0..99 set, of which every tenth invalidated; 100..119 never set
			for i := range 100 {
				k := fmt.Sprint("k", i)
				if _, err := s.SetIfNewer(ctx, k, cache.Entry{Value: []byte("val-" + k), Version: 1}, time.Hour); err != nil {
					t.Fatal(err)
				}
				if i%10 == 0 {
					if err := s.Invalidate(ctx, k, 2, time.Hour); err != nil {
						t.Fatal(err)
					}
				}
			}
			before := mgetCalls(t, r)
			const callers, each = 64, 100
			var wg sync.WaitGroup
			for w := range callers {
				wg.Go(func() {
					rng := rand.New(rand.NewPCG(uint64(w), 2))
					for range each {
						i := rng.IntN(keys)
						k := fmt.Sprint("k", i)
						e, ok, err := s.Get(ctx, k)
						wantOK := i < 100 && i%10 != 0
						if err != nil || ok != wantOK || (ok && (string(e.Value) != "val-"+k || e.Version != 1)) {
							t.Errorf("Get(%s) = %q v%d, %v, %v; want found %v", k, e.Value, e.Version, ok, err, wantOK)
							return
						}
					}
				})
			}
			wg.Wait()
			mgets := mgetCalls(t, r) - before
			t.Logf("%d Gets, %d MGETs", callers*each, mgets)
			if batch < 0 && mgets != 0 {
				t.Errorf("%d MGETs with batching off", mgets)
			}
			if batch == 0 && (mgets == 0 || mgets >= callers*each) {
				t.Errorf("%d MGETs for %d concurrent Gets: want some, and fewer than the Gets", mgets, callers*each)
			}
		})
	}
}

// TestPausedRedisQueuedGets: with Redis paused, Gets queued behind a batch under way all
// fail with cache.ErrUnavailable soon after their timeout, and succeed once it resumes.
func TestPausedRedisQueuedGets(t *testing.T) {
	r := testenv.Redis(t, engines.RedisOptions{})
	const timeout = 200 * time.Millisecond
	s := openClose(t, redisstore.Config{Addrs: []string{r.Addr()}, Timeout: timeout})
	cachetest.Recovers(t, s)
	if err := r.Pause(); err != nil {
		t.Fatal(err)
	}
	const callers = 64
	type result struct {
		took time.Duration
		err  error
	}
	results := make(chan result, callers)
	for range callers {
		go func() {
			start := time.Now()
			_, _, err := s.Get(context.Background(), "after")
			results <- result{time.Since(start), err}
		}()
	}
	for i := range callers {
		select {
		case r := <-results:
			if r.took > 10*timeout {
				t.Errorf("a Get took %v with Redis paused, timeout %v", r.took, timeout)
			}
			if !errors.Is(r.err, cache.ErrUnavailable) {
				t.Errorf("Get with Redis paused = %v, want cache.ErrUnavailable", r.err)
			}
		case <-time.After(30 * timeout):
			t.Fatalf("%d of %d Gets still waiting %v after Redis was paused", callers-i, callers, 30*timeout)
		}
	}
	if err := r.Resume(); err != nil {
		t.Fatal(err)
	}
	cachetest.Recovers(t, s)
	e, ok, err := s.Get(context.Background(), "after")
	if err != nil || !ok || string(e.Value) != "v" {
		t.Fatalf("Get after resume = %q, %v, %v", e.Value, ok, err)
	}
}
