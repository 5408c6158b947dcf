package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/strata-project/strata/breaker"
	"github.com/strata-project/strata/config"
	"github.com/strata-project/strata/docstore"
	"github.com/strata-project/strata/docstore/postgres"
	"github.com/strata-project/strata/docstore/sqlite"
	"github.com/strata-project/strata/replica"
	"github.com/strata-project/strata/replica/pgreplica"
	"github.com/strata-project/strata/server"
	"github.com/strata-project/strata/shard"
)

// openedStore is the configured document store with what the app server needs around it.
type openedStore struct {
	docstore.Store
	// Replicas is the replica status of every PostgreSQL shard, for metrics.
	Replicas map[string]func() []replica.NodeStatus
	// Breakers guard each shard's writes ("store" or "store:NAME"), for metrics.
	Breakers map[string]*breaker.Breaker
	// Ready is the store's readiness check.
	Ready func(context.Context) error
}

// openStore opens the configured document store: one SQLite file, or shards (SQLite files or
// PostgreSQL primaries with replicas) placed by the sharded store. Each shard's writes go
// through a breaker of its own (see guardedBackend).
func openStore(ctx context.Context, a *config.App, log *slog.Logger) (*openedStore, error) {
	if a.Store.Kind == "sqlite" && len(a.Store.Shards) == 0 {
		s, err := sqlite.Open(ctx, sqlite.Config{Path: a.Store.Path, MaxBodyBytes: a.MaxBodyBytes})
		if err != nil {
			return nil, err
		}
		bs := map[string]docstore.Backend{"store": s}
		brs, err := guardShards(bs)
		if err != nil {
			s.Close()
			return nil, err
		}
		return &openedStore{Store: bs["store"], Breakers: map[string]*breaker.Breaker{"store": brs["store:store"]}, Ready: readyAnyShard(bs, brs)}, nil
	}
	backends, names, status, err := openBackends(ctx, a, log)
	if err != nil {
		return nil, err
	}
	brs, err := guardShards(backends)
	if err != nil {
		closeBackends(backends)
		return nil, err
	}
	o := &openedStore{Replicas: status, Breakers: brs, Ready: readyAnyShard(backends, brs)}
	if len(names) == 1 && a.Store.MapFile == "" {
		o.Store = backends[names[0]]
		return o, nil
	}
	m, err := loadMap(a.Store.MapFile, names)
	if err != nil {
		closeBackends(backends)
		return nil, err
	}
	if o.Store, err = docstore.NewSharded(m, backends, docstore.ShardedConfig{}); err != nil {
		closeBackends(backends)
		return nil, err
	}
	return o, nil
}

// openBackends opens every configured shard, in configuration order.
func openBackends(ctx context.Context, a *config.App, log *slog.Logger) (map[string]docstore.Backend, []string, map[string]func() []replica.NodeStatus, error) {
	status := map[string]func() []replica.NodeStatus{}
	backends := map[string]docstore.Backend{}
	var names []string
	for i, sh := range a.Store.Shards {
		b, st, err := openShard(ctx, a, uint32(i), sh, log)
		if err != nil {
			closeBackends(backends)
			return nil, nil, nil, fmt.Errorf("shard %s: %w", sh.Name, err)
		}
		backends[sh.Name] = b
		if st != nil {
			status[sh.Name] = st
		}
		names = append(names, sh.Name)
	}
	return backends, names, status, nil
}

func openShard(ctx context.Context, a *config.App, num uint32, sh config.AppShard, log *slog.Logger) (docstore.Backend, func() []replica.NodeStatus, error) {
	if a.Store.Kind == "sqlite" {
		b, err := sqlite.Open(ctx, sqlite.Config{Path: sh.Path, MaxBodyBytes: a.MaxBodyBytes})
		return b, nil, err
	}
	primary := sh.Primary
	if sh.PrimaryEnv != "" {
		if primary = os.Getenv(sh.PrimaryEnv); primary == "" {
			return nil, nil, fmt.Errorf("environment variable %s is not set", sh.PrimaryEnv)
		}
	}
	primary, err := config.ExpandEnv(primary)
	if err != nil {
		return nil, nil, err
	}
	pc := pgreplica.Config{Shard: num, Primary: pgreplica.Node{Name: sh.Name + "-primary", DSN: primary}, Logger: log}
	for j, r := range sh.Replicas {
		dsn, err := config.ExpandEnv(r)
		if err != nil {
			return nil, nil, err
		}
		pc.Replicas = append(pc.Replicas, pgreplica.Node{Name: fmt.Sprintf("%s-replica%d", sh.Name, j+1), DSN: dsn})
	}
	set, err := pgreplica.Open(ctx, pc)
	if err != nil {
		return nil, nil, err
	}
	st, err := postgres.Open(ctx, postgres.Config{Writes: set.Writer(), Reads: set.Reader(), MaxBodyBytes: a.MaxBodyBytes})
	if err != nil {
		set.Close()
		return nil, nil, err
	}
	return setBackend{Store: st, set: set}, set.Status, nil
}

func closeBackends(bs map[string]docstore.Backend) {
	for _, b := range bs {
		b.Close()
	}
}

// setBackend closes a shard's replica set with its store.
type setBackend struct {
	*postgres.Store
	set *pgreplica.Set
}

func (b setBackend) Close() error {
	err := b.Store.Close()
	b.set.Close()
	return err
}

// loadMap reads the placement map from path, or computes one over names (and writes it to
// path, when given, so that every app server and `strata reshard` agree on it). A map that
// names a shard missing from the configuration is refused.
func loadMap(path string, names []string) (*shard.Map, error) {
	if path != "" {
		data, err := os.ReadFile(path)
		switch {
		case err == nil:
			m, err := shard.DecodeMap(data)
			if err != nil {
				return nil, fmt.Errorf("placement map %s: %w", path, err)
			}
			known := map[string]bool{}
			for _, n := range names {
				known[n] = true
			}
			for _, id := range m.Shards() {
				if !known[id] {
					return nil, fmt.Errorf("placement map %s places partitions on shard %q, which the configuration does not list", path, id)
				}
			}
			return m, nil
		case !errors.Is(err, os.ErrNotExist):
			return nil, fmt.Errorf("placement map: %w", err)
		}
	}
	m, err := shard.NewMap(names, 0)
	if err != nil {
		return nil, err
	}
	if path != "" {
		if err := saveMap(path, m); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// saveMap writes the map to path atomically: a reader sees the old map or the new one.
func saveMap(path string, m *shard.Map) error {
	data, err := m.MarshalJSON()
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".map-*.json")
	if err != nil {
		return fmt.Errorf("placement map: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("placement map: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("placement map: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("placement map: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("placement map: %w", err)
	}
	return nil
}

// guardedBackend puts a breaker in front of one shard's writes. Reads are not guarded: a
// PostgreSQL shard's reads fail over to its replicas (and fail fast without a primary through
// the replica router), and refusing them because writes failed would turn a primary outage
// into a read outage. One breaker per shard keeps one shard's failure from refusing
// requests to the others.
type guardedBackend struct {
	docstore.Backend
	w server.BreakerStore // the same backend, writes through the breaker
}

func guard(b docstore.Backend, br *breaker.Breaker) docstore.Backend {
	return guardedBackend{Backend: b, w: server.BreakerStore{Store: b, Breaker: br}}
}

func (g guardedBackend) Put(ctx context.Context, c, id string, body json.RawMessage) (docstore.Doc, error) {
	return g.w.Put(ctx, c, id, body)
}

func (g guardedBackend) PutIfVersion(ctx context.Context, c, id string, body json.RawMessage, v int64) (docstore.Doc, error) {
	return g.w.PutIfVersion(ctx, c, id, body, v)
}

func (g guardedBackend) Delete(ctx context.Context, c, id string) (int64, error) {
	return g.w.Delete(ctx, c, id)
}

func (g guardedBackend) DeleteIfVersion(ctx context.Context, c, id string, v int64) (int64, error) {
	return g.w.DeleteIfVersion(ctx, c, id, v)
}

// shardBreakerOpen is how long a shard's write breaker stays open before a probe: one write
// every 2 s to a shard that is down costs nothing, and the shard takes writes again within
// about 2 s of its return (the breaker package's default of 10 s kept a healed shard
// refusing writes for up to 10 s).
const shardBreakerOpen = 2 * time.Second

// guardShards wraps every backend in its own write breaker, named "store:NAME" in metrics.
func guardShards(backends map[string]docstore.Backend) (map[string]*breaker.Breaker, error) {
	brs := map[string]*breaker.Breaker{}
	for name, b := range backends {
		br, err := breaker.New(breaker.Config{Name: "store:" + name, Classify: server.ClassifyStoreError, OpenDuration: shardBreakerOpen})
		if err != nil {
			return nil, err
		}
		backends[name] = guard(b, br)
		brs["store:"+name] = br
	}
	return brs, nil
}

// readyAnyShard is the app server's store readiness check over shards: ready while at least
// one shard answers a (strong, so primary) read of a reserved document. A shard without its
// primary does not make the app server unready (the balancer would then drain every app
// server, and the healthy shards with them); its writes fail with 503 on their own. Each read
// goes through the shard's write breaker, so that the balancer's health checks are also the
// probes that close a shard's breaker once its primary is back, writes or not.
func readyAnyShard(backends map[string]docstore.Backend, brs map[string]*breaker.Breaker) func(context.Context) error {
	return func(ctx context.Context) error {
		errs := make(chan error, len(backends))
		for name, b := range backends {
			go func() {
				tok, err := brs["store:"+name].Allow()
				if err != nil {
					errs <- err
					return
				}
				_, err = b.Get(ctx, server.IdempotencyCollection, "readyz")
				if errors.Is(err, docstore.ErrNotFound) {
					err = nil
				}
				tok.Done(err)
				errs <- err
			}()
		}
		var all []error
		for range backends {
			err := <-errs
			if err == nil {
				return nil
			}
			all = append(all, err)
		}
		return errors.Join(all...)
	}
}
