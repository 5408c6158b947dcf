package docstore

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"maps"
	"slices"
	"time"

	"github.com/strata-project/strata/shard"
)

// MoveStats describes one partition move.
type MoveStats struct {
	// Passes is the number of copy passes, the final one under the fence included.
	Passes int
	// Copied is the number of rows written to the destination over all passes.
	Copied int
	// Rows is the number of rows (tombstones included) in the partition when it switched.
	Rows int
	// Fenced is how long requests to the partition waited for the final pass and switch.
	Fenced time.Duration
	// MapVersion is the version of the placement map that made the move.
	MapVersion uint64
}

// ReshardReport sums up a Reshard call.
type ReshardReport struct {
	// Moves are the partition moves made, in order.
	Moves []shard.Move
	// Copied is the number of rows written to destinations.
	Copied int
	// MaxFenced is the longest time one partition's requests waited.
	MaxFenced time.Duration
	// Map is the placement map after the last move.
	Map *shard.Map
}

// AddShard registers the backend of a shard that owns nothing yet, so that Reshard can move
// partitions to it. Its partition count must be the map's.
func (s *Sharded) AddShard(id string, b Backend) error {
	s.reshardMu.Lock()
	defer s.reshardMu.Unlock()
	if b.Partitions() != s.parts {
		return fmt.Errorf("%w: sharded: backend %q has %d partitions, map has %d", ErrInvalid, id, b.Partitions(), s.parts)
	}
	cur := *s.backends.Load()
	if cur[id] != nil {
		return fmt.Errorf("%w: sharded: shard %q already has a backend", ErrInvalid, id)
	}
	next := maps.Clone(cur)
	next[id] = b
	s.backends.Store(&next)
	return nil
}

// RemoveShard unregisters the backend of a shard that owns no partition and holds no old
// copies awaiting Cleanup, and returns it for the caller to close.
func (s *Sharded) RemoveShard(id string) (Backend, error) {
	s.reshardMu.Lock()
	defer s.reshardMu.Unlock()
	cur := *s.backends.Load()
	b := cur[id]
	if b == nil {
		return nil, fmt.Errorf("%w: sharded: no shard %q", ErrInvalid, id)
	}
	if slices.Contains(s.table.Map().Shards(), id) {
		return nil, fmt.Errorf("%w: sharded: shard %q still owns partitions", ErrInvalid, id)
	}
	for _, mv := range s.pending {
		if mv.From == id || mv.To == id {
			return nil, fmt.Errorf("%w: sharded: shard %q has copies awaiting Cleanup", ErrInvalid, id)
		}
	}
	next := maps.Clone(cur)
	delete(next, id)
	s.backends.Store(&next)
	return b, nil
}

// Reshard moves partitions so that exactly the shards of target own them, evenly, moving
// only the partitions whose owner must change (shard.PlanMoves). Every target shard needs a
// backend (AddShard for new ones). Each partition moves by copy, catch-up, verification and
// switch (see MovePartition); requests are served throughout.
//
// The old copies stay on their source shards until Cleanup, so a Reshard is reversible
// until then: Reshard back to the old shard set moves the partitions back, copying only
// rows written since. On error, the moves done so far stand and the call can be repeated.
func (s *Sharded) Reshard(ctx context.Context, target []string) (ReshardReport, error) {
	plan, err := shard.PlanMoves(s.table.Map(), target)
	if err != nil {
		return ReshardReport{}, fmt.Errorf("%w: sharded: %w", ErrInvalid, err)
	}
	bs := *s.backends.Load()
	for _, id := range target {
		if bs[id] == nil {
			return ReshardReport{}, fmt.Errorf("%w: sharded: no backend for shard %q (AddShard first)", ErrInvalid, id)
		}
	}
	var rep ReshardReport
	for _, mv := range plan {
		st, err := s.MovePartition(ctx, mv)
		if err != nil {
			rep.Map = s.table.Map()
			return rep, err
		}
		rep.Moves = append(rep.Moves, mv)
		rep.Copied += st.Copied
		rep.MaxFenced = max(rep.MaxFenced, st.Fenced)
	}
	rep.Map = s.table.Map()
	return rep, nil
}

// copyBatch is the number of rows read and applied at a time.
const copyBatch = 500

// MovePartition moves one partition to another shard online:
//
//  1. copy: every row of the partition (tombstones included) is copied to the destination,
//     keeping versions, while requests go on at the source;
//  2. catch up: further passes copy the rows whose version is newer on the source, until a
//     pass copies nothing or CatchUpPasses passes were made;
//  3. fence: the partition's gate is taken, so its requests wait; a final pass copies the
//     last writes, and the partition's digests (keys, versions and tombstones) are compared
//     on both sides;
//  4. switch: the new map is published and OnSwitch called; the gate is released and
//     requests go to the destination.
//
// The source keeps its copy until Cleanup. If the fence's work does not finish within
// FenceTimeout, or the digests differ, nothing switches and an error wrapping ErrReshard is
// returned.
func (s *Sharded) MovePartition(ctx context.Context, mv shard.Move) (st MoveStats, err error) {
	s.reshardMu.Lock()
	defer s.reshardMu.Unlock()
	if s.closed.Load() {
		return st, ErrClosed
	}
	bs := *s.backends.Load()
	owner, err := s.table.Map().Owner(mv.Partition)
	if err != nil {
		return st, fmt.Errorf("%w: sharded: %w", ErrInvalid, err)
	}
	if owner != mv.From {
		return st, fmt.Errorf("%w: sharded: %v: owner is %s", ErrInvalid, mv, owner)
	}
	src, dst := bs[mv.From], bs[mv.To]
	if dst == nil || mv.To == mv.From {
		return st, fmt.Errorf("%w: sharded: %v: no backend for %q (AddShard first)", ErrInvalid, mv, mv.To)
	}
	for st.Passes < s.cfg.CatchUpPasses {
		n, _, err := copyPartition(ctx, src, dst, mv.Partition)
		st.Passes++
		st.Copied += n
		if err != nil {
			return st, fmt.Errorf("%w: %v: copy: %w", ErrReshard, mv, err)
		}
		if n == 0 {
			break
		}
	}
	g := &s.gates[mv.Partition]
	g.Lock()
	start := time.Now()
	defer func() {
		g.Unlock()
		st.Fenced = time.Since(start)
		if s.cfg.OnMove != nil && st.MapVersion != 0 {
			s.cfg.OnMove(mv, st)
		}
	}()
	fctx, cancel := context.WithTimeout(ctx, s.cfg.FenceTimeout)
	defer cancel()
	n, srcSum, err := copyPartition(fctx, src, dst, mv.Partition)
	st.Passes++
	st.Copied += n
	if err != nil {
		return st, fmt.Errorf("%w: %v: final copy: %w", ErrReshard, mv, err)
	}
	dstSum, err := digest(fctx, dst, mv.Partition)
	if err != nil {
		return st, fmt.Errorf("%w: %v: verify: %w", ErrReshard, mv, err)
	}
	if srcSum.sum != dstSum.sum || srcSum.rows != dstSum.rows {
		return st, fmt.Errorf("%w: %v: copies differ after the final pass (%d rows at the source, %d at the destination)",
			ErrReshard, mv, srcSum.rows, dstSum.rows)
	}
	st.Rows = srcSum.rows
	s.switchMu.Lock()
	m, err := s.table.Move(mv)
	if err == nil && s.cfg.OnSwitch != nil {
		s.cfg.OnSwitch(m)
	}
	s.switchMu.Unlock()
	if err != nil {
		return st, fmt.Errorf("%w: %v: switch: %w", ErrReshard, mv, err)
	}
	st.MapVersion = m.Version()
	s.pending = append(s.pending, mv)
	return st, nil
}

// Cleanup deletes the copies that moves left on shards that no longer own their partitions,
// which makes the moves irreversible, and returns the number of rows removed.
func (s *Sharded) Cleanup(ctx context.Context) (int64, error) {
	s.reshardMu.Lock()
	defer s.reshardMu.Unlock()
	m, bs := s.table.Map(), *s.backends.Load()
	var removed int64
	for len(s.pending) > 0 {
		mv := s.pending[0]
		for _, id := range []string{mv.From, mv.To} {
			if owner, _ := m.Owner(mv.Partition); owner == id {
				continue
			}
			n, err := bs[id].DeletePartition(ctx, mv.Partition)
			removed += n
			if err != nil {
				return removed, fmt.Errorf("%w: cleanup of %v: %w", ErrReshard, mv, err)
			}
		}
		s.pending = s.pending[1:]
	}
	return removed, nil
}

// partitionSum is a digest of a partition's rows.
type partitionSum struct {
	sum  [sha256.Size]byte
	rows int
}

// digest hashes every row's key, version and tombstone flag, in key order. Versions
// identify contents: every write makes a new version and copies keep versions.
func digest(ctx context.Context, b Backend, part int) (partitionSum, error) {
	var ps partitionSum
	h := sha256.New()
	err := scanAll(ctx, b, part, func(rows []Row) error {
		hashRows(h, rows)
		ps.rows += len(rows)
		return nil
	})
	copy(ps.sum[:], h.Sum(nil))
	return ps, err
}

func scanAll(ctx context.Context, b Backend, part int, fn func([]Row) error) error {
	var after Key
	for {
		rows, err := b.ScanPartition(ctx, part, after, copyBatch)
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			return nil
		}
		if err := fn(rows); err != nil {
			return err
		}
		last := rows[len(rows)-1]
		after = Key{Collection: last.Collection, ID: last.ID}
		if len(rows) < copyBatch {
			return nil
		}
	}
}

// copyPartition copies every row of part from src to dst whose version is newer than dst's
// (dst decides), and returns the number of rows dst changed and the digest of what it read.
func copyPartition(ctx context.Context, src, dst Backend, part int) (int, partitionSum, error) {
	var ps partitionSum
	h := sha256.New()
	copied := 0
	err := scanAll(ctx, src, part, func(rows []Row) error {
		hashRows(h, rows)
		ps.rows += len(rows)
		n, err := dst.ApplyRows(ctx, rows)
		copied += n
		return err
	})
	copy(ps.sum[:], h.Sum(nil))
	return copied, ps, err
}

// hashRows feeds each row's key, version and tombstone flag to h.
func hashRows(h hash.Hash, rows []Row) {
	var buf []byte
	for _, r := range rows {
		buf = append(buf[:0], r.Collection...)
		buf = append(buf, 0)
		buf = append(buf, r.ID...)
		buf = append(buf, 0)
		buf = binary.BigEndian.AppendUint64(buf, uint64(r.Version))
		if r.Deleted {
			buf = append(buf, 1)
		} else {
			buf = append(buf, 0)
		}
		h.Write(buf)
	}
}
