// Package ratelimit limits how often each key (a client, an API key, a
// route) may act, in memory, with the standard library only.
//
// # Algorithms
//
// Every limiter implements [Limiter]: AllowN(ctx, key, n) returns a
// [Decision] (allowed or not, remaining, RetryAfter, ResetAfter), and each
// in-memory limiter also has AllowNAt(now, key, n), which decides at a given
// instant. The plain forms read the monotonic clock (time.Since on a
// reference taken at construction), so wall-clock steps never move a limit.
// Where reading the clock costs more than the decision (it does on many
// virtual machines), a [CoarseClock] shared by the limiters replaces it with
// a load from memory, at the price of up to one tick of lag.
//
//   - [GCRA]: a token bucket (rate plus burst) kept as one int64 per key,
//     the theoretical arrival time, updated by compare-and-swap without a
//     lock. At most rate*T + burst events pass in any interval of length T.
//     The default choice.
//   - [SlidingLog]: exact; keeps one instant per granted event of the last
//     window, at most Limit per key.
//   - [SlidingWindow]: the sliding-window counter; two counters per key and
//     a weighted estimate of the last window.
//   - [FixedWindow]: one counter per key; cheapest, but up to 2*Limit events
//     can pass around a window edge.
//   - [Concurrency]: at most Max units in flight per key, given back with
//     Release.
//
// A cost n of 0 asks without counting; a negative cost returns
// [ErrInvalidCost] and a cost larger than the burst or limit returns
// [ErrCostExceedsLimit], because no wait would ever let it through. A
// denial is not an error: [Decision.Err] turns it into [ErrLimited] for
// callers who want one. Each algorithm also has a form whose state lives in
// Redis or Redis Cluster (subpackage redislimit), shared by every process,
// with the same decisions through the same interface.
//
// # Memory for millions of keys
//
// Keys live in 256 shards. Each shard publishes an open-addressing table
// through an atomic pointer, so a lookup takes no lock: one maphash of the
// key (no allocation), an atomic load, a short probe. Only the insertion of
// a new key takes the shard's mutex. When a table fills up, the inserting
// caller rebuilds it with the keys that are not idle and publishes the new
// one: memory follows the number of active keys, with no goroutine to own.
// The limiters whose state is one word (GCRA, Concurrency) keep it in the
// table itself, beside the key's hash and key: 32 bytes a slot, no per-key
// allocation besides the key's bytes, and a decision touches one line of the
// table. The window limiters keep a pointer to a per-key entry with its
// mutex.
//
// A key is idle when its state is the same as that of a key never seen (for
// GCRA, a full bucket: a theoretical arrival time in the past), so evicting
// it changes no decision; a one-second grace keeps that exact for callers
// whose instants lag slightly behind. A caller that raced with a rebuild
// finds its entry marked moved (or dead) and looks again.
//
// # Compared with the usual approach
//
// The common Go pattern keeps one golang.org/x/time/rate.Limiter per key in
// a sync.Map: a mutex and two float64 per key, a full time.Now (wall and
// monotonic) per decision, and no eviction, so memory grows with every key
// ever seen. GCRA here holds one atomic int64 per key, reads only the
// monotonic clock, never locks on the decision path and evicts idle keys.
package ratelimit
