package lb

import (
	"bufio"
	"context"
	"errors"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ErrBackendFull is returned when a backend has MaxConns connections open
// and MaxPending requests already waiting for one.
var ErrBackendFull = errors.New("lb: backend connection limit reached")

// State bits of a Backend. A backend receives new requests only when none is
// set (an expired ejection is cleared on the way).
const (
	stateUnhealthy  uint32 = 1 << iota // active health check failing
	stateNotReady                      // readiness answered 503: draining
	stateAdminDrain                    // drained through the admin API
	stateEjected                       // passive outlier ejection in force
	stateRemoved                       // no longer in the backend set
)

// Backend is one upstream server. Its methods are safe for concurrent use.
type Backend struct {
	addr   string
	weight atomic.Int32
	lb     *LB

	state        atomic.Uint32
	ejectedUntil atomic.Int64 // monotonic ns (see monoNow) when the ejection ends
	inflight     atomic.Int64
	failStreak   atomic.Int32 // mirror of ejector's streak, so successes skip the lock

	// peak-EWMA latency, protected by mu
	mu        sync.Mutex
	ewma      float64 // ns
	ewmaStamp int64   // monotonic ns of the last update
	ejector   Ejector // protected by mu
	health    Health  // protected by mu

	requests  atomic.Uint64
	failures  atomic.Uint64
	ejections atomic.Uint64
	retries   atomic.Uint64

	pool connPool
	// staleAt is when (monotonic ns) a request last met a reused
	// connection the backend had closed: connections idle since before
	// then are checked before use whatever the request (see getConn).
	staleAt atomic.Int64
}

// Addr returns the backend's "host:port".
func (b *Backend) Addr() string { return b.addr }

// Weight returns the backend's weight (at least 1).
func (b *Backend) Weight() int { return int(b.weight.Load()) }

// Inflight returns the number of requests the backend is serving.
func (b *Backend) Inflight() int64 { return b.inflight.Load() }

// available reports whether the backend may take a new request at now
// (monotonic ns), clearing an ejection that has run out.
func (b *Backend) available(now int64) bool {
	s := b.state.Load()
	if s == 0 {
		return true
	}
	if s == stateEjected && now >= b.ejectedUntil.Load() {
		b.mu.Lock()
		if b.state.Load()&stateEjected != 0 && now >= b.ejectedUntil.Load() {
			b.state.And(^stateEjected)
			b.lb.ejected.Add(-1)
		}
		b.mu.Unlock()
		return b.state.Load() == 0
	}
	return false
}

// ewmaScore returns the peak-EWMA latency estimate in ns, decayed to now.
func (b *Backend) latency() float64 {
	b.mu.Lock()
	v := b.ewma
	b.mu.Unlock()
	return v
}

// observe records a request's outcome: its latency feeds the peak-EWMA
// estimate and its success or failure the outlier detector.
func (b *Backend) observe(now, rtt int64, ok bool, tau time.Duration) {
	b.mu.Lock()
	b.updateEWMALocked(now, float64(rtt), tau)
	b.mu.Unlock()
	if ok {
		if b.failStreak.Load() != 0 {
			b.mu.Lock()
			b.ejector.Success()
			b.failStreak.Store(0)
			b.mu.Unlock()
		}
		return
	}
	b.failures.Add(1)
	b.lb.failure(b, now)
}

// observeLatency feeds a latency to the peak-EWMA estimate without an
// outcome: a hedged try cancelled because the other answered first took at
// least rtt.
func (b *Backend) observeLatency(now, rtt int64, tau time.Duration) {
	b.mu.Lock()
	b.updateEWMALocked(now, float64(rtt), tau)
	b.mu.Unlock()
}

func (b *Backend) updateEWMALocked(now int64, rtt float64, tau time.Duration) {
	if rtt > b.ewma || b.ewmaStamp == 0 {
		// Peak: a slow response raises the estimate at once.
		b.ewma = rtt
	} else {
		elapsed := float64(max(now-b.ewmaStamp, 0))
		w := math.Exp(-elapsed / float64(tau))
		b.ewma = b.ewma*w + rtt*(1-w)
	}
	b.ewmaStamp = now
}

// bconn is a connection to a backend with its buffers.
type bconn struct {
	net.Conn
	br       *bufio.Reader
	bw       *bufio.Writer
	lastUsed int64 // monotonic ns when it went idle
	reused   bool  // served a request before
	writeBy  int64 // monotonic ns: the write deadline set on the connection
	writeTO  int64 // the write timeout in ns (the per-try timeout)

	// liveness check (see alive): set up once per connection so that a
	// check allocates nothing
	raw     syscall.RawConn
	peekFn  func(fd uintptr)
	peekBuf [1]byte
	peekOK  bool
}

// connPool keeps idle keep-alive connections to one backend, newest first,
// and enforces the connection limits.
type connPool struct {
	mu      sync.Mutex
	idle    []*bconn      // protects: all fields
	open    int           // connections open, idle or busy
	pending int           // requests waiting for a connection
	waiters []chan *bconn // handed a connection, or nil meaning "dial one"
}

// peekAfter is how long a connection must have been idle before a request
// that could be replayed on a stale connection pays for a liveness check
// (see getConn).
const peekAfter = time.Millisecond

// getConn returns an idle connection that is still alive, or dials a new
// one. At the connection cap it waits for one (up to the per-try timeout)
// when wait is set and MaxPendingPerBackend allows, else it returns
// ErrBackendFull. ctx cancels a dial. An error means that nothing was
// written to the backend.
//
// An idle connection is checked with a non-blocking peek (one system call)
// when check is set, or when it has been idle for peekAfter or more. The
// caller clears check only for a buffered request it may replay: should a
// connection reused within peekAfter of its last response turn out closed,
// that request is retried without counting against its backend (see
// tryFailed), at the cost of a retry, and every connection that went idle
// before that discovery is checked from then on (staleAt): a backend that
// closed its idle connections costs one retry, not one per connection.
// Under load, connections
// are reused within microseconds, so the check is skipped on the hot path;
// a request that could not be replayed is always checked.
func (b *Backend) getConn(ctx context.Context, now int64, wait, check bool) (*bconn, error) {
	o := &b.lb.opts
	p := &b.pool
	p.mu.Lock()
	for len(p.idle) > 0 {
		c := p.idle[len(p.idle)-1]
		p.idle = p.idle[:len(p.idle)-1]
		if now-c.lastUsed < int64(o.idleTimeout) {
			p.mu.Unlock()
			// The backend may have closed the connection while it was idle
			// (it died, restarted, or timed the connection out): a request
			// written to it would be lost, and a POST could not be retried.
			if !check && now-c.lastUsed < o.peekAfter && c.lastUsed > b.staleAt.Load() || c.alive() {
				return c, nil
			}
			b.closeConn(c)
			p.mu.Lock()
			continue
		}
		p.open--
		p.mu.Unlock()
		c.Close()
		p.mu.Lock()
	}
	if o.maxConns > 0 && p.open >= o.maxConns {
		if !wait || p.pending >= o.maxPending {
			p.mu.Unlock()
			return nil, ErrBackendFull
		}
		ch := make(chan *bconn, 1)
		p.waiters = append(p.waiters, ch)
		p.pending++
		p.mu.Unlock()
		t := time.NewTimer(o.perTry)
		defer t.Stop()
		select {
		case c := <-ch:
			if c != nil {
				return c, nil
			}
			// A slot was freed for us: p.open already counts it.
			return b.dial(ctx)
		case <-t.C:
			p.mu.Lock()
			for i, w := range p.waiters {
				if w == ch {
					p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
					p.pending--
					p.mu.Unlock()
					return nil, ErrBackendFull
				}
			}
			p.mu.Unlock()
			// Someone handed us something meanwhile: give it back.
			if c := <-ch; c != nil {
				b.putConn(c, now)
			} else {
				b.connClosed()
			}
			return nil, ErrBackendFull
		}
	}
	p.open++
	p.mu.Unlock()
	return b.dial(ctx)
}

func (b *Backend) dial(ctx context.Context) (*bconn, error) {
	d := net.Dialer{Timeout: b.lb.opts.connectTimeout, KeepAlive: 30 * time.Second}
	nc, err := d.DialContext(ctx, "tcp", b.addr)
	if err != nil {
		b.connClosed()
		return nil, err
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	c := &bconn{Conn: nc, br: bufio.NewReaderSize(nc, 8192), writeTO: int64(b.lb.opts.perTry)}
	c.bw = bufio.NewWriterSize(backendWriter{c}, 4096)
	c.newPeek(nc)
	return c, nil
}

// backendWriter is a backend connection as its buffered writer sees it: a write that makes
// no progress for the per-try timeout fails, so that a backend that stops reading a
// request (a streamed body) without closing the connection cannot hold the exchange
// forever. The deadline is moved only when less than the timeout is left (see
// clientWriter), so most writes move nothing.
type backendWriter struct{ c *bconn }

func (w backendWriter) Write(p []byte) (int, error) {
	c := w.c
	if now := monoNow(); c.writeBy-now < c.writeTO {
		c.writeBy = now + c.writeTO + c.writeTO/16
		c.Conn.SetWriteDeadline(monoBase.Add(time.Duration(c.writeBy)))
	}
	return c.Conn.Write(p)
}

// putConn returns a healthy connection for reuse.
func (b *Backend) putConn(c *bconn, now int64) {
	p := &b.pool
	c.lastUsed = now
	c.reused = true
	p.mu.Lock()
	if len(p.waiters) > 0 {
		ch := p.waiters[0]
		p.waiters = p.waiters[1:]
		p.pending--
		p.mu.Unlock()
		ch <- c
		return
	}
	if b.state.Load()&stateRemoved != 0 || len(p.idle) >= b.lb.opts.maxIdle {
		p.mu.Unlock()
		b.closeConn(c)
		return
	}
	p.idle = append(p.idle, c)
	p.mu.Unlock()
}

// closeConn closes a connection that will not be reused.
func (b *Backend) closeConn(c *bconn) {
	c.Close()
	b.connClosed()
}

// connClosed gives a connection slot back.
func (b *Backend) connClosed() {
	p := &b.pool
	p.mu.Lock()
	if len(p.waiters) > 0 {
		ch := p.waiters[0]
		p.waiters = p.waiters[1:]
		p.pending--
		p.mu.Unlock()
		ch <- nil // the waiter dials, inheriting the slot
		return
	}
	p.open--
	p.mu.Unlock()
}

// closeIdle closes all idle connections.
func (b *Backend) closeIdle() {
	p := &b.pool
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.open -= len(idle)
	p.mu.Unlock()
	for _, c := range idle {
		c.Close()
	}
}

// reapIdle closes idle connections unused for longer than the idle timeout.
func (b *Backend) reapIdle(now int64) {
	p := &b.pool
	var old []*bconn
	p.mu.Lock()
	keep := p.idle[:0]
	for _, c := range p.idle {
		if now-c.lastUsed >= int64(b.lb.opts.idleTimeout) {
			old = append(old, c)
		} else {
			keep = append(keep, c)
		}
	}
	clear(p.idle[len(keep):])
	p.idle = keep
	p.open -= len(old)
	p.mu.Unlock()
	for _, c := range old {
		c.Close()
	}
}

// poolStats returns the open and idle connection counts.
func (b *Backend) poolStats() (open, idle int) {
	b.pool.mu.Lock()
	defer b.pool.mu.Unlock()
	return b.pool.open, len(b.pool.idle)
}

var monoBase = time.Now()

// monoNow returns monotonic nanoseconds since the package was loaded.
func monoNow() int64 { return int64(time.Since(monoBase)) }

// monoAt converts a time.Time (with monotonic reading) to monoNow's scale.
func monoAt(t time.Time) int64 { return int64(t.Sub(monoBase)) }
