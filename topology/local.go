package topology

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/strata-project/strata/config"
	"github.com/strata-project/strata/engines"
)

// database is the database the app servers use on every PostgreSQL shard.
const database = "strata"

// The local cache tier's shape: a Redis Cluster of three masters, each with a replica.
const (
	clusterMasters  = 3
	clusterReplicas = 1
)

// startLocal starts the Redis Cluster and the PostgreSQL shards (each a primary and its
// streaming replicas) from the machine's binaries, all at once. Their files live under
// DataDir/engines. The shards keep their data across runs: a PostgreSQL cluster found there
// is started on its data (engines.PostgresOptions.Reuse), and initdb runs only for a new
// one. The cache tier starts empty on every run: its nodes take new ports, and an empty
// cache is always consistent with the shards.
func (t *Topology) startLocal(ctx context.Context) (config.AppStore, string, error) {
	dir := filepath.Join(t.cfg.DataDir, "engines")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return config.AppStore{}, "", fmt.Errorf("topology: %w", err)
	}
	// Servers that drop root must reach their directories.
	_ = os.Chmod(dir, 0o711)
	// The cache's files of an earlier run (cluster state naming old ports) are of no use.
	for _, old := range []string{"redis", "redis-cluster"} {
		if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
			return config.AppStore{}, "", fmt.Errorf("topology: %w", err)
		}
	}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		errs    []error
		cluster *engines.RedisCluster
	)
	pg := make([]*engines.PostgresCluster, t.cfg.Shards)
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := engines.StartRedisCluster(ctx, engines.RedisClusterOptions{
			Dir: filepath.Join(dir, "redis-cluster"), Masters: clusterMasters, ReplicasPerMaster: clusterReplicas})
		mu.Lock()
		cluster = c
		errs = append(errs, err)
		mu.Unlock()
	}()
	for i := range pg {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := engines.StartPostgres(ctx, engines.PostgresOptions{
				Dir: filepath.Join(dir, fmt.Sprintf("shard-%d", i+1)), Replicas: t.cfg.Replicas, Reuse: true})
			if err == nil {
				if err = createDatabase(ctx, c); err != nil {
					c.Close()
					c = nil
				}
			}
			mu.Lock()
			pg[i] = c
			errs = append(errs, err)
			mu.Unlock()
		}()
	}
	wg.Wait()
	t.cluster = cluster
	for _, c := range pg {
		if c != nil {
			t.pg = append(t.pg, c)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return config.AppStore{}, "", err
	}
	t.m.CacheKind = fmt.Sprintf("redis cluster: %d masters, %d replicas", clusterMasters, clusterMasters*clusterReplicas)
	store := config.AppStore{Kind: "postgres"}
	for i, c := range pg {
		sh := config.AppShard{Name: fmt.Sprintf("shard-%d", i+1), Primary: c.Primary.DSN(database)}
		for _, r := range c.Replicas {
			sh.Replicas = append(sh.Replicas, r.DSN(database))
		}
		store.Shards = append(store.Shards, sh)
		desc := "postgres primary " + c.Primary.Addr() + ", replicas"
		for _, r := range c.Replicas {
			desc += " " + r.Addr()
		}
		t.m.Shards = append(t.m.Shards, desc)
	}
	return store, strings.Join(cluster.Addrs(), " "), nil
}

// createDatabase creates the app servers' database on a shard unless an earlier run did.
func createDatabase(ctx context.Context, c *engines.PostgresCluster) error {
	var n int
	if err := c.Primary.QueryRow(ctx, "postgres", "SELECT count(*) FROM pg_database WHERE datname = $1", []any{database}, &n); err != nil {
		return err
	}
	if n > 0 {
		return nil
	}
	return c.CreateDatabase(ctx, database)
}

// stopPostgres shuts the shards down cleanly (fast shutdown: a checkpoint, so that the next
// run starts without crash recovery), every shard at once: each primary first, so that its
// replicas receive everything, then the replicas.
func stopPostgres(ctx context.Context, pg []*engines.PostgresCluster) error {
	var wg sync.WaitGroup
	for _, c := range pg {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, n := range c.Nodes() {
				_ = n.Stop(ctx) // ErrNotRunning for a node that chaos killed
			}
			c.Close()
		}()
	}
	wg.Wait()
	return nil
}

// stopCache stops every node of the local cache tier.
func (t *Topology) stopCache(ctx context.Context) error {
	running := 0
	var wg sync.WaitGroup
	for _, n := range t.cluster.Nodes {
		if n.Running() {
			running++
			wg.Add(1)
			go func() { defer wg.Done(); _ = n.Stop(ctx) }()
		}
	}
	wg.Wait()
	if running == 0 {
		return fmt.Errorf("%w: the redis cluster is stopped already", ErrNotApplicable)
	}
	return nil
}

// startCache starts every node of the local cache tier again, empty, and waits until the
// cluster is healthy.
func (t *Topology) startCache(ctx context.Context) error {
	for _, n := range t.cluster.Nodes {
		if n.Running() {
			return fmt.Errorf("%w: redis node %s is running (stop-cache first)", ErrNotApplicable, n.Addr())
		}
	}
	errs := make([]error, len(t.cluster.Nodes))
	var wg sync.WaitGroup
	for i, n := range t.cluster.Nodes {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = n.Restart(ctx) }()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return t.cluster.WaitHealthy(ctx)
}
