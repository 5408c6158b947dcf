package breaker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// ErrOpen is returned, unwrapped, when the breaker is open and refuses a call.
var ErrOpen = errors.New("breaker: open")

// ErrTooManyProbes is returned, unwrapped, when the breaker is half-open and already has the
// maximum number of probe calls in flight.
var ErrTooManyProbes = errors.New("breaker: too many probe calls in half-open state")

// ErrInvalidConfig is wrapped by the error [New] returns for an invalid [Config].
var ErrInvalidConfig = errors.New("breaker: invalid config")

// State is the state of a breaker.
type State uint8

// The three states of a breaker.
const (
	Closed   State = iota // calls pass
	HalfOpen              // a limited number of probe calls pass
	Open                  // calls are refused
)

// String returns "closed", "half-open" or "open".
func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case HalfOpen:
		return "half-open"
	case Open:
		return "open"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// Outcome is how a call's result counts for the breaker.
type Outcome uint8

// The outcomes a [Config.Classify] function returns.
const (
	Success Outcome = iota // the dependency worked
	Failure                // the dependency failed
	Ignored                // the result says nothing about the dependency (e.g. the caller gave up)
)

// DefaultClassify is the classification used when [Config.Classify] is nil: nil is a success,
// an error matching context.Canceled is ignored (the caller gave up; that is not the
// dependency's fault), and any other error is a failure. A context.DeadlineExceeded is a
// failure: the dependency was too slow for the caller.
func DefaultClassify(err error) Outcome {
	if err == nil {
		return Success
	}
	if errors.Is(err, context.Canceled) {
		return Ignored
	}
	return Failure
}

// Transition describes one state change, as passed to [Config.OnStateChange].
type Transition struct {
	Name       string    // Config.Name
	From, To   State     // the old and the new state
	Generation uint32    // the generation that starts with this change; orders transitions
	At         time.Time // the instant of the call that caused the change
}

// Config configures a [Breaker]. The zero value is valid: it trips after 5 consecutive failures,
// stays open 10 seconds, then lets one probe through, which closes the breaker if it succeeds.
type Config struct {
	// Name identifies the breaker in transitions. Default "".
	Name string

	// ConsecutiveFailures trips the breaker after this many failures in a row while closed.
	// Default 5 when neither ratio policy is set; 0 with a ratio policy set disables it.
	ConsecutiveFailures int

	// FailureRatio trips the breaker when failures/calls in the window reach it (0 < r <= 1).
	// Default 0: policy off.
	FailureRatio float64

	// SlowCallRatio trips the breaker when slow calls/calls in the window reach it
	// (0 < r <= 1). Default 0: policy off.
	SlowCallRatio float64

	// SlowCallDuration is how long a call must take to count as slow. Default 1s; used only
	// when SlowCallRatio is set. In half-open, a slow probe counts as a failed probe.
	SlowCallDuration time.Duration

	// MinCalls is the number of calls the window must hold before a ratio policy can trip.
	// Default 10.
	MinCalls int

	// WindowCalls sizes a count-based window: the last WindowCalls calls. Default 100; ignored
	// when WindowDuration is set.
	WindowCalls int

	// WindowDuration makes the window time-based: the calls completed in the last
	// WindowDuration. Default 0: count-based.
	WindowDuration time.Duration

	// WindowBuckets is the number of buckets a time-based window is split into; the window
	// slides one bucket at a time. Default 10.
	WindowBuckets int

	// OpenDuration is how long the breaker stays open after its first trip. Default 10s.
	OpenDuration time.Duration

	// OpenBackoff multiplies the open duration at each further trip without an intervening
	// close (a failed half-open probe). Default 1: no backoff. Must be >= 1.
	OpenBackoff float64

	// MaxOpenDuration caps the open duration grown by OpenBackoff. Default 5 minutes, or
	// OpenDuration if that is longer.
	MaxOpenDuration time.Duration

	// HalfOpenProbes is the largest number of probe calls in flight at once when half-open.
	// Default 1.
	HalfOpenProbes int

	// HalfOpenSuccesses is the number of probe successes that close the breaker. Default
	// HalfOpenProbes.
	HalfOpenSuccesses int

	// Classify judges a call's error. Default nil: [DefaultClassify]. It is not consulted for
	// a panic, which is always a failure.
	Classify func(err error) Outcome

	// OnStateChange, when not nil, is called after each state change, synchronously, in the
	// goroutine that caused it, without any lock of the breaker held. Transitions from
	// concurrent callers may be delivered out of order; Transition.Generation orders them.
	// Default nil.
	OnStateChange func(Transition)
}

// The state word packs, from the low bits: the state (2 bits), the closed-state failure streak
// (30 bits) and the generation (32 bits).
const (
	stateBits  = 2
	streakMask = (1<<30 - 1) << stateBits
	streakOne  = 1 << stateBits
	genShift   = 32
)

func stateOf(w uint64) State          { return State(w & (1<<stateBits - 1)) }
func genOf(w uint64) uint32           { return uint32(w >> genShift) }
func streakOf(w uint64) int           { return int(w&streakMask) >> stateBits }
func word(s State, gen uint32) uint64 { return uint64(gen)<<genShift | uint64(s) }

const (
	stripeBits = 3
	numStripes = 1 << stripeBits
)

// stripe holds one share of the metrics counters. It fills two cache lines, so that
// neighbouring stripes do not share a line nor a line pair fetched together.
type stripe struct {
	successes, failures, ignored, slow, rejected, rejectedProbes atomic.Uint64
	_                                                            [128 - 6*8]byte
}

// Breaker is a circuit breaker. It is safe for concurrent use. Create it with [New].
type Breaker struct {
	// word is the state word: state, failure streak, generation. State and generation change
	// only with mu held; the streak changes lock-free by compare-and-swap.
	word atomic.Uint64
	// openUntil is the end of the current or last open period, in nanoseconds since epoch.
	// Written with mu held before the state word turns open; read lock-free to refuse calls.
	openUntil atomic.Int64

	name         string
	streakLimit  int
	failureRatio float64
	slowRatio    float64
	slowDur      time.Duration
	minCalls     int
	openDur      time.Duration
	backoff      float64
	maxOpen      time.Duration
	maxProbes    int
	needSucc     int
	classify     func(error) Outcome
	onChange     func(Transition)
	needTime     bool      // every result needs the current instant (time window or slow calls)
	epoch        time.Time // origin of Token.start and openUntil (time.Sub uses the monotonic clock when both instants carry it)

	_       [128]byte // keeps the stripes off the cache lines of the fields read on every call
	stripes [numStripes]stripe

	mu             sync.Mutex // protects the fields below and state/generation changes of word
	openStreak     int        // trips since the last close, for OpenBackoff
	probes         int        // probes in flight in the current half-open generation
	probeSuccesses int        // probe successes in the current half-open generation
	trips          uint64     // transitions to open since New, for Stats
	win            *window    // nil without a ratio policy
}

// New returns a breaker configured by cfg, or an error wrapping [ErrInvalidConfig].
func New(cfg Config) (*Breaker, error) {
	switch {
	case cfg.ConsecutiveFailures < 0, cfg.MinCalls < 0, cfg.WindowCalls < 0, cfg.WindowBuckets < 0,
		cfg.HalfOpenProbes < 0, cfg.HalfOpenSuccesses < 0:
		return nil, fmt.Errorf("%w: negative count", ErrInvalidConfig)
	case cfg.SlowCallDuration < 0, cfg.WindowDuration < 0, cfg.OpenDuration < 0, cfg.MaxOpenDuration < 0:
		return nil, fmt.Errorf("%w: negative duration", ErrInvalidConfig)
	case !(cfg.FailureRatio >= 0 && cfg.FailureRatio <= 1), !(cfg.SlowCallRatio >= 0 && cfg.SlowCallRatio <= 1):
		return nil, fmt.Errorf("%w: ratio outside [0, 1]", ErrInvalidConfig)
	case cfg.OpenBackoff != 0 && !(cfg.OpenBackoff >= 1 && !math.IsInf(cfg.OpenBackoff, 1)):
		return nil, fmt.Errorf("%w: OpenBackoff must be >= 1", ErrInvalidConfig)
	}
	b := &Breaker{
		name:         cfg.Name,
		streakLimit:  cfg.ConsecutiveFailures,
		failureRatio: cfg.FailureRatio,
		slowRatio:    cfg.SlowCallRatio,
		slowDur:      cmp.Or(cfg.SlowCallDuration, time.Second),
		minCalls:     cmp.Or(cfg.MinCalls, 10),
		openDur:      cmp.Or(cfg.OpenDuration, 10*time.Second),
		backoff:      cfg.OpenBackoff,
		maxProbes:    cmp.Or(cfg.HalfOpenProbes, 1),
		classify:     cfg.Classify,
		onChange:     cfg.OnStateChange,
		epoch:        time.Now(),
	}
	ratio := b.failureRatio > 0 || b.slowRatio > 0
	if !ratio && b.streakLimit == 0 {
		b.streakLimit = 5
	}
	if b.streakLimit > streakMask>>stateBits {
		return nil, fmt.Errorf("%w: ConsecutiveFailures too large", ErrInvalidConfig)
	}
	if b.backoff == 0 {
		b.backoff = 1
	}
	b.maxOpen = cmp.Or(cfg.MaxOpenDuration, max(5*time.Minute, b.openDur))
	b.needSucc = cmp.Or(cfg.HalfOpenSuccesses, b.maxProbes)
	if ratio {
		b.win = newWindow(cmp.Or(cfg.WindowCalls, 100), cfg.WindowDuration, cmp.Or(cfg.WindowBuckets, 10))
	}
	b.needTime = b.slowRatio > 0 || cfg.WindowDuration > 0
	return b, nil
}

// Token is the admission of one call by [Breaker.Allow]. Report the call's result with exactly
// one call to [Token.Done] or [Token.DoneAt]; a half-open probe slot stays taken until then.
// The zero Token's Done does nothing.
type Token struct {
	b     *Breaker
	gen   uint32
	probe bool
	start int64 // admission instant as nanoseconds since Breaker.epoch, only for slow calls
}

// Done reports the result of the call; err is judged by [Config.Classify].
func (t Token) Done(err error) {
	if t.b != nil {
		t.b.record(t, time.Time{}, t.b.judge(err))
	}
}

// DoneAt is Done at the instant now.
func (t Token) DoneAt(now time.Time, err error) {
	if t.b != nil {
		t.b.record(t, now, t.b.judge(err))
	}
}

// Allow asks to make one call. On success, report the call's result with the token's Done;
// otherwise the error is [ErrOpen] or [ErrTooManyProbes] and no call must be made. Allow does
// not read the clock when the breaker is closed and no time-dependent policy is configured.
func (b *Breaker) Allow() (Token, error) {
	w := b.word.Load()
	if stateOf(w) == Closed && !b.needTime {
		return Token{b: b, gen: genOf(w)}, nil
	}
	return b.AllowAt(time.Now())
}

// AllowAt is Allow at the instant now.
func (b *Breaker) AllowAt(now time.Time) (Token, error) {
	w := b.word.Load()
	switch stateOf(w) {
	case Closed:
		t := Token{b: b, gen: genOf(w)}
		if b.slowRatio > 0 {
			t.start = int64(now.Sub(b.epoch))
		}
		return t, nil
	case Open:
		// If the breaker has re-opened since w was loaded, openUntil is that of the newer
		// period, which is open too.
		if int64(now.Sub(b.epoch)) < b.openUntil.Load() {
			b.stripe().rejected.Add(1)
			return Token{}, ErrOpen
		}
	}
	return b.allowLocked(now)
}

// AllowFunc is Allow returning the report as a function, for callers that want the
// `done func(err error)` shape. It allocates the function; prefer Allow on hot paths.
func (b *Breaker) AllowFunc() (done func(err error), err error) {
	t, err := b.Allow()
	if err != nil {
		return nil, err
	}
	return t.Done, nil
}

func (b *Breaker) allowLocked(now time.Time) (Token, error) {
	var tr *Transition
	b.mu.Lock()
	w := b.word.Load()
	switch stateOf(w) {
	case Closed: // closed since the caller looked
		b.mu.Unlock()
		t := Token{b: b, gen: genOf(w)}
		if b.slowRatio > 0 {
			t.start = int64(now.Sub(b.epoch))
		}
		return t, nil
	case Open:
		if int64(now.Sub(b.epoch)) < b.openUntil.Load() {
			b.mu.Unlock()
			b.stripe().rejected.Add(1)
			return Token{}, ErrOpen
		}
		tr = b.setStateLocked(HalfOpen, now)
		b.probes, b.probeSuccesses = 0, 0
	}
	if b.probes >= b.maxProbes {
		b.mu.Unlock()
		b.stripe().rejectedProbes.Add(1)
		return Token{}, ErrTooManyProbes
	}
	b.probes++
	t := Token{b: b, gen: genOf(b.word.Load()), probe: true}
	if b.slowRatio > 0 {
		t.start = int64(now.Sub(b.epoch))
	}
	b.mu.Unlock()
	b.notify(tr)
	return t, nil
}

// Do calls fn if the breaker allows it and records the result. It returns [ErrOpen] or
// [ErrTooManyProbes] without calling fn when refused, and fn's error otherwise. If fn panics,
// the panic counts as a failure and continues to unwind. Do does not allocate.
func (b *Breaker) Do(ctx context.Context, fn func(context.Context) error) error {
	t, err := b.Allow()
	if err != nil {
		return err
	}
	returned := false
	defer func() {
		if !returned {
			t.b.record(t, time.Time{}, Failure)
		}
	}()
	err = fn(ctx)
	returned = true
	t.Done(err)
	return err
}

// Execute is [Breaker.Do] for a function that returns a value. On refusal it returns the zero
// T and [ErrOpen] or [ErrTooManyProbes].
func Execute[T any](ctx context.Context, b *Breaker, fn func(context.Context) (T, error)) (T, error) {
	t, err := b.Allow()
	if err != nil {
		var zero T
		return zero, err
	}
	returned := false
	defer func() {
		if !returned {
			t.b.record(t, time.Time{}, Failure)
		}
	}()
	v, err := fn(ctx)
	returned = true
	t.Done(err)
	return v, err
}

func (b *Breaker) judge(err error) Outcome {
	if b.classify != nil {
		return b.classify(err)
	}
	if err == nil {
		return Success
	}
	return DefaultClassify(err)
}

// stripe returns the counter stripe of the calling goroutine. It hashes the address of a local
// variable: goroutines run on distinct stacks, so a goroutine keeps to one stripe (its cache
// lines stay with its processor) and parallel goroutines rarely share one. The address is only
// hashed, never dereferenced.
func (b *Breaker) stripe() *stripe {
	var local byte
	h := uint64(uintptr(unsafe.Pointer(&local))>>12) * 0x9E3779B97F4A7C15
	return &b.stripes[h>>(64-stripeBits)]
}

// record applies one result. now is zero when the caller did not give an instant; the clock is
// then read only if needed.
func (b *Breaker) record(t Token, now time.Time, o Outcome) {
	slow := false
	if b.slowRatio > 0 && o != Ignored {
		if now.IsZero() {
			now = time.Now()
		}
		slow = time.Duration(int64(now.Sub(b.epoch))-t.start) >= b.slowDur
	}
	s := b.stripe()
	switch o {
	case Success:
		s.successes.Add(1)
	case Failure:
		s.failures.Add(1)
	default:
		s.ignored.Add(1)
		if t.probe {
			b.releaseProbe(t)
		}
		return
	}
	if slow {
		s.slow.Add(1)
	}
	if t.probe {
		if now.IsZero() {
			now = time.Now()
		}
		b.probeDone(t, now, o == Failure || slow)
		return
	}

	trip := false
	if b.streakLimit > 0 {
		trip = b.countStreak(t.gen, o == Failure)
	}
	if b.win != nil {
		if now.IsZero() {
			now = time.Now()
		}
		b.mu.Lock()
		if w := b.word.Load(); genOf(w) == t.gen && stateOf(w) == Closed {
			b.win.add(now, o == Failure, slow)
			trip = trip || b.win.shouldTrip(now, b.minCalls, b.failureRatio, b.slowRatio)
		}
		b.mu.Unlock()
	}
	if trip {
		if now.IsZero() {
			now = time.Now()
		}
		b.trip(t.gen, now)
	}
}

// countStreak updates the closed-state failure streak lock-free and reports whether it reached
// the limit. A success writes the word only if the streak is non-zero.
func (b *Breaker) countStreak(gen uint32, failed bool) bool {
	for {
		w := b.word.Load()
		if genOf(w) != gen || stateOf(w) != Closed {
			return false
		}
		n := streakOf(w)
		if !failed {
			if n == 0 || b.word.CompareAndSwap(w, w&^streakMask) {
				return false
			}
			continue
		}
		if n+1 >= b.streakLimit {
			return true
		}
		if b.word.CompareAndSwap(w, w+streakOne) {
			return false
		}
	}
}

// trip opens the breaker if it is still closed in generation gen.
func (b *Breaker) trip(gen uint32, now time.Time) {
	b.mu.Lock()
	w := b.word.Load()
	if genOf(w) != gen || stateOf(w) != Closed {
		b.mu.Unlock()
		return
	}
	tr := b.openLocked(now)
	b.mu.Unlock()
	b.notify(tr)
}

func (b *Breaker) releaseProbe(t Token) {
	b.mu.Lock()
	if w := b.word.Load(); genOf(w) == t.gen && stateOf(w) == HalfOpen {
		b.probes--
	}
	b.mu.Unlock()
}

func (b *Breaker) probeDone(t Token, now time.Time, failed bool) {
	var tr *Transition
	b.mu.Lock()
	if w := b.word.Load(); genOf(w) == t.gen && stateOf(w) == HalfOpen {
		b.probes--
		if failed {
			tr = b.openLocked(now)
		} else if b.probeSuccesses++; b.probeSuccesses >= b.needSucc {
			b.openStreak = 0
			if b.win != nil {
				b.win.reset()
			}
			tr = b.setStateLocked(Closed, now)
		}
	}
	b.mu.Unlock()
	b.notify(tr)
}

// openLocked opens the breaker for the open duration of this trip.
func (b *Breaker) openLocked(now time.Time) *Transition {
	d := float64(b.openDur) * math.Pow(b.backoff, float64(b.openStreak))
	if d > float64(b.maxOpen) {
		d = float64(b.maxOpen)
	}
	b.openStreak++
	b.trips++
	b.openUntil.Store(int64(now.Add(time.Duration(d)).Sub(b.epoch)))
	return b.setStateLocked(Open, now)
}

// setStateLocked starts a new generation in state s, with a zero failure streak. Lock-free
// writers of the streak compare-and-swap on the whole word, so they fail against this store
// and then see the new generation.
func (b *Breaker) setStateLocked(s State, now time.Time) *Transition {
	w := b.word.Load()
	gen := genOf(w) + 1
	b.word.Store(word(s, gen))
	if b.onChange == nil {
		return nil
	}
	return &Transition{Name: b.name, From: stateOf(w), To: s, Generation: gen, At: now}
}

func (b *Breaker) notify(tr *Transition) {
	if tr != nil {
		b.onChange(*tr)
	}
}

// State returns the current state. An open breaker whose open period has ended reports Open
// until the next call moves it to half-open.
func (b *Breaker) State() State { return stateOf(b.word.Load()) }

// Stats is a snapshot of a breaker's counters, for metrics. Counters are totals since [New].
type Stats struct {
	State               State
	Generation          uint32 // incremented by every state change
	ConsecutiveFailures int    // current closed-state failure streak
	Successes           uint64 // calls recorded as successes (including probes)
	Failures            uint64 // calls recorded as failures, panics included
	Ignored             uint64 // calls whose result was classified Ignored
	Slow                uint64 // calls slower than SlowCallDuration (only measured with SlowCallRatio)
	Rejected            uint64 // calls refused with ErrOpen
	RejectedProbes      uint64 // calls refused with ErrTooManyProbes
	Trips               uint64 // transitions to open
}

// Stats returns a snapshot of the counters. Counters are read one by one, so a snapshot taken
// under load may be off by the calls that completed while it was taken.
func (b *Breaker) Stats() Stats {
	w := b.word.Load()
	s := Stats{State: stateOf(w), Generation: genOf(w), ConsecutiveFailures: streakOf(w)}
	for i := range b.stripes {
		p := &b.stripes[i]
		s.Successes += p.successes.Load()
		s.Failures += p.failures.Load()
		s.Ignored += p.ignored.Load()
		s.Slow += p.slow.Load()
		s.Rejected += p.rejected.Load()
		s.RejectedProbes += p.rejectedProbes.Load()
	}
	b.mu.Lock()
	s.Trips = b.trips
	b.mu.Unlock()
	return s
}
