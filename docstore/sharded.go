package docstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/strata-project/strata/shard"
)

// ShardedConfig configures a Sharded store. Its zero value is valid.
type ShardedConfig struct {
	// OnSwitch is called with every new placement map right after a partition changes
	// owner, while no request can observe the change yet. A deployment persists the map here
	// (shard.Map.MarshalJSON). Default nil: nothing is called.
	OnSwitch func(*shard.Map)
	// OnMove is called after each partition move with its statistics, for progress
	// reporting. Default nil.
	OnMove func(shard.Move, MoveStats)
	// FenceTimeout bounds the final catch-up, verification and switch of one partition,
	// during which requests to that partition wait. When it runs out the move is abandoned
	// (nothing switches) and Reshard returns an error. Default 5s.
	FenceTimeout time.Duration
	// CatchUpPasses is the most copy passes made before fencing a partition; passes stop
	// early when one copies nothing. Default 3.
	CatchUpPasses int
}

// Sharded is a Store over one Backend per shard, placed by a shard.Table: a document lives in
// the partition PartitionOf(collection, id, P) and the table says which shard owns it.
// Point operations go to the owner; GetMany groups ids by owner and asks the owners in
// parallel; List asks every shard in parallel and merges in id order.
//
// It reshards online (see Reshard): partitions move one at a time, and requests keep
// being served during a move. Each partition has a gate, a read-write lock that point
// operations hold shared for their duration and that a move holds exclusively only for
// the final catch-up, verification and switch of that partition. Multi-partition reads
// (GetMany, List) hold a store-wide switch lock shared, which the switch takes exclusively
// for the instant of publishing the new map. Fences are in-process: the Sharded store that
// reshards must be the only one writing to the shards.
//
// A Sharded store is safe for concurrent use.
type Sharded struct {
	cfg      ShardedConfig
	table    *shard.Table
	parts    int
	gates    []sync.RWMutex // one per partition: point operations shared, a move's fence exclusive
	switchMu sync.RWMutex   // GetMany and List shared; publishing a new map exclusive
	backends atomic.Pointer[map[string]Backend]

	reshardMu sync.Mutex // serialises resharding calls; protects pending
	pending   []shard.Move
	closed    atomic.Bool
}

var _ Store = (*Sharded)(nil)

// ErrReshard reports a resharding step that failed; the placement is left consistent (a
// partition switches only after its copy verified) and the call can be repeated.
var ErrReshard = errors.New("docstore: resharding failed")

// NewSharded returns a Sharded store serving map m over backends (shard ID -> backend).
// Every shard of m needs a backend whose partition count is m.Partitions(); backends for
// shards that own nothing yet may be given too, or added later with AddShard. The store
// owns the backends: Close closes them.
func NewSharded(m *shard.Map, backends map[string]Backend, cfg ShardedConfig) (*Sharded, error) {
	if m == nil || len(m.Shards()) == 0 {
		return nil, fmt.Errorf("%w: sharded: empty placement map", ErrInvalid)
	}
	if cfg.FenceTimeout <= 0 {
		cfg.FenceTimeout = 5 * time.Second
	}
	if cfg.CatchUpPasses <= 0 {
		cfg.CatchUpPasses = 3
	}
	for _, id := range m.Shards() {
		if backends[id] == nil {
			return nil, fmt.Errorf("%w: sharded: no backend for shard %q", ErrInvalid, id)
		}
	}
	bs := make(map[string]Backend, len(backends))
	for id, b := range backends {
		if b.Partitions() != m.Partitions() {
			return nil, fmt.Errorf("%w: sharded: backend %q has %d partitions, map has %d",
				ErrInvalid, id, b.Partitions(), m.Partitions())
		}
		bs[id] = b
	}
	t, err := shard.NewTable(m)
	if err != nil {
		return nil, fmt.Errorf("%w: sharded: %w", ErrInvalid, err)
	}
	s := &Sharded{cfg: cfg, table: t, parts: m.Partitions(), gates: make([]sync.RWMutex, m.Partitions())}
	s.backends.Store(&bs)
	return s, nil
}

// Map returns the current placement map.
func (s *Sharded) Map() *shard.Map { return s.table.Map() }

// Close closes every backend.
func (s *Sharded) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	var errs []error
	for _, b := range *s.backends.Load() {
		errs = append(errs, b.Close())
	}
	return errors.Join(errs...)
}

// point runs fn on the owner of (collection, id) with the partition's gate held shared.
func (s *Sharded) point(collection, id string, fn func(Backend) error) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if err := CheckKey(collection, id); err != nil {
		return err
	}
	p := PartitionOf(collection, id, s.parts)
	g := &s.gates[p]
	g.RLock()
	defer g.RUnlock()
	owner, err := s.table.Map().Owner(p)
	if err != nil {
		return fmt.Errorf("%w: sharded: %w", ErrInvalid, err)
	}
	return fn((*s.backends.Load())[owner])
}

// Get implements Store.
func (s *Sharded) Get(ctx context.Context, collection, id string) (d Doc, err error) {
	err = s.point(collection, id, func(b Backend) error { d, err = b.Get(ctx, collection, id); return err })
	return d, err
}

// Put implements Store.
func (s *Sharded) Put(ctx context.Context, collection, id string, body json.RawMessage) (d Doc, err error) {
	err = s.point(collection, id, func(b Backend) error { d, err = b.Put(ctx, collection, id, body); return err })
	return d, err
}

// PutIfVersion implements Store.
func (s *Sharded) PutIfVersion(ctx context.Context, collection, id string, body json.RawMessage, version int64) (d Doc, err error) {
	err = s.point(collection, id, func(b Backend) error {
		d, err = b.PutIfVersion(ctx, collection, id, body, version)
		return err
	})
	return d, err
}

// Delete implements Store.
func (s *Sharded) Delete(ctx context.Context, collection, id string) (v int64, err error) {
	err = s.point(collection, id, func(b Backend) error { v, err = b.Delete(ctx, collection, id); return err })
	return v, err
}

// DeleteIfVersion implements Store.
func (s *Sharded) DeleteIfVersion(ctx context.Context, collection, id string, version int64) (v int64, err error) {
	err = s.point(collection, id, func(b Backend) error {
		v, err = b.DeleteIfVersion(ctx, collection, id, version)
		return err
	})
	return v, err
}

// GetMany implements Store: ids are grouped by owner and the owners asked in parallel.
func (s *Sharded) GetMany(ctx context.Context, collection string, ids []string) (map[string]Doc, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	if err := CheckBatch(collection, ids); err != nil {
		return nil, err
	}
	out := make(map[string]Doc, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	s.switchMu.RLock()
	defer s.switchMu.RUnlock()
	m, bs := s.table.Map(), *s.backends.Load()
	groups := make(map[string][]string)
	for _, id := range ids {
		owner, _ := m.Owner(PartitionOf(collection, id, s.parts))
		groups[owner] = append(groups[owner], id)
	}
	var mu sync.Mutex // protects out
	err := scatter(keys(groups), func(owner string) error {
		docs, err := bs[owner].GetMany(ctx, collection, groups[owner])
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		for id, d := range docs {
			out[id] = d
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func keys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// scatter runs fn for every shard in parallel and joins the errors.
func scatter(shards []string, fn func(string) error) error {
	if len(shards) == 1 {
		return fn(shards[0])
	}
	errs := make([]error, len(shards))
	var wg sync.WaitGroup
	for i, id := range shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(id)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// List implements Store: every shard is asked in parallel for the ids after the cursor,
// rows of partitions a shard does not own (copies in transit or left over from a move) are
// dropped, and the pages are merged in id order. A shard whose page was full bounds what
// can be returned: ids beyond its last one might be missing from the merge, so the page
// stops there (and, if that left it short, asks again from there).
func (s *Sharded) List(ctx context.Context, collection, cursor string, limit int) (Page, error) {
	if s.closed.Load() {
		return Page{}, ErrClosed
	}
	if err := CheckCollection(collection); err != nil {
		return Page{}, err
	}
	after, err := DecodeCursor(collection, cursor)
	if err != nil {
		return Page{}, err
	}
	limit = ClampLimit(limit)
	s.switchMu.RLock()
	defer s.switchMu.RUnlock()
	m, bs := s.table.Map(), *s.backends.Load()
	shards := m.Shards()
	var out []Doc
	for {
		need := limit - len(out)
		pages := make([]Page, len(shards))
		cur := ""
		if after != "" {
			cur = EncodeCursor(collection, after)
		}
		err := scatter(shards, func(id string) error {
			i, _ := slices.BinarySearch(shards, id)
			p, err := bs[id].List(ctx, collection, cur, need)
			pages[i] = p
			return err
		})
		if err != nil {
			return Page{}, err
		}
		bound, full := "", false
		var merged []Doc
		for i, p := range pages {
			if p.Next != "" && len(p.Docs) > 0 {
				if last := p.Docs[len(p.Docs)-1].ID; !full || last < bound {
					bound, full = last, true
				}
			}
			for _, d := range p.Docs {
				if owner, _ := m.Owner(PartitionOf(collection, d.ID, s.parts)); owner == shards[i] {
					merged = append(merged, d)
				}
			}
		}
		slices.SortFunc(merged, func(a, b Doc) int { return strings.Compare(a.ID, b.ID) })
		if full {
			merged = slices.DeleteFunc(merged, func(d Doc) bool { return d.ID > bound })
		}
		more := full
		if len(merged) > need {
			merged, more = merged[:need], true
		}
		out = append(out, merged...)
		switch {
		case len(out) == limit && more:
			return Page{Docs: out, Next: EncodeCursor(collection, out[limit-1].ID)}, nil
		case !more || len(out) == limit:
			return Page{Docs: out}, nil
		}
		after = bound // short page: continue from where every shard is complete
	}
}
