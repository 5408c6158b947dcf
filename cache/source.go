package cache

import (
	"context"
	"errors"
	"fmt"
)

// ErrNotFound reports a key the source of truth does not hold. Source implementations wrap
// it; Cache.Get returns an error wrapping it for a key that is absent (freshly loaded or
// cached as a negative entry).
var ErrNotFound = errors.New("cache: not found")

// Source is the source of truth behind a cache: a database table, a docstore collection.
// Versions follow the rule of Entry: every write and delete of a key returns a version greater
// than any earlier one of that key. Implementations are safe for concurrent use.
type Source interface {
	// Load returns the key's value and version. For an absent key it returns an error
	// wrapping ErrNotFound and, as version, the version of the deletion if the source knows
	// it, else 0.
	Load(ctx context.Context, key string) (value []byte, version int64, err error)
	// Write stores value under key and returns the new version.
	Write(ctx context.Context, key string, value []byte) (version int64, err error)
	// Delete removes key and returns the version of the deletion, or an error wrapping
	// ErrNotFound when the key was absent.
	Delete(ctx context.Context, key string) (version int64, err error)
}

// LoadFunc loads one key for cache-aside reads (Cache.GetFunc); it has the contract of
// Source.Load.
type LoadFunc func(ctx context.Context, key string) (value []byte, version int64, err error)

func notFound(key string) error { return fmt.Errorf("%w: %q", ErrNotFound, key) }
