package redislimit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"github.com/strata-project/strata/breaker"
	"github.com/strata-project/strata/ratelimit"
)

// Sentinel errors. Errors returned by this package wrap one of them (or one
// of package ratelimit's), so callers test with errors.Is.
var (
	// ErrConfig is wrapped by New and NewHybrid when the configuration is
	// unusable.
	ErrConfig = errors.New("redislimit: invalid config")
	// ErrUnavailable is wrapped when Redis could not decide (an error, a
	// timeout, an open breaker) and FailMode is FailError.
	ErrUnavailable = errors.New("redislimit: redis unavailable")
	// ErrClosed is returned by calls on a closed limiter.
	ErrClosed = errors.New("redislimit: closed")
)

// FailMode says what a decision is when Redis cannot make it.
type FailMode uint8

const (
	// FailLocal decides with the local limiter (Config.Local): each process
	// then enforces its own limit. The default.
	FailLocal FailMode = iota
	// FailOpen allows every request.
	FailOpen
	// FailClosed denies every request, with RetryAfter set to
	// Config.FailRetryAfter.
	FailClosed
	// FailError returns an error wrapping ErrUnavailable (the HTTP
	// middleware answers it with its OnError handler, 503 by default).
	FailError
)

// String returns the mode's name.
func (m FailMode) String() string {
	switch m {
	case FailLocal:
		return "local"
	case FailOpen:
		return "open"
	case FailClosed:
		return "closed"
	case FailError:
		return "error"
	}
	return "FailMode(" + strconv.Itoa(int(m)) + ")"
}

// Config configures a limiter over Redis: the connection, the batching and
// what decides when Redis cannot. One of Addrs or Client is required, and
// Rate for GCRA (New); every other zero value is a usable default. The
// window and concurrency limiters take their quota from a second argument
// and ignore Rate and Burst.
type Config struct {
	// Addrs are the Redis addresses (host:port). One address of a standalone
	// server gives a standalone client; any node of a Redis Cluster gives a
	// cluster client. The limiter owns the client it builds and closes it in
	// Close. Ignored when Client is set.
	Addrs []string
	// Client is a rueidis client to use instead of building one from Addrs.
	// The limiter does not close it. Default nil: build one from Addrs.
	Client rueidis.Client
	// Prefix is put before every key, so that several limiters can share one
	// Redis. Default: one per algorithm, so that limiters of different
	// algorithms never read each other's keys: "strata:rl:" (GCRA),
	// "strata:rlf:" (FixedWindow), "strata:rls:" (SlidingWindow),
	// "strata:rll:" (SlidingLog), "strata:rlc:" (Concurrency).
	Prefix string
	// Rate is GCRA's sustained rate. Required by New; ignored by the other
	// constructors.
	Rate ratelimit.Rate
	// Burst is GCRA's bucket size, the most events granted at once. Default
	// (0): Rate.Limit. Burst times the emission interval (the time an empty
	// bucket takes to fill) must stay below 2^50 ns, about 13 days.
	Burst int
	// Timeout bounds every decision, from the call to the answer, on top of
	// the caller's context. Default 50ms.
	Timeout time.Duration
	// MaxBatch is the most decisions sent in one script call. Concurrent
	// calls are queued and each free worker takes what has gathered, so
	// batches grow with the load and add no delay when idle. Default 128.
	MaxBatch int
	// Workers is the number of batches in flight at once. Default 2.
	Workers int
	// MaxFlushDelay is rueidis's flush delay for a client built from Addrs
	// (how long it gathers commands before writing them). Negative: off.
	// Default 20µs.
	MaxFlushDelay time.Duration
	// FailMode is what decides when Redis cannot. Default FailLocal.
	FailMode FailMode
	// Local is the limiter of FailLocal. Default nil: the in-memory limiter
	// of package ratelimit with the same algorithm and quota (one limit per
	// process). For NewConcurrency, a Local that is set must also have a
	// Release(key string, n int) method.
	Local ratelimit.Limiter
	// FailRetryAfter is the RetryAfter of FailClosed denials. Default 1s.
	FailRetryAfter time.Duration
	// Breaker guards Redis: while it is open, decisions go straight to the
	// FailMode without asking Redis. Each decision is one call of the
	// breaker (Allow, then Token.Done with the outcome). Default nil: a
	// breaker that opens after 5 consecutive failures for 1s.
	Breaker *breaker.Breaker
	// OnError, when set, is called with every error Redis returned (not the
	// refusals of an open breaker). It must be fast and safe for concurrent
	// use. Default nil.
	OnError func(err error)
}

// GCRA is a keyed token bucket (GCRA) whose state lives in Redis or Redis
// Cluster, so that every process sharing the Redis enforces one limit. It
// implements ratelimit.Limiter. Every decision is made by a Lua script on
// the Redis server's clock. GCRA is safe for concurrent use.
type GCRA struct {
	c        *core
	interval int64
	tau      int64
	burst    int
	argT     string
	argTau   string
}

var _ ratelimit.Limiter = (*GCRA)(nil)

// maxTau bounds burst*interval so that the scripts' doubles stay exact.
const maxTau = 1 << 50

// New connects to Redis and returns a GCRA limiter with its workers
// started; Close stops them. It fails with an error wrapping ErrConfig for an
// unusable configuration, and ErrUnavailable when no address answers.
func New(cfg Config) (*GCRA, error) {
	t := int64(cfg.Rate.Interval())
	if t <= 0 {
		return nil, fmt.Errorf("%w: rate %v must be positive", ErrConfig, cfg.Rate)
	}
	burst := cfg.Burst
	if burst == 0 {
		burst = cfg.Rate.Limit
	}
	if burst < 0 || int64(burst) >= maxTau/t {
		return nil, fmt.Errorf("%w: burst %d times interval %v must be below 2^50ns", ErrConfig, burst, time.Duration(t))
	}
	g := &GCRA{interval: t, tau: int64(burst) * t, burst: burst}
	g.argT = strconv.FormatInt(g.interval, 10)
	g.argTau = strconv.FormatInt(g.tau, 10)
	alg := algorithm{
		script: gcraScript,
		sha:    gcraSHA,
		prefix: "strata:rl:",
		args:   []string{g.argT, g.argTau},
		stride: 1,
		decide: func(res *reply, n int) ratelimit.Decision { return g.decision(res[0], n) },
	}
	c, err := newCore(cfg, burst, alg, func() (ratelimit.Limiter, error) {
		return ratelimit.NewGCRA(ratelimit.GCRAConfig{Rate: cfg.Rate, Burst: burst})
	})
	if err != nil {
		return nil, err
	}
	g.c = c
	return g, nil
}

// Close stops the workers (calls in flight return ErrClosed) and closes the
// client if the limiter built it. Close may be called more than once.
func (g *GCRA) Close() error {
	g.c.close()
	return nil
}

// Client returns the rueidis client the limiter uses.
func (g *GCRA) Client() rueidis.Client { return g.c.client }

// Key returns the Redis key that holds key's state.
func (g *GCRA) Key(key string) string { return g.c.prefix + key }

// Policy returns Burst events per Burst*interval, as ratelimit.GCRA does.
func (g *GCRA) Policy() ratelimit.Policy {
	return ratelimit.Policy{Quota: g.burst, Window: time.Duration(g.tau)}
}

// Breaker returns the breaker that guards Redis.
func (g *GCRA) Breaker() *breaker.Breaker { return g.c.br }

// AllowN decides n events for key on Redis: one script call, batched with
// concurrent calls, answered within Timeout. When Redis fails, times out or
// the breaker is open, the decision is the FailMode's. A cost of 0 asks
// without counting.
func (g *GCRA) AllowN(ctx context.Context, key string, n int) (ratelimit.Decision, error) {
	d, _, err := g.c.allowN(ctx, key, n, "")
	return d, err
}

// decision turns a script reply into a Decision.
func (g *GCRA) decision(res int64, n int) ratelimit.Decision {
	if res >= 0 {
		return ratelimit.Decision{
			Allowed:    true,
			Limit:      g.burst,
			Remaining:  int((g.tau - res) / g.interval),
			ResetAfter: time.Duration(res),
		}
	}
	d := -res - 1
	return ratelimit.Decision{
		Limit:      g.burst,
		Remaining:  int(max(g.tau-d, 0) / g.interval),
		RetryAfter: time.Duration(max(d+int64(n)*g.interval-g.tau, 1)),
		ResetAfter: time.Duration(d),
	}
}
