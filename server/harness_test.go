package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-project/strata/docstore"
	"github.com/strata-project/strata/docstore/postgres"
	"github.com/strata-project/strata/docstore/sqlite"
	"github.com/strata-project/strata/internal/testenv"
	"github.com/strata-project/strata/replica"
	"github.com/strata-project/strata/server"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// Test keys: long random-looking strings, as GenerateKey would make.
const (
	adminKey  = "adm-4f9c2b7e1d3a5c8f0b6e9d2a7c4f1e3b"
	writerKey = "wrt-9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d"
	readerKey = "rdr-1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e"
)

var testKeys = []server.Key{
	{ID: "admin", Hash: server.HashKey(adminKey), Scopes: []server.Scope{{Action: "admin"}, {Action: "read", Collection: "*"}, {Action: "write", Collection: "*"}}},
	{ID: "writer", Hash: server.HashKey(writerKey), Scopes: []server.Scope{{Action: "read", Collection: "*"}, {Action: "write", Collection: "docs"}, {Action: "write", Collection: "sess"}, {Action: "write", Collection: "limited"}}},
	{ID: "reader", Hash: server.HashKey(readerKey), Scopes: []server.Scope{{Action: "read", Collection: "docs"}}},
}

// lockedBuffer collects log output from concurrent handlers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// env is a running server on loopback.
type env struct {
	t      *testing.T
	srv    *server.Server
	base   string
	admin  string
	logs   *lockedBuffer
	client *http.Client
	signer *replica.Signer
}

// start runs a server over store on 127.0.0.1 with an admin listener. mod may change the
// config and listen settings before the start.
func start(t *testing.T, store docstore.Store, mod func(*server.Config, *server.Listen)) *env {
	t.Helper()
	signer, err := replica.NewSigner([]byte("0123456789abcdef-test-signing-key"))
	if err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	cfg := server.Config{
		Store: store,
		Collections: map[string]server.Collection{
			"docs":     {},
			"sess":     {Consistency: server.Session},
			"eventual": {Consistency: server.Eventual},
		},
		Keys:     testKeys,
		Signer:   signer,
		Logger:   slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registry: prometheus.NewRegistry(),
	}
	l := server.Listen{Addr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0"}
	if mod != nil {
		mod(&cfg, &l)
	}
	s, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(l); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	})
	addrs := s.Addrs()
	e := &env{t: t, srv: s, base: "http://" + addrs[0].String(), logs: logs, client: &http.Client{Timeout: 30 * time.Second}, signer: signer}
	if len(addrs) > 1 {
		e.admin = "http://" + addrs[1].String()
	}
	return e
}

// resp is a response read in full.
type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body %q: %v", r.body, err)
	}
	return m
}

// problem checks that r is a problem+json of status and type name.
func (r resp) problem(t *testing.T, status int, name string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type %q, want application/problem+json", ct)
	}
	m := r.json(t)
	if m["type"] != server.ProblemTypePrefix+name || m["status"] != float64(status) {
		t.Fatalf("problem %v, want type %s status %d", m, name, status)
	}
}

// do sends a request; key "" sends none; hdr holds extra header pairs.
func (e *env) do(method, path, key, body string, hdr ...string) resp {
	e.t.Helper()
	return e.doURL(method, e.base+path, key, body, hdr...)
}

func (e *env) doURL(method, url, key, body string, hdr ...string) resp {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	res, err := e.client.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

func openSQLite(t *testing.T) docstore.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(t.TempDir(), "docs.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func openPostgres(t *testing.T) docstore.Store {
	t.Helper()
	pg, db := testenv.SharedPostgres(t)
	dsn := pg.Primary.DSN(db)
	s, err := postgres.Open(context.Background(), postgres.Config{DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// stores are the backends every API test runs on.
var stores = []struct {
	name string
	open func(t *testing.T) docstore.Store
}{
	{"sqlite", openSQLite},
	{"postgres", openPostgres},
}

// eachStore runs fn as a subtest per backend.
func eachStore(t *testing.T, fn func(t *testing.T, open func(t *testing.T) docstore.Store)) {
	for _, s := range stores {
		t.Run(s.name, func(t *testing.T) { fn(t, s.open) })
	}
}
