package shard

import "slices"

// Rendezvous is highest-random-weight hashing (Thaler and Ravishankar,
// 1996): a key belongs to the shard with the highest score
// mix(Hash(key) XOR Hash(shard ID)), where mix is the SplitMix64 finalizer;
// equal scores go to the smaller ID. Adding a shard moves exactly the keys
// that the new shard wins, 1/(n+1) of them on average, with no virtual nodes
// and near-perfect balance; the price is a score per shard on every lookup,
// O(n) where a ring is O(log n).
//
// A Rendezvous is immutable and safe for concurrent use; a zero Rendezvous
// has no shards.
type Rendezvous struct {
	shards []string // sorted
	seeds  []uint64 // seeds[i] = Hash(shards[i])
}

// NewRendezvous returns a rendezvous placement over the given shards. Their
// order does not matter.
func NewRendezvous(shards []string) (*Rendezvous, error) {
	sorted, err := checkShards(shards)
	if err != nil {
		return nil, err
	}
	r := &Rendezvous{shards: sorted, seeds: make([]uint64, len(sorted))}
	for i, id := range sorted {
		r.seeds[i] = HashString(id)
	}
	return r, nil
}

// Shards returns the sorted shard IDs.
func (r *Rendezvous) Shards() []string { return slices.Clone(r.shards) }

// Locate returns the shard that owns key.
func (r *Rendezvous) Locate(key []byte) (string, error) { return r.locate(Hash(key)) }

// LocateString is [Rendezvous.Locate] for a string key.
func (r *Rendezvous) LocateString(key string) (string, error) { return r.locate(HashString(key)) }

func (r *Rendezvous) locate(h uint64) (string, error) {
	if r == nil || len(r.seeds) == 0 {
		return "", ErrNoShards
	}
	best, bestScore := 0, mix64(h^r.seeds[0])
	for i := 1; i < len(r.seeds); i++ {
		if s := mix64(h ^ r.seeds[i]); s > bestScore {
			best, bestScore = i, s
		}
	}
	return r.shards[best], nil
}

// mix64 is the SplitMix64 finalizer (Steele, Lea and Flood, 2014), a
// bijection of uint64 with full avalanche.
func mix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}
