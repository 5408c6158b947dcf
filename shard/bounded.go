package shard

import (
	"fmt"
	"math"
	"sync"
)

// DefaultLoadFactor is BoundedConfig.Factor when it is 0.
const DefaultLoadFactor = 1.25

// BoundedConfig configures a [Bounded] placement. The zero value is valid.
type BoundedConfig struct {
	// VirtualNodes is the number of ring points per shard, as in
	// RingConfig. 0 means DefaultVirtualNodes (160).
	VirtualNodes int
	// Factor is the load factor c >= 1: no shard takes a key that would
	// bring it above ceil(c * keys / shards), keys counting the new one.
	// 0 means DefaultLoadFactor (1.25). Smaller factors balance better and
	// move keys off their ring owner more often.
	Factor float64
	// Capacity is a hard limit of keys per shard; 0 means no limit. When
	// every shard holds Capacity keys, Locate of a new key returns
	// [ErrFull].
	Capacity int
}

// Bounded is consistent hashing with bounded loads (Mirrokni, Thorup and
// Zadimoghaddam, 2018): a new key goes to the first shard, walking the ring
// clockwise from the key's hash, whose load is below the bound
// min(ceil(Factor * (keys+1) / shards), Capacity). Assigned keys stay where
// they are until released, so Bounded keeps one entry per live key; it suits
// sticky assignments (sessions, tenants, connections) whose count matters
// more than their data.
//
// The bound holds after every assignment: with Factor >= 1 some shard is
// always below ceil(Factor*(keys+1)/shards), so Locate fails only when
// Capacity is set and every shard is at it ([ErrFull]). Release lowers the
// bound without moving live keys, so after releases a shard may sit above
// the current bound until keys leave it.
//
// A Bounded is safe for concurrent use; its methods take one mutex. The zero
// Bounded has no shards.
type Bounded struct {
	ring     *Ring
	factor   float64
	capacity int

	mu    sync.Mutex        // protects load, keys
	load  []int             // load[i] = keys assigned to ring.shards[i]
	keys  map[string]uint16 // key -> index into ring.shards
	total int               // len(keys)
}

// NewBounded returns a bounded-load placement over the given shards. Their
// order does not matter.
func NewBounded(shards []string, cfg BoundedConfig) (*Bounded, error) {
	f := cfg.Factor
	if f == 0 {
		f = DefaultLoadFactor
	}
	if !(f >= 1) || math.IsInf(f, 0) {
		return nil, fmt.Errorf("%w: Factor %v must be finite and >= 1", ErrInvalidConfig, cfg.Factor)
	}
	if cfg.Capacity < 0 {
		return nil, fmt.Errorf("%w: Capacity %d < 0", ErrInvalidConfig, cfg.Capacity)
	}
	r, err := NewRing(shards, RingConfig{VirtualNodes: cfg.VirtualNodes})
	if err != nil {
		return nil, err
	}
	return &Bounded{
		ring:     r,
		factor:   f,
		capacity: cfg.Capacity,
		load:     make([]int, len(r.shards)),
		keys:     make(map[string]uint16),
	}, nil
}

// Shards returns the sorted shard IDs.
func (b *Bounded) Shards() []string { return b.ring.Shards() }

// Locate returns the shard of key, assigning the key first if it has none.
// It returns [ErrFull] when the key is new and no shard can take it.
func (b *Bounded) Locate(key []byte) (string, error) {
	if b == nil || b.ring == nil {
		return "", ErrNoShards
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if i, ok := b.keys[string(key)]; ok {
		return b.ring.shards[i], nil
	}
	return b.assign(string(key), Hash(key))
}

// LocateString is [Bounded.Locate] for a string key.
func (b *Bounded) LocateString(key string) (string, error) {
	if b == nil || b.ring == nil {
		return "", ErrNoShards
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if i, ok := b.keys[key]; ok {
		return b.ring.shards[i], nil
	}
	return b.assign(key, HashString(key))
}

// assign places a new key. b.mu is held.
func (b *Bounded) assign(key string, h uint64) (string, error) {
	bound := b.boundFor(b.total + 1)
	r := b.ring
	for n, i := 0, r.search(h); n < len(r.points); n++ {
		s := r.owner[i]
		if b.load[s] < bound {
			b.load[s]++
			b.total++
			b.keys[key] = s
			return r.shards[s], nil
		}
		if i++; i == len(r.points) {
			i = 0
		}
	}
	return "", fmt.Errorf("%w: %d shards hold %d keys each", ErrFull, len(b.load), bound)
}

// boundFor returns the per-shard limit when keys keys are assigned.
func (b *Bounded) boundFor(keys int) int {
	bound := int(math.Ceil(b.factor * float64(keys) / float64(len(b.load))))
	if b.capacity > 0 && bound > b.capacity {
		bound = b.capacity
	}
	return bound
}

// Bound returns the current per-shard limit: the most keys a shard may hold
// with the keys assigned now.
func (b *Bounded) Bound() int {
	if b.ring == nil {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.boundFor(b.total)
}

// Lookup returns the shard of an assigned key without assigning it.
func (b *Bounded) Lookup(key string) (string, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	i, ok := b.keys[key]
	if !ok {
		return "", false
	}
	return b.ring.shards[i], true
}

// Release forgets key's assignment and reports whether it had one.
func (b *Bounded) Release(key string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	i, ok := b.keys[key]
	if ok {
		delete(b.keys, key)
		b.load[i]--
		b.total--
	}
	return ok
}

// Loads returns the number of keys assigned to each shard.
func (b *Bounded) Loads() map[string]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := make(map[string]int, len(b.load))
	for i, n := range b.load {
		m[b.ring.shards[i]] = n
	}
	return m
}
