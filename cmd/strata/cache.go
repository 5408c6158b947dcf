package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/strata-project/strata/breaker"
	"github.com/strata-project/strata/cache"
	"github.com/strata-project/strata/cache/docsource"
	"github.com/strata-project/strata/cache/memcachestore"
	"github.com/strata-project/strata/cache/memstore"
	"github.com/strata-project/strata/cache/nodestore"
	"github.com/strata-project/strata/cache/redisstore"
	"github.com/strata-project/strata/cache/writebehind"
	"github.com/strata-project/strata/cache/writebehind/redisqueue"
	"github.com/strata-project/strata/config"
	"github.com/strata-project/strata/docstore"
	"github.com/strata-project/strata/server"
)

// cacheTier is the opened cache section: one store and one breaker shared by the cached
// collections, and what to close at shutdown.
type cacheTier struct {
	cfg    *config.AppCache
	store  cache.Store
	redis  *redisstore.Store // kind redis, for write-behind streams
	br     *breaker.Breaker
	closes []func() error // cached access paths, closed before the store
}

// openCache opens the configured cache store and its breaker. It returns nil when the
// configuration has no cache section.
func openCache(a *config.App) (*cacheTier, error) {
	k := a.Cache
	if k == nil {
		return nil, nil
	}
	addrs := make([]string, len(k.Addrs))
	for i, ad := range k.Addrs {
		v, err := config.ExpandEnv(ad)
		if err != nil {
			return nil, fmt.Errorf("cache: %w", err)
		}
		addrs[i] = v
	}
	t := &cacheTier{cfg: k}
	var err error
	switch k.Kind {
	case "memory":
		t.store, err = memstore.New(memstore.Config{MaxBytes: k.MaxBytes})
	case "redis":
		t.redis, err = redisstore.New(redisstore.Config{Addrs: addrs, Timeout: k.Timeout.D()})
		t.store = t.redis
		if err == nil && k.InvalidateReplicas > 0 {
			// Strong writes invalidate through it durably (server.DurableInvalidator).
			t.store = t.redis.Replicated(k.InvalidateReplicas)
		}
	case "memcached":
		t.store, err = memcachestore.New(memcachestore.Config{Addrs: addrs, Timeout: k.Timeout.D()})
	case "node":
		tok := os.Getenv(k.TokenEnv)
		if tok == "" {
			return nil, fmt.Errorf("cache: environment variable %s (the cache node's token) is not set", k.TokenEnv)
		}
		t.store, err = nodestore.New(nodestore.Config{Addr: addrs[0], Token: []byte(tok), Timeout: k.Timeout.D()})
	default:
		return nil, fmt.Errorf("cache: unknown kind %q", k.Kind)
	}
	if err != nil {
		return nil, fmt.Errorf("cache %s: %w", k.Kind, err)
	}
	t.br, err = breaker.New(breaker.Config{
		Name:                "cache",
		ConsecutiveFailures: k.BreakerFailures,
		OpenDuration:        cmpOr(k.BreakerOpen.D(), 2*time.Second),
	})
	if err != nil {
		t.store.Close()
		return nil, err
	}
	return t, nil
}

// access builds the cached access path of one collection.
func (t *cacheTier) access(ctx context.Context, name string, c config.AppCollection, store docstore.Store, log *slog.Logger) (*server.Cached, error) {
	cc := cache.Config{
		Store: t.store, Breaker: t.br, TTL: c.TTL.D(), NegativeTTL: c.NegativeTTL.D(), Logger: log,
		EarlyRefresh: c.EarlyRefresh,
	}
	if t.cfg.Shared() {
		// A shared cache can stop while this server gets no reads: probe it so that the
		// breaker opens, and the next reads skip it, within about this.
		cc.IdleProbe = 250 * time.Millisecond
	}
	if t.cfg.PendingDir != "" {
		if err := os.MkdirAll(t.cfg.PendingDir, 0o700); err != nil {
			return nil, fmt.Errorf("cache pending_dir: %w", err)
		}
		cc.PendingPath = filepath.Join(t.cfg.PendingDir, name+".pending")
	}
	cfg := server.CachedConfig{
		Collection:  name,
		Store:       store,
		Strategy:    c.Strategy,
		Consistency: server.Consistency(cmpOr(c.Consistency, "strong")),
		Shared:      t.cfg.Shared(),
		Cache:       cc,
	}
	// The flusher's hook needs the access path, which needs the buffer: a forward reference.
	var acc *server.Cached
	if c.Strategy == server.StrategyWriteBehind {
		q, err := t.queue(ctx, name)
		if err != nil {
			return nil, err
		}
		wb, err := writebehind.New(writebehind.Config{
			Queue:     q,
			Target:    docsource.New(store, name),
			Logger:    log,
			OnApplied: func(id string, v int64) { acc.Applied(id, v) },
		})
		if err != nil {
			q.Close()
			return nil, fmt.Errorf("collection %s: %w", name, err)
		}
		cfg.WriteBehind = wb
	}
	acc, err := server.NewCached(cfg)
	if err != nil {
		if cfg.WriteBehind != nil {
			cfg.WriteBehind.Close()
		}
		return nil, fmt.Errorf("collection %s: %w", name, err)
	}
	t.closes = append(t.closes, acc.Close)
	return acc, nil
}

// queue opens the durable write-behind queue of a collection: a local log under queue_dir,
// or this app server's Redis Stream.
func (t *cacheTier) queue(ctx context.Context, name string) (writebehind.Queue, error) {
	if t.cfg.QueueDir != "" {
		return writebehind.OpenLog(writebehind.LogConfig{Dir: filepath.Join(t.cfg.QueueDir, name)})
	}
	if t.redis == nil || t.cfg.Instance == "" {
		return nil, fmt.Errorf("collection %s: write-behind needs app.cache.queue_dir, or kind redis with app.cache.instance", name)
	}
	return redisqueue.New(ctx, redisqueue.Config{
		Client:   t.redis.Client(),
		Stream:   "strata:wb:" + name + ":" + t.cfg.Instance,
		Consumer: t.cfg.Instance,
	})
}

// Close closes the access paths (stopping their goroutines; unapplied write-behind writes
// stay in their queues), then the store.
func (t *cacheTier) Close() error {
	if t == nil {
		return nil
	}
	for _, c := range t.closes {
		c()
	}
	return t.store.Close()
}
