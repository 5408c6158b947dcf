package server

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	"github.com/strata-project/strata/breaker"
	"github.com/strata-project/strata/cache"
	"github.com/strata-project/strata/cache/writebehind"
	"github.com/strata-project/strata/docstore"
	"github.com/strata-project/strata/replica"
)

// The caching strategies a Cached access path implements (the Collection.Strategy names).
const (
	StrategyNone         = "none"
	StrategyCacheAside   = "cache-aside"
	StrategyReadThrough  = "read-through"
	StrategyWriteThrough = "write-through"
	StrategyWriteBehind  = "write-behind"
)

// Errors of the cached access paths. The server answers ErrCacheUnavailable with 503 and
// Retry-After, ErrConditionalUnsupported with 400.
var (
	// ErrCacheUnavailable reports a write of a strong or session collection that the shared
	// cache tier could not be told about (its breaker is open, or the invalidation failed):
	// the write is refused (or, when the store had already taken it, reported as not known
	// to be complete) rather than let another app server serve the old value from the cache.
	ErrCacheUnavailable = errors.New("server: the shared cache tier cannot take the write's invalidation")
	// errNotApplied marks an ErrCacheUnavailable refusal made before the store was written.
	errNotApplied = errors.New("the write was not applied")
	// ErrConditionalUnsupported reports a conditional write (If-Match, If-None-Match: *, or
	// PATCH, which is a read-merge-conditional-write) on a write-behind collection: the version
	// is assigned only when the flusher applies the write, so the condition cannot be checked
	// atomically when the write is acknowledged.
	ErrConditionalUnsupported = errors.New("server: conditional writes are not supported by write-behind")
)

// HeaderWriteApplied is set to "false" on the 503 of a write refused before it reached the
// store (the shared cache tier was known to be down), so that the client knows the write did
// not happen. Without it, a failed write's outcome is unknown.
const HeaderWriteApplied = "Strata-Write-Applied"

// CachedConfig configures a Cached access path for one collection.
type CachedConfig struct {
	// Collection is the collection served. Required.
	Collection string
	// Store is the document store (the source of truth). Required.
	Store docstore.Store
	// Strategy is StrategyCacheAside, StrategyReadThrough, StrategyWriteThrough or
	// StrategyWriteBehind. Required.
	Strategy string
	// Consistency is the collection's consistency. Default Strong.
	Consistency Consistency
	// Shared says the cache store is shared by several app servers (Redis, Memcached, a cache
	// node). With a shared store, writes of strong and session collections fail closed when
	// the cache cannot take their invalidation. Default false: a per-process store, which is
	// only safe for strong consistency with a single app server.
	Shared bool
	// Cache configures the cache. Store is required; Source is set by NewCached (a reader of
	// Store); Breaker, when nil, is a new breaker with breaker.Config's defaults. Its TTL,
	// NegativeTTL and TombstoneTTL (with the cache package's defaults) also govern the
	// entries and tombstones this access path writes itself. The Cached owns the cache.Cache
	// it builds, not the cache store.
	Cache cache.Config
	// WriteBehind is the write-behind buffer of the collection, keyed by document id, whose
	// Target applies to Store (docsource.New(Store, Collection)). Required for
	// StrategyWriteBehind, refused otherwise. Build it with OnApplied set to the Cached's
	// Applied method (see NewCached's example in cmd/strata). The Cached owns it: Close
	// closes it.
	WriteBehind *writebehind.WriteBehind
	// Now is the clock of cached-at stamps (the Age header). Default time.Now.
	Now func() time.Time
}

// Cached is the access path of a collection with a caching strategy over a cache.Cache.
//
// Keys are collection + "/" + id; values are the document encoded with its version, its
// update time and the time it was cached (see encodeCached). Versions come from the
// docstore, so the cache's stale-set rule (a set older than the latest invalidation is
// refused) holds across app servers.
//
//   - Reads (Get) go through the cache: cache-aside with a per-call loader (Cache.GetFunc),
//     read-through with the cache's Source (Cache.Get). Both load from the store, with the
//     cache's stampede protection and negative caching (Cache.NegativeTTL). A load reads the
//     primary for strong and session collections (so the cache never adds a replica's lag to
//     its own), and follows the request's consistency for eventual ones.
//   - Writes go to the store first (Put or PutIfVersion, Delete or DeleteIfVersion, so
//     If-Match keeps its meaning), then tell the cache: write-through stores the new version
//     (set if newer), the others leave a tombstone at the new version (the deletion's, for
//     deletes). If the cache cannot take it, the invalidation is queued durably by the cache
//     core (Cache.Invalidate) and retried. Strong collections over a shared cache leave the
//     tombstone first and then write the store conditionally (see invalidatesFirst).
//   - Write-behind acknowledges a write once it is in the durable queue; reads of this
//     server see pending writes (read-your-writes in this process); Flush waits for the
//     queue to drain. Conditional writes and PATCH are refused (ErrConditionalUnsupported).
//   - Lists and batchGet read the store directly (X-Cache: bypass): a page or a batch is
//     not a cached unit, and reading the store keeps them as fresh as the consistency says.
//     batchGet of a write-behind collection overlays this server's pending writes.
//
// Under failure (the consistency setting): when the cache tier is unreachable, reads bypass
// it and go to the store, for every consistency. Writes of strong and session collections
// over a shared cache fail closed with ErrCacheUnavailable (503), because their
// invalidation cannot be delivered and another app server could serve the old value from
// the cache afterwards; eventual collections keep taking writes and leave the
// invalidation to the cache core's durable pending queue.
type Cached struct {
	coll     string
	prefix   string
	store    docstore.Store
	strategy string
	cons     Consistency
	shared   bool
	c        *cache.Cache
	cstore   cache.Store
	br       *breaker.Breaker
	wb       *writebehind.WriteBehind
	now      func() time.Time
	ttl      time.Duration
	tombTTL  time.Duration
	loadTO   time.Duration
	jitter   float64
	storeTO  time.Duration
	onLoaded atomic.Uint64 // loads, for tests of the read path
}

var _ Access = (*Cached)(nil)

// NewCached validates cfg and returns the access path, whose cache is running. Errors wrap
// ErrConfig or cache.ErrConfig.
func NewCached(cfg CachedConfig) (*Cached, error) {
	if cfg.Store == nil || cfg.Cache.Store == nil {
		return nil, fmt.Errorf("%w: cached access: Store and Cache.Store are required", ErrConfig)
	}
	if err := docstore.CheckCollection(cfg.Collection); err != nil {
		return nil, fmt.Errorf("%w: cached access: %v", ErrConfig, err)
	}
	cfg.Consistency = cmpOr(cfg.Consistency, Strong)
	switch cfg.Strategy {
	case StrategyCacheAside, StrategyReadThrough, StrategyWriteThrough:
		if cfg.WriteBehind != nil {
			return nil, fmt.Errorf("%w: collection %q: a write-behind buffer with strategy %s", ErrConfig, cfg.Collection, cfg.Strategy)
		}
	case StrategyWriteBehind:
		if cfg.WriteBehind == nil {
			return nil, fmt.Errorf("%w: collection %q: write-behind needs its durable buffer (WriteBehind)", ErrConfig, cfg.Collection)
		}
		if cfg.Consistency != Eventual {
			return nil, fmt.Errorf("%w: collection %q: write-behind cannot honour %s consistency: an acknowledged write is visible only in the app server that holds it until it is applied; use eventual, or write-through", ErrConfig, cfg.Collection, cfg.Consistency)
		}
	default:
		return nil, fmt.Errorf("%w: collection %q: unknown caching strategy %q", ErrConfig, cfg.Collection, cfg.Strategy)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	a := &Cached{
		coll: cfg.Collection, prefix: cfg.Collection + "/", store: cfg.Store, strategy: cfg.Strategy,
		cons: cfg.Consistency, shared: cfg.Shared, cstore: cfg.Cache.Store, wb: cfg.WriteBehind, now: cfg.Now,
	}
	cc := cfg.Cache
	if cc.Breaker == nil {
		br, err := breaker.New(breaker.Config{Name: "cache"})
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrConfig, err)
		}
		cc.Breaker = br
	}
	cc.Source = docSource{a}
	c, err := cache.New(cc)
	if err != nil {
		return nil, err
	}
	a.c, a.br = c, cc.Breaker
	// The cache package's defaults, for the entries and tombstones written here.
	a.ttl = cmpOr(cc.TTL, 5*time.Minute)
	load := cmpOr(cc.LoadTimeout, 5*time.Second)
	a.tombTTL = cmpOr(cc.TombstoneTTL, max(2*load, time.Minute))
	a.loadTO = load
	a.jitter = cmpOr(cc.Jitter, 0.1)
	a.storeTO = cmpOr(cc.StoreTimeout, time.Second)
	return a, nil
}

// Cache returns the underlying cache, for its counters.
func (a *Cached) Cache() *cache.Cache { return a.c }

// Applied is write-behind's OnApplied hook: it invalidates the cache at the version the
// flusher wrote, before the write leaves the pending overlay.
func (a *Cached) Applied(id string, version int64) {
	a.c.Invalidate(context.Background(), a.prefix+id, version)
}

// Pending returns the number of acknowledged writes not yet in the store (0 without
// write-behind), for the strata_writebehind_depth metric.
func (a *Cached) Pending() int {
	if a.wb == nil {
		return 0
	}
	return a.wb.Pending()
}

// Flush waits until every acknowledged write-behind write is in the store, or ctx ends.
func (a *Cached) Flush(ctx context.Context) error {
	if a.wb == nil {
		return nil
	}
	return a.wb.Flush(ctx)
}

// Close stops the write-behind buffer (its unapplied writes stay in the durable queue) and
// the cache. It does not close the stores.
func (a *Cached) Close() error {
	var errs []error
	if a.wb != nil {
		errs = append(errs, a.wb.Close())
	}
	errs = append(errs, a.c.Close())
	return errors.Join(errs...)
}

// loadMark records that a load of the source ran for a request (its read missed).
type loadMark struct{ loaded atomic.Bool }

type loadMarkKey struct{}

// docSource is the read-through Source of a Cached: keys are collection/id.
type docSource struct{ a *Cached }

func (s docSource) Load(ctx context.Context, key string) ([]byte, int64, error) {
	return s.a.load(ctx, key)
}

// Write and Delete are not used: the access path writes the store itself (so that
// conditional writes keep their meaning) and then tells the cache.
func (s docSource) Write(context.Context, string, []byte) (int64, error) {
	return 0, fmt.Errorf("%w: the document access path writes the store itself", cache.ErrConfig)
}

func (s docSource) Delete(context.Context, string) (int64, error) {
	return 0, fmt.Errorf("%w: the document access path writes the store itself", cache.ErrConfig)
}

// load reads one document for the cache. Strong and session collections read the primary.
func (a *Cached) load(ctx context.Context, key string) ([]byte, int64, error) {
	if m, ok := ctx.Value(loadMarkKey{}).(*loadMark); ok {
		m.loaded.Store(true)
	}
	a.onLoaded.Add(1)
	id, ok := strings.CutPrefix(key, a.prefix)
	if !ok {
		return nil, 0, fmt.Errorf("%w: key %q outside collection %q", docstore.ErrInvalid, key, a.coll)
	}
	if a.cons != Eventual {
		ctx = strongContext(ctx)
	}
	d, err := a.store.Get(ctx, a.coll, id)
	if errors.Is(err, docstore.ErrNotFound) {
		// The store does not report a deletion's version: a negative entry at 0 is refused
		// while the deletion's tombstone lives, and taken once it expired.
		return nil, 0, fmt.Errorf("%w: %w", cache.ErrNotFound, err)
	}
	if err != nil {
		return nil, 0, err
	}
	return encodeCached(d, a.now()), d.Version, nil
}

// bypass reports whether a read must skip the cache: a read that asks for the primary
// (PATCH, If-Match: *) of a collection whose cache may be older than the primary.
func (a *Cached) bypass(ctx context.Context) bool {
	if a.cons == Strong {
		return false
	}
	s := replica.SessionFrom(ctx)
	return s != nil && s.Mode() == replica.Strong
}

// Get implements Access.
func (a *Cached) Get(ctx context.Context, c, id string) (docstore.Doc, Source, error) {
	if a.wb != nil {
		if v, deleted, ok := a.wb.Get(id); ok {
			if deleted {
				return docstore.Doc{}, Source{Cache: CacheHit}, fmt.Errorf("%w: %s/%s (pending delete)", docstore.ErrNotFound, c, id)
			}
			return docstore.Doc{Collection: c, ID: id, Body: v}, Source{Cache: CacheHit}, nil
		}
	}
	if a.bypass(ctx) {
		d, err := a.store.Get(ctx, c, id)
		return d, Source{Cache: CacheBypass}, err
	}
	mark := &loadMark{}
	lctx := context.WithValue(ctx, loadMarkKey{}, mark)
	key := a.prefix + id
	var v []byte
	var err error
	if a.strategy == StrategyCacheAside {
		v, err = a.c.GetFunc(lctx, key, a.load)
	} else {
		v, err = a.c.Get(lctx, key)
	}
	src := Source{Cache: CacheHit}
	if mark.loaded.Load() {
		src.Cache = CacheMiss
	}
	if a.br.State() != breaker.Closed {
		src.Cache = CacheBypass // the cache tier is down: the store answered
	}
	if err != nil {
		if errors.Is(err, cache.ErrNotFound) && !errors.Is(err, docstore.ErrNotFound) {
			err = fmt.Errorf("%w: %w", docstore.ErrNotFound, err)
		}
		return docstore.Doc{}, src, err
	}
	d, at, err := decodeCached(c, id, v)
	if err != nil {
		// Not an entry of this access path (a key shared by mistake): read the store.
		d, err := a.store.Get(ctx, c, id)
		return d, Source{Cache: CacheBypass}, err
	}
	if src.Cache == CacheHit {
		src.Age = max(a.now().Sub(at), 0)
	}
	return d, src, nil
}

// GetMany implements Access: it reads the store (X-Cache: bypass), with this server's
// pending write-behind writes on top.
func (a *Cached) GetMany(ctx context.Context, c string, ids []string) (map[string]docstore.Doc, Source, error) {
	m, err := a.store.GetMany(ctx, c, ids)
	if err != nil || a.wb == nil {
		return m, Source{Cache: CacheBypass}, err
	}
	for _, id := range ids {
		if v, deleted, ok := a.wb.Get(id); ok {
			if deleted {
				delete(m, id)
			} else {
				m[id] = docstore.Doc{Collection: c, ID: id, Body: v}
			}
		}
	}
	return m, Source{Cache: CacheBypass}, nil
}

// List implements Access: it reads the store (X-Cache: bypass). Pending write-behind writes
// are not listed until they are applied.
func (a *Cached) List(ctx context.Context, c, cursor string, limit int) (docstore.Page, Source, error) {
	p, err := a.store.List(ctx, c, cursor, limit)
	return p, Source{Cache: CacheBypass}, err
}

// failClosed reports whether writes must not proceed without the cache taking their
// invalidation.
func (a *Cached) failClosed() bool { return a.shared && a.cons != Eventual }

// Put implements Access. Write-behind returns the document with Version 0: its version is
// assigned when the flusher applies it.
func (a *Cached) Put(ctx context.Context, c, id string, body json.RawMessage, ifVersion int64) (docstore.Doc, error) {
	if a.wb != nil {
		if ifVersion >= 0 {
			return docstore.Doc{}, ErrConditionalUnsupported
		}
		if err := a.wb.Write(ctx, id, body); err != nil {
			return docstore.Doc{}, fmt.Errorf("%w: %w", docstore.ErrUnavailable, err)
		}
		return docstore.Doc{Collection: c, ID: id, Body: body}, nil
	}
	if a.failClosed() && a.br.State() == breaker.Open {
		return docstore.Doc{}, fmt.Errorf("%w: %w", ErrCacheUnavailable, errNotApplied)
	}
	if a.invalidatesFirst() {
		return a.putFenced(ctx, c, id, body, ifVersion)
	}
	var d docstore.Doc
	var err error
	if ifVersion < 0 {
		d, err = a.store.Put(ctx, c, id, body)
	} else {
		d, err = a.store.PutIfVersion(ctx, c, id, body, ifVersion)
	}
	if err != nil {
		return d, err
	}
	if a.strategy == StrategyWriteThrough {
		err = a.publish(ctx, a.prefix+id, d.Version, encodeCached(d, a.now()))
	} else {
		err = a.publish(ctx, a.prefix+id, d.Version, nil)
	}
	return d, err
}

// Delete implements Access. Write-behind returns version 0 (assigned when applied).
func (a *Cached) Delete(ctx context.Context, c, id string, ifVersion int64) (int64, error) {
	if a.wb != nil {
		if ifVersion >= 0 {
			return 0, ErrConditionalUnsupported
		}
		if err := a.wb.Delete(ctx, id); err != nil {
			return 0, fmt.Errorf("%w: %w", docstore.ErrUnavailable, err)
		}
		return 0, nil
	}
	if a.failClosed() && a.br.State() == breaker.Open {
		return 0, fmt.Errorf("%w: %w", ErrCacheUnavailable, errNotApplied)
	}
	if a.invalidatesFirst() {
		return a.deleteFenced(ctx, c, id, ifVersion)
	}
	var v int64
	var err error
	if ifVersion < 0 {
		v, err = a.store.Delete(ctx, c, id)
	} else {
		v, err = a.store.DeleteIfVersion(ctx, c, id, ifVersion)
	}
	if err != nil {
		return v, err
	}
	return v, a.publish(ctx, a.prefix+id, v, nil)
}

// publish tells the cache about a write at version: value != nil stores it if newer
// (write-through), else a tombstone is left. If the store cannot take either, the
// invalidation goes to the cache core's durable pending queue; strong and session
// collections over a shared cache then report ErrCacheUnavailable.
func (a *Cached) publish(ctx context.Context, key string, version int64, value []byte) error {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), a.storeTO)
	defer cancel()
	if value != nil {
		if a.guard(func() error {
			_, err := a.cstore.SetIfNewer(sctx, key, cache.Entry{Value: value, Version: version}, a.jittered(a.ttl))
			return err
		}) == nil {
			return nil
		}
	}
	if a.invalidateNow(sctx, key, version) == nil {
		return nil
	}
	a.c.Invalidate(ctx, key, version)
	if a.failClosed() {
		return &UnconfirmedError{Version: version}
	}
	return nil
}

// Republish tells the cache again about the write of c/id at version (a tombstone), for the
// retry of a write whose first answer was an UnconfirmedError: once it succeeds, the write
// can be confirmed. It fails like the write did while the cache tier is unreachable.
func (a *Cached) Republish(ctx context.Context, c, id string, version int64) error {
	if a.wb != nil || !a.failClosed() {
		return nil
	}
	return a.publish(ctx, a.prefix+id, version, nil)
}

// UnconfirmedError reports a write that is in the store at Version but whose invalidation
// the shared cache tier could not take (it is queued and retried). It wraps
// ErrCacheUnavailable. The write must not be applied again: a retry with the same
// Idempotency-Key confirms it through Republish instead.
type UnconfirmedError struct{ Version int64 }

func (e *UnconfirmedError) Error() string {
	return fmt.Sprintf("%v: the write is in the store at version %d; its invalidation is queued", ErrCacheUnavailable, e.Version)
}

func (e *UnconfirmedError) Unwrap() error { return ErrCacheUnavailable }

// guard runs one cache store call of a write's publish through the cache's breaker. When
// the breaker refuses the call (open, or half-open with its probe taken) and the collection
// fails closed, the call is made anyway: the write is already in the store, and an
// invalidation skipped while the cache tier is in fact back would let another app server,
// whose breaker is closed, fill the key with the old value. The breaker only spares calls
// that may be skipped; this one may not.
func (a *Cached) guard(fn func() error) error {
	return a.guardAs(fn, func(err error) error { return err })
}

// guardAs is guard with the breaker told report(err) instead of err.
func (a *Cached) guardAs(fn func() error, report func(error) error) error {
	tok, err := a.br.Allow()
	if err != nil {
		if !a.failClosed() {
			return err
		}
		return fn()
	}
	err = fn()
	tok.Done(report(err))
	return err
}

func (a *Cached) jittered(ttl time.Duration) time.Duration {
	if a.jitter <= 0 {
		return ttl
	}
	return ttl - time.Duration(rand.Float64()*a.jitter*float64(ttl))
}

// cachedHeader is the size of the fixed part of an encoded cached document.
const cachedHeader = 1 + 8 + 8 + 8

// cachedFormat is the first byte of an encoded cached document (a format number).
const cachedFormat = 1

// encodeCached encodes d for the cache: a format byte, the version, the update time and the
// time it is cached (Unix nanoseconds, big-endian), then the body.
func encodeCached(d docstore.Doc, cachedAt time.Time) []byte {
	b := make([]byte, cachedHeader, cachedHeader+len(d.Body))
	b[0] = cachedFormat
	binary.BigEndian.PutUint64(b[1:], uint64(d.Version))
	var upd int64
	if !d.Updated.IsZero() {
		upd = d.Updated.UnixNano()
	}
	binary.BigEndian.PutUint64(b[9:], uint64(upd))
	binary.BigEndian.PutUint64(b[17:], uint64(cachedAt.UnixNano()))
	return append(b, d.Body...)
}

// errBadCached reports a cached value that is not an encoded document.
var errBadCached = errors.New("server: malformed cached document")

// decodeCached decodes a value of encodeCached into the document c/id and the time it was
// cached. A value that is not framed as an encoded JSON object is refused (the body itself
// was checked when it was written; it is not parsed again on every hit).
func decodeCached(c, id string, b []byte) (docstore.Doc, time.Time, error) {
	if len(b) < cachedHeader || b[0] != cachedFormat {
		return docstore.Doc{}, time.Time{}, errBadCached
	}
	v := int64(binary.BigEndian.Uint64(b[1:]))
	upd := int64(binary.BigEndian.Uint64(b[9:]))
	at := int64(binary.BigEndian.Uint64(b[17:]))
	body := b[cachedHeader:]
	if v <= 0 || len(body) < 2 || body[0] != '{' || body[len(body)-1] != '}' {
		return docstore.Doc{}, time.Time{}, errBadCached
	}
	d := docstore.Doc{Collection: c, ID: id, Version: v, Body: json.RawMessage(body)}
	if upd != 0 {
		d.Updated = time.Unix(0, upd).UTC()
	}
	return d, time.Unix(0, at), nil
}
