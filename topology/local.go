package topology

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/strata-project/strata/config"
	"github.com/strata-project/strata/engines"
)

// database is the database the app servers use on every PostgreSQL shard.
const database = "strata"

// startLocal starts Redis and the PostgreSQL shards (each a primary and its streaming
// replicas) from the machine's binaries, all at once. The engines' files live under
// DataDir/engines and are made anew on each start: PostgreSQL clusters are initialised by
// initdb every time.
func (t *Topology) startLocal(ctx context.Context) (config.AppStore, string, error) {
	dir := filepath.Join(t.cfg.DataDir, "engines")
	if err := os.RemoveAll(dir); err != nil {
		return config.AppStore{}, "", fmt.Errorf("topology: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return config.AppStore{}, "", fmt.Errorf("topology: %w", err)
	}
	// Servers that drop root must reach their directories.
	_ = os.Chmod(dir, 0o711)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		errs  []error
		redis *engines.Redis
	)
	pg := make([]*engines.PostgresCluster, t.cfg.Shards)
	wg.Add(1)
	go func() {
		defer wg.Done()
		r, err := engines.StartRedis(ctx, engines.RedisOptions{Dir: filepath.Join(dir, "redis")})
		mu.Lock()
		redis = r
		errs = append(errs, err)
		mu.Unlock()
	}()
	for i := range pg {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := engines.StartPostgres(ctx, engines.PostgresOptions{
				Dir: filepath.Join(dir, fmt.Sprintf("shard-%d", i+1)), Replicas: t.cfg.Replicas})
			if err == nil {
				if err = c.CreateDatabase(ctx, database); err != nil {
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
	t.redis = redis
	for _, c := range pg {
		if c != nil {
			t.pg = append(t.pg, c)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return config.AppStore{}, "", err
	}
	t.m.CacheKind = "redis"
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
	return store, redis.Addr(), nil
}
