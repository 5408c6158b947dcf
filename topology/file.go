package topology

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/strata-project/strata/config"
)

// fileDefaults checks a Config that has a File and fills in what the file says.
func (c *Config) fileDefaults() error {
	if c.Engines != "" || c.AppServers != 0 || c.Shards != 0 || c.Replicas != 0 || c.CacheBytes != 0 {
		return fmt.Errorf("%w: with a configuration file, the app servers, the cache and the database are the file's: leave Engines, AppServers, Shards, Replicas and CacheBytes unset", ErrConfig)
	}
	f := c.File
	if err := f.CheckUp(); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	for i, k := range f.App.Keys {
		if k.ID == demoKeyID || k.ID == adminKeyID {
			return fmt.Errorf("%w: line %d: app.keys[%d].id: %q is the id of a key that strata up adds itself: pick another",
				ErrConfig, f.Line("app", "keys", i, "id"), i, k.ID)
		}
	}
	switch {
	case f.LB != nil:
		c.AppServers = len(f.LB.Backends)
	case f.Up != nil && f.Up.AppServers > 0:
		c.AppServers = f.Up.AppServers
	default:
		c.AppServers = 3
	}
	if c.Listen == "" && f.LB != nil {
		c.Listen = f.LB.Listen
	}
	if c.AdminListen == "" && f.Up != nil {
		c.AdminListen = f.Up.Admin
	}
	return nil
}

// appAddrs returns where each app server listens: the file's lb.backends, each checked to be
// free on this machine, or free loopback ports.
func (t *Topology) appAddrs() ([]string, error) {
	addrs := make([]string, t.cfg.AppServers)
	if f := t.cfg.File; f != nil && f.LB != nil {
		for i, b := range f.LB.Backends {
			ln, err := net.Listen("tcp", b.Address)
			if err != nil {
				return nil, fmt.Errorf("%w: line %d: lb.backends[%d].address: up runs app server %d there, on this machine, and cannot listen on %s: %v",
					ErrConfig, f.Line("lb", "backends", i, "address"), i, i+1, b.Address, err)
			}
			ln.Close()
			addrs[i] = b.Address
		}
		return addrs, nil
	}
	for i := range addrs {
		a, err := freeAddr()
		if err != nil {
			return nil, err
		}
		addrs[i] = a
	}
	return addrs, nil
}

// startFromFile prepares the store and the cache that the file's app section names: it
// creates the SQLite files (once, before the app servers share them) and describes the
// tiers for the map. It starts no engine.
func (t *Topology) startFromFile(ctx context.Context) (config.AppStore, string, error) {
	a := t.cfg.File.App
	store := a.Store
	if store.Kind == "sqlite" {
		if err := createSQLite(ctx, store); err != nil {
			return config.AppStore{}, "", err
		}
	}
	switch {
	case store.Kind == "sqlite" && len(store.Shards) == 0:
		t.m.Shards = append(t.m.Shards, store.Path)
	case store.Kind == "sqlite":
		for _, sh := range store.Shards {
			t.m.Shards = append(t.m.Shards, sh.Path)
		}
	default:
		for _, sh := range store.Shards {
			desc := sh.Name + ": postgres primary " + dsnHost(sh.Primary, sh.PrimaryEnv)
			if len(sh.Replicas) > 0 {
				desc += ", replicas"
				for _, r := range sh.Replicas {
					desc += " " + dsnHost(r, "")
				}
			}
			t.m.Shards = append(t.m.Shards, desc)
		}
	}
	t.m.CacheNote = strategies(a)
	if a.Cache == nil {
		t.m.CacheKind = "none"
		return store, "", nil
	}
	t.m.CacheKind = a.Cache.Kind
	var addrs []string
	for _, ad := range a.Cache.Addrs {
		if x, err := config.ExpandEnv(ad); err == nil {
			ad = x
		}
		addrs = append(addrs, ad)
	}
	return store, strings.Join(addrs, " "), nil
}

// fileAppConfig is app server i's configuration: the file's app section, listening on its
// own address, with the keys of this run added, the admin endpoints on its API listener
// (where the dashboard scrapes them with the admin key), and its own pending and queue
// directories and write-behind instance name, which app servers must not share.
func (t *Topology) fileAppConfig(i int, listen, demoHash string) *config.File {
	a := *t.cfg.File.App
	a.Listen = listen
	a.AdminListen, a.AdminOpen = "", false
	a.Keys = append(slices.Clone(a.Keys), t.upKeys(demoHash)...)
	if a.Cache != nil {
		c := *a.Cache
		sub := fmt.Sprintf("app-%d", i+1)
		if c.PendingDir != "" {
			c.PendingDir = filepath.Join(c.PendingDir, sub)
		}
		if c.QueueDir != "" {
			c.QueueDir = filepath.Join(c.QueueDir, sub)
		}
		if c.Instance != "" {
			c.Instance = fmt.Sprintf("%s-%d", c.Instance, i+1)
		}
		a.Cache = &c
	}
	return &config.File{App: &a}
}

// dsnHost returns the host:port of a PostgreSQL DSN for the map, never its user or password;
// env names the variable a DSN comes from when it is not in the file.
func dsnHost(dsn, env string) string {
	if env != "" {
		dsn = os.Getenv(env)
	} else if x, err := config.ExpandEnv(dsn); err == nil {
		dsn = x
	}
	u, err := url.Parse(dsn)
	if err != nil || u.Host == "" {
		if env != "" {
			return "(from $" + env + ")"
		}
		return "(DSN)"
	}
	return u.Host
}

// strategies describes how the app servers use the cache tier, collection by collection.
func strategies(a *config.App) string {
	var names []string
	for name := range a.Collections {
		names = append(names, name)
	}
	slices.Sort(names)
	var parts []string
	for _, name := range names {
		c := a.Collections[name]
		parts = append(parts, fmt.Sprintf("%s %s/%s", name, cmpOr(c.Strategy, "none"), cmpOr(c.Consistency, "strong")))
	}
	return strings.Join(parts, ", ")
}
