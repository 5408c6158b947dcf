package cachenode

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/strata-project/strata/cache"
	"github.com/strata-project/strata/cachenode/wire"
)

// MinTokenLen is the shortest accepted shared token.
const MinTokenLen = 16

// Errors of New and Serve.
var (
	// ErrConfig reports a Config that cannot work.
	ErrConfig = errors.New("cachenode: invalid configuration")
	// ErrClosed is returned by Serve after Close.
	ErrClosed = errors.New("cachenode: server closed")
)

// Config configures a Server.
type Config struct {
	// Store holds the cache. Required: usually a memstore.Store with its capacity in bytes.
	// The server does not close it.
	Store cache.Store
	// Token is the shared secret every connection must present first. Required, at least
	// MinTokenLen bytes.
	Token []byte
	// MaxFrameBytes bounds one request (key plus value plus 36 bytes). Default
	// wire.DefaultMaxBody (64 MiB).
	MaxFrameBytes int
	// AuthTimeout bounds the wait for a new connection's token. Default 5s.
	AuthTimeout time.Duration
	// Logger receives connection errors. Default slog.Default().
	Logger *slog.Logger
}

// Stats is a snapshot of a server's counters.
type Stats struct {
	// Conns is the number of open, authenticated connections.
	Conns int64
	// Ops counts the requests answered since the start.
	Ops uint64
	// AuthFailures counts connections closed for a missing or wrong token.
	AuthFailures uint64
	// Leases is the number of fill leases the server tracks for their holders.
	Leases int
}

// Server serves a cache.Store over the wire protocol. It is safe for concurrent use.
type Server struct {
	cfg      Config
	ops      atomic.Uint64
	authFail atomic.Uint64
	conns    atomic.Int64
	nextTok  atomic.Uint64

	mu        sync.Mutex // protects listeners, open, closed
	listeners map[net.Listener]struct{}
	open      map[net.Conn]struct{}
	closed    bool
	wg        sync.WaitGroup // connection goroutines

	lmu     sync.Mutex // protects leases, sweepAt
	leases  map[uint64]heldLease
	sweepAt int
}

// heldLease is a lease taken on a client's behalf, found again by its token.
type heldLease struct {
	key     string
	lease   cache.Lease
	expires time.Time // zero: no expiry
}

// New validates cfg and returns a server that is not serving yet.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, fmt.Errorf("%w: Store is required", ErrConfig)
	}
	if len(cfg.Token) < MinTokenLen {
		return nil, fmt.Errorf("%w: Token must be at least %d bytes", ErrConfig, MinTokenLen)
	}
	if cfg.MaxFrameBytes <= 0 {
		cfg.MaxFrameBytes = wire.DefaultMaxBody
	}
	if cfg.AuthTimeout <= 0 {
		cfg.AuthTimeout = 5 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, listeners: map[net.Listener]struct{}{}, open: map[net.Conn]struct{}{},
		leases: map[uint64]heldLease{}, sweepAt: 1024}
	var seed [8]byte
	_, _ = rand.Read(seed[:])
	// Lease tokens start at a random point, so that a token from before a restart of the
	// node means nothing to the new one.
	s.nextTok.Store(binary.BigEndian.Uint64(seed[:]) >> 1)
	return s, nil
}

// Serve accepts connections on ln until Close, and returns ErrClosed then.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return ErrClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return ErrClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond) // back off on EMFILE and the like
				continue
			}
			return err
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return ErrClosed
		}
		s.open[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go s.serveConn(c) // owned by s: Close closes c and waits
	}
}

// Close stops the listeners, closes every connection and waits for their goroutines.
// It does not close the Store.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	for ln := range s.listeners {
		ln.Close()
	}
	for c := range s.open {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	s.lmu.Lock()
	n := len(s.leases)
	s.lmu.Unlock()
	return Stats{Conns: s.conns.Load(), Ops: s.ops.Load(), AuthFailures: s.authFail.Load(), Leases: n}
}

func (s *Server) serveConn(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		c.Close()
		s.mu.Lock()
		delete(s.open, c)
		s.mu.Unlock()
	}()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	r := bufio.NewReaderSize(c, 64<<10)
	w := bufio.NewWriterSize(c, 64<<10)
	if !s.authenticate(c, r, w) {
		s.authFail.Add(1)
		return
	}
	s.conns.Add(1)
	defer s.conns.Add(-1)
	var out []byte
	for {
		f, err := wire.ReadFrame(r, s.cfg.MaxFrameBytes)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.cfg.Logger.Debug("cachenode: connection closed", "remote", c.RemoteAddr().String(), "err", err)
			}
			return
		}
		resp := s.handle(f)
		out = wire.AppendResponse(out[:0], f.ID, &resp)
		if _, err := w.Write(out); err != nil {
			return
		}
		// Flush when no further request is already waiting: pipelined requests are answered
		// with one write.
		if r.Buffered() == 0 {
			if err := w.Flush(); err != nil {
				return
			}
		}
	}
}

// authenticate reads the first frame, which must carry the token.
func (s *Server) authenticate(c net.Conn, r *bufio.Reader, w *bufio.Writer) bool {
	_ = c.SetReadDeadline(time.Now().Add(s.cfg.AuthTimeout))
	f, err := wire.ReadFrame(r, 4096)
	if err != nil {
		return false
	}
	_ = c.SetReadDeadline(time.Time{})
	req, err := wire.ParseRequest(f)
	ok := err == nil && req.Op == wire.OpAuth && subtle.ConstantTimeCompare(req.Value, s.cfg.Token) == 1
	resp := wire.Response{Status: wire.StatusOK}
	if !ok {
		resp = wire.Response{Status: wire.StatusError, Value: []byte("cachenode: authentication failed")}
	}
	_, _ = w.Write(wire.AppendResponse(nil, f.ID, &resp))
	_ = w.Flush()
	return ok
}

// handle carries out one request.
func (s *Server) handle(f wire.Frame) wire.Response {
	s.ops.Add(1)
	req, err := wire.ParseRequest(f)
	if err != nil {
		return errResponse(err)
	}
	ctx := context.Background()
	st := s.cfg.Store
	switch req.Op {
	case wire.OpPing, wire.OpAuth:
		return wire.Response{Status: wire.StatusOK}
	case wire.OpGet:
		e, ok, err := st.Get(ctx, req.Key)
		if err != nil {
			return errResponse(err)
		}
		if !ok {
			return wire.Response{Status: wire.StatusMiss}
		}
		r := wire.Response{Status: wire.StatusHit, Version: e.Version, Negative: e.Negative, Value: e.Value, Cost: e.Cost}
		if !e.Expires.IsZero() {
			r.Expires = e.Expires.UnixNano()
		}
		return r
	case wire.OpSetIfNewer, wire.OpSetIfNotOlder:
		e := cache.Entry{Value: req.Value, Version: req.Version, Negative: req.Negative, Cost: req.Cost}
		if !e.Negative && e.Value == nil {
			e.Value = []byte{}
		}
		set := st.SetIfNewer
		if req.Op == wire.OpSetIfNotOlder {
			set = st.SetIfNotOlder
		}
		res, err := set(ctx, req.Key, e, req.TTL)
		if err != nil {
			return errResponse(err)
		}
		if res == cache.Stored {
			return wire.Response{Status: wire.StatusStored}
		}
		return wire.Response{Status: wire.StatusRefused}
	case wire.OpInvalidate:
		if err := st.Invalidate(ctx, req.Key, req.Version, req.TTL); err != nil {
			return errResponse(err)
		}
		return wire.Response{Status: wire.StatusOK}
	case wire.OpDelete:
		if err := st.Delete(ctx, req.Key); err != nil {
			return errResponse(err)
		}
		return wire.Response{Status: wire.StatusOK}
	case wire.OpLease:
		return s.lease(ctx, req)
	case wire.OpRelease:
		return s.release(ctx, req)
	}
	return errResponse(fmt.Errorf("%w: op %d", wire.ErrMalformed, req.Op))
}

func errResponse(err error) wire.Response {
	return wire.Response{Status: wire.StatusError, Value: []byte(err.Error())}
}

func (s *Server) lease(ctx context.Context, req wire.Request) wire.Response {
	l, ok, err := s.cfg.Store.Lease(ctx, req.Key, req.TTL)
	if err != nil {
		return errResponse(err)
	}
	if !ok {
		return wire.Response{Status: wire.StatusBusy}
	}
	tok := s.nextTok.Add(1)
	now := time.Now()
	h := heldLease{key: req.Key, lease: l}
	if req.TTL > 0 {
		h.expires = now.Add(req.TTL)
	}
	s.lmu.Lock()
	s.leases[tok] = h
	if len(s.leases) >= s.sweepAt {
		// Forget leases that expired without a release; amortised over the growth.
		for t, x := range s.leases {
			if !x.expires.IsZero() && now.After(x.expires) {
				delete(s.leases, t)
			}
		}
		s.sweepAt = max(1024, 2*len(s.leases))
	}
	s.lmu.Unlock()
	return wire.Response{Status: wire.StatusLeased, Token: tok}
}

func (s *Server) release(ctx context.Context, req wire.Request) wire.Response {
	s.lmu.Lock()
	h, ok := s.leases[req.Token]
	if ok && h.key == req.Key {
		delete(s.leases, req.Token)
	}
	s.lmu.Unlock()
	if !ok || h.key != req.Key {
		return wire.Response{Status: wire.StatusOK} // expired, stolen or unknown: a no-op
	}
	if err := h.lease.Release(ctx); err != nil {
		return errResponse(err)
	}
	return wire.Response{Status: wire.StatusOK}
}
