package topology_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/strata-project/strata/config"
	"github.com/strata-project/strata/engines"
	"github.com/strata-project/strata/topology"
)

// strataBin is the strata binary built for the tests, "" when the build failed.
var strataBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "topology-test-")
	if err == nil {
		strataBin = filepath.Join(dir, "strata")
		if out, err := exec.Command("go", "build", "-o", strataBin, "../cmd/strata").CombinedOutput(); err != nil {
			os.Stderr.Write(out)
			strataBin = ""
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func TestFreshRefusesAForeignDirectory(t *testing.T) {
	dir := t.TempDir()
	precious := filepath.Join(dir, "precious.txt")
	os.WriteFile(precious, []byte("keep me"), 0o600)
	_, err := topology.Start(context.Background(), topology.Config{DataDir: dir, Fresh: true, Exe: "/nonexistent"})
	if !errors.Is(err, topology.ErrConfig) {
		t.Fatalf("Start --fresh on a directory up did not make: %v, want ErrConfig", err)
	}
	if _, err := os.Stat(precious); err != nil {
		t.Fatalf("the foreign file is gone: %v", err)
	}
}

func TestStartChaosClose(t *testing.T) {
	if strataBin == "" {
		t.Fatal("the strata binary did not build")
	}
	ctx := context.Background()
	top, err := topology.Start(ctx, topology.Config{DataDir: t.TempDir(), Exe: strataBin, AppServers: 2, Shards: 2,
		Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer top.Close(ctx)
	m := top.Map()
	if len(m.Apps) != 2 || len(m.Shards) != 2 || m.Cache == "" || m.DemoKey == "" || m.AdminKey == "" {
		t.Fatalf("map: %+v", m)
	}
	pids := top.PIDs()
	if len(pids) != 3 {
		t.Fatalf("PIDs = %v, want 2 app servers and the cache node", pids)
	}
	h := top.AdminHandler()
	call := func(key, action, target string) int {
		req := httptest.NewRequest("POST", "/chaos/"+action+"?target="+target, nil)
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != 200 && w.Header().Get("Content-Type") != "application/problem+json" {
			t.Errorf("%s: status %d with content type %q", action, w.Code, w.Header().Get("Content-Type"))
		}
		return w.Code
	}
	for _, tc := range []struct {
		key, action, target string
		want                int
	}{
		{"", "kill-app", "1", http.StatusUnauthorized},
		{"strata_admin_wrong", "kill-app", "1", http.StatusUnauthorized},
		{m.DemoKey, "kill-app", "1", http.StatusUnauthorized},
		{m.AdminKey, "no-such-action", "", http.StatusNotFound},
		{m.AdminKey, "kill-app", "3", http.StatusBadRequest},
		{m.AdminKey, "kill-app", "x", http.StatusBadRequest},
		{m.AdminKey, "pause-replica", "1", http.StatusConflict},
		{m.AdminKey, "kill-primary", "", http.StatusConflict},
		{m.AdminKey, "kill-app", "2", http.StatusOK},
		{m.AdminKey, "kill-app", "2", http.StatusConflict},
		{m.AdminKey, "restart-app", "2", http.StatusOK},
		{m.AdminKey, "stop-cache", "", http.StatusOK},
		{m.AdminKey, "start-cache", "", http.StatusOK},
		{m.AdminKey, "start-cache", "", http.StatusConflict},
	} {
		if got := call(tc.key, tc.action, tc.target); got != tc.want {
			t.Errorf("POST /chaos/%s?target=%s: %d, want %d", tc.action, tc.target, got, tc.want)
		}
	}
	// The restarted processes are new ones, and all of them run.
	req := httptest.NewRequest("GET", "/status", nil)
	req.Header.Set("Authorization", "Bearer "+m.AdminKey)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	var st topology.Status
	if err := json.Unmarshal(w.Body.Bytes(), &st); err != nil {
		t.Fatal(err)
	}
	if !st.Apps[0].Running || st.Apps[0].PID != pids[0] || !st.Apps[1].Running || st.Apps[1].PID == pids[1] ||
		!st.Cache.Running || st.Cache.PID == pids[2] {
		t.Fatalf("status after restarts: %+v", st)
	}
	now := top.PIDs()
	if err := top.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, pid := range append(pids, now...) {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process %d survived Close (kill -0: %v)", pid, err)
		}
	}
}

// parse parses a configuration document or fails the test.
func parse(t *testing.T, doc string) *config.File {
	t.Helper()
	f, err := config.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestStartFromFileRefusesWhatTheFileDecides(t *testing.T) {
	app := "app:\n  store: {kind: sqlite, path: x.db}\n  collections: {items: {}}\n"
	for _, tc := range []struct {
		name string
		cfg  topology.Config
		want string
	}{
		{"engines", topology.Config{Engines: topology.Local, File: parse(t, app)}, "leave Engines"},
		{"app servers", topology.Config{AppServers: 2, File: parse(t, app)}, "leave Engines, AppServers"},
		// config.Parse refuses such a file itself; Start checks a File built in code too.
		{"no app section", topology.Config{File: &config.File{Up: &config.Up{AppServers: 2}}}, "needs an app: section"},
		{"key id taken", topology.Config{File: parse(t, app+"  keys: [{id: demo, sha256: "+strings.Repeat("a", 64)+", scopes: [admin]}]\n")},
			`line 4: app.keys[0].id: "demo" is the id of a key that strata up adds`},
	} {
		tc.cfg.DataDir, tc.cfg.Exe = t.TempDir(), "/nonexistent"
		_, err := topology.Start(context.Background(), tc.cfg)
		if !errors.Is(err, topology.ErrConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrConfig containing %q", tc.name, err, tc.want)
		}
	}
}

// The file's lb section configures the balancer, whose backends are where the app servers
// listen; the cache and the database are the file's, so the cache actions do not apply.
func TestStartFromFile(t *testing.T) {
	if strataBin == "" {
		t.Fatal("the strata binary did not build")
	}
	dir := t.TempDir()
	var backends []string
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		backends = append(backends, ln.Addr().String())
		ln.Close()
	}
	f := parse(t, `up:
  admin: 127.0.0.1:0
lb:
  listen: 127.0.0.1:0
  policy: weighted-round-robin
  backends:
    - {address: "`+backends[0]+`", weight: 3}
    - {address: "`+backends[1]+`"}
app:
  store: {kind: sqlite, path: `+dir+`/db/one.db}
  cache: {kind: memory, pending_dir: `+dir+`/pending}
  collections:
    users: {strategy: cache-aside, consistency: eventual}
    items: {}
`)
	ctx := context.Background()
	top, err := topology.Start(ctx, topology.Config{DataDir: filepath.Join(dir, "data"), Exe: strataBin, File: f})
	if err != nil {
		t.Fatal(err)
	}
	defer top.Close(ctx)
	m := top.Map()
	if strings.Join(m.Apps, " ") != strings.Join(backends, " ") || m.CacheKind != "memory" ||
		strings.Join(m.Collections, ",") != "items,users" || m.CacheNote != "items none/strong, users cache-aside/eventual" ||
		len(m.Shards) != 1 || m.Shards[0] != dir+"/db/one.db" {
		t.Fatalf("map: %+v", m)
	}
	if len(top.PIDs()) != 2 {
		t.Fatalf("PIDs = %v, want the 2 app servers", top.PIDs())
	}
	// Each app server has a pending directory of its own, and the file's keys plus up's.
	for i := range 2 {
		g, err := config.Load(filepath.Join(dir, "data", "config", fmt.Sprintf("app-%d.yaml", i+1)))
		if err != nil {
			t.Fatal(err)
		}
		if g.App.Listen != backends[i] || g.App.Cache.PendingDir != filepath.Join(dir, "pending", fmt.Sprintf("app-%d", i+1)) || len(g.App.Keys) != 2 {
			t.Fatalf("app server %d: listen %s, pending %s, %d keys", i+1, g.App.Listen, g.App.Cache.PendingDir, len(g.App.Keys))
		}
	}
	h := top.AdminHandler()
	for _, tc := range []struct {
		action string
		want   int
	}{{"stop-cache", http.StatusConflict}, {"start-cache", http.StatusConflict}, {"pause-replica", http.StatusConflict}} {
		req := httptest.NewRequest("POST", "/chaos/"+tc.action, nil)
		req.Header.Set("Authorization", "Bearer "+m.AdminKey)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != tc.want {
			t.Errorf("%s: %d, want %d", tc.action, w.Code, tc.want)
		}
	}
	// The balancer runs the file's policy and weights: 3 requests to the first backend for
	// each to the second.
	counts := map[string]int{}
	for range 8 {
		req, _ := http.NewRequest("GET", "http://"+m.LB+"/v1/items/x", nil)
		req.Header.Set("Authorization", "Bearer "+m.DemoKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("GET of a missing document: %d", resp.StatusCode)
		}
	}
	var st struct {
		Backends []struct {
			Address  string
			Requests int64
		}
	}
	req := httptest.NewRequest("GET", "/status", nil)
	req.Header.Set("Authorization", "Bearer "+m.AdminKey)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if err := json.Unmarshal(w.Body.Bytes(), &st); err != nil {
		t.Fatal(err)
	}
	for _, b := range st.Backends {
		counts[b.Address] = int(b.Requests)
	}
	if counts[backends[0]] != 6 || counts[backends[1]] != 2 {
		t.Fatalf("requests per backend: %v, want 6 and 2 (weights 3 and 1)", counts)
	}
}

// With local engines the cache tier is a Redis Cluster: stop-cache stops every node, writes
// are refused meanwhile, start-cache brings the cluster back and writes go through again.
func TestLocalCacheChaos(t *testing.T) {
	if strataBin == "" {
		t.Fatal("the strata binary did not build")
	}
	ctx := context.Background()
	top, err := topology.Start(ctx, topology.Config{DataDir: t.TempDir(), Exe: strataBin, Engines: topology.Local,
		AppServers: 1, Shards: 1, Replicas: -1, Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0"})
	if engines.IsMissingBinary(err) && os.Getenv("STRATA_REQUIRE_SERVICES") != "1" {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer top.Close(ctx)
	m := top.Map()
	if n := len(strings.Fields(m.Cache)); n != 6 {
		t.Fatalf("cache %q: want the 6 nodes of the cluster", m.Cache)
	}
	put := func() int {
		req, _ := http.NewRequest("PUT", "http://"+m.LB+"/v1/items/k", strings.NewReader(`{"v":1}`))
		req.Header.Set("Authorization", "Bearer "+m.DemoKey)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := put(); code/100 != 2 {
		t.Fatalf("PUT: %d", code)
	}
	pid := top.Status().Cache.PID
	if err := top.Chaos(ctx, "stop-cache", ""); err != nil {
		t.Fatal(err)
	}
	if st := top.Status().Cache; st.Running || st.PID != 0 {
		t.Fatalf("after stop-cache: %+v", st)
	}
	if err := top.Chaos(ctx, "stop-cache", ""); !errors.Is(err, topology.ErrNotApplicable) {
		t.Fatalf("stop-cache twice: %v", err)
	}
	if code := put(); code != http.StatusServiceUnavailable {
		t.Fatalf("PUT with the cache tier down: %d, want 503 (its invalidation cannot be delivered)", code)
	}
	if err := top.Chaos(ctx, "start-cache", ""); err != nil {
		t.Fatal(err)
	}
	if st := top.Status().Cache; !st.Running || st.PID == 0 || st.PID == pid {
		t.Fatalf("after start-cache: %+v (pid before %d)", st, pid)
	}
	deadline := time.Now().Add(20 * time.Second)
	for code := put(); code/100 != 2; code = put() {
		if time.Now().After(deadline) {
			t.Fatalf("PUT 20s after start-cache: %d", code)
		}
		time.Sleep(100 * time.Millisecond) // polling for the app server's breaker to close
	}
	now := top.Status().Cache.PID
	if err := top.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(now, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("redis node %d survived Close", now)
	}
}

// A file's app servers see up's environment as it is: a cache node that the file names
// through ${STRATA_CACHE_ADDR} and STRATA_CACHE_TOKEN is the operator's, not one of up's.
func TestStartFromFileKeepsTheEnvironment(t *testing.T) {
	if strataBin == "" {
		t.Fatal("the strata binary did not build")
	}
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	token := "a-token-of-the-operator-0123456789"
	node := exec.Command(strataBin, "cachenode", "--listen", addr)
	node.Env = append(os.Environ(), topology.EnvCacheToken+"="+token)
	if err := node.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { node.Process.Kill(); node.Wait() }()
	t.Setenv(topology.EnvCacheAddr, addr)
	t.Setenv(topology.EnvCacheToken, token)
	f := parse(t, `up: {app_servers: 2}
app:
  store: {kind: sqlite, path: `+dir+`/one.db}
  cache: {kind: node, addrs: ["${STRATA_CACHE_ADDR}"], token_env: STRATA_CACHE_TOKEN}
  collections: {items: {strategy: cache-aside}}
`)
	ctx := context.Background()
	top, err := topology.Start(ctx, topology.Config{DataDir: filepath.Join(dir, "data"), Exe: strataBin, File: f,
		Listen: "127.0.0.1:0", AdminListen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer top.Close(ctx)
	m := top.Map()
	if m.Cache != addr || m.CacheKind != "node" {
		t.Fatalf("cache %q (%s), want the operator's node at %s", m.Cache, m.CacheKind, addr)
	}
	// A strong write needs its invalidation delivered to the node: it goes through only
	// when the app servers hold the node's token.
	req, _ := http.NewRequest("PUT", "http://"+m.LB+"/v1/items/k", strings.NewReader(`{"v":1}`))
	req.Header.Set("Authorization", "Bearer "+m.DemoKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("PUT through the operator's cache node: %d %s", resp.StatusCode, body)
	}
}
