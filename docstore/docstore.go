package docstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Doc is one stored document.
type Doc struct {
	// Collection names the set of documents the document belongs to.
	Collection string
	// ID identifies the document within its collection.
	ID string
	// Version is 1 for the first write of an id and grows by one on every write, delete
	// included. It never goes backwards for an id, even across delete and re-create.
	Version int64
	// Body is the document, a JSON object. PostgreSQL stores it as jsonb and returns it
	// normalised (key order and spacing may differ from what was written).
	Body json.RawMessage
	// Updated is the time of the write that made this version, in UTC, with microsecond
	// precision.
	Updated time.Time
}

// Page is one page of a listing.
type Page struct {
	// Docs are the page's documents in increasing id order (bytewise).
	Docs []Doc
	// Next is the cursor of the following page, or "" when the listing is complete.
	Next string
}

// Store is the document store interface that every backend and the sharded store satisfy.
// Implementations are safe for concurrent use.
//
// Versions and tombstones: every write of an id (Put, PutIfVersion, Delete, DeleteIfVersion)
// sets its version to the previous version plus one, so versions of an id never go
// backwards. Delete keeps a tombstone row with the incremented version; Get, GetMany and List
// treat a tombstone as absent, and a later Put continues from the tombstone's version. A cache
// can therefore order any two observations of an id by version alone.
type Store interface {
	// Get returns the live document, or an error wrapping ErrNotFound when the id was never
	// written or is deleted.
	Get(ctx context.Context, collection, id string) (Doc, error)
	// GetMany returns the live documents among ids, keyed by id. Missing and deleted ids are
	// absent from the map; repeated ids are looked up once. At most MaxBatch ids.
	GetMany(ctx context.Context, collection string, ids []string) (map[string]Doc, error)
	// Put creates or replaces a document and returns the stored document with its new
	// version.
	Put(ctx context.Context, collection, id string, body json.RawMessage) (Doc, error)
	// PutIfVersion writes only if the document's current version is version, where 0
	// means the document must not exist (never written, or deleted). Otherwise it returns a
	// *VersionConflictError (errors.Is ErrVersionConflict) holding the current version.
	PutIfVersion(ctx context.Context, collection, id string, body json.RawMessage, version int64) (Doc, error)
	// Delete deletes a live document and returns the version of its tombstone, or an error
	// wrapping ErrNotFound when there is no live document.
	Delete(ctx context.Context, collection, id string) (int64, error)
	// DeleteIfVersion deletes the document only if its current version is version (> 0),
	// returning the tombstone's version, or a *VersionConflictError.
	DeleteIfVersion(ctx context.Context, collection, id string, version int64) (int64, error)
	// List returns up to limit live documents of a collection with ids after the cursor, in
	// increasing id order. cursor "" starts at the beginning; limit <= 0 means DefaultLimit
	// and is capped at MaxLimit. The cursor is the last id returned, so a listing under
	// concurrent writes returns every document that lives throughout it exactly once.
	List(ctx context.Context, collection, cursor string, limit int) (Page, error)
	// Close releases the store's resources.
	Close() error
}

// Key names one document.
type Key struct {
	Collection, ID string
}

// Row is a stored row as resharding copies it: a document or a tombstone.
type Row struct {
	Doc
	// Deleted marks a tombstone; its Body is nil.
	Deleted bool
}

// Backend is a Store holding the rows of one shard. Every row records its virtual partition
// (PartitionOf with the backend's partition count), so that resharding can copy, compare and
// delete one partition at a time with an indexed scan. Backends also serve alone, without
// sharding.
type Backend interface {
	Store
	// Partitions returns the partition count the backend tags rows with.
	Partitions() int
	// ScanPartition returns up to limit rows (tombstones included) of partition part whose
	// key is after the given key, in (collection, id) order. It reads from the primary.
	ScanPartition(ctx context.Context, part int, after Key, limit int) ([]Row, error)
	// ApplyRows stores each row whose version is newer than the stored row's (or whose key
	// is absent), keeping versions, tombstones and times as given. It returns how many rows
	// it changed.
	ApplyRows(ctx context.Context, rows []Row) (int, error)
	// DeletePartition removes every row (tombstones included) of partition part and returns
	// how many it removed.
	DeletePartition(ctx context.Context, part int) (int64, error)
}

// Limits.
const (
	// DefaultLimit is the page size of List when limit <= 0.
	DefaultLimit = 100
	// MaxLimit caps the page size of List.
	MaxLimit = 1000
	// MaxBatch is the largest number of ids GetMany accepts.
	MaxBatch = 1000
	// DefaultMaxBodyBytes is the default body size limit (1 MiB).
	DefaultMaxBodyBytes = 1 << 20
	// MaxIDBytes is the longest id, in bytes.
	MaxIDBytes = 256
	// MaxCollectionBytes is the longest collection name, in bytes.
	MaxCollectionBytes = 63
)

// Sentinel errors. Errors returned by this package and its backends wrap one of them (or a
// context error when the caller's context ends), so callers test them with errors.Is.
var (
	// ErrNotFound reports a document that does not exist or is deleted.
	ErrNotFound = errors.New("docstore: not found")
	// ErrVersionConflict reports a conditional write whose expected version is not the
	// current one. The error is a *VersionConflictError carrying the current version.
	ErrVersionConflict = errors.New("docstore: version conflict")
	// ErrUnavailable reports a shard that cannot serve the call now: connection refused or
	// lost, timeout, database busy. The call may or may not have taken effect.
	ErrUnavailable = errors.New("docstore: unavailable")
	// ErrInvalid reports bad input: collection name, id, body, cursor, limit or batch size.
	ErrInvalid = errors.New("docstore: invalid input")
	// ErrClosed reports a call on a closed store.
	ErrClosed = errors.New("docstore: closed")
)

// VersionConflictError is the error of a conditional write that lost. errors.Is(err,
// ErrVersionConflict) holds for it; errors.As gives the current version.
type VersionConflictError struct {
	Collection, ID string
	// Expected is the version the caller asked for.
	Expected int64
	// Current is the version found, 0 when the document does not exist or is deleted.
	Current int64
}

// Error implements error.
func (e *VersionConflictError) Error() string {
	return fmt.Sprintf("docstore: version conflict on %s/%s: expected %d, current %d",
		e.Collection, e.ID, e.Expected, e.Current)
}

// Unwrap returns ErrVersionConflict.
func (e *VersionConflictError) Unwrap() error { return ErrVersionConflict }

// Conflict returns a *VersionConflictError.
func Conflict(collection, id string, expected, current int64) error {
	return &VersionConflictError{Collection: collection, ID: id, Expected: expected, Current: current}
}

// NotFound returns an error wrapping ErrNotFound that names the document.
func NotFound(collection, id string) error {
	return fmt.Errorf("%w: %s/%s", ErrNotFound, collection, id)
}

// ClampLimit returns the page size List uses for limit: DefaultLimit for limit <= 0, at most
// MaxLimit.
func ClampLimit(limit int) int {
	if limit <= 0 {
		return DefaultLimit
	}
	return min(limit, MaxLimit)
}

// Timestamp returns t in UTC truncated to microseconds, the precision every backend stores.
func Timestamp(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }
