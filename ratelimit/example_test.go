package ratelimit_test

import (
	"context"
	"fmt"
	"time"

	"github.com/strata-project/strata/ratelimit"
)

func ExampleGCRA() {
	// 10 requests per second, bursts of up to 3.
	l, err := ratelimit.NewGCRA(ratelimit.GCRAConfig{Rate: ratelimit.PerSecond(10), Burst: 3})
	if err != nil {
		panic(err)
	}
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 4 {
		d, _ := l.AllowNAt(start, "client-1", 1)
		fmt.Println(i, d.Allowed, d.Remaining, d.RetryAfter)
	}
	d, _ := l.AllowNAt(start.Add(100*time.Millisecond), "client-1", 1)
	fmt.Println("100ms later:", d.Allowed)
	// Output:
	// 0 true 2 0s
	// 1 true 1 0s
	// 2 true 0 0s
	// 3 false 0 100ms
	// 100ms later: true
}

func ExampleFixedWindow() {
	l, _ := ratelimit.NewFixedWindow(ratelimit.WindowConfig{Limit: 2, Window: time.Minute})
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, at := range []time.Duration{0, 59 * time.Second, 59 * time.Second, 60 * time.Second, 60 * time.Second} {
		d, _ := l.AllowNAt(start.Add(at), "k", 1)
		fmt.Println(at, d.Allowed)
	}
	// Output:
	// 0s true
	// 59s true
	// 59s false
	// 1m0s true
	// 1m0s true
}

func ExampleConcurrency() {
	l, _ := ratelimit.NewConcurrency(ratelimit.ConcurrencyConfig{Max: 1})
	ctx := context.Background()
	first, _ := l.AllowN(ctx, "upload:alice", 1)
	second, _ := l.AllowN(ctx, "upload:alice", 1)
	l.Release("upload:alice", 1)
	third, _ := l.AllowN(ctx, "upload:alice", 1)
	fmt.Println(first.Allowed, second.Allowed, third.Allowed)
	// Output: true false true
}

func ExampleDecision_Err() {
	l, _ := ratelimit.NewSlidingWindow(ratelimit.WindowConfig{Limit: 1, Window: time.Second})
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	l.AllowNAt(now, "k", 1)
	d, _ := l.AllowNAt(now, "k", 1)
	fmt.Println(d.Err())
	// Output: ratelimit: limited
}
