// Package memstore is the in-process cache.Store: otter v2 (W-TinyLFU eviction, capacity in
// bytes through a weigher, a TTL per entry) with the versioned set-if-newer and tombstone rule
// of package cache applied atomically by otter's Compute under the key's bucket lock.
//
// Leases live in a second, unweighted otter cache so that they neither count against the
// capacity nor disturb the key's entry. A lease carries a token; only its holder's token
// releases it, so a holder whose lease expired cannot free the next holder's.
//
// Compared with using otter directly, a Get costs one more branch (tombstones are misses) and
// the Entry copy; BenchmarkCacheAsideHitParallel in the benchmarks module measures a whole
// cache-aside hit against a raw otter GetIfPresent.
package memstore
