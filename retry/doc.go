// Package retry retries failed calls safely: exponential backoff with full or decorrelated
// jitter, a limit on attempts and on elapsed time, retries only for errors classified as
// retryable, the server's Retry-After honoured, and a stop as soon as the caller's context ends.
//
// Retries are the classic way to turn a brief outage into a long one: when a dependency is
// down, every caller retrying MaxAttempts times multiplies its load. A [Budget] shared by many
// calls (as in Envoy and Linkerd) keeps retries to a fixed share of the requests plus a small
// floor per second, so retries help with scattered failures and stop during an outage.
//
// The package also has a [Bulkhead] (a fixed bound on concurrent calls, with a bounded wait),
// [Timeout], and [AIMD], an adaptive concurrency limit that grows while calls succeed and
// shrinks when the dependency signals overload.
//
// Delays come from a [Backoff] whose random source is a function field, so tests can fix the
// sequence; waiting uses the runtime's timers, which testing/synctest fakes. The budget has
// forms that take the current instant ([Budget.RequestAt], [Budget.TryRetryAt]).
//
// Standard library only.
package retry
