package reliability

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/strata-project/strata/docstore"
	"github.com/strata-project/strata/docstore/postgres"
	"github.com/strata-project/strata/engines"
	"github.com/strata-project/strata/internal/testenv"
	"github.com/strata-project/strata/lb"
	"github.com/strata-project/strata/server"
	"github.com/strata-project/strata/topology"
)

// shardSpec is one PostgreSQL shard of the topology's store.
type shardSpec struct {
	name     string
	primary  string   // host:port (possibly a toxiproxy listener)
	replicas []string // host:port
	db       string
}

// topoSpec describes a topology: app servers behind a load balancer over a store.
type topoSpec struct {
	apps        int // default 3
	shards      []shardSpec
	cache       map[string]any // the app.cache section; nil: none
	collections map[string]map[string]any
	anonymous   []string       // anonymous scopes; nil: anonymous access off
	extra       map[string]any // more app settings
	env         []string       // more environment of the app servers (NAME=value)
	lbConfig    func(*lb.Config)
}

// topo is a running topology: app server processes and an in-process load balancer.
type topo struct {
	t       *testing.T
	dir     string
	apps    []*appProc
	lb      *lb.LB
	lbURL   string
	keyRW   string // read:* write:* key
	keyRO   string // read:* key
	session string // session signing secret
}

// appProc is one `strata app` process.
type appProc struct {
	n       int
	addr    string // API host:port
	admin   string // admin host:port (open, loopback)
	config  string
	logPath string
	env     []string
	child
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// freeAddr returns a loopback address on a port that is free now and that no other call of
// this test binary has returned: the kernel may hand out a port it has just released again,
// and two app servers on one port make the balancer refuse its backends.
func freeAddr(t *testing.T) string {
	t.Helper()
	for range 100 {
		p, err := engines.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if _, dup := givenPorts.LoadOrStore(p, true); !dup {
			return "127.0.0.1:" + strconv.Itoa(p)
		}
	}
	t.Fatal("no free port that was not given already")
	return ""
}

// givenPorts are the ports freeAddr returned.
var givenPorts sync.Map

func dsn(hostport, db string) string {
	return fmt.Sprintf("postgres://postgres@%s/%s?sslmode=disable&connect_timeout=2", hostport, db)
}

// startTopo writes the configuration, starts the app servers and the load balancer, and waits
// until every app server is ready and the balancer sees them healthy.
func startTopo(t *testing.T, spec topoSpec) *topo {
	t.Helper()
	needBinary(t)
	if spec.apps == 0 {
		spec.apps = 3
	}
	tp := &topo{t: t, dir: t.TempDir(), keyRW: "sk-rw-" + randHex(16), keyRO: "sk-ro-" + randHex(16), session: randHex(24)}
	var shards []map[string]any
	for _, s := range spec.shards {
		var reps []string
		for _, r := range s.replicas {
			reps = append(reps, dsn(r, s.db))
		}
		shards = append(shards, map[string]any{"name": s.name, "primary": dsn(s.primary, s.db), "replicas": reps})
	}
	hash := func(k string) string { h := server.HashKey(k); return hex.EncodeToString(h[:]) }
	for i := range spec.apps {
		a := &appProc{n: i, addr: freeAddr(t), admin: freeAddr(t)}
		app := map[string]any{
			"listen": a.addr, "admin_listen": a.admin, "admin_open": true,
			"timeouts":    map[string]any{"request": "3s", "shutdown": "2s", "read_header": "2s", "idempotency_lease": "4s"},
			"store":       map[string]any{"kind": "postgres", "shards": shards},
			"collections": spec.collections,
			"keys": []map[string]any{
				{"id": "rw", "sha256": hash(tp.keyRW), "scopes": []string{"read:*", "write:*"}},
				{"id": "ro", "sha256": hash(tp.keyRO), "scopes": []string{"read:*"}},
			},
			"session_key_env": "STRATA_REL_SESSION_KEY",
			"trusted_proxies": []string{"127.0.0.1/32"},
		}
		if spec.anonymous != nil {
			app["anonymous"] = true
			app["anonymous_scopes"] = spec.anonymous
		}
		if spec.cache != nil {
			c := map[string]any{}
			for k, v := range spec.cache {
				c[k] = v
			}
			if _, ok := c["queue_dir"]; ok {
				c["queue_dir"] = filepath.Join(tp.dir, fmt.Sprintf("queue%d", i))
			}
			if _, ok := c["pending_dir"]; ok {
				c["pending_dir"] = filepath.Join(tp.dir, fmt.Sprintf("pending%d", i))
			}
			if _, ok := c["instance"]; ok {
				c["instance"] = fmt.Sprintf("app%d", i)
			}
			app["cache"] = c
		}
		for k, v := range spec.extra {
			app[k] = v
		}
		data, err := yaml.Marshal(map[string]any{"app": app})
		if err != nil {
			t.Fatal(err)
		}
		a.config = filepath.Join(tp.dir, fmt.Sprintf("app%d.yaml", i))
		a.logPath = filepath.Join(tp.dir, fmt.Sprintf("app%d.log", i))
		a.env = append(append(os.Environ(), "STRATA_REL_SESSION_KEY="+tp.session), spec.env...)
		if err := os.WriteFile(a.config, data, 0o600); err != nil {
			t.Fatal(err)
		}
		tp.apps = append(tp.apps, a)
	}
	t.Cleanup(tp.stop)
	var wg sync.WaitGroup
	errs := make([]error, len(tp.apps))
	for i, a := range tp.apps {
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = a.start(20 * time.Second) }()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		if strings.Contains(err.Error(), "not available in this build") {
			t.Skipf("waits for the app server's cache wiring (cmd/strata cache tier): %v", err)
		}
		t.Fatalf("start app servers: %v", err)
	}
	cfg := lb.Config{
		Health: lb.HealthConfig{Interval: 200 * time.Millisecond, Timeout: 300 * time.Millisecond, Rise: 2, Fall: 2},
		// A server killed again and again is ejected each time for twice as long: the cap
		// keeps the last ejection within the scenarios' recovery bound. (App servers' 503s
		// with Retry-After while a dependency is down do not count against them.)
		Outlier: lb.OutlierConfig{ConsecutiveFailures: 3, BaseEjection: 2 * time.Second, MaxEjection: 8 * time.Second},
		Retry:   lb.RetryConfig{Attempts: 3, PerTryTimeout: 4 * time.Second},
		// Connections from the test are many and short-lived at times.
		ConnectTimeout: time.Second,
		Logger:         quietLogger(),
	}
	for _, a := range tp.apps {
		cfg.Backends = append(cfg.Backends, lb.BackendConfig{Addr: a.addr})
	}
	if spec.lbConfig != nil {
		spec.lbConfig(&cfg)
	}
	tp.lb, tp.lbURL = startLB(t, cfg)
	tp.waitHealthy(10 * time.Second)
	return tp
}

// startLB runs an in-process load balancer on a loopback port until the test ends.
func startLB(t *testing.T, cfg lb.Config) (*lb.LB, string) {
	t.Helper()
	l, err := lb.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); l.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		l.Shutdown(ctx)
		l.Close()
		<-served
	})
	return l, "http://" + ln.Addr().String()
}

// waitHealthy waits until the balancer counts every backend healthy and ready.
func (tp *topo) waitHealthy(timeout time.Duration) {
	tp.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		ok := true
		for _, s := range tp.lb.Status() {
			ok = ok && s.Healthy && s.Ready && !s.Ejected
		}
		if ok {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	tp.t.Fatalf("backends not healthy after %s: %+v", timeout, tp.lb.Status())
}

// backendUp reports whether the balancer would send requests to addr.
func (tp *topo) backendUp(addr string) bool {
	for _, s := range tp.lb.Status() {
		if s.Address == addr {
			return s.Healthy && s.Ready && !s.Ejected && !s.Drained
		}
	}
	return false
}

// child is a strata process the suite started (an app server, a cache node).
type child struct {
	mu   sync.Mutex // protects cmd, done
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and its log is closed
}

// run starts the strata binary with args and env in its own process group (killed if the
// test binary dies), appending its output to logPath. It returns the channel closed when the
// process has exited.
func (c *child) run(logPath string, env []string, args ...string) (chan struct{}, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(strataBin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	c.mu.Lock()
	c.cmd, c.done = cmd, done
	c.mu.Unlock()
	return done, nil
}

// kill sends SIGKILL to the process group and waits until the process is gone.
func (c *child) kill() {
	c.mu.Lock()
	cmd, done := c.cmd, c.done
	c.mu.Unlock()
	if cmd == nil {
		return
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-done
}

// start runs the app server and waits until /readyz answers 200.
func (a *appProc) start(timeout time.Duration) error {
	done, err := a.run(a.logPath, a.env, "app", "--config", a.config)
	if err != nil {
		return err
	}
	c := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			return fmt.Errorf("app %d exited at start: %s", a.n, a.logTail())
		default:
		}
		resp, err := c.Get("http://" + a.addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(30 * time.Millisecond)
	}
	a.kill()
	return fmt.Errorf("app %d not ready after %s: %s", a.n, timeout, a.logTail())
}

func (a *appProc) logTail() string {
	b, _ := os.ReadFile(a.logPath)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// stop kills every app server and checks that none is left.
func (tp *topo) stop() {
	for _, a := range tp.apps {
		a.kill()
	}
	for _, a := range tp.apps {
		a.mu.Lock()
		cmd := a.cmd
		a.mu.Unlock()
		if cmd != nil && syscall.Kill(cmd.Process.Pid, 0) == nil {
			tp.t.Errorf("app %d (pid %d) is still alive after stop", a.n, cmd.Process.Pid)
		}
	}
}

// metric reads one sample (name{labels} value) from an app server's metrics; ok is false
// when it cannot be read.
func (a *appProc) metric(series string) (float64, bool) {
	c := &http.Client{Timeout: 500 * time.Millisecond}
	resp, err := c.Get("http://" + a.admin + "/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

// breakerState reads strata_breaker_state{name}: 0 closed, 1 half-open, 2 open; -1 when
// it cannot be read. For "store" it is the worst of the store's breakers, one per shard
// ("store:NAME").
func (a *appProc) breakerState(name string) int {
	c := &http.Client{Timeout: 500 * time.Millisecond}
	resp, err := c.Get("http://" + a.admin + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	worst := -1
	for _, line := range strings.Split(string(body), "\n") {
		rest, ok := strings.CutPrefix(line, `strata_breaker_state{name="`+name)
		if !ok || !(strings.HasPrefix(rest, `"} `) || strings.HasPrefix(rest, ":")) {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(rest[strings.LastIndexByte(rest, ' ')+1:]), 64)
		if err == nil {
			worst = max(worst, int(f))
		}
	}
	return worst
}

// openStore opens the given shard's primary directly, bypassing every Strata tier, to check
// what the database holds.
func openStore(t *testing.T, hostport, db string) docstore.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := postgres.Open(ctx, postgres.Config{DSN: dsn(hostport, db)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// docValue decodes the "n" field of a stored document.
func docValue(body []byte) int64 {
	i := bytes.Index(body, []byte(`"n":`))
	if i < 0 {
		return -2
	}
	rest := body[i+4:]
	j := bytes.IndexAny(rest, ",}")
	if j < 0 {
		return -2
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(rest[:j])), 10, 64)
	if err != nil {
		return -2
	}
	return n
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// cacheKinds are the shared cache stores the cache scenarios run over, as startCache names
// them.
var cacheKinds = []string{"redis", "redis-cluster", "memcached", "node"}

// sharedCache is the shared cache tier of a topology, with its fault handles: kill stops it,
// back brings it back, rejoin restores its full shape.
type sharedCache struct {
	kind    string         // one of cacheKinds
	name    string         // as the table prints it
	section map[string]any // the app.cache section (the caller adds to it)
	env     []string       // what the app servers need in their environment
	// illegalKnown, when not empty, says which known bug makes histories over this store
	// not linearizable: an Illegal verdict goes through knownBug.
	illegalKnown string

	redis   *engines.Redis
	cluster *engines.RedisCluster
	mc      *engines.Memcached
	node    *nodeProc

	// Redis Cluster: the faults always hit the master that serves the slots master 0 served
	// at the start (after a failover, the replica that took them over). owner maps each slot
	// to its master at the start; victim is the node killed last, -1 when none is down.
	owner  []int
	ref    string // a key in those slots
	victim int
}

// startCache starts a private shared cache of the given kind for the test.
func startCache(t *testing.T, kind string) *sharedCache {
	t.Helper()
	sc := &sharedCache{kind: kind, victim: -1}
	switch kind {
	case "redis":
		sc.name = "Redis"
		sc.redis = testenv.Redis(t, engines.RedisOptions{})
		sc.section = map[string]any{"kind": "redis", "addrs": []string{sc.redis.Addr()}}
	case "redis-cluster":
		sc.name = "Redis Cluster master"
		sc.cluster = testenv.RedisCluster(t, engines.RedisClusterOptions{})
		// Strong writes wait for the replica of the key's master to hold their tombstone.
		sc.section = map[string]any{"kind": "redis", "addrs": sc.cluster.Addrs(), "invalidate_replicas": 1}
		sc.owner = clusterOwners(t, sc.cluster)
		for i := 0; sc.ref == ""; i++ {
			if k := fmt.Sprintf("ref%d", i); sc.owner[clusterSlot(k)] == 0 {
				sc.ref = k
			}
		}
	case "memcached":
		sc.name = "Memcached"
		sc.mc = testenv.Memcached(t)
		sc.section = map[string]any{"kind": "memcached", "addrs": []string{sc.mc.Addr()}}
	case "node":
		needBinary(t)
		sc.name = "Strata cache node"
		token := randHex(16)
		sc.node = &nodeProc{addr: freeAddr(t), logPath: filepath.Join(t.TempDir(), "cachenode.log"),
			env: append(os.Environ(), topology.EnvCacheToken+"="+token)}
		t.Cleanup(sc.node.kill)
		if err := sc.node.start(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		sc.section = map[string]any{"kind": "node", "addrs": []string{sc.node.addr}, "token_env": "STRATA_REL_CACHE_TOKEN"}
		sc.env = []string{"STRATA_REL_CACHE_TOKEN=" + token}
	default:
		t.Fatalf("unknown cache kind %q", kind)
	}
	return sc
}

// cacheSection returns the app.cache section with more settings.
func (sc *sharedCache) cacheSection(more map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range sc.section {
		out[k] = v
	}
	for k, v := range more {
		out[k] = v
	}
	return out
}

// kill stops the cache at once (SIGKILL): the server or the cache node, or, in a Redis
// Cluster, the master that serves the victim slots (its replica takes over on its own).
func (sc *sharedCache) kill(t *testing.T) {
	t.Helper()
	var err error
	switch {
	case sc.redis != nil:
		err = sc.redis.Kill()
	case sc.mc != nil:
		err = sc.mc.Kill()
	case sc.node != nil:
		sc.node.kill()
	case sc.cluster != nil:
		ask := 0
		for !sc.cluster.Nodes[ask].Running() {
			ask++
		}
		sc.victim, err = sc.cluster.MasterOf(callCtx(t), ask, sc.ref)
		if err == nil {
			err = sc.cluster.Nodes[sc.victim].Kill()
		}
	}
	if err != nil {
		t.Fatalf("kill the cache (%s): %v", sc.name, err)
	}
}

// back brings the cache back and returns the instant it came back: a killed server or cache
// node is restarted (empty) and the instant is the restart's start, so that a recovery time
// counted from it includes the restart; in a Redis Cluster nothing is restarted (see rejoin),
// the instant is when a live node was first seen naming another master for the victim
// slots, that master answering.
func (sc *sharedCache) back(t *testing.T) time.Time {
	t.Helper()
	at := time.Now()
	var err error
	switch {
	case sc.redis != nil:
		err = sc.redis.Restart(callCtx(t))
	case sc.mc != nil:
		err = sc.mc.Restart(callCtx(t))
	case sc.node != nil:
		err = sc.node.start(10 * time.Second)
	case sc.cluster != nil:
		if waitUntil(20*time.Second, func() bool {
			for i, n := range sc.cluster.Nodes {
				if i == sc.victim || !n.Running() {
					continue
				}
				ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
				defer cancel()
				m, err := sc.cluster.MasterOf(ctx, i, sc.ref)
				if err != nil || m == sc.victim {
					return false
				}
				_, err = sc.cluster.Nodes[m].Do(ctx, "GET", sc.ref) // a key of the victim slots
				return err == nil
			}
			return false
		}) < 0 {
			t.Fatalf("no replica took over the killed master's slots within 20s")
		}
		at = time.Now()
	}
	if err != nil {
		t.Fatalf("restart the cache (%s): %v", sc.name, err)
	}
	return at
}

// rejoin restores the cache's full shape after back: in a Redis Cluster, the killed master
// is restarted and rejoins as a replica of the node that took over, and the cluster is
// waited on until every node is healthy; it returns what that took. Other kinds are whole
// again after back (0).
func (sc *sharedCache) rejoin(t *testing.T) time.Duration {
	t.Helper()
	if sc.cluster == nil || sc.victim < 0 {
		return 0
	}
	start := time.Now()
	ctx := callCtx(t)
	if err := sc.cluster.Nodes[sc.victim].Restart(ctx); err != nil {
		t.Fatalf("restart the killed cluster master: %v", err)
	}
	if err := sc.cluster.WaitHealthy(ctx); err != nil {
		t.Fatalf("redis cluster not healthy after the killed master rejoined: %v", err)
	}
	sc.victim = -1
	return time.Since(start)
}

// keyPrefix returns the prefix of the shared keys of a load on coll (loadSpec.prefix) with
// n keys: "" for a single server; for a Redis Cluster, one that puts exactly onVictim of the
// n keys' cache entries in the slots the faults hit, so that killing a master touches the
// keys it is meant to. Every key on the victim is a hash tag ("{t3}"): keys that differ only
// in their last character cannot all fall in one master's slots (CRC16 is linear: their
// slots differ by fixed bit patterns that span the whole slot range).
func (sc *sharedCache) keyPrefix(t *testing.T, coll string, n, onVictim int) string {
	t.Helper()
	if sc.cluster == nil {
		return ""
	}
	format := "k%d-"
	if onVictim == n {
		format = "{t%d}"
	}
	for i := range 100_000 {
		p := fmt.Sprintf(format, i)
		on := 0
		for j := range n {
			if sc.onVictim(coll, fmt.Sprintf("%ss%d", p, j)) {
				on++
			}
		}
		if on == onVictim {
			return p
		}
	}
	t.Fatalf("no key prefix puts %d of %d keys of %s on one master", onVictim, n, coll)
	return ""
}

// cacheKey is the Redis key of a document's cache entry (redisstore's "strata:e:" prefix,
// the access path's "collection/" prefix).
func cacheKey(coll, id string) string { return "strata:e:" + coll + "/" + id }

func (sc *sharedCache) onVictim(coll, id string) bool {
	return sc.owner[clusterSlot(cacheKey(coll, id))] == 0
}

// checkPlacement checks, after the keys of a load were written, that a Redis Cluster holds
// their cache entries where keyPrefix placed them (the node that serves the victim slots has
// every entry meant for it): if the cache's key format changed, the faults would miss.
func (sc *sharedCache) checkPlacement(t *testing.T, spec loadSpec) {
	t.Helper()
	if sc.cluster == nil {
		return
	}
	ctx := callCtx(t)
	for i := range spec.keys {
		id := spec.keyName(0, i)
		key := cacheKey(spec.coll, id)
		v, err := sc.cluster.Nodes[0].Do(ctx, "CLUSTER", "KEYSLOT", key)
		if got, _ := v.(int64); err != nil || int(got) != clusterSlot(key) {
			t.Fatalf("slot of %q: redis says %v (%v), the test computed %d", key, v, err, clusterSlot(key))
		}
		if !sc.onVictim(spec.coll, id) {
			continue
		}
		if v, err := sc.cluster.Nodes[0].Do(ctx, "EXISTS", key); err != nil || v != int64(1) {
			t.Fatalf("the cache entry of %s/%s is not %q on master 0 (EXISTS: %v, %v): has the cache's key format changed?", spec.coll, id, key, v, err)
		}
	}
}

// clusterOwners maps each slot to the index in c.Nodes of the master that serves it.
func clusterOwners(t *testing.T, c *engines.RedisCluster) []int {
	t.Helper()
	v, err := c.Nodes[0].Do(callCtx(t), "CLUSTER", "SLOTS")
	if err != nil {
		t.Fatalf("CLUSTER SLOTS: %v", err)
	}
	owner := make([]int, 16384)
	for i := range owner {
		owner[i] = -1
	}
	ranges, _ := v.([]any)
	for _, r := range ranges {
		rr, _ := r.([]any)
		if len(rr) < 3 {
			continue
		}
		lo, _ := rr[0].(int64)
		hi, _ := rr[1].(int64)
		m, _ := rr[2].([]any)
		if len(m) < 2 || lo < 0 || hi >= 16384 {
			continue
		}
		port, _ := m[1].(int64)
		for i, n := range c.Nodes {
			if strings.HasSuffix(n.Addr(), ":"+strconv.FormatInt(port, 10)) {
				for s := lo; s <= hi; s++ {
					owner[s] = i
				}
			}
		}
	}
	for s, o := range owner {
		if o < 0 {
			t.Fatalf("CLUSTER SLOTS: slot %d has no master", s)
		}
	}
	return owner
}

// clusterSlot is Redis Cluster's hash slot of a key: CRC16 (XMODEM) of the key, or of its
// hash tag (the part between the first { and the next }, when not empty), modulo 16384.
func clusterSlot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc % 16384)
}

// nodeProc is one `strata cachenode` process, the Strata cache node.
type nodeProc struct {
	addr    string
	logPath string
	env     []string
	child
}

// start runs the cache node on its address and waits until it accepts connections.
func (n *nodeProc) start(timeout time.Duration) error {
	done, err := n.run(n.logPath, n.env, "cachenode", "--listen", n.addr, "--max-bytes", strconv.Itoa(64<<20))
	if err != nil {
		return err
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			b, _ := os.ReadFile(n.logPath)
			return fmt.Errorf("cache node exited at start: %s", b)
		default:
		}
		if c, err := net.DialTimeout("tcp", n.addr, 200*time.Millisecond); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	n.kill()
	return fmt.Errorf("cache node not listening on %s after %s", n.addr, timeout)
}

// accessEntry is one line of an app server's access log.
type accessEntry struct {
	app    int
	end    time.Time // when the app server logged it: the end of its handling
	dur    time.Duration
	method string
	coll   string
	status int
	cache  string
}

// accessLog reads the access logs of every app server (every run of each, restarts
// included).
func (tp *topo) accessLog() []accessEntry {
	var out []accessEntry
	for _, a := range tp.apps {
		f, err := os.Open(a.logPath)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			var e struct {
				Time       time.Time `json:"time"`
				Msg        string    `json:"msg"`
				Method     string    `json:"method"`
				Collection string    `json:"collection"`
				Status     int       `json:"status"`
				Cache      string    `json:"cache"`
				Duration   int64     `json:"duration"`
			}
			if json.Unmarshal(sc.Bytes(), &e) != nil || e.Msg != "request" {
				continue
			}
			out = append(out, accessEntry{app: a.n, end: e.Time, dur: time.Duration(e.Duration), method: e.Method,
				coll: e.Collection, status: e.Status, cache: e.Cache})
		}
		f.Close()
	}
	return out
}

// servedBy returns a function that names the app server(s) that may have served an
// operation of h on coll: those whose access log has a request of the same method, status
// and (for a read) X-Cache, handled inside the operation's interval. The access log does not
// name the document, so concurrent requests of the same shape make the answer ambiguous: it
// then names every candidate. For failure messages only.
func (tp *topo) servedBy(h *History, coll string) func(Op) string {
	var log []accessEntry
	var once sync.Once
	return func(o Op) string {
		once.Do(func() { log = tp.accessLog() })
		method := http.MethodGet
		if o.Write() {
			method = http.MethodPut
		}
		from, to := h.start.Add(o.Start), h.start.Add(o.End)
		cache := strings.TrimPrefix(o.Served, "replica")
		apps := map[int]int{}
		n := 0
		for _, e := range log {
			if e.method != method || e.coll != coll || e.end.Before(from) || e.end.After(to) || e.end.Add(-e.dur).Before(from) {
				continue
			}
			if o.Kind == Get && (e.status != o.Status || e.cache != cache) {
				continue
			}
			apps[e.app]++
			n++
		}
		if n == 0 {
			return "no matching request in the app servers' access logs"
		}
		var names []string
		for _, a := range slices.Sorted(maps.Keys(apps)) {
			names = append(names, fmt.Sprintf("app%d x%d", a, apps[a]))
		}
		return fmt.Sprintf("%d matching request(s) in the access logs: %s", n, strings.Join(names, ", "))
	}
}
