package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/strata-project/strata/cache"
	"github.com/strata-project/strata/cache/redisstore"
	"github.com/strata-project/strata/engines"
	"github.com/strata-project/strata/internal/testenv"
)

// TestPingReachesEveryMaster: on a Redis Cluster with one master stopped, a read of a key
// another master owns still succeeds, but Ping fails (it reads on every slot range), and it
// succeeds again once the master is back.
func TestPingReachesEveryMaster(t *testing.T) {
	c := testenv.RedisCluster(t, engines.RedisClusterOptions{})
	ctx := context.Background()
	s := openClose(t, redisstore.Config{Addrs: c.Addrs(), Timeout: 200 * time.Millisecond})
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping on a healthy cluster: %v", err)
	}
	victim, err := c.MasterOf(ctx, 0, "strata:e:a")
	if err != nil {
		t.Fatal(err)
	}
	other := ""
	for i := 0; other == ""; i++ {
		k := fmt.Sprintf("k%d", i)
		m, err := c.MasterOf(ctx, 0, "strata:e:"+k)
		if err != nil {
			t.Fatal(err)
		}
		if m != victim {
			other = k
		}
	}
	if err := c.Nodes[victim].Pause(); err != nil {
		t.Fatal(err)
	}
	resumed := false
	t.Cleanup(func() {
		if !resumed {
			_ = c.Nodes[victim].Resume()
		}
	})
	if _, _, err := s.Get(ctx, other); err != nil {
		t.Fatalf("Get of a key on a live master: %v", err)
	}
	if err := s.Ping(ctx); !errors.Is(err, cache.ErrUnavailable) {
		t.Fatalf("Ping with a master stopped: %v, want an error wrapping cache.ErrUnavailable", err)
	}
	if err := c.Nodes[victim].Resume(); err != nil {
		t.Fatal(err)
	}
	resumed = true
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := s.Ping(ctx)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Ping still failing 20s after the master resumed: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // polling
	}
}

// TestPingSingle: Ping on a single server.
func TestPingSingle(t *testing.T) {
	r := testenv.Redis(t, engines.RedisOptions{})
	s := openClose(t, redisstore.Config{Addrs: []string{r.Addr()}, Timeout: 200 * time.Millisecond})
	if err := s.Ping(context.Background()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if err := r.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(context.Background()); !errors.Is(err, cache.ErrUnavailable) {
		t.Fatalf("Ping of a killed server: %v, want an error wrapping cache.ErrUnavailable", err)
	}
}
