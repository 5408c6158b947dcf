package redislimit_test

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/strata-project/strata/engines"
	"github.com/strata-project/strata/ratelimit"
	"github.com/strata-project/strata/ratelimit/redislimit"
)

// Two processes (here: two limiters with their own clients) share one
// limit of 2 requests per hour per key through Redis.
func Example() {
	dir, _ := os.MkdirTemp("", "redislimit-example-")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	r, err := engines.StartRedis(ctx, engines.RedisOptions{Dir: dir})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer r.Close()

	cfg := redislimit.Config{Addrs: []string{r.Addr()}, Rate: ratelimit.Rate{Limit: 2, Period: time.Hour}}
	a, _ := redislimit.New(cfg)
	defer a.Close()
	b, _ := redislimit.New(cfg)
	defer b.Close()

	for _, l := range []*redislimit.GCRA{a, b, a} {
		d, err := l.AllowN(ctx, "client-42", 1)
		fmt.Println(d.Allowed, d.Remaining, d.RetryAfter.Round(time.Minute), err)
	}
	// Output:
	// true 1 0s <nil>
	// true 0 0s <nil>
	// false 0 30m0s <nil>
}
