package shard

import "github.com/cespare/xxhash/v2"

// Hash returns the placement hash of key: xxHash64 of the key bytes with
// seed 0. It is fixed: the same key hashes to the same value in every
// process, on every architecture and in every release (golden vectors in the
// tests pin it). Every placement in the package starts from this value.
func Hash(key []byte) uint64 { return xxhash.Sum64(key) }

// HashString is [Hash] of the bytes of key, without converting it.
func HashString(key string) uint64 { return xxhash.Sum64String(key) }

// JumpHash returns the bucket in [0, buckets) of a 64-bit key by the jump
// consistent hash of Lamping and Veach ("A Fast, Minimal Memory, Consistent
// Hash Algorithm", 2014). Growing buckets from n to n+1 moves exactly the keys
// that land in the new bucket, about 1/(n+1) of them. It is the placement
// for a set of buckets that only ever grows or shrinks at the end (numbered
// 0..n-1) and holds no per-bucket state; it costs O(log buckets) steps. It
// returns -1 when buckets < 1.
func JumpHash(key uint64, buckets int) int {
	if buckets < 1 {
		return -1
	}
	b, j := int64(-1), int64(0)
	for j < int64(buckets) {
		b = j
		key = key*2862933555777941757 + 1
		// key>>33 < 2^31 converts exactly through int64, which is cheaper.
		j = int64(float64(b+1) * (float64(int64(1)<<31) / float64(int64(key>>33)+1)))
	}
	return int(b)
}
