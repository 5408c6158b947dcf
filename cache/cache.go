package cache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/strata-project/strata/breaker"
)

// Config configures a Cache. Only Store is required (and Source for Get and the writes);
// every other zero value is a sensible default.
type Config struct {
	// Store holds the cached entries: memstore, redisstore, memcachestore, two-tier. Required.
	Store Store
	// Source is the source of truth for Get (read-through), WriteThrough, WriteAround and
	// Delete. Default nil: only GetFunc (cache-aside with a loader per call) is usable.
	Source Source
	// TTL is the lifetime of a cached value. Default 5 minutes.
	TTL time.Duration
	// NegativeTTL is the lifetime of a cached not-found. Default 30 seconds.
	NegativeTTL time.Duration
	// TombstoneTTL is the lifetime of an invalidation's tombstone. It must outlast the
	// slowest load, or a load that began before a write could still set its old value after
	// the tombstone expired. Default 2*LoadTimeout, at least one minute.
	TombstoneTTL time.Duration
	// Jitter shortens each TTL by a random fraction in [0, Jitter) so that keys filled
	// together do not expire together. Default 0.1; negative disables it. At most 1.
	Jitter float64
	// LoadTimeout bounds one load from the source. The load runs detached from the caller
	// that started it: callers that give up return at once, the load carries on for the
	// others. Default 5 seconds.
	LoadTimeout time.Duration
	// StoreTimeout bounds the store calls of the write path, which run detached from the
	// caller's cancellation so that a write's invalidation is not abandoned halfway. Reads
	// rely on the store's own timeouts. Default 1 second.
	StoreTimeout time.Duration
	// LeaseTTL is the lifetime of the fill lease that lets one process load a missed key
	// while the others wait for its fill. Default LoadTimeout. Negative disables leases.
	LeaseTTL time.Duration
	// LeaseWait bounds how long a process that did not get the lease polls the store for the
	// holder's fill before loading the key itself. Default 1 second.
	LeaseWait time.Duration
	// Breaker guards the store: errors and timeouts count as failures, and while it is open
	// reads go straight to the source and writes queue their invalidation. Default: a breaker
	// with breaker.Config's defaults (opens after 5 failures in a row, for 10 seconds). Reads
	// of an InProcess store skip it.
	Breaker *breaker.Breaker
	// PendingPath is the file of invalidations that could not be applied yet (the store was
	// down). They are replayed at New and retried every RetryInterval; while a key has one,
	// reads of the key bypass the cache. Default "": kept in memory only, lost on a crash.
	PendingPath string
	// RetryInterval is the pause between retries of pending invalidations, and between
	// probes of the store while the breaker is not closed. Default 1 second.
	RetryInterval time.Duration
	// IdleProbe, when positive, has the cache read ProbeKey this often while its breaker is
	// closed too, and again at once (a few times) after a probe that failed, so that a store
	// that stops answering opens the breaker within about IdleProbe even when no caller
	// reads: an app server that gets no reads (a balancer sends few requests to a server
	// whose writes are refused) otherwise keeps a closed breaker, and its next callers each
	// wait for the store's timeout. Costs one store read per IdleProbe. Default 0: off.
	IdleProbe time.Duration
	// EarlyRefresh turns on probabilistic early refresh (XFetch) with this beta: a hit on an
	// entry whose remaining lifetime is short compared with its load cost (Entry.Cost) starts
	// one background reload of the key, so that a hot key is replaced before it expires
	// instead of expiring under load. A hit refreshes when
	//
	//	remaining <= Cost * EarlyRefresh * -ln(u), u uniform in (0, 1]
	//
	// so refreshes cluster in the last few load times of an entry's life, and the larger the
	// beta, the earlier. 0 (the default) turns it off; 1 is the XFetch paper's default.
	// Negative is an error. See the package doc for what a refresh does and costs.
	EarlyRefresh float64
	// Now is the clock that early refresh compares entries' expiry (Entry.Expires) with.
	// Default time.Now.
	Now func() time.Time
	// Hooks are called on events, for metrics. Default: none.
	Hooks Hooks
	// Logger receives errors that have no caller to return to (a failed retry). Default
	// slog.Default().
	Logger *slog.Logger
}

// Hooks are optional callbacks on cache events; each runs synchronously on the goroutine of
// the event and must be fast. A nil field is skipped.
type Hooks struct {
	// OnLoad is called after each load from the source with its duration and error.
	OnLoad func(key string, d time.Duration, err error)
	// OnRefused is called when the store refused a stale set (a newer version was there).
	OnRefused func(key string, version int64)
	// OnPending is called when an invalidation could not be applied and was queued, with the
	// queue depth.
	OnPending func(key string, version int64, depth int)
	// OnRefresh is called when an early refresh of key ends, with whether it stored the
	// reloaded entry (and so extended the key's life).
	OnRefresh func(key string, stored bool)
}

// Stats is a snapshot of a Cache's counters, totals since New. Evictions are counted by the
// store (memstore.Stats, for one).
type Stats struct {
	Hits, Misses   uint64 // lookups answered by the store, and the others
	Loads          uint64 // loads from the source
	LoadErrors     uint64 // loads that failed (not-found is not a failure)
	Refused        uint64 // sets refused because the store held a newer version
	StoreErrors    uint64 // store calls that failed or were refused by the breaker
	Bypassed       uint64 // reads that skipped the cache because the key had a pending invalidation
	LeaseWaits     uint64 // misses that waited for another process's fill
	PendingDepth   int    // invalidations queued now
	PendingRetried uint64 // pending invalidations applied by the retry loop
	// Early refresh (Config.EarlyRefresh): refreshes this process started (one per key at a
	// time; those that found another process's lease count too), and those whose reloaded
	// entry the store took.
	Refreshes, RefreshesStored uint64
}

// Cache applies the caching strategies over a Store and a Source: read-through (Get),
// cache-aside (GetFunc), write-through (WriteThrough), write-around with invalidation
// (WriteAround) and Delete. It is safe for concurrent use. Close stops its goroutines.
type Cache struct {
	cfg     Config
	store   Store
	src     Source
	br      *breaker.Breaker
	direct  bool   // reads skip br: an InProcess store
	peek    Peeker // hits are served through it first (see Peeker); nil: through Get
	flights flights
	pending *pendingSet
	log     *slog.Logger

	hits                                                                           stripedCounter
	misses, loads, loadErrors, refused, storeErrors, bypassed, leaseWaits, retried atomic.Uint64
	refreshes, refreshesStored                                                     atomic.Uint64

	wake    chan struct{} // nudges the retry loop
	stop    chan struct{} // closed by Close
	wg      sync.WaitGroup
	closing sync.Once
}

// New validates cfg and returns a Cache whose retry loop is running. Errors wrap ErrConfig.
func New(cfg Config) (*Cache, error) {
	if cfg.Store == nil {
		return nil, fmt.Errorf("%w: Store is nil", ErrConfig)
	}
	if cfg.TTL < 0 || cfg.NegativeTTL < 0 || cfg.TombstoneTTL < 0 || cfg.LoadTimeout < 0 ||
		cfg.StoreTimeout < 0 || cfg.LeaseWait < 0 || cfg.RetryInterval < 0 || cfg.IdleProbe < 0 {
		return nil, fmt.Errorf("%w: negative duration", ErrConfig)
	}
	if cfg.Jitter > 1 {
		return nil, fmt.Errorf("%w: Jitter %v above 1", ErrConfig, cfg.Jitter)
	}
	if cfg.EarlyRefresh < 0 || math.IsNaN(cfg.EarlyRefresh) || math.IsInf(cfg.EarlyRefresh, 0) {
		return nil, fmt.Errorf("%w: EarlyRefresh %v is not a finite beta >= 0", ErrConfig, cfg.EarlyRefresh)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.TTL = orDefault(cfg.TTL, 5*time.Minute)
	cfg.NegativeTTL = orDefault(cfg.NegativeTTL, 30*time.Second)
	cfg.LoadTimeout = orDefault(cfg.LoadTimeout, 5*time.Second)
	cfg.TombstoneTTL = orDefault(cfg.TombstoneTTL, max(2*cfg.LoadTimeout, time.Minute))
	if cfg.TombstoneTTL < cfg.LoadTimeout {
		return nil, fmt.Errorf("%w: TombstoneTTL %v shorter than LoadTimeout %v", ErrConfig, cfg.TombstoneTTL, cfg.LoadTimeout)
	}
	if cfg.Jitter == 0 {
		cfg.Jitter = 0.1
	}
	cfg.StoreTimeout = orDefault(cfg.StoreTimeout, time.Second)
	cfg.LeaseTTL = orDefault(cfg.LeaseTTL, cfg.LoadTimeout)
	cfg.LeaseWait = orDefault(cfg.LeaseWait, time.Second)
	cfg.RetryInterval = orDefault(cfg.RetryInterval, time.Second)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	br := cfg.Breaker
	_, direct := cfg.Store.(InProcess)
	if br == nil {
		var err error
		if br, err = breaker.New(breaker.Config{Name: "cache"}); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrConfig, err)
		}
	}
	p, err := openPending(cfg.PendingPath)
	if err != nil {
		return nil, err
	}
	c := &Cache{
		cfg: cfg, store: cfg.Store, src: cfg.Source, br: br, direct: direct, pending: p, log: cfg.Logger,
		wake: make(chan struct{}, 1), stop: make(chan struct{}),
	}
	if pk, ok := cfg.Store.(Peeker); ok && direct && cfg.EarlyRefresh == 0 {
		c.peek = pk
	}
	c.wg.Add(1)
	go c.retryLoop()
	if p.n.Load() > 0 {
		c.nudge()
	}
	return c, nil
}

func orDefault(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// Get returns the value of key, from the store or else from the Source (read-through). An
// absent key returns an error wrapping ErrNotFound. The returned slice must not be modified.
func (c *Cache) Get(ctx context.Context, key string) ([]byte, error) {
	if c.src == nil {
		return nil, fmt.Errorf("%w: Get needs a Source", ErrConfig)
	}
	return c.get(ctx, key, nil)
}

// GetFunc is cache-aside: it returns the value of key from the store, or else from load,
// with the same stampede protection, negative caching and stale-set guard as Get.
func (c *Cache) GetFunc(ctx context.Context, key string, load LoadFunc) ([]byte, error) {
	if load == nil {
		return nil, fmt.Errorf("%w: GetFunc needs a LoadFunc", ErrConfig)
	}
	return c.get(ctx, key, load)
}

func (c *Cache) get(ctx context.Context, key string, load LoadFunc) ([]byte, error) {
	if c.peek != nil && !c.pending.has(key) {
		// A miss here reads the store again below: for an in-process store, a second
		// lookup in memory, and it keeps this path to the few fields of a hit.
		if v, negative, ok := c.peek.Peek(key); ok {
			c.hits.add()
			if negative {
				return nil, notFound(key)
			}
			return v, nil
		}
	}
	missed := false
	for {
		if c.pending.has(key) && !c.flushPending(ctx, key) {
			// The store refused this key's invalidation just now: read the source.
			c.bypassed.Add(1)
			v, _, _, err := c.loadOnce(ctx, key, load)
			return v, err
		}
		e, ok, err := c.storeGet(ctx, key)
		if ok {
			c.hits.add()
			if c.cfg.EarlyRefresh > 0 && e.Cost > 0 && !e.Expires.IsZero() &&
				refreshDue(e.Expires.Sub(c.cfg.Now()), e.Cost, c.cfg.EarlyRefresh, rand.Float64()) {
				c.refresh(ctx, key, load, e)
			}
			if e.Negative {
				return nil, notFound(key)
			}
			return e.Value, nil
		}
		if !missed {
			c.misses.Add(1)
			missed = true
		}
		f, leader, joined := c.flights.join(key)
		if leader {
			c.wg.Add(1)
			go c.fill(context.WithoutCancel(ctx), key, load, f, err == nil, nil)
		}
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if leader || (joined && f.shared) {
			return f.value, f.err
		}
		// The flight's read began before this call, or its result was read from the store
		// on the leader's behalf: start over.
	}
}

// storeGet reads the store through the breaker (directly when c.direct). The entry goes
// through named results, which spares the hit path a copy of it (see memstore.Store.Get).
func (c *Cache) storeGet(ctx context.Context, key string) (e Entry, ok bool, err error) {
	if c.direct {
		if e, ok, err = c.store.Get(ctx, key); err != nil {
			c.storeErrors.Add(1)
		}
		return e, ok, err
	}
	tok, err := c.br.Allow()
	if err != nil {
		c.storeErrors.Add(1)
		return e, false, err
	}
	e, ok, err = c.store.Get(ctx, key)
	tok.Done(err)
	if err != nil {
		c.storeErrors.Add(1)
		return Entry{}, false, err
	}
	return e, ok, nil
}

// refreshDue is the XFetch decision for an entry with remaining lifetime remaining and load
// cost cost: refresh when remaining <= cost*beta*-ln(1-r), r uniform in [0, 1). An entry
// already past its expiry by the reader's clock is always due.
func refreshDue(remaining, cost time.Duration, beta, r float64) bool {
	if remaining <= 0 {
		return true
	}
	x := float64(remaining) / (float64(cost) * beta)
	if x > 50 { // probability below e^-50: skip the logarithm
		return false
	}
	return -math.Log1p(-r) >= x
}

// refresh starts an early refresh of key, whose entry e was due, unless this process loads
// the key already. The refresh is a flight like a fill's, so misses of the key meanwhile join
// it, and it never blocks the caller, which returns the entry it read.
func (c *Cache) refresh(ctx context.Context, key string, load LoadFunc, e Entry) {
	f, leader, _ := c.flights.join(key)
	if !leader {
		return
	}
	c.refreshes.Add(1)
	c.wg.Add(1)
	go c.fill(context.WithoutCancel(ctx), key, load, f, true, &Entry{Version: e.Version, Expires: e.Expires, Cost: e.Cost})
}

// fill is the leader of a flight: it takes the fill lease (or waits for another process's
// fill), loads the key, stores the result if newer, and publishes it to the flight.
//
// With a due entry (not nil) the flight is an early refresh of it: it stores with
// SetIfNotOlder (so that an unchanged value extends the entry's life), and where a fill
// would wait for another process's fill, or go on without the store, it gives up, since the
// entry is still served. Giving up because another process holds the lease keeps the flight
// for a pause of about one load first, so that the hits of this process do not try for the
// lease over and over while the holder reloads. With the lease, it reads the entry again and
// gives up if it changed since the hit that found it due (another process refreshed it).
func (c *Cache) fill(ctx context.Context, key string, load LoadFunc, f *flight, storeUp bool, due *Entry) {
	defer c.wg.Done()
	refresh := due != nil
	failuresAtStart := c.storeErrors.Load()
	ctx, cancel := context.WithTimeout(ctx, c.cfg.LoadTimeout)
	defer cancel()
	giveUp := func() {
		c.flights.finish(key, f, nil, nil, false)
		c.refreshEnded(key, false)
	}
	if storeUp && c.cfg.LeaseTTL > 0 {
		l, ok, err := c.lease(ctx, key)
		switch {
		case refresh && !ok:
			if err == nil {
				c.pause(ctx, min(due.Cost, c.cfg.LeaseWait))
			}
			giveUp()
			return
		case err != nil:
			storeUp = false
		case ok:
			defer func() {
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.StoreTimeout)
				_ = l.Release(rctx)
				cancel()
			}()
		default:
			if e, hit := c.awaitFill(ctx, key); hit {
				// The joiners re-read the store themselves: this read may predate their call.
				if e.Negative {
					c.flights.finish(key, f, nil, notFound(key), false)
				} else {
					c.flights.finish(key, f, e.Value, nil, false)
				}
				return
			}
		}
	}
	if refresh && c.cfg.LeaseTTL > 0 {
		e, ok, err := c.storeGet(ctx, key)
		if err != nil || (ok && (e.Version != due.Version || !e.Expires.Equal(due.Expires))) {
			giveUp()
			return
		}
	}
	c.flights.start(f)
	value, version, cost, err := c.loadOnce(ctx, key, load)
	// A fill stores its value only if no store call of this cache failed since the fill
	// began: a failure may mean the store restarted and lost the tombstone that would have
	// refused this value, had a write overtaken the load meanwhile.
	storeUp = storeUp && c.storeErrors.Load() == failuresAtStart
	if refresh {
		// A refresh hands its result to the misses that joined it only if the store answered
		// its set; otherwise they read again (nobody else saw the value: no fence needed).
		res, answered := Refused, false
		switch {
		case err == nil && storeUp:
			res, answered = c.put(ctx, key, Entry{Value: value, Version: version, Cost: cost}, c.cfg.TTL, true)
		case errors.Is(err, ErrNotFound) && storeUp:
			res, answered = c.put(ctx, key, Entry{Negative: true, Version: version, Cost: cost}, c.cfg.NegativeTTL, true)
		}
		if res == Stored {
			c.refreshesStored.Add(1)
		}
		c.flights.finish(key, f, value, err, answered)
		c.refreshEnded(key, res == Stored)
		return
	}
	switch {
	case err == nil && storeUp:
		c.set(ctx, key, Entry{Value: value, Version: version, Cost: cost}, c.cfg.TTL)
	case errors.Is(err, ErrNotFound) && storeUp:
		c.set(ctx, key, Entry{Negative: true, Version: version, Cost: cost}, c.cfg.NegativeTTL)
	case err == nil || errors.Is(err, ErrNotFound):
		c.fence(ctx, key, version)
	}
	c.flights.finish(key, f, value, err, true)
}

// pause waits for d, or less if ctx ends or the Cache closes.
func (c *Cache) pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	case <-c.stop:
	}
}

func (c *Cache) refreshEnded(key string, stored bool) {
	if h := c.cfg.Hooks.OnRefresh; h != nil {
		h(key, stored)
	}
}

// fence is what a load that may not store its value does before returning it: a tombstone
// at the loaded version, so that the store serves nothing older to anyone once the value
// has been seen. Without it, a reader here could see a write that another process's cache
// readers do not yet see (the write's own invalidation still on its way, and an older fill
// landing meanwhile), which is a read going back in time across processes. A tombstone never
// makes anything stale, so it is safe where a set is not. Best effort: skipped while the
// breaker is open (the store is down for this process), and a failure is only counted.
func (c *Cache) fence(ctx context.Context, key string, version int64) {
	if c.br.State() == breaker.Open {
		return
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.StoreTimeout)
	defer cancel()
	_ = c.tryInvalidate(sctx, key, version)
}

// flushPending applies key's pending invalidation now, for a read of key. It reports
// whether key has none left.
func (c *Cache) flushPending(ctx context.Context, key string) bool {
	v, ok := c.pending.version(key)
	if !ok {
		return true
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.StoreTimeout)
	defer cancel()
	if c.tryInvalidate(sctx, key, v) != nil {
		return false
	}
	c.pending.done(key, v)
	c.retried.Add(1)
	return !c.pending.has(key)
}

func (c *Cache) lease(ctx context.Context, key string) (Lease, bool, error) {
	tok, err := c.br.Allow()
	if err != nil {
		c.storeErrors.Add(1)
		return nil, false, err
	}
	l, ok, err := c.store.Lease(ctx, key, c.cfg.LeaseTTL)
	tok.Done(err)
	if err != nil {
		c.storeErrors.Add(1)
	}
	return l, ok, err
}

// awaitFill polls the store, with growing pauses, for another process's fill of key, for at
// most LeaseWait.
func (c *Cache) awaitFill(ctx context.Context, key string) (Entry, bool) {
	c.leaseWaits.Add(1)
	deadline := time.Now().Add(c.cfg.LeaseWait)
	pause := 2 * time.Millisecond
	t := time.NewTimer(pause)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return Entry{}, false
		case <-c.stop:
			return Entry{}, false
		}
		e, ok, err := c.storeGet(ctx, key)
		if err != nil {
			return Entry{}, false
		}
		if ok {
			return e, true
		}
		if !time.Now().Add(pause).Before(deadline) {
			return Entry{}, false
		}
		pause = min(2*pause, 50*time.Millisecond)
		t.Reset(pause)
	}
}

// loadOnce calls load, or the Source's Load when load is nil, and counts it. It returns the
// load's duration as well (its cost, for early refresh).
func (c *Cache) loadOnce(ctx context.Context, key string, load LoadFunc) ([]byte, int64, time.Duration, error) {
	start := time.Now()
	var value []byte
	var version int64
	var err error
	if load == nil { // read-through: the Source (kept out of get so a hit does not allocate)
		value, version, err = c.src.Load(ctx, key)
	} else {
		value, version, err = load(ctx, key)
	}
	c.loads.Add(1)
	if err != nil && !errors.Is(err, ErrNotFound) {
		c.loadErrors.Add(1)
	}
	cost := time.Since(start)
	if h := c.cfg.Hooks.OnLoad; h != nil {
		h(key, cost, err)
	}
	if err == nil && value == nil {
		value = []byte{}
	}
	return value, version, cost, err
}

// set stores e if newer, unless key has a pending invalidation. It reports whether the
// store answered (stored or refused).
func (c *Cache) set(ctx context.Context, key string, e Entry, ttl time.Duration) bool {
	_, answered := c.put(ctx, key, e, ttl, false)
	return answered
}

// put stores e with SetIfNewer, or SetIfNotOlder when notOlder is set (an early refresh),
// unless key has a pending invalidation (then it stores nothing and reports Refused). It
// reports whether the store answered.
func (c *Cache) put(ctx context.Context, key string, e Entry, ttl time.Duration, notOlder bool) (SetResult, bool) {
	if c.pending.has(key) {
		return Refused, true
	}
	tok, err := c.br.Allow()
	if err != nil {
		c.storeErrors.Add(1)
		return 0, false
	}
	var r SetResult
	if notOlder {
		r, err = c.store.SetIfNotOlder(ctx, key, e, c.jitter(ttl))
	} else {
		r, err = c.store.SetIfNewer(ctx, key, e, c.jitter(ttl))
	}
	tok.Done(err)
	if err != nil {
		c.storeErrors.Add(1)
		return 0, false
	}
	if r == Refused {
		c.refused.Add(1)
		if h := c.cfg.Hooks.OnRefused; h != nil {
			h(key, e.Version)
		}
	}
	return r, true
}

func (c *Cache) jitter(ttl time.Duration) time.Duration {
	if c.cfg.Jitter <= 0 {
		return ttl
	}
	return ttl - time.Duration(rand.Float64()*c.cfg.Jitter*float64(ttl))
}

// WriteThrough writes value to the Source, then stores it in the cache at the written
// version unless the cache holds something newer. When the store's answer is unknown (an
// error, a timeout, an open breaker) it invalidates the key instead, and if that fails too
// the invalidation is queued and retried; the write still succeeds. It returns the new
// version.
func (c *Cache) WriteThrough(ctx context.Context, key string, value []byte) (int64, error) {
	if c.src == nil {
		return 0, fmt.Errorf("%w: WriteThrough needs a Source", ErrConfig)
	}
	v, err := c.src.Write(ctx, key, value)
	if err != nil {
		return 0, err
	}
	if value == nil {
		value = []byte{}
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.StoreTimeout)
	defer cancel()
	if !c.set(sctx, key, Entry{Value: value, Version: v}, c.cfg.TTL) {
		c.invalidate(sctx, key, v)
	}
	return v, nil
}

// WriteAround is the cache-aside write: it writes value to the Source, then invalidates the
// key at the new version (the next read loads it). It returns the new version.
func (c *Cache) WriteAround(ctx context.Context, key string, value []byte) (int64, error) {
	if c.src == nil {
		return 0, fmt.Errorf("%w: WriteAround needs a Source", ErrConfig)
	}
	v, err := c.src.Write(ctx, key, value)
	if err != nil {
		return 0, err
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.StoreTimeout)
	defer cancel()
	c.invalidate(sctx, key, v)
	return v, nil
}

// Delete deletes key from the Source, then invalidates it at the deletion's version. It
// returns the deletion's version, or an error wrapping ErrNotFound if the key was absent.
func (c *Cache) Delete(ctx context.Context, key string) (int64, error) {
	if c.src == nil {
		return 0, fmt.Errorf("%w: Delete needs a Source", ErrConfig)
	}
	v, err := c.src.Delete(ctx, key)
	if err != nil {
		return 0, err
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.StoreTimeout)
	defer cancel()
	c.invalidate(sctx, key, v)
	return v, nil
}

// Invalidate leaves a tombstone for key at version in the store (for writers that wrote the
// source themselves). If the store cannot take it now, it is queued and retried.
func (c *Cache) Invalidate(ctx context.Context, key string, version int64) {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.StoreTimeout)
	defer cancel()
	c.invalidate(sctx, key, version)
}

func (c *Cache) invalidate(ctx context.Context, key string, v int64) {
	if c.pending.has(key) || c.tryInvalidate(ctx, key, v) != nil {
		c.enqueue(key, v)
	}
}

func (c *Cache) tryInvalidate(ctx context.Context, key string, v int64) error {
	tok, err := c.br.Allow()
	if err != nil {
		c.storeErrors.Add(1)
		return err
	}
	err = c.store.Invalidate(ctx, key, v, c.cfg.TombstoneTTL)
	tok.Done(err)
	if err != nil {
		c.storeErrors.Add(1)
	}
	return err
}

func (c *Cache) enqueue(key string, v int64) {
	if err := c.pending.add(key, v); err != nil {
		c.log.Error("cache: pending invalidation kept in memory only", "key", key, "version", v, "err", err)
	}
	if h := c.cfg.Hooks.OnPending; h != nil {
		h(key, v, int(c.pending.n.Load()))
	}
	c.nudge()
}

func (c *Cache) nudge() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// retryLoop applies pending invalidations at once when nudged, and every RetryInterval it
// retries those that remain and probes the store while the breaker is not closed.
func (c *Cache) retryLoop() {
	defer c.wg.Done()
	t := time.NewTicker(c.cfg.RetryInterval)
	defer t.Stop()
	var idle <-chan time.Time
	if c.cfg.IdleProbe > 0 {
		it := time.NewTicker(c.cfg.IdleProbe)
		defer it.Stop()
		idle = it.C
	}
	for {
		select {
		case <-c.stop:
			return
		case <-c.wake:
		case <-t.C:
			c.probe()
		case <-idle:
			c.probeClosed()
		}
		if c.pending.n.Load() > 0 {
			c.retryPending()
		}
	}
}

// ProbeKey is the key the cache reads to probe a store that is not a Pinger (see probe).
const ProbeKey = "strata-breaker-probe"

// probe reads ProbeKey through the breaker while the breaker is not closed, so that it
// closes soon after the store is back even when nothing else calls the store: reads go to
// the store, but writes of strong collections are refused while it is open and never probe
// it, and a balancer may send an app server whose writes are refused few requests.
func (c *Cache) probe() {
	if c.br.State() == breaker.Closed {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.StoreTimeout)
	defer cancel()
	_ = c.storeProbe(ctx)
}

// storeProbe checks the store through the breaker: Ping when the store is a Pinger, else a
// read of ProbeKey.
func (c *Cache) storeProbe(ctx context.Context) error {
	p, ok := c.store.(Pinger)
	if !ok {
		_, _, err := c.storeGet(ctx, ProbeKey)
		return err
	}
	tok, err := c.br.Allow()
	if err != nil {
		c.storeErrors.Add(1)
		return err
	}
	err = p.Ping(ctx)
	tok.Done(err)
	if err != nil {
		c.storeErrors.Add(1)
	}
	return err
}

// idleProbeBurst bounds the probes made in a row by probeClosed after a failed one.
const idleProbeBurst = 8

// probeClosed reads ProbeKey while the breaker is closed (see Config.IdleProbe); after a
// failure it probes again, until a probe succeeds, the breaker leaves the closed state or
// idleProbeBurst probes were made, so that a store that fails fast opens the breaker now
// rather than one IdleProbe per failure the breaker counts.
func (c *Cache) probeClosed() {
	for range idleProbeBurst {
		if c.br.State() != breaker.Closed {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.StoreTimeout)
		err := c.storeProbe(ctx)
		cancel()
		if err == nil {
			return
		}
		select {
		case <-c.stop:
			return
		default:
		}
	}
}

func (c *Cache) retryPending() {
	for key, v := range c.pending.snapshot() {
		ctx, cancel := context.WithTimeout(context.Background(), c.cfg.StoreTimeout)
		err := c.tryInvalidate(ctx, key, v)
		cancel()
		if err != nil {
			return // the store is still down: wait for the next round
		}
		c.pending.done(key, v)
		c.retried.Add(1)
	}
	if err := c.pending.compact(); err != nil {
		c.log.Error("cache: compact pending invalidations", "err", err)
	}
}

// Stats returns the counters.
func (c *Cache) Stats() Stats {
	return Stats{
		Hits: c.hits.load(), Misses: c.misses.Load(), Loads: c.loads.Load(),
		LoadErrors: c.loadErrors.Load(), Refused: c.refused.Load(), StoreErrors: c.storeErrors.Load(),
		Bypassed: c.bypassed.Load(), LeaseWaits: c.leaseWaits.Load(),
		PendingDepth: int(c.pending.n.Load()), PendingRetried: c.retried.Load(),
		Refreshes: c.refreshes.Load(), RefreshesStored: c.refreshesStored.Load(),
	}
}

// Close stops the retry loop, waits for loads in flight and closes the pending file. It
// does not close the Store or the Source. Pending invalidations stay in the file for the
// next New. Close is idempotent; the Cache must not be used after it.
func (c *Cache) Close() error {
	var err error
	c.closing.Do(func() {
		close(c.stop)
		c.wg.Wait()
		err = c.pending.close()
	})
	return err
}

// stripedCounter is a counter spread over 64 stripes of two cache lines each, so that
// parallel callers do not contend on one word. The stripe is picked from the address of a
// variable on the caller's stack: goroutines run on different stacks, so concurrent
// callers mostly land on different stripes, at the cost of a shift and a mask.
type stripedCounter [64]struct {
	n atomic.Uint64
	_ [120]byte
}

func (s *stripedCounter) add() {
	var marker byte
	a := uintptr(unsafe.Pointer(&marker))
	s[(a>>11^a>>17)&63].n.Add(1)
}

func (s *stripedCounter) load() uint64 {
	var n uint64
	for i := range s {
		n += s[i].n.Load()
	}
	return n
}
