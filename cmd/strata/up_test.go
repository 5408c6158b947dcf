package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
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
// server 2 through `strata chaos`, keep reading, stop with SIGINT, no process left.
func exercise(t *testing.T, bin string, u *upRun) {
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
		t.Fatalf("stale conditional PUT: %d %s, want 412", code, body)
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
	if len(all) < 4 {
		t.Fatalf("up has %d descendant processes, want at least 4 (3 app servers, the cache)", len(all))
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
	exercise(t, bin, u)

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
	u, missing := startUp(t, bin, 60*time.Second, "--engines", "local", "--shards", "1", "--replicas", "2",
		"--data", t.TempDir(), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0")
	if missing != "" {
		if os.Getenv("STRATA_REQUIRE_SERVICES") == "1" {
			t.Fatalf("an engine is missing: %s", missing)
		}
		t.Skipf("an engine is missing: %s", missing)
	}
	t.Logf("strata up --engines local: ready %v after the command", u.ready)
	exercise(t, bin, u)
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
