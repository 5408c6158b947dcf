// Package docsource adapts a docstore collection to the cache's source of truth
// (cache.Source) and to write-behind's target (writebehind.Target). Keys are document ids;
// values are document bodies (JSON objects); versions are docstore versions, which grow by
// one on every write, delete included, so the cache can order any two observations.
//
// docstore.Get does not report the version of a deleted document, so a not-found loads at
// version 0: a negative entry is then refused while the deletion's tombstone lives, and
// cached once it has expired.
package docsource

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/strata-project/strata/cache"
	"github.com/strata-project/strata/docstore"
)

// Source is one collection of a docstore as a cache.Source. It is safe for concurrent use.
type Source struct {
	store      docstore.Store
	collection string
}

var _ cache.Source = (*Source)(nil)

// New returns the collection of store as a source.
func New(store docstore.Store, collection string) *Source {
	return &Source{store: store, collection: collection}
}

func mapErr(err error) error {
	if errors.Is(err, docstore.ErrNotFound) {
		return fmt.Errorf("%w: %w", cache.ErrNotFound, err)
	}
	return err
}

// Load returns the document's body and version.
func (s *Source) Load(ctx context.Context, key string) ([]byte, int64, error) {
	d, err := s.store.Get(ctx, s.collection, key)
	if err != nil {
		return nil, 0, mapErr(err)
	}
	return d.Body, d.Version, nil
}

// Write puts the document and returns its new version.
func (s *Source) Write(ctx context.Context, key string, value []byte) (int64, error) {
	d, err := s.store.Put(ctx, s.collection, key, json.RawMessage(value))
	if err != nil {
		return 0, err
	}
	return d.Version, nil
}

// Delete deletes the document and returns its tombstone's version.
func (s *Source) Delete(ctx context.Context, key string) (int64, error) {
	v, err := s.store.Delete(ctx, s.collection, key)
	return v, mapErr(err)
}

// Apply writes value (or deletes the document when deleted is set) as write-behind's
// flusher does: it reads the current version and writes with PutIfVersion (or
// DeleteIfVersion), retrying when another writer got in between, so that the write lands on
// top of whatever is there. Deleting an absent document is a success at version 0. It
// returns the version written.
func (s *Source) Apply(ctx context.Context, key string, value []byte, deleted bool) (int64, error) {
	for {
		var cur int64
		d, err := s.store.Get(ctx, s.collection, key)
		switch {
		case err == nil:
			cur = d.Version
		case errors.Is(err, docstore.ErrNotFound):
			if deleted {
				return 0, nil
			}
		default:
			return 0, err
		}
		var v int64
		if deleted {
			v, err = s.store.DeleteIfVersion(ctx, s.collection, key, cur)
		} else {
			d, err = s.store.PutIfVersion(ctx, s.collection, key, json.RawMessage(value), cur)
			v = d.Version
		}
		if errors.Is(err, docstore.ErrVersionConflict) {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			continue
		}
		return v, err
	}
}
