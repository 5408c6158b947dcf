package server

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/strata-project/strata/breaker"
	"github.com/strata-project/strata/docstore"
)

// CacheStatus says whether a read was answered by a cache.
type CacheStatus string

// The values of the X-Cache response header.
const (
	// CacheBypass: no cache was consulted (strategy none, or the read needed the source).
	CacheBypass CacheStatus = "bypass"
	// CacheHit: the cache answered.
	CacheHit CacheStatus = "hit"
	// CacheMiss: the cache was consulted, missed, and the source answered.
	CacheMiss CacheStatus = "miss"
	// CacheStale: the cache answered with an entry kept past its freshness because the
	// source could not be reached (eventual consistency only).
	CacheStale CacheStatus = "stale"
)

// Source says where the data of a read came from and how fresh it is. The server turns it
// into the X-Cache, Age and X-Served-By response headers.
type Source struct {
	// Cache is the cache's part in the read. "" means CacheBypass.
	Cache CacheStatus
	// Age is how long ago the data was known to be current at the source (RFC 9111 Age):
	// the time a cached entry has been held, or a replica's replay lag. 0 writes no Age.
	Age time.Duration
	// Replica is true when a replica served the read (it may lag the primary by Age).
	Replica bool
}

// Access is the document access path of one collection: how its reads and writes reach the
// data, through a cache strategy or straight to the store. It is the seam between the HTTP
// layer (conditional requests, idempotency, auth, limits) and the caching strategy chosen per
// collection. StoreAccess is the path without a cache (strategy none).
//
// Errors are those of package docstore (ErrNotFound, ErrVersionConflict, ErrInvalid,
// ErrUnavailable), a context error, or breaker.ErrOpen / breaker.ErrTooManyProbes.
// Implementations are safe for concurrent use.
type Access interface {
	// Get returns the live document.
	Get(ctx context.Context, collection, id string) (docstore.Doc, Source, error)
	// GetMany returns the live documents among ids, keyed by id.
	GetMany(ctx context.Context, collection string, ids []string) (map[string]docstore.Doc, Source, error)
	// List returns one page of a listing.
	List(ctx context.Context, collection, cursor string, limit int) (docstore.Page, Source, error)
	// Put writes body. ifVersion < 0 writes unconditionally; ifVersion >= 0 writes only if
	// the current version is ifVersion (0: the document must not exist).
	Put(ctx context.Context, collection, id string, body json.RawMessage, ifVersion int64) (docstore.Doc, error)
	// Delete deletes the live document and returns its tombstone's version. ifVersion < 0
	// deletes unconditionally; ifVersion > 0 only if it is the current version.
	Delete(ctx context.Context, collection, id string, ifVersion int64) (int64, error)
}

// Flusher is implemented by access paths that hold acknowledged writes not yet in the store
// (write-behind). Shutdown calls Flush after the last request finished.
type Flusher interface {
	Flush(ctx context.Context) error
}

// StoreAccess is the access path of strategy none: every call goes to the store, and reads
// say CacheBypass.
type StoreAccess struct {
	// Store is the document store. Required.
	Store docstore.Store
}

var _ Access = StoreAccess{}

// Get implements Access.
func (a StoreAccess) Get(ctx context.Context, c, id string) (docstore.Doc, Source, error) {
	d, err := a.Store.Get(ctx, c, id)
	return d, Source{Cache: CacheBypass}, err
}

// GetMany implements Access.
func (a StoreAccess) GetMany(ctx context.Context, c string, ids []string) (map[string]docstore.Doc, Source, error) {
	m, err := a.Store.GetMany(ctx, c, ids)
	return m, Source{Cache: CacheBypass}, err
}

// List implements Access.
func (a StoreAccess) List(ctx context.Context, c, cursor string, limit int) (docstore.Page, Source, error) {
	p, err := a.Store.List(ctx, c, cursor, limit)
	return p, Source{Cache: CacheBypass}, err
}

// Put implements Access.
func (a StoreAccess) Put(ctx context.Context, c, id string, body json.RawMessage, ifVersion int64) (docstore.Doc, error) {
	if ifVersion < 0 {
		return a.Store.Put(ctx, c, id, body)
	}
	return a.Store.PutIfVersion(ctx, c, id, body, ifVersion)
}

// Delete implements Access.
func (a StoreAccess) Delete(ctx context.Context, c, id string, ifVersion int64) (int64, error) {
	if ifVersion < 0 {
		return a.Store.Delete(ctx, c, id)
	}
	return a.Store.DeleteIfVersion(ctx, c, id, ifVersion)
}

// BreakerStore is a docstore.Store whose every call passes through a circuit breaker. Only
// failures of the dependency count against it: not-found, version conflicts, invalid input
// and callers that gave up are successes or ignored. A refused call fails with
// breaker.ErrOpen or breaker.ErrTooManyProbes, which the server answers with 503 and
// Retry-After.
type BreakerStore struct {
	// Store is the guarded store. Required.
	Store docstore.Store
	// Breaker guards it. Required; build it with ClassifyStoreError as Config.Classify.
	Breaker *breaker.Breaker
}

var _ docstore.Store = BreakerStore{}

// ClassifyStoreError is the breaker.Config.Classify of a breaker guarding a docstore.Store:
// only docstore.ErrUnavailable and deadline overruns are failures of the store.
func ClassifyStoreError(err error) breaker.Outcome {
	switch {
	case err == nil:
		return breaker.Success
	case errors.Is(err, context.Canceled):
		return breaker.Ignored
	case errors.Is(err, docstore.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return breaker.Failure
	default:
		return breaker.Success
	}
}

// Get implements docstore.Store.
func (s BreakerStore) Get(ctx context.Context, c, id string) (d docstore.Doc, err error) {
	err = s.Breaker.Do(ctx, func(ctx context.Context) error { d, err = s.Store.Get(ctx, c, id); return err })
	return d, err
}

// GetMany implements docstore.Store.
func (s BreakerStore) GetMany(ctx context.Context, c string, ids []string) (m map[string]docstore.Doc, err error) {
	err = s.Breaker.Do(ctx, func(ctx context.Context) error { m, err = s.Store.GetMany(ctx, c, ids); return err })
	return m, err
}

// Put implements docstore.Store.
func (s BreakerStore) Put(ctx context.Context, c, id string, body json.RawMessage) (d docstore.Doc, err error) {
	err = s.Breaker.Do(ctx, func(ctx context.Context) error { d, err = s.Store.Put(ctx, c, id, body); return err })
	return d, err
}

// PutIfVersion implements docstore.Store.
func (s BreakerStore) PutIfVersion(ctx context.Context, c, id string, body json.RawMessage, v int64) (d docstore.Doc, err error) {
	err = s.Breaker.Do(ctx, func(ctx context.Context) error { d, err = s.Store.PutIfVersion(ctx, c, id, body, v); return err })
	return d, err
}

// Delete implements docstore.Store.
func (s BreakerStore) Delete(ctx context.Context, c, id string) (v int64, err error) {
	err = s.Breaker.Do(ctx, func(ctx context.Context) error { v, err = s.Store.Delete(ctx, c, id); return err })
	return v, err
}

// DeleteIfVersion implements docstore.Store.
func (s BreakerStore) DeleteIfVersion(ctx context.Context, c, id string, ver int64) (v int64, err error) {
	err = s.Breaker.Do(ctx, func(ctx context.Context) error { v, err = s.Store.DeleteIfVersion(ctx, c, id, ver); return err })
	return v, err
}

// List implements docstore.Store.
func (s BreakerStore) List(ctx context.Context, c, cursor string, limit int) (p docstore.Page, err error) {
	err = s.Breaker.Do(ctx, func(ctx context.Context) error { p, err = s.Store.List(ctx, c, cursor, limit); return err })
	return p, err
}

// Close implements docstore.Store; it closes the guarded store.
func (s BreakerStore) Close() error { return s.Store.Close() }
