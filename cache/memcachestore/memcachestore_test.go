package memcachestore_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/strata-project/strata/cache"
	"github.com/strata-project/strata/cache/cachetest"
	"github.com/strata-project/strata/cache/memcachestore"
	"github.com/strata-project/strata/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// testTimeout replaces the 250ms default where a test checks behaviour, not faults.
const testTimeout = 5 * time.Second

func open(t *testing.T, cfg memcachestore.Config) *memcachestore.Store {
	t.Helper()
	s, err := memcachestore.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func openClose(t *testing.T, cfg memcachestore.Config) *memcachestore.Store {
	t.Helper()
	s := open(t, cfg)
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	m := testenv.SharedMemcached(t)
	cachetest.Run(t, func(t *testing.T) cache.Store {
		return open(t, memcachestore.Config{Addrs: []string{m.Addr()}, Timeout: testTimeout})
	})
}

func TestNewWithoutAddrs(t *testing.T) {
	if _, err := memcachestore.New(memcachestore.Config{}); !errors.Is(err, cache.ErrConfig) {
		t.Fatalf("New(zero Config) = %v, want cache.ErrConfig", err)
	}
}

// Keys memcached would refuse (too long, spaces, control characters, empty) all work, and
// stay distinct from each other and from readable keys.
func TestAnyKey(t *testing.T) {
	m := testenv.SharedMemcached(t)
	s := openClose(t, memcachestore.Config{Addrs: []string{m.Addr()}, Timeout: testTimeout})
	ctx := context.Background()
	keys := []string{
		"", "plain", "with space", "tab\there", "nl\nx", "\x00", "\x7f", "ünïcode",
		strings.Repeat("k", 250), strings.Repeat("k", 251), strings.Repeat("k", 10000),
	}
	for i, k := range keys {
		if res, err := s.SetIfNewer(ctx, k, cache.Entry{Value: []byte(fmt.Sprint(i)), Version: 1}, time.Hour); err != nil || res != cache.Stored {
			t.Fatalf("SetIfNewer(%q) = %v, %v", k, res, err)
		}
	}
	for i, k := range keys {
		e, ok, err := s.Get(ctx, k)
		if err != nil || !ok || string(e.Value) != fmt.Sprint(i) {
			t.Fatalf("Get(%q) = %+v, %v, %v; want %d", k, e, ok, err, i)
		}
		if _, ok, err := s.Lease(ctx, k, time.Minute); err != nil || !ok {
			t.Fatalf("Lease(%q) = %v, %v", k, ok, err)
		}
	}
}

// Many goroutines race SetIfNewer (even versions) and Invalidate (odd versions) on a few
// keys; the final state must be what the rule says: the highest version wins.
func TestStaleSetRuleUnderRace(t *testing.T) {
	m := testenv.SharedMemcached(t)
	var stores []cache.Store
	for range 3 {
		stores = append(stores, openClose(t, memcachestore.Config{Addrs: []string{m.Addr()}, Timeout: testTimeout, MaxCASAttempts: 1000}))
	}
	ctx := context.Background()
	const keys, workers, ops = 8, 32, 100
	var maxV [keys]atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := stores[w%len(stores)]
			rng := rand.New(rand.NewPCG(uint64(w), 11))
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

// A holder whose lease was taken over cannot release the successor's lease.
func TestLeaseReleaseKeepsSuccessor(t *testing.T) {
	m := testenv.SharedMemcached(t)
	s := openClose(t, memcachestore.Config{Addrs: []string{m.Addr()}, Timeout: testTimeout})
	ctx := context.Background()
	l1, ok, err := s.Lease(ctx, "k", time.Second)
	if err != nil || !ok {
		t.Fatalf("Lease = %v, %v", ok, err)
	}
	var l2 cache.Lease
	deadline := time.Now().Add(10 * time.Second)
	for l2 == nil && time.Now().Before(deadline) {
		if l2, ok, err = s.Lease(ctx, "k", time.Hour); err != nil {
			t.Fatal(err)
		} else if !ok {
			l2 = nil
			time.Sleep(100 * time.Millisecond) // poll memcached until the lease expired
		}
	}
	if l2 == nil {
		t.Fatal("lease never expired")
	}
	if err := l1.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.Lease(ctx, "k", time.Hour); ok {
		t.Fatal("the old holder's Release freed the successor's lease")
	}
	if err := l2.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.Lease(ctx, "k", time.Hour); !ok {
		t.Fatal("lease not free after its holder released it")
	}
}

func TestPausedAndKilledMemcached(t *testing.T) {
	m := testenv.Memcached(t)
	s := openClose(t, memcachestore.Config{Addrs: []string{m.Addr()}, Timeout: 100 * time.Millisecond})
	cachetest.Recovers(t, s)
	if err := m.Pause(); err != nil {
		t.Fatal(err)
	}
	cachetest.Unavailable(t, s, time.Second)
	if err := m.Resume(); err != nil {
		t.Fatal(err)
	}
	cachetest.Recovers(t, s)
	if err := m.Kill(); err != nil {
		t.Fatal(err)
	}
	cachetest.Unavailable(t, s, time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	cachetest.Recovers(t, s)
}

// TestFirstGetAfterRestart: the first read after a server restart succeeds although the
// client's pooled connections died with the old process (a breaker probe that met one would
// keep the cache off for another open period).
func TestFirstGetAfterRestart(t *testing.T) {
	m := testenv.Memcached(t)
	s := openClose(t, memcachestore.Config{Addrs: []string{m.Addr()}, Timeout: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for range 3 { // leave idle connections in the pool
		if _, _, err := s.Get(ctx, "k"); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := m.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := s.Get(ctx, "k"); err != nil || ok {
		t.Fatalf("first Get after the restart = %v, %v; want a miss without error", ok, err)
	}
}
