package shard

import (
	"fmt"
	"sync"
	"sync/atomic"
)

// Table serves a [Map] that changes one partition at a time, for resharding
// while keys are being located. Readers load the current map through an
// atomic pointer and never wait; a writer copies the map, changes the copy
// and publishes it (copy on write). A reader therefore always sees one whole
// version, and versions only grow.
//
// A Table is safe for concurrent use. The zero Table has no map (Locate
// returns [ErrNoShards]) until [Table.Update] gives it one.
type Table struct {
	mu  sync.Mutex          // serialises writers; readers do not take it
	cur atomic.Pointer[Map] // the published map; nil before the first Update
}

// NewTable returns a Table serving m.
func NewTable(m *Map) (*Table, error) {
	t := new(Table)
	if err := t.Update(m); err != nil {
		return nil, err
	}
	return t, nil
}

// Map returns the current map. It is immutable: it stays valid, unchanged,
// after later moves. It is nil for a zero Table.
func (t *Table) Map() *Map { return t.cur.Load() }

// Locate returns the shard that owns key's partition in the current map.
func (t *Table) Locate(key []byte) (string, error) { return t.cur.Load().Locate(key) }

// LocateString is [Table.Locate] for a string key.
func (t *Table) LocateString(key string) (string, error) { return t.cur.Load().LocateString(key) }

// Move moves one partition (see [Map.With]) and publishes the new map, which
// it returns. Moves from concurrent writers are applied one after the other;
// a move planned against an older map fails with [ErrOwnerMismatch] if the
// partition has changed owner since.
func (t *Table) Move(mv Move) (*Map, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	cur := t.cur.Load()
	if cur == nil {
		return nil, ErrNoShards
	}
	next, err := cur.With(mv)
	if err != nil {
		return nil, err
	}
	t.cur.Store(next)
	return next, nil
}

// Update publishes m, typically a map loaded from storage after another
// process changed it. m must be newer than the current map
// ([ErrStaleVersion] otherwise), so an old copy never rolls a Table back.
func (t *Table) Update(m *Map) error {
	if m == nil || len(m.owners) == 0 {
		return ErrNoShards
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if cur := t.cur.Load(); cur != nil && m.version <= cur.version {
		return fmt.Errorf("%w: version %d, table has %d", ErrStaleVersion, m.version, cur.version)
	}
	t.cur.Store(m)
	return nil
}
