package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/strata-project/strata/server"
)

const appKey = "app-test-key-0123456789abcdef0123"

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "strata.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigCheck(t *testing.T) {
	h := server.HashKey(appKey)
	good := writeConfig(t, `app:
  listen: 127.0.0.1:0
  store: {kind: sqlite, path: /tmp/x.db}
  collections:
    users: {consistency: strong}
  keys:
    - id: ci
      sha256: `+hexOf(h[:])+`
      scopes: [read:users, write:users]
`)
	var out, errb bytes.Buffer
	if code := run([]string{"config", "check", good}, &out, &errb); code != 0 || !strings.Contains(out.String(), "ok") {
		t.Fatalf("good config: %d %s %s", code, out.String(), errb.String())
	}
	for _, tc := range []struct{ body, want string }{
		{"app:\n  store: {kind: sqlite, path: x}\n  collections:\n    users: {strategy: write-behind}\n  cache: {kind: redis, addrs: [a:1]}\n", "line 4: app.collections.users: strong consistency cannot be honoured with write-behind"},
		{"app:\n  store: {kind: sqlite, path: x}\n  collections:\n    users: {consistency: sometimes}\n", "line 4: app.collections.users.consistency"},
		{"app:\n  store: {kind: mongo}\n  collections: {users: {}}\n", "line 2: app.store.kind"},
		{"app:\n  store: {kind: sqlite, path: x}\n  collections: {users: {}}\n  keys:\n    - id: k\n      sha256: plaintextkey\n      scopes: [read:users]\n", "line 6: app.keys[0].sha256"},
		{"app:\n  store: {kind: sqlite, path: x}\n  collections: {users: {}}\n  keys:\n    - id: k\n      sha256_env: K\n      scopes: [read:orders]\n", "line 7: app.keys[0].scopes"},
		{"app:\n  store: {kind: sqlite, path: x}\n  collections: {users: {consistency: session}}\n", "app.session_key_env"},
		{"app:\n  bogus: 1\n", "line 2"},
	} {
		p := writeConfig(t, tc.body)
		var out, errb bytes.Buffer
		if code := run([]string{"config", "check", p}, &out, &errb); code != 1 || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("config %q: exit %d, stderr %q, want %q", tc.body, code, errb.String(), tc.want)
		}
	}
	if code := run([]string{"config"}, io.Discard, io.Discard); code != 2 {
		t.Fatalf("usage exit %d", code)
	}
}

func hexOf(b []byte) string {
	const digits = "0123456789abcdef"
	var s strings.Builder
	for _, c := range b {
		s.WriteByte(digits[c>>4])
		s.WriteByte(digits[c&15])
	}
	return s.String()
}

func TestRunApp(t *testing.T) {
	h := server.HashKey(appKey)
	p := writeConfig(t, `app:
  listen: 127.0.0.1:0
  store: {kind: sqlite, path: `+filepath.Join(t.TempDir(), "d.db")+`}
  collections:
    users: {}
  keys:
    - id: ci
      sha256_env: STRATA_TEST_KEY_HASH
      scopes: [read:users, write:users]
`)
	t.Setenv("STRATA_TEST_KEY_HASH", hexOf(h[:]))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan *server.Server, 1)
	done := make(chan error, 1)
	var logs bytes.Buffer
	go func() {
		done <- runApp(ctx, p, slog.New(slog.NewTextHandler(&syncWriter{w: &logs}, nil)), func(s *server.Server) { ready <- s })
	}()
	var srv *server.Server
	select {
	case srv = <-ready:
	case err := <-done:
		t.Fatalf("app did not start: %v", err)
	}
	base := "http://" + srv.Addrs()[0].String()
	req, _ := http.NewRequest("PUT", base+"/v1/users/u1", strings.NewReader(`{"name":"a"}`))
	req.Header.Set("Authorization", "Bearer "+appKey)
	res, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 201 {
		t.Fatalf("PUT through strata app: %d", res.StatusCode)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if code := cmdApp([]string{}, io.Discard, io.Discard); code != 2 {
		t.Fatalf("usage exit %d", code)
	}
}

type syncWriter struct {
	w io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) { return s.w.Write(p) }
