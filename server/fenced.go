package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/strata-project/strata/cache"
	"github.com/strata-project/strata/docstore"
)

// DurableInvalidator is implemented by cache stores whose acknowledged invalidation can
// still be lost when a node fails over (a Redis master replicates asynchronously, so the
// replica it promotes may lack the master's last writes). InvalidateDurable returns nil only
// once the tombstone would survive such a failover; redisstore.Replicated waits for the
// replicas of the key's master. Writes of strong collections use it for the invalidation
// they make before writing the store. An error that does not wrap cache.ErrUnavailable
// (too few replicas acknowledged, the store answered) refuses the write without counting
// against the cache breaker.
type DurableInvalidator interface {
	InvalidateDurable(ctx context.Context, key string, version int64, ttl time.Duration) error
}

// maxFencedAttempts bounds the attempts of an unconditional write of a strong collection
// whose document keeps changing under it (see putFenced).
const maxFencedAttempts = 8

// invalidatesFirst reports whether writes leave their tombstone in the cache before they
// write the store: strong collections over a shared cache.
//
// Why: a write that reaches the store first and the cache second leaves a window in which
// the store holds the new version while the cache can still serve the old one. Normally that
// window is the few milliseconds before the write's invalidation lands, and the write is not
// acknowledged yet. But an app server whose cache calls fail (its breaker open, or the
// cache's master dead and its replica not yet promoted) reads the store, and so returns the
// new version, while the invalidation waits in the writer's pending queue; once the cache
// answers again (the replica promoted, with the entries it had), other app servers serve the
// old version: a read that goes back in time, which porcupine finds. Invalidating first
// closes the window for every shared store: the store never holds a version that the cache
// has not been told about, so the cache cannot serve anything older than what a read of the
// store may return. A write whose first invalidation fails is refused before it touches the
// store (503, Strata-Write-Applied: false), as writes already are while the breaker is open.
//
// The tombstone must be at the version the write will get, which the store assigns: a
// tombstone below it leaves older entries servable, one above it refuses the new version's
// fills until it expires. So the write is made conditional on the version the tombstone was
// computed from (PutIfVersion, DeleteIfVersion): a client's If-Match gives it; an
// unconditional write reads the current version (from the cache entry when there is one,
// else from the primary) and retries on a conflict with the version the conflict reports.
// Absent documents (never written, or deleted) are at version 0 for this purpose, and the
// tombstone at 1 clears the negative entries, which this access path caches at version 0
// (the store does not report a deletion's version); the deletion's own tombstone, at the
// deletion's version, covers every older entry. When the tombstone is in place before the
// write, the invalidation after it is not needed, so the write is acknowledged whatever the
// cache says afterwards (write-through still sets the new value, best effort), unless the
// write took so long that its tombstone might expire before a load that began before it
// ends: then it invalidates again as other writes do (see publish).
func (a *Cached) invalidatesFirst() bool { return a.shared && a.cons == Strong && a.wb == nil }

// putFenced is Put for collections that invalidate first.
func (a *Cached) putFenced(ctx context.Context, c, id string, body json.RawMessage, ifVersion int64) (docstore.Doc, error) {
	key := a.prefix + id
	base := ifVersion
	if base < 0 {
		var err error
		if base, err = a.currentVersion(ctx, c, id); err != nil {
			return docstore.Doc{}, err
		}
	}
	for attempt := 1; ; attempt++ {
		start := time.Now()
		if err := a.invalidateBefore(ctx, key, base+1); err != nil {
			return docstore.Doc{}, err
		}
		d, err := a.store.PutIfVersion(ctx, c, id, body, base)
		var vc *docstore.VersionConflictError
		if ifVersion < 0 && errors.As(err, &vc) {
			if attempt == maxFencedAttempts {
				return docstore.Doc{}, fmt.Errorf("%w: %s/%s changed %d times while being written: %v", docstore.ErrUnavailable, c, id, attempt, err)
			}
			base = vc.Current
			continue
		}
		if err != nil {
			return d, err
		}
		var value []byte
		if a.strategy == StrategyWriteThrough {
			value = encodeCached(d, a.now())
		}
		return d, a.afterFenced(ctx, key, d.Version, value, start)
	}
}

// deleteFenced is Delete for collections that invalidate first.
func (a *Cached) deleteFenced(ctx context.Context, c, id string, ifVersion int64) (int64, error) {
	key := a.prefix + id
	base := ifVersion
	if base < 0 {
		var err error
		if base, err = a.currentVersion(ctx, c, id); err != nil {
			return 0, err
		}
	}
	for attempt := 1; ; attempt++ {
		if base == 0 {
			return 0, fmt.Errorf("%w: %s/%s", docstore.ErrNotFound, c, id)
		}
		start := time.Now()
		if err := a.invalidateBefore(ctx, key, base+1); err != nil {
			return 0, err
		}
		v, err := a.store.DeleteIfVersion(ctx, c, id, base)
		var vc *docstore.VersionConflictError
		if ifVersion < 0 && errors.As(err, &vc) {
			if attempt == maxFencedAttempts {
				return 0, fmt.Errorf("%w: %s/%s changed %d times while being deleted: %v", docstore.ErrUnavailable, c, id, attempt, err)
			}
			base = vc.Current
			continue
		}
		if err != nil {
			return v, err
		}
		return v, a.afterFenced(ctx, key, v, nil, start)
	}
}

// currentVersion is the version an unconditional write of c/id starts from: the cached
// entry's when the cache holds one (a guess, checked by the conditional write), else the
// primary's, 0 for an absent document.
func (a *Cached) currentVersion(ctx context.Context, c, id string) (int64, error) {
	sctx, cancel := context.WithTimeout(ctx, a.storeTO)
	e, ok, err := a.cstore.Get(sctx, a.prefix+id)
	cancel()
	if err == nil && ok && !e.Negative && e.Version > 0 {
		return e.Version, nil
	}
	d, err := a.store.Get(strongContext(ctx), c, id)
	if errors.Is(err, docstore.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return d.Version, nil
}

// invalidateBefore leaves the tombstone of a write that is about to be made at version. An
// error means the write must not be made; it wraps ErrCacheUnavailable and errNotApplied.
func (a *Cached) invalidateBefore(ctx context.Context, key string, version int64) error {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.storeTO)
	defer cancel()
	if err := a.invalidateNow(sctx, key, version); err != nil {
		return fmt.Errorf("%w: %w: %w", ErrCacheUnavailable, errNotApplied, err)
	}
	return nil
}

// invalidateNow leaves a tombstone at version through the breaker (see guard): durably
// (DurableInvalidator) for a strong collection when the store offers it.
func (a *Cached) invalidateNow(ctx context.Context, key string, version int64) error {
	if d, ok := a.cstore.(DurableInvalidator); ok && a.cons == Strong {
		return a.guardAs(func() error { return d.InvalidateDurable(ctx, key, version, a.tombTTL) }, storeDown)
	}
	return a.guard(func() error { return a.cstore.Invalidate(ctx, key, version, a.tombTTL) })
}

// storeDown is what the breaker is told about a durable invalidation's error: only a store
// that did not answer counts.
func storeDown(err error) error {
	if errors.Is(err, cache.ErrUnavailable) {
		return err
	}
	return nil
}

// afterFenced completes a write made at version after its tombstone: write-through stores
// the new value (best effort: the tombstone already keeps older values out); a write that
// took longer than the tombstone's margin over the slowest load (TombstoneTTL -
// LoadTimeout) is published again like any write, since its first tombstone may expire
// before a load that began before the write could set its older value.
func (a *Cached) afterFenced(ctx context.Context, key string, version int64, value []byte, start time.Time) error {
	if time.Since(start) >= a.tombTTL-a.loadTO {
		return a.publish(ctx, key, version, value)
	}
	if value != nil {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.storeTO)
		defer cancel()
		_ = a.guard(func() error {
			_, err := a.cstore.SetIfNewer(sctx, key, cache.Entry{Value: value, Version: version}, a.jittered(a.ttl))
			return err
		})
	}
	return nil
}
