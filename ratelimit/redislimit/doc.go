// Package redislimit keeps rate limits in Redis or Redis Cluster, so that
// every process of a service enforces one limit per key. Its limiters
// implement ratelimit.Limiter and return ratelimit.Decision, so the HTTP
// middleware (ratelimit/httplimit) works with them unchanged.
//
// # Algorithms
//
// Each algorithm of package ratelimit has a Redis form with the same
// decisions:
//
//   - [GCRA] (New): the token bucket, one number per key.
//   - [SlidingLog]: the exact sliding window, a list of at most Limit
//     instants per key.
//   - [SlidingWindow]: the sliding-window counter, a hash of two counts
//     and the current window's start per key.
//   - [FixedWindow]: a hash of a count and the window's start per key.
//   - [Concurrency]: units in flight per key, a sorted set of at most Max
//     members, each reclaimed after [ConcurrencyConfig.HoldTimeout];
//     Release gives them back.
//
// Every decision is one atomic Lua script call that reads the server's
// clock with TIME (Redis 7 replicates a script's effects, so TIME is
// allowed), never the client's: processes whose clocks disagree still
// share one limit. Every key written has an expiry, set to the instant its
// state is that of a key that does not exist (a full bucket, a window
// that has ended, an empty log), so expiry never changes a decision and
// idle keys cost no memory. A denial and a query (cost 0) write nothing.
// A decision reads and writes exactly one key, so the limiters work on
// Redis Cluster with any key; each algorithm has its own default prefix
// ([Config.Prefix]), so limiters of different algorithms never read each
// other's keys.
//
// GCRA computes in nanoseconds modulo 2^22 seconds (see script.go for the
// encoding that keeps the arithmetic exact in Lua's doubles; it limits
// burst × interval to 2^50 ns, about 13 days). The other scripts compute in
// microseconds since the epoch, the resolution of TIME, exact in a double;
// their windows are rounded up to a whole microsecond.
//
// # Batching
//
// A round trip costs microseconds of system calls on both ends, and a script
// call a few more on the server before its first key; the per-key work is a
// few redis.calls (two for GCRA). Calls to AllowN are therefore queued and
// taken by a few workers ([Config.Workers]), each sending whatever has
// gathered (up to [Config.MaxBatch]) as one script call per hash slot,
// pipelined by rueidis: under load a batch holds tens of decisions; when
// idle it holds one and adds no delay. Decisions in a batch are applied in
// queue order and each touches one key, so the result is the same as one
// call each; on Redis Cluster keys of different slots go to different script
// calls.
//
// # Hybrid leases
//
// For rates too high for a round trip per event, [Hybrid] takes up to
// [HybridConfig.Batch] tokens at once from the same GCRA state and spends
// them in memory. Its overshoot across N processes is bounded (see
// [Hybrid]): at most min(N×Batch, rate×LeaseTTL) events beyond the GCRA
// limit in any interval; unspent tokens expire with their lease.
//
// # Redis down or slow
//
// Every decision is bounded by [Config.Timeout] (50ms by default): a queued
// request that no worker could send in time fails, and a batch's deadline
// is its oldest request's. Failures go through a breaker
// (package breaker, [Config.Breaker]): after a few consecutive failures it
// opens and decisions are made at once, without asking Redis, by the
// configured [FailMode] — the local in-memory limiter of the same
// algorithm (default), allow, deny, or an error wrapping [ErrUnavailable]
// — until probe calls find Redis back. [Concurrency] remembers which
// units the fail mode granted and gives them back there.
//
// # Compared with go-redis/redis_rate
//
// redis_rate runs a GCRA script per call through go-redis: one round trip
// and one script invocation per decision, a float64 clock in seconds, and
// no answer to a dead Redis besides an error. Here concurrent decisions
// share script calls and round trips, time is integer nanoseconds, and
// failures are handled through a breaker and a fail mode.
// BenchmarkRateLimitRedisParallel in the benchmarks module compares them.
package redislimit
