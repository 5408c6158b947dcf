// Package twotier is a cache.Store that puts an in-process L1 (a memstore by default) in
// front of a shared L2 (any cache.Store: Redis, Redis Cluster, Memcached), and keeps the L1s
// of all app servers honest with invalidations over a Bus (RedisBus: Redis pub/sub).
//
// Writes (SetIfNewer and SetIfNotOlder when stored, Invalidate, Delete) go to L2 under its ordering rule, then
// drop the key from this node's L1 and publish the key; every subscribed node drops it from
// its L1. Leases are L2's, shared by all nodes. An L1 copy reports the expiry of the L2
// entry it copies (with the default memstore L1), so that early refresh in package cache
// sees when the shared entry expires, not when the short-lived copy does.
//
// # Staleness bounds
//
//   - Own writes: 0. The writing node's L1 is cleared before the write returns.
//   - Eventual (default), another node's write: a node serves its old L1 copy until the
//     invalidation message arrives (one pub/sub delivery after the writer's Publish), and
//     never longer than L1TTL after the copy entered L1 (default 1s), even if messages are
//     lost. While the subscription is down L1 is not used at all, and every gap in it
//     retires all of L1 (an epoch in the L1 keys), so lost messages cannot leave old copies
//     behind once it is back.
//   - Strong (Config.Consistency, or a read's context from StrongRead): 0. Reads go to L2,
//     which holds every completed write; L1 is skipped.
//
// A slow read that fetched an old value from L2 before a write, and would put it in L1 after
// the write's invalidation arrived, is caught: each key stripe counts invalidations, and a
// fill is refused (or undone) when the count moved during the read.
//
// When Publish fails after the L2 write, the call returns an error wrapping
// cache.ErrUnavailable: the write took effect, but other nodes may serve their old copy for
// up to L1TTL.
//
// Compared with an L1 that only expires (the usual "near cache" with a short TTL), a write
// is seen everywhere within a message delivery instead of a full TTL, and strong reads are
// available per call.
package twotier
