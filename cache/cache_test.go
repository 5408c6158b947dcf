package cache_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/strata-project/strata/breaker"
	"github.com/strata-project/strata/cache"
	"github.com/strata-project/strata/cache/memstore"
	"github.com/strata-project/strata/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// TestCloseStopsGoroutines: loads, the retry loop and lease waits all end by Close.
func TestCloseStopsGoroutines(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	ctx := context.Background()
	src := newFakeSource()
	store := &flakyStore{Store: newMem(t)}
	c, err := cache.New(cache.Config{Store: store, Source: src, RetryInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	c.WriteThrough(ctx, "k", []byte("v"))
	c.Get(ctx, "k")
	c.Get(ctx, "absent")
	store.down.Store(true)
	c.WriteAround(ctx, "k", []byte("w")) // leaves a pending invalidation being retried
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	store.Store.Close()
}

func newMem(t *testing.T) *memstore.Store {
	t.Helper()
	s, err := memstore.New(memstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newCache(t *testing.T, cfg cache.Config) *cache.Cache {
	t.Helper()
	c, err := cache.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func mustGet(t *testing.T, get func(context.Context, string) ([]byte, error), key string) string {
	t.Helper()
	v, err := get(context.Background(), key)
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	return string(v)
}

// TestSeedFlawStaleSet replays the stale-set schedule: a reader misses and loads v1; a
// writer writes v2 to the source and invalidates; the reader then sets v1. The seed's
// cache-aside serves v1 from then on; Strata's refuses the stale set and serves v2.
func TestSeedFlawStaleSet(t *testing.T) {
	type client struct {
		get   func(context.Context, string) ([]byte, error)
		write func(context.Context, string, []byte) error
	}
	run := func(t *testing.T, src *fakeSource, c client) string {
		ctx := context.Background()
		src.Write(ctx, "k", []byte("v1"))
		loaded, proceed := make(chan struct{}), make(chan struct{})
		var once sync.Once
		src.setHook(func(string) {
			once.Do(func() { close(loaded); <-proceed })
		})
		readerDone := make(chan struct{})
		go func() {
			defer close(readerDone)
			if _, err := c.get(ctx, "k"); err != nil {
				t.Errorf("reader: %v", err)
			}
		}()
		<-loaded // the reader holds v1
		if err := c.write(ctx, "k", []byte("v2")); err != nil {
			t.Fatal(err)
		}
		close(proceed) // the reader sets v1
		<-readerDone
		src.setHook(nil)
		return mustGet(t, c.get, "k")
	}
	t.Run("naive", func(t *testing.T) {
		src := newFakeSource()
		n := newNaive(src)
		if got := run(t, src, client{n.Get, n.Write}); got != "v1" {
			t.Fatalf("the naive reference served %q after the race; the replay no longer shows the flaw", got)
		}
	})
	t.Run("strata", func(t *testing.T) {
		src := newFakeSource()
		c := newCache(t, cache.Config{Store: newMem(t), Source: src})
		write := func(ctx context.Context, k string, v []byte) error { _, err := c.WriteAround(ctx, k, v); return err }
		if got := run(t, src, client{c.Get, write}); got != "v2" {
			t.Fatalf("served %q after the stale-set race, want v2", got)
		}
		if st := c.Stats(); st.Refused != 1 {
			t.Fatalf("Refused = %d, want the one stale set", st.Refused)
		}
	})
}

// TestSeedFlawEmptyValueIsMiss: the seed's `if cached:` reloads an empty value on every read.
func TestSeedFlawEmptyValueIsMiss(t *testing.T) {
	ctx := context.Background()
	src := newFakeSource()
	src.Write(ctx, "empty", []byte{})
	n := newNaive(src)
	for range 3 {
		mustGet(t, n.Get, "empty")
	}
	if got := src.loads.Load(); got != 3 {
		t.Fatalf("naive: %d loads for 3 reads of an empty value; the flaw no longer shows", got)
	}
	src.loads.Store(0)
	c := newCache(t, cache.Config{Store: newMem(t), Source: src})
	for range 3 {
		if v := mustGet(t, c.Get, "empty"); v != "" {
			t.Fatalf("Get = %q", v)
		}
	}
	if got := src.loads.Load(); got != 1 {
		t.Fatalf("%d loads for 3 reads of an empty value, want 1", got)
	}
}

func TestNegativeCachingClearedByWrite(t *testing.T) {
	ctx := context.Background()
	src := newFakeSource()
	c := newCache(t, cache.Config{Store: newMem(t), Source: src})
	for range 3 {
		if _, err := c.Get(ctx, "absent"); !errors.Is(err, cache.ErrNotFound) {
			t.Fatalf("Get of an absent key: %v, want ErrNotFound", err)
		}
	}
	if got := src.loads.Load(); got != 1 {
		t.Fatalf("%d loads for 3 reads of an absent key, want 1 (negative entry)", got)
	}
	if _, err := c.WriteThrough(ctx, "absent", []byte("now here")); err != nil {
		t.Fatal(err)
	}
	if v := mustGet(t, c.Get, "absent"); v != "now here" {
		t.Fatalf("Get after write = %q", v)
	}
	if _, err := c.Delete(ctx, "absent"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, "absent"); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("Get after Delete: %v, want ErrNotFound", err)
	}
}

func TestWriteThroughOrdersConcurrentWriters(t *testing.T) {
	ctx := context.Background()
	src := newFakeSource()
	c := newCache(t, cache.Config{Store: newMem(t), Source: src})
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				if _, err := c.WriteThrough(ctx, "k", []byte(fmt.Sprint(w, "-", i))); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	want, _, _ := src.Load(ctx, "k")
	if got := mustGet(t, c.Get, "k"); got != string(want) {
		t.Fatalf("cache holds %q, source %q", got, want)
	}
}

// TestStampedeOneLoad: 1,000 concurrent misses of one key over 3 caches sharing one store
// (3 app servers) cause exactly one load: singleflight within each, the lease across them.
// It runs over every store of the linearizability test (memstore and Redis).
func TestStampedeOneLoad(t *testing.T) {
	for _, st := range linearizabilityStores {
		t.Run(st.name, func(t *testing.T) {
			ctx := context.Background()
			src := newFakeSource()
			src.Write(ctx, "hot", []byte("value"))
			store, _ := st.open(t)
			var caches []*cache.Cache
			for range 3 {
				caches = append(caches, newCache(t, cache.Config{Store: store, Source: src, LeaseWait: time.Minute}))
			}
			release := make(chan struct{})
			src.setHook(func(string) { <-release })
			const total = 1000
			var wg sync.WaitGroup
			for i := range total {
				c := caches[i%3]
				wg.Add(1)
				go func() {
					defer wg.Done()
					if v, err := c.Get(ctx, "hot"); err != nil || string(v) != "value" {
						t.Errorf("Get = %q, %v", v, err)
					}
				}()
			}
			// Hold the one load until every caller has missed.
			deadline := time.Now().Add(30 * time.Second)
			for {
				var misses uint64
				for _, c := range caches {
					misses += c.Stats().Misses
				}
				if misses == total {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("only %d misses", misses)
				}
				time.Sleep(time.Millisecond) // polling
			}
			close(release)
			wg.Wait()
			if got := src.loads.Load(); got != 1 {
				t.Fatalf("%d loads for %d concurrent misses over 3 caches, want 1", got, total)
			}
		})
	}
}

// ttlStore records the TTLs it is given.
type ttlStore struct {
	cache.Store
	mu   sync.Mutex
	ttls []time.Duration
}

func (s *ttlStore) SetIfNewer(ctx context.Context, k string, e cache.Entry, ttl time.Duration) (cache.SetResult, error) {
	s.mu.Lock()
	s.ttls = append(s.ttls, ttl)
	s.mu.Unlock()
	return s.Store.SetIfNewer(ctx, k, e, ttl)
}

func TestTTLJitter(t *testing.T) {
	ctx := context.Background()
	src := newFakeSource()
	store := &ttlStore{Store: newMem(t)}
	c := newCache(t, cache.Config{Store: store, Source: src, TTL: time.Minute, NegativeTTL: 10 * time.Second, Jitter: 0.2})
	for i := range 100 {
		c.WriteThrough(ctx, fmt.Sprint("k", i), []byte("v"))
	}
	c.Get(ctx, "absent")
	distinct := map[time.Duration]bool{}
	for i, ttl := range store.ttls {
		lo, hi := 48*time.Second, time.Minute
		if i == len(store.ttls)-1 { // the negative entry
			lo, hi = 8*time.Second, 10*time.Second
		}
		if ttl < lo || ttl > hi {
			t.Fatalf("TTL %v outside [%v, %v]", ttl, lo, hi)
		}
		distinct[ttl] = true
	}
	if len(distinct) < 50 {
		t.Fatalf("%d distinct TTLs among %d sets: no jitter", len(distinct), len(store.ttls))
	}
}

// TestLoadDetachedFromFirstCaller: the first caller giving up does not cancel the load that
// the others wait for.
func TestLoadDetachedFromFirstCaller(t *testing.T) {
	src := newFakeSource()
	src.Write(context.Background(), "k", []byte("v"))
	c := newCache(t, cache.Config{Store: newMem(t), Source: src})
	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	src.setHook(func(string) { once.Do(func() { close(started) }); <-release })
	ctx1, cancel1 := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() { _, err := c.Get(ctx1, "k"); first <- err }()
	<-started
	second := make(chan string, 1)
	go func() { v, _ := c.Get(context.Background(), "k"); second <- string(v) }()
	for c.Stats().Misses < 2 {
		time.Sleep(time.Millisecond) // polling
	}
	cancel1()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("first caller: %v, want context.Canceled", err)
	}
	close(release)
	if v := <-second; v != "v" {
		t.Fatalf("second caller got %q, want v", v)
	}
	if n := src.loads.Load(); n != 1 {
		t.Fatalf("%d loads, want 1", n)
	}
}

// TestStoreDown: with the store failing, reads go to the source, writes succeed, and the
// invalidation that could not be applied is applied once the store is back, so the value
// cached before the outage is not served after it.
func TestStoreDown(t *testing.T) {
	ctx := context.Background()
	src := newFakeSource()
	store := &flakyStore{Store: newMem(t)}
	br, err := breaker.New(breaker.Config{ConsecutiveFailures: 2, OpenDuration: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	c := newCache(t, cache.Config{Store: store, Source: src, Breaker: br, RetryInterval: 5 * time.Millisecond})
	c.WriteThrough(ctx, "k", []byte("v1"))
	if v := mustGet(t, c.Get, "k"); v != "v1" {
		t.Fatalf("Get = %q", v)
	}
	store.down.Store(true)
	if _, err := c.WriteThrough(ctx, "k", []byte("v2")); err != nil {
		t.Fatalf("write with the store down: %v", err)
	}
	for range 5 {
		if v := mustGet(t, c.Get, "k"); v != "v2" {
			t.Fatalf("Get with the store down = %q, want v2", v)
		}
	}
	if st := c.Stats(); st.PendingDepth != 1 || st.StoreErrors == 0 {
		t.Fatalf("stats %+v: want one pending invalidation and store errors", st)
	}
	store.down.Store(false)
	deadline := time.Now().Add(10 * time.Second)
	for c.Stats().PendingDepth != 0 {
		if time.Now().After(deadline) {
			t.Fatal("pending invalidation never applied")
		}
		time.Sleep(5 * time.Millisecond) // polling
	}
	if v := mustGet(t, c.Get, "k"); v != "v2" {
		t.Fatalf("Get after recovery = %q, want v2", v)
	}
}

// TestPendingInvalidationsSurviveRestart: an invalidation queued while the store was down is
// in the pending file, and a new Cache over the same file applies it.
func TestPendingInvalidationsSurviveRestart(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "pending")
	src := newFakeSource()
	mem := newMem(t)
	store := &flakyStore{Store: mem}
	mem.SetIfNewer(ctx, "k", cache.Entry{Value: []byte("old"), Version: 1}, time.Hour)
	src.Write(ctx, "k", []byte("old"))
	store.down.Store(true)
	c1, err := cache.New(cache.Config{Store: store, Source: src, PendingPath: path, RetryInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c1.WriteAround(ctx, "k", []byte("new")); err != nil {
		t.Fatal(err)
	}
	if err := c1.Close(); err != nil { // a crash would leave the same file: it is synced
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); len(b) == 0 {
		t.Fatal("pending file empty after a failed invalidation")
	}
	store.down.Store(false)
	c2 := newCache(t, cache.Config{Store: store, Source: src, PendingPath: path})
	deadline := time.Now().Add(10 * time.Second)
	for c2.Stats().PendingDepth != 0 {
		if time.Now().After(deadline) {
			t.Fatal("replayed invalidation never applied")
		}
		time.Sleep(5 * time.Millisecond) // polling
	}
	if r, _ := mem.SetIfNewer(ctx, "k", cache.Entry{Value: []byte("old"), Version: 1}, time.Hour); r != cache.Refused {
		t.Fatal("the replayed invalidation left no tombstone: a stale set of v1 was stored")
	}
	if v := mustGet(t, c2.Get, "k"); v != "new" {
		t.Fatalf("Get = %q, want new", v)
	}
}

func TestConfigErrors(t *testing.T) {
	for name, cfg := range map[string]cache.Config{
		"no store":        {},
		"negative TTL":    {Store: newMem(t), TTL: -1},
		"jitter above 1":  {Store: newMem(t), Jitter: 2},
		"short tombstone": {Store: newMem(t), TombstoneTTL: time.Second, LoadTimeout: time.Minute},
	} {
		if _, err := cache.New(cfg); !errors.Is(err, cache.ErrConfig) {
			t.Errorf("%s: New = %v, want ErrConfig", name, err)
		}
	}
	c := newCache(t, cache.Config{Store: newMem(t)})
	if _, err := c.Get(context.Background(), "k"); !errors.Is(err, cache.ErrConfig) {
		t.Errorf("Get without a Source = %v, want ErrConfig", err)
	}
}

func ExampleCache() {
	store, _ := memstore.New(memstore.Config{})
	defer store.Close()
	src := newFakeSource()
	c, _ := cache.New(cache.Config{Store: store, Source: src})
	defer c.Close()
	ctx := context.Background()
	v, _ := c.WriteThrough(ctx, "user:1", []byte("ada"))
	got, _ := c.Get(ctx, "user:1")
	fmt.Println(v, string(got), c.Stats().Loads)
	// Output: 1 ada 0
}

// TestFillAcrossStoreRestartNotStored: a fill whose load began before the store restarted,
// and so lost the tombstone of a write that overtook the load, must not store its old value.
// (The store answering an error in between is how the cache learns of the restart.)
func TestFillAcrossStoreRestartNotStored(t *testing.T) {
	ctx := context.Background()
	src := newFakeSource()
	src.Write(ctx, "k", []byte("v1"))
	mem := newMem(t)
	fl := &flakyStore{Store: mem}
	c := newCache(t, cache.Config{Store: fl, Source: src})
	loaded, proceed := make(chan struct{}), make(chan struct{})
	var once sync.Once
	src.setHook(func(key string) {
		if key == "k" {
			once.Do(func() { close(loaded); <-proceed })
		}
	})
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		if _, err := c.Get(ctx, "k"); err != nil {
			t.Errorf("reader: %v", err)
		}
	}()
	<-loaded // the reader holds v1
	if _, err := c.WriteAround(ctx, "k", []byte("v2")); err != nil {
		t.Fatal(err) // the source has v2, the store a tombstone at v2
	}
	fl.down.Store(true) // the store restarts: a call fails meanwhile...
	_, _ = c.Get(ctx, "other")
	fl.down.Store(false)
	if err := mem.Delete(ctx, "k"); err != nil { // ...and it comes back without the tombstone
		t.Fatal(err)
	}
	close(proceed) // the reader's fill would now set v1
	<-readerDone
	src.setHook(nil)
	if got := mustGet(t, c.Get, "k"); got != "v2" {
		t.Fatalf("served %q after a fill that spanned a store restart, want v2", got)
	}
}

// TestPendingKeyReadAppliesInvalidation: a read of a key whose invalidation is still queued
// applies it first, then uses the cache as usual, instead of reading around the cache.
func TestPendingKeyReadAppliesInvalidation(t *testing.T) {
	ctx := context.Background()
	src := newFakeSource()
	mem := newMem(t)
	store := &flakyStore{Store: mem}
	c := newCache(t, cache.Config{Store: store, Source: src, RetryInterval: time.Hour})
	if _, err := c.WriteThrough(ctx, "k", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	store.down.Store(true)
	if _, err := c.WriteAround(ctx, "k", []byte("v2")); err != nil {
		t.Fatal(err)
	}
	if st := c.Stats(); st.PendingDepth != 1 {
		t.Fatalf("stats %+v: want one pending invalidation", st)
	}
	// The queued invalidation nudges the retry loop at once: let its attempt fail while the
	// store is down, so that only the read can apply it (the next retry is an hour away).
	deadline := time.Now().Add(5 * time.Second)
	for c.Stats().StoreErrors < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("stats %+v: the retry loop never tried the queued invalidation", c.Stats())
		}
		time.Sleep(time.Millisecond) // polling
	}
	store.down.Store(false)
	if v := mustGet(t, c.Get, "k"); v != "v2" {
		t.Fatalf("Get = %q, want v2", v)
	}
	if st := c.Stats(); st.PendingDepth != 0 || st.Bypassed != 0 || st.PendingRetried != 1 {
		t.Fatalf("stats %+v: want the read to apply the pending invalidation and not bypass the cache", st)
	}
	if r, _ := mem.SetIfNewer(ctx, "k", cache.Entry{Value: []byte("v1"), Version: 1}, time.Hour); r != cache.Refused {
		t.Fatal("a stale set of v1 was stored after the read")
	}
	hits := c.Stats().Hits
	if v := mustGet(t, c.Get, "k"); v != "v2" || c.Stats().Hits != hits+1 {
		t.Fatalf("second Get = %q with %d new hits, want v2 from the cache", v, c.Stats().Hits-hits)
	}
}

// TestUnstoredLoadFencesOlderFills: two processes share a store. One of them loads the new
// value of a key without storing it (its store call failed at the start of the read); before
// it returns the value, it must leave a tombstone at that version, or the other process's
// slower fill of the old value lands in the shared store and its readers go back in time
// (the write's own invalidation not having arrived yet).
func TestUnstoredLoadFencesOlderFills(t *testing.T) {
	ctx := context.Background()
	src := newFakeSource()
	src.Write(ctx, "k", []byte("v1"))
	mem := newMem(t)
	storeA := &flakyStore{Store: mem}
	a := newCache(t, cache.Config{Store: storeA, Source: src})
	b := newCache(t, cache.Config{Store: mem, Source: src})
	loaded, proceed := make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	src.setHook(func(string) { // the first load (B's) waits; A's goes on
		if first.CompareAndSwap(false, true) {
			close(loaded)
			<-proceed
		}
	})
	readerDone := make(chan string)
	go func() {
		v, err := b.Get(ctx, "k")
		if err != nil {
			t.Errorf("reader in B: %v", err)
		}
		readerDone <- string(v)
	}()
	<-loaded // B's fill holds v1
	if _, err := src.Write(ctx, "k", []byte("v2")); err != nil {
		t.Fatal(err) // a write whose invalidation has not arrived yet
	}
	storeA.failNext.Store(1) // A's first store call fails: its fill may not store
	if v := mustGet(t, a.Get, "k"); v != "v2" {
		t.Fatalf("A read %q, want v2", v)
	}
	close(proceed)
	if v := <-readerDone; v != "v1" {
		t.Fatalf("B's first reader = %q, want v1 (its read began before the write)", v)
	}
	src.setHook(nil)
	if v := mustGet(t, b.Get, "k"); v != "v2" {
		t.Fatalf("B served %q after A had returned v2: its old fill was stored", v)
	}
	if b.Stats().Refused == 0 {
		t.Fatal("B's stale fill was not refused")
	}
}

// TestBreakerOpensWithoutTraffic: with IdleProbe set, a store that stops answering opens
// the breaker with no caller at all; without it, the breaker stays closed.
func TestBreakerOpensWithoutTraffic(t *testing.T) {
	for _, probe := range []time.Duration{0, 10 * time.Millisecond} {
		src := newFakeSource()
		store := &flakyStore{Store: newMem(t)}
		br, err := breaker.New(breaker.Config{ConsecutiveFailures: 5, OpenDuration: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		c := newCache(t, cache.Config{Store: store, Source: src, Breaker: br, IdleProbe: probe})
		store.down.Store(true)
		wait := 2 * time.Second
		if probe == 0 {
			wait = 200 * time.Millisecond // nothing may open it: a short look suffices
		}
		deadline := time.Now().Add(wait)
		for br.State() == breaker.Closed && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond) // polling
		}
		switch {
		case probe > 0 && br.State() != breaker.Open:
			t.Fatalf("IdleProbe %v: breaker %v %v after the store went down with no traffic, want open", probe, br.State(), wait)
		case probe == 0 && br.State() != breaker.Closed:
			t.Fatalf("IdleProbe off: breaker %v with no traffic, want closed", br.State())
		}
		if probe > 0 && c.Stats().StoreErrors < 5 {
			t.Fatalf("breaker open after %d store errors, want at least 5", c.Stats().StoreErrors)
		}
	}
}

// partialStore is a store one part of which is down: reads of its keys work, Ping fails.
type partialStore struct {
	cache.Store
	down atomic.Bool
}

func (p *partialStore) Ping(context.Context) error {
	if p.down.Load() {
		return errDown
	}
	return nil
}

// TestProbeUsesPing: a store that is a cache.Pinger is probed with Ping, so a part of it
// that is down opens the breaker although a read of ProbeKey would succeed.
func TestProbeUsesPing(t *testing.T) {
	store := &partialStore{Store: newMem(t)}
	br, err := breaker.New(breaker.Config{ConsecutiveFailures: 3, OpenDuration: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	newCache(t, cache.Config{Store: store, Source: newFakeSource(), Breaker: br, IdleProbe: 10 * time.Millisecond})
	store.down.Store(true)
	deadline := time.Now().Add(2 * time.Second)
	for br.State() == breaker.Closed {
		if time.Now().After(deadline) {
			t.Fatal("breaker still closed 2s after Ping started failing")
		}
		time.Sleep(5 * time.Millisecond) // polling
	}
}

// TestBreakerClosesWithoutTraffic: after the store comes back, the breaker closes by the
// cache's own probes, with no call from anyone (writes refused while it is open never probe).
func TestBreakerClosesWithoutTraffic(t *testing.T) {
	src := newFakeSource()
	store := &flakyStore{Store: newMem(t)}
	br, err := breaker.New(breaker.Config{ConsecutiveFailures: 2, OpenDuration: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	newCache(t, cache.Config{Store: store, Source: src, Breaker: br, RetryInterval: 10 * time.Millisecond})
	store.down.Store(true)
	for range 2 {
		tok, err := br.Allow()
		if err != nil {
			t.Fatal(err)
		}
		tok.Done(errDown)
	}
	if br.State() != breaker.Open {
		t.Fatalf("breaker %v after two failures, want open", br.State())
	}
	store.down.Store(false)
	deadline := time.Now().Add(5 * time.Second)
	for br.State() != breaker.Closed {
		if time.Now().After(deadline) {
			t.Fatalf("breaker still %v 5s after the store came back, with no traffic: nothing probed it", br.State())
		}
		time.Sleep(5 * time.Millisecond) // polling
	}
}

// countingStore is a flakyStore that counts the reads reaching it.
type countingStore struct {
	*flakyStore
	gets atomic.Int64
}

func (s *countingStore) Get(ctx context.Context, k string) (cache.Entry, bool, error) {
	s.gets.Add(1)
	return s.flakyStore.Get(ctx, k)
}

// inProcessStore is a countingStore that says it is InProcess.
type inProcessStore struct{ *countingStore }

func (s inProcessStore) InProcess() {}

// TestInProcessReadsSkipBreaker: reads of an InProcess store skip the cache's breaker, the
// default one or a configured one (every read reaches the store, even while it fails, and is
// answered from the source), while the same breaker guards a store that is not InProcess
// (its 5 failures open it, and the reads after that stay away from the store).
func TestInProcessReadsSkipBreaker(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		inProcess, configured bool
	}{{true, false}, {true, true}, {false, false}, {false, true}} {
		src := newFakeSource()
		if _, err := src.Write(ctx, "k", []byte("v")); err != nil {
			t.Fatal(err)
		}
		counting := &countingStore{flakyStore: &flakyStore{Store: newMem(t)}}
		cfg := cache.Config{Store: counting, Source: src}
		if tc.inProcess {
			cfg.Store = inProcessStore{counting}
		}
		br, err := breaker.New(breaker.Config{ConsecutiveFailures: 5, OpenDuration: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if tc.configured {
			cfg.Breaker = br
		}
		c := newCache(t, cfg)
		counting.down.Store(true)
		for i := 0; i < 20; i++ {
			if v, err := c.Get(ctx, "k"); err != nil || string(v) != "v" {
				t.Fatalf("%+v: read %d = %q, %v; want the source's value", tc, i, v, err)
			}
		}
		gets := counting.gets.Load()
		switch {
		case tc.inProcess && gets != 20:
			t.Errorf("%+v: %d of 20 reads reached the store, want all", tc, gets)
		case !tc.inProcess && gets > 5:
			t.Errorf("%+v: %d of 20 reads reached the store, want at most the breaker's 5 failures", tc, gets)
		}
	}
}

// peekStore is a memstore whose Peek calls are counted.
type peekStore struct {
	*memstore.Store
	peeks atomic.Int64
}

func (s *peekStore) Peek(key string) ([]byte, bool, bool) {
	s.peeks.Add(1)
	return s.Store.Peek(key)
}

// TestHitsThroughPeek: a cache over an InProcess Peeker serves hits, of values and of
// negative entries, through Peek, with the same answers and counters as through Get, with a
// configured breaker too; early refresh keeps reads on Get.
func TestHitsThroughPeek(t *testing.T) {
	ctx := context.Background()
	br, err := breaker.New(breaker.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		cfg      func(*cache.Config)
		wantPeek bool
	}{
		{"default", func(*cache.Config) {}, true},
		{"early refresh", func(c *cache.Config) { c.EarlyRefresh = 1 }, false},
		{"configured breaker", func(c *cache.Config) { c.Breaker = br }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := newFakeSource()
			if _, err := src.Write(ctx, "k", []byte("v")); err != nil {
				t.Fatal(err)
			}
			store := &peekStore{Store: newMem(t)}
			cfg := cache.Config{Store: store, Source: src}
			tc.cfg(&cfg)
			c := newCache(t, cfg)
			for i := 0; i < 3; i++ {
				if v, err := c.Get(ctx, "k"); err != nil || string(v) != "v" {
					t.Fatalf("read %d of k = %q, %v", i, v, err)
				}
				if _, err := c.Get(ctx, "gone"); !errors.Is(err, cache.ErrNotFound) {
					t.Fatalf("read %d of an absent key: %v, want ErrNotFound", i, err)
				}
			}
			if st := c.Stats(); st.Hits != 4 || st.Misses != 2 || st.Loads != 2 {
				t.Errorf("hits %d, misses %d, loads %d; want 4, 2, 2", st.Hits, st.Misses, st.Loads)
			}
			if got := store.peeks.Load() > 0; got != tc.wantPeek {
				t.Errorf("%d Peek calls, want some: %v", store.peeks.Load(), tc.wantPeek)
			}
		})
	}
}
