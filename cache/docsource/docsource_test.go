package docsource_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/strata-project/strata/cache"
	"github.com/strata-project/strata/cache/docsource"
	"github.com/strata-project/strata/cache/memstore"
	"github.com/strata-project/strata/docstore/sqlite"
)

func open(t testing.TB) *sqlite.Store {
	db, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(t.TempDir(), "db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestSourceOverSQLite(t *testing.T) {
	ctx := context.Background()
	src := docsource.New(open(t), "users")
	if _, _, err := src.Load(ctx, "u1"); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("Load of an absent id: %v, want cache.ErrNotFound", err)
	}
	v1, err := src.Write(ctx, "u1", []byte(`{"a":1}`))
	if err != nil || v1 != 1 {
		t.Fatalf("Write = %d, %v", v1, err)
	}
	v2, err := src.Apply(ctx, "u1", []byte(`{"a":2}`), false)
	if err != nil || v2 != 2 {
		t.Fatalf("Apply = %d, %v", v2, err)
	}
	b, v, err := src.Load(ctx, "u1")
	if err != nil || v != 2 || string(b) != `{"a":2}` {
		t.Fatalf("Load = %s v%d %v", b, v, err)
	}
	vd, err := src.Apply(ctx, "u1", nil, true)
	if err != nil || vd != 3 {
		t.Fatalf("Apply delete = %d, %v", vd, err)
	}
	if _, err := src.Delete(ctx, "u1"); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("Delete of a deleted id: %v, want cache.ErrNotFound", err)
	}
	if v, err := src.Apply(ctx, "u1", nil, true); err != nil || v != 0 {
		t.Fatalf("Apply delete of an absent id = %d, %v", v, err)
	}
}

func Example() {
	ctx := context.Background()
	dir := exampleDir()
	defer os.RemoveAll(dir)
	db, _ := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(dir, "db")})
	defer db.Close()
	store, _ := memstore.New(memstore.Config{})
	defer store.Close()
	c, _ := cache.New(cache.Config{Store: store, Source: docsource.New(db, "users")})
	defer c.Close()
	v, _ := c.WriteThrough(ctx, "ada", []byte(`{"name":"ada"}`))
	body, _ := c.Get(ctx, "ada")
	fmt.Println(v, string(body))
	// Output: 1 {"name":"ada"}
}
