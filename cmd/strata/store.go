package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/strata-project/strata/config"
	"github.com/strata-project/strata/docstore"
	"github.com/strata-project/strata/docstore/postgres"
	"github.com/strata-project/strata/docstore/sqlite"
	"github.com/strata-project/strata/replica"
	"github.com/strata-project/strata/replica/pgreplica"
	"github.com/strata-project/strata/shard"
)

// openStore opens the configured document store: one SQLite file, or shards (SQLite files or
// PostgreSQL primaries with replicas) placed by the sharded store. It returns the replica
// status of every PostgreSQL shard, for metrics.
func openStore(ctx context.Context, a *config.App, log *slog.Logger) (docstore.Store, map[string]func() []replica.NodeStatus, error) {
	if a.Store.Kind == "sqlite" && len(a.Store.Shards) == 0 {
		s, err := sqlite.Open(ctx, sqlite.Config{Path: a.Store.Path, MaxBodyBytes: a.MaxBodyBytes})
		return s, nil, err
	}
	backends, names, status, err := openBackends(ctx, a, log)
	if err != nil {
		return nil, nil, err
	}
	if len(names) == 1 && a.Store.MapFile == "" {
		return backends[names[0]], status, nil
	}
	m, err := loadMap(a.Store.MapFile, names)
	if err != nil {
		closeBackends(backends)
		return nil, nil, err
	}
	s, err := docstore.NewSharded(m, backends, docstore.ShardedConfig{})
	if err != nil {
		closeBackends(backends)
		return nil, nil, err
	}
	return s, status, nil
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
