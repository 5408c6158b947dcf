package ratelimit

import (
	"hash/maphash"
	"math"
	"strings"
	"sync"
	"sync/atomic"
)

// wordMoved is the value of a slot whose key was moved to a newer table or
// evicted: a caller that reads it waits for the shard's rebuild to finish
// and looks the key up again.
const wordMoved = math.MinInt64

// wordStore maps keys to one atomic int64 each, for the limiters whose state
// is one word (GCRA, Concurrency). It is the design of store with the value
// packed into the table: a slot holds the key's hash, its value and its key,
// 32 bytes, two to a cache line, so a hit touches one line of the table and
// the key's bytes, which are only ever read. There are no per-key nodes,
// and a table is between a quarter and three quarters full: 43 to 128
// bytes per key, plus the key's own bytes.
//
// Reads are lock-free: a lookup is one maphash of the key, an atomic load
// of the shard's table and a short linear probe. Inserts of new keys take
// the shard's mutex. When a table would pass three quarters full, the
// inserting caller builds a new one, at most half full, under the mutex: it
// freezes each slot of the old table by swapping its value for wordMoved (a
// compare-and-swap, so no update is lost), copies the values that are not
// idle and publishes the new table. A caller that finds wordMoved looks the
// key up again under the shard's mutex, which waits for the publication.
type wordStore struct {
	seed   maphash.Seed
	empty  int64                   // the value of a key never seen
	idle   func(v, now int64) bool // v's state is that of a key never seen
	shards [numShards]wordShard
}

type wordShard struct {
	mu    sync.Mutex // serialises inserts and rebuilds; protects count
	tab   atomic.Pointer[wordTable]
	count int // keys in tab
	_     [40]byte
}

type wordTable struct {
	mask  uint64
	slots []wordSlot
}

// wordSlot is one position of a table. key is written before tag is
// published (an atomic store) and never changes after; val is the state.
type wordSlot struct {
	tag atomic.Uint64 // 0: empty; else the key's hash with the low bit set
	val atomic.Int64
	key string
}

func newWordTable(n int) *wordTable {
	return &wordTable{mask: uint64(n - 1), slots: make([]wordSlot, n)}
}

func newWordStore(empty int64, idle func(v, now int64) bool) *wordStore {
	s := &wordStore{seed: maphash.MakeSeed(), empty: empty, idle: idle}
	for i := range s.shards {
		s.shards[i].tab.Store(newWordTable(minSlots))
	}
	return s
}

// find returns key's slot in t or nil. The table is never more than three
// quarters full, so the probe ends at an empty slot.
func (t *wordTable) find(h uint64, key string) *wordSlot {
	tag := tagOf(h)
	for i := (h >> 8) & t.mask; ; i = (i + 1) & t.mask {
		s := &t.slots[i]
		switch s.tag.Load() {
		case 0:
			return nil
		case tag:
			if s.key == key {
				return s
			}
		}
	}
}

// put stores key with value v in an empty slot of t, which no reader sees
// yet or whose shard mutex is held.
func (t *wordTable) put(h uint64, key string, v int64) *wordSlot {
	i := (h >> 8) & t.mask
	for t.slots[i].tag.Load() != 0 {
		i = (i + 1) & t.mask
	}
	s := &t.slots[i]
	s.key = key
	s.val.Store(v)
	s.tag.Store(tagOf(h))
	return s
}

// get returns key's value, creating it if absent. now drives eviction. A
// caller that reads wordMoved from it calls getSettled instead.
func (s *wordStore) get(key string, now int64) *atomic.Int64 {
	h := maphash.String(s.seed, key)
	sh := &s.shards[h%numShards]
	if sl := sh.tab.Load().find(h, key); sl != nil {
		return &sl.val
	}
	return s.insert(sh, h, key, now)
}

// lookup returns key's value or nil.
func (s *wordStore) lookup(key string) *atomic.Int64 {
	h := maphash.String(s.seed, key)
	if sl := s.shards[h%numShards].tab.Load().find(h, key); sl != nil {
		return &sl.val
	}
	return nil
}

// getSettled is get under the shard's mutex, which waits for a rebuild in
// progress to publish its table.
func (s *wordStore) getSettled(key string, now int64) *atomic.Int64 {
	h := maphash.String(s.seed, key)
	return s.insert(&s.shards[h%numShards], h, key, now)
}

// lookupSettled is lookup under the shard's mutex.
func (s *wordStore) lookupSettled(key string) *atomic.Int64 {
	h := maphash.String(s.seed, key)
	sh := &s.shards[h%numShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sl := sh.tab.Load().find(h, key); sl != nil {
		return &sl.val
	}
	return nil
}

func (s *wordStore) insert(sh *wordShard, h uint64, key string, now int64) *atomic.Int64 {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	t := sh.tab.Load()
	if sl := t.find(h, key); sl != nil {
		return &sl.val
	}
	if (sh.count+1)*4 > 3*len(t.slots) {
		t = s.rebuild(sh, t, now, 1)
	}
	sh.count++
	// The caller's key may share memory with a large buffer: copy it.
	return &t.put(h, strings.Clone(key), s.empty).val
}

// rebuild freezes t, publishes a new table holding the values of t that are
// not idle at now, with room for at least extra more keys, and returns it.
// Called with sh.mu held.
func (s *wordStore) rebuild(sh *wordShard, t *wordTable, now int64, extra int) *wordTable {
	type kv struct {
		tag uint64 // stands for the hash: same probe start, same tag
		key string
		v   int64
	}
	var live []kv
	for i := range t.slots {
		sl := &t.slots[i]
		tag := sl.tag.Load()
		if tag == 0 {
			continue
		}
		v := sl.val.Load()
		for v != wordMoved && !sl.val.CompareAndSwap(v, wordMoved) {
			v = sl.val.Load()
		}
		if v != wordMoved && !s.idle(v, now) {
			live = append(live, kv{tag, sl.key, v})
		}
	}
	// At most half full: at least (live+extra)/2 inserts before the next
	// rebuild, which amortises its cost.
	size := minSlots
	for size < 2*(len(live)+extra) {
		size *= 2
	}
	nt := newWordTable(size)
	for _, e := range live {
		nt.put(e.tag, e.key, e.v)
	}
	sh.tab.Store(nt)
	sh.count = len(live)
	return nt
}

// purge evicts every idle key at now and returns the number left.
func (s *wordStore) purge(now int64) int {
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

// len returns the number of keys held, idle or not.
func (s *wordStore) len() int {
	total := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		total += sh.count
		sh.mu.Unlock()
	}
	return total
}
