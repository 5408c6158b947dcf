package nodestore

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/strata-project/strata/cache"
	"github.com/strata-project/strata/cachenode/wire"
)

// ErrClosed is returned (wrapped with cache.ErrUnavailable) by calls after Close.
var ErrClosed = errors.New("nodestore: closed")

// ErrConfig reports a Config that cannot work; it wraps cache.ErrConfig.
var ErrConfig = fmt.Errorf("nodestore: %w", cache.ErrConfig)

// Config configures a Store.
type Config struct {
	// Addr is the cache node's host:port. Required.
	Addr string
	// Token is the node's shared secret. Required.
	Token []byte
	// Conns is the number of connections in the pool; calls are spread over them and
	// pipelined on each. Default 2.
	Conns int
	// Timeout bounds every call, whatever the caller's context says. Default 200ms.
	Timeout time.Duration
	// DialTimeout bounds connecting and authenticating. Default 1s.
	DialTimeout time.Duration
	// RedialBackoff is how long a connection slot whose dial failed answers
	// cache.ErrUnavailable at once before trying again, so that a down node costs callers
	// nothing. Default 100ms.
	RedialBackoff time.Duration
	// MaxFrameBytes bounds one response. Default wire.DefaultMaxBody (64 MiB).
	MaxFrameBytes int
}

// Store is a cache.Store on a cache node. It is safe for concurrent use. Every error it
// returns for a node that cannot answer (down, slow, refused the token) wraps
// cache.ErrUnavailable.
type Store struct {
	cfg    Config
	slots  []slot
	next   atomic.Uint32
	closed atomic.Bool
	wg     sync.WaitGroup // reader goroutines
}

var _ cache.Store = (*Store)(nil)

type slot struct {
	mu       sync.Mutex // protects c and failedAt
	c        *conn
	failedAt time.Time
}

// New returns a store for the node at cfg.Addr. It does not connect: the first call does,
// so that a client can start before its node.
func New(cfg Config) (*Store, error) {
	if cfg.Addr == "" {
		return nil, fmt.Errorf("%w: Addr is required", ErrConfig)
	}
	if len(cfg.Token) == 0 {
		return nil, fmt.Errorf("%w: Token is required", ErrConfig)
	}
	if cfg.Conns <= 0 {
		cfg.Conns = 2
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 200 * time.Millisecond
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = time.Second
	}
	if cfg.RedialBackoff <= 0 {
		cfg.RedialBackoff = 100 * time.Millisecond
	}
	if cfg.MaxFrameBytes <= 0 {
		cfg.MaxFrameBytes = wire.DefaultMaxBody
	}
	return &Store{cfg: cfg, slots: make([]slot, cfg.Conns)}, nil
}

// Close closes the connections and waits for their goroutines. It is idempotent.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	for i := range s.slots {
		sl := &s.slots[i]
		sl.mu.Lock()
		if sl.c != nil {
			sl.c.fail(ErrClosed)
		}
		sl.mu.Unlock()
	}
	s.wg.Wait()
	return nil
}

// Get implements cache.Store.
func (s *Store) Get(ctx context.Context, key string) (cache.Entry, bool, error) {
	r, err := s.call(ctx, &wire.Request{Op: wire.OpGet, Key: key})
	if err != nil {
		return cache.Entry{}, false, err
	}
	switch r.Status {
	case wire.StatusMiss:
		return cache.Entry{}, false, nil
	case wire.StatusHit:
		e := cache.Entry{Value: r.Value, Version: r.Version, Negative: r.Negative, Cost: r.Cost}
		if !e.Negative && e.Value == nil {
			e.Value = []byte{}
		}
		if r.Expires != 0 {
			e.Expires = time.Unix(0, r.Expires)
		}
		return e, true, nil
	}
	return cache.Entry{}, false, unexpected(r)
}

// SetIfNewer implements cache.Store. e.Expires is not sent: the node reports the expiry of
// the ttl.
func (s *Store) SetIfNewer(ctx context.Context, key string, e cache.Entry, ttl time.Duration) (cache.SetResult, error) {
	return s.set(ctx, wire.OpSetIfNewer, key, e, ttl)
}

// SetIfNotOlder implements cache.Store.
func (s *Store) SetIfNotOlder(ctx context.Context, key string, e cache.Entry, ttl time.Duration) (cache.SetResult, error) {
	return s.set(ctx, wire.OpSetIfNotOlder, key, e, ttl)
}

func (s *Store) set(ctx context.Context, op wire.Op, key string, e cache.Entry, ttl time.Duration) (cache.SetResult, error) {
	req := &wire.Request{Op: op, Key: key, Version: e.Version, Negative: e.Negative, TTL: ttl, Cost: max(e.Cost, 0)}
	if !e.Negative {
		req.Value = e.Value
	}
	r, err := s.call(ctx, req)
	if err != nil {
		return 0, err
	}
	switch r.Status {
	case wire.StatusStored:
		return cache.Stored, nil
	case wire.StatusRefused:
		return cache.Refused, nil
	}
	return 0, unexpected(r)
}

// Invalidate implements cache.Store.
func (s *Store) Invalidate(ctx context.Context, key string, version int64, ttl time.Duration) error {
	return s.callOK(ctx, &wire.Request{Op: wire.OpInvalidate, Key: key, Version: version, TTL: ttl})
}

// Delete implements cache.Store.
func (s *Store) Delete(ctx context.Context, key string) error {
	return s.callOK(ctx, &wire.Request{Op: wire.OpDelete, Key: key})
}

// Lease implements cache.Store. The node keeps the lease; the returned Lease holds its token.
func (s *Store) Lease(ctx context.Context, key string, ttl time.Duration) (cache.Lease, bool, error) {
	r, err := s.call(ctx, &wire.Request{Op: wire.OpLease, Key: key, TTL: ttl})
	if err != nil {
		return nil, false, err
	}
	switch r.Status {
	case wire.StatusLeased:
		return &lease{s: s, key: key, token: r.Token}, true, nil
	case wire.StatusBusy:
		return nil, false, nil
	}
	return nil, false, unexpected(r)
}

// Ping checks that the node answers.
func (s *Store) Ping(ctx context.Context) error {
	return s.callOK(ctx, &wire.Request{Op: wire.OpPing})
}

type lease struct {
	s     *Store
	key   string
	token uint64
}

// Release gives the lease up; releasing an expired or stolen lease is a no-op on the node.
func (l *lease) Release(ctx context.Context) error {
	return l.s.callOK(ctx, &wire.Request{Op: wire.OpRelease, Key: l.key, Token: l.token})
}

func (s *Store) callOK(ctx context.Context, req *wire.Request) error {
	r, err := s.call(ctx, req)
	if err != nil {
		return err
	}
	if r.Status != wire.StatusOK {
		return unexpected(r)
	}
	return nil
}

// unexpected turns an error answer (or a status that does not fit the request) into an
// error wrapping cache.ErrUnavailable: the node could not do what was asked.
func unexpected(r wire.Response) error {
	if r.Status == wire.StatusError {
		return fmt.Errorf("%w: nodestore: node: %s", cache.ErrUnavailable, r.Value)
	}
	return fmt.Errorf("%w: nodestore: unexpected status %d", cache.ErrUnavailable, r.Status)
}

// call sends req on one of the pooled connections and waits for its answer, at most
// cfg.Timeout.
func (s *Store) call(ctx context.Context, req *wire.Request) (wire.Response, error) {
	if len(req.Key) > wire.MaxKeyLen {
		return wire.Response{}, fmt.Errorf("nodestore: key of %d bytes, at most %d", len(req.Key), wire.MaxKeyLen)
	}
	if s.closed.Load() {
		return wire.Response{}, fmt.Errorf("%w: %w", cache.ErrUnavailable, ErrClosed)
	}
	deadline := time.Now().Add(s.cfg.Timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	c, err := s.conn(deadline)
	if err != nil {
		return wire.Response{}, err
	}
	ch, id, err := c.send(req)
	if err != nil {
		return wire.Response{}, err
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case res := <-ch:
		return res.resp, res.err
	case <-t.C:
		c.forget(id)
		return wire.Response{}, fmt.Errorf("%w: nodestore: %s: no answer within %v", cache.ErrUnavailable, s.cfg.Addr, s.cfg.Timeout)
	case <-ctx.Done():
		c.forget(id)
		return wire.Response{}, fmt.Errorf("%w: nodestore: %w", cache.ErrUnavailable, ctx.Err())
	}
}

// conn returns a live connection of the next slot, dialing it if needed.
func (s *Store) conn(deadline time.Time) (*conn, error) {
	sl := &s.slots[int(s.next.Add(1))%len(s.slots)]
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if sl.c != nil && !sl.c.broken() {
		return sl.c, nil
	}
	if time.Since(sl.failedAt) < s.cfg.RedialBackoff {
		return nil, fmt.Errorf("%w: nodestore: %s: recently unreachable", cache.ErrUnavailable, s.cfg.Addr)
	}
	dl := time.Now().Add(s.cfg.DialTimeout)
	if deadline.Before(dl) {
		dl = deadline
	}
	c, err := s.dial(dl)
	if err != nil {
		sl.failedAt = time.Now()
		return nil, err
	}
	if s.closed.Load() {
		c.fail(ErrClosed)
		return nil, fmt.Errorf("%w: %w", cache.ErrUnavailable, ErrClosed)
	}
	sl.c = c
	return c, nil
}

// dial connects, authenticates and starts the connection's reader.
func (s *Store) dial(deadline time.Time) (*conn, error) {
	d := net.Dialer{Deadline: deadline}
	nc, err := d.Dial("tcp", s.cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("%w: nodestore: %v", cache.ErrUnavailable, err)
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	r := bufio.NewReaderSize(nc, 64<<10)
	_ = nc.SetDeadline(deadline)
	_, err = nc.Write(wire.AppendRequest(nil, 0, &wire.Request{Op: wire.OpAuth, Value: s.cfg.Token}))
	var f wire.Frame
	if err == nil {
		f, err = wire.ReadFrame(r, s.cfg.MaxFrameBytes)
	}
	if err == nil && f.Code != wire.StatusOK {
		err = errors.New("the node refused the token")
	}
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("%w: nodestore: %s: authentication: %v", cache.ErrUnavailable, s.cfg.Addr, err)
	}
	_ = nc.SetDeadline(time.Time{})
	c := &conn{nc: nc, pending: map[uint32]chan result{}, max: s.cfg.MaxFrameBytes,
		kick: make(chan struct{}, 1), dead: make(chan struct{})}
	s.wg.Add(2)
	go func() { // owned by s: ends when nc is closed (fail) or breaks
		defer s.wg.Done()
		c.readLoop(r)
	}()
	go func() { // owned by s: ends when the connection fails (Close fails it)
		defer s.wg.Done()
		c.writeLoop()
	}()
	return c, nil
}

type result struct {
	resp wire.Response
	err  error
}

// conn is one pipelined connection: callers append their frame to wbuf and kick the writer
// goroutine, which writes everything queued in one system call; the reader goroutine hands
// answers back by id.
type conn struct {
	nc  net.Conn
	max int

	mu      sync.Mutex // protects everything below
	pending map[uint32]chan result
	nextID  uint32
	wbuf    []byte // frames queued, not yet being written
	spare   []byte // the last written buffer, for reuse
	writing bool   // a write is in progress (by a caller or the writer goroutine)
	err     error

	kick chan struct{} // capacity 1: wakes the writer
	dead chan struct{} // closed by fail
}

func (c *conn) broken() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err != nil
}

// send queues req and returns the channel its answer will arrive on.
func (c *conn) send(req *wire.Request) (chan result, uint32, error) {
	ch := make(chan result, 1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, 0, fmt.Errorf("%w: nodestore: %v", cache.ErrUnavailable, err)
	}
	c.nextID++
	id := c.nextID
	c.pending[id] = ch
	c.wbuf = wire.AppendRequest(c.wbuf, id, req)
	if c.writing {
		// A write is in progress: the writer goroutine takes this frame with the next batch.
		c.mu.Unlock()
		c.kickWriter()
		return ch, id, nil
	}
	// Nobody writes: write the queue here, once, saving the hand-over to the writer.
	c.writing = true
	buf := c.wbuf
	c.wbuf = c.spare[:0]
	c.spare = nil
	c.mu.Unlock()
	c.write(buf)
	return ch, id, nil
}

func (c *conn) kickWriter() {
	select {
	case c.kick <- struct{}{}:
	default: // kicked already: it will take this frame too
	}
}

// write writes buf (taken from wbuf with writing set), then clears writing and hands any
// frames queued meanwhile to the writer goroutine.
func (c *conn) write(buf []byte) {
	_, err := c.nc.Write(buf)
	if err != nil {
		c.fail(err)
	}
	c.mu.Lock()
	c.writing = false
	c.spare = buf
	more := len(c.wbuf) > 0
	c.mu.Unlock()
	if more {
		c.kickWriter()
	}
}

// writeLoop writes whatever callers queued, one batch per system call, until the
// connection fails.
func (c *conn) writeLoop() {
	for {
		select {
		case <-c.kick:
		case <-c.dead:
			return
		}
		c.mu.Lock()
		if c.writing || len(c.wbuf) == 0 {
			c.mu.Unlock() // the current writer kicks again when it is done
			continue
		}
		c.writing = true
		buf := c.wbuf
		c.wbuf = c.spare[:0]
		c.spare = nil
		c.mu.Unlock()
		c.write(buf)
	}
}

// forget drops a call that gave up waiting; its late answer is discarded.
func (c *conn) forget(id uint32) {
	c.mu.Lock()
	delete(c.pending, id)
	c.mu.Unlock()
}

// fail closes the connection and fails every pending call with err.
func (c *conn) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
		c.nc.Close()
		close(c.dead)
	}
	pending := c.pending
	c.pending = map[uint32]chan result{}
	c.mu.Unlock()
	for _, ch := range pending {
		ch <- result{err: fmt.Errorf("%w: nodestore: %v", cache.ErrUnavailable, err)}
	}
}

func (c *conn) readLoop(r *bufio.Reader) {
	for {
		f, err := wire.ReadFrame(r, c.max)
		var resp wire.Response
		if err == nil {
			resp, err = wire.ParseResponse(f)
		}
		if err != nil {
			c.fail(err)
			return
		}
		c.mu.Lock()
		ch, ok := c.pending[f.ID]
		delete(c.pending, f.ID)
		c.mu.Unlock()
		if ok {
			ch <- result{resp: resp}
		}
	}
}
