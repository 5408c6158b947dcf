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
	v2, err := src.Apply(ctx, "u1", []byte(`{"a":2}`), false, 0)
	if err != nil || v2 != 2 {
		t.Fatalf("Apply = %d, %v", v2, err)
	}
	b, v, err := src.Load(ctx, "u1")
	if err != nil || v != 2 || string(b) != `{"a":2}` {
		t.Fatalf("Load = %s v%d %v", b, v, err)
	}
	vd, err := src.Apply(ctx, "u1", nil, true, 0)
	if err != nil || vd != 3 {
		t.Fatalf("Apply delete = %d, %v", vd, err)
	}
	if _, err := src.Delete(ctx, "u1"); !errors.Is(err, cache.ErrNotFound) {
		t.Fatalf("Delete of a deleted id: %v, want cache.ErrNotFound", err)
	}
	if v, err := src.Apply(ctx, "u1", nil, true, 0); err != nil || v != 0 {
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

// TestStampedApplyLastWriteWins: two app servers' flushers apply writes of one document in
// the wrong order (the older stamp last); the newer write stays. Concurrent flushers of many
// stamped writes leave the newest stamp's value.
func TestStampedApplyLastWriteWins(t *testing.T) {
	ctx := context.Background()
	store := open(t)
	src := docsource.New(store, "users")
	if v, err := src.Apply(ctx, "u1", []byte(`{"w":2}`), false, 200); err != nil || v != 1 {
		t.Fatalf("Apply of the newer write = %d, %v", v, err)
	}
	if v, err := src.Apply(ctx, "u1", []byte(`{"w":1}`), false, 100); err != nil || v != 0 {
		t.Fatalf("Apply of the older write after the newer = %d, %v; want 0 (ignored)", v, err)
	}
	if v, err := src.Apply(ctx, "u1", nil, true, 150); err != nil || v != 0 {
		t.Fatalf("Apply of an older delete = %d, %v; want 0 (ignored)", v, err)
	}
	if b, _, err := src.Load(ctx, "u1"); err != nil || string(b) != `{"w":2}` {
		t.Fatalf("Load = %s, %v; want the newer write", b, err)
	}
	// The same write applied again (a replay after a crash) is applied, not refused.
	if v, err := src.Apply(ctx, "u1", []byte(`{"w":2}`), false, 200); err != nil || v != 2 {
		t.Fatalf("replay of the newest write = %d, %v", v, err)
	}
	if v, err := src.Apply(ctx, "u1", nil, true, 300); err != nil || v != 3 {
		t.Fatalf("a newer delete = %d, %v", v, err)
	}

	// Racing flushers: 4 goroutines apply 50 stamped writes each of one key, in shuffled
	// order; the value left is the one of the highest stamp.
	const per = 50
	errs := make(chan error, 4)
	for g := range 4 {
		go func() {
			for i := range per {
				stamp := int64((i*7+g*13)%per*4 + g + 1000) // distinct across goroutines
				if _, err := src.Apply(ctx, "race", []byte(fmt.Sprintf(`{"s":%d}`, stamp)), false, stamp); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	want := fmt.Sprintf(`{"s":%d}`, (per-1)*4+3+1000)
	if b, _, err := src.Load(ctx, "race"); err != nil || string(b) != want {
		t.Fatalf("after racing flushers: %s, %v; want %s", b, err, want)
	}
}
