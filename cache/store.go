package cache

import (
	"context"
	"errors"
	"time"
)

// Entry is what a Store returns for a key: a value at a version, or the knowledge that the
// source had no value at that version (a negative entry).
//
// Versions come from the source of truth (docstore versions: +1 on every write, delete
// included, never going backwards for an id), so any two entries for a key are ordered by
// version alone. Version 0 is used only by negative entries for ids that were never written
// (or whose deletion version the source did not report).
//
// Besides entries, a store keeps tombstones, left by Invalidate: a tombstone at version v says
// "the source has moved to version v; anything older is stale". A tombstone is never returned
// by Get (it is a miss) and only refuses stale sets.
type Entry struct {
	// Value is the cached value. Nil for a negative entry. A present, empty value ([]byte{})
	// is a hit, not a miss.
	Value []byte
	// Version is the source's version of the value (or of the deletion that made it absent).
	Version int64
	// Negative marks "absent at Version": a cached not-found, or a tombstone.
	Negative bool
	// Expires is when the entry expires, as Get reports it: the time of the set that wrote
	// it plus its ttl, read from the setter's clock. Zero when the entry does not expire or
	// the store cannot tell. The shared stores ignore it in a set (the ttl argument decides);
	// memstore keeps a non-zero one as given, so that a two-tier store's L1 reports the
	// expiry of the L2 entry it copies. Early refresh (Config.EarlyRefresh) reads it.
	Expires time.Time
	// Cost is how long the value took to load from the source: stored with the entry by a
	// set and returned by Get, so that early refresh knows how far ahead of expiry to
	// reload. Zero when unknown (such an entry is not refreshed early).
	Cost time.Duration
}

// SetResult says what SetIfNewer or SetIfNotOlder did.
type SetResult int

const (
	// Stored: the entry was written.
	Stored SetResult = iota + 1
	// Refused: the store holds something at least as new (see Store); the set would have
	// been stale or redundant, so nothing was written.
	Refused
)

// Store is the contract every cache store satisfies: in-process memory, Redis, Redis Cluster,
// Memcached, two-tier. Implementations are safe for concurrent use and bound every network
// call by a timeout.
//
// The one rule that prevents stale sets, applied atomically by SetIfNewer, SetIfNotOlder and
// Invalidate (a Lua script in Redis, gets/cas in Memcached, a CAS loop in memory):
//   - SetIfNewer(e) writes iff the key holds nothing, or a tombstone of version <= e.Version,
//     or an entry of version < e.Version.
//   - SetIfNotOlder(e) writes iff the key holds nothing, or anything (entry or tombstone) of
//     version <= e.Version. It differs from SetIfNewer only on an entry of the same version,
//     which it rewrites: an early refresh that reloaded an unchanged value extends the
//     entry's life this way. It never writes below a newer entry or tombstone.
//   - Invalidate(v) writes a tombstone at v iff the key holds nothing, or anything of version
//     <= v. A newer entry or tombstone is left alone.
//
// An expired entry, tombstone or lease counts as absent. A ttl <= 0 means no expiry.
// Values are immutable once handed over: the caller does not modify e.Value after passing it
// to SetIfNewer, nor a Value returned by Get, so an in-process store may share the slice.
// Leases live beside entries: taking or releasing a lease does not touch the key's entry.
// Package cachetest is the conformance suite every implementation passes.
type Store interface {
	// Get returns the entry under key; ok is false on a miss. Expired entries are misses.
	Get(ctx context.Context, key string) (e Entry, ok bool, err error)
	// SetIfNewer stores e under key for ttl unless the store holds a newer entry or
	// tombstone (see the rule above).
	SetIfNewer(ctx context.Context, key string, e Entry, ttl time.Duration) (SetResult, error)
	// SetIfNotOlder stores e under key for ttl unless the store holds a newer entry or
	// tombstone: like SetIfNewer, but it also replaces an entry of the same version (with
	// e's ttl and Cost). Early refresh uses it; fills and writes use SetIfNewer.
	SetIfNotOlder(ctx context.Context, key string, e Entry, ttl time.Duration) (SetResult, error)
	// Invalidate replaces whatever is under key with a tombstone at version for ttl, unless
	// the store already holds something newer. After it returns, no SetIfNewer with a version
	// < version succeeds while the tombstone lives: keep ttl longer than the longest load, so
	// that a slow reader's stale set is always refused.
	Invalidate(ctx context.Context, key string, version int64, ttl time.Duration) error
	// Delete removes key whatever its version (for tests and administration; strategies use
	// Invalidate).
	Delete(ctx context.Context, key string) error
	// Lease tries to take the fill lease for key for ttl: the cross-process stampede guard.
	// Exactly one caller holds an unexpired lease; the others get ok == false and should wait
	// for the holder's fill (polling Get) or read the source themselves after a bound.
	Lease(ctx context.Context, key string, ttl time.Duration) (l Lease, ok bool, err error)
	// Close releases the store's resources.
	Close() error
}

// Pinger is implemented by stores that can check in one call that every part of them
// answers: each master of a Redis Cluster, where a read of one key reaches one master only.
// The cache's breaker probes use Ping when the store has it, ProbeKey otherwise.
type Pinger interface {
	Ping(ctx context.Context) error
}

// InProcess is implemented by stores that live in the process's own memory (memstore): a
// call cannot time out or find the store down, so the cache reads them without its breaker,
// sparing every hit the breaker's bookkeeping (an atomic add that, on a hit costing tens of
// nanoseconds, is a large share of it). Writes and invalidations still go through the
// breaker, which such a store never trips.
type InProcess interface {
	InProcess()
}

// Peeker is implemented by in-process stores (memstore) that can answer a hit with its
// value alone. Peek returns the value of key's live entry and whether it is a negative
// entry; ok is false on a miss and on a tombstone, and the cache then reads the key through
// Get, which reports anything else (a closed store). A cache over an InProcess
// Peeker without early refresh (which needs the entry's expiry and cost) serves its hits
// through Peek: the few fields come back in registers, where a whole Entry would be copied
// through the calls.
type Peeker interface {
	Peek(key string) (value []byte, negative, ok bool)
}

// Lease is a held fill lease.
type Lease interface {
	// Release gives the lease up early (after the fill). Releasing an expired or stolen lease
	// is a no-op: only the holder's token can release it.
	Release(ctx context.Context) error
}

// Errors callers act on.
var (
	// ErrUnavailable reports a store that cannot answer now (down, timed out, breaker open).
	// Strategies then read the source directly and still complete writes.
	ErrUnavailable = errors.New("cache: store unavailable")
	// ErrConfig reports a strategy or store built with options that cannot keep their
	// promise (write-behind without a durable queue, for example).
	ErrConfig = errors.New("cache: invalid configuration")
)
