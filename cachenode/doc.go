// Package cachenode is Strata's embedded shared cache tier: a small network server that holds
// a cache.Store (usually a memstore.Store bounded in bytes) and serves exactly the cache.Store
// contract — Get, SetIfNewer, SetIfNotOlder, Invalidate, Delete, Lease and Release — to the
// app servers over TCP, so that several app server processes share one cache with the
// ordering rule applied atomically in one place. `strata cachenode` runs it; `strata up` starts it as a process of
// its own; package cache/nodestore is its client.
//
// # Protocol
//
// Package cachenode/wire: length-prefixed binary frames with request ids, pipelined (a
// connection answers in order, and the server writes every answer already due in one system
// call). The first frame of a connection must carry the shared token, compared in constant
// time; the node closes a connection that fails it. A binary protocol was chosen over HTTP
// for speed (no header parsing, one small allocation per frame) while staying as simple:
// one fixed body layout per direction.
//
// # Leases
//
// A fill lease taken through the node is held by the node on the caller's behalf and
// named by a token the node hands out; Release with that token frees it if it is still the
// caller's. Leases never released are forgotten once expired (swept as the table grows).
//
// # Compared with the seed
//
// The seed's cache is a dictionary inside each app server: three app servers are three
// caches, and a write through one leaves the others stale. Here one node holds the cache
// for all of them, and the version rule makes a stale set impossible across processes.
package cachenode
