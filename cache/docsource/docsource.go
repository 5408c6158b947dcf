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

// StampCollection holds, for each document written through write-behind with a stamp, the
// newest stamp applied: one small document per written document, a companion
// (docstore.CompanionID) placed on the same shard.
const StampCollection = "strata-write-stamps"

// Apply writes value (or deletes the document when deleted is set) as write-behind's
// flusher does: it reads the current version and writes with PutIfVersion (or
// DeleteIfVersion), retrying when another writer got in between, so that the write lands on
// top of whatever is there. Deleting an absent document is a success at version 0. It
// returns the version written.
//
// With a stamp, the write first takes the document's stamp record (StampCollection) with a
// conditional write, and gives way (version 0, nothing written) to a newer stamp found
// there: of the writes of one document made through several app servers' write-behind, the
// one made last wins, whichever is applied last. A write whose stamp equals the record's is
// the one that took it (applied again after a crash, or after losing a race on the
// document): it goes on. Equal stamps from two app servers (the same nanosecond) are not told
// apart; the one applied last wins.
func (s *Source) Apply(ctx context.Context, key string, value []byte, deleted bool, stamp int64) (int64, error) {
	sid := docstore.CompanionID(s.collection, key, "write-stamp")
	for {
		if stamp != 0 {
			newer, err := s.takeStamp(ctx, sid, stamp)
			if errors.Is(err, docstore.ErrVersionConflict) {
				continue
			}
			if err != nil {
				return 0, err
			}
			if newer {
				return 0, nil
			}
		}
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

// stampRecord is the body of a document's stamp record.
type stampRecord struct {
	Stamp int64 `json:"stamp"`
}

// takeStamp records stamp as the document's newest unless the record holds a newer one
// (newer is then true). A concurrent change of the record is ErrVersionConflict: read again.
func (s *Source) takeStamp(ctx context.Context, sid string, stamp int64) (newer bool, err error) {
	var rec stampRecord
	var ver int64
	d, err := s.store.Get(ctx, StampCollection, sid)
	switch {
	case err == nil:
		if json.Unmarshal(d.Body, &rec) != nil {
			rec = stampRecord{} // unreadable: taken over
		}
		ver = d.Version
	case errors.Is(err, docstore.ErrNotFound):
	default:
		return false, err
	}
	switch {
	case rec.Stamp > stamp:
		return true, nil
	case rec.Stamp == stamp:
		return false, nil
	}
	body, _ := json.Marshal(stampRecord{Stamp: stamp})
	_, err = s.store.PutIfVersion(ctx, StampCollection, sid, body, ver)
	return false, err
}
