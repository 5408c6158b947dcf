// Package replica routes a shard's reads and writes between its primary and its streaming
// replicas, and carries read-your-writes guarantees across requests.
//
// The Router is a synchronous decision core with no I/O: a prober (package pgreplica for
// PostgreSQL) feeds it observations of every node — its role and WAL position, or the error
// that made a probe fail — and callers ask it where a write or a read goes:
//
//   - Writes, and reads that ask for strong consistency, go to the primary. When the primary is
//     down, demoted or fenced off, Primary fails at once with ErrNoPrimary: writes fail fast,
//     they never hang or go to a node that merely believes it is the primary.
//   - Other reads go to a healthy replica within the lag bounds (bytes of WAL and time), chosen
//     by least outstanding reads or round robin. With no usable replica the caller gets
//     ErrNoReplica and reads from the primary.
//   - A read that presents a Token is served only by a node that has replayed the token's
//     position on that shard.
//   - A node whose probe or query fails is banned for a while (doubling on repeated failures,
//     capped) and used again only after a successful probe once the ban is over.
//   - A replica that reports itself primary (promoted) is followed when the configured primary
//     is unusable, and the old primary is fenced off for good: should it come back still
//     believing it is the primary, it is never written to. A promotion while the primary is
//     healthy fences off the newcomer instead: the router never writes to two primaries.
//
// Lag is measured against the prober's own clock, never the servers': a replica that has
// replayed everything the primary wrote has lag 0, however long the primary has been idle.
//
// A Token records, per shard, the WAL position of a session's latest write. Signer encodes it as
// a compact URL-safe string authenticated with HMAC-SHA256, so that it can be handed to HTTP
// clients; a tampered or foreign token is rejected with ErrBadToken.
package replica
