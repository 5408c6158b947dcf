package redisstore_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/strata-project/strata/cache"
	"github.com/strata-project/strata/cache/redisstore"
	"github.com/strata-project/strata/engines"
)

func Example() {
	// A throwaway redis-server for the example; in production, point Addrs at yours.
	dir, _ := os.MkdirTemp("", "redisstore-example-")
	defer os.RemoveAll(dir)
	r, err := engines.StartRedis(context.Background(), engines.RedisOptions{Dir: dir})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer r.Close()

	s, err := redisstore.New(redisstore.Config{Addrs: []string{r.Addr()}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()
	ctx := context.Background()

	res, _ := s.SetIfNewer(ctx, "user:1", cache.Entry{Value: []byte("ada"), Version: 3}, time.Minute)
	fmt.Println("set v3:", res == cache.Stored)
	// A writer moved the source to version 4 and invalidated the key.
	_ = s.Invalidate(ctx, "user:1", 4, time.Minute)
	// A slow reader that loaded version 3 earlier tries to write it back: refused.
	res, _ = s.SetIfNewer(ctx, "user:1", cache.Entry{Value: []byte("ada"), Version: 3}, time.Minute)
	fmt.Println("stale set refused:", res == cache.Refused)
	_, ok, _ := s.Get(ctx, "user:1")
	fmt.Println("hit:", ok)
	// Output:
	// set v3: true
	// stale set refused: true
	// hit: false
}
