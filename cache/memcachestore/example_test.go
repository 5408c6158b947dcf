package memcachestore_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/strata-project/strata/cache"
	"github.com/strata-project/strata/cache/memcachestore"
	"github.com/strata-project/strata/engines"
)

func Example() {
	// A throwaway memcached for the example; in production, point Addrs at yours.
	dir, _ := os.MkdirTemp("", "memcachestore-example-")
	defer os.RemoveAll(dir)
	m, err := engines.StartMemcached(context.Background(), engines.MemcachedOptions{Dir: dir})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer m.Close()

	s, err := memcachestore.New(memcachestore.Config{Addrs: []string{m.Addr()}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()
	ctx := context.Background()

	_ = s.Invalidate(ctx, "user 1", 4, time.Minute) // any key works, spaces included
	res, _ := s.SetIfNewer(ctx, "user 1", cache.Entry{Value: []byte("old"), Version: 3}, time.Minute)
	fmt.Println("stale set refused:", res == cache.Refused)
	res, _ = s.SetIfNewer(ctx, "user 1", cache.Entry{Value: []byte("new"), Version: 4}, time.Minute)
	fmt.Println("current set stored:", res == cache.Stored)
	e, _, _ := s.Get(ctx, "user 1")
	fmt.Printf("%s at v%d\n", e.Value, e.Version)
	// Output:
	// stale set refused: true
	// current set stored: true
	// new at v4
}
