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

// startRedis starts a throwaway Redis for an example.
func startRedis() (addr string, stop func(), err error) {
	dir, err := os.MkdirTemp("", "redislimit-example-")
	if err != nil {
		return "", nil, err
	}
	r, err := engines.StartRedis(context.Background(), engines.RedisOptions{Dir: dir})
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, err
	}
	return r.Addr(), func() { r.Close(); os.RemoveAll(dir) }, nil
}

// An exact sliding window of 3 requests per hour per key, shared by every
// process that uses the same Redis.
func ExampleNewSlidingLog() {
	addr, stop, err := startRedis()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()

	l, err := redislimit.NewSlidingLog(redislimit.Config{Addrs: []string{addr}},
		ratelimit.WindowConfig{Limit: 3, Window: time.Hour})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer l.Close()
	ctx := context.Background()
	for _, n := range []int{2, 1, 1} {
		d, err := l.AllowN(ctx, "client-42", n)
		fmt.Println(d.Allowed, d.Remaining, d.RetryAfter.Round(time.Minute), err)
	}
	// Output:
	// true 1 0s <nil>
	// true 0 0s <nil>
	// false 0 1h0m0s <nil>
}

// At most one export per user runs at a time, over every process; units
// not given back (a crashed process) are reclaimed after HoldTimeout.
func ExampleConcurrency() {
	addr, stop, err := startRedis()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()

	l, err := redislimit.NewConcurrency(redislimit.Config{Addrs: []string{addr}},
		redislimit.ConcurrencyConfig{Max: 1, HoldTimeout: 10 * time.Minute})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer l.Close()
	ctx := context.Background()
	first, _ := l.AllowN(ctx, "export:alice", 1)
	second, _ := l.AllowN(ctx, "export:alice", 1)
	l.Release("export:alice", 1) // the first export is done
	third, _ := l.AllowN(ctx, "export:alice", 1)
	fmt.Println(first.Allowed, second.Allowed, third.Allowed)
	// Output: true false true
}
