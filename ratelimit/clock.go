package ratelimit

import (
	"sync"
	"sync/atomic"
	"time"
)

// clock turns instants into int64 nanoseconds since the limiter's epoch.
// AllowNAt converts the instant it is given (with its monotonic reading
// when both instants carry one, as time.Now's do, and the wall clock
// otherwise, as for instants built with time.Date in tests). The plain forms
// read the monotonic clock, or the CoarseClock when one is configured.
type clock struct {
	epoch  time.Time
	coarse *CoarseClock // nil: read the monotonic clock on every call
}

func newClock() clock { return clock{epoch: time.Now()} }

func (c clock) nanos(t time.Time) int64 { return int64(t.Sub(c.epoch)) }

// now is nanos(time.Now()), or the coarse clock's reading. time.Since reads
// only the monotonic clock, about half the cost of a full time.Now.
func (c clock) now() int64 {
	if c.coarse != nil {
		return c.coarse.nanos.Load()
	}
	return int64(time.Since(c.epoch))
}

// CoarseClock is a monotonic clock that is read from memory: a goroutine it
// owns advances it every Resolution, and Close stops that goroutine. Reading
// the system clock costs tens of nanoseconds on many virtual machines, more
// than the rest of a GCRA decision; with a CoarseClock the decision reads
// one shared word instead, as nginx's limit_req reads its cached time.
//
// The price is precision: a decision is made at an instant up to one
// Resolution (plus scheduling delay) in the past, so in any interval of
// length T a GCRA key passes at most rate*(T+lag) + burst events, where lag
// is the clock's delay. A CoarseClock is safe for concurrent use and may be
// shared by several limiters.
type CoarseClock struct {
	epoch time.Time
	nanos atomic.Int64 // monotonic nanoseconds since epoch, as of the last tick
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once
}

// NewCoarseClock starts a CoarseClock that advances every resolution.
// Default (resolution <= 0): one millisecond.
func NewCoarseClock(resolution time.Duration) *CoarseClock {
	if resolution <= 0 {
		resolution = time.Millisecond
	}
	c := &CoarseClock{epoch: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	go c.run(resolution)
	return c
}

func (c *CoarseClock) run(resolution time.Duration) {
	defer close(c.done)
	t := time.NewTicker(resolution)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			c.nanos.Store(int64(time.Since(c.epoch)))
		case <-c.stop:
			return
		}
	}
}

// Now returns the clock's current reading, a time.Time with a monotonic
// reading that may be up to one resolution old.
func (c *CoarseClock) Now() time.Time {
	return c.epoch.Add(time.Duration(c.nanos.Load()))
}

// Close stops the clock's goroutine and waits for it to exit; the clock
// stays readable but no longer advances. Close may be called more than once.
func (c *CoarseClock) Close() {
	c.once.Do(func() { close(c.stop) })
	<-c.done
}
