package topology

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/strata-project/strata/cache/nodestore"
	"github.com/strata-project/strata/config"
	"github.com/strata-project/strata/dashboard"
	"github.com/strata-project/strata/docstore/sqlite"
	"github.com/strata-project/strata/engines"
	"github.com/strata-project/strata/lb"
)

// Environment variables through which `up` hands secrets and addresses to its children, so
// that no secret appears on a command line (visible to every user in ps) or in a log.
const (
	// EnvCacheToken holds the cache node's shared token.
	EnvCacheToken = "STRATA_CACHE_TOKEN"
	// EnvCacheAddr holds the cache tier's address, for app servers.
	EnvCacheAddr = "STRATA_CACHE_ADDR"
)

// Engines names where the cache and the shards come from.
const (
	// Embedded: a cache node and SQLite files, nothing to install. The default.
	Embedded = "embedded"
	// Local: a Redis Cluster and PostgreSQL primaries with streaming replicas, from the
	// machine's binaries.
	Local = "local"
)

// Errors callers act on.
var (
	// ErrConfig reports a Config that cannot work.
	ErrConfig = errors.New("topology: invalid configuration")
	// ErrUnknownAction reports a chaos action that does not exist.
	ErrUnknownAction = errors.New("topology: unknown chaos action")
	// ErrBadTarget reports a chaos target that names no node.
	ErrBadTarget = errors.New("topology: no such chaos target")
	// ErrNotApplicable reports a chaos action that this topology cannot carry out (a
	// replica action on SQLite shards, for example).
	ErrNotApplicable = errors.New("topology: chaos action not applicable")
)

// Config describes the topology to bring up. The zero value, with DataDir set, is the
// default: embedded engines, three app servers.
type Config struct {
	// DataDir holds the data, the generated configuration and the logs. Required.
	DataDir string
	// Fresh empties DataDir first (only a directory that `up` made before). Default false.
	Fresh bool
	// Engines is Embedded (default) or Local.
	Engines string
	// File, when set, describes the tiers instead of the built-in diagram (`strata up
	// --config`): its app: section configures every app server, its lb: section the
	// balancer (whose backends are where the app servers listen) and its up: section the
	// number of app servers and the admin address. Up then starts no cache or database: the
	// app section names them (SQLite files, which up creates, or external PostgreSQL, Redis,
	// Redis Cluster, Memcached or cache node addresses). Engines, AppServers, Shards,
	// Replicas and CacheBytes must be zero with a File. Default nil.
	File *config.File
	// Exe is the strata binary run for app servers and the cache node. Default
	// os.Executable().
	Exe string
	// Listen is the load balancer's address. Default the File's lb.listen, else
	// 127.0.0.1:8080; a free port of the same host when that one is taken.
	Listen string
	// AdminListen is the admin API's address (chaos, status). Default the File's up.admin,
	// else 127.0.0.1:8079; a free port of the same host when that one is taken.
	AdminListen string
	// AppServers is the number of app servers. Default 3.
	AppServers int
	// Shards is the number of shards: SQLite files with Engines Embedded, PostgreSQL
	// primaries with Replicas streaming replicas each with Engines Local. Default 4.
	Shards int
	// Replicas is the number of streaming replicas per PostgreSQL shard. Default 2.
	Replicas int
	// CacheBytes is the embedded cache node's capacity. Default 64 MiB.
	CacheBytes int64
	// StopTimeout bounds the graceful stop of each child before SIGKILL. Default 10s.
	StopTimeout time.Duration
	// ReadyTimeout bounds the wait for every tier to be ready. Default 60s.
	ReadyTimeout time.Duration
	// Logger receives progress and the children's unexpected exits. Default slog.Default().
	Logger *slog.Logger
}

// Map is what is running, and where: what `strata up` prints.
type Map struct {
	LB        string   `json:"lb"`         // the load balancer's address
	Admin     string   `json:"admin"`      // the admin API's address (chaos, status)
	Apps      []string `json:"apps"`       // the app servers' addresses
	Cache     string   `json:"cache"`      // the cache tier's addresses, separated by spaces
	CacheKind string   `json:"cache_kind"` // "strata cachenode", "redis cluster: ...", or the File's cache kind
	Shards    []string `json:"shards"`     // each shard's files or primary address
	DataDir   string   `json:"data_dir"`
	Logs      string   `json:"logs"`
	// Dashboard is the live dashboard's URL (on the admin listener).
	Dashboard string `json:"dashboard,omitempty"`
	// DemoKey is the API key of this run (read and write on every collection); AdminKey
	// authenticates the admin API. Neither is stored anywhere but in memory: the generated
	// configuration holds their SHA-256 only.
	DemoKey  string `json:"-"`
	AdminKey string `json:"-"`
	// Collections are the served collections.
	Collections []string `json:"collections"`
	// CacheNote says how the app servers use the cache tier.
	CacheNote string `json:"cache_note,omitempty"`
	// Config is the configuration file the tiers come from ("" for the built-in diagram).
	Config string `json:"config,omitempty"`
}

// Topology is a running diagram. Its methods are safe for concurrent use.
type Topology struct {
	cfg     Config
	m       Map
	token   string // cache node token
	apps    []*proc
	node    *proc                      // embedded cache node
	cluster *engines.RedisCluster      // local cache
	pg      []*engines.PostgresCluster // local shards

	lb      *lb.LB
	lbLn    net.Listener
	lbAdmin http.Handler         // the load balancer's admin API, under /lb/
	dash    *dashboard.Dashboard // the live dashboard, under DashboardPath
	admin   *http.Server
	adminLn net.Listener
	serving sync.WaitGroup

	adminHash [sha256.Size]byte
	chaosMu   sync.Mutex // serialises chaos actions
	closeOnce sync.Once
	closeErr  error
}

// collections served by the generated configuration.
var collections = []string{"items", "users"}

func (c *Config) defaults() error {
	if c.DataDir == "" {
		return fmt.Errorf("%w: DataDir is required", ErrConfig)
	}
	if c.File != nil {
		if err := c.fileDefaults(); err != nil {
			return err
		}
	} else {
		c.Engines = cmpOr(c.Engines, Embedded)
		if c.Engines != Embedded && c.Engines != Local {
			return fmt.Errorf("%w: engines %q: want %s or %s", ErrConfig, c.Engines, Embedded, Local)
		}
		c.AppServers = cmpOr(c.AppServers, 3)
		c.Shards = cmpOr(c.Shards, 4)
		c.Replicas = cmpOr(c.Replicas, 2)
		if c.Replicas < 0 {
			c.Replicas = 0
		}
		c.CacheBytes = cmpOr(c.CacheBytes, 64<<20)
		if c.AppServers < 1 || c.AppServers > config.MaxUpAppServers || c.Shards < 1 || c.Shards > 16 {
			return fmt.Errorf("%w: %d app servers (1..%d), %d shards (1..16)", ErrConfig, c.AppServers, config.MaxUpAppServers, c.Shards)
		}
	}
	if c.Exe == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("%w: %v", ErrConfig, err)
		}
		c.Exe = exe
	}
	c.Listen = cmpOr(c.Listen, "127.0.0.1:8080")
	c.AdminListen = cmpOr(c.AdminListen, "127.0.0.1:8079")
	c.StopTimeout = cmpOr(c.StopTimeout, 10*time.Second)
	c.ReadyTimeout = cmpOr(c.ReadyTimeout, 60*time.Second)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// marker is the file that says a directory is a `strata up` data directory, so that --fresh
// never empties a directory it did not make.
const marker = ".strata-up"

// Start brings the topology up and returns once every tier answers: the cache tier, the
// shards, the app servers (each /readyz), the load balancer and the admin API. On error,
// whatever was started is stopped.
func Start(ctx context.Context, cfg Config) (t *Topology, err error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if err := prepareDir(cfg.DataDir, cfg.Fresh); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.ReadyTimeout)
	defer cancel()
	t = &Topology{cfg: cfg}
	defer func() {
		if err != nil {
			t.Close(context.Background())
			t = nil
		}
	}()
	t.m = Map{DataDir: cfg.DataDir, Logs: filepath.Join(cfg.DataDir, "logs"), Collections: collections}
	if cfg.File != nil {
		t.m.Collections = slices.Sorted(maps.Keys(cfg.File.App.Collections))
	}
	demo, demoHash := newKey("strata_demo_")
	admin, adminHash := newKey("strata_admin_")
	t.m.DemoKey, t.m.AdminKey = demo, admin
	t.adminHash = adminHash
	t.token, _ = newKey("")

	// Listeners of `up` itself first: a taken default port falls back to a free one.
	if t.lbLn, err = listenOrFree(cfg.Listen); err != nil {
		return t, err
	}
	if t.adminLn, err = listenOrFree(cfg.AdminListen); err != nil {
		return t, err
	}
	t.m.LB, t.m.Admin = t.lbLn.Addr().String(), t.adminLn.Addr().String()

	store, cacheAddr, err := t.startEngines(ctx)
	if err != nil {
		return t, err
	}
	t.m.Cache = cacheAddr
	if t.cfg.File == nil {
		t.m.CacheNote = "shared by the app servers: cache-aside, strong consistency"
	}
	if err := t.startApps(ctx, store, hex.EncodeToString(demoHash[:])); err != nil {
		return t, err
	}
	if err := t.startLB(); err != nil {
		return t, err
	}
	if err := t.startDashboard(); err != nil {
		return t, err
	}
	t.startAdmin()
	return t, nil
}

// prepareDir makes dir (or empties it, for fresh) and its subdirectories.
func prepareDir(dir string, fresh bool) error {
	if fresh {
		entries, err := os.ReadDir(dir)
		if err == nil && len(entries) > 0 {
			if _, err := os.Stat(filepath.Join(dir, marker)); err != nil {
				return fmt.Errorf("%w: --fresh would empty %s, which strata up did not make (no %s file): remove it yourself or pick another directory",
					ErrConfig, dir, marker)
			}
			if err := os.RemoveAll(dir); err != nil {
				return fmt.Errorf("topology: --fresh: %w", err)
			}
		}
	}
	for _, sub := range []string{"", "logs", "config", "sqlite"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return fmt.Errorf("topology: data directory: %w", err)
		}
	}
	return os.WriteFile(filepath.Join(dir, marker), []byte("a strata up data directory; strata up --fresh may empty it\n"), 0o600)
}

// newKey returns a random key with the given prefix and its SHA-256.
func newKey(prefix string) (string, [sha256.Size]byte) {
	var b [24]byte
	_, _ = rand.Read(b[:])
	k := prefix + hex.EncodeToString(b[:])
	return k, sha256.Sum256([]byte(k))
}

// listenOrFree listens on addr, or on a free port of the same host when addr is taken.
func listenOrFree(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err == nil {
		return ln, nil
	}
	host, _, serr := net.SplitHostPort(addr)
	if serr != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrConfig, addr, serr)
	}
	return net.Listen("tcp", net.JoinHostPort(host, "0"))
}

// freeAddr returns a loopback address that was free a moment ago, for a child to listen on.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// startEngines starts the cache tier and the shards, and returns the app servers' store
// section and the cache address.
func (t *Topology) startEngines(ctx context.Context) (config.AppStore, string, error) {
	if t.cfg.File != nil {
		return t.startFromFile(ctx)
	}
	if t.cfg.Engines == Local {
		return t.startLocal(ctx)
	}
	// The cache node, a process of its own, and the SQLite database, made here once so that
	// the app servers do not race to create and migrate it.
	addr, err := freeAddr()
	if err != nil {
		return config.AppStore{}, "", err
	}
	t.node = &proc{name: "cachenode", bin: t.cfg.Exe,
		args:    []string{"cachenode", "--listen", addr, "--max-bytes", strconv.FormatInt(t.cfg.CacheBytes, 10)},
		env:     []string{EnvCacheToken + "=" + t.token},
		logPath: filepath.Join(t.cfg.DataDir, "logs", "cachenode.log")}
	if err := t.node.start(); err != nil {
		return config.AppStore{}, "", err
	}
	t.m.CacheKind = "strata cachenode"
	store := config.AppStore{Kind: "sqlite", MapFile: filepath.Join(t.cfg.DataDir, "config", "placement.json")}
	for i := range t.cfg.Shards {
		name := fmt.Sprintf("shard-%d", i+1)
		path := filepath.Join(t.cfg.DataDir, "sqlite", name+".db")
		store.Shards = append(store.Shards, config.AppShard{Name: name, Path: path})
		t.m.Shards = append(t.m.Shards, path)
	}
	if err := createSQLite(ctx, store); err != nil {
		return config.AppStore{}, "", err
	}
	if err := t.waitCache(ctx, addr); err != nil {
		return config.AppStore{}, "", err
	}
	return store, addr, nil
}

// createSQLite creates and migrates each SQLite file of store here, once, so that the app
// servers do not race to do it. WAL mode then lets the app servers share the files: one
// writer at a time per file, waiting on each other through SQLite's busy timeout.
func createSQLite(ctx context.Context, store config.AppStore) error {
	paths := []string{store.Path}
	if len(store.Shards) > 0 {
		paths = nil
		for _, sh := range store.Shards {
			paths = append(paths, sh.Path)
		}
	}
	errs := make([]error, len(paths))
	var wg sync.WaitGroup
	for i, path := range paths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
				errs[i] = fmt.Errorf("topology: %w", err)
				return
			}
			db, err := sqlite.Open(ctx, sqlite.Config{Path: path})
			if err == nil {
				err = db.Close()
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// waitCache waits until the cache node answers a ping with the token.
func (t *Topology) waitCache(ctx context.Context, addr string) error {
	s, err := nodestore.New(nodestore.Config{Addr: addr, Token: []byte(t.token), RedialBackoff: time.Millisecond})
	if err != nil {
		return err
	}
	defer s.Close()
	return poll(ctx, t.node, func(ctx context.Context) error { return s.Ping(ctx) })
}

// poll calls check until it succeeds, ctx ends or p (when not nil) exits.
func poll(ctx context.Context, p *proc, check func(context.Context) error) error {
	var last error
	for delay := 2 * time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		if last = check(ctx); last == nil {
			return nil
		}
		if p != nil {
			if _, _, ok := p.running(); !ok {
				return fmt.Errorf("topology: %s exited while starting: %v\n%s", p.name, last, p.tail())
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("topology: not ready in time: %v (last: %v)", ctx.Err(), last)
		case <-time.After(delay):
		}
	}
}

// Key ids of the keys up adds to every app server.
const (
	demoKeyID  = "demo"
	adminKeyID = "admin"
)

// upKeys are the keys up adds to every app server: the demo key of this run (read and write
// on every collection) and the admin key (which also scrapes the app servers' metrics).
func (t *Topology) upKeys(demoHash string) []config.AppKey {
	return []config.AppKey{
		{ID: demoKeyID, SHA256: demoHash, Scopes: []string{"read:*", "write:*"}},
		{ID: adminKeyID, SHA256: hex.EncodeToString(t.adminHash[:]), Scopes: []string{"admin"}},
	}
}

// appConfig is the configuration of app server i.
func (t *Topology) appConfig(i int, listen string, store config.AppStore, demoHash string) *config.File {
	if t.cfg.File != nil {
		return t.fileAppConfig(i, listen, demoHash)
	}
	// Every collection is strongly consistent and cached aside in the shared cache tier: a
	// write through one app server invalidates the shared entry before it is acknowledged,
	// so no app server serves the old version afterwards.
	cols := map[string]config.AppCollection{}
	for _, c := range collections {
		cols[c] = config.AppCollection{Strategy: "cache-aside", Consistency: "strong"}
	}
	a := &config.App{
		Listen:         listen,
		Store:          store,
		Collections:    cols,
		Keys:           t.upKeys(demoHash),
		TrustedProxies: []string{"127.0.0.1/32", "::1/128"},
		Timeouts:       config.AppTimeouts{Shutdown: config.Duration(t.cfg.StopTimeout / 2)},
	}
	pending := filepath.Join(t.cfg.DataDir, "pending", fmt.Sprintf("app-%d", i+1))
	if t.cluster != nil {
		// The app servers' Redis client finds the whole cluster from its nodes.
		a.Cache = &config.AppCache{Kind: "redis", Addrs: t.cluster.Addrs(), PendingDir: pending, InvalidateReplicas: min(clusterReplicas, 1)}
	} else {
		// The embedded cache node's address and token reach the app server through the
		// environment (EnvCacheAddr, EnvCacheToken), never through a file or a command line.
		a.Cache = &config.AppCache{Kind: "node", Addrs: []string{"${" + EnvCacheAddr + "}"}, TokenEnv: EnvCacheToken, PendingDir: pending}
	}
	return &config.File{App: a}
}

// startApps writes each app server's configuration and starts them, in parallel.
func (t *Topology) startApps(ctx context.Context, store config.AppStore, demoHash string) error {
	t.apps = make([]*proc, t.cfg.AppServers)
	addrs, err := t.appAddrs()
	if err != nil {
		return err
	}
	for i := range t.apps {
		addr := addrs[i]
		f := t.appConfig(i, addr, store, demoHash)
		data, err := yaml.Marshal(f)
		if err != nil {
			return err
		}
		if _, err := config.Parse(data); err != nil {
			return fmt.Errorf("topology: generated app configuration: %w", err)
		}
		path := filepath.Join(t.cfg.DataDir, "config", fmt.Sprintf("app-%d.yaml", i+1))
		header := "# Generated by strata up for app server " + strconv.Itoa(i+1) + "; rewritten on every start.\n"
		if err := os.WriteFile(path, append([]byte(header), data...), 0o600); err != nil {
			return err
		}
		p := &proc{name: fmt.Sprintf("app-%d", i+1), bin: t.cfg.Exe, args: []string{"app", "--config", path},
			logPath: filepath.Join(t.cfg.DataDir, "logs", fmt.Sprintf("app-%d.log", i+1))}
		if t.cfg.File == nil {
			// A file's app servers see up's environment as it is: its variables are theirs.
			p.env = []string{EnvCacheToken + "=" + t.token, EnvCacheAddr + "=" + t.m.Cache}
		}
		t.apps[i] = p
		t.m.Apps = append(t.m.Apps, addr)
		if err := p.start(); err != nil {
			return err
		}
	}
	errs := make([]error, len(t.apps))
	var wg sync.WaitGroup
	for i := range t.apps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = t.waitApp(ctx, i)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

var probe = &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// waitApp waits until app server i answers /readyz with 200.
func (t *Topology) waitApp(ctx context.Context, i int) error {
	url := "http://" + t.m.Apps[i] + "/readyz"
	return poll(ctx, t.apps[i], func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := probe.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz: %s", resp.Status)
		}
		return nil
	})
}

// startLB starts the load balancer in this process, with health checks fast enough to show
// an ejection within about a second.
func (t *Topology) startLB() error {
	cfg := lb.Config{
		Health: lb.HealthConfig{Interval: 500 * time.Millisecond, Timeout: 400 * time.Millisecond, Rise: 2, Fall: 2},
	}
	for _, a := range t.m.Apps {
		cfg.Backends = append(cfg.Backends, lb.BackendConfig{Addr: a})
	}
	if t.cfg.File != nil && t.cfg.File.LB != nil {
		// The file's balancer, whose backends are the app servers' addresses. Its admin
		// listener is not started: up serves the balancer's admin API under /lb/.
		fc, _, err := lb.FromConfig(t.cfg.File.LB)
		if err != nil {
			return err
		}
		cfg = fc
	}
	cfg.Logger = t.cfg.Logger
	l, err := lb.New(cfg)
	if err != nil {
		return err
	}
	t.lb = l
	t.serving.Add(1)
	go func() { // owned by t: Close shuts the balancer down
		defer t.serving.Done()
		_ = l.Serve(t.lbLn)
	}()
	return nil
}

// Map returns what runs where.
func (t *Topology) Map() Map {
	m := t.m
	m.Apps = append([]string(nil), m.Apps...)
	m.Shards = append([]string(nil), m.Shards...)
	return m
}

// PIDs returns the process ids of the children that run now: app servers and cache node
// (engines' processes are not included).
func (t *Topology) PIDs() []int {
	var pids []int
	for _, p := range append(append([]*proc(nil), t.apps...), t.node) {
		if p != nil {
			if pid := p.PID(); pid != 0 {
				pids = append(pids, pid)
			}
		}
	}
	return pids
}

// Close stops everything: the admin API and the load balancer first (no new requests),
// then the app servers (SIGTERM, draining; SIGKILL after StopTimeout), then the cache tier
// and the engines. It is safe to call more than once and after a partial Start.
func (t *Topology) Close(ctx context.Context) error {
	t.closeOnce.Do(func() { t.closeErr = t.close(ctx) })
	return t.closeErr
}

func (t *Topology) close(ctx context.Context) error {
	var errs []error
	if t.dash != nil {
		t.dash.Close() // ends the dashboard's event streams, so the admin server can shut down
	}
	if t.admin != nil {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_ = t.admin.Shutdown(sctx)
		cancel()
	} else if t.adminLn != nil {
		t.adminLn.Close()
	}
	if t.lb != nil {
		sctx, cancel := context.WithTimeout(ctx, t.cfg.StopTimeout)
		if err := t.lb.Shutdown(sctx); err != nil {
			t.lb.Close()
		}
		cancel()
	} else if t.lbLn != nil {
		t.lbLn.Close()
	}
	t.serving.Wait()
	var wg sync.WaitGroup
	stopErrs := make([]error, len(t.apps))
	for i, p := range t.apps {
		if p == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.stop(ctx, t.cfg.StopTimeout); err != nil && !errors.Is(err, errNotRunning) {
				stopErrs[i] = err
			}
		}()
	}
	wg.Wait()
	errs = append(errs, stopErrs...)
	if t.node != nil {
		if err := t.node.stop(ctx, t.cfg.StopTimeout); err != nil && !errors.Is(err, errNotRunning) {
			errs = append(errs, err)
		}
	}
	if t.cluster != nil {
		errs = append(errs, t.cluster.Close())
	}
	errs = append(errs, stopPostgres(ctx, t.pg))
	return errors.Join(errs...)
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}
