package writebehind

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/strata-project/strata/cache"
)

// Errors callers act on.
var (
	// ErrFull reports a write refused because the queue stayed full for Config.WaitTimeout.
	// The write was not queued.
	ErrFull = errors.New("writebehind: queue full")
	// ErrClosed reports a call on a closed WriteBehind.
	ErrClosed = errors.New("writebehind: closed")
)

// Record is one queued write.
type Record struct {
	// Offset is the record's position in the queue, assigned by Queue.Append; it grows with
	// every record.
	Offset uint64
	// Key is the key written.
	Key string
	// Value is the value written; nil for a delete.
	Value []byte
	// Deleted marks a delete.
	Deleted bool
	// Stamp orders writes of Key made through different WriteBehinds (app servers) sharing
	// a target: the wall-clock time of the write in Unix nanoseconds, strictly increasing
	// within one WriteBehind. Assigned by Write and Delete; 0 in records queued before stamps
	// existed.
	Stamp int64
}

// Queue is the durable queue behind write-behind. Log (a local append-only log) is the
// embedded implementation.
type Queue interface {
	// Append assigns recs their offsets, in order, after every earlier record's, and returns
	// once they are durable (as the queue's sync policy defines it). Append is never called
	// concurrently.
	Append(ctx context.Context, recs []Record) error
	// Ack records that every record up to and including offset was applied; the queue may
	// drop them. Records not acknowledged are replayed after a restart.
	Ack(ctx context.Context, offset uint64) error
	// Replay returns the records appended and not acknowledged before this process opened
	// the queue, in offset order. It is called once, by New.
	Replay(ctx context.Context) ([]Record, error)
	// Close releases the queue.
	Close() error
}

// Target is where the flusher applies writes: the database. docsource.Source is one.
type Target interface {
	// Apply writes value under key (or deletes key when deleted is set) on top of whatever
	// is there, and returns the version written. It may be called again for a write it
	// already applied (after a crash): applying the same newest value again is harmless.
	//
	// stamp is the write's Record.Stamp. A target shared by several WriteBehinds keeps the
	// newest stamp applied to each key and ignores a write with an older one (returning
	// version 0), so that the last write made wins whichever app server's flusher comes
	// last; stamp 0 is applied unconditionally.
	Apply(ctx context.Context, key string, value []byte, deleted bool, stamp int64) (version int64, err error)
}

// Config configures a WriteBehind. Queue and Target are required.
type Config struct {
	// Queue is the durable queue. Required: a write-behind without one loses acknowledged
	// writes on a crash, and New refuses it with cache.ErrConfig.
	Queue Queue
	// Target receives the writes. Required.
	Target Target
	// MaxPending is the number of writes queued and not yet applied beyond which writers
	// wait. Default 10,000.
	MaxPending int
	// WaitTimeout is how long a writer waits for room before getting ErrFull. Default 1s.
	WaitTimeout time.Duration
	// BatchSize is the most records the flusher applies in one round (after coalescing per
	// key, fewer writes reach the target). Default 256.
	BatchSize int
	// ApplyTimeout bounds one Target.Apply. Default 10s.
	ApplyTimeout time.Duration
	// RetryInterval is the first pause after a failed Apply; it doubles up to 5 seconds.
	// Default 50ms.
	RetryInterval time.Duration
	// OnApplied, when not nil, is called after the newest queued write of key was applied at
	// version, before the write leaves the pending overlay: invalidate the cache there
	// (cache.Cache.Invalidate), so that no read falls between the overlay and a stale cache.
	OnApplied func(key string, version int64)
	// Logger receives apply errors. Default slog.Default().
	Logger *slog.Logger
}

// WriteBehind acknowledges writes once they are in a durable queue and applies them to the
// target in the background. It is safe for concurrent use.
type WriteBehind struct {
	cfg   Config
	q     Queue
	slots chan struct{} // one token per queued write that waits for room
	stage chan *staged  // writes waiting for the appender

	mu      sync.Mutex        // protects pending, overlay, drained, err
	pending []queued          // appended, not yet applied, in offset order
	overlay map[string]Record // newest pending write of each key
	drained chan struct{}     // closed and replaced whenever pending empties
	kick    chan struct{}     // wakes the flusher

	lastStamp atomic.Int64 // the newest Record.Stamp given

	stop    chan struct{}
	wg      sync.WaitGroup
	closing sync.Once
}

type queued struct {
	Record
	slotted bool // holds a slot token
}

type staged struct {
	rec  Record
	done chan error
}

// New validates cfg, replays the queue's unapplied records and starts the appender and the
// flusher. Configuration errors wrap cache.ErrConfig.
func New(cfg Config) (*WriteBehind, error) {
	if cfg.Queue == nil {
		return nil, fmt.Errorf("%w: writebehind: a durable Queue is required", cache.ErrConfig)
	}
	if cfg.Target == nil {
		return nil, fmt.Errorf("%w: writebehind: Target is required", cache.ErrConfig)
	}
	if cfg.MaxPending < 0 || cfg.WaitTimeout < 0 || cfg.BatchSize < 0 || cfg.ApplyTimeout < 0 || cfg.RetryInterval < 0 {
		return nil, fmt.Errorf("%w: writebehind: negative setting", cache.ErrConfig)
	}
	cfg.MaxPending = cmpOr(cfg.MaxPending, 10_000)
	cfg.WaitTimeout = cmpOr(cfg.WaitTimeout, time.Second)
	cfg.BatchSize = cmpOr(cfg.BatchSize, 256)
	cfg.ApplyTimeout = cmpOr(cfg.ApplyTimeout, 10*time.Second)
	cfg.RetryInterval = cmpOr(cfg.RetryInterval, 50*time.Millisecond)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	recs, err := cfg.Queue.Replay(context.Background())
	if err != nil {
		return nil, fmt.Errorf("writebehind: replay: %w", err)
	}
	w := &WriteBehind{
		cfg: cfg, q: cfg.Queue,
		slots:   make(chan struct{}, cfg.MaxPending),
		stage:   make(chan *staged, cfg.MaxPending),
		overlay: make(map[string]Record),
		drained: make(chan struct{}),
		kick:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
	}
	for _, r := range recs {
		w.pending = append(w.pending, queued{Record: r})
		w.overlay[r.Key] = r
	}
	if len(w.pending) == 0 {
		close(w.drained)
	}
	w.wg.Add(2)
	go w.appender()
	go w.flusher()
	w.wake()
	return w, nil
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Write queues value under key and returns once it is durable in the queue. When the queue
// is full it waits up to WaitTimeout, then fails with ErrFull; the write is then not queued.
func (w *WriteBehind) Write(ctx context.Context, key string, value []byte) error {
	if value == nil {
		value = []byte{}
	}
	return w.enqueue(ctx, Record{Key: key, Value: value, Stamp: w.stamp()})
}

// Delete queues a delete of key, like Write.
func (w *WriteBehind) Delete(ctx context.Context, key string) error {
	return w.enqueue(ctx, Record{Key: key, Deleted: true, Stamp: w.stamp()})
}

// stamp returns the wall-clock time in Unix nanoseconds, made strictly greater than every
// stamp this WriteBehind gave before (a clock stepping back does not reorder its writes).
func (w *WriteBehind) stamp() int64 {
	now := time.Now().UnixNano()
	for {
		last := w.lastStamp.Load()
		next := max(now, last+1)
		if w.lastStamp.CompareAndSwap(last, next) {
			return next
		}
	}
}

func (w *WriteBehind) enqueue(ctx context.Context, r Record) error {
	select {
	case <-w.stop:
		return ErrClosed
	default:
	}
	select {
	case w.slots <- struct{}{}:
	default:
		t := time.NewTimer(w.cfg.WaitTimeout)
		defer t.Stop()
		select {
		case w.slots <- struct{}{}:
		case <-t.C:
			return fmt.Errorf("%w: %d writes pending for %v", ErrFull, w.cfg.MaxPending, w.cfg.WaitTimeout)
		case <-ctx.Done():
			return ctx.Err()
		case <-w.stop:
			return ErrClosed
		}
	}
	s := &staged{rec: r, done: make(chan error, 1)}
	select {
	case w.stage <- s:
	case <-w.stop:
		<-w.slots
		return ErrClosed
	}
	// Wait for durability even if ctx ends: the outcome must be known to the caller.
	return <-s.done
}

// appender appends staged writes to the queue in batches (one sync for all the writers
// that arrived meanwhile: group commit) and moves them to pending.
func (w *WriteBehind) appender() {
	defer w.wg.Done()
	var batch []*staged
	for {
		batch = batch[:0]
		select {
		case s := <-w.stage:
			batch = append(batch, s)
		case <-w.stop:
			w.failStaged()
			return
		}
	more:
		for len(batch) < w.cfg.BatchSize {
			select {
			case s := <-w.stage:
				batch = append(batch, s)
			default:
				break more
			}
		}
		recs := make([]Record, len(batch))
		for i, s := range batch {
			recs[i] = s.rec
		}
		err := w.q.Append(context.Background(), recs)
		if err == nil {
			w.mu.Lock()
			if len(w.pending) == 0 {
				w.drained = make(chan struct{})
			}
			for _, r := range recs {
				w.pending = append(w.pending, queued{Record: r, slotted: true})
				w.overlay[r.Key] = r
			}
			w.mu.Unlock()
			w.wake()
		}
		for _, s := range batch {
			if err != nil {
				<-w.slots
				s.done <- fmt.Errorf("writebehind: append: %w", err)
			} else {
				s.done <- nil
			}
		}
	}
}

// failStaged answers the writers still staged at Close.
func (w *WriteBehind) failStaged() {
	for {
		select {
		case s := <-w.stage:
			<-w.slots
			s.done <- ErrClosed
		default:
			return
		}
	}
}

func (w *WriteBehind) wake() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// Get returns the newest pending (acknowledged, not yet applied) write of key: ok is false
// when there is none and the caller should read the cache or the database. deleted reports
// a pending delete.
func (w *WriteBehind) Get(key string) (value []byte, deleted, ok bool) {
	w.mu.Lock()
	r, ok := w.overlay[key]
	w.mu.Unlock()
	return r.Value, r.Deleted, ok
}

// Pending returns the number of writes queued and not yet applied (the queue depth).
func (w *WriteBehind) Pending() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.pending)
}

// Flush waits until every write acknowledged so far is applied, or ctx ends.
func (w *WriteBehind) Flush(ctx context.Context) error {
	for {
		w.mu.Lock()
		empty, drained := len(w.pending) == 0, w.drained
		w.mu.Unlock()
		if empty {
			return nil
		}
		select {
		case <-drained:
		case <-ctx.Done():
			return ctx.Err()
		case <-w.stop:
			return ErrClosed
		}
	}
}

// flusher applies pending writes in batches: it coalesces each batch per key (the newest
// write wins), applies each key, acknowledges the batch to the queue and only then drops it
// from pending. A failed apply is retried with backoff, never dropped.
func (w *WriteBehind) flusher() {
	defer w.wg.Done()
	pause := w.cfg.RetryInterval
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		w.mu.Lock()
		n := min(len(w.pending), w.cfg.BatchSize)
		batch := append([]queued(nil), w.pending[:n]...)
		w.mu.Unlock()
		if n == 0 {
			select {
			case <-w.kick:
				continue
			case <-w.stop:
				return
			}
		}
		if err := w.apply(batch); err != nil {
			w.cfg.Logger.Error("writebehind: apply failed, will retry", "err", err, "pause", pause)
			retry.Reset(pause)
			select {
			case <-retry.C:
			case <-w.stop:
				return
			}
			pause = min(2*pause, 5*time.Second)
			continue
		}
		pause = w.cfg.RetryInterval
		last := batch[n-1].Offset
		if err := w.q.Ack(context.Background(), last); err != nil {
			// Harmless: the batch is applied; a replay would apply it again.
			w.cfg.Logger.Warn("writebehind: ack failed", "offset", last, "err", err)
		}
		w.mu.Lock()
		w.pending = w.pending[n:]
		freed := 0
		for _, q := range batch {
			if cur, ok := w.overlay[q.Key]; ok && cur.Offset <= last {
				delete(w.overlay, q.Key)
			}
			if q.slotted {
				freed++
			}
		}
		if len(w.pending) == 0 {
			close(w.drained)
			w.pending = nil
		}
		w.mu.Unlock()
		for range freed {
			<-w.slots
		}
	}
}

// apply coalesces batch per key and applies the newest write of each key.
func (w *WriteBehind) apply(batch []queued) error {
	newest := make(map[string]int, len(batch))
	for i, q := range batch {
		newest[q.Key] = i
	}
	for i, q := range batch {
		if newest[q.Key] != i {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), w.cfg.ApplyTimeout)
		v, err := w.cfg.Target.Apply(ctx, q.Key, q.Value, q.Deleted, q.Stamp)
		cancel()
		if err != nil {
			return fmt.Errorf("apply %q: %w", q.Key, err)
		}
		if h := w.cfg.OnApplied; h != nil {
			h(q.Key, v)
		}
	}
	return nil
}

// Close stops the appender and the flusher. Writes acknowledged and not yet applied stay in
// the queue and are replayed by the next New over it; call Flush first to apply them now.
// Close closes the queue. It is idempotent.
func (w *WriteBehind) Close() error {
	var err error
	w.closing.Do(func() {
		close(w.stop)
		w.wg.Wait()
		err = w.q.Close()
	})
	return err
}
