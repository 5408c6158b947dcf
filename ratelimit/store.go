package ratelimit

import (
	"hash/maphash"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

const (
	// numShards is the number of independently written tables of a store.
	numShards = 256
	// minSlots is the smallest table of a shard.
	minSlots = 16
	// idleGrace is how long a key must have been idle (its state equivalent
	// to that of a key never seen) before it may be evicted. A caller whose
	// instant lags the evicting caller's by less than this sees exactly the
	// decision it would have seen without eviction.
	idleGrace = int64(time.Second)
)

// store maps keys to values of type E for millions of keys.
//
// Reads are lock-free: each of the 256 shards publishes an open-addressing
// hash table through an atomic pointer, and a lookup is one hash
// (hash/maphash, no allocation), an atomic load of the table and a short
// linear probe. Writers (inserts of new keys) take the shard's mutex. A table
// is never modified except by filling an empty slot; when it reaches half
// full, the writer builds a new table holding the entries that are not idle
// and publishes it. Each rebuild costs O(size) after at least size/4
// inserts, so eviction is amortised O(1) per insert, and a shard's memory is
// proportional to its number of live keys.
//
// The layout keeps a hit to the fewest cache lines: a slot holds the key's
// hash beside the pointer to its node, so a probe that passes other keys
// reads only the slot array, and a node holds a short key's bytes inline
// after the value, so the key comparison and the value share one line.
//
// The algorithm owns E: retire must atomically check that the value is idle
// at now and mark it dead, so that a caller still holding a pointer to an
// evicted value notices and looks the key up again (get returns the value
// in the current table). init prepares a new value.
type store[E any] struct {
	seed   maphash.Seed
	init   func(*E)
	retire func(v *E, now int64) bool
	shards [numShards]shard[E]
}

type shard[E any] struct {
	mu    sync.Mutex // serialises writers; protects count
	tab   atomic.Pointer[table[E]]
	count int // entries in tab
	_     [64]byte
}

// inlineKey is the longest key a node keeps in its own memory.
const inlineKey = 32

// node is one key's entry. It is immutable once published, except for val,
// which the algorithm updates atomically. The value comes first so that
// the hot word and the key share the node's first cache line.
type node[E any] struct {
	val E
	key string // points into buf when the key fits
	buf [inlineKey]byte
	// hash is set before the node is published and never changes. find
	// reads it with Add(0), which takes the node's line for writing: the
	// caller is about to update val, and taking the line once costs one
	// transfer from another core instead of two (read, then upgrade).
	hash atomic.Uint64
}

// slot is one position of a table. tag is zero for an empty slot and the
// key's hash with the low bit set otherwise; it is stored after n, so a
// reader that sees a non-zero tag sees the node too.
type slot[E any] struct {
	tag atomic.Uint64
	n   atomic.Pointer[node[E]]
}

type table[E any] struct {
	mask  uint64
	slots []slot[E]
}

func newTable[E any](n int) *table[E] {
	return &table[E]{mask: uint64(n - 1), slots: make([]slot[E], n)}
}

// tagOf is the non-zero tag of hash h. Setting the low bit leaves the probe
// start (h>>8) unchanged.
func tagOf(h uint64) uint64 { return h | 1 }

// find returns key's node or nil. The table is never more than half full,
// so the probe ends at an empty slot. Nodes of other keys are dereferenced
// only when their 63-bit tag collides with the key's.
func (t *table[E]) find(h uint64, key string) *node[E] {
	tag := tagOf(h)
	for i := (h >> 8) & t.mask; ; i = (i + 1) & t.mask {
		s := &t.slots[i]
		switch s.tag.Load() {
		case 0:
			return nil
		case tag:
			if n := s.n.Load(); n.hash.Add(0) == h && n.key == key {
				return n
			}
		}
	}
}

func (t *table[E]) put(n *node[E]) {
	h := n.hash.Load()
	i := (h >> 8) & t.mask
	for t.slots[i].tag.Load() != 0 {
		i = (i + 1) & t.mask
	}
	t.slots[i].n.Store(n)
	t.slots[i].tag.Store(tagOf(h))
}

// newNode returns a node for key with hash h, its key copied: the caller's
// key may share memory with a large buffer.
func newNode[E any](h uint64, key string) *node[E] {
	n := &node[E]{}
	n.hash.Store(h)
	if len(key) <= inlineKey {
		k := n.buf[:len(key)]
		copy(k, key)
		n.key = unsafe.String(unsafe.SliceData(k), len(k))
	} else {
		n.key = strings.Clone(key)
	}
	return n
}

func newStore[E any](init func(*E), retire func(*E, int64) bool) *store[E] {
	s := &store[E]{seed: maphash.MakeSeed(), init: init, retire: retire}
	for i := range s.shards {
		s.shards[i].tab.Store(newTable[E](minSlots))
	}
	return s
}

// get returns key's value, creating it if absent. now drives eviction.
func (s *store[E]) get(key string, now int64) *E {
	h := maphash.String(s.seed, key)
	sh := &s.shards[h%numShards]
	if n := sh.tab.Load().find(h, key); n != nil {
		return &n.val
	}
	return s.insert(sh, h, key, now)
}

func (s *store[E]) insert(sh *shard[E], h uint64, key string, now int64) *E {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	t := sh.tab.Load()
	if n := t.find(h, key); n != nil {
		return &n.val
	}
	if (sh.count+1)*2 > len(t.slots) {
		t = s.rebuild(sh, t, now, 1)
	}
	n := newNode[E](h, key)
	s.init(&n.val)
	t.put(n)
	sh.count++
	return &n.val
}

// rebuild publishes a new table holding the entries of t that are not idle
// at now, with room for at least extra more. Called with sh.mu held.
func (s *store[E]) rebuild(sh *shard[E], t *table[E], now int64, extra int) *table[E] {
	var live []*node[E]
	for i := range t.slots {
		if n := t.slots[i].n.Load(); n != nil && !s.retire(&n.val, now) {
			live = append(live, n)
		}
	}
	size := minSlots
	for size < 4*(len(live)+extra) {
		size *= 2
	}
	nt := newTable[E](size)
	for _, n := range live {
		nt.put(n)
	}
	sh.tab.Store(nt)
	sh.count = len(live)
	return nt
}

// purge evicts every idle entry at now and returns the number left.
func (s *store[E]) purge(now int64) int {
	total := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		s.rebuild(sh, sh.tab.Load(), now, 0)
		total += sh.count
		sh.mu.Unlock()
	}
	return total
}

// len returns the number of entries held, idle or not.
func (s *store[E]) len() int {
	total := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		total += sh.count
		sh.mu.Unlock()
	}
	return total
}
