package retry_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/strata-project/strata/retry"
)

func Example() {
	budget, _ := retry.NewBudget(retry.BudgetConfig{}) // shared by every call to the dependency
	p := retry.Policy{
		MaxAttempts: 4,
		BaseDelay:   time.Millisecond,
		Budget:      budget,
		OnRetry: func(attempt int, err error, _ time.Duration) {
			fmt.Printf("attempt %d failed: %v\n", attempt, err)
		},
	}
	calls := 0
	err := p.Do(context.Background(), func(context.Context) error {
		calls++
		switch calls {
		case 1:
			return errors.New("connection reset")
		case 2:
			// A 429 with "Retry-After: 0": wait what the server asks, not the backoff.
			after, _ := retry.ParseRetryAfter("0", time.Now())
			return &retry.RetryAfterError{Err: errors.New("429 too many requests"), After: after}
		}
		return nil
	})
	fmt.Println(err, calls)
	// Output:
	// attempt 1 failed: connection reset
	// attempt 2 failed: 429 too many requests (retry after 0s)
	// <nil> 3
}
