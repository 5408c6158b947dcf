package redisstore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/strata-project/strata/cache"
	"github.com/strata-project/strata/cache/redisstore"
	"github.com/strata-project/strata/engines"
	"github.com/strata-project/strata/internal/testenv"
)

// TestInvalidateDurableCluster: an invalidation the master acknowledged but did not
// replicate is lost when the replica takes over, and the replica serves the entry the
// tombstone replaced; InvalidateDurable reports such an invalidation (ErrNotReplicated)
// instead of acknowledging it, and acknowledges one the replica holds.
func TestInvalidateDurableCluster(t *testing.T) {
	c := testenv.RedisCluster(t, engines.RedisClusterOptions{})
	ctx := context.Background()
	s := openClose(t, redisstore.Config{Addrs: c.Addrs()})
	r := s.Replicated(1)
	if r.Replicas() != 1 {
		t.Fatalf("Replicas() = %d, want 1", r.Replicas())
	}
	const key, sync = "{d}k", "{d}sync" // one slot
	m, err := c.MasterOf(ctx, 0, "strata:e:"+key)
	if err != nil {
		t.Fatal(err)
	}
	replica := c.ReplicaOf(m)

	if _, err := r.SetIfNewer(ctx, key, cache.Entry{Value: []byte("v1"), Version: 1}, time.Minute); err != nil {
		t.Fatal(err)
	}
	// Acknowledged by the replica: so is everything the master took before, the entry too.
	if err := r.InvalidateDurable(ctx, sync, 1, time.Minute); err != nil {
		t.Fatalf("InvalidateDurable with the replica up: %v", err)
	}

	// Cut the replica off: stopped, and its replication link closed by the master, so that
	// nothing the master takes from now on reaches it.
	if err := c.Nodes[replica].Pause(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Nodes[replica].Resume() })
	if _, err := c.Nodes[m].Do(ctx, "CLIENT", "KILL", "TYPE", "replica"); err != nil {
		t.Fatal(err)
	}
	if err := r.Invalidate(ctx, key, 2, time.Minute); err != nil {
		t.Fatalf("plain Invalidate: %v (the master alone acknowledges it)", err)
	}
	start := time.Now()
	err = r.InvalidateDurable(ctx, key, 2, time.Minute)
	if !errors.Is(err, redisstore.ErrNotReplicated) || errors.Is(err, cache.ErrUnavailable) {
		t.Fatalf("InvalidateDurable without the replica: %v; want ErrNotReplicated (not ErrUnavailable)", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("InvalidateDurable without the replica took %v, want it bounded by the store's timeout", d)
	}
	if _, ok, err := r.Get(ctx, key); err != nil || ok {
		t.Fatalf("Get on the master after the invalidation: ok=%v, %v; want a miss (the master has the tombstone)", ok, err)
	}

	// The master dies; the replica takes over with what it had.
	if err := c.Nodes[m].Kill(); err != nil {
		t.Fatal(err)
	}
	if err := c.Nodes[replica].Resume(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		e, ok, err := r.Get(ctx, key)
		if err == nil {
			if !ok || e.Version != 1 {
				t.Fatalf("Get on the promoted replica: %+v, ok=%v; want the entry at version 1 (the acknowledged plain invalidation was lost)", e, ok)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the replica did not take over within 30s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The promoted replica has no replica of its own: durable invalidations fail, plain
	// ones succeed.
	if err := r.InvalidateDurable(ctx, key, 2, time.Minute); !errors.Is(err, redisstore.ErrNotReplicated) {
		t.Fatalf("InvalidateDurable on a master without replicas: %v; want ErrNotReplicated", err)
	}
	if _, ok, err := r.Get(ctx, key); err != nil || ok {
		t.Fatalf("Get after the invalidation on the new master: ok=%v, %v; want a miss", ok, err)
	}
}
