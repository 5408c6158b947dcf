package sqlite_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/strata-project/strata/docstore/sqlite"
)

func Example() {
	dir, _ := os.MkdirTemp("", "docstore-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	s, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(dir, "docs.db")})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()
	d, _ := s.Put(ctx, "users", "ada", []byte(`{"name":"Ada"}`))
	fmt.Println(d.ID, d.Version)
	v, _ := s.Delete(ctx, "users", "ada")
	fmt.Println("tombstone version", v)
	d, _ = s.Put(ctx, "users", "ada", []byte(`{"name":"Ada L."}`))
	fmt.Println(d.ID, d.Version)
	// Output:
	// ada 1
	// tombstone version 2
	// ada 3
}
