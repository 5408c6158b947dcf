package twotier_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/strata-project/strata/cache"
	"github.com/strata-project/strata/cache/cachetest"
	"github.com/strata-project/strata/cache/redisstore"
	"github.com/strata-project/strata/cache/twotier"
	"github.com/strata-project/strata/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

const testTimeout = 5 * time.Second

// node is one app server: its own Redis client, bus and two-tier store.
func node(t *testing.T, addr string, mode twotier.Consistency, wrapL2 func(cache.Store) cache.Store) *twotier.Store {
	t.Helper()
	l2, err := redisstore.New(redisstore.Config{Addrs: []string{addr}, Timeout: testTimeout})
	if err != nil {
		t.Fatal(err)
	}
	var store cache.Store = l2
	if wrapL2 != nil {
		store = wrapL2(l2)
	}
	s, err := twotier.New(twotier.Config{
		L2:          store,
		Bus:         twotier.NewRedisBus(l2.Client(), "", testTimeout),
		L1TTL:       time.Hour, // bounds below must come from invalidation, not expiry
		Consistency: mode,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(); l2.Close() })
	return s
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond) // polling a condition, not ordering events
	}
}

func TestConformance(t *testing.T) {
	r := testenv.SharedRedis(t)
	cachetest.Run(t, func(t *testing.T) cache.Store {
		l2, err := redisstore.New(redisstore.Config{Addrs: []string{r.Addr()}, Timeout: testTimeout})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l2.Close() })
		s, err := twotier.New(twotier.Config{L2: l2, Bus: twotier.NewRedisBus(l2.Client(), "", testTimeout)})
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, "bus", s.Ready)
		return s
	})
}

func TestConfigErrors(t *testing.T) {
	if _, err := twotier.New(twotier.Config{}); !errors.Is(err, cache.ErrConfig) {
		t.Errorf("New without L2 = %v, want cache.ErrConfig", err)
	}
	r := testenv.SharedRedis(t)
	l2, err := redisstore.New(redisstore.Config{Addrs: []string{r.Addr()}})
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	if _, err := twotier.New(twotier.Config{L2: l2}); !errors.Is(err, cache.ErrConfig) {
		t.Errorf("New eventual without Bus = %v, want cache.ErrConfig", err)
	}
}

// A write through node B is seen by node A once B's invalidation reached A, though A had the
// old value in L1 (with an L1TTL of an hour).
func TestCrossNodeInvalidation(t *testing.T) {
	r := testenv.SharedRedis(t)
	a := node(t, r.Addr(), twotier.Eventual, nil)
	b := node(t, r.Addr(), twotier.Eventual, nil)
	waitFor(t, "buses", func() bool { return a.Ready() && b.Ready() })
	ctx := context.Background()
	for i := range 20 {
		key := fmt.Sprint("k", i%3)
		v := int64(2*i + 1)
		if _, err := b.SetIfNewer(ctx, key, cache.Entry{Value: []byte("old"), Version: v}, time.Hour); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "A's L1 to serve the first write", func() bool {
			hits := a.Stats().L1Hits
			e, ok, err := a.Get(ctx, key)
			return err == nil && ok && e.Version == v && a.Stats().L1Hits > hits
		})
		seen := a.Stats().Invalidations
		if _, err := b.SetIfNewer(ctx, key, cache.Entry{Value: []byte("new"), Version: v + 1}, time.Hour); err != nil {
			t.Fatal(err)
		}
		// The invalidation messages of this write and of the one before it may arrive in
		// either order: wait for A to serve the new version (with an L1TTL of an hour, only an
		// invalidation can make it), and check that one did arrive.
		waitFor(t, "A to serve the new version", func() bool {
			e, ok, err := a.Get(ctx, key)
			return err == nil && ok && e.Version == v+1
		})
		if a.Stats().Invalidations <= seen {
			t.Fatalf("A serves v%d without having received an invalidation", v+1)
		}
	}
}

// Strong reads see every completed write at once (bound 0), with no waiting.
func TestStrongReadsBoundZero(t *testing.T) {
	r := testenv.SharedRedis(t)
	a := node(t, r.Addr(), twotier.Eventual, nil)
	b := node(t, r.Addr(), twotier.Eventual, nil)
	strong := node(t, r.Addr(), twotier.Strong, nil)
	waitFor(t, "buses", func() bool { return a.Ready() && b.Ready() })
	ctx := context.Background()
	for v := int64(1); v <= 50; v++ {
		// Warm A's L1 with the previous version, then write through B.
		_, _, _ = a.Get(ctx, "k")
		if _, err := b.SetIfNewer(ctx, "k", cache.Entry{Value: []byte(fmt.Sprint(v)), Version: v}, time.Hour); err != nil {
			t.Fatal(err)
		}
		if e, ok, err := a.Get(twotier.StrongRead(ctx), "k"); err != nil || !ok || e.Version != v {
			t.Fatalf("StrongRead Get = %+v, %v, %v; want v%d", e, ok, err, v)
		}
		if e, ok, err := strong.Get(ctx, "k"); err != nil || !ok || e.Version != v {
			t.Fatalf("Strong store Get = %+v, %v, %v; want v%d", e, ok, err, v)
		}
	}
}

// gated holds one L2 Get's answer until released: it replays a slow read racing a write.
type gated struct {
	cache.Store
	read    chan struct{} // closed once the L2 read is done
	release chan struct{}
}

func (g *gated) Get(ctx context.Context, key string) (cache.Entry, bool, error) {
	e, ok, err := g.Store.Get(ctx, key)
	if g.read != nil {
		close(g.read)
		<-g.release
		g.read = nil
	}
	return e, ok, err
}

// A read that fetched the old value from L2 before a write, and returns after the write's
// invalidation, must not leave the old value in L1.
func TestSlowFillAfterInvalidationIsDropped(t *testing.T) {
	r := testenv.SharedRedis(t)
	g := &gated{}
	a := node(t, r.Addr(), twotier.Eventual, func(l2 cache.Store) cache.Store { g.Store = l2; return g })
	b := node(t, r.Addr(), twotier.Eventual, nil)
	waitFor(t, "buses", func() bool { return a.Ready() && b.Ready() })
	ctx := context.Background()
	if _, err := b.SetIfNewer(ctx, "k", cache.Entry{Value: []byte("old"), Version: 1}, time.Hour); err != nil {
		t.Fatal(err)
	}
	g.read, g.release = make(chan struct{}), make(chan struct{})
	read := g.read
	done := make(chan cache.Entry)
	go func() {
		e, _, _ := a.Get(ctx, "k")
		done <- e
	}()
	<-read // A holds version 1 from L2, not yet in L1
	seen := a.Stats().Invalidations
	if _, err := b.SetIfNewer(ctx, "k", cache.Entry{Value: []byte("new"), Version: 2}, time.Hour); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the invalidation", func() bool { return a.Stats().Invalidations > seen })
	close(g.release)
	if e := <-done; e.Version != 1 {
		t.Fatalf("slow Get = v%d, want v1 (it read before the write)", e.Version)
	}
	if e, ok, err := a.Get(ctx, "k"); err != nil || !ok || e.Version != 2 {
		t.Fatalf("Get after the slow fill = %+v, %v, %v; want v2", e, ok, err)
	}
}

// An L1 hit reports the expiry and cost of the L2 entry it copies, not the L1 copy's short
// lifetime, so that early refresh sees when the shared entry expires; a refresh through
// another node (SetIfNotOlder of the same version) reaches this node's L1 as a new expiry.
func TestL1ReportsL2Expiry(t *testing.T) {
	r := testenv.SharedRedis(t)
	a := node(t, r.Addr(), twotier.Eventual, nil)
	b := node(t, r.Addr(), twotier.Eventual, nil)
	waitFor(t, "buses", func() bool { return a.Ready() && b.Ready() })
	ctx := context.Background()
	key := "l1-expiry"
	if err := a.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	if res, err := a.SetIfNewer(ctx, key, cache.Entry{Value: []byte("v"), Version: 1, Cost: time.Millisecond}, 10*time.Minute); err != nil || res != cache.Stored {
		t.Fatalf("SetIfNewer = %v, %v", res, err)
	}
	fromL2, ok, err := a.Get(twotier.StrongRead(ctx), key)
	if err != nil || !ok {
		t.Fatalf("strong Get = %v, %v", ok, err)
	}
	var fromL1 cache.Entry
	waitFor(t, "an L1 hit", func() bool { // once the write's own invalidation has passed
		hits := a.Stats().L1Hits
		e, ok, err := a.Get(ctx, key)
		fromL1 = e
		return err == nil && ok && a.Stats().L1Hits > hits
	})
	if !fromL1.Expires.Equal(fromL2.Expires) || fromL1.Cost != time.Millisecond {
		t.Fatalf("L1 hit reports expiry %v and cost %v, want L2's %v and 1ms (L1TTL is an hour)",
			fromL1.Expires, fromL1.Cost, fromL2.Expires)
	}
	if res, err := b.SetIfNotOlder(ctx, key, cache.Entry{Value: []byte("v"), Version: 1, Cost: 2 * time.Millisecond}, 20*time.Minute); err != nil || res != cache.Stored {
		t.Fatalf("SetIfNotOlder through B = %v, %v", res, err)
	}
	waitFor(t, "A to see the refreshed expiry", func() bool {
		e, ok, err := a.Get(ctx, key)
		return err == nil && ok && e.Cost == 2*time.Millisecond && e.Expires.After(fromL2.Expires)
	})
}
