package twotier_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/strata-project/strata/cache"
	"github.com/strata-project/strata/cache/redisstore"
	"github.com/strata-project/strata/cache/twotier"
	"github.com/strata-project/strata/engines"
)

func Example() {
	// A throwaway redis-server for the example; in production, point Addrs at yours.
	dir, _ := os.MkdirTemp("", "twotier-example-")
	defer os.RemoveAll(dir)
	r, err := engines.StartRedis(context.Background(), engines.RedisOptions{Dir: dir})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer r.Close()

	l2, err := redisstore.New(redisstore.Config{Addrs: []string{r.Addr()}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer l2.Close()
	s, err := twotier.New(twotier.Config{
		L2:    l2,
		Bus:   twotier.NewRedisBus(l2.Client(), "", 0),
		L1TTL: time.Second,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()
	ctx := context.Background()

	_, _ = s.SetIfNewer(ctx, "user:1", cache.Entry{Value: []byte("ada"), Version: 1}, time.Minute)
	e, _, _ := s.Get(ctx, "user:1")
	fmt.Printf("%s v%d\n", e.Value, e.Version)
	// A strong read skips L1 and asks Redis.
	e, _, _ = s.Get(twotier.StrongRead(ctx), "user:1")
	fmt.Printf("strong: %s v%d\n", e.Value, e.Version)
	// Output:
	// ada v1
	// strong: ada v1
}
