package lb

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/strata-project/strata/internal/clientip"
	"github.com/strata-project/strata/ratelimit"
	"github.com/strata-project/strata/retry"
)

// Sentinel errors.
var (
	// ErrInvalidConfig is wrapped by New and the backend-changing methods
	// for an invalid configuration.
	ErrInvalidConfig = errors.New("lb: invalid config")
	// ErrUnknownBackend is returned for an address that is not a backend.
	ErrUnknownBackend = errors.New("lb: unknown backend")
	// ErrDuplicateBackend is returned when adding an address already present.
	ErrDuplicateBackend = errors.New("lb: duplicate backend")
	// ErrClosed is returned by Serve after Shutdown or Close.
	ErrClosed = errors.New("lb: closed")
)

// BackendConfig is one upstream server.
type BackendConfig struct {
	// Addr is "host:port". Required.
	Addr string
	// Weight is the backend's share for WeightedRoundRobin and the number of
	// its points on the ConsistentHash ring. Default 1.
	Weight int
}

// HashSource says where ConsistentHash finds a request's key.
type HashSource string

// The hash key sources.
const (
	HashClientIP HashSource = "client-ip" // the client address (default)
	HashHeader   HashSource = "header"    // the value of header Name
	HashCookie   HashSource = "cookie"    // the value of cookie Name
)

// HashConfig configures the ConsistentHash policy.
type HashConfig struct {
	// Source is where the key comes from. Default HashClientIP.
	Source HashSource
	// Name is the header or cookie name for HashHeader and HashCookie.
	Name string
	// LoadFactor bounds each backend's load at LoadFactor times the mean.
	// Default 1.25. Must be >= 1.
	LoadFactor float64
}

// HealthConfig configures active health checks.
type HealthConfig struct {
	// Disabled turns active checks off. Default false.
	Disabled bool
	// Path is requested with GET. Default "/readyz". A 2xx answer passes,
	// 503 drains the backend (no new requests), anything else fails.
	Path string
	// Interval between checks of one backend. Default 2s.
	Interval time.Duration
	// Timeout of one check. Default 1s.
	Timeout time.Duration
	// Rise is the number of passes that make an unhealthy backend healthy.
	// Default 2.
	Rise int
	// Fall is the number of failures that make a healthy backend unhealthy.
	// Default 3.
	Fall int
}

// OutlierConfig configures passive outlier detection.
type OutlierConfig struct {
	// ConsecutiveFailures (5xx answers, connection errors, timeouts) that
	// eject a backend. A 503 with Retry-After (a dependency is down, which
	// every backend shares) counts neither as a failure nor as a success.
	// Default 5. -1 disables ejection.
	ConsecutiveFailures int
	// BaseEjection is the length of a first ejection; it doubles with each
	// repeated one. Default 5s.
	BaseEjection time.Duration
	// MaxEjection caps an ejection. Default 2m.
	MaxEjection time.Duration
	// MaxEjectedPercent is the largest share of backends ejected at once.
	// Default 50.
	MaxEjectedPercent int
}

// RetryConfig configures retries.
type RetryConfig struct {
	// Attempts is the most tries of one request, the first included.
	// Default 3; 1 disables retries. Only safe methods (GET, HEAD, OPTIONS,
	// TRACE) and requests with an Idempotency-Key header are retried after
	// they may have reached a backend, each time on a backend not yet tried;
	// any request is retried when none of it was sent.
	Attempts int
	// PerTryTimeout bounds the wait for a response head on one try.
	// Default 15s.
	PerTryTimeout time.Duration
	// Budget bounds retries across requests. Default: the zero
	// retry.BudgetConfig (20% of requests plus 10 per second).
	Budget retry.BudgetConfig
	// MaxBodyBytes is the largest request body buffered for replay; a
	// larger (or chunked) body is streamed and its request not retried.
	// Default 64 KiB.
	MaxBodyBytes int
	// OnStatus lists response statuses that are retried like a connection
	// error (e.g. 502, 503, 504). Default none.
	OnStatus []int
}

// HedgeConfig configures hedged requests. A GET or HEAD without a body whose
// try has not answered after the hedge delay is sent to a second backend as
// well (one that is eligible and not tried yet), once per request at most;
// the first response head wins and the other try is cancelled: its
// connection is closed. Other methods and requests with a body are never
// hedged. The zero value turns hedging off.
type HedgeConfig struct {
	// Delay is a fixed hedge delay. Default 0. Set Delay or Percentile, not
	// both; it must be below RetryConfig.PerTryTimeout.
	Delay time.Duration
	// Percentile (50 to 99.9) hedges after that percentile of the time
	// GET and HEAD requests waited for their response heads over the last
	// ten seconds (p95 with 95), clamped to [MinDelay, MaxDelay]. Until
	// enough requests were seen (ten above the percentile: 200 for p95), the
	// delay is MaxDelay. Default 0.
	Percentile float64
	// MinDelay is the floor of a percentile delay. Default 2ms.
	MinDelay time.Duration
	// MaxDelay is the cap of a percentile delay. Default 1s, or half of
	// RetryConfig.PerTryTimeout if that is less; it must be below
	// PerTryTimeout.
	MaxDelay time.Duration
	// Budget bounds hedges across requests, so that a general slowdown
	// (when every request is slow) cannot double the load: over its window,
	// hedges may not exceed Ratio times the hedgeable requests plus
	// MinPerSecond per second. Defaults: Ratio 0.1, MinPerSecond 1, Window
	// 10s (a zero field takes its default; use a tiny MinPerSecond such as
	// 1e-9 for practically none).
	Budget retry.BudgetConfig
}

// enabled reports whether c turns hedging on.
func (c *HedgeConfig) enabled() bool { return c.Delay != 0 || c.Percentile != 0 }

// RateLimitConfig configures edge rate limiting.
type RateLimitConfig struct {
	// Rate is the sustained rate per key. Default zero: no limiting.
	Rate ratelimit.Rate
	// Burst is the bucket size. Default Rate.Limit.
	Burst int
	// Header, when set, keys requests by this header (an API key); requests
	// without it are keyed by client address. Default "": client address.
	Header string
}

// Config configures a load balancer. The zero value plus at least one
// backend is valid.
type Config struct {
	// Backends are the upstream servers. At least one is required.
	Backends []BackendConfig
	// Policy chooses backends. Default P2CEWMA.
	Policy Policy
	// Hash configures ConsistentHash.
	Hash HashConfig
	// DecayTime is the time constant of the peak-EWMA latency. Default 10s.
	DecayTime time.Duration
	// Health configures active health checks.
	Health HealthConfig
	// Outlier configures passive outlier detection.
	Outlier OutlierConfig
	// Retry configures retries.
	Retry RetryConfig
	// Hedge configures hedging.
	Hedge HedgeConfig
	// RateLimit configures edge rate limiting.
	RateLimit RateLimitConfig
	// TrustedProxies are the prefixes of proxies in front of the balancer.
	// Their X-Forwarded-For (or Forwarded, per ForwardedHeader) is believed
	// when finding the client address for rate limiting and hashing, and
	// their X-Forwarded-Proto is passed on. Default none.
	TrustedProxies []netip.Prefix
	// ForwardedHeader is the header trusted proxies write. Default
	// clientip.XForwardedFor.
	ForwardedHeader clientip.Header
	// MaxConnsPerBackend caps the connections to one backend. Default 0: no
	// cap.
	MaxConnsPerBackend int
	// MaxPendingPerBackend caps the requests waiting for a connection when
	// MaxConnsPerBackend is reached; further ones try another backend.
	// Default 0: none wait.
	MaxPendingPerBackend int
	// MaxIdlePerBackend caps the idle keep-alive connections kept per
	// backend. Default 256.
	MaxIdlePerBackend int
	// IdleTimeout closes backend connections idle this long. Default 30s.
	IdleTimeout time.Duration
	// ConnectTimeout bounds a backend dial. Default 2s.
	ConnectTimeout time.Duration
	// ClientIdleTimeout closes client connections that send no request for
	// this long; it also bounds reading a request head. Default 75s.
	ClientIdleTimeout time.Duration
	// ClientWriteTimeout gives up on a client that stops reading: when a
	// write of a response to the client (at most 64 KiB at a time) makes no
	// progress for this long (up to a sixteenth more), the exchange is
	// aborted, the client connection is closed, and so is the backend
	// connection of a response not relayed in full (it is not returned to
	// the pool). Default 30s, or ClientIdleTimeout if that is less.
	ClientWriteTimeout time.Duration
	// MaxHeaderBytes is the largest request or response head. Default 16 KiB.
	MaxHeaderBytes int
	// Logger receives operational messages. Default slog.Default().
	Logger *slog.Logger

	// peekAfter overrides the idle time after which a connection is checked
	// before a replayable request (tests only; see getConn).
	peekAfter time.Duration
}

// options is Config with defaults applied, read on the hot path.
type options struct {
	policy         Policy
	decay          time.Duration
	loadFactor     float64
	hash           HashConfig
	health         HealthConfig
	outlier        OutlierConfig
	attempts       int
	perTry         time.Duration
	maxBody        int
	onStatus       [6]bool // 500..505
	onStatusOther  []int
	hedge          HedgeConfig // with defaults applied
	maxConns       int
	maxPending     int
	maxIdle        int
	idleTimeout    time.Duration
	peekAfter      int64 // ns; see getConn
	connectTimeout time.Duration
	clientIdle     time.Duration
	clientWrite    time.Duration
	maxHeader      int
	rateHeader     string
}

func (c *Config) options() (options, error) {
	o := options{
		policy:         cmpOr(c.Policy, P2CEWMA),
		decay:          cmpOr(c.DecayTime, 10*time.Second),
		hash:           c.Hash,
		health:         c.Health,
		outlier:        c.Outlier,
		attempts:       cmpOr(c.Retry.Attempts, 3),
		perTry:         cmpOr(c.Retry.PerTryTimeout, 15*time.Second),
		maxBody:        cmpOr(c.Retry.MaxBodyBytes, 64<<10),
		hedge:          c.Hedge,
		maxConns:       c.MaxConnsPerBackend,
		maxPending:     c.MaxPendingPerBackend,
		maxIdle:        cmpOr(c.MaxIdlePerBackend, 256),
		idleTimeout:    cmpOr(c.IdleTimeout, 30*time.Second),
		peekAfter:      int64(cmpOr(c.peekAfter, peekAfter)),
		connectTimeout: cmpOr(c.ConnectTimeout, 2*time.Second),
		clientIdle:     cmpOr(c.ClientIdleTimeout, 75*time.Second),
		maxHeader:      cmpOr(c.MaxHeaderBytes, 16<<10),
		rateHeader:     c.RateLimit.Header,
	}
	// Capped at a century, so that deadline arithmetic in monotonic
	// nanoseconds cannot overflow.
	o.clientWrite = min(cmpOr(c.ClientWriteTimeout, min(30*time.Second, o.clientIdle)), 100*365*24*time.Hour)
	o.loadFactor = cmpOr(c.Hash.LoadFactor, 1.25)
	o.hash.Source = cmpOr(o.hash.Source, HashClientIP)
	h := &o.health
	h.Path = cmpOr(h.Path, "/readyz")
	h.Interval = cmpOr(h.Interval, 2*time.Second)
	h.Timeout = cmpOr(h.Timeout, time.Second)
	h.Rise = cmpOr(h.Rise, 2)
	h.Fall = cmpOr(h.Fall, 3)
	ol := &o.outlier
	ol.ConsecutiveFailures = cmpOr(ol.ConsecutiveFailures, 5)
	ol.BaseEjection = cmpOr(ol.BaseEjection, 5*time.Second)
	ol.MaxEjection = cmpOr(ol.MaxEjection, 2*time.Minute)
	ol.MaxEjectedPercent = cmpOr(ol.MaxEjectedPercent, 50)
	bad := func(format string, a ...any) (options, error) {
		return options{}, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, a...)...)
	}
	switch {
	case o.loadFactor < 1:
		return bad("hash load factor %v below 1", o.loadFactor)
	case o.hash.Source != HashClientIP && o.hash.Source != HashHeader && o.hash.Source != HashCookie:
		return bad("unknown hash source %q", o.hash.Source)
	case o.hash.Source != HashClientIP && o.hash.Name == "":
		return bad("hash source %q needs a name", o.hash.Source)
	case o.attempts < 1 || o.attempts > 8:
		return bad("retry attempts %d outside 1..8", o.attempts)
	case o.decay < 0, o.perTry < 0, o.idleTimeout < 0, o.connectTimeout < 0, o.clientIdle < 0, o.clientWrite < 0,
		h.Interval < 0, h.Timeout < 0, ol.BaseEjection < 0, ol.MaxEjection < 0:
		return bad("negative duration")
	case o.maxConns < 0, o.maxPending < 0, o.maxIdle < 0, o.maxBody < 0, o.maxHeader < 1024:
		return bad("negative limit or MaxHeaderBytes below 1024")
	case ol.MaxEjectedPercent < 0 || ol.MaxEjectedPercent > 100:
		return bad("max ejected percent %d outside 0..100", ol.MaxEjectedPercent)
	case h.Path[0] != '/':
		return bad("health path %q does not start with /", h.Path)
	}
	if err := o.hedgeOptions(); err != nil {
		return bad("%v", err)
	}
	for _, s := range c.Retry.OnStatus {
		if s < 100 || s > 599 {
			return bad("retry status %d", s)
		}
		if s >= 500 && s <= 505 {
			o.onStatus[s-500] = true
		} else {
			o.onStatusOther = append(o.onStatusOther, s)
		}
	}
	return o, nil
}

// hedgeOptions applies the hedging defaults to o.hedge and checks it.
func (o *options) hedgeOptions() error {
	h := &o.hedge
	switch {
	case h.Delay < 0, h.MinDelay < 0, h.MaxDelay < 0:
		return errors.New("negative hedge delay")
	case !h.enabled():
		if h.MinDelay != 0 || h.MaxDelay != 0 || h.Budget != (retry.BudgetConfig{}) {
			return errors.New("hedge settings given but hedging is off: set Hedge.Delay or Hedge.Percentile")
		}
		return nil
	case h.Delay != 0 && h.Percentile != 0:
		return errors.New("set Hedge.Delay or Hedge.Percentile, not both")
	case h.Delay != 0 && (h.MinDelay != 0 || h.MaxDelay != 0):
		return errors.New("Hedge.MinDelay and Hedge.MaxDelay apply to Hedge.Percentile only")
	case h.Delay >= o.perTry:
		return fmt.Errorf("hedge delay %v not below the per-try timeout %v", h.Delay, o.perTry)
	case h.Delay == 0 && !(h.Percentile >= 50 && h.Percentile <= 99.9):
		return fmt.Errorf("hedge percentile %v outside 50..99.9", h.Percentile)
	case h.Budget.Ratio > 1:
		return fmt.Errorf("hedge budget ratio %v above 1", h.Budget.Ratio)
	}
	if h.Percentile != 0 {
		h.MinDelay = cmpOr(h.MinDelay, hedgeMinDelay)
		h.MaxDelay = cmpOr(h.MaxDelay, min(hedgeMaxDelay, o.perTry/2))
		switch {
		case h.MaxDelay >= o.perTry:
			return fmt.Errorf("hedge max delay %v not below the per-try timeout %v", h.MaxDelay, o.perTry)
		case h.MinDelay > h.MaxDelay:
			return fmt.Errorf("hedge min delay %v above max delay %v", h.MinDelay, h.MaxDelay)
		}
	}
	return nil
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// backendSet is an immutable snapshot of the backends with their selector.
type backendSet struct {
	backends []*Backend
	selector Selector
}

// LB is a load balancer: an HTTP/1.1 reverse proxy over a set of backends.
// Create it with New, run it with Serve (one or more listeners), stop it with
// Shutdown or Close. Its methods are safe for concurrent use.
type LB struct {
	opts     options
	log      *slog.Logger
	resolver *clientip.Resolver
	trusted  bool // some proxy is trusted
	limiter  *ratelimit.GCRA
	budget   *retry.Budget
	hedge    *hedger // nil: hedging off

	set     atomic.Pointer[backendSet]
	setMu   sync.Mutex // serializes backend set changes
	ejected atomic.Int64

	idPrefix [16]byte
	idSeq    atomic.Uint64

	closing   atomic.Bool
	mu        sync.Mutex
	listeners map[net.Listener]struct{} // protected by mu
	conns     map[*clientConn]struct{}  // protected by mu
	wg        sync.WaitGroup            // connection handlers
	stop      chan struct{}             // closed to stop the drivers
	drivers   sync.WaitGroup            // health checker and reaper
	checker   *http.Client

	finishMu sync.Mutex // serializes finish

	stats lbStats
}

type lbStats struct {
	requests, retries, retriesDenied, limited, badRequests, noBackend, upstreamErrors atomic.Uint64
	hedges, hedgesWon, hedgesDenied                                                   atomic.Uint64
}

// New returns a load balancer for cfg. It starts the health checker and the
// idle-connection reaper; Close stops them.
func New(cfg Config) (*LB, error) {
	o, err := cfg.options()
	if err != nil {
		return nil, err
	}
	if len(cfg.Backends) == 0 {
		return nil, fmt.Errorf("%w: no backends", ErrInvalidConfig)
	}
	l := &LB{
		opts:      o,
		log:       cmpOr(cfg.Logger, slog.Default()),
		listeners: map[net.Listener]struct{}{},
		conns:     map[*clientConn]struct{}{},
		stop:      make(chan struct{}),
	}
	if l.resolver, err = clientip.New(cfg.TrustedProxies, cfg.ForwardedHeader); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	l.trusted = len(cfg.TrustedProxies) > 0
	if cfg.RateLimit.Rate != (ratelimit.Rate{}) {
		if l.limiter, err = ratelimit.NewGCRA(ratelimit.GCRAConfig{Rate: cfg.RateLimit.Rate, Burst: cfg.RateLimit.Burst}); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
		}
	}
	if l.budget, err = retry.NewBudget(cfg.Retry.Budget); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if o.hedge.enabled() {
		if l.hedge, err = newHedger(o.hedge); err != nil {
			return nil, fmt.Errorf("%w: hedge budget: %w", ErrInvalidConfig, err)
		}
	}
	var seed [8]byte
	rand.Read(seed[:])
	hex.Encode(l.idPrefix[:], seed[:])
	if err := l.SetBackends(cfg.Backends); err != nil {
		return nil, err
	}
	l.checker = &http.Client{
		Timeout:   o.health.Timeout,
		Transport: &http.Transport{MaxIdleConnsPerHost: 2, DisableCompression: true},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	l.drivers.Add(1)
	go l.driveHealth()
	return l, nil
}

func (l *LB) newBackend(bc BackendConfig) (*Backend, error) {
	if err := validAddr(bc.Addr); err != nil {
		return nil, err
	}
	w := cmpOr(bc.Weight, 1)
	if w < 1 || w > 1000 {
		return nil, fmt.Errorf("%w: weight %d outside 1..1000", ErrInvalidConfig, w)
	}
	b := &Backend{addr: bc.Addr, lb: l}
	b.weight.Store(int32(w))
	b.health = Health{Rise: l.opts.health.Rise, Fall: l.opts.health.Fall}
	b.ejector = Ejector{
		ConsecutiveFailures: l.opts.outlier.ConsecutiveFailures,
		BaseEjection:        l.opts.outlier.BaseEjection,
		MaxEjection:         l.opts.outlier.MaxEjection,
	}
	if l.opts.outlier.ConsecutiveFailures < 0 {
		b.ejector.BaseEjection = 0
	}
	return b, nil
}

// validAddr checks a backend address: host:port with a numeric port.
func validAddr(a string) error {
	host, port, err := net.SplitHostPort(a)
	if err != nil || host == "" || len(a) > 255 {
		return fmt.Errorf("%w: backend address %q is not host:port", ErrInvalidConfig, a)
	}
	var p int
	for _, c := range port {
		if c < '0' || c > '9' {
			return fmt.Errorf("%w: backend port %q", ErrInvalidConfig, port)
		}
		p = p*10 + int(c-'0')
		if p > 65535 {
			break
		}
	}
	if p < 1 || p > 65535 {
		return fmt.Errorf("%w: backend port %q", ErrInvalidConfig, port)
	}
	for _, c := range host {
		if c <= ' ' || c == 0x7f || c == '/' || c == '@' || c == '?' || c == '#' {
			return fmt.Errorf("%w: backend host %q", ErrInvalidConfig, host)
		}
	}
	return nil
}

// SetBackends replaces the backend set. Backends whose address is kept keep
// their state (health, latency, connections) and take the new weight; removed
// ones finish their in-flight requests and then close their connections.
func (l *LB) SetBackends(cfgs []BackendConfig) error {
	l.setMu.Lock()
	defer l.setMu.Unlock()
	old := map[string]*Backend{}
	if s := l.set.Load(); s != nil {
		for _, b := range s.backends {
			old[b.addr] = b
		}
	}
	seen := map[string]bool{}
	var bs []*Backend
	for _, c := range cfgs {
		if seen[c.Addr] {
			return fmt.Errorf("%w: %s", ErrDuplicateBackend, c.Addr)
		}
		seen[c.Addr] = true
		nb, err := l.newBackend(c)
		if err != nil {
			return err
		}
		if b := old[c.Addr]; b != nil {
			b.weight.Store(nb.weight.Load())
			nb = b
		}
		bs = append(bs, nb)
	}
	if len(bs) == 0 {
		return fmt.Errorf("%w: no backends", ErrInvalidConfig)
	}
	if err := l.publish(bs); err != nil {
		return err
	}
	for addr, b := range old {
		if !seen[addr] {
			l.retire(b)
		}
	}
	return nil
}

func (l *LB) publish(bs []*Backend) error {
	sel, err := newSelector(l.opts.policy, bs, &l.opts)
	if err != nil {
		return err
	}
	l.set.Store(&backendSet{backends: bs, selector: sel})
	return nil
}

func (l *LB) retire(b *Backend) {
	b.mu.Lock()
	if b.state.Load()&stateEjected != 0 {
		l.ejected.Add(-1)
	}
	b.state.Or(stateRemoved)
	b.mu.Unlock()
	b.closeIdle()
}

// AddBackend adds a backend at run time.
func (l *LB) AddBackend(bc BackendConfig) error {
	l.setMu.Lock()
	defer l.setMu.Unlock()
	s := l.set.Load()
	for _, b := range s.backends {
		if b.addr == bc.Addr {
			return fmt.Errorf("%w: %s", ErrDuplicateBackend, bc.Addr)
		}
	}
	nb, err := l.newBackend(bc)
	if err != nil {
		return err
	}
	return l.publish(append(s.backends[:len(s.backends):len(s.backends)], nb))
}

// RemoveBackend removes a backend at run time. Its in-flight requests finish.
// The last backend cannot be removed.
func (l *LB) RemoveBackend(addr string) error {
	l.setMu.Lock()
	defer l.setMu.Unlock()
	s := l.set.Load()
	var bs []*Backend
	var gone *Backend
	for _, b := range s.backends {
		if b.addr == addr {
			gone = b
		} else {
			bs = append(bs, b)
		}
	}
	if gone == nil {
		return fmt.Errorf("%w: %s", ErrUnknownBackend, addr)
	}
	if len(bs) == 0 {
		return fmt.Errorf("%w: cannot remove the last backend", ErrInvalidConfig)
	}
	if err := l.publish(bs); err != nil {
		return err
	}
	l.retire(gone)
	return nil
}

// Drain stops (drain true) or resumes sending new requests to a backend.
// In-flight requests finish either way.
func (l *LB) Drain(addr string, drain bool) error {
	for _, b := range l.set.Load().backends {
		if b.addr == addr {
			if drain {
				b.state.Or(stateAdminDrain)
			} else {
				b.state.And(^stateAdminDrain)
			}
			return nil
		}
	}
	return fmt.Errorf("%w: %s", ErrUnknownBackend, addr)
}

// failure handles a failed request on b: it may eject b.
func (l *LB) failure(b *Backend, now int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	eject, until := b.ejector.FailureAt(monoBase.Add(time.Duration(now)))
	b.failStreak.Store(int32(b.ejector.Streak()))
	if !eject || b.state.Load()&(stateEjected|stateRemoved) != 0 {
		if eject {
			b.ejector.Cancel()
		}
		return
	}
	n := len(l.set.Load().backends)
	if maxEj := int64(n * l.opts.outlier.MaxEjectedPercent / 100); l.ejected.Load()+1 > maxEj {
		b.ejector.Cancel()
		return
	}
	l.ejected.Add(1)
	b.ejectedUntil.Store(monoAt(until))
	b.state.Or(stateEjected)
	b.ejections.Add(1)
	l.log.Warn("lb: backend ejected", "backend", b.addr, "until", until.Sub(monoBase.Add(time.Duration(now))))
}

// driveHealth runs active health checks and reaps idle connections until
// Close.
func (l *LB) driveHealth() {
	defer l.drivers.Done()
	t := time.NewTicker(l.opts.health.Interval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		now := monoNow()
		bs := l.set.Load().backends
		if !l.opts.health.Disabled {
			var wg sync.WaitGroup
			for _, b := range bs {
				wg.Go(func() { l.checkBackend(b) })
			}
			wg.Wait()
		}
		for _, b := range bs {
			b.reapIdle(now)
		}
	}
}

// checkBackend runs one active check of b and applies the result.
func (l *LB) checkBackend(b *Backend) {
	ctx, cancel := context.WithTimeout(context.Background(), l.opts.health.Timeout)
	defer cancel()
	go func() {
		select {
		case <-l.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	res := CheckFail
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+b.addr+l.opts.health.Path, nil)
	if err == nil {
		req.Header.Set("User-Agent", "strata-lb-health")
		if resp, err := l.checker.Do(req); err == nil {
			resp.Body.Close()
			switch {
			case resp.StatusCode >= 200 && resp.StatusCode < 300:
				res = CheckPass
			case resp.StatusCode == http.StatusServiceUnavailable:
				res = CheckNotReady
			}
		}
	}
	l.applyCheck(b, res)
}

// applyCheck feeds a check result to b's health state machine.
func (l *LB) applyCheck(b *Backend, r CheckResult) {
	b.mu.Lock()
	changed := b.health.Observe(r)
	healthy, ready := b.health.Healthy(), b.health.Ready()
	b.mu.Unlock()
	if !changed {
		return
	}
	if healthy {
		b.state.And(^stateUnhealthy)
	} else {
		b.state.Or(stateUnhealthy)
	}
	if ready {
		b.state.And(^stateNotReady)
	} else {
		b.state.Or(stateNotReady)
	}
	l.log.Info("lb: backend health changed", "backend", b.addr, "healthy", healthy, "ready", ready)
}

// Serve accepts connections on ln and proxies their requests until Shutdown
// or Close, then returns ErrClosed.
func (l *LB) Serve(ln net.Listener) error {
	l.mu.Lock()
	if l.closing.Load() {
		l.mu.Unlock()
		return ErrClosed
	}
	l.listeners[ln] = struct{}{}
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		delete(l.listeners, ln)
		l.mu.Unlock()
	}()
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if l.closing.Load() {
				return ErrClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, errTemporary) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		cc := l.newClientConn(c)
		l.mu.Lock()
		if l.closing.Load() {
			l.mu.Unlock()
			c.Close()
			return ErrClosed
		}
		l.conns[cc] = struct{}{}
		l.wg.Add(1)
		l.mu.Unlock()
		go cc.serve()
	}
}

var errTemporary = errors.New("temporary")

// Shutdown stops accepting connections, closes idle client connections,
// lets in-flight requests finish (their connections close after the
// response) and returns when all are done or ctx ends, then stops the
// drivers and closes backend connections.
func (l *LB) Shutdown(ctx context.Context) error {
	l.beginClose()
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		l.closeIdleClients()
		select {
		case <-done:
			l.finish()
			return nil
		case <-ctx.Done():
			l.closeAllClients()
			<-done
			l.finish()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Close closes all listeners and connections at once and stops the drivers.
// It is safe to call after Shutdown and more than once.
func (l *LB) Close() error {
	l.beginClose()
	l.closeAllClients()
	l.wg.Wait()
	l.finish()
	return nil
}

func (l *LB) beginClose() {
	l.mu.Lock()
	l.closing.Store(true)
	for ln := range l.listeners {
		ln.Close()
	}
	l.mu.Unlock()
}

func (l *LB) closeIdleClients() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for cc := range l.conns {
		if cc.idle.Load() {
			cc.c.Close()
		}
	}
}

func (l *LB) closeAllClients() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for cc := range l.conns {
		cc.c.Close()
	}
}

func (l *LB) finish() {
	l.finishMu.Lock()
	defer l.finishMu.Unlock()
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.drivers.Wait()
	for _, b := range l.set.Load().backends {
		b.closeIdle()
	}
	l.checker.CloseIdleConnections()
}

// Backends returns the current backends in configuration order.
func (l *LB) Backends() []*Backend {
	return l.set.Load().backends
}
