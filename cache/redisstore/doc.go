// Package redisstore is a cache.Store over Redis standalone or Redis Cluster, built on
// rueidis (auto-pipelining: concurrent calls share connections and are written in batches).
//
// # Layout
//
// Each entry is one Redis string under Prefix+"e:"+key: a flags byte (negative, tombstone,
// meta), the version as eight big-endian bytes, the expiry and load cost (8 bytes each, so
// that early refresh needs no PTTL), then the value. Get reads one key without a script
// (a GET, cacheable on the client, or its place in an MGET; see Batched reads). SetIfNewer, SetIfNotOlder and Invalidate are Lua
// scripts (EVALSHA) that read the stored header and apply the ordering rule of cache.Store in
// one step; they touch one key each, so they run unchanged on Redis Cluster, and keys spread
// over all masters by their own hash slot. Versions are compared exactly over the whole
// int64 range (as two 32-bit halves, since Lua numbers are doubles). A fill lease is a
// separate key, Prefix+"l:"+key, taken with SET NX PX and a random token and released by a
// compare-and-delete script, so a holder whose lease expired cannot free a successor's.
//
// # Failures
//
// Every call is bounded by Config.Timeout (default 250ms) on top of the caller's context.
// Transport errors, timeouts, a closed client and transient server states (LOADING,
// CLUSTERDOWN, TRYAGAIN, ...) wrap cache.ErrUnavailable, so that a breaker in front of the
// store can open and strategies fall back to the source. A paused (hung) server costs one
// Timeout per call, never more; the connection is replaced after a few timeouts.
//
// # Batched reads
//
// On a standalone Redis (or Sentinel) without client-side caching, the Gets that callers
// make while earlier ones are under way are gathered and read with one MGET of up to
// Config.MaxGetBatch keys (default 64), at most two such MGETs under way at once. There is
// no worker goroutine and no waiting for a batch to fill: a Get made while the store is idle
// is sent at once, alone; the calls that queue meanwhile go in the next MGET, sent by the
// first of them as soon as a batch returns. Under load this costs Redis one command and each
// end a few system calls per batch instead of per key. Measured with 64 concurrent readers
// on 2 cores (BenchmarkCacheAsideHitRedisParallel, strata against strata-nobatch): a quarter
// to a third less CPU per read for client and server together, under a quarter of the write
// system calls, and about a fifth less time per read. Each call keeps its own deadline and cancellation: a caller whose
// context ends leaves the queue at once, and a batch is bounded by the earliest deadline in
// it. On Redis Cluster keys of different hash slots cannot share a command, so each Get is
// sent by itself there (rueidis still pipelines concurrent ones on each connection).
//
// # Client-side caching
//
// With Config.ClientCacheTTL > 0, Get goes through rueidis's server-assisted client-side
// cache (RESP3 CLIENT TRACKING): a hit is served from process memory, and Redis pushes an
// invalidation to every client that cached a key when the key changes. The staleness bound:
//   - Writes through the same Store are read back at once: after a completed SetIfNewer,
//     Invalidate or Delete, that Store's Get bypasses its client-side cache for the key for
//     one ClientCacheTTL (bound 0 for read-your-writes).
//   - A write by another client: Redis queues the invalidation before that client's write
//     returns, but it reaches this process asynchronously. Once it has been processed
//     (Config.OnInvalidate is called after the copy was dropped), Get returns the new state;
//     until then Get may return the old one. In practice that is one network delivery, but
//     it has no hard bound beyond ClientCacheTTL: a copy is never served longer than
//     ClientCacheTTL after it was fetched, and a broken connection drops all its copies.
//
// Use client-side caching for data that tolerates ClientCacheTTL of staleness across
// processes; keep it off where a cross-process read must see every completed write.
//
// # Compared with a plain client
//
// A go-redis GET per hit costs a network round trip on a pooled connection per call;
// rueidis pipelines concurrent calls on a few connections, and client-side caching removes
// the round trip for hot keys altogether while still being invalidated by the server. The
// versioned scripts cost one EVALSHA per write; reads stay a plain GET, gathered into MGETs
// under concurrency.
package redisstore
