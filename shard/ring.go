package shard

import (
	"fmt"
	"slices"
	"strconv"
)

// DefaultVirtualNodes is the number of ring points per shard when
// RingConfig.VirtualNodes or BoundedConfig.VirtualNodes is 0.
const DefaultVirtualNodes = 160

// MaxVirtualNodes is the largest accepted number of ring points per shard.
const MaxVirtualNodes = 1 << 14

// RingConfig configures a [Ring]. The zero value is valid.
type RingConfig struct {
	// VirtualNodes is the number of points each shard has on the ring, in
	// [1, MaxVirtualNodes]. 0 means DefaultVirtualNodes (160). More points
	// even out the shards' shares of the ring (the spread falls as one over
	// the square root of the count) at the cost of memory and a longer
	// binary search.
	VirtualNodes int
}

// Ring is consistent hashing on a ring with virtual nodes (Karger et al.,
// 1997). Point i of shard s is at Hash(s + "#" + decimal(i)) on a ring of
// 2^64 positions; a key belongs to the shard of the first point at or after
// Hash(key), wrapping around. Equal points are ordered by shard ID. Adding a
// shard moves only the keys that fall on the new shard's arcs.
//
// A Ring is immutable and safe for concurrent use; a zero Ring has no shards.
type Ring struct {
	shards []string // sorted
	points []uint64 // sorted ring positions
	owner  []uint16 // owner[i] indexes shards for points[i]
}

// NewRing returns a ring of the given shards. Their order does not matter.
func NewRing(shards []string, cfg RingConfig) (*Ring, error) {
	v := cfg.VirtualNodes
	if v == 0 {
		v = DefaultVirtualNodes
	}
	if v < 1 || v > MaxVirtualNodes {
		return nil, fmt.Errorf("%w: VirtualNodes %d not in [1, %d]", ErrInvalidConfig, v, MaxVirtualNodes)
	}
	sorted, err := checkShards(shards)
	if err != nil {
		return nil, err
	}
	type point struct {
		pos   uint64
		owner uint16
	}
	pts := make([]point, 0, len(sorted)*v)
	var buf []byte
	for s, id := range sorted {
		for i := range v {
			buf = strconv.AppendInt(append(append(buf[:0], id...), '#'), int64(i), 10)
			pts = append(pts, point{Hash(buf), uint16(s)})
		}
	}
	slices.SortFunc(pts, func(a, b point) int {
		if a.pos != b.pos {
			if a.pos < b.pos {
				return -1
			}
			return 1
		}
		return int(a.owner) - int(b.owner)
	})
	r := &Ring{shards: sorted, points: make([]uint64, len(pts)), owner: make([]uint16, len(pts))}
	for i, p := range pts {
		r.points[i], r.owner[i] = p.pos, p.owner
	}
	return r, nil
}

// Shards returns the sorted shard IDs.
func (r *Ring) Shards() []string { return slices.Clone(r.shards) }

// Locate returns the shard that owns key.
func (r *Ring) Locate(key []byte) (string, error) { return r.locate(Hash(key)) }

// LocateString is [Ring.Locate] for a string key.
func (r *Ring) LocateString(key string) (string, error) { return r.locate(HashString(key)) }

func (r *Ring) locate(h uint64) (string, error) {
	if r == nil || len(r.points) == 0 {
		return "", ErrNoShards
	}
	return r.shards[r.owner[r.search(h)]], nil
}

// search returns the index of the first point at or after h, wrapping.
func (r *Ring) search(h uint64) int {
	i, _ := slices.BinarySearch(r.points, h)
	if i == len(r.points) {
		i = 0
	}
	return i
}
