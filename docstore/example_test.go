package docstore_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/strata-project/strata/docstore"
	"github.com/strata-project/strata/docstore/sqlite"
	"github.com/strata-project/strata/shard"
)

// Example shards documents over two SQLite files, then grows to three shards online.
func Example() {
	dir, _ := os.MkdirTemp("", "docstore-example")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	open := func(name string) docstore.Backend {
		b, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(dir, name+".db"), Partitions: 1024})
		if err != nil {
			panic(err)
		}
		return b
	}
	m, _ := shard.NewMap([]string{"s1", "s2"}, 1024)
	s, err := docstore.NewSharded(m, map[string]docstore.Backend{"s1": open("s1"), "s2": open("s2")}, docstore.ShardedConfig{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()

	for _, id := range []string{"carol", "alice", "bob"} {
		s.Put(ctx, "users", id, []byte(`{"plan":"free"}`))
	}
	d, _ := s.Get(ctx, "users", "alice")
	_, err = s.PutIfVersion(ctx, "users", "alice", []byte(`{"plan":"pro"}`), d.Version+1)
	var conflict *docstore.VersionConflictError
	fmt.Println("stale write refused:", errors.As(err, &conflict), "current version", conflict.Current)

	s.AddShard("s3", open("s3"))
	rep, _ := s.Reshard(ctx, []string{"s1", "s2", "s3"})
	fmt.Println("partitions moved:", len(rep.Moves), "of", m.Partitions())
	s.Cleanup(ctx)

	page, _ := s.List(ctx, "users", "", 10)
	for _, d := range page.Docs {
		fmt.Println(d.ID, d.Version)
	}
	// Output:
	// stale write refused: true current version 1
	// partitions moved: 341 of 1024
	// alice 1
	// bob 1
	// carol 1
}
