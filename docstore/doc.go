// Package docstore stores JSON documents on sharded databases: the document store of the
// scalable web architecture, below the cache tier and above the engines.
//
// A Doc is a JSON object named by a collection and an id, with a version. Every backend
// (SQLite in docstore/sqlite, PostgreSQL in docstore/postgres) and the sharded store
// implement one small interface, Store: Get, GetMany, Put, PutIfVersion (optimistic
// concurrency; version 0 means "must not exist"), Delete, DeleteIfVersion and List (by id,
// with an opaque cursor). The shared conformance suite in docstore/docstoretest holds them
// to the same behaviour.
//
// # Versions never go backwards
//
// Every write of an id, delete included, sets its version to the previous one plus one.
// Delete keeps a tombstone row (deleted flag, version+1) instead of removing the row: Get
// on a tombstone is ErrNotFound, Delete returns the tombstone's version, and a later Put
// continues from it. So (collection, id, version) names one state of a document forever,
// and a cache can drop any value older than one it has seen: the stale-set race of naive
// cache-aside has a cheap, exact cure. Tombstones are kept; resharding moves them with
// their partitions.
//
// # Errors and validation
//
// Errors wrap ErrNotFound, ErrVersionConflict (a *VersionConflictError carries the current
// version), ErrUnavailable (connection refused or lost, timeouts, busy database), ErrInvalid
// and ErrClosed. Collection names are [a-z][a-z0-9_-]{0,62}; ids are 1 to 256 bytes of
// printable UTF-8, stored verbatim through parameterised SQL (an id that looks like SQL is
// just an id); bodies are JSON objects within a size limit (1 MiB by default).
//
// # Sharding
//
// The seed shards with hash(user_id) % num_shards, which moves almost every key when a
// shard is added and differs between processes. Here a document's partition is the jump
// hash of xxHash64(collection + "/" + id) over a fixed number of virtual partitions
// (shard.DefaultPartitions by default), and a versioned placement map (package shard) says which shard owns
// each partition. Every backend row records its partition, so a partition can be copied,
// compared and deleted with an indexed scan.
//
// Sharded composes one Backend per shard. Point operations go to the owning shard; GetMany
// groups ids by owner and asks the owners in parallel; List asks all shards in parallel
// and merges their pages in id order. The cursor is the last id returned (with a checksum
// binding it to its collection), so a listing under concurrent writes returns every
// document that lives throughout it exactly once, in order.
//
// # Online resharding
//
// Reshard adds or removes shards by moving only the partitions whose owner must change
// (shard.PlanMoves), one at a time: copy the partition's rows with their versions, catch up
// on rows whose version grew on the source meanwhile, then fence the partition (its
// requests wait, for at most FenceTimeout), copy the last writes, compare digests of keys,
// versions and tombstones on both sides, publish the new map and lift the fence. Old copies
// stay until Cleanup, so a resharding is reversible until then: resharding back copies only
// what changed. Requests never fail because of a move; the test runs writers, readers and
// listers through a resharding from two shards to three and back and checks that no
// acknowledged write is lost or reverted.
//
// The fences live in the process: the Sharded store that reshards must be the only writer to
// its shards. The map is published through ShardedConfig.OnSwitch for persisting.
//
// # Read replicas
//
// Each shard is a primary plus optional read endpoints. The PostgreSQL backend sends its
// read path through a small interface (postgres.Reader) that a replica router can
// implement; resharding always reads from the primary.
package docstore
