package redisstore

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// sharedDeadline hands out one context with a deadline to every call made, within a short
// slice of time, by a caller whose own context can never be cancelled (context.Background and
// its values): a call's bound then costs a clock read and an atomic load instead of a new
// context and a runtime timer per call, which on a cache hit is a good part of the client's
// work. A context handed out at t has its deadline in (t + timeout*7/8, t + timeout], so every
// call still returns within its timeout, and none is cut short by more than an eighth of it.
type sharedDeadline struct {
	mu  sync.Mutex // serialises renewals
	cur atomic.Pointer[deadlineSlice]
}

type deadlineSlice struct {
	ctx    context.Context
	cancel context.CancelFunc // kept so that the context's resources are released at its deadline
	until  time.Time          // hand ctx out before this instant only
}

// get returns a context whose deadline is at most timeout and at least 7/8 of it away. A
// sharedDeadline is used with one timeout only.
func (d *sharedDeadline) get(timeout time.Duration) context.Context {
	now := time.Now()
	if s := d.cur.Load(); s != nil && now.Before(s.until) {
		return s.ctx
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if s := d.cur.Load(); s != nil && now.Before(s.until) {
		return s.ctx
	}
	ctx, cancel := context.WithDeadline(context.Background(), now.Add(timeout))
	d.cur.Store(&deadlineSlice{ctx: ctx, cancel: cancel, until: now.Add(timeout / 8)})
	return ctx
}
