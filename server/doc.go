// Package server is Strata's app tier: an HTTP API over JSON documents in collections,
// backed by a docstore.Store (SQLite, PostgreSQL with replicas, or the sharded store), with
// the caching strategy, consistency and rate limits chosen per collection.
//
// # The API
//
// GET, PUT, PATCH (RFC 7396 merge patch) and DELETE on /v1/{collection}/{id}, listing on
// GET /v1/{collection}?limit=&cursor= and POST /v1/{collection}:batchGet. The document's
// version is its strong ETag; If-Match makes writes conditional (they map onto
// PutIfVersion and DeleteIfVersion, so the check and the write are one atomic step in the
// store), If-None-Match gives 304 on reads and create-only PUTs. Errors are RFC 9457
// problem+json with a stable type (ProblemTypePrefix + a Problem* name). The OpenAPI file
// (OpenAPI, served at /openapi.yaml and /openapi.json) documents every route, header and
// status.
//
// # Idempotency
//
// A write with an Idempotency-Key applies once. The key is claimed with a conditional create
// of a record in the reserved collection IdempotencyCollection of the same store, keyed by
// the principal, the key and the document (a docstore.CompanionID, so the record lives on the
// document's shard): the record is as durable as the documents and shared by every app
// server, and of two concurrent requests with the same key exactly one wins the claim (the
// other gets 409). The response is stored in the record and replayed to retries. Claims of a
// request that never finished expire after IdempotencyLease; records are purged after
// IdempotencyTTL.
//
// # Security
//
// API keys are kept as SHA-256 hashes (see Key for why a fast hash suffices) and compared in
// constant time against every configured hash; scopes grant read or write per collection
// and admin. No key gives 401, a missing scope 403; anonymous access is off unless
// configured. Keys never reach logs or problem bodies. Admin endpoints (metrics, pprof,
// reload) sit under /admin/ for the admin scope, or on their own listener.
//
// # Consistency
//
// Each request runs with a replica.SessionState in its context, built from the
// collection's consistency: strong reads go to the primary, session reads carry the token
// of the Strata-Session header (and the advanced token is returned on every response),
// eventual reads may be served by replicas and caches. The store decides where a read goes;
// the server only states the promise and reports what happened (X-Cache, Age,
// X-Served-By). A dependency that cannot serve a strong request safely gives 503 with
// Retry-After: the server fails closed rather than answer with possibly older data.
//
// # The access path seam
//
// Access is the document access path of a collection: StoreAccess goes straight to the
// store (strategy none); a caching strategy implements the same interface and says in
// Source whether the cache answered. Conditional requests, idempotency, auth and limits sit
// above it and are the same for every strategy.
//
// # Caching strategies
//
// Cached is the access path of the strategies cache-aside, read-through, write-through and
// write-behind over a cache.Cache: keys are collection/id, values the document with its
// version (from the docstore, so a stale set is refused), update time and cached-at time.
// Reads say X-Cache: hit, miss or bypass; Age on a hit is the time since the entry was
// cached (loaded or written through). Writes reach the store first, then the cache (a
// versioned set, or a tombstone); writes of strong collections over a shared cache leave
// their tombstone before they write the store (see below). Lists and batchGet read the
// store. Write-behind answers 202 without an ETag (the version is assigned when the write is
// applied), serves this server's pending writes to its reads, refuses conditional writes and
// PATCH with 400 (conditional-write-unsupported), and is flushed at Shutdown.
//
// With a shared cache, when the cache tier is unreachable, reads of every collection bypass
// it and go to the store: they never fail because the cache is down. Writes of strong and
// session collections fail closed (503, Retry-After): their invalidation could not reach
// the cache, and another app server could serve the old value from it afterwards. The
// problem detail says whether the write was refused before it was applied or reached the
// store unconfirmed; a write refused before it was applied also carries the header
// Strata-Write-Applied: false, so that a client knows it may retry without reading first. Eventual collections keep taking writes and leave the invalidation to
// the cache core's durable pending queue. Write-behind is refused for strong and session
// consistency (a pending write is visible only in the app server that took it).
//
// A keyed write that reached the store but whose invalidation the cache did not take (a
// session collection's; a strong collection's only when the write outlasted its first
// tombstone's margin) answers 503 and is never applied again: its retry (same Idempotency-Key) republishes the
// invalidation and, once the cache takes it, replays the answer the write would have had.
//
// What keeps strong reads linearizable across app servers that share a cache: a write
// leaves a tombstone at the version it will get before it writes the store, and the store
// write is conditional on the version the tombstone was computed from (an If-Match, or the
// current version read first, retried on a conflict), so the store never holds a version the
// cache has not been told about; a write whose tombstone the cache does not take is refused
// before it is applied (503, Strata-Write-Applied: false). Without that order, a reader whose
// cache calls fail reads the store and returns the new version while the write's
// invalidation waits in the writer's queue, and other app servers serve the old entry once
// the cache answers again (a Redis Cluster replica promoted with the entries it had, or the
// moments after an outage before the queue drains). Over a Redis with replicas the tombstone
// must also survive a failover: with app.cache.invalidate_replicas (redisstore.Replicated,
// DurableInvalidator) the write waits until that many replicas of the key's master hold it,
// since a replica promoted after its master died has lost the master's last, asynchronously
// replicated writes; while a master has fewer replicas (after a failover, until the old
// master rejoins) strong writes to its slots get 503. Besides, every value a reader returns
// from the store has first been put in the cache (set if newer) or, when it may not be (the
// store failed during the read), fenced there (a tombstone at its version), so no older
// fill can be served after it, and a key with a queued invalidation applies it before it is
// read through the cache. The known window left needs the cache tier to fail in a
// particular way: a cache server that restarts (losing its tombstones) while a fill's load
// is running could take that fill's old value afterwards (the cache core refuses such a set
// when any of its calls failed since the fill began, which a restart under load causes).
// Session collections keep writing the store first (their promise is per client).
//
// # Compared with the seed
//
// The seed's app server is three functions that pick one caching strategy in code and
// return whatever the cache holds. Here the strategy and the consistency are settings per
// collection, every response says where its data came from, concurrent writers are ordered
// by version (If-Match, or the read-merge-write loop of PATCH), and retries are safe.
package server
