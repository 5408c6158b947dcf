package twotier

import (
	"context"
	"fmt"
	"hash/maphash"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/strata-project/strata/cache"
	"github.com/strata-project/strata/cache/memstore"
)

// Consistency selects how reads use the in-process L1.
type Consistency int

const (
	// Eventual reads serve L1 hits; another node's write is seen once its invalidation
	// arrives over the Bus, and never later than L1TTL after the entry entered L1.
	Eventual Consistency = iota
	// Strong reads always ask L2 (staleness bound 0); writes still invalidate every L1.
	Strong
)

// Bus carries key invalidations between the nodes that share an L2.
type Bus interface {
	// Publish tells every subscribed node (this one included) that key changed. It returns
	// once the bus accepted the message; delivery is asynchronous.
	Publish(ctx context.Context, key string) error
	// Subscribe registers the node's handlers until the returned function is called.
	// onKey is called for each published key. onState(false) is called when messages may
	// have been lost (the subscription broke); onState(true) when the subscription is
	// (again) in place. Until the first onState(true) the node assumes it is down.
	Subscribe(onKey func(key string), onState func(up bool)) (unsubscribe func())
}

// Config configures a Store.
type Config struct {
	// L2 is the shared store (redisstore, memcachestore, ...). Required. Not closed by Close.
	L2 cache.Store
	// L1 is the in-process store. Default: a memstore with its default capacity, owned and
	// closed by the Store.
	L1 cache.Store
	// Bus carries invalidations between nodes. Required for Eventual consistency; with
	// Strong consistency and no Bus, L1 is never used.
	Bus Bus
	// L1TTL is how long an entry may stay in L1: the bound on staleness when invalidations
	// are lost. Default 1s.
	L1TTL time.Duration
	// Consistency of reads. Default Eventual. A read can ask for Strong with StrongRead.
	Consistency Consistency
}

// Store is a two-tier cache.Store: an in-process L1 in front of a shared L2, with writes
// invalidating every node's L1 over a Bus. It is safe for concurrent use.
type Store struct {
	l1, l2      cache.Store
	ownL1       bool
	bus         Bus
	ttl         time.Duration
	strong      bool
	unsubscribe func()

	up      atomic.Bool   // subscription in place: L1 may serve
	epoch   atomic.Uint64 // bumped when messages may have been lost: older L1 keys are dead
	seed    maphash.Seed
	stripes [256]atomic.Uint64 // invalidations seen per key stripe, to refuse racing fills

	l1Hits, l2Reads, invalidations atomic.Int64

	mu     sync.Mutex // protects closed
	closed bool
}

var _ cache.Store = (*Store)(nil)

// New returns a Store. It fails with cache.ErrConfig without an L2, or without a Bus for
// Eventual consistency (an L1 nobody invalidates would be stale without bound).
func New(cfg Config) (*Store, error) {
	if cfg.L2 == nil {
		return nil, fmt.Errorf("twotier: no L2: %w", cache.ErrConfig)
	}
	if cfg.Bus == nil && cfg.Consistency != Strong {
		return nil, fmt.Errorf("twotier: eventual consistency needs a Bus: %w", cache.ErrConfig)
	}
	s := &Store{l1: cfg.L1, l2: cfg.L2, bus: cfg.Bus, ttl: cfg.L1TTL, strong: cfg.Consistency == Strong,
		seed: maphash.MakeSeed()}
	if s.ttl <= 0 {
		s.ttl = time.Second
	}
	if s.l1 == nil {
		l1, err := memstore.New(memstore.Config{})
		if err != nil {
			return nil, err
		}
		s.l1, s.ownL1 = l1, true
	}
	if s.bus != nil {
		s.unsubscribe = s.bus.Subscribe(s.dropKey, s.setState)
	}
	return s, nil
}

type strongKey struct{}

// StrongRead returns a context whose Gets skip L1 (staleness bound 0), whatever the
// Store's Consistency.
func StrongRead(ctx context.Context) context.Context {
	return context.WithValue(ctx, strongKey{}, true)
}

func (s *Store) stripe(key string) *atomic.Uint64 {
	return &s.stripes[maphash.String(s.seed, key)%uint64(len(s.stripes))]
}

func (s *Store) l1Key(epoch uint64, key string) string {
	return strconv.FormatUint(epoch, 36) + ":" + key
}

// dropKey invalidates key in L1: first the stripe (so racing fills undo themselves), then
// the entry.
func (s *Store) dropKey(key string) {
	s.invalidations.Add(1)
	s.stripe(key).Add(1)
	_ = s.l1.Delete(context.Background(), s.l1Key(s.epoch.Load(), key))
}

// setState follows the bus: any gap in the subscription retires every L1 entry.
func (s *Store) setState(up bool) {
	if !up {
		s.up.Store(false)
		s.epoch.Add(1)
		return
	}
	s.epoch.Add(1)
	s.up.Store(true)
}

// Stats are the Store's counters since New.
type Stats struct {
	L1Hits        int64 // Gets answered by L1
	L2Reads       int64 // Gets that asked L2 after an L1 miss (strong reads not counted)
	Invalidations int64 // keys dropped from L1: own writes and messages from the bus
}

// Stats returns the counters.
func (s *Store) Stats() Stats {
	return Stats{L1Hits: s.l1Hits.Load(), L2Reads: s.l2Reads.Load(), Invalidations: s.invalidations.Load()}
}

// Ready reports whether L1 serves reads: the bus subscription is in place. Until then, and
// whenever it breaks, every Get asks L2.
func (s *Store) Ready() bool { return s.up.Load() && !s.strong }

// Get returns the entry under key, from L1 when allowed and present, else from L2 (and
// fills L1 with it unless an invalidation of the key raced the read). An L1 hit reports the
// L2 entry's Expires when L1 is a memstore (which keeps the expiry it is given).
func (s *Store) Get(ctx context.Context, key string) (cache.Entry, bool, error) {
	if s.strong || !s.up.Load() || ctx.Value(strongKey{}) != nil {
		return s.l2.Get(ctx, key)
	}
	epoch := s.epoch.Load()
	k1 := s.l1Key(epoch, key)
	if e, ok, err := s.l1.Get(ctx, k1); err == nil && ok {
		s.l1Hits.Add(1)
		return e, true, nil
	}
	s.l2Reads.Add(1)
	st := s.stripe(key)
	seen := st.Load()
	e, ok, err := s.l2.Get(ctx, key)
	if err != nil || !ok {
		return e, ok, err
	}
	if st.Load() == seen && s.epoch.Load() == epoch && s.up.Load() {
		_, _ = s.l1.SetIfNewer(ctx, k1, e, s.ttl)
		// An invalidation that landed between the check and the fill did not see our
		// entry: take it out again.
		if st.Load() != seen || s.epoch.Load() != epoch {
			_ = s.l1.Delete(ctx, k1)
		}
	}
	return e, true, nil
}

// invalidated drops key from this node's L1 and tells the other nodes.
func (s *Store) invalidated(ctx context.Context, key string) error {
	s.dropKey(key)
	if s.bus == nil {
		return nil
	}
	if err := s.bus.Publish(ctx, key); err != nil {
		return fmt.Errorf("twotier: L2 written, invalidation not published (other nodes may serve the old value for up to L1TTL): %w: %w", cache.ErrUnavailable, err)
	}
	return nil
}

// SetIfNewer writes e to L2 under the ordering rule; when stored, every L1 drops key.
func (s *Store) SetIfNewer(ctx context.Context, key string, e cache.Entry, ttl time.Duration) (cache.SetResult, error) {
	res, err := s.l2.SetIfNewer(ctx, key, e, ttl)
	if err != nil || res != cache.Stored {
		return res, err
	}
	return res, s.invalidated(ctx, key)
}

// SetIfNotOlder writes e to L2 unless L2 holds something newer (an entry of the same
// version is replaced: an early refresh); when stored, every L1 drops key, so that the
// nodes read the new expiry.
func (s *Store) SetIfNotOlder(ctx context.Context, key string, e cache.Entry, ttl time.Duration) (cache.SetResult, error) {
	res, err := s.l2.SetIfNotOlder(ctx, key, e, ttl)
	if err != nil || res != cache.Stored {
		return res, err
	}
	return res, s.invalidated(ctx, key)
}

// Invalidate leaves a tombstone in L2 and drops key from every L1.
func (s *Store) Invalidate(ctx context.Context, key string, version int64, ttl time.Duration) error {
	if err := s.l2.Invalidate(ctx, key, version, ttl); err != nil {
		return err
	}
	return s.invalidated(ctx, key)
}

// Delete removes key from L2 and every L1.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := s.l2.Delete(ctx, key); err != nil {
		return err
	}
	return s.invalidated(ctx, key)
}

// Lease takes the fill lease in L2, shared by all nodes.
func (s *Store) Lease(ctx context.Context, key string, ttl time.Duration) (cache.Lease, bool, error) {
	return s.l2.Lease(ctx, key, ttl)
}

// Close unsubscribes from the bus and closes an L1 the Store made. It does not close L2 or
// the Bus. Close is idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.unsubscribe != nil {
		s.unsubscribe()
	}
	if s.ownL1 {
		return s.l1.Close()
	}
	return nil
}
