package topology_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

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
