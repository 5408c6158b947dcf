package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/strata-project/strata/docstore"
	"github.com/strata-project/strata/docstore/postgres"
)

// A server that cannot be reached is reported as docstore.ErrUnavailable, within the
// configured timeout.
func Example_unavailable() {
	_, err := postgres.Open(context.Background(), postgres.Config{
		DSN:     "postgres://postgres@127.0.0.1:1/docs?sslmode=disable",
		Timeout: time.Second,
	})
	fmt.Println(errors.Is(err, docstore.ErrUnavailable))
	// Output: true
}
