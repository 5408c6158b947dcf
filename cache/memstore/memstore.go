package memstore

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/maypok86/otter/v2"

	"github.com/strata-project/strata/cache"
)

// DefaultMaxBytes is the capacity of a store whose Config.MaxBytes is zero: 64 MiB.
const DefaultMaxBytes = 64 << 20

// entryOverhead approximates the bytes an entry costs beyond its key and value: the item,
// otter's node and the hash table slot.
const entryOverhead = 96

// noExpiry stands for "does not expire" (ttl <= 0): about 146 years.
const noExpiry = time.Duration(1 << 62)

// ErrClosed reports a call on a closed store.
var ErrClosed = errors.New("memstore: closed")

// Config configures a Store. The zero value is valid.
type Config struct {
	// MaxBytes is the capacity: keys plus values plus a fixed overhead per entry. When full,
	// otter's W-TinyLFU policy evicts the entries least likely to be used again. Default
	// DefaultMaxBytes (64 MiB).
	MaxBytes int64
	// ClockResolution is the precision of expiry: the store reads the time once per
	// ClockResolution (otter's coarse clock) instead of on every Get, which makes hits
	// cheaper; an entry may then live up to ClockResolution past its TTL. Negative: read the
	// clock on every call. Default 1ms.
	ClockResolution time.Duration
	// OnEvict, when not nil, is called after an entry (or tombstone) was evicted for lack of
	// room, on a goroutine of otter's. Expiry is not eviction. Default nil.
	OnEvict func(key string)
}

// kinds of item.
const (
	kindValue uint8 = iota
	kindNegative
	kindTombstone
)

// slot is what otter holds for a key: the value inline, so that a hit on a value reads
// nothing beyond otter's node, and the rest of the entry behind a pointer. Slots and their
// items are immutable once stored.
type slot struct {
	value []byte // nil exactly for negative entries and tombstones
	it    *item
}

// item is the part of an entry that a hit on a value does not need.
type item struct {
	version int64
	ttl     time.Duration
	expires int64 // unix nanoseconds reported by Get; 0: none
	cost    time.Duration
	kind    uint8
}

// lease is a held fill lease.
type lease struct {
	token uint64
	ttl   time.Duration
}

// Store is an in-process cache.Store over otter v2. It is safe for concurrent use.
type Store struct {
	items     *otter.Cache[string, slot]
	leases    *otter.Cache[string, lease]
	tokens    atomic.Uint64
	evictions atomic.Uint64
	closed    atomic.Bool
	clock     *otter.CoarseClock // nil with a precise clock
}

var (
	_ cache.Store     = (*Store)(nil)
	_ cache.InProcess = (*Store)(nil)
	_ cache.Peeker    = (*Store)(nil)
)

// InProcess marks the store as living in process memory (see cache.InProcess).
func (s *Store) InProcess() {}

// New returns an empty store.
func New(cfg Config) (*Store, error) {
	if cfg.MaxBytes < 0 {
		return nil, fmt.Errorf("%w: memstore: MaxBytes %d is negative", cache.ErrConfig, cfg.MaxBytes)
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = DefaultMaxBytes
	}
	s := &Store{}
	var clock otter.Clock
	if cfg.ClockResolution >= 0 {
		s.clock = otter.NewCoarseClock(cmpOr(cfg.ClockResolution, time.Millisecond))
		clock = s.clock
	}
	items, err := otter.New(&otter.Options[string, slot]{
		Clock:         clock,
		MaximumWeight: uint64(cfg.MaxBytes),
		Weigher: func(k string, sl slot) uint32 {
			return uint32(min(len(k)+len(sl.value)+entryOverhead, 1<<31))
		},
		ExpiryCalculator: otter.ExpiryWritingFunc(func(e otter.Entry[string, slot]) time.Duration {
			return e.Value.it.ttl
		}),
		OnDeletion: func(e otter.DeletionEvent[string, slot]) {
			if e.Cause.IsEviction() && e.Cause != otter.CauseExpiration {
				s.evictions.Add(1)
				if cfg.OnEvict != nil {
					cfg.OnEvict(e.Key)
				}
			}
		},
	})
	if err != nil {
		s.stopClock()
		return nil, fmt.Errorf("%w: memstore: %v", cache.ErrConfig, err)
	}
	leases, err := otter.New(&otter.Options[string, lease]{
		Clock: clock,
		ExpiryCalculator: otter.ExpiryWritingFunc(func(e otter.Entry[string, lease]) time.Duration {
			return e.Value.ttl
		}),
	})
	if err != nil {
		items.StopAllGoroutines()
		s.stopClock()
		return nil, fmt.Errorf("%w: memstore: %v", cache.ErrConfig, err)
	}
	s.items, s.leases = items, leases
	return s, nil
}

func ttlOf(ttl time.Duration) time.Duration {
	if ttl <= 0 {
		return noExpiry
	}
	return ttl
}

// Get returns the entry under key. It never blocks and never fails before Close.
func (s *Store) Get(_ context.Context, key string) (e cache.Entry, ok bool, err error) {
	// The entry is written field by field into the named result: a composite literal
	// returned as a value is built on the stack and copied, and the copy's wide loads of
	// narrow stores just made stall the hit path.
	sl, found := s.items.GetIfPresent(key)
	if !found || sl.it.kind == kindTombstone {
		if s.closed.Load() {
			return e, false, ErrClosed
		}
		return e, false, nil
	}
	it := sl.it
	e.Value, e.Version, e.Negative, e.Cost = sl.value, it.version, it.kind == kindNegative, it.cost
	if it.expires != 0 {
		e.Expires = time.Unix(0, it.expires)
	}
	return e, true, nil
}

// Peek returns the value of key's live entry and whether it is negative, without the rest
// of the entry; ok is false on a miss or a tombstone (see cache.Peeker). Like Get, it may
// answer from memory after Close; a miss then reads through Get, which reports ErrClosed.
func (s *Store) Peek(key string) (value []byte, negative, ok bool) {
	sl, found := s.items.GetIfPresent(key)
	switch {
	case !found:
		return nil, false, false
	case sl.value != nil: // a value: answered from otter's node alone
		return sl.value, false, true
	case sl.it.kind == kindTombstone:
		return nil, false, false
	}
	return nil, true, true
}

// SetIfNewer stores e unless the store holds a newer entry or tombstone (see cache.Store).
// The store keeps e.Value without copying it. A non-zero e.Expires is kept as the expiry
// Get reports (a two-tier L1 copying an L2 entry); otherwise Get reports now plus ttl.
func (s *Store) SetIfNewer(_ context.Context, key string, e cache.Entry, ttl time.Duration) (cache.SetResult, error) {
	return s.set(key, e, ttl, false)
}

// SetIfNotOlder stores e unless the store holds a newer entry or tombstone; an entry of
// the same version is replaced (see cache.Store).
func (s *Store) SetIfNotOlder(_ context.Context, key string, e cache.Entry, ttl time.Duration) (cache.SetResult, error) {
	return s.set(key, e, ttl, true)
}

func (s *Store) set(key string, e cache.Entry, ttl time.Duration, sameVersion bool) (cache.SetResult, error) {
	if s.closed.Load() {
		return 0, ErrClosed
	}
	kind, value := kindValue, e.Value
	if e.Negative {
		kind, value = kindNegative, nil
	} else if value == nil {
		value = []byte{}
	}
	next := slot{value: value, it: &item{version: e.Version, ttl: ttlOf(ttl), cost: max(e.Cost, 0), kind: kind}}
	switch {
	case !e.Expires.IsZero():
		next.it.expires = e.Expires.UnixNano()
	case ttl > 0:
		next.it.expires = time.Now().Add(ttl).UnixNano()
	}
	res := cache.Refused
	s.items.Compute(key, func(old slot, found bool) (slot, otter.ComputeOp) {
		if found && (old.it.version > e.Version ||
			(old.it.version == e.Version && old.it.kind != kindTombstone && !sameVersion)) {
			return old, otter.CancelOp
		}
		res = cache.Stored
		return next, otter.WriteOp
	})
	return res, nil
}

// Invalidate leaves a tombstone at version unless the store holds something newer.
func (s *Store) Invalidate(_ context.Context, key string, version int64, ttl time.Duration) error {
	if s.closed.Load() {
		return ErrClosed
	}
	tomb := slot{it: &item{version: version, ttl: ttlOf(ttl), kind: kindTombstone}}
	s.items.Compute(key, func(old slot, found bool) (slot, otter.ComputeOp) {
		if found && old.it.version > version {
			return old, otter.CancelOp
		}
		return tomb, otter.WriteOp
	})
	return nil
}

// Delete removes key's entry or tombstone.
func (s *Store) Delete(_ context.Context, key string) error {
	if s.closed.Load() {
		return ErrClosed
	}
	s.items.Invalidate(key)
	return nil
}

// Lease takes the fill lease of key for ttl if nobody holds an unexpired one.
func (s *Store) Lease(_ context.Context, key string, ttl time.Duration) (cache.Lease, bool, error) {
	if s.closed.Load() {
		return nil, false, ErrClosed
	}
	token := s.tokens.Add(1)
	got := false
	s.leases.Compute(key, func(old lease, found bool) (lease, otter.ComputeOp) {
		if found {
			return old, otter.CancelOp
		}
		got = true
		return lease{token: token, ttl: ttlOf(ttl)}, otter.WriteOp
	})
	if !got {
		return nil, false, nil
	}
	return &heldLease{s: s, key: key, token: token}, true, nil
}

// heldLease is a lease taken by Lease.
type heldLease struct {
	s     *Store
	key   string
	token uint64
}

// Release frees the lease if it is still this holder's.
func (l *heldLease) Release(context.Context) error {
	l.s.leases.ComputeIfPresent(l.key, func(old lease) (lease, otter.ComputeOp) {
		if old.token != l.token {
			return old, otter.CancelOp
		}
		return old, otter.InvalidateOp
	})
	return nil
}

// Stats is a snapshot of a store's counters.
type Stats struct {
	// Entries is the number of entries and tombstones held (an estimate).
	Entries int
	// Bytes is the weighted size: keys, values and per-entry overhead.
	Bytes uint64
	// Evictions counts entries removed for lack of room since New.
	Evictions uint64
}

// Stats returns the store's counters.
func (s *Store) Stats() Stats {
	return Stats{Entries: s.items.EstimatedSize(), Bytes: s.items.WeightedSize(), Evictions: s.evictions.Load()}
}

// Clear removes every entry, tombstone and lease, as a restart of the cache would.
func (s *Store) Clear() {
	s.items.InvalidateAll()
	s.leases.InvalidateAll()
}

// Close stops the store's background goroutines. Calls after Close fail with ErrClosed
// (a Get may still answer from memory until then). Close is idempotent.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.items.StopAllGoroutines()
	s.leases.StopAllGoroutines()
	s.stopClock()
	return nil
}

func (s *Store) stopClock() {
	if s.clock != nil {
		s.clock.Stop()
	}
}

func cmpOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}
