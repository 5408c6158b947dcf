package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/strata-project/strata/breaker"
	"github.com/strata-project/strata/cache"
	"github.com/strata-project/strata/cache/redisstore"
	"github.com/strata-project/strata/docstore"
	"github.com/strata-project/strata/engines"
	"github.com/strata-project/strata/internal/testenv"
	"github.com/strata-project/strata/server"
)

// TestStrongWriteRefusedBeforeStore: a write of a strong collection over a shared cache
// leaves its tombstone before it writes the store; when the cache does not take it, the
// write is refused before it is applied (503, Strata-Write-Applied: false) and the store is
// unchanged. Conditional writes and deletes take the same path, and an unconditional write
// that starts from a stale cached version retries on the conflict.
func TestStrongWriteRefusedBeforeStore(t *testing.T) {
	store := openSQLite(t)
	cstore := &invalidationsFail{Store: memoryKind(t)(t)}
	shared := func(*testing.T) cache.Store { return cstore }
	for _, strategy := range []string{server.StrategyCacheAside, server.StrategyWriteThrough} {
		t.Run(strategy, func(t *testing.T) {
			c := newCluster(t, 1, store, shared, cachedOpts{strategy: strategy, shared: true})
			a := c.envs[0]
			path := "/v1/docs/" + strategy
			expect(t, a.do("PUT", path, adminKey, `{"n":1}`), 201, "", `"1"`)
			expect(t, a.do("GET", path, adminKey, ""), 200, "", `"1"`)

			cstore.failing.Store(true)
			for _, w := range []resp{
				a.do("PUT", path, adminKey, `{"n":2}`),
				a.do("PUT", path, adminKey, `{"n":2}`, "If-Match", `"1"`),
				a.do("DELETE", path, adminKey, ""),
			} {
				if w.status != 503 || w.header.Get(server.HeaderWriteApplied) != "false" {
					t.Fatalf("write while the cache drops invalidations: %d %v %s, want 503 with %s: false", w.status, w.header, w.body, server.HeaderWriteApplied)
				}
			}
			if d, err := store.Get(context.Background(), "docs", strategy); err != nil || d.Version != 1 {
				t.Fatalf("store after the refused writes: %+v, %v; want version 1 (nothing applied)", d, err)
			}
			cstore.failing.Store(false)

			// The breaker the failures opened refuses writes for a while: wait for it.
			deadline := time.Now().Add(10 * time.Second)
			for {
				w := a.do("PUT", path, adminKey, `{"n":2}`)
				if w.status == 200 {
					expect(t, w, 200, "", `"2"`)
					break
				}
				if w.status != 503 || time.Now().After(deadline) {
					t.Fatalf("write after the cache is back: %d %s", w.status, w.body)
				}
			}
			// Another writer moves the document on behind the cache's back: the next
			// unconditional write starts from the cached version 2, conflicts, and retries.
			if _, err := store.Put(context.Background(), "docs", strategy, json.RawMessage(`{"n":3}`)); err != nil {
				t.Fatal(err)
			}
			expect(t, a.do("PUT", path, adminKey, `{"n":4}`), 200, "", `"4"`)
			if got := a.do("GET", path, adminKey, ""); got.status != 200 || bodyN(t, got) != 4 {
				t.Fatalf("read after the retried write: %d %s, want n=4", got.status, got.body)
			}
			expect(t, a.do("DELETE", path, adminKey, "", "If-Match", `"3"`), 412, "", "")
			expect(t, a.do("DELETE", path, adminKey, ""), 204, "", `"5"`)
			expect(t, a.do("GET", path, adminKey, ""), 404, "", "")
			expect(t, a.do("DELETE", path, adminKey, ""), 404, "", "")
			expect(t, a.do("PUT", path, adminKey, `{"n":6}`), 200, "", `"6"`)
		})
	}
}

// TestStrongWriteAcrossCacheFailover kills the Redis Cluster master that holds a document's
// cache entry while two app servers (A writes, B reads) use it. A's write while the slot has
// no master is refused before it reaches the store; B, whose cache read fails, reads the
// store meanwhile. Once the replica took over (with the entry it had), B's cached reads must
// not return a version older than the one B already read from the store. Before writes
// invalidated first, A's write reached the store, B read the new version from it, and the
// promoted replica then served B the old entry (A's invalidation waited in its queue).
func TestStrongWriteAcrossCacheFailover(t *testing.T) {
	cl := testenv.RedisCluster(t, engines.RedisClusterOptions{})
	store := openSQLite(t)
	ctx := context.Background()
	open := func(retry time.Duration) (*server.Cached, *redisstore.Replicated) {
		rs, err := redisstore.New(redisstore.Config{Addrs: cl.Addrs()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rs.Close() })
		br, err := breaker.New(breaker.Config{Name: "cache", ConsecutiveFailures: 3, OpenDuration: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		durable := rs.Replicated(1)
		acc, err := server.NewCached(server.CachedConfig{
			Collection: "docs", Store: store, Strategy: server.StrategyCacheAside, Shared: true,
			// A never retries its pending invalidations during the test, as if it had died.
			Cache: cache.Config{Store: durable, Breaker: br, RetryInterval: retry},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { acc.Close() })
		return acc, durable
	}
	a, durable := open(time.Hour)
	b, _ := open(0)

	// A document whose cache entry lives on master m, and a key in the same slot.
	id, m := "", -1
	for i := 0; m < 0; i++ {
		cand := fmt.Sprintf("{f%d}doc", i)
		owner, err := cl.MasterOf(ctx, 0, "strata:e:docs/"+cand)
		if err != nil {
			t.Fatal(err)
		}
		if owner >= 0 {
			id, m = cand, owner
		}
	}
	tag := id[:len(id)-len("doc")]
	replica := cl.ReplicaOf(m)

	if _, err := a.Put(ctx, "docs", id, json.RawMessage(`{"n":1}`), -1); err != nil {
		t.Fatal(err)
	}
	read := func() (int64, server.Source, error) {
		d, src, err := b.Get(ctx, "docs", id)
		return d.Version, src, err
	}
	if _, _, err := read(); err != nil { // fills the cache
		t.Fatal(err)
	}
	if v, src, err := read(); err != nil || v != 1 || src.Cache != server.CacheHit {
		t.Fatalf("B's second read: version %d, %+v, %v; want a hit at version 1", v, src, err)
	}
	// The replica has everything the master took up to here, the entry included.
	if err := durable.InvalidateDurable(ctx, "docs/"+tag+"sync", 1, time.Minute); err != nil {
		t.Fatalf("sync the replica: %v", err)
	}

	if err := cl.Nodes[m].Kill(); err != nil {
		t.Fatal(err)
	}
	_, err := a.Put(ctx, "docs", id, json.RawMessage(`{"n":2}`), -1)
	var ue *server.UnconfirmedError
	if !errors.Is(err, server.ErrCacheUnavailable) || errors.As(err, &ue) {
		t.Errorf("A's write while the slot has no master: %v; want ErrCacheUnavailable, refused before the store", err)
	}
	seen, _, err := read() // the cache fails: B reads the store
	if err != nil {
		t.Fatal(err)
	}

	if waitFor(20*time.Second, func() bool { r, err := cl.Role(ctx, replica); return err == nil && r == "master" }) != nil {
		t.Fatal("the replica did not take over within 20s")
	}
	err = waitFor(20*time.Second, func() bool {
		v, src, err := read()
		if err != nil {
			t.Fatal(err)
		}
		if v < seen {
			t.Fatalf("B read version %d from the store during the failover, then version %d (%s) from the cache", seen, v, src.Cache)
		}
		return src.Cache == server.CacheHit
	})
	if err != nil {
		t.Fatalf("B never read from the promoted replica: %v", err)
	}

	// The new master has no replica until the old one rejoins: durable invalidations of its
	// slots fail, and so do A's writes there, before the store; then they go through.
	// (A's client may first need a few calls to find the new master, and A's breaker a read
	// to close: its writes are refused while it is open and A's probes are off.)
	if waitFor(20*time.Second, func() bool {
		_, _, _ = a.Get(ctx, "docs", id)
		_, err = a.Put(ctx, "docs", id, json.RawMessage(`{"n":2}`), -1)
		if err == nil {
			t.Fatal("A's write to a master without replicas succeeded; want ErrNotReplicated")
		}
		return errors.Is(err, redisstore.ErrNotReplicated)
	}) != nil {
		t.Fatalf("A's write to a master without replicas: %v; want ErrNotReplicated", err)
	}
	if err := cl.Nodes[m].Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := cl.WaitHealthy(ctx); err != nil {
		t.Fatal(err)
	}
	var d docstore.Doc
	if waitFor(20*time.Second, func() bool {
		_, _, _ = a.Get(ctx, "docs", id)
		d, err = a.Put(ctx, "docs", id, json.RawMessage(`{"n":2}`), -1)
		return err == nil
	}) != nil {
		t.Fatalf("A's write after the old master rejoined: %v", err)
	}
	if v, _, err := read(); err != nil || v != d.Version {
		t.Fatalf("B after A's write: version %d, %v; want %d", v, err, d.Version)
	}
}

// waitFor polls cond every 20ms until it holds or d passes.
func waitFor(d time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return errors.New("condition not met in time")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}
