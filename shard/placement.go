package shard

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/bits"
	"slices"
	"strings"
)

// DefaultPartitions is the number of virtual partitions of a [Map] made with
// partitions == 0. 4096 partitions keep 16 shards exactly balanced (256
// each) and up to 200 shards within one partition (5%) of a fair share, in
// an 8 KiB owner table.
const DefaultPartitions = 4096

// MaxPartitions is the largest accepted partition count.
const MaxPartitions = 1 << 16

// Map is the default placement: keys hash to a fixed number of virtual
// partitions, and the map says which shard owns each partition. The
// partition of a key is
//
//	Partition(key) = floor(Hash(key) * Partitions() / 2^64)
//
// (multiply-shift range reduction): one multiplication, uniform to within
// Partitions()/2^64, and a function of the key and the partition count only,
// never of the shards. Resharding therefore moves whole partitions between
// shards and nothing else, and growing a shard set of n by one moves 1/(n+1)
// of the partitions, all to the new shard (see [PlanMoves]). Multiplying the
// partition count by k would send every key of partition p to one of the
// partitions k*p .. k*p+k-1, so partitions can later be split in place with
// no data crossing shards. (A jump hash over the partitions, the other
// common choice, costs O(log Partitions) dependent floating-point steps per
// key and scatters every partition's keys when the count grows.)
//
// A Map is immutable once made and safe for concurrent use; changes
// ([Map.With], [Map.Apply]) return a new Map with a higher version. Every
// shard in a Map owns at least one partition, and the shard list is sorted,
// so equal placements have equal JSON encodings. A zero Map has no shards:
// Locate returns [ErrNoShards].
type Map struct {
	version uint64
	shards  []string // sorted, unique, each owns at least one partition
	owners  []uint16 // partition -> index into shards
}

// Move moves one partition from one shard to another.
type Move struct {
	Partition int    // partition number, in [0, Partitions())
	From      string // expected current owner
	To        string // new owner; a shard not yet in the map joins it
}

// String returns "partition P: FROM -> TO".
func (mv Move) String() string {
	return fmt.Sprintf("partition %d: %s -> %s", mv.Partition, mv.From, mv.To)
}

// NewMap returns a balanced map of version 1 that deals the partitions round
// robin to the shards in sorted order, so partition p belongs to the
// (p mod n)-th smallest ID. partitions == 0 means [DefaultPartitions]; it
// must be at most [MaxPartitions] and at least the number of shards. The order
// of shards does not matter.
func NewMap(shards []string, partitions int) (*Map, error) {
	if partitions == 0 {
		partitions = DefaultPartitions
	}
	if partitions < 0 || partitions > MaxPartitions {
		return nil, fmt.Errorf("%w: %d not in [1, %d]", ErrInvalidPartitions, partitions, MaxPartitions)
	}
	sorted, err := checkShards(shards)
	if err != nil {
		return nil, err
	}
	if len(sorted) > partitions {
		return nil, fmt.Errorf("%w: %d partitions for %d shards", ErrInvalidPartitions, partitions, len(sorted))
	}
	owners := make([]uint16, partitions)
	for p := range owners {
		owners[p] = uint16(p % len(sorted))
	}
	return &Map{version: 1, shards: sorted, owners: owners}, nil
}

// Version returns the map's version: 1 for a new map, +1 for every move.
func (m *Map) Version() uint64 { return m.version }

// Partitions returns the number of partitions.
func (m *Map) Partitions() int { return len(m.owners) }

// Shards returns the sorted IDs of the shards that own partitions.
func (m *Map) Shards() []string { return slices.Clone(m.shards) }

// Partition returns the partition of key, in [0, Partitions()); 0 for a
// zero Map.
func (m *Map) Partition(key []byte) int { return partition(Hash(key), len(m.owners)) }

// PartitionString is [Map.Partition] for a string key.
func (m *Map) PartitionString(key string) int { return partition(HashString(key), len(m.owners)) }

// partition maps a hash to [0, n): the high word of the 128-bit product.
func partition(h uint64, n int) int {
	hi, _ := bits.Mul64(h, uint64(n))
	return int(hi)
}

// Owner returns the shard that owns partition p.
func (m *Map) Owner(p int) (string, error) {
	if p < 0 || p >= len(m.owners) {
		return "", fmt.Errorf("%w: partition %d not in [0, %d)", ErrInvalidPartitions, p, len(m.owners))
	}
	return m.shards[m.owners[p]], nil
}

// Counts returns the number of partitions each shard owns.
func (m *Map) Counts() map[string]int {
	c := make(map[string]int, len(m.shards))
	for _, o := range m.owners {
		c[m.shards[o]]++
	}
	return c
}

// Owned returns the partitions that shard id owns, in increasing order.
func (m *Map) Owned(id string) []int {
	var ps []int
	for p, o := range m.owners {
		if m.shards[o] == id {
			ps = append(ps, p)
		}
	}
	return ps
}

// Locate returns the shard that owns key's partition. It allocates nothing.
func (m *Map) Locate(key []byte) (string, error) {
	if m == nil || len(m.owners) == 0 {
		return "", ErrNoShards
	}
	return m.shards[m.owners[partition(Hash(key), len(m.owners))]], nil
}

// LocateString is [Map.Locate] for a string key.
func (m *Map) LocateString(key string) (string, error) {
	if m == nil || len(m.owners) == 0 {
		return "", ErrNoShards
	}
	return m.shards[m.owners[partition(HashString(key), len(m.owners))]], nil
}

// With returns a copy of m with one partition moved and the version
// increased by one. mv.From must be the current owner and differ from mv.To
// ([ErrOwnerMismatch] otherwise). A shard left without partitions leaves the
// map; mv.To joins it if new.
func (m *Map) With(mv Move) (*Map, error) {
	if len(m.owners) == 0 {
		return nil, ErrNoShards
	}
	cur, err := m.Owner(mv.Partition)
	if err != nil {
		return nil, err
	}
	if cur != mv.From {
		return nil, fmt.Errorf("%w: %v, owner is %s (map version %d)", ErrOwnerMismatch, mv, cur, m.version)
	}
	if !validID(mv.To) {
		return nil, fmt.Errorf("%w: %q", ErrInvalidShardID, mv.To)
	}
	if mv.To == mv.From {
		return nil, fmt.Errorf("%w: %v moves nothing", ErrOwnerMismatch, mv)
	}
	owners := slices.Clone(m.owners)
	shards := m.shards
	to, found := slices.BinarySearch(shards, mv.To)
	if !found {
		shards = slices.Insert(slices.Clone(shards), to, mv.To)
		for p, o := range owners {
			if int(o) >= to {
				owners[p] = o + 1
			}
		}
	}
	from, _ := slices.BinarySearch(shards, mv.From)
	owners[mv.Partition] = uint16(to)
	if !slices.Contains(owners, uint16(from)) {
		shards = slices.Delete(slices.Clone(shards), from, from+1)
		for p, o := range owners {
			if int(o) > from {
				owners[p] = o - 1
			}
		}
	}
	return &Map{version: m.version + 1, shards: shards, owners: owners}, nil
}

// Apply returns m with every move of plan applied in order, one version per
// move.
func (m *Map) Apply(plan []Move) (*Map, error) {
	for _, mv := range plan {
		next, err := m.With(mv)
		if err != nil {
			return nil, err
		}
		m = next
	}
	return m, nil
}

// PlanMoves returns the moves that take m to the shard set target with
// partition counts that differ by at most one between shards, moving as few
// partitions as possible: each moved partition changes owner once and
// nothing else moves. Adding a shard to a balanced map of n shards moves
// about Partitions()/(n+1) partitions, all to the new shard; removing one
// from n+1 moves only the removed shard's partitions whenever
// Partitions() >= n(n+1) (so that no remaining shard is above its new
// quota).
//
// With P partitions and n target shards, r = P mod n shards get P/n+1
// partitions and the rest P/n. A target shard keeps min(owned, quota) of its
// partitions, so the plan moves P - sum(min(owned, quota)); giving the larger
// quotas to the shards that own the most makes that sum, hence the number of
// moves, optimal. Over-quota shards keep their lowest-numbered partitions;
// freed partitions are dealt round robin to the shards below quota, so a
// removal spreads its copies over all receivers. Moves come in increasing
// partition order. The plan is a pure function of m and the target set.
func PlanMoves(m *Map, target []string) ([]Move, error) {
	if m == nil || len(m.owners) == 0 {
		return nil, ErrNoShards
	}
	sorted, err := checkShards(target)
	if err != nil {
		return nil, err
	}
	P, n := len(m.owners), len(sorted)
	if n > P {
		return nil, fmt.Errorf("%w: %d partitions for %d shards", ErrInvalidPartitions, P, n)
	}
	owned := m.Counts()
	byLoad := slices.Clone(sorted)
	slices.SortStableFunc(byLoad, func(a, b string) int { return owned[b] - owned[a] })
	quota := make(map[string]int, n)
	for i, id := range byLoad {
		quota[id] = P / n
		if i < P%n {
			quota[id]++
		}
	}
	kept := make(map[string]int, n)
	var freed []int
	for p, o := range m.owners {
		id := m.shards[o]
		if q, ok := quota[id]; ok && kept[id] < q {
			kept[id]++
			continue
		}
		freed = append(freed, p)
	}
	var receivers []string
	for _, id := range sorted {
		if kept[id] < quota[id] {
			receivers = append(receivers, id)
		}
	}
	plan := make([]Move, 0, len(freed))
	i := 0
	for _, p := range freed {
		for kept[receivers[i]] == quota[receivers[i]] {
			i = (i + 1) % len(receivers)
		}
		to := receivers[i]
		kept[to]++
		plan = append(plan, Move{Partition: p, From: m.shards[m.owners[p]], To: to})
		i = (i + 1) % len(receivers)
	}
	return plan, nil
}

// mapJSON is the stored form of a Map: owners[p] indexes shards.
type mapJSON struct {
	Version uint64   `json:"version"`
	Shards  []string `json:"shards"`
	Owners  []int    `json:"owners"`
}

// MarshalJSON encodes m as {"version":V,"shards":[IDs...],"owners":[i...]},
// where owners[p] is the index in shards of partition p's owner. Equal maps
// encode to equal bytes.
func (m *Map) MarshalJSON() ([]byte, error) {
	owners := make([]int, len(m.owners))
	for p, o := range m.owners {
		owners[p] = int(o)
	}
	return json.Marshal(mapJSON{Version: m.version, Shards: m.shards, Owners: owners})
}

// UnmarshalJSON decodes a map written by [Map.MarshalJSON] into a zero Map,
// with the checks of [DecodeMap]. Decoding into a Map that is in use would
// break its immutability and is refused.
func (m *Map) UnmarshalJSON(data []byte) error {
	if m.owners != nil {
		return fmt.Errorf("%w: decoding into a map in use", ErrInvalidMap)
	}
	d, err := DecodeMap(data)
	if err != nil {
		return err
	}
	*m = *d
	return nil
}

// DecodeMap decodes and validates a stored map. It rejects, with an error
// wrapping [ErrInvalidMap], anything [Map.MarshalJSON] would not produce up
// to the order of shards: unknown fields, trailing data, version 0, an
// invalid or repeated shard ID, a partition count outside [1,
// MaxPartitions], an owner index out of range, or a shard that owns no
// partition. Shards may come in any order; the map is canonicalised.
func DecodeMap(data []byte) (*Map, error) {
	var in mapJSON
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidMap, err)
	}
	if _, err := dec.Token(); err == nil {
		return nil, fmt.Errorf("%w: trailing data", ErrInvalidMap)
	}
	if in.Version == 0 {
		return nil, fmt.Errorf("%w: version 0", ErrInvalidMap)
	}
	sorted, err := checkShards(in.Shards)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidMap, err)
	}
	P := len(in.Owners)
	if P < 1 || P > MaxPartitions {
		return nil, fmt.Errorf("%w: %w: %d partitions", ErrInvalidMap, ErrInvalidPartitions, P)
	}
	// remap[i] is the index in sorted of in.Shards[i].
	remap := make([]uint16, len(in.Shards))
	for i, id := range in.Shards {
		j, _ := slices.BinarySearch(sorted, id)
		remap[i] = uint16(j)
	}
	owners := make([]uint16, P)
	used := make([]bool, len(sorted))
	for p, o := range in.Owners {
		if o < 0 || o >= len(in.Shards) {
			return nil, fmt.Errorf("%w: partition %d: owner index %d out of range", ErrInvalidMap, p, o)
		}
		owners[p] = remap[o]
		used[remap[o]] = true
	}
	var idle []string
	for i, u := range used {
		if !u {
			idle = append(idle, sorted[i])
		}
	}
	if len(idle) > 0 {
		return nil, fmt.Errorf("%w: shards own no partition: %s", ErrInvalidMap, strings.Join(idle, ", "))
	}
	return &Map{version: in.Version, shards: sorted, owners: owners}, nil
}
