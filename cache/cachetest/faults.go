package cachetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/strata-project/strata/cache"
)

// Unavailable checks that every call on a store whose server cannot be reached (killed,
// paused) returns within limit with an error wrapping cache.ErrUnavailable.
func Unavailable(t *testing.T, s cache.Store, limit time.Duration) {
	t.Helper()
	ctx := context.Background()
	calls := map[string]func() error{
		"Get": func() error { _, _, err := s.Get(ctx, "k"); return err },
		"SetIfNewer": func() error {
			_, err := s.SetIfNewer(ctx, "k", cache.Entry{Value: []byte("v"), Version: 2}, time.Hour)
			return err
		},
		"Invalidate": func() error { return s.Invalidate(ctx, "k", 3, time.Hour) },
		"Delete":     func() error { return s.Delete(ctx, "k") },
		"Lease":      func() error { _, _, err := s.Lease(ctx, "k", time.Second); return err },
	}
	for name, call := range calls {
		start := time.Now()
		err := call()
		if took := time.Since(start); took > limit {
			t.Errorf("%s took %v, want <= %v", name, took, limit)
		}
		if !errors.Is(err, cache.ErrUnavailable) {
			t.Errorf("%s = %v, want cache.ErrUnavailable", name, err)
		}
	}
}

// Recovers polls (up to 15 s) until the store takes a write again.
func Recovers(t *testing.T, s cache.Store) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := s.SetIfNewer(context.Background(), "after", cache.Entry{Value: []byte("v"), Version: 1}, time.Hour)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("store did not recover: %v", err)
		}
		time.Sleep(50 * time.Millisecond) // polling the store, not ordering events
	}
}
