// Package cache implements the caching strategies — cache-aside, read-through,
// write-through and write-behind — over a small Store interface, without the classic bugs:
//
//   - An empty value is a hit, not a miss; a not-found is cached as a negative entry with
//     its own TTL (Config.NegativeTTL) and cleared by a later write.
//   - Misses of one key are collapsed in process (singleflight, with the load detached from
//     the first caller's cancellation and bounded by Config.LoadTimeout) and across
//     processes (a fill lease in the shared store: one process loads, the others poll the
//     store with growing pauses for at most Config.LeaseWait, then load themselves).
//   - No stale sets: entries carry the source's version, and an invalidation leaves a
//     tombstone, so a slow reader can never write an old value back after a writer moved on.
//   - Write-through writes the source first, then sets the cache only if newer; an unknown
//     outcome invalidates instead of guessing, and a failed invalidation is queued in a
//     synced file (Config.PendingPath) and retried by the Cache's own goroutine. While a key
//     has a pending invalidation, reads of it in this process bypass the cache.
//   - Store calls go through a breaker: with the cache tier down, reads go to the source,
//     writes still succeed (their invalidations wait in the pending queue), nothing hangs.
//   - TTLs carry jitter (Config.Jitter) so that keys filled together do not expire together.
//   - Write-behind (package writebehind) acknowledges a write only once it is in a durable
//     queue; the flusher coalesces per key, applies on top of the current version, and a
//     full queue pushes back.
//
// # Linearizability
//
// Reads and writes of a key through one Cache are linearizable (TestLinearizable checks
// histories of 8 clients with porcupine, store restarts included). Two mechanisms matter
// besides tombstones: a caller joins an in-process load only while its source read has not
// begun, so a shared result is never older than the call that receives it (the classic
// singleflight hands a value read before the caller arrived, which porcupine catches); and
// when a flight ends by finding another process's fill in the store, callers that joined it
// read the store again themselves rather than take a value read before they arrived. A store
// that restarts loses its tombstones, so a load that began before a write could otherwise set
// its old value after the restart: a fill therefore stores its value only if no store call of
// the Cache failed since the fill began. The window left is a restart that this Cache never
// saw fail (no call of it reached the store while it was down), and, for the same reason, a
// shared store emptied under live traffic (FLUSHALL, flush_all), where a set already in flight
// can land after the flush: to empty it, restart it instead (stopping it drops what is in
// flight, and the callers' errors make their fills drop their sets). Config.TombstoneTTL must
// likewise outlast the slowest load.
//
// # Compared with the seed
//
// The seed's cache-aside is kept as a test-only reference (naive in the tests):
// TestSeedFlawStaleSet and TestLinearizabilityCatchesNaive replay the stale-set schedule
// and show it serving the old value, TestSeedFlawEmptyValueIsMiss shows it reloading empty
// values. Early refresh (XFetch) is not implemented yet.
//
// Stores live in subpackages: memstore (in-process), redisstore (Redis and Redis Cluster),
// memcachestore (Memcached), and a two-tier store with cross-node invalidation; cachetest
// is the conformance suite they all pass. docsource adapts a docstore collection as Source.
package cache
