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

// algorithm is what distinguishes the limiters of this package: the script
// that decides a batch, its fixed arguments, the shape of its reply and how a
// reply becomes a Decision. Everything else (queue, workers, breaker,
// FailMode) is the core's.
type algorithm struct {
	script *rueidis.Lua
	sha    string
	// prefix is the default Config.Prefix: each algorithm has its own, so
	// that limiters of different algorithms never read each other's keys.
	prefix string
	// args are the script's first ARGV, the same for every request.
	args []string
	// withID: each request passes a second argument after its cost (the
	// concurrency limiter's acquisition id).
	withID bool
	// stride is the number of integers of the reply per request.
	stride int
	// decide turns one request's reply into a Decision.
	decide func(res *reply, n int) ratelimit.Decision
}

// reply holds one request's integers of a script reply.
type reply [4]int64

// source says who decided a request.
type source uint8

const (
	fromRedis source = iota
	fromLocal        // FailLocal's limiter
	fromNone         // FailOpen, FailClosed, or an error: nothing was counted
)

// core runs one algorithm over Redis: calls to AllowN are queued, and a few
// workers send what has gathered as one script call per hash slot. It owns
// the breaker, the FailMode and the client built from Config.Addrs.
type core struct {
	client   rueidis.Client
	own      bool
	cluster  bool
	prefix   string
	limit    int // Decision.Limit and the largest valid cost
	timeout  time.Duration
	maxBatch int
	mode     FailMode
	local    ratelimit.Limiter
	failWait time.Duration
	br       *breaker.Breaker
	onError  func(error)
	alg      algorithm

	queue chan *request
	stop  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once
	pool  sync.Pool
}

// newCore validates the shared part of cfg, fills in its defaults, connects
// and starts the workers. newLocal builds FailLocal's default limiter when
// cfg.Local is nil.
func newCore(cfg Config, limit int, alg algorithm, newLocal func() (ratelimit.Limiter, error)) (*core, error) {
	if cfg.FailMode > FailError {
		return nil, fmt.Errorf("%w: %v", ErrConfig, cfg.FailMode)
	}
	c := &core{
		client:   cfg.Client,
		prefix:   cfg.Prefix,
		limit:    limit,
		timeout:  cfg.Timeout,
		maxBatch: cfg.MaxBatch,
		mode:     cfg.FailMode,
		local:    cfg.Local,
		failWait: cfg.FailRetryAfter,
		br:       cfg.Breaker,
		onError:  cfg.OnError,
		alg:      alg,
		stop:     make(chan struct{}),
	}
	c.pool.New = func() any { return &request{done: make(chan struct{}, 1)} }
	if c.prefix == "" {
		c.prefix = alg.prefix
	}
	if c.timeout <= 0 {
		c.timeout = 50 * time.Millisecond
	}
	if c.maxBatch <= 0 {
		c.maxBatch = 128
	}
	if c.failWait <= 0 {
		c.failWait = time.Second
	}
	if c.local == nil && c.mode == FailLocal {
		l, err := newLocal()
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrConfig, err)
		}
		c.local = l
	}
	if c.br == nil {
		b, err := breaker.New(breaker.Config{Name: "redislimit", ConsecutiveFailures: 5, OpenDuration: time.Second})
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrConfig, err)
		}
		c.br = b
	}
	if c.client == nil {
		if len(cfg.Addrs) == 0 {
			return nil, fmt.Errorf("%w: no Addrs and no Client", ErrConfig)
		}
		opt := rueidis.ClientOption{
			InitAddress:  cfg.Addrs,
			DisableCache: true,
			// A hung connection is detected within a few timeouts; calls
			// themselves return at Timeout.
			ConnWriteTimeout: max(4*c.timeout, time.Second),
		}
		opt.Dialer.Timeout = max(4*c.timeout, time.Second)
		switch {
		case cfg.MaxFlushDelay > 0:
			opt.MaxFlushDelay = cfg.MaxFlushDelay
		case cfg.MaxFlushDelay == 0:
			opt.MaxFlushDelay = 20 * time.Microsecond
		}
		cl, err := rueidis.NewClient(opt)
		if err != nil {
			return nil, fmt.Errorf("%w: connect: %w", ErrUnavailable, err)
		}
		c.client, c.own = cl, true
	}
	c.cluster = c.client.Mode() == rueidis.ClientModeCluster
	workers := cfg.Workers
	if workers <= 0 {
		workers = 2
	}
	c.queue = make(chan *request, 64*c.maxBatch)
	c.wg.Add(workers)
	for range workers {
		go c.work()
	}
	return c, nil
}

// close stops the workers (calls in flight return ErrClosed) and closes the
// client if the core built it.
func (c *core) close() {
	c.once.Do(func() {
		close(c.stop)
		c.wg.Wait()
		if c.own {
			c.client.Close()
		}
	})
}

func (c *core) checkCost(n int) error {
	if n < 0 {
		return fmt.Errorf("%w: %d", ratelimit.ErrInvalidCost, n)
	}
	if n > c.limit {
		return fmt.Errorf("%w: cost %d, limit %d", ratelimit.ErrCostExceedsLimit, n, c.limit)
	}
	return nil
}

// allowN decides n events for key: one script call, batched with
// concurrent calls, answered within Timeout, or the FailMode's decision
// when Redis fails, times out or the breaker is open. id is the request's
// second argument when the algorithm has one.
func (c *core) allowN(ctx context.Context, key string, n int, id string) (ratelimit.Decision, source, error) {
	if err := c.checkCost(n); err != nil {
		return ratelimit.Decision{Limit: c.limit}, fromNone, err
	}
	tok, err := c.br.Allow()
	if err != nil {
		return c.fail(ctx, key, n, err)
	}
	var res reply
	err = c.ask(ctx, key, n, id, &res)
	if err != nil {
		if ctx.Err() != nil {
			tok.Done(context.Canceled) // the caller gave up: not Redis's fault
			return ratelimit.Decision{Limit: c.limit}, fromNone, err
		}
		tok.Done(err)
		if c.onError != nil && !errors.Is(err, ErrClosed) {
			c.onError(err)
		}
		return c.fail(ctx, key, n, err)
	}
	tok.Done(nil)
	return c.alg.decide(&res, n), fromRedis, nil
}

// fail decides by the FailMode after Redis could not.
func (c *core) fail(ctx context.Context, key string, n int, cause error) (ratelimit.Decision, source, error) {
	switch c.mode {
	case FailOpen:
		return ratelimit.Decision{Allowed: true, Limit: c.limit, Remaining: c.limit - n}, fromNone, nil
	case FailClosed:
		return ratelimit.Decision{Limit: c.limit, RetryAfter: c.failWait}, fromNone, nil
	case FailLocal:
		d, err := c.local.AllowN(ctx, key, n)
		return d, fromLocal, err
	}
	return ratelimit.Decision{Limit: c.limit}, fromNone, fmt.Errorf("%w: %w", ErrUnavailable, cause)
}

// request is one queued decision. The worker that takes it writes res or
// err and signals done (buffered, so it never blocks).
type request struct {
	key      string
	id       string
	n        int
	deadline time.Time
	res      reply
	err      error
	done     chan struct{}
}

// ask queues one decision and waits for its reply.
func (c *core) ask(ctx context.Context, key string, n int, id string, res *reply) error {
	r := c.pool.Get().(*request)
	r.key, r.id, r.n, r.deadline = key, id, n, time.Now().Add(c.timeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(r.deadline) {
		r.deadline = dl
	}
	select {
	case c.queue <- r:
	case <-c.stop:
		return ErrClosed
	default:
		c.pool.Put(r)
		return fmt.Errorf("redislimit: queue full: %w", context.DeadlineExceeded)
	}
	select {
	case <-r.done:
	case <-ctx.Done():
		return ctx.Err() // r stays with the worker; not recycled
	case <-c.stop:
		return ErrClosed
	}
	*res = r.res
	err := r.err
	r.key, r.id, r.err = "", "", nil
	c.pool.Put(r)
	return err
}

// work takes what has gathered in the queue, up to MaxBatch requests, and
// decides it in one round trip (one script call per hash slot on Redis
// Cluster, all sent in one pipeline).
func (c *core) work() {
	defer c.wg.Done()
	batch := make([]*request, 0, c.maxBatch)
	var b batcher
	for {
		select {
		case r := <-c.queue:
			batch = append(batch[:0], r)
		case <-c.stop:
			c.drain()
			return
		}
	fill:
		for len(batch) < c.maxBatch {
			select {
			case r := <-c.queue:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		b.run(c, batch)
		for i, r := range batch {
			r.done <- struct{}{}
			batch[i] = nil
		}
	}
}

// drain answers queued requests with ErrClosed.
func (c *core) drain() {
	for {
		select {
		case r := <-c.queue:
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
func (b *batcher) run(c *core, batch []*request) {
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
	b.group(c, live)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	b.cmds = b.cmds[:0]
	for i := range b.keys {
		b.cmds = append(b.cmds, c.client.B().Evalsha().Sha1(c.alg.sha).Numkeys(int64(len(b.keys[i]))).Key(b.keys[i]...).Arg(b.args[i]...).Build())
	}
	results := c.client.DoMulti(ctx, b.cmds...)
	stride := c.alg.stride
	for i, res := range results {
		if err, ok := rueidis.IsRedisErr(res.Error()); ok && err.IsNoScript() {
			results[i] = c.alg.script.Exec(ctx, c.client, b.keys[i], b.args[i])
		}
		vals, err := results[i].AsIntSlice()
		if err == nil && len(vals) != stride*len(b.idx[i]) {
			err = fmt.Errorf("redislimit: script returned %d integers for %d requests", len(vals), len(b.idx[i]))
		}
		for j, k := range b.idx[i] {
			if err != nil {
				live[k].err = err
			} else {
				copy(live[k].res[:], vals[j*stride:(j+1)*stride])
			}
		}
	}
}

// group fills keys, args and idx with one script call per hash slot (one in
// all on a standalone Redis).
func (b *batcher) group(c *core, live []*request) {
	b.keys, b.args, b.idx = b.keys[:0], b.args[:0], b.idx[:0]
	add := func(gi, k int) {
		r := live[k]
		b.keys[gi] = append(b.keys[gi], c.prefix+r.key)
		b.args[gi] = append(b.args[gi], strconv.Itoa(r.n))
		if c.alg.withID {
			b.args[gi] = append(b.args[gi], r.id)
		}
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
		b.args[gi] = append(b.args[gi][:0], c.alg.args...)
		return gi
	}
	if !c.cluster {
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
		s := slot(c.prefix + r.key)
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
