package reliability

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
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
	"github.com/strata-project/strata/lb"
	"github.com/strata-project/strata/server"
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
	mu      sync.Mutex // protects cmd, done
	cmd     *exec.Cmd
	done    chan struct{}
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	p, err := engines.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return "127.0.0.1:" + strconv.Itoa(p)
}

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
		a.env = append(os.Environ(), "STRATA_REL_SESSION_KEY="+tp.session)
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
		Health:  lb.HealthConfig{Interval: 200 * time.Millisecond, Timeout: 300 * time.Millisecond, Rise: 2, Fall: 2},
		Outlier: lb.OutlierConfig{ConsecutiveFailures: 3, BaseEjection: 2 * time.Second},
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

// start runs the app server and waits until /readyz answers 200.
func (a *appProc) start(timeout time.Duration) error {
	logf, err := os.OpenFile(a.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd := exec.Command(strataBin, "app", "--config", a.config)
	cmd.Env = a.env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	a.mu.Lock()
	a.cmd, a.done = cmd, done
	a.mu.Unlock()
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

// kill sends SIGKILL to the app server and waits until it is gone.
func (a *appProc) kill() {
	a.mu.Lock()
	cmd, done := a.cmd, a.done
	a.mu.Unlock()
	if cmd == nil {
		return
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-done
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
