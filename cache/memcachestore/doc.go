// Package memcachestore is a cache.Store over memcached, on gomemcache.
//
// Each entry is one item: a flags byte (negative, tombstone, meta), the version as eight
// big-endian bytes, the expiry and load cost (8 bytes each, for early refresh), then the
// value. SetIfNewer, SetIfNotOlder and Invalidate apply the ordering rule of
// cache.Store with a gets/cas loop: add when the key is absent (so two first writers cannot
// both win), otherwise read the item with its CAS token, decide by version, and
// compare-and-swap; a lost race reads again, up to Config.MaxCASAttempts. Tombstones are
// items like any other, so the rule holds across processes without any server-side code.
//
// A fill lease is an item added (create-if-absent) with a random token; Release reads it
// and, if the token is still its own, compare-and-swaps it to an item that is already
// expired, since memcached's text protocol has no conditional delete. A holder whose lease
// expired and was taken over therefore never frees the successor's.
//
// Any key works: keys that memcached refuses (over 250 bytes, spaces, control characters)
// are replaced by their SHA-256, in a namespace of their own so that they cannot collide
// with a readable key.
//
// memcached has whole-second TTLs: a ttl is rounded up to the next second (leases included).
//
// Every network operation is bounded by Config.Timeout (default 250ms; gomemcache has no
// context support, so the caller's context is checked between operations). Every failure
// to get an answer wraps cache.ErrUnavailable.
//
// Compared with using gomemcache directly: a plain Set lets a slow reader overwrite a newer
// value (the stale set); here every write is ordered by the source's version.
//
// A restart: SetIfNewer is a gets/cas loop of several round trips, so one that spans a server
// restart can finish on the restarted, empty server with a version older than a write whose
// own set failed during the outage. Where strong consistency must survive cache restarts, use
// Redis (one script per set, which a restart runs whole or drops) or the cache node.
package memcachestore
