package config

import (
	"fmt"
	"os"
	"strings"
	"time"
)

// App is the app: section, read by `strata app`.
type App struct {
	// Listen is the API's address. Default ":8080".
	Listen string `yaml:"listen"`
	// AdminListen is the admin listener's address (metrics, pprof, reload). Default "":
	// none; the admin endpoints are then under /admin/ on Listen, for the admin scope.
	AdminListen string `yaml:"admin_listen"`
	// AdminOpen serves AdminListen without authentication (for a loopback or private
	// address). Default false.
	AdminOpen bool `yaml:"admin_open"`
	// TLS turns on TLS when set.
	TLS *AppTLS `yaml:"tls"`
	// Timeouts bound slow clients and slow work.
	Timeouts AppTimeouts `yaml:"timeouts"`
	// MaxBodyBytes bounds request bodies. Default 1 MiB.
	MaxBodyBytes int `yaml:"max_body_bytes"`
	// MaxHeaderBytes bounds request headers. Default 16 KiB.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// Store is the document store. Required.
	Store AppStore `yaml:"store"`
	// Cache is the shared cache tier, needed by any strategy but none. Default nil: no cache.
	Cache *AppCache `yaml:"cache"`
	// Collections are the served collections by name. At least one is required.
	Collections map[string]AppCollection `yaml:"collections"`
	// Keys are the API keys, stored hashed.
	Keys []AppKey `yaml:"keys"`
	// Anonymous serves requests without a key. Default false.
	Anonymous bool `yaml:"anonymous"`
	// AnonymousScopes are the scopes of anonymous requests. Default ["read:*"] when
	// Anonymous is true.
	AnonymousScopes []string `yaml:"anonymous_scopes"`
	// SessionKeyEnv names the environment variable holding the secret (at least 16 bytes)
	// that signs session tokens; every app server must share it. Required when a collection
	// uses session consistency.
	SessionKeyEnv string `yaml:"session_key_env"`
	// TrustedProxies are the load balancers' prefixes whose X-Forwarded-For is believed.
	TrustedProxies []string `yaml:"trusted_proxies"`
}

// AppTLS names the certificate and key files.
type AppTLS struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// AppTimeouts are the app server's timeouts. Zero fields take the defaults.
type AppTimeouts struct {
	ReadHeader Duration `yaml:"read_header"` // default 5s
	Read       Duration `yaml:"read"`        // default 30s
	Write      Duration `yaml:"write"`       // default 30s; keep above Request
	Idle       Duration `yaml:"idle"`        // default 120s
	Request    Duration `yaml:"request"`     // default 10s: the work of one request
	Shutdown   Duration `yaml:"shutdown"`    // default 30s: draining on SIGTERM
	// IdempotencyLease is how long a claimed Idempotency-Key belongs to its first request
	// before a retry may run it again (the first app server presumed dead). Default twice
	// request, at least 5s; it must be above request.
	IdempotencyLease Duration `yaml:"idempotency_lease"`
	// IdempotencyTTL is how long a stored answer replays to retries. Default 24h.
	IdempotencyTTL Duration `yaml:"idempotency_ttl"`
}

// AppStore is the document store: one SQLite file, SQLite shards, or PostgreSQL shards.
type AppStore struct {
	// Kind is "sqlite" or "postgres". Required.
	Kind string `yaml:"kind"`
	// Path is the SQLite database file of an unsharded store (kind sqlite, no shards).
	Path string `yaml:"path"`
	// Shards are the shards: SQLite files (name and path) or PostgreSQL primaries with
	// replicas. Several shards are placed by the sharded store.
	Shards []AppShard `yaml:"shards"`
	// MapFile is the JSON file holding the placement map (partition -> shard) of a sharded
	// store. When it exists, the store follows it (that is how `strata reshard` hands a new
	// placement to the app servers); when it does not, the map is computed from the shard
	// names and written there. Default "": computed at every start, and resharding is off.
	MapFile string `yaml:"map_file"`
}

// AppShard is one PostgreSQL shard: a primary and its replicas. DSNs may hold ${VAR}
// references, expanded from the environment at start (so passwords stay out of the file),
// or be given whole by the *_env fields.
type AppShard struct {
	// Name identifies the shard. Required, unique.
	Name string `yaml:"name"`
	// Path is the shard's SQLite file (kind sqlite).
	Path string `yaml:"path"`
	// Primary is the primary's DSN; PrimaryEnv names a variable holding it instead.
	Primary    string `yaml:"primary"`
	PrimaryEnv string `yaml:"primary_env"`
	// Replicas are the replicas' DSNs.
	Replicas []string `yaml:"replicas"`
}

// AppCache is the cache tier.
type AppCache struct {
	// Kind is "memory" (per process: not shared between app servers), "redis" (one address:
	// a standalone server; several: nodes of a Redis Cluster), "memcached", or "node" (a
	// Strata cache node, `strata cachenode`, as `strata up` runs it). Required.
	Kind string `yaml:"kind"`
	// Addrs are the servers (redis, memcached; exactly one for node). An address may be a
	// ${VAR} reference, expanded from the environment at start (as `strata up` hands the
	// cache node's address to its app servers).
	Addrs []string `yaml:"addrs"`
	// TokenEnv names the environment variable holding a cache node's shared token. Required
	// for kind node.
	TokenEnv string `yaml:"token_env"`
	// Timeout bounds every cache call. Default 250ms (200ms for node).
	Timeout Duration `yaml:"timeout"`
	// MaxBytes is the capacity of a memory cache. Default 64 MiB.
	MaxBytes int64 `yaml:"max_bytes"`
	// PendingDir holds the files of invalidations that could not be delivered yet (the cache
	// was down), one per collection, replayed at start. Default "": kept in memory only, lost
	// if the app server crashes while the cache is down.
	PendingDir string `yaml:"pending_dir"`
	// QueueDir holds the durable write-behind queues (local append-only logs, one folder per
	// collection). Default "": with kind redis, the queues are Redis Streams named after
	// Instance; otherwise write-behind needs QueueDir.
	QueueDir string `yaml:"queue_dir"`
	// Instance names this app server in the Redis Streams write-behind queues (each app server
	// has its own stream per collection). Required for write-behind over kind redis without
	// QueueDir; unique per app server.
	Instance string `yaml:"instance"`
	// Breaker trips after this many cache failures in a row; while open, reads go to the
	// store and writes of strong and session collections get 503. Default 5.
	BreakerFailures int `yaml:"breaker_failures"`
	// BreakerOpen is how long the breaker stays open before probing. Default 2s: a probe
	// every 2 s while the cache is down costs nothing, and the cache is used again within
	// about 2 s of its return.
	BreakerOpen Duration `yaml:"breaker_open"`
	// InvalidateReplicas, for kind redis, is how many replicas of a key's master must hold
	// the tombstone a write of a strong collection leaves before it writes the store (Redis
	// WAIT): Redis replicates asynchronously, and a replica promoted after its master died
	// has lost the invalidations the master took last, so it could serve values older than
	// writes the store already holds. Set it to 1 for a Redis Cluster whose masters have
	// replicas (`strata up` does). While a master has fewer replicas than this (after a
	// failover, until the old master rejoins), strong writes to its slots get 503. Default 0:
	// no wait, for a Redis without replicas.
	InvalidateReplicas int `yaml:"invalidate_replicas"`
}

// Shared reports whether the cache is shared by every app server (not a per-process memory).
func (c *AppCache) Shared() bool { return c != nil && c.Kind != "memory" }

// AppCollection is how one collection is served.
type AppCollection struct {
	// Strategy is none, cache-aside, read-through, write-through or write-behind. Default
	// none.
	Strategy string `yaml:"strategy"`
	// Consistency is strong, session or eventual. Default strong.
	Consistency string `yaml:"consistency"`
	// TTL is how long a cached document is kept. Default 5m.
	TTL Duration `yaml:"ttl"`
	// NegativeTTL is how long a cached not-found is kept. Default 30s.
	NegativeTTL Duration `yaml:"negative_ttl"`
	// EarlyRefresh is the beta of probabilistic early refresh (XFetch): a hit on an entry
	// near its expiry reloads it in the background, so that hot documents do not expire
	// under load. 1 is the usual value, larger refreshes earlier. Default 0: off.
	EarlyRefresh float64 `yaml:"early_refresh"`
	// RateLimit limits each principal's requests on the collection. Default none.
	RateLimit *AppRateLimit `yaml:"rate_limit"`
}

// AppRateLimit is Rate requests per Period, Burst at once.
type AppRateLimit struct {
	Rate   int      `yaml:"rate"`   // required, > 0
	Period Duration `yaml:"period"` // default 1s
	Burst  int      `yaml:"burst"`  // default Rate
}

// AppKey is an API key, stored as the hex SHA-256 of the key (never the key).
type AppKey struct {
	// ID names the key in logs and metrics. Required, unique.
	ID string `yaml:"id"`
	// SHA256 is the key's hash in hex; SHA256Env names a variable holding it instead.
	SHA256    string `yaml:"sha256"`
	SHA256Env string `yaml:"sha256_env"`
	// Scopes are read:COLLECTION, write:COLLECTION (COLLECTION may be *) and admin.
	Scopes []string `yaml:"scopes"`
	// RateLimit limits the key across collections. Default none.
	RateLimit *AppRateLimit `yaml:"rate_limit"`
}

// Strategies lists the caching strategies.
var Strategies = []string{"none", "cache-aside", "read-through", "write-through", "write-behind"}

// Consistencies lists the consistency modes.
var Consistencies = []string{"strong", "session", "eventual"}

// ExpandEnv expands ${VAR} and $VAR references from the environment, failing on a
// variable that is not set (an empty password is rarely what was meant).
func ExpandEnv(s string) (string, error) {
	var missing []string
	out := os.Expand(s, func(k string) string {
		v, ok := os.LookupEnv(k)
		if !ok {
			missing = append(missing, k)
		}
		return v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("%w: environment variable %s is not set", ErrInvalid, strings.Join(missing, ", "))
	}
	return out, nil
}

func (c *App) validate(at lineFunc) error {
	for _, l := range []struct{ field, v string }{{"listen", c.Listen}, {"admin_listen", c.AdminListen}} {
		if l.v != "" {
			if err := validHostPort(l.v, true); err != nil {
				return errAt(at("app", l.field), "app."+l.field, "%v", err)
			}
		}
	}
	if c.AdminOpen && c.AdminListen == "" {
		return errAt(at("app", "admin_open"), "app.admin_open", "needs admin_listen")
	}
	if c.TLS != nil && (c.TLS.Cert == "" || c.TLS.Key == "") {
		return errAt(at("app", "tls"), "app.tls", "both cert and key are required")
	}
	if c.MaxBodyBytes < 0 || c.MaxHeaderBytes < 0 {
		return errAt(at("app"), "app", "max_body_bytes and max_header_bytes must not be negative")
	}
	t := c.Timeouts
	if t.IdempotencyLease < 0 || t.IdempotencyTTL < 0 {
		return errAt(at("app", "timeouts"), "app.timeouts", "idempotency_lease and idempotency_ttl must not be negative")
	}
	req := t.Request
	if req == 0 {
		req = Duration(10 * time.Second)
	}
	if t.IdempotencyLease != 0 && t.IdempotencyLease <= req {
		return errAt(at("app", "timeouts", "idempotency_lease"), "app.timeouts.idempotency_lease",
			"%v must be above the request timeout (%v): a retry could run a request again while it still runs", t.IdempotencyLease.D(), req.D())
	}
	if err := c.validateStore(at); err != nil {
		return err
	}
	if c.Cache != nil {
		if err := c.validateCache(at); err != nil {
			return err
		}
	}
	if len(c.Collections) == 0 {
		return errAt(at("app", "collections"), "app.collections", "at least one collection is required")
	}
	session := false
	for name, col := range c.Collections {
		if err := c.validateCollection(at, name, col); err != nil {
			return err
		}
		session = session || col.Consistency == "session"
	}
	if session && c.SessionKeyEnv == "" {
		return errAt(at("app", "session_key_env"), "app.session_key_env",
			"a collection uses session consistency: name the environment variable holding the token signing key")
	}
	ids := map[string]bool{}
	for i, k := range c.Keys {
		field := fmt.Sprintf("app.keys[%d]", i)
		if !validToken(k.ID) || k.ID == "anonymous" {
			return errAt(at("app", "keys", i, "id"), field+".id", "%q: want a non-empty token other than anonymous", k.ID)
		}
		if ids[k.ID] {
			return errAt(at("app", "keys", i, "id"), field+".id", "%q given twice", k.ID)
		}
		ids[k.ID] = true
		switch {
		case (k.SHA256 == "") == (k.SHA256Env == ""):
			return errAt(at("app", "keys", i), field, "give exactly one of sha256 and sha256_env")
		case k.SHA256 != "":
			h := strings.TrimPrefix(k.SHA256, "sha256:")
			if len(h) != 64 || !isHex(h) {
				return errAt(at("app", "keys", i, "sha256"), field+".sha256", "want the 64 hex digits of the key's SHA-256 (never the key itself)")
			}
		}
		if len(k.Scopes) == 0 {
			return errAt(at("app", "keys", i, "scopes"), field+".scopes", "at least one scope")
		}
		for j, s := range k.Scopes {
			if err := c.checkScope(s); err != nil {
				return errAt(at("app", "keys", i, "scopes", j), field+".scopes", "%v", err)
			}
		}
		if err := checkAppRate(k.RateLimit); err != nil {
			return errAt(at("app", "keys", i, "rate_limit"), field+".rate_limit", "%v", err)
		}
	}
	if len(c.AnonymousScopes) > 0 && !c.Anonymous {
		return errAt(at("app", "anonymous_scopes"), "app.anonymous_scopes", "set anonymous: true to turn anonymous access on")
	}
	for j, s := range c.AnonymousScopes {
		if err := c.checkScope(s); err != nil || s == "admin" {
			return errAt(at("app", "anonymous_scopes", j), "app.anonymous_scopes", "%q: want read:C or write:C", s)
		}
	}
	for i, p := range c.TrustedProxies {
		if _, err := ParsePrefix(p); err != nil {
			return errAt(at("app", "trusted_proxies", i), "app.trusted_proxies", "%v", err)
		}
	}
	return nil
}

func (c *App) validateStore(at lineFunc) error {
	s := c.Store
	switch s.Kind {
	case "sqlite":
		if (s.Path == "") == (len(s.Shards) == 0) {
			return errAt(at("app", "store"), "app.store", "give either path (one SQLite file) or shards (each with a name and a path)")
		}
		names := map[string]bool{}
		for i, sh := range s.Shards {
			field := fmt.Sprintf("app.store.shards[%d]", i)
			if !validToken(sh.Name) || names[sh.Name] {
				return errAt(at("app", "store", "shards", i, "name"), field+".name", "%q: want a unique token", sh.Name)
			}
			names[sh.Name] = true
			if sh.Path == "" || sh.Primary != "" || sh.PrimaryEnv != "" || len(sh.Replicas) > 0 {
				return errAt(at("app", "store", "shards", i), field, "a SQLite shard has a path and no primary or replicas")
			}
		}
	case "postgres":
		if len(s.Shards) == 0 {
			return errAt(at("app", "store", "shards"), "app.store.shards", "at least one shard is required")
		}
		names := map[string]bool{}
		for i, sh := range s.Shards {
			field := fmt.Sprintf("app.store.shards[%d]", i)
			if !validToken(sh.Name) || names[sh.Name] {
				return errAt(at("app", "store", "shards", i, "name"), field+".name", "%q: want a unique token", sh.Name)
			}
			names[sh.Name] = true
			if (sh.Primary == "") == (sh.PrimaryEnv == "") {
				return errAt(at("app", "store", "shards", i), field, "give exactly one of primary and primary_env")
			}
			if sh.Path != "" {
				return errAt(at("app", "store", "shards", i, "path"), field+".path", "path is for SQLite shards")
			}
			for j, r := range sh.Replicas {
				if strings.TrimSpace(r) == "" {
					return errAt(at("app", "store", "shards", i, "replicas", j), field+".replicas", "empty DSN")
				}
			}
		}
	default:
		return errAt(at("app", "store", "kind"), "app.store.kind", "%q: want sqlite or postgres", s.Kind)
	}
	if s.MapFile != "" && len(s.Shards) < 1 {
		return errAt(at("app", "store", "map_file"), "app.store.map_file", "a placement map needs shards")
	}
	return nil
}

func (c *App) validateCache(at lineFunc) error {
	k := c.Cache
	switch k.Kind {
	case "memory":
		if len(k.Addrs) > 0 {
			return errAt(at("app", "cache", "addrs"), "app.cache.addrs", "a memory cache has no addresses")
		}
	case "redis", "memcached", "node":
		if len(k.Addrs) == 0 {
			return errAt(at("app", "cache", "addrs"), "app.cache.addrs", "at least one address for %s", k.Kind)
		}
		for i, a := range k.Addrs {
			if strings.Contains(a, "$") {
				continue // expanded from the environment at start
			}
			if err := validHostPort(a, false); err != nil {
				return errAt(at("app", "cache", "addrs", i), "app.cache.addrs", "%v", err)
			}
		}
	default:
		return errAt(at("app", "cache", "kind"), "app.cache.kind", "%q: want memory, redis, memcached or node", k.Kind)
	}
	if k.Kind == "node" {
		if len(k.Addrs) != 1 {
			return errAt(at("app", "cache", "addrs"), "app.cache.addrs", "a cache node has exactly one address")
		}
		if k.TokenEnv == "" {
			return errAt(at("app", "cache", "token_env"), "app.cache.token_env", "name the environment variable holding the cache node's token")
		}
	} else if k.TokenEnv != "" {
		return errAt(at("app", "cache", "token_env"), "app.cache.token_env", "only a cache node (kind node) takes a token")
	}
	if k.Timeout < 0 || k.MaxBytes < 0 || k.BreakerFailures < 0 || k.BreakerOpen < 0 {
		return errAt(at("app", "cache"), "app.cache", "timeout, max_bytes, breaker_failures and breaker_open must not be negative")
	}
	if k.InvalidateReplicas < 0 {
		return errAt(at("app", "cache", "invalidate_replicas"), "app.cache.invalidate_replicas", "must not be negative")
	}
	if k.InvalidateReplicas > 0 && k.Kind != "redis" {
		return errAt(at("app", "cache", "invalidate_replicas"), "app.cache.invalidate_replicas", "only kind redis has replicas to wait for")
	}
	if k.Instance != "" && !validToken(k.Instance) {
		return errAt(at("app", "cache", "instance"), "app.cache.instance", "%q: want a token", k.Instance)
	}
	return nil
}

func (c *App) validateCollection(at lineFunc, name string, col AppCollection) error {
	field := "app.collections." + name
	if !validCollection(name) || strings.HasPrefix(name, "strata-") {
		return errAt(at("app", "collections", name), field, "name must match [a-z][a-z0-9_-]{0,62} and not begin with strata-")
	}
	strategy := col.Strategy
	if strategy == "" {
		strategy = "none"
	}
	if !contains(Strategies, strategy) {
		return errAt(at("app", "collections", name, "strategy"), field+".strategy", "%q: want one of %s", col.Strategy, strings.Join(Strategies, ", "))
	}
	consistency := col.Consistency
	if consistency == "" {
		consistency = "strong"
	}
	if !contains(Consistencies, consistency) {
		return errAt(at("app", "collections", name, "consistency"), field+".consistency", "%q: want one of %s", col.Consistency, strings.Join(Consistencies, ", "))
	}
	if strategy != "none" && c.Cache == nil {
		return errAt(at("app", "collections", name, "strategy"), field+".strategy", "strategy %s needs a cache section", strategy)
	}
	// Combinations that cannot keep their promise.
	switch {
	case strategy == "write-behind" && consistency == "strong":
		return errAt(at("app", "collections", name), field,
			"strong consistency cannot be honoured with write-behind: an acknowledged write is not in the store yet, so a read from the primary, or after the cache evicts the entry, could miss it; use write-through, or eventual consistency")
	case strategy == "write-behind" && consistency == "session":
		return errAt(at("app", "collections", name), field,
			"session consistency cannot be honoured with write-behind: an acknowledged write is visible only in the app server that holds it until it is applied, so a session that moves to another app server could miss its own write; use write-through, or eventual consistency")
	case strategy == "write-behind" && c.Cache != nil && c.Cache.QueueDir == "" && (c.Cache.Kind != "redis" || c.Cache.Instance == ""):
		return errAt(at("app", "collections", name), field,
			"write-behind needs a durable queue: set app.cache.queue_dir (local logs), or use cache kind redis with app.cache.instance (Redis Streams); the cache itself can evict or lose acknowledged writes")
	case strategy != "none" && consistency != "eventual" && c.Cache != nil && c.Cache.Kind == "memory":
		return errAt(at("app", "collections", name), field,
			"%s consistency cannot be honoured with a per-process memory cache: another app server's write does not invalidate it; use a shared cache (redis, memcached, node), strategy none, or eventual consistency", consistency)
	}
	if col.TTL < 0 || col.NegativeTTL < 0 {
		return errAt(at("app", "collections", name), field, "TTLs must not be negative")
	}
	if !(col.EarlyRefresh >= 0 && col.EarlyRefresh <= 100) {
		return errAt(at("app", "collections", name, "early_refresh"), field+".early_refresh", "%v: want a number from 0 (off) to 100", col.EarlyRefresh)
	}
	if err := checkAppRate(col.RateLimit); err != nil {
		return errAt(at("app", "collections", name, "rate_limit"), field+".rate_limit", "%v", err)
	}
	return nil
}

func (c *App) checkScope(s string) error {
	if s == "admin" {
		return nil
	}
	a, coll, ok := strings.Cut(s, ":")
	if !ok || (a != "read" && a != "write") {
		return fmt.Errorf("%q: want read:COLLECTION, write:COLLECTION or admin", s)
	}
	if _, known := c.Collections[coll]; coll != "*" && !known {
		return fmt.Errorf("%q: no collection %q is configured", s, coll)
	}
	return nil
}

func checkAppRate(r *AppRateLimit) error {
	if r == nil {
		return nil
	}
	if r.Rate <= 0 || r.Burst < 0 {
		return fmt.Errorf("rate must be positive and burst not negative")
	}
	return nil
}

func validCollection(c string) bool {
	if len(c) == 0 || len(c) > 63 {
		return false
	}
	for i := 0; i < len(c); i++ {
		b := c[i]
		if !(b >= 'a' && b <= 'z' || i > 0 && (b >= '0' && b <= '9' || b == '_' || b == '-')) {
			return false
		}
	}
	return true
}
