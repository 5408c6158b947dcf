package cache_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/strata-project/strata/cache"
	"github.com/strata-project/strata/cache/memstore"
)

// testClock is the clock early refresh reads: the real time until set, then the time set.
type testClock struct{ at atomic.Pointer[time.Time] }

func (c *testClock) now() time.Time {
	if t := c.at.Load(); t != nil {
		return *t
	}
	return time.Now()
}

func (c *testClock) set(t time.Time) { c.at.Store(&t) }
func (c *testClock) real()           { c.at.Store(nil) }

// gate holds the loads of one key: started is closed when the first one has read the
// source, and every load of the key waits until release (at the latest when the test ends,
// so that a failed test does not leave a load, and the Cache's Close, waiting).
type gate struct {
	started, open chan struct{}
	start, opened sync.Once
}

func holdLoads(t *testing.T, src *fakeSource, key string) *gate {
	g := &gate{started: make(chan struct{}), open: make(chan struct{})}
	src.setHook(func(k string) {
		if k == key {
			g.start.Do(func() { close(g.started) })
			<-g.open
		}
	})
	t.Cleanup(g.release)
	return g
}

func (g *gate) release() { g.opened.Do(func() { close(g.open) }) }

// refreshes collects the OnRefresh events (whether each stored).
type refreshes chan bool

func newRefreshes() (refreshes, func(string, bool)) {
	ch := make(refreshes, 1024)
	return ch, func(_ string, stored bool) {
		select {
		case ch <- stored:
		default: // more events than any test waits for
		}
	}
}

func (r refreshes) next(t *testing.T) bool {
	t.Helper()
	select {
	case stored := <-r:
		return stored
	case <-time.After(10 * time.Second):
		t.Fatal("no early refresh ended within 10s")
		return false
	}
}

func storeEntry(t *testing.T, s cache.Store, key string) cache.Entry {
	t.Helper()
	e, ok, err := s.Get(context.Background(), key)
	if err != nil || !ok {
		t.Fatalf("store Get(%q) = %v, %v", key, ok, err)
	}
	return e
}

// fill loads key into the cache and returns the entry the store then holds, once the fill
// has released its lease (it does so after the Get returned), so that the first refresh of
// the test finds the lease free.
func fill(t *testing.T, c *cache.Cache, s cache.Store, key, want string) cache.Entry {
	t.Helper()
	if v := mustGet(t, c.Get, key); v != want {
		t.Fatalf("Get(%q) = %q, want %q", key, v, want)
	}
	awaitLeaseFree(t, s, key)
	e := storeEntry(t, s, key)
	if e.Cost <= 0 || e.Expires.IsZero() {
		t.Fatalf("filled entry %+v: want a load cost and an expiry", e)
	}
	return e
}

// awaitLeaseFree waits until key's fill lease is free.
func awaitLeaseFree(t *testing.T, s cache.Store, key string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		l, ok, err := s.Lease(context.Background(), key, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			if err := l.Release(context.Background()); err != nil {
				t.Fatal(err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the fill's lease was not released within 10s")
		}
		time.Sleep(100 * time.Microsecond) // polling
	}
}

// refreshFixture is what the early-refresh tests of one cache start from: a source, a
// memstore, the clock early refresh reads, the refreshes' events and a cache with
// EarlyRefresh 1 over the memstore (or over what wrap makes of it).
type refreshFixture struct {
	src    *fakeSource
	mem    *memstore.Store
	clock  *testClock
	events refreshes
	c      *cache.Cache
}

func newRefreshFixture(t *testing.T, cfg cache.Config, wrap func(cache.Store) cache.Store) *refreshFixture {
	f := &refreshFixture{src: newFakeSource(), mem: newMem(t), clock: &testClock{}}
	var hook func(string, bool)
	f.events, hook = newRefreshes()
	cfg.Store = f.mem
	if wrap != nil {
		cfg.Store = wrap(f.mem)
	}
	cfg.Source, cfg.EarlyRefresh, cfg.Now, cfg.Hooks.OnRefresh = f.src, 1, f.clock.now, hook
	f.c = newCache(t, cfg)
	return f
}

// fillK writes v1 under "k" in the source and fills the cache with it, returning the
// stored entry.
func (f *refreshFixture) fillK(t *testing.T) cache.Entry {
	t.Helper()
	if _, err := f.src.Write(context.Background(), "k", []byte("v1")); err != nil {
		t.Fatal(err)
	}
	return fill(t, f.c, f.mem, "k", "v1")
}

// TestEarlyRefreshOff: with EarlyRefresh 0 (the default) a hit never refreshes, even on an
// entry the clock says has expired; with it on, a hit far from expiry does not either.
func TestEarlyRefreshOff(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		beta float64
		skew time.Duration // where the clock stands, from the entry's expiry
	}{
		{"beta 0, past expiry", 0, time.Hour},
		{"beta 1, an hour left", 1, -time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := newFakeSource()
			src.Write(ctx, "k", []byte("v1"))
			mem := newMem(t)
			var clock testClock
			c := newCache(t, cache.Config{Store: mem, Source: src, TTL: 2 * time.Hour, Jitter: -1,
				EarlyRefresh: tc.beta, Now: clock.now})
			e := fill(t, c, mem, "k", "v1")
			clock.set(e.Expires.Add(tc.skew))
			for range 1000 {
				mustGet(t, c.Get, "k")
			}
			if st := c.Stats(); st.Refreshes != 0 || st.Loads != 1 || st.Hits != 1000 {
				t.Fatalf("stats %+v: want 1000 hits, the one load of the fill and no refresh", st)
			}
		})
	}
}

// TestEarlyRefreshOncePerKey: many readers of an entry due for refresh start exactly one
// reload, in one cache (singleflight; leases off, so nothing else deduplicates) and over
// three caches sharing a store (three app servers: the lease); none of the readers waits for
// it; once it is stored the entry's expiry has moved on by the time since the fill, and its
// cost is the reload's.
func TestEarlyRefreshOncePerKey(t *testing.T) {
	for _, tc := range []struct {
		name     string
		caches   int
		leaseTTL time.Duration
	}{
		{"one cache, no lease", 1, -1},
		{"three caches, lease", 3, 0},
	} {
		t.Run(tc.name, func(t *testing.T) { testRefreshOnce(t, tc.caches, tc.leaseTTL) })
	}
}

func testRefreshOnce(t *testing.T, n int, leaseTTL time.Duration) {
	ctx := context.Background()
	src := newFakeSource()
	src.Write(ctx, "hot", []byte("v1"))
	mem := newMem(t)
	var clock testClock
	events, hook := newRefreshes()
	var caches []*cache.Cache
	for range n {
		caches = append(caches, newCache(t, cache.Config{Store: mem, Source: src, TTL: time.Hour, Jitter: -1,
			LeaseTTL: leaseTTL, EarlyRefresh: 1, Now: clock.now, Hooks: cache.Hooks{OnRefresh: hook}}))
	}
	old := fill(t, caches[0], mem, "hot", "v1")
	g := holdLoads(t, src, "hot")
	clock.set(old.Expires) // every hit is now due for a refresh
	const readers = 96
	var wg sync.WaitGroup
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if v, err := caches[i%n].Get(ctx, "hot"); err != nil || string(v) != "v1" {
				t.Errorf("Get = %q, %v; want v1 at once", v, err)
			}
		}()
	}
	wg.Wait() // every reader returned while the reload is held: none waited for it
	<-g.started
	heldFrom := time.Now()
	if got := src.loads.Load(); got != 2 {
		t.Fatalf("%d loads, want the fill and one refresh", got)
	}
	var started uint64
	for _, c := range caches {
		st := c.Stats()
		if st.Hits < readers/uint64(n) {
			t.Fatalf("stats %+v: want every read of this cache a hit", st)
		}
		started += st.Refreshes
	}
	if started == 0 || (n == 1 && started != 1) {
		t.Fatalf("%d refreshes started, want one (or, over several caches, retries that found the lease held)", started)
	}
	before := time.Now()
	clock.real()
	g.release()
	for !events.next(t) {
		// a refresh that found the lease held and gave up
	}
	for _, c := range caches {
		c.Close() // waits for refreshes that gave up
	}
	if got := src.loads.Load(); got != 2 {
		t.Fatalf("%d loads after the refresh, want 2", got)
	}
	var stored uint64
	for _, c := range caches {
		stored += c.Stats().RefreshesStored
	}
	if stored != 1 {
		t.Fatalf("%d refreshes stored, want 1", stored)
	}
	e := storeEntry(t, mem, "hot")
	if e.Version != old.Version || string(e.Value) != "v1" {
		t.Fatalf("refreshed entry %+v, want v1 at version %d", e, old.Version)
	}
	if !e.Expires.After(old.Expires) || e.Expires.Before(before.Add(time.Hour)) {
		t.Fatalf("refreshed entry expires at %v, want after the old expiry %v and at least an hour after %v",
			e.Expires, old.Expires, before)
	}
	if held := before.Sub(heldFrom); e.Cost < held {
		t.Fatalf("refreshed entry cost %v, want the reload's (held for %v at least)", e.Cost, held)
	}
}

// TestEarlyRefreshRacingWriteNotStored: a refresh that read the old value before a write
// cannot store it over the write's tombstone; the next read loads the new value.
func TestEarlyRefreshRacingWriteNotStored(t *testing.T) {
	ctx := context.Background()
	f := newRefreshFixture(t, cache.Config{}, nil)
	old := f.fillK(t)
	g := holdLoads(t, f.src, "k")
	f.clock.set(old.Expires)
	if v := mustGet(t, f.c.Get, "k"); v != "v1" {
		t.Fatalf("Get = %q, want v1", v)
	}
	<-g.started // the refresh holds v1
	f.clock.real()
	if _, err := f.c.WriteAround(ctx, "k", []byte("v2")); err != nil {
		t.Fatal(err)
	}
	g.release()
	if f.events.next(t) {
		t.Fatal("the refresh stored its value over a newer tombstone")
	}
	f.src.setHook(nil)
	if st := f.c.Stats(); st.RefreshesStored != 0 || st.Refused != 1 {
		t.Fatalf("stats %+v: want the refresh's set refused", st)
	}
	if r, _ := f.mem.SetIfNewer(ctx, "k", cache.Entry{Value: []byte("v1"), Version: old.Version}, time.Hour); r != cache.Refused {
		t.Fatal("the tombstone of the write is gone")
	}
	if v := mustGet(t, f.c.Get, "k"); v != "v2" {
		t.Fatalf("Get after the write = %q, want v2", v)
	}
}

// TestEarlyRefreshAcrossStoreRestartNotStored: a refresh whose load spans a store restart
// (the write's tombstone lost, a store call of this cache failed meanwhile) does not store
// the value it read before the write, as a fill would not.
func TestEarlyRefreshAcrossStoreRestartNotStored(t *testing.T) {
	ctx := context.Background()
	var fl *flakyStore
	f := newRefreshFixture(t, cache.Config{}, func(s cache.Store) cache.Store { fl = &flakyStore{Store: s}; return fl })
	old := f.fillK(t)
	g := holdLoads(t, f.src, "k")
	f.clock.set(old.Expires)
	mustGet(t, f.c.Get, "k")
	<-g.started
	f.clock.real()
	if _, err := f.c.WriteAround(ctx, "k", []byte("v2")); err != nil {
		t.Fatal(err)
	}
	fl.down.Store(true) // the store restarts: a call fails meanwhile...
	_, _ = f.c.Get(ctx, "other")
	fl.down.Store(false)
	if err := f.mem.Delete(ctx, "k"); err != nil { // ...and it comes back without the tombstone
		t.Fatal(err)
	}
	g.release()
	if f.events.next(t) {
		t.Fatal("a refresh that spanned a store failure stored its value")
	}
	f.src.setHook(nil)
	if _, ok, _ := f.mem.Get(ctx, "k"); ok {
		t.Fatal("the store holds an entry after the refresh: the old value was set")
	}
	if v := mustGet(t, f.c.Get, "k"); v != "v2" {
		t.Fatalf("Get = %q, want v2", v)
	}
}

// TestEarlyRefreshStoresNewerVersion: when the source has moved on (a write whose
// invalidation has not arrived), the refresh stores the newer version, and reads hit it.
func TestEarlyRefreshStoresNewerVersion(t *testing.T) {
	ctx := context.Background()
	f := newRefreshFixture(t, cache.Config{}, nil)
	old := f.fillK(t)
	if _, err := f.src.Write(ctx, "k", []byte("v2")); err != nil {
		t.Fatal(err)
	}
	f.clock.set(old.Expires)
	if v := mustGet(t, f.c.Get, "k"); v != "v1" {
		t.Fatalf("Get = %q, want the cached v1 while the refresh runs", v)
	}
	if !f.events.next(t) {
		t.Fatal("the refresh of a newer version was not stored")
	}
	f.clock.real()
	if e := storeEntry(t, f.mem, "k"); e.Version != old.Version+1 || string(e.Value) != "v2" {
		t.Fatalf("store holds %+v after the refresh, want v2", e)
	}
	loads := f.src.loads.Load()
	if v := mustGet(t, f.c.Get, "k"); v != "v2" || f.src.loads.Load() != loads {
		t.Fatalf("Get = %q with %d loads, want v2 from the cache", v, f.src.loads.Load()-loads)
	}
}

// TestEarlyRefreshNegativeEntry: a cached not-found is refreshed like a value, and keeps
// answering not-found meanwhile.
func TestEarlyRefreshNegativeEntry(t *testing.T) {
	ctx := context.Background()
	f := newRefreshFixture(t, cache.Config{Jitter: -1}, nil)
	if _, err := f.c.Get(ctx, "absent"); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("Get = %v, want ErrNotFound", err)
	}
	awaitLeaseFree(t, f.mem, "absent")
	old := storeEntry(t, f.mem, "absent")
	f.clock.set(old.Expires)
	if _, err := f.c.Get(ctx, "absent"); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("Get = %v, want ErrNotFound", err)
	}
	if !f.events.next(t) {
		t.Fatal("the refresh of a negative entry was not stored")
	}
	if e := storeEntry(t, f.mem, "absent"); !e.Negative || !e.Expires.After(old.Expires) {
		t.Fatalf("refreshed entry %+v, want a negative entry expiring after %v", e, old.Expires)
	}
}
