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
//     Reads of an in-process store (InProcess: memstore), which cannot be down, skip the
//     breaker and its per-call bookkeeping.
//   - TTLs carry jitter (Config.Jitter) so that keys filled together do not expire together.
//   - Optional early refresh (Config.EarlyRefresh, XFetch): a hot key is reloaded in the
//     background shortly before it expires, so it does not expire under load.
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
// values. The seed has no early refresh: every hot key expires under load.
//
// # Early refresh
//
// With Config.EarlyRefresh = beta > 0, a hit decides whether to reload its key early, as
// XFetch (Vattani, Chierichetti and Lowenstein, "Optimal Probabilistic Cache Stampede
// Prevention") does: with remaining the entry's lifetime left and Cost how long its last
// load took, it refreshes when remaining <= Cost*beta*-ln(u) for u uniform in (0, 1]. Reads
// of a hot key thus refresh it, with high probability, within the last few load times of its
// life, while a key read rarely is seldom refreshed (only a read in that last stretch can
// start a refresh). Entries carry what the decision needs (Entry.Expires and Entry.Cost): a
// fill records its load's duration, and the stores keep both with the entry (16 bytes in the
// value's header in Redis and Memcached, fields in memory and on the cache node's wire), so
// a hit needs no extra round trip, only a clock read (Config.Now) and, near the expiry, a
// random number.
//
// A due hit returns the entry it read at once and starts a refresh in the background. The
// refresh is a flight like a miss's fill (one per key per process; misses of the key
// meanwhile join it), takes the fill lease (one refresh per key across processes: a refresh
// that finds the lease held gives up after a pause of about one load, so that the hits of
// its process do not retry at the rate of reads), reads the entry again (and stops if
// another process has refreshed it meanwhile), loads the key within Config.LoadTimeout and
// stores it with Store.SetIfNotOlder through the breaker. SetIfNotOlder is SetIfNewer that
// also replaces an entry of the same version, which is how an unchanged value gets a new
// lifetime; like SetIfNewer it never writes below a newer entry or tombstone, so a refresh
// that raced a write is refused. Like a fill, a refresh stores nothing if a store call of the
// Cache failed since it began (the store may have restarted and lost the write's tombstone),
// and misses that joined it get its value only when the store answered its set.
//
// Its cost: per hit, a clock read; per refresh, a lease, a Get, one load of the source and a
// set, about one extra load per hot key and TTL for the whole fleet, in exchange for no
// stampede when the key would have expired. Entries that carry no cost are not refreshed
// early: those of WriteThrough (which loads nothing) and those written by older versions;
// the first fill after they expire records one. The expiry is written by the setter's clock
// and read by the reader's: clock skew between app servers shifts the refresh window by as
// much. With a two-tier store, an L1 copy reports the expiry of the L2 entry.
//
// Stores live in subpackages: memstore (in-process), redisstore (Redis and Redis Cluster),
// memcachestore (Memcached), and a two-tier store with cross-node invalidation; cachetest
// is the conformance suite they all pass. docsource adapts a docstore collection as Source.
package cache
