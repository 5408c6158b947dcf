package redisstore

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"github.com/strata-project/strata/cache"
)

// getBatcher sends the Gets that callers make at the same time as one MGET, so that a
// burst of concurrent reads costs Redis one command and both ends a few system calls per
// batch, where one GET each costs a command each and, under load, a good part of a system
// call each.
//
// There is no worker goroutine: a caller that finds fewer than maxFlights batches under way
// sends one itself (it leads), with its own key and whatever is queued; a caller that finds
// them all under way queues its key and waits. A leader whose MGET has returned hands the
// lead to the oldest queued caller, if there is one, and then answers its batch, so that a
// queue never waits for a newcomer. An idle store therefore costs a lone Get no extra hop:
// it sends an MGET of one key at once.
//
// No call waits much past its deadline. A batch is bounded by the earliest deadline in it,
// and is answered without a round trip once that has passed; the calls ahead of a queued
// call came earlier, so their deadlines from the store's Timeout are earlier than its own
// (a shorter deadline from a caller's context ends that caller's wait by itself).
type getBatcher struct {
	// fetch reads keys with one command and writes each one's value (nil: none) to vals.
	fetch      func(ctx context.Context, keys []string, vals [][]byte) error
	prefix     string // put before each call's key
	maxBatch   int    // keys per MGET
	maxFlights int    // batches under way at once (sent, or handed to a caller to send)
	// shared hands out the context of a batch whose earliest deadline is no sooner than
	// timeout from now, instead of a new context and timer per batch (see sharedDeadline).
	shared  *sharedDeadline
	timeout time.Duration

	mu      sync.Mutex
	queue   []*getCall
	flights int
	calls   sync.Pool // *getCall
	bufs    sync.Pool // *batchBuf
}

// getCall is one caller's Get. Its leader writes val or err, then signals done (buffered,
// so a leader never blocks on a caller that left).
type getCall struct {
	key      string    // the caller's key, without the prefix
	deadline time.Time // the caller's deadline, bounded by the store's Timeout
	val      []byte    // nil: no such key
	err      error
	queued   bool // in getBatcher.queue (guarded by mu)
	lead     bool // handed the lead: the caller must send a batch (set under mu)
	done     chan struct{}
}

// batchBuf holds a leader's reusable slices.
type batchBuf struct {
	calls []*getCall
	keys  []string
	vals  [][]byte
	raw   []byte
}

func newGetBatcher(fetch func(ctx context.Context, keys []string, vals [][]byte) error, prefix string, maxBatch, maxFlights int, shared *sharedDeadline, timeout time.Duration) *getBatcher {
	g := &getBatcher{fetch: fetch, prefix: prefix, maxBatch: maxBatch, maxFlights: maxFlights, shared: shared, timeout: timeout}
	g.calls.New = func() any { return &getCall{done: make(chan struct{}, 1)} }
	g.bufs.New = func() any { return &batchBuf{} }
	return g
}

// get returns the raw value under key (nil when there is none), read by an MGET shared with
// concurrent callers. A queued caller returns by its deadline or as soon as ctx is done; a
// caller that leads a batch returns with the batch, by the batch's deadline (the earliest in
// it, so at most its own), since the others in the batch wait for the same answer.
func (g *getBatcher) get(ctx context.Context, key string, deadline time.Time) ([]byte, error) {
	c := g.calls.Get().(*getCall)
	c.key, c.deadline = key, deadline
	g.mu.Lock()
	if g.flights < g.maxFlights {
		g.flights++
		g.mu.Unlock()
		g.lead(c)
	} else {
		c.queued = true
		g.queue = append(g.queue, c)
		g.mu.Unlock()
		if done := ctx.Done(); done == nil {
			<-c.done // a plain receive: cheaper than a select where ctx can never end
		} else {
			select {
			case <-c.done:
			case <-done:
				g.leave(c)
				return nil, wrap("get", ctx.Err())
			}
		}
		if c.lead {
			c.lead = false
			g.lead(c)
		}
	}
	val, err := c.val, c.err
	c.key, c.val, c.err = "", nil, nil
	g.calls.Put(c)
	return val, err
}

// leave is called by a queued caller whose context ended before its answer: it takes the
// call out of the queue, or, if the lead was handed to it, passes the lead on in a new
// goroutine (the caller returns now; the others must not wait for a newcomer). A call
// already in a batch is answered into the void and left to the garbage collector.
func (g *getBatcher) leave(c *getCall) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case c.lead:
		c.lead = false
		go g.lead(c)
	case c.queued:
		for i, q := range g.queue {
			if q == c {
				g.queue = append(g.queue[:i], g.queue[i+1:]...)
				g.queue[len(g.queue):cap(g.queue)][0] = nil
				break
			}
		}
		c.queued = false
	}
}

// lead sends first's key with up to maxBatch-1 queued ones, hands the lead to the oldest
// queued caller or ends its flight, and answers the batch. first itself is answered but not
// signalled: its caller is the one running lead.
func (g *getBatcher) lead(first *getCall) {
	buf := g.bufs.Get().(*batchBuf)
	batch := append(buf.calls[:0], first)
	g.mu.Lock()
	n := min(len(g.queue), g.maxBatch-1)
	for _, q := range g.queue[:n] {
		q.queued = false
		batch = append(batch, q)
	}
	g.take(n)
	g.mu.Unlock()

	g.send(batch, buf)

	// Pass the lead on before answering, so that the next MGET is on its way while this
	// batch's callers wake up.
	g.mu.Lock()
	if len(g.queue) == 0 {
		g.flights--
		g.mu.Unlock()
	} else {
		next := g.queue[0]
		g.take(1)
		next.queued, next.lead = false, true
		g.mu.Unlock()
		next.done <- struct{}{}
	}
	for _, c := range batch[1:] {
		c.done <- struct{}{}
	}
	clear(batch)
	buf.calls = batch[:0]
	g.bufs.Put(buf)
}

// take drops the first n calls of the queue. Called with mu held.
func (g *getBatcher) take(n int) {
	if n == 0 {
		return
	}
	rest := copy(g.queue, g.queue[n:])
	clear(g.queue[rest:])
	g.queue = g.queue[:rest]
}

// send reads the keys of batch with one fetch, bounded by the earliest deadline in it, and
// writes each call's val or err. Calls whose deadline has passed get an error without
// being sent.
func (g *getBatcher) send(batch []*getCall, buf *batchBuf) {
	now := time.Now()
	var deadline time.Time
	// The prefixed keys are built in one buffer and made a string at once: one allocation
	// per batch instead of one per key.
	raw := buf.raw[:0]
	n := 0
	for _, c := range batch {
		if !now.Before(c.deadline) {
			c.err = fmt.Errorf("redisstore: get: waited %v for a batch: %w: %w", now.Sub(c.deadline), cache.ErrUnavailable, context.DeadlineExceeded)
			continue
		}
		if n == 0 || c.deadline.Before(deadline) {
			deadline = c.deadline
		}
		raw = append(append(raw, g.prefix...), c.key...)
		n++
	}
	buf.raw = raw
	if n == 0 {
		return
	}
	all := string(raw)
	keys, vals := buf.keys[:0], buf.vals[:0]
	off := 0
	for _, c := range batch {
		if c.err == nil {
			end := off + len(g.prefix) + len(c.key)
			keys = append(keys, all[off:end])
			vals = append(vals, nil)
			off = end
		}
	}
	ctx, cancel := g.shared.get(g.timeout), noCancel
	if dl, _ := ctx.Deadline(); dl.After(deadline) {
		ctx, cancel = context.WithDeadline(context.Background(), deadline)
	}
	err := g.fetch(ctx, keys, vals)
	cancel()
	i := 0
	for _, c := range batch {
		if c.err != nil { // past its deadline, not sent
			continue
		}
		c.val, c.err = vals[i], err
		i++
	}
	clear(keys)
	clear(vals)
	buf.keys, buf.vals = keys[:0], vals[:0]
}

// mget is the fetch of a getBatcher: one MGET.
func mget(client rueidis.Client) func(ctx context.Context, keys []string, vals [][]byte) error {
	return func(ctx context.Context, keys []string, vals [][]byte) error {
		msgs, err := client.Do(ctx, client.B().Mget().Key(keys...).Build()).ToArray()
		if err == nil && len(msgs) != len(keys) {
			err = fmt.Errorf("MGET of %d keys returned %d values", len(keys), len(msgs))
		}
		if err != nil {
			return wrap("get", err)
		}
		for i := range msgs {
			v, err := msgs[i].AsBytes()
			if err != nil {
				if rueidis.IsRedisNil(err) {
					continue
				}
				return wrap("get", err)
			}
			vals[i] = v
		}
		return nil
	}
}
