// Package lb is Strata's load balancer: an HTTP/1.1 reverse proxy that
// spreads requests over a set of backends, routes around failures, and is as
// fast as nginx on one core.
//
// # The proxy path
//
// The proxy does not use net/http on the request path. Each client
// connection is served by one goroutine that reads request heads straight
// from a bufio.Reader and parses them in place: header names and values are
// slices of the read buffer, so a request costs no allocation for its
// headers. The head sent to the backend is assembled into a per-connection
// buffer (hop-by-hop fields and fields named in Connection removed;
// X-Forwarded-For, Forwarded, X-Forwarded-Proto and X-Request-Id added),
// written with the body to a pooled keep-alive connection in one write, and
// the response head is parsed and rewritten the same way. Responses are
// flushed when no pipelined request is waiting. Framing follows RFC 9112:
// Content-Length, chunked (decoded and re-encoded, so chunk extensions and
// trailers are dropped), close-delimited bodies, HEAD, 204 and 304, HTTP/1.0
// keep-alive, and Expect: 100-continue (answered by the proxy itself before
// it reads the body). A request with both Content-Length and
// Transfer-Encoding, several differing lengths, obsolete line folding or a
// transfer coding other than chunked is refused rather than guessed at: those
// are the request-smuggling vectors. Upgrade (WebSocket) and HTTP/2 are not
// proxied.
//
// # Choosing a backend
//
// A Selector chooses among the backends that are healthy, ready, not drained
// and not ejected: power of two choices over peak-EWMA latency times
// outstanding requests (P2CEWMA, the default), RoundRobin,
// WeightedRoundRobin (nginx's smooth variant), LeastOutstanding,
// ConsistentHash on a header, cookie or the client address with bounded loads,
// and Random. When none is eligible, the health and ejection filters are
// dropped (panic routing) rather than failing every request; drained
// backends stay out.
//
// # Failures
//
// Active checks (Health, a synchronous state machine with rise and fall
// thresholds) request HealthConfig.Path; a 503 answer drains the backend at
// once: it takes no new requests and its in-flight ones finish. Passive
// outlier detection (Ejector, also synchronous, with injected time) ejects a
// backend after consecutive 5xx answers, connection errors or timeouts, for a
// time that doubles on each repeated ejection, never ejecting more than
// OutlierConfig.MaxEjectedPercent of the backends. A 503 with Retry-After is
// not counted either way: it says a dependency the backends share is down,
// and ejecting the backend that said so would only send the same answers to
// the others and eject them in turn. A request is retried, on
// a backend not yet tried, only if its method is safe (GET, HEAD, OPTIONS,
// TRACE) or it carries an Idempotency-Key (PUT and DELETE are idempotent, but
// a replay of one the first backend applied before failing would land after
// other clients' later writes), only if nothing of the response has reached the client,
// only if its body was small enough to buffer (RetryConfig.MaxBodyBytes), and
// only while the shared retry.Budget allows. A POST without a key is never
// sent twice; it goes to another backend only when none of it was sent: the
// dial failed, or every idle keep-alive connection to its backend was found
// closed by a non-blocking peek at the socket before the request was
// written to it (so a backend that just died costs no 502). A request that
// may be replayed skips that system call on a connection that went idle less
// than a millisecond ago, as it does under load; should the connection turn
// out closed, the request is tried again once without counting against the
// retry budget or the backend, and every connection that went idle before
// then is checked. A backend that
// answers before reading the whole request and closes the connection (a 413
// to a body too large) has its answer passed on even though writing the
// rest of the body failed; if the client's body was not read in full, its
// connection is closed after the answer. A client that stops reading is
// given up after Config.ClientWriteTimeout: its connection and the backend
// connection of the unfinished response are closed.
//
// # Hedging
//
// With HedgeConfig set, a GET or HEAD without a body that has not answered
// after a delay (fixed, or a percentile of recent response times within a
// floor and a cap) is sent to a second backend as well; the first response
// head wins and the other try's connection is closed. A hedge budget (a
// retry.Budget of its own, 10% by default) keeps a general slowdown from
// doubling the load. Until the delay passes, a hedgeable request costs no
// goroutine: the first try waits with a read deadline at the hedge delay.
//
// # Operations
//
// Backends change at run time through SetBackends (what SIGHUP in
// `strata lb` calls), AddBackend, RemoveBackend and Drain, or the
// authenticated admin API (AdminHandler), without failing in-flight
// requests: a removed backend finishes what it has. Shutdown stops accepting,
// closes idle connections and waits for in-flight requests. Metrics are
// exported on a Prometheus registry passed by the caller; the proxy path only
// increments atomic counters.
//
// # Compared with nginx and a plain httputil.ReverseProxy
//
// On a two-core machine with each proxy pinned to one core, an
// httputil.ReverseProxy reaches about half of nginx's requests per second,
// largely from allocating a Request, a Header map and a Response per request
// and copying headers between them. This proxy allocates nothing per
// request on the keep-alive path and does the work nginx does, so it matches
// or exceeds nginx in the comparison script (benchmarks/lb/run.sh), while
// choosing backends by latency and load rather than in turn.
package lb
