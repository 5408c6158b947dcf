package redislimit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
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

// Config configures a GCRA limiter over Redis. Rate and one of Addrs or
// Client are required; every other zero value is a usable default.
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
	// Redis. Default "strata:rl:".
	Prefix string
	// Rate is the sustained rate. Required.
	Rate ratelimit.Rate
	// Burst is the bucket size, the most events granted at once. Default
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
	// Local is the limiter of FailLocal. Default nil: an in-memory
	// ratelimit.GCRA with the same Rate and Burst (one limit per process).
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
	client   rueidis.Client
	own      bool
	cluster  bool
	prefix   string
	interval int64
	tau      int64
	burst    int
	timeout  time.Duration
	maxBatch int
	mode     FailMode
	local    ratelimit.Limiter
	failWait time.Duration
	br       *breaker.Breaker
	onError  func(error)
	argT     string
	argTau   string

	queue chan *request
	stop  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once
	pool  sync.Pool
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
	if cfg.FailMode > FailError {
		return nil, fmt.Errorf("%w: %v", ErrConfig, cfg.FailMode)
	}
	g := &GCRA{
		client:   cfg.Client,
		prefix:   cfg.Prefix,
		interval: t,
		tau:      int64(burst) * t,
		burst:    burst,
		timeout:  cfg.Timeout,
		maxBatch: cfg.MaxBatch,
		mode:     cfg.FailMode,
		local:    cfg.Local,
		failWait: cfg.FailRetryAfter,
		br:       cfg.Breaker,
		onError:  cfg.OnError,
		stop:     make(chan struct{}),
	}
	g.argT = strconv.FormatInt(g.interval, 10)
	g.argTau = strconv.FormatInt(g.tau, 10)
	g.pool.New = func() any { return &request{done: make(chan struct{}, 1)} }
	if g.prefix == "" {
		g.prefix = "strata:rl:"
	}
	if g.timeout <= 0 {
		g.timeout = 50 * time.Millisecond
	}
	if g.maxBatch <= 0 {
		g.maxBatch = 128
	}
	if g.failWait <= 0 {
		g.failWait = time.Second
	}
	if g.local == nil && g.mode == FailLocal {
		l, err := ratelimit.NewGCRA(ratelimit.GCRAConfig{Rate: cfg.Rate, Burst: burst})
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrConfig, err)
		}
		g.local = l
	}
	if g.br == nil {
		b, err := breaker.New(breaker.Config{Name: "redislimit", ConsecutiveFailures: 5, OpenDuration: time.Second})
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrConfig, err)
		}
		g.br = b
	}
	if g.client == nil {
		if len(cfg.Addrs) == 0 {
			return nil, fmt.Errorf("%w: no Addrs and no Client", ErrConfig)
		}
		opt := rueidis.ClientOption{
			InitAddress:  cfg.Addrs,
			DisableCache: true,
			// A hung connection is detected within a few timeouts; calls
			// themselves return at Timeout.
			ConnWriteTimeout: max(4*g.timeout, time.Second),
		}
		opt.Dialer.Timeout = max(4*g.timeout, time.Second)
		switch {
		case cfg.MaxFlushDelay > 0:
			opt.MaxFlushDelay = cfg.MaxFlushDelay
		case cfg.MaxFlushDelay == 0:
			opt.MaxFlushDelay = 20 * time.Microsecond
		}
		c, err := rueidis.NewClient(opt)
		if err != nil {
			return nil, fmt.Errorf("%w: connect: %w", ErrUnavailable, err)
		}
		g.client, g.own = c, true
	}
	g.cluster = g.client.Mode() == rueidis.ClientModeCluster
	workers := cfg.Workers
	if workers <= 0 {
		workers = 2
	}
	g.queue = make(chan *request, 64*g.maxBatch)
	g.wg.Add(workers)
	for range workers {
		go g.work()
	}
	return g, nil
}

// Close stops the workers (calls in flight return ErrClosed) and closes the
// client if the limiter built it. Close may be called more than once.
func (g *GCRA) Close() error {
	g.once.Do(func() {
		close(g.stop)
		g.wg.Wait()
		if g.own {
			g.client.Close()
		}
	})
	return nil
}

// Client returns the rueidis client the limiter uses.
func (g *GCRA) Client() rueidis.Client { return g.client }

// Key returns the Redis key that holds key's state.
func (g *GCRA) Key(key string) string { return g.prefix + key }

// Policy returns Burst events per Burst*interval, as ratelimit.GCRA does.
func (g *GCRA) Policy() ratelimit.Policy {
	return ratelimit.Policy{Quota: g.burst, Window: time.Duration(g.tau)}
}

// Breaker returns the breaker that guards Redis.
func (g *GCRA) Breaker() *breaker.Breaker { return g.br }

// request is one queued decision. The worker that takes it writes res or
// err and signals done (buffered, so it never blocks).
type request struct {
	key      string
	n        int
	deadline time.Time
	res      int64
	err      error
	done     chan struct{}
}

// AllowN decides n events for key on Redis: one script call, batched with
// concurrent calls, answered within Timeout. When Redis fails, times out or
// the breaker is open, the decision is the FailMode's. A cost of 0 asks
// without counting.
func (g *GCRA) AllowN(ctx context.Context, key string, n int) (ratelimit.Decision, error) {
	if err := g.checkCost(n); err != nil {
		return ratelimit.Decision{Limit: g.burst}, err
	}
	tok, err := g.br.Allow()
	if err != nil {
		return g.fail(ctx, key, n, err)
	}
	res, err := g.ask(ctx, key, n)
	if err != nil {
		if ctx.Err() != nil {
			tok.Done(context.Canceled) // the caller gave up: not Redis's fault
			return ratelimit.Decision{Limit: g.burst}, err
		}
		tok.Done(err)
		if g.onError != nil && !errors.Is(err, ErrClosed) {
			g.onError(err)
		}
		return g.fail(ctx, key, n, err)
	}
	tok.Done(nil)
	return g.decision(res, n), nil
}

func (g *GCRA) checkCost(n int) error {
	if n < 0 {
		return fmt.Errorf("%w: %d", ratelimit.ErrInvalidCost, n)
	}
	if n > g.burst {
		return fmt.Errorf("%w: cost %d, limit %d", ratelimit.ErrCostExceedsLimit, n, g.burst)
	}
	return nil
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

// fail decides by the FailMode after Redis could not.
func (g *GCRA) fail(ctx context.Context, key string, n int, cause error) (ratelimit.Decision, error) {
	switch g.mode {
	case FailOpen:
		return ratelimit.Decision{Allowed: true, Limit: g.burst, Remaining: g.burst - n}, nil
	case FailClosed:
		return ratelimit.Decision{Limit: g.burst, RetryAfter: g.failWait}, nil
	case FailLocal:
		return g.local.AllowN(ctx, key, n)
	}
	return ratelimit.Decision{Limit: g.burst}, fmt.Errorf("%w: %w", ErrUnavailable, cause)
}

// ask queues one decision and waits for its reply.
func (g *GCRA) ask(ctx context.Context, key string, n int) (int64, error) {
	r := g.pool.Get().(*request)
	r.key, r.n, r.deadline = key, n, time.Now().Add(g.timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(r.deadline) {
		r.deadline = dl
	}
	select {
	case g.queue <- r:
	case <-g.stop:
		return 0, ErrClosed
	default:
		g.pool.Put(r)
		return 0, fmt.Errorf("redislimit: queue full: %w", context.DeadlineExceeded)
	}
	select {
	case <-r.done:
	case <-ctx.Done():
		return 0, ctx.Err() // r stays with the worker; not recycled
	case <-g.stop:
		return 0, ErrClosed
	}
	res, err := r.res, r.err
	r.key, r.err = "", nil
	g.pool.Put(r)
	return res, err
}

// work takes what has gathered in the queue, up to MaxBatch requests, and
// decides it in one round trip (one script call per hash slot on Redis
// Cluster, all sent in one pipeline).
func (g *GCRA) work() {
	defer g.wg.Done()
	batch := make([]*request, 0, g.maxBatch)
	var b batcher
	for {
		select {
		case r := <-g.queue:
			batch = append(batch[:0], r)
		case <-g.stop:
			g.drain()
			return
		}
	fill:
		for len(batch) < g.maxBatch {
			select {
			case r := <-g.queue:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		b.run(g, batch)
		for i, r := range batch {
			r.done <- struct{}{}
			batch[i] = nil
		}
	}
}

// drain answers queued requests with ErrClosed.
func (g *GCRA) drain() {
	for {
		select {
		case r := <-g.queue:
			r.err = ErrClosed
			r.done <- struct{}{}
		default:
			return
		}
	}
}

// batcher holds a worker's reusable buffers.
type batcher struct {
	groups map[uint16][]int // slot -> indexes into the batch (cluster only)
	order  []uint16
	keys   [][]string
	args   [][]string
	idx    [][]int
	cmds   rueidis.Commands
}

// run decides batch and stores each request's reply or error.
func (b *batcher) run(g *GCRA, batch []*request) {
	now := time.Now()
	live := batch[:0:0]
	deadline := time.Time{}
	for _, r := range batch {
		if !now.Before(r.deadline) {
			r.err = fmt.Errorf("redislimit: waited for a worker: %w", context.DeadlineExceeded)
			continue
		}
		if deadline.IsZero() || r.deadline.Before(deadline) {
			deadline = r.deadline
		}
		live = append(live, r)
	}
	if len(live) == 0 {
		return
	}
	b.group(g, live)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	b.cmds = b.cmds[:0]
	for i := range b.keys {
		b.cmds = append(b.cmds, g.client.B().Evalsha().Sha1(gcraSHA).Numkeys(int64(len(b.keys[i]))).Key(b.keys[i]...).Arg(b.args[i]...).Build())
	}
	results := g.client.DoMulti(ctx, b.cmds...)
	for i, res := range results {
		if err, ok := rueidis.IsRedisErr(res.Error()); ok && err.IsNoScript() {
			results[i] = gcraScript.Exec(ctx, g.client, b.keys[i], b.args[i])
		}
		vals, err := results[i].AsIntSlice()
		if err == nil && len(vals) != len(b.idx[i]) {
			err = fmt.Errorf("redislimit: script returned %d replies for %d requests", len(vals), len(b.idx[i]))
		}
		for j, k := range b.idx[i] {
			if err != nil {
				live[k].err = err
			} else {
				live[k].res = vals[j]
			}
		}
	}
}

// group fills keys, args and idx with one script call per hash slot (one in
// all on a standalone Redis).
func (b *batcher) group(g *GCRA, live []*request) {
	b.keys, b.args, b.idx = b.keys[:0], b.args[:0], b.idx[:0]
	add := func(gi, k int) {
		r := live[k]
		b.keys[gi] = append(b.keys[gi], g.prefix+r.key)
		b.args[gi] = append(b.args[gi], strconv.Itoa(r.n))
		b.idx[gi] = append(b.idx[gi], k)
	}
	newGroup := func() int {
		gi := len(b.keys)
		if gi < cap(b.keys) && gi < cap(b.args) && gi < cap(b.idx) { // reuse the buffers of earlier batches
			b.keys, b.args, b.idx = b.keys[:gi+1], b.args[:gi+1], b.idx[:gi+1]
			b.keys[gi], b.idx[gi] = b.keys[gi][:0], b.idx[gi][:0]
		} else {
			b.keys, b.args, b.idx = append(b.keys, nil), append(b.args, nil), append(b.idx, nil)
		}
		if cap(b.args[gi]) < 2 {
			b.args[gi] = []string{g.argT, g.argTau}
		}
		b.args[gi] = b.args[gi][:2]
		return gi
	}
	if !g.cluster {
		gi := newGroup()
		for k := range live {
			add(gi, k)
		}
		return
	}
	if b.groups == nil {
		b.groups = make(map[uint16][]int)
	}
	clear(b.groups)
	b.order = b.order[:0]
	for k, r := range live {
		s := slot(g.prefix + r.key)
		if _, ok := b.groups[s]; !ok {
			b.order = append(b.order, s)
		}
		b.groups[s] = append(b.groups[s], k)
	}
	for _, s := range b.order {
		gi := newGroup()
		for _, k := range b.groups[s] {
			add(gi, k)
		}
	}
}
