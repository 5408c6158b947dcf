package breaker_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/strata-project/strata/breaker"
)

func Example() {
	b, err := breaker.New(breaker.Config{
		Name:                "orders-db",
		ConsecutiveFailures: 2,
		OpenDuration:        30 * time.Second,
		OnStateChange: func(tr breaker.Transition) {
			fmt.Printf("%s: %v -> %v\n", tr.Name, tr.From, tr.To)
		},
	})
	if err != nil {
		panic(err)
	}
	down := errors.New("connection refused")
	query := func(context.Context) error { return down }
	for range 3 {
		err := b.Do(context.Background(), query)
		fmt.Println(err)
	}
	// Output:
	// connection refused
	// orders-db: closed -> open
	// connection refused
	// breaker: open
}

// The two-step form, for a caller that learns the result elsewhere, driven by explicit instants.
func ExampleBreaker_AllowAt() {
	b, _ := breaker.New(breaker.Config{ConsecutiveFailures: 1, OpenDuration: time.Second})
	start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

	tok, _ := b.AllowAt(start)
	tok.DoneAt(start, errors.New("503 from backend"))

	_, err := b.AllowAt(start.Add(500 * time.Millisecond))
	fmt.Println(err)

	probe, err := b.AllowAt(start.Add(time.Second))
	fmt.Println(err, b.State())
	probe.DoneAt(start.Add(time.Second), nil)
	fmt.Println(b.State())
	// Output:
	// breaker: open
	// <nil> half-open
	// closed
}
