package server_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"

	"github.com/strata-project/strata/docstore/sqlite"
	"github.com/strata-project/strata/server"
)

func Example() {
	dir, _ := os.MkdirTemp("", "strata-example")
	defer os.RemoveAll(dir)
	store, _ := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(dir, "docs.db")})
	defer store.Close()

	const key = "example-key-0123456789abcdef0123" // generated; only its hash is configured
	srv, err := server.New(server.Config{
		Store:       store,
		Collections: map[string]server.Collection{"users": {Consistency: server.Strong}},
		Keys: []server.Key{{ID: "app", Hash: server.HashKey(key), Scopes: []server.Scope{
			{Action: "read", Collection: "users"}, {Action: "write", Collection: "users"}}}},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()

	req, _ := http.NewRequest("PUT", ts.URL+"/v1/users/ada", strings.NewReader(`{"name":"Ada"}`))
	req.Header.Set("Authorization", "Bearer "+key)
	res, _ := http.DefaultClient.Do(req)
	res.Body.Close()
	fmt.Println(res.Status, res.Header.Get("ETag"))

	req, _ = http.NewRequest("GET", ts.URL+"/v1/users/ada", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("If-None-Match", `"1"`)
	res, _ = http.DefaultClient.Do(req)
	res.Body.Close()
	fmt.Println(res.Status, res.Header.Get("X-Cache"))
	// Output:
	// 201 Created "1"
	// 304 Not Modified bypass
}
