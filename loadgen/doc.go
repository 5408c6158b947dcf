// Package loadgen drives load against a Strata app server or load balancer and reports
// like a benchmark tool should: it is the library behind `strata bench`.
//
// # The load
//
// Keys are drawn from a Zipf distribution over K documents ("k0" the most popular), with
// any exponent s >= 0 (Zipf; math/rand/v2's generator needs s > 1, but web workloads sit
// near s = 1). Each request is a GET or, with probability Config.Writes, a PUT of a JSON
// document of Config.DocSize bytes. Config.Prepopulate writes every key first.
//
// Two loops:
//   - Closed (Config.Rate = 0): Concurrency workers each send a request when their last
//     one returned. This measures the server's capacity, but a stalled server also stalls
//     the load, so the stall is one slow sample per worker: coordinated omission.
//   - Open (Config.Rate > 0): request i is scheduled at start + i/Rate whatever happened
//     before, and its latency is measured from that scheduled time. Up to Concurrency
//     requests are in flight; the schedule does not wait for them, so a request that could
//     not start on time because the server held every worker is charged for its wait. A
//     one-second stall at 100 req/s thus shows up as about a hundred slow requests, not
//     one. Requests scheduled but never sent before the end are counted as Dropped.
//
// # Measurement
//
// Latencies go into HdrHistogram histograms (github.com/HdrHistogram/hdrhistogram-go,
// microseconds from 1 µs to an hour, three significant digits): memory is fixed per
// phase whatever the length of the run, and percentiles are exact to the histogram's
// resolution. Responses are classed by status (2xx/3xx, 404, 429, other 4xx, 5xx) and by
// the X-Cache header the app server sets (hit, miss, bypass, stale), so the report shows
// the cache hit ratio as the server saw it. Every request has a timeout; transport errors
// and timeouts are counted and their latency recorded.
//
// # Chaos and phases
//
// A chaos schedule (ParseChaos, "10s:kill-app:2,20s:stop-cache") is carried out by a
// ChaosRunner at the given offsets; HTTPChaos posts to `strata up`'s admin API and
// documents the contract. The report is split into phases at the events, each with its
// own counts and percentiles, so the effect of each fault (and the recovery) is visible
// next to the baseline.
//
// # Compared with the usual tools
//
// wrk and hey run closed loops and so hide stalls (wrk2 fixed that for a fixed rate);
// none of them knows where a response came from or can inject a fault mid-run. loadgen
// does both loops, reads X-Cache, splits by chaos phase, and bounds everything: workers,
// connections, request time, and memory (histograms, never raw samples).
package loadgen
