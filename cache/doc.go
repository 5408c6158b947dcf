// Package cache implements the four caching strategies — cache-aside, read-through,
// write-through and write-behind — over a small Store interface, without the classic bugs:
//
//   - An empty value is a hit, not a miss; a not-found is cached as a negative entry with
//     its own TTL and cleared by a later write.
//   - Misses of one key are collapsed in process (singleflight, with the load detached from
//     the first caller's cancellation) and across processes (a fill lease in the shared store).
//   - No stale sets: entries carry the source's version, and an invalidation leaves a
//     tombstone, so a slow reader can never write an old value back after a writer moved on.
//   - Write-through writes the source first, then sets the cache only if newer; an unknown
//     outcome invalidates instead of guessing, and a failed invalidation is retried durably.
//   - Write-behind acknowledges a write only once it is in a durable queue; the flusher
//     coalesces per key, applies idempotently by version, and a full queue pushes back.
//
// Stores live in subpackages: memstore (in-process), redisstore (Redis and Redis Cluster),
// memcachestore (Memcached), and a two-tier store with cross-node invalidation.
package cache
