package shard

import (
	"errors"
	"fmt"
	"slices"
)

// Locator places keys on shards. Every placement in this package implements
// it: the default placement [Table] (and the immutable [Map] it serves), [Ring],
// [Rendezvous] and [Bounded].
//
// Locate and LocateString return the same shard for the same key bytes.
// An error is returned when the placement has no shard for the key
// ([ErrNoShards] for a zero value, [ErrFull] for a full [Bounded]); the
// stateless placements never fail once constructed.
type Locator interface {
	// Locate returns the ID of the shard that owns key.
	Locate(key []byte) (string, error)
	// LocateString is Locate for a string key, without converting it.
	LocateString(key string) (string, error)
}

// Compile-time guards: every placement is a Locator.
var (
	_ Locator = (*Map)(nil)
	_ Locator = (*Table)(nil)
	_ Locator = (*Ring)(nil)
	_ Locator = (*Rendezvous)(nil)
	_ Locator = (*Bounded)(nil)
)

// Sentinel errors. Errors returned by this package wrap one of them with %w
// and add detail, so callers test them with [errors.Is].
var (
	// ErrNoShards reports an empty shard set, or a zero-value placement.
	ErrNoShards = errors.New("shard: no shards")
	// ErrDuplicateShard reports a shard ID given more than once.
	ErrDuplicateShard = errors.New("shard: duplicate shard ID")
	// ErrInvalidShardID reports a shard ID outside the accepted form
	// (1 to MaxShardIDLen bytes of printable ASCII, no spaces).
	ErrInvalidShardID = errors.New("shard: invalid shard ID")
	// ErrInvalidPartitions reports a partition count or a partition number
	// out of range.
	ErrInvalidPartitions = errors.New("shard: invalid partition count")
	// ErrInvalidConfig reports a configuration field out of range.
	ErrInvalidConfig = errors.New("shard: invalid config")
	// ErrInvalidMap reports a placement map that cannot be decoded or
	// breaks an invariant of [Map].
	ErrInvalidMap = errors.New("shard: invalid placement map")
	// ErrOwnerMismatch reports a [Move] whose From is not the partition's
	// current owner: the plan was made against another version of the map.
	ErrOwnerMismatch = errors.New("shard: partition owner mismatch")
	// ErrStaleVersion reports a map whose version is not newer than the one
	// a [Table] already holds.
	ErrStaleVersion = errors.New("shard: stale map version")
	// ErrFull reports that no shard of a [Bounded] placement can take one
	// more key.
	ErrFull = errors.New("shard: all shards full")
)

// MaxShards is the largest accepted number of shards in one placement.
const MaxShards = 1 << 16

// MaxShardIDLen is the longest accepted shard ID, in bytes.
const MaxShardIDLen = 128

// validID reports whether id is an acceptable shard ID: 1 to MaxShardIDLen
// bytes, each printable ASCII other than space (0x21 to 0x7e).
func validID(id string) bool {
	if len(id) == 0 || len(id) > MaxShardIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return false
		}
	}
	return true
}

// checkShards validates a shard set and returns a sorted copy of it. The
// order in which shards are given never matters to any placement: each is a
// function of the set.
func checkShards(shards []string) ([]string, error) {
	if len(shards) == 0 {
		return nil, ErrNoShards
	}
	if len(shards) > MaxShards {
		return nil, fmt.Errorf("%w: %d shards, at most %d", ErrInvalidConfig, len(shards), MaxShards)
	}
	sorted := slices.Clone(shards)
	slices.Sort(sorted)
	for i, id := range sorted {
		if !validID(id) {
			return nil, fmt.Errorf("%w: %q", ErrInvalidShardID, id)
		}
		if i > 0 && sorted[i-1] == id {
			return nil, fmt.Errorf("%w: %q", ErrDuplicateShard, id)
		}
	}
	return sorted, nil
}
