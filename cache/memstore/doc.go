// Package memstore is the in-process cache.Store: otter v2 (W-TinyLFU eviction, capacity in
// bytes through a weigher, a TTL per entry) with the versioned set-if-newer, set-if-not-older
// and tombstone rules of package cache applied atomically by otter's Compute under the key's
// bucket lock. Get reports each entry's expiry and load cost (for early refresh); a set that
// gives an expiry (a two-tier L1 copying an L2 entry) has it reported as given.
//
// Leases live in a second, unweighted otter cache so that they neither count against the
// capacity nor disturb the key's entry. A lease carries a token; only its holder's token
// releases it, so a holder whose lease expired cannot free the next holder's.
//
// Compared with using otter directly, a Get costs one more branch (tombstones are misses) and
// the Entry copy; BenchmarkCacheAsideHitParallel in the benchmarks module measures a whole
// cache-aside hit against a raw otter GetIfPresent.
package memstore
