// Package redislimit keeps rate limits in Redis or Redis Cluster, so that
// every process of a service enforces one limit per key. Its limiters
// implement ratelimit.Limiter and return ratelimit.Decision, so the HTTP
// middleware (ratelimit/httplimit) works with them unchanged.
//
// # GCRA on the server's clock
//
// [GCRA] is the token bucket of package ratelimit (Generic Cell Rate
// Algorithm: one theoretical arrival time per key) run by a Lua script on
// the Redis server. Every decision is one atomic script call that reads the
// server's clock with TIME (Redis 7 replicates a script's effects, so TIME
// is allowed), never the client's: processes whose clocks disagree still
// share one limit. Every key written gets PX set to the instant its bucket
// is full again, which is also the state of a key that does not exist, so
// expiry never changes a decision and idle keys cost no memory. See
// script.go for the encoding that keeps nanosecond arithmetic exact in
// Lua's doubles; it limits burst × interval to 2^50 ns (about 13 days).
//
// # Batching
//
// A round trip costs microseconds of system calls on both ends, and a
// script call a few more on the server before its first key; the per-key
// work is two redis.calls. Calls to AllowN are therefore queued and taken
// by a few workers ([Config.Workers]), each sending whatever has gathered
// (up to [Config.MaxBatch]) as one script call per hash slot, pipelined by
// rueidis: under load a batch holds tens of decisions; when idle it holds
// one and adds no delay. Decisions in a batch are applied in queue order
// and each touches one key, so the result is the same as one call each; on
// Redis Cluster keys of different slots go to different script calls.
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
// configured [FailMode] — the local in-memory limiter (default), allow,
// deny, or an error wrapping [ErrUnavailable] — until probe calls find
// Redis back.
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
