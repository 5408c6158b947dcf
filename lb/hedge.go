package lb

import (
	"context"
	"errors"
	"math"
	"math/bits"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/strata-project/strata/retry"
)

// This file holds hedged requests: a GET or HEAD without a body that has not
// answered after the hedge delay is sent to a second backend as well; the
// first response head wins and the other try is cancelled (its connection is
// closed, which a Go backend sees as its request context being cancelled).

// Hedging defaults and limits.
const (
	hedgeWindow    = 10 * time.Second       // how long latencies are remembered
	hedgeRecompute = 100 * time.Millisecond // how often the percentile is recomputed
	hedgeMinDelay  = 2 * time.Millisecond   // default floor of a percentile delay
	hedgeMaxDelay  = time.Second            // default cap of a percentile delay
	hedgeRatio     = 0.1                    // default budget: 10% extra requests ...
	hedgeMinPerSec = 1                      // ... plus one per second
)

// hedger is a balancer's hedging state. Its methods are safe for concurrent
// use.
type hedger struct {
	fixed      time.Duration // fixed delay; 0 in percentile mode
	q          float64       // quantile in (0, 1)
	minDelay   time.Duration
	maxDelay   time.Duration
	minSamples int
	budget     *retry.Budget
	lat        latencyHist

	delay atomic.Int64 // current percentile delay, ns
	next  atomic.Int64 // monotonic ns of the next recompute
}

func newHedger(c HedgeConfig) (*hedger, error) {
	bc := c.Budget
	bc.Ratio = cmpOr(bc.Ratio, hedgeRatio)
	bc.MinPerSecond = cmpOr(bc.MinPerSecond, hedgeMinPerSec)
	budget, err := retry.NewBudget(bc)
	if err != nil {
		return nil, err
	}
	h := &hedger{
		fixed:    c.Delay,
		q:        c.Percentile / 100,
		minDelay: c.MinDelay,
		maxDelay: c.MaxDelay,
		budget:   budget,
	}
	h.lat.width = int64(hedgeWindow / latSlots)
	if h.fixed == 0 {
		// At least ten samples above the percentile before it is trusted:
		// 200 for p95, 1000 for p99.
		h.minSamples = int(min(max(math.Ceil(10/(1-h.q)), 50), 10000))
		h.delay.Store(int64(h.maxDelay))
	}
	return h, nil
}

// delayAt returns the hedge delay at now (monotonic ns).
func (h *hedger) delayAt(now int64) time.Duration {
	if h.fixed > 0 {
		return h.fixed
	}
	if next := h.next.Load(); now >= next && h.next.CompareAndSwap(next, now+int64(hedgeRecompute)) {
		return h.recompute(now)
	}
	return time.Duration(h.delay.Load())
}

// recompute sets the percentile delay from the latencies seen until now:
// the percentile clamped to [minDelay, maxDelay], or maxDelay while there
// are too few samples.
func (h *hedger) recompute(now int64) time.Duration {
	d := h.maxDelay
	if q, n := h.lat.quantile(now, h.q); n >= h.minSamples {
		d = min(max(time.Duration(q), h.minDelay), h.maxDelay)
	}
	h.delay.Store(int64(d))
	return d
}

// observe records the time a hedgeable request waited for its response
// head.
func (h *hedger) observe(now, d int64) {
	if h.fixed == 0 {
		h.lat.observe(now, d)
	}
}

// HedgeDelay returns the current hedge delay: the fixed one, the percentile
// of recent GET and HEAD response times within its floor and cap
// (recomputed by this call), or 0 when hedging is off.
func (l *LB) HedgeDelay() time.Duration {
	switch h := l.hedge; {
	case h == nil:
		return 0
	case h.fixed > 0:
		return h.fixed
	default:
		return h.recompute(monoNow())
	}
}

// latencyHist is a histogram of recent latencies over a sliding window of
// latSlots slots, with log-linear buckets (latSub per power of two, so a
// quantile is within 12.5% of the true value). Observing is lock-free;
// time is a parameter (monotonic ns).
type latencyHist struct {
	width int64      // ns per slot
	mu    sync.Mutex // serializes slot rotation
	slots [latSlots]latSlot
}

type latSlot struct {
	epoch  atomic.Int64 // 1 + now/width of the samples in counts; 0: never used
	counts [latBuckets]atomic.Uint32
}

const (
	latSlots   = 4
	latSubBits = 3
	latSub     = 1 << latSubBits
	latMinExp  = 10 // 2^10 ns: about a microsecond, the smallest bucket
	latExps    = 32 // up to 2^42 ns, over an hour
	latBuckets = latExps * latSub
)

// latBucket returns the bucket of a latency of d ns.
func latBucket(d int64) int {
	if d < 1<<latMinExp {
		return 0
	}
	e := bits.Len64(uint64(d)) - 1
	if e >= latMinExp+latExps {
		return latBuckets - 1
	}
	sub := int(d>>(e-latSubBits)) & (latSub - 1)
	return (e-latMinExp)<<latSubBits | sub
}

// latUpper returns the upper bound (exclusive) of bucket i in ns.
func latUpper(i int) int64 {
	e := i>>latSubBits + latMinExp
	sub := int64(i & (latSub - 1))
	return (latSub + sub + 1) << (e - latSubBits)
}

func (h *latencyHist) observe(now, d int64) {
	epoch := now / h.width
	s := &h.slots[epoch%latSlots]
	if s.epoch.Load() != epoch+1 {
		h.mu.Lock()
		if s.epoch.Load() != epoch+1 {
			for i := range s.counts {
				s.counts[i].Store(0)
			}
			s.epoch.Store(epoch + 1)
		}
		h.mu.Unlock()
	}
	s.counts[latBucket(d)].Add(1)
}

// quantile returns the q-quantile (0 < q < 1) of the latencies observed in
// the window ending at now, as the upper bound of its bucket, and the number
// of samples it was taken from.
func (h *latencyHist) quantile(now int64, q float64) (int64, int) {
	epoch := now / h.width
	var sum [latBuckets]uint64
	n := uint64(0)
	for i := range h.slots {
		s := &h.slots[i]
		if e := s.epoch.Load() - 1; e < 0 || e > epoch || e <= epoch-latSlots {
			continue
		}
		for j := range s.counts {
			c := uint64(s.counts[j].Load())
			sum[j] += c
			n += c
		}
	}
	if n == 0 {
		return 0, 0
	}
	rank := uint64(math.Ceil(q * float64(n)))
	var cum uint64
	for j, c := range sum {
		cum += c
		if cum >= rank {
			return latUpper(j), int(n)
		}
	}
	return latUpper(latBuckets - 1), int(n)
}

// errHedgeLost is the error of a try cancelled because the other one won.
var errHedgeLost = errors.New("lb: hedged try lost the race")

// hedgeTry is one of the two tries of a hedged request.
type hedgeTry struct {
	b      *Backend
	start  int64 // monotonic ns
	doneAt int64
	bc     *bconn
	resp   head
	err    error
	unsent bool // failed before a byte of the request was written

	mu        sync.Mutex // protects conn, cancelled and stop
	conn      net.Conn
	cancelled bool
	stop      context.CancelFunc
}

// attach records the try's connection so that cancel can close it; it
// reports false, leaving the connection alone, when the try was cancelled
// already.
func (t *hedgeTry) attach(bc *bconn) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.cancelled {
		return false
	}
	t.conn = bc.Conn
	return true
}

// cancel stops the try: a dial in progress is abandoned, a connection is
// closed under a pending write or read.
func (t *hedgeTry) cancel() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cancelled = true
	if t.stop != nil {
		t.stop()
	}
	if t.conn != nil {
		t.conn.Close()
	}
}

func (t *hedgeTry) wasCancelled() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cancelled
}

// hedge continues a try (b1 on bc1, begun at start1) whose response head
// did not come within the hedge delay: it sends the request to a second
// backend, if one is eligible and the hedge budget allows, and serves the
// first response head of the two. The request has no body.
func (cc *clientConn) hedge(b1 *Backend, bc1 *bconn, start1 int64, mayRetry bool) attemptResult {
	l := cc.lb
	h := l.hedge
	isHead := string(cc.req.method) == "HEAD"
	now := monoNow()
	p := &cc.pick
	var b2 *Backend
	if p.ntried < len(p.tried) {
		set := l.set.Load()
		p.Backends = set.backends
		p.now = now
		b2 = set.selector.Select(p)
	}
	if b2 != nil && !h.budget.TryRetryAt(monoBase.Add(time.Duration(now))) {
		l.stats.hedgesDenied.Add(1)
		b2 = nil
	}
	if b2 == nil {
		// No hedge: keep waiting for the first try.
		bc1.SetReadDeadline(time.Now().Add(l.opts.perTry - time.Duration(now-start1)))
		if err := readResponseHead(bc1, &cc.resp, isHead); err != nil {
			return cc.tryFailed(b1, bc1, start1, err, mayRetry, true)
		}
		h.observe(monoNow(), monoNow()-start1)
		return cc.respond(b1, bc1, start1, mayRetry, sentFull)
	}
	p.tried[p.ntried] = b2
	p.ntried++
	cc.hedgeSent = true
	l.stats.hedges.Add(1)
	b2.inflight.Add(1)
	b2.requests.Add(1)
	defer b2.inflight.Add(-1)

	t1 := &hedgeTry{b: b1, start: start1, bc: bc1, conn: bc1.Conn}
	t2 := &hedgeTry{b: b2, start: now}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	t2.stop = stop
	done := make(chan *hedgeTry, 2)
	perTry := l.opts.perTry
	go func() {
		bc1.SetReadDeadline(time.Now().Add(perTry - time.Duration(monoNow()-start1)))
		t1.err = readResponseHead(bc1, &t1.resp, isHead)
		t1.doneAt = monoNow()
		done <- t1
	}()
	out := cc.out // not written by this goroutine until both tries are done
	go func() {
		defer func() { t2.doneAt = monoNow(); done <- t2 }()
		bc, err := b2.getConn(ctx, now, false, true)
		if err != nil {
			t2.err, t2.unsent = err, true
			return
		}
		t2.bc = bc
		if !t2.attach(bc) {
			t2.err, t2.unsent = errHedgeLost, true
			return
		}
		bc.SetReadDeadline(time.Now().Add(perTry))
		bc.bw.Write(out)
		if err = bc.bw.Flush(); err == nil {
			err = readResponseHead(bc, &t2.resp, isHead)
		}
		t2.err = err
	}()

	// The first head that is not a status to retry on wins; the other try is
	// cancelled. Both goroutines have ended when the loop does.
	var win *hedgeTry
	for range 2 {
		t := <-done
		if win == nil && t.err == nil && !(mayRetry && l.opts.retryOnStatus(t.resp.status)) {
			win = t
			if t == t1 {
				t2.cancel()
			} else {
				t1.cancel()
			}
		}
	}
	if win == nil {
		// Both failed; a head with a status to retry on is passed on as
		// such.
		for _, t := range [2]*hedgeTry{t1, t2} {
			if t.err == nil {
				win = t
				break
			}
		}
	}
	end := monoNow()
	retryOK, unsent := true, true
	var lastErr error
	for _, t := range [2]*hedgeTry{t1, t2} {
		if t == win {
			continue
		}
		switch {
		case t.bc == nil:
		case t.unsent:
			// Cancelled before its request was written: the connection is
			// as good as it was in the pool.
			t.b.putConn(t.bc, end)
		default:
			t.b.closeConn(t.bc)
		}
		switch {
		case t.err == nil:
			// A head that came too late, or one with a status to retry on.
			t.b.observe(t.doneAt, t.doneAt-t.start, t.resp.status < 500, l.opts.decay)
		case t.wasCancelled():
			if !t.unsent {
				// It was slower than the winner: that is worth knowing.
				t.b.observeLatency(end, end-t.start, l.opts.decay)
			}
		default:
			stale := !t.unsent && t.bc.reused && !errors.Is(t.err, os.ErrDeadlineExceeded) && t.bc.br.Buffered() == 0
			if !stale && !errors.Is(t.err, ErrBackendFull) {
				t.b.observe(t.doneAt, t.doneAt-t.start, false, l.opts.decay)
			}
			retryOK = retryOK && (stale || t.unsent)
			unsent = unsent && t.unsent
			lastErr = t.err
		}
	}
	if win == nil {
		if mayRetry || retryOK {
			return attemptResult{outcome: outcomeRetry, err: lastErr, unsent: unsent}
		}
		code := http.StatusBadGateway
		if errors.Is(lastErr, os.ErrDeadlineExceeded) {
			code = http.StatusGatewayTimeout
		}
		cc.simple(code, true)
		return attemptResult{outcome: outcomeDone}
	}
	if win == t2 {
		l.stats.hedgesWon.Add(1)
	}
	h.observe(win.doneAt, win.doneAt-start1)
	cc.resp, win.resp = win.resp, cc.resp
	return cc.respond(win.b, win.bc, win.start, mayRetry, sentFull)
}
