package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
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
	"syscall"
	"testing"
	"time"

	"github.com/strata-project/strata/engines"
	"github.com/strata-project/strata/internal/testenv"
)

// buildStrata builds the binary once per test into t.TempDir().
func buildStrata(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "strata")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// upRun is a running `strata up`, as a user runs it.
type upRun struct {
	cmd      *exec.Cmd
	lb       string // http://host:port
	admin    string
	demoKey  string
	adminKey string
	ready    time.Duration
	exited   chan error
	output   *bytes.Buffer // stdout, for failure messages
}

// startUp runs `strata up` with args and waits for the printed map (at most timeout). It
// reports a missing engine binary through missing.
func startUp(t *testing.T, bin string, timeout time.Duration, args ...string) (u *upRun, missing string) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"up"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	u = &upRun{cmd: cmd, exited: make(chan error, 1), output: &bytes.Buffer{}}
	began := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		u.exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
		}
	})
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				// Wait for the process (and so for its stderr to be copied) before reading it.
				werr := <-u.exited
				u.exited <- werr
				if strings.Contains(stderr.String(), "install the Debian package") {
					return nil, stderr.String()
				}
				t.Fatalf("strata up exited before it was ready:\n%s\n%s", u.output, stderr.String())
			}
			u.output.WriteString(l + "\n")
			f := strings.Fields(l)
			switch {
			case strings.HasPrefix(l, "  load balancer "):
				u.lb = f[2]
			case strings.HasPrefix(l, "  admin key "):
				u.adminKey = f[2]
			case strings.HasPrefix(l, "  admin "):
				u.admin = f[1]
			case strings.HasPrefix(l, "  demo key "):
				u.demoKey = f[2]
			case l == "Ctrl-C stops everything.":
				u.ready = time.Since(began)
				go func() { // keep draining stdout
					for l := range lines {
						u.output.WriteString(l + "\n")
					}
				}()
				if u.lb == "" || u.admin == "" || u.demoKey == "" || u.adminKey == "" {
					t.Fatalf("incomplete map:\n%s", u.output)
				}
				return u, ""
			}
		case <-deadline:
			t.Fatalf("strata up not ready after %v:\n%s\n%s", timeout, u.output, stderr.String())
		}
	}
}

func (u *upRun) do(t *testing.T, method, path, body string, hdr ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, u.lb+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+u.demoKey)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// field returns a number field of a JSON document, or -1.
func field(body, name string) float64 {
	var m map[string]any
	if json.Unmarshal([]byte(body), &m) != nil {
		return -1
	}
	if v, ok := m[name].(float64); ok {
		return v
	}
	return -1
}

// status reads the admin API's status.
func (u *upRun) status(t *testing.T) (pids map[string]int, healthy map[string]bool) {
	t.Helper()
	req, _ := http.NewRequest("GET", u.admin+"/status", nil)
	req.Header.Set("Authorization", "Bearer "+u.adminKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		Apps []struct {
			Name string
			Addr string
			PID  int
		}
		Cache    struct{ PID int }
		Backends []struct {
			Address string
			Healthy bool
			Ejected bool
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatalf("status: %v", err)
	}
	pids, healthy = map[string]int{"cache": st.Cache.PID}, map[string]bool{}
	addrOf := map[string]string{}
	for _, a := range st.Apps {
		pids[a.Name] = a.PID
		addrOf[a.Addr] = a.Name
	}
	for _, b := range st.Backends {
		healthy[addrOf[b.Address]] = b.Healthy && !b.Ejected
	}
	return pids, healthy
}

// descendants lists every process below pid, from /proc.
func descendants(pid int) []int {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 {
			pp, _ := strconv.Atoi(f[1])
			children[pp] = append(children[pp], p)
		}
	}
	var out []int
	for q := []int{pid}; len(q) > 0; q = q[1:] {
		for _, c := range children[q[0]] {
			out = append(out, c)
			q = append(q, c)
		}
	}
	return out
}

// alive reports whether pid runs (kill -0 succeeds) and is not a zombie: an exited process
// that a parent which is not reaping (as PID 1 of some containers) has not collected yet.
func alive(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(f) == 0 || f[0] != "Z"
}

// exercise runs the user's story on a running up: CRUD through the load balancer, kill app
// server 2 through `strata chaos`, keep reading, stop with SIGINT, no process left. procs is
// the least number of processes up must have started.
func exercise(t *testing.T, bin string, u *upRun, procs int) {
	if code, body := u.do(t, "PUT", "/v1/items/e2e", `{"n":1}`); code/100 != 2 {
		t.Fatalf("PUT: %d %s", code, body)
	}
	if code, body := u.do(t, "GET", "/v1/items/e2e", ""); code != 200 || field(body, "n") != 1 {
		t.Fatalf("GET: %d %s", code, body)
	}
	if code, body := u.do(t, "PUT", "/v1/items/e2e", `{"n":2}`, "If-Match", `"1"`); code/100 != 2 {
		t.Fatalf("conditional PUT: %d %s", code, body)
	}
	if code, body := u.do(t, "PUT", "/v1/items/e2e", `{"n":3}`, "If-Match", `"1"`); code != http.StatusPreconditionFailed {
		// What the document is now tells which of the two writes the store lost.
		gc, gb := u.do(t, "GET", "/v1/items/e2e", "")
		t.Fatalf("stale conditional PUT: %d %s, want 412 (a GET now answers %d %s)", code, body, gc, gb)
	}
	if code, _ := u.do(t, "GET", "/v1/items/e2e", ""); code != 200 {
		t.Fatalf("GET after update: %d", code)
	}
	if code, body := u.do(t, "DELETE", "/v1/items/e2e", ""); code/100 != 2 {
		t.Fatalf("DELETE: %d %s", code, body)
	}
	if code, _ := u.do(t, "GET", "/v1/items/e2e", ""); code != http.StatusNotFound {
		t.Fatalf("GET after DELETE: %d, want 404", code)
	}
	for i := range 20 {
		if code, body := u.do(t, "PUT", fmt.Sprintf("/v1/users/u%d", i), fmt.Sprintf(`{"i":%d}`, i)); code/100 != 2 {
			t.Fatalf("PUT u%d: %d %s", i, code, body)
		}
	}

	pids, _ := u.status(t)
	all := descendants(u.cmd.Process.Pid)
	if len(all) < procs {
		t.Fatalf("up has %d descendant processes, want at least %d", len(all), procs)
	}
	out, err := exec.Command(bin, "chaos", "kill-app", "2", "--url", u.admin, "--key", u.adminKey).CombinedOutput()
	if err != nil {
		t.Fatalf("strata chaos kill-app 2: %v\n%s", err, out)
	}
	if alive(pids["app-2"]) {
		t.Fatalf("app-2 (pid %d) still alive after kill-app", pids["app-2"])
	}
	killed := time.Now()
	// The dashboard, fed by scraping the tiers, shows app-2 down within 3 s.
	for !dashboardShowsDown(t, u.admin+"/dashboard/snapshot.json", "app-2") {
		if time.Since(killed) > 3*time.Second {
			t.Fatalf("the dashboard did not show app-2 down within 3s of the kill")
		}
		time.Sleep(50 * time.Millisecond) // polling the dashboard's view
	}
	t.Logf("the dashboard showed app-2 down %v after the kill", time.Since(killed).Round(time.Millisecond))
	// Reads keep working while the balancer notices, and after it ejected the dead server.
	failed, ejected := 0, false
	deadline := time.Now().Add(15 * time.Second)
	for n := 0; n < 400 && time.Now().Before(deadline); n++ {
		id := fmt.Sprintf("/v1/users/u%d", n%20)
		if code, body := u.do(t, "GET", id, ""); code != 200 {
			failed++
			t.Errorf("GET %s after kill-app 2: %d %s", id, code, body)
		}
		if !ejected {
			_, healthy := u.status(t)
			ejected = !healthy["app-2"]
			if ejected {
				n = 300 // 100 more reads after the ejection
			}
		}
	}
	if !ejected {
		t.Errorf("the balancer did not take app-2 out of rotation within 15s")
	}
	if failed > 0 {
		t.Fatalf("%d GETs failed after kill-app 2", failed)
	}

	// Ctrl-C stops everything.
	u.stop(t)
	for _, pid := range all {
		if alive(pid) {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			t.Errorf("process %d (%s) outlived strata up", pid, bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		}
	}
}

func TestUpEmbedded(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds the binary and runs the whole topology")
	}
	bin := buildStrata(t)
	data := t.TempDir()
	u, _ := startUp(t, bin, 30*time.Second, "--data", data, "--fresh", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0")
	t.Logf("strata up (embedded): ready %v after the command", u.ready)
	exercise(t, bin, u, 4) // 3 app servers, the cache node

	// The data survives a restart; the earlier key does not.
	u2, _ := startUp(t, bin, 30*time.Second, "--data", data, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0")
	if code, body := u2.do(t, "GET", "/v1/users/u7", ""); code != 200 || field(body, "i") != 7 {
		t.Fatalf("GET after a restart: %d %s", code, body)
	}
	u2.demoKey = u.demoKey
	if code, _ := u2.do(t, "GET", "/v1/users/u7", ""); code != http.StatusUnauthorized {
		t.Fatalf("the previous run's key: %d, want 401", code)
	}
	u2.cmd.Process.Signal(os.Interrupt)
	if err := <-u2.exited; err != nil {
		t.Fatalf("second run after SIGINT: %v", err)
	}
}

func TestUpLocalEngines(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds the binary and runs the whole topology")
	}
	bin := buildStrata(t)
	data := t.TempDir()
	args := []string{"--engines", "local", "--shards", "1", "--replicas", "2",
		"--data", data, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"}
	u, missing := startUp(t, bin, 60*time.Second, args...)
	if missing != "" {
		if os.Getenv("STRATA_REQUIRE_SERVICES") == "1" {
			t.Fatalf("an engine is missing: %s", missing)
		}
		t.Skipf("an engine is missing: %s", missing)
	}
	t.Logf("strata up --engines local: ready %v after the command", u.ready)

	// The cache tier is a Redis Cluster of 3 masters and 3 replicas, and the app servers'
	// entries spread over its masters.
	nodes := u.cacheAddrs()
	if len(nodes) != 6 || !strings.Contains(u.output.String(), "(redis cluster: 3 masters, 3 replicas)") {
		t.Fatalf("cache tier: %q, want the 6 nodes of a redis cluster\n%s", nodes, u.output)
	}
	for i := range 30 {
		id := fmt.Sprintf("/v1/items/spread%d", i)
		if code, body := u.do(t, "PUT", id, `{"x":1}`); code/100 != 2 {
			t.Fatalf("PUT %s: %d %s", id, code, body)
		}
		if code, body := u.do(t, "GET", id, ""); code != 200 {
			t.Fatalf("GET %s: %d %s", id, code, body)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if info, err := engines.RedisDo(ctx, nodes[0], "CLUSTER", "INFO"); err != nil ||
		!strings.Contains(fmt.Sprint(info), "cluster_state:ok") || !strings.Contains(fmt.Sprint(info), "cluster_known_nodes:6") {
		t.Fatalf("CLUSTER INFO on %s: %v %v", nodes[0], info, err)
	}
	mastersWithKeys := 0
	for _, a := range nodes {
		role, err := engines.RedisDo(ctx, a, "ROLE")
		if err != nil {
			t.Fatal(err)
		}
		n, err := engines.RedisDo(ctx, a, "DBSIZE")
		if err != nil {
			t.Fatal(err)
		}
		if r, _ := role.([]any); len(r) > 0 && r[0] == "master" && n.(int64) > 0 {
			mastersWithKeys++
		}
	}
	if mastersWithKeys < 2 {
		t.Fatalf("%d masters of the cluster hold cache entries, want the entries spread over several", mastersWithKeys)
	}
	exercise(t, bin, u, 3+6+3) // 3 app servers, 6 redis nodes, a postgres primary and 2 replicas

	// The documents are kept across a restart without --fresh...
	u2, _ := startUp(t, bin, 60*time.Second, args...)
	t.Logf("strata up --engines local, second start on the same data: ready %v after the command", u2.ready)
	if code, body := u2.do(t, "GET", "/v1/users/u7", ""); code != 200 || field(body, "i") != 7 {
		t.Fatalf("GET after a restart: %d %s, want the document written by the first run", code, body)
	}
	if code, body := u2.do(t, "GET", "/v1/items/spread3", ""); code != 200 || field(body, "x") != 1 {
		t.Fatalf("GET after a restart: %d %s", code, body)
	}
	u2.stop(t)

	// ...and --fresh starts empty.
	u3, _ := startUp(t, bin, 60*time.Second, append(args, "--fresh")...)
	t.Logf("strata up --engines local --fresh: ready %v after the command", u3.ready)
	if code, body := u3.do(t, "GET", "/v1/users/u7", ""); code != http.StatusNotFound {
		t.Fatalf("GET after --fresh: %d %s, want 404", code, body)
	}
	u3.stop(t)
}

// cacheAddrs returns the cache tier's addresses from the printed map.
func (u *upRun) cacheAddrs() []string {
	for _, l := range strings.Split(u.output.String(), "\n") {
		if rest, ok := strings.CutPrefix(l, "  cache "); ok {
			var out []string
			for _, f := range strings.Fields(rest) {
				if strings.HasPrefix(f, "(") {
					break
				}
				out = append(out, f)
			}
			return out
		}
	}
	return nil
}

// stop sends SIGINT and waits for a clean exit.
func (u *upRun) stop(t *testing.T) {
	t.Helper()
	if err := u.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-u.exited:
		if err != nil {
			t.Fatalf("strata up after SIGINT: %v\n%s", err, u.output)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("strata up still running 30s after SIGINT")
	}
}

// freeAddrs returns n loopback addresses that were free a moment ago.
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	var lns []net.Listener
	var out []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().String())
	}
	for _, ln := range lns {
		ln.Close()
	}
	return out
}

// TestUpConfigFile runs `strata up --config` on a file without an lb: section: up.app_servers
// app servers on free ports, sharing SQLite shards that up creates.
func TestUpConfigFile(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds the binary and runs the whole topology")
	}
	bin := buildStrata(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "up.yaml")
	doc := fmt.Sprintf(`up:
  app_servers: 3
app:
  trusted_proxies: [127.0.0.1/32]
  store:
    kind: sqlite
    shards:
      - {name: a, path: %[1]s/db/a.db}
      - {name: b, path: %[1]s/db/b.db}
  collections:
    items: {}
    users: {}
`, dir)
	if err := os.WriteFile(file, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "config", "check", file).CombinedOutput(); err != nil {
		t.Fatalf("strata config check: %v\n%s", err, out)
	}
	u, _ := startUp(t, bin, 30*time.Second, "--config", file, "--data", filepath.Join(dir, "data"),
		"--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0")
	t.Logf("strata up --config (SQLite): ready %v after the command", u.ready)
	if n := strings.Count(u.output.String(), "/db/"); n != 2 || !strings.Contains(u.output.String(), "  config          "+file) {
		t.Fatalf("the map does not show the file's two shards and the file:\n%s", u.output)
	}
	exercise(t, bin, u, 3)
	for _, f := range []string{"a.db", "b.db"} {
		if _, err := os.Stat(filepath.Join(dir, "db", f)); err != nil {
			t.Errorf("shard %s: %v", f, err)
		}
	}
}

// TestUpConfigExample runs `strata up --config` on docs/examples/up.yaml, with its engine
// addresses pointed at a Redis Cluster and two PostgreSQL shards with a replica each that the
// test starts: the app servers use engines that up did not start.
func TestUpConfigExample(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds the binary and runs the whole topology")
	}
	example, err := os.ReadFile("../../docs/examples/up.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cluster := testenv.RedisCluster(t, engines.RedisClusterOptions{})
	pgs := []*engines.PostgresCluster{testenv.Postgres(t, 1), testenv.Postgres(t, 1)}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, c := range pgs {
		for _, q := range []string{"CREATE ROLE strata LOGIN PASSWORD 'example'", "CREATE DATABASE strata OWNER strata"} {
			if err := c.Primary.Exec(ctx, "postgres", q); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.WaitReplayed(ctx); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("STRATA_PG_PASSWORD", "example")
	bin := buildStrata(t)
	free := freeAddrs(t, 5)
	addrs := []string{
		"127.0.0.1:8080", free[0], "127.0.0.1:8079", free[1],
		"127.0.0.1:8081", free[2], "127.0.0.1:8082", free[3], "127.0.0.1:8083", free[4],
		"127.0.0.1:5432", pgs[0].Primary.Addr(), "127.0.0.1:5433", pgs[0].Replicas[0].Addr(),
		"127.0.0.1:5442", pgs[1].Primary.Addr(), "127.0.0.1:5443", pgs[1].Replicas[0].Addr(),
		"127.0.0.1:7000", cluster.Addrs()[0], "127.0.0.1:7001", cluster.Addrs()[1], "127.0.0.1:7002", cluster.Addrs()[2],
	}
	for i := 0; i < len(addrs); i += 2 {
		if !bytes.Contains(example, []byte(addrs[i])) {
			t.Fatalf("the example no longer has %s: update this test with it", addrs[i])
		}
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "up.yaml")
	if err := os.WriteFile(file, []byte(strings.NewReplacer(addrs...).Replace(string(example))), 0o600); err != nil {
		t.Fatal(err)
	}
	u, _ := startUp(t, bin, 60*time.Second, "--config", file, "--data", filepath.Join(dir, "data"))
	t.Logf("strata up --config docs/examples/up.yaml (external engines): ready %v after the command", u.ready)
	if u.lb != "http://"+free[0] || u.admin != "http://"+free[1] {
		t.Fatalf("balancer %s and admin %s, want the file's %s and %s", u.lb, u.admin, free[0], free[1])
	}
	if got := strings.Join(u.appAddrs(), " "); got != strings.Join(free[2:], " ") {
		t.Fatalf("app servers on %s, want the file's backends %v", got, free[2:])
	}
	if strings.Contains(u.output.String(), "example") {
		t.Fatalf("the map shows the database password:\n%s", u.output)
	}
	exercise(t, bin, u, 3)

	// The documents are in the shards, and the cache entries in the cluster.
	rows := 0
	for _, c := range pgs {
		var n int
		if err := c.Primary.QueryRow(ctx, "strata", "SELECT count(*) FROM pg_stat_user_tables WHERE n_tup_ins > 0", nil, &n); err != nil {
			t.Fatal(err)
		}
		rows += n
	}
	if rows == 0 {
		t.Fatal("no table of either shard received a row")
	}
	keys := int64(0)
	for _, a := range cluster.Addrs() {
		n, err := engines.RedisDo(ctx, a, "DBSIZE")
		if err != nil {
			t.Fatal(err)
		}
		keys += n.(int64)
	}
	if keys == 0 {
		t.Fatal("the app servers left no entry in the Redis Cluster")
	}
}

// appAddrs returns the app servers' addresses from the printed map.
func (u *upRun) appAddrs() []string {
	for _, l := range strings.Split(u.output.String(), "\n") {
		if rest, ok := strings.CutPrefix(l, "  app servers "); ok {
			return strings.Fields(rest)
		}
	}
	return nil
}

// Bad files and flags are refused before anything starts, with the line at fault.
func TestUpConfigErrors(t *testing.T) {
	dir := t.TempDir()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	free := freeAddrs(t, 1)[0]
	app := "app:\n  store: {kind: sqlite, path: " + dir + "/x.db}\n  collections: {items: {}}\n"
	for _, tc := range []struct {
		name, doc string
		args      []string
		want      string
	}{
		{"unknown field", "up:\n  app_servers: 2\n  engines: local\n" + app, nil, "line 3: up.engines: unknown field"},
		{"no app section", "up:\n  app_servers: 2\n", nil, "needs an app: section"},
		{"count disagrees", "up:\n  app_servers: 3\nlb:\n  backends: [{address: '" + free + "'}]\n" + app, nil, "line 2: up.app_servers: 3, but lb.backends lists 1"},
		{"backend in use", "lb:\n  backends:\n    - address: " + free + "\n    - address: " + busy.Addr().String() + "\n" + app, nil,
			"line 4: lb.backends[1].address: up runs app server 2 there"},
		{"engines and config", app, []string{"--engines", "local"}, "--engines and --config"},
		{"app servers and config", app, []string{"--app-servers", "2"}, "--app-servers and --config"},
	} {
		file := filepath.Join(dir, "up.yaml")
		if err := os.WriteFile(file, []byte(tc.doc), 0o600); err != nil {
			t.Fatal(err)
		}
		args := append([]string{"up", "--config", file, "--data", filepath.Join(dir, "data"),
			"--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"}, tc.args...)
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 2 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%s: exit %d, stderr %q; want 2 and %q", tc.name, code, errb.String(), tc.want)
		}
	}
}

func TestUpExampleChecks(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"config", "check", "../../docs/examples/up.yaml"}, &out, &errb); code != 0 {
		t.Fatalf("strata config check docs/examples/up.yaml: %d %s", code, errb.String())
	}
}

// dashboardShowsDown reports whether the dashboard's snapshot lists node as down.
func dashboardShowsDown(t *testing.T, url, node string) bool {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("dashboard snapshot: %v", err)
	}
	defer resp.Body.Close()
	var snap struct {
		Tiers []struct {
			Nodes []struct {
				Name   string `json:"name"`
				Health string `json:"health"`
			} `json:"nodes"`
		} `json:"tiers"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&snap); err != nil {
		t.Fatalf("dashboard snapshot: %v", err)
	}
	for _, tier := range snap.Tiers {
		for _, n := range tier.Nodes {
			if n.Name == node {
				return n.Health == "down"
			}
		}
	}
	return false
}

// lbRequests reads strata_lb_requests_total from up's admin listener.
func lbRequests(t *testing.T, u *upRun) float64 {
	t.Helper()
	req, _ := http.NewRequest("GET", u.admin+"/lb/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+u.adminKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "strata_lb_requests_total "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no strata_lb_requests_total in the load balancer's metrics (%d): %.300s", resp.StatusCode, b)
	return 0
}

// TestBenchAgainstUp runs `strata bench` against a running `strata up` for a few seconds and
// checks that the report's counts agree with what the load balancer counted.
func TestBenchAgainstUp(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds the binary and runs the whole topology")
	}
	bin := buildStrata(t)
	u, _ := startUp(t, bin, 30*time.Second, "--data", t.TempDir(), "--fresh", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0")
	defer func() {
		u.cmd.Process.Signal(os.Interrupt)
		<-u.exited
	}()
	before := lbRequests(t, u)
	out, err := exec.Command(bin, "bench", "-url", u.lb, "-key", u.demoKey, "-collection", "items",
		"-d", "2s", "-keys", "200", "-prepopulate", "-writes", "0.1", "-c", "8", "-json").Output()
	if err != nil {
		t.Fatalf("strata bench: %v\n%s", err, out)
	}
	var rep struct {
		Prepopulate struct {
			Requests int64 `json:"requests"`
		} `json:"prepopulate"`
		Total struct {
			Requests, OK, Errors, Writes int64
		} `json:"total"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("bench report: %v\n%s", err, out)
	}
	sent := rep.Prepopulate.Requests + rep.Total.Requests
	counted := lbRequests(t, u) - before
	t.Logf("bench sent %d requests (%d prepopulation), %d ok, %d errors; the load balancer counted %.0f",
		sent, rep.Prepopulate.Requests, rep.Total.OK, rep.Total.Errors, counted)
	if rep.Total.Requests < 100 || rep.Total.Errors != 0 || rep.Total.OK != rep.Total.Requests || rep.Total.Writes == 0 {
		t.Fatalf("bench report %+v: want a real run without errors", rep.Total)
	}
	if counted != float64(sent) {
		t.Fatalf("the load balancer counted %.0f requests, the bench report says %d", counted, sent)
	}
}
