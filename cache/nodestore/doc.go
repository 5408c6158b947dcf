// Package nodestore is the cache.Store client of a Strata cache node (package cachenode,
// `strata cachenode`): the shared cache tier of `strata up`, which every app server reaches
// over loopback TCP.
//
// # Design
//
// The protocol (package cachenode/wire) is a compact binary one with length-prefixed frames
// and request ids. A Store keeps a small pool of connections (Config.Conns) and pipelines
// calls on each: a caller appends its frame to the connection's buffer and wakes the
// connection's writer goroutine, which writes everything queued in one system call; one
// reader goroutine per connection hands answers back by id. Concurrent callers therefore share system calls
// instead of queueing for a connection each, which is what keeps a loaded cache tier's
// latency flat.
//
// Every call is bounded by Config.Timeout (and the caller's context), and a connection slot
// whose dial failed answers at once for Config.RedialBackoff: a down or hung node costs a
// request at most the timeout, and usually nothing. Every such failure wraps
// cache.ErrUnavailable, on which the caching strategies fall back to the source. The node
// requires a shared token as the first frame of each connection.
//
// The node applies the cache.Store rules itself (it serves any Store, usually a
// memstore.Store), so SetIfNewer, SetIfNotOlder and Invalidate stay atomic across app
// servers. Fill leases
// are kept by the node; the client holds the token that releases one.
//
// # Compared with the peers
//
// Against Redis, the cache node needs nothing installed and runs the ordering rule without
// a script; against Memcached, it keeps tombstones and leases natively instead of emulating
// them with gets/cas. For more than one machine, or persistence, use Redis (cache/redisstore).
package nodestore
