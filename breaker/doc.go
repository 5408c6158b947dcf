// Package breaker is a circuit breaker: it stops calling a dependency that keeps failing, lets a
// few probe calls through after a pause, and resumes normal traffic once the probes succeed.
//
// # States
//
// A [Breaker] is closed (calls pass), open (calls are refused at once with [ErrOpen]) or
// half-open (at most [Config.HalfOpenProbes] probe calls are in flight at any moment; any further
// call is refused with [ErrTooManyProbes]). In half-open, one probe failure re-opens the breaker
// and [Config.HalfOpenSuccesses] probe successes close it. The time spent open can grow
// exponentially across repeated trips ([Config.OpenBackoff]), up to [Config.MaxOpenDuration].
//
// Three trip policies can be combined; the breaker trips when any of them says so:
//   - consecutive failures ([Config.ConsecutiveFailures], the default policy);
//   - failure ratio over a rolling window ([Config.FailureRatio]);
//   - slow-call ratio over the same window ([Config.SlowCallRatio], [Config.SlowCallDuration]).
//
// The window is count-based (the last [Config.WindowCalls] calls) or time-based (the last
// [Config.WindowDuration], split into [Config.WindowBuckets] buckets), and a ratio policy cannot
// trip before [Config.MinCalls] calls have been recorded in it.
//
// # Generations
//
// Every state change starts a new generation. A call records the generation in which it was
// admitted, and its result is ignored if the breaker has changed state since: a slow success
// admitted while closed cannot close a breaker that has since opened, and a late failure cannot
// re-open one that has since closed.
//
// # Two ways to call
//
// [Breaker.Do] and [Execute] wrap a function. [Breaker.Allow] is the two-step form for callers
// that cannot wrap one (a load balancer that learns the result in another callback, a pipelined
// Redis batch): it returns a [Token] whose [Token.Done] reports the result. A panic in a wrapped
// function counts as a failure and keeps unwinding. How an error is judged is a function field,
// [Config.Classify]; by default context.Canceled (the caller gave up) is neither success nor
// failure.
//
// # Time
//
// Every decision has a form that takes the current instant ([Breaker.AllowAt], [Token.DoneAt]);
// the plain forms read time.Now, which carries the monotonic clock, so wall-clock steps do not
// shorten or stretch an open period. Tests drive the breaker with named instants.
//
// # Speed
//
// The closed-state path with the consecutive-failures policy takes no lock and does not read the
// clock: admission is one atomic load of a word holding state, generation and the failure
// streak, and a success only writes that word when the streak is non-zero. Counters for metrics
// are striped across cache lines so that parallel callers do not contend. [Breaker.Do] and
// [Breaker.Allow] do not allocate. Ratio policies keep their window under a mutex.
//
// # Compared with the seed and with sony/gobreaker
//
// The seed's Python breaker let any number of calls through when half-open, did not reset its
// success count on entering half-open, did not re-open at once on a half-open failure, and
// measured the open period on the wall clock; each of these has a test named TestSeedFlaw... in
// this package, and TestStaleResultsIgnored covers results that arrive after a state change.
// sony/gobreaker takes a mutex and reads the clock on every call, and has no slow-call policy
// and no backoff of the open period across repeated trips. BenchmarkBreakerSuccess and
// BenchmarkBreakerSuccessParallel in the benchmarks module measure the difference.
package breaker
