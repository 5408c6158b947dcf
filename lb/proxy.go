package lb

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync/atomic"
	"time"
)

// clientConn is one client connection and the state reused across its
// requests, so that the proxy path allocates nothing per request.
type clientConn struct {
	lb       *LB
	c        net.Conn
	br       *bufio.Reader
	bw       *bufio.Writer
	idle     atomic.Bool
	peer     netip.Addr
	peerIP   []byte // textual peer address
	peerNode []byte // the peer as a Forwarded node
	trusted  bool   // the peer is a trusted proxy
	local    []byte // the address the client connected to, Host for HTTP/1.0 requests without one

	req, resp head
	out       []byte // outgoing head
	body      []byte // buffered request body for replay
	pick      Pick
	hedgeable bool  // the request may be hedged: GET or HEAD without a body, hedging on
	hedgeSent bool  // a hedge was sent for the request (one at most)
	writeBy   int64 // monotonic ns (see monoNow) of the client connection's write deadline
}

func (l *LB) newClientConn(c net.Conn) *clientConn {
	cc := &clientConn{lb: l, c: c}
	cc.br = bufio.NewReaderSize(c, l.opts.maxHeader)
	cc.bw = bufio.NewWriterSize(clientWriter{cc}, 8192)
	cc.out = make([]byte, 0, 1024)
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		cc.peer = ap.Addr().Unmap()
	}
	cc.peerIP = cc.peer.AppendTo(nil)
	if cc.peer.Is6() {
		cc.peerNode = append(append(append([]byte(`"[`), cc.peerIP...), ']'), '"')
	} else {
		cc.peerNode = cc.peerIP
	}
	cc.trusted = l.trusted && l.resolver.Trusted(cc.peer)
	cc.local = []byte(c.LocalAddr().String())
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	return cc
}

func (cc *clientConn) serve() {
	l := cc.lb
	defer func() {
		cc.c.Close()
		l.mu.Lock()
		delete(l.conns, cc)
		l.mu.Unlock()
		l.wg.Done()
	}()
	for {
		if cc.br.Buffered() == 0 {
			if cc.bw.Flush() != nil {
				return
			}
			cc.idle.Store(true)
			if l.closing.Load() {
				return
			}
			cc.c.SetReadDeadline(time.Now().Add(l.opts.clientIdle))
		}
		buf, err := readHead(cc.br)
		cc.idle.Store(false)
		if err != nil {
			if errors.Is(err, ErrHeadTooLarge) {
				cc.simple(http.StatusRequestHeaderFieldsTooLarge, true)
			} else if errors.Is(err, io.ErrUnexpectedEOF) {
				cc.simple(http.StatusBadRequest, true)
			}
			cc.bw.Flush()
			return
		}
		if err := parseRequest(buf, &cc.req); err != nil {
			l.stats.badRequests.Add(1)
			code := http.StatusBadRequest
			if errors.Is(err, ErrUnsupported) {
				code = http.StatusNotImplemented
			}
			cc.simple(code, true)
			cc.bw.Flush()
			return
		}
		if !cc.handle() {
			cc.bw.Flush()
			return
		}
	}
}

// Bounds of writing to clients and of an early answer.
const (
	// clientWriteChunk is the most written to a client under one write
	// deadline: a write makes progress at least this fast or fails.
	clientWriteChunk = 64 << 10
	// earlyAnswerWait bounds the wait for a backend's response once writing
	// the request to it failed (the backend refused the request before
	// reading all of it and closed the connection: its answer normally
	// arrived before the failure).
	earlyAnswerWait = time.Second
	// lingerTime and lingerBytes bound what is read and discarded from a
	// client after a response sent before its body was read in full (see
	// linger).
	lingerTime  = 2 * time.Second
	lingerBytes = 1 << 20
)

// clientWriter is the client connection as its buffered writer sees it:
// every write gets the client write timeout, so that a client that stops
// reading is given up (the write fails, the exchange is aborted and the
// connection closed).
type clientWriter struct{ cc *clientConn }

func (w clientWriter) Write(p []byte) (n int, err error) {
	cc := w.cc
	d := int64(cc.lb.opts.clientWrite)
	for len(p) > 0 {
		k := min(len(p), clientWriteChunk)
		// Moving the deadline updates a timer: it is moved only when less
		// than the timeout is left, to the timeout and a sixteenth from now.
		// A write that makes no progress thus fails after between 1 and
		// 1.0625 times the timeout, and most writes move nothing.
		if now := monoNow(); cc.writeBy-now < d {
			cc.writeBy = now + d + d/16
			cc.c.SetWriteDeadline(monoBase.Add(time.Duration(cc.writeBy)))
		}
		m, err := cc.c.Write(p[:k])
		n += m
		if err != nil {
			return n, err
		}
		p = p[k:]
	}
	return n, nil
}

// linger ends a client connection whose request body was not read in full
// after a response was written for it: it sends the response, shuts the
// connection down for writing (the client sees the response end), then
// reads and discards what the client still sends, up to lingerBytes or for
// lingerTime, before the caller closes the connection. Closing a socket
// with unread input resets the connection, and a reset can destroy a
// response the client has not read yet.
func (cc *clientConn) linger() {
	if cc.bw.Flush() != nil {
		return
	}
	if cw, ok := cc.c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	cc.c.SetReadDeadline(time.Now().Add(lingerTime))
	cc.br.Discard(lingerBytes)
}

// simple writes a short response generated by the proxy itself.
func (cc *clientConn) simple(code int, closeConn bool) {
	b := cc.out[:0]
	b = append(b, "HTTP/1.1 "...)
	b = appendInt(b, int64(code))
	b = append(b, ' ')
	b = append(b, http.StatusText(code)...)
	b = append(b, "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: "...)
	text := http.StatusText(code)
	b = appendInt(b, int64(len(text)+1))
	if closeConn {
		b = append(b, "\r\nConnection: close"...)
	}
	b = append(b, "\r\n\r\n"...)
	b = append(b, text...)
	b = append(b, '\n')
	cc.out = b
	cc.bw.Write(b)
}

// replayable reports whether a request may be sent again after it (may have) reached a
// backend: a safe method (GET, HEAD, OPTIONS, TRACE), or any request with an
// Idempotency-Key (the backend applies it once). PUT and DELETE are idempotent by RFC 9110,
// but not replayed: a PUT that the first backend applied before dying, sent again, lands
// after whatever other clients wrote meanwhile and overwrites it (the reliability suite's
// linearizability check saw it). They are still sent elsewhere when none of them was sent.
func replayable(m []byte, idempotencyKey bool) bool {
	switch string(m) {
	case "GET", "HEAD", "OPTIONS", "TRACE":
		return true
	}
	return idempotencyKey
}

// handle proxies the request whose head is in cc.req and reports whether
// the client connection stays open.
func (cc *clientConn) handle() bool {
	l := cc.lb
	req := &cc.req
	l.stats.requests.Add(1)
	now := monoNow()

	if l.limiter != nil && !cc.allowed() {
		l.stats.limited.Add(1)
		cc.br.Discard(req.size)
		// The body was not read: close unless there is none.
		closeConn := req.body != bodyNone || req.closeConn
		cc.simple(http.StatusTooManyRequests, closeConn)
		return !closeConn
	}

	// Affinity key for consistent hashing.
	cc.pick.HasKey = false
	if l.opts.policy == ConsistentHash {
		cc.hashKey()
	}
	retryable := replayable(req.method, req.idempotencyKey)
	cc.hedgeable = l.hedge != nil && req.body == bodyNone &&
		(string(req.method) == "GET" || string(req.method) == "HEAD")
	cc.hedgeSent = false
	cc.buildRequestHead()
	cc.br.Discard(req.size)

	// Body: buffer it for replay when small and retryable, else stream it.
	buffered := false
	cc.body = cc.body[:0]
	switch req.body {
	case bodyLength:
		if retryable && req.contentLength <= int64(l.opts.maxBody) {
			if req.expectContinue && req.minor >= 1 {
				cc.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
				if cc.bw.Flush() != nil {
					return false
				}
			}
			n := int(req.contentLength)
			if cap(cc.body) < n {
				cc.body = make([]byte, n)
			}
			cc.body = cc.body[:n]
			if _, err := io.ReadFull(cc.br, cc.body); err != nil {
				return false
			}
			buffered = true
		} else {
			retryable = false
		}
	case bodyChunked:
		retryable = false
	default:
		buffered = true
	}

	p := &cc.pick
	p.ntried = 0
	p.panic = false
	// A request that is not retryable still gets another backend when
	// nothing of it was sent (no connection could be had): see unsent.
	attempts := l.opts.attempts
	l.budget.RequestAt(monoBase.Add(time.Duration(now)))
	if cc.hedgeable {
		l.hedge.budget.RequestAt(monoBase.Add(time.Duration(now)))
	}
	var lastErr error
	var lastStatus int
	// again is set for the try after one that met a stale connection (see
	// attemptResult.stale): that try is free, once per request.
	again, staleRetried := false, false
tries:
	for try := 0; try < attempts; try++ {
		if again {
			again = false
		} else if try > 0 {
			if !l.budget.TryRetryAt(monoBase.Add(time.Duration(now))) {
				l.stats.retriesDenied.Add(1)
				break
			}
			l.stats.retries.Add(1)
		}
		set := l.set.Load()
		p.Backends = set.backends
		p.now = now
		b := set.selector.Select(p)
		if b == nil {
			p.panic = true
			b = set.selector.Select(p)
			p.panic = false
		}
		if b == nil {
			break
		}
		if try > 0 {
			b.retries.Add(1)
		}
		if p.ntried < len(p.tried) {
			p.tried[p.ntried] = b
			p.ntried++
		}
		res := cc.attempt(b, buffered, retryable && try+1 < attempts, cc.hedgeable && !cc.hedgeSent)
		switch res.outcome {
		case outcomeDone:
			return res.keep
		case outcomeRetry:
			lastErr, lastStatus = res.err, res.status
			now = monoNow()
			if res.stale && !staleRetried {
				// The backend did not fail, one of its idle connections
				// was closed: try again, the same backend included.
				staleRetried, again = true, true
				if p.ntried > 0 && p.tried[p.ntried-1] == b {
					p.ntried--
				}
				l.stats.retries.Add(1)
				try--
				continue
			}
			if !retryable && !res.unsent {
				break tries
			}
			continue
		case outcomeFail:
			return false
		}
	}
	l.stats.upstreamErrors.Add(1)
	code := http.StatusBadGateway
	switch {
	case lastErr == nil && lastStatus == 0:
		code = http.StatusServiceUnavailable
		l.stats.noBackend.Add(1)
	case errors.Is(lastErr, os.ErrDeadlineExceeded):
		code = http.StatusGatewayTimeout
	case lastStatus != 0:
		code = lastStatus
	}
	closeConn := !buffered || req.closeConn || l.closing.Load()
	cc.simple(code, closeConn)
	return !closeConn
}

type outcome uint8

const (
	outcomeDone  outcome = iota // a response was sent
	outcomeRetry                // nothing was sent to the client; try again
	outcomeFail                 // the client connection is unusable
)

type attemptResult struct {
	outcome outcome
	keep    bool  // for outcomeDone: keep the client connection
	err     error // for outcomeRetry
	status  int   // for outcomeRetry on a status
	unsent  bool  // for outcomeRetry: no byte of the request was written
	stale   bool  // for outcomeRetry: a reused connection was found closed
}

// attempt sends the request to b once. mayRetry says whether a failure
// before the response head may be retried; hedge, whether the request may
// be hedged.
func (cc *clientConn) attempt(b *Backend, buffered, mayRetry, hedge bool) attemptResult {
	l := cc.lb
	req := &cc.req
	b.inflight.Add(1)
	b.requests.Add(1)
	defer b.inflight.Add(-1)
	start := monoNow()
	bc, err := b.getConn(context.Background(), start, true, !buffered || !replayable(req.method, req.idempotencyKey))
	if err != nil {
		if !errors.Is(err, ErrBackendFull) {
			b.observe(monoNow(), monoNow()-start, false, l.opts.decay)
		}
		return attemptResult{outcome: outcomeRetry, err: err, unsent: true}
	}
	wait, hedgeArmed := l.opts.perTry, false
	if hedge {
		if d := l.hedge.delayAt(start); d < wait {
			wait, hedgeArmed = d, true
		}
	}
	bc.SetReadDeadline(time.Now().Add(wait))
	bc.bw.Write(cc.out)
	if buffered {
		bc.bw.Write(cc.body)
	} else {
		// Stream the body; the request cannot be retried.
		if req.expectContinue && req.minor >= 1 {
			cc.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
			if cc.bw.Flush() != nil {
				b.closeConn(bc)
				return attemptResult{outcome: outcomeFail}
			}
		}
		var err error
		if req.body == bodyChunked {
			err = copyChunked(bc.bw, cc.br, true)
		} else {
			err = copyN(bc.bw, cc.br, req.contentLength)
		}
		if err != nil {
			var we *writeError
			if errors.As(err, &we) {
				// The backend stopped reading the body: it may have
				// answered (a 413) and closed the connection.
				return cc.sendFailed(b, bc, start, we.err, false, false, sentPartBodyLeft)
			}
			b.closeConn(bc)
			if errors.Is(err, ErrMalformed) {
				cc.simple(http.StatusBadRequest, true)
				return attemptResult{outcome: outcomeDone}
			}
			return attemptResult{outcome: outcomeFail} // client went away
		}
	}
	if err = bc.bw.Flush(); err != nil {
		return cc.sendFailed(b, bc, start, err, mayRetry, buffered, sentPart)
	}
	err = readResponseHead(bc, &cc.resp, string(req.method) == "HEAD")
	if err != nil && hedgeArmed && errors.Is(err, os.ErrDeadlineExceeded) {
		return cc.hedge(b, bc, start, mayRetry)
	}
	if err != nil {
		return cc.tryFailed(b, bc, start, err, mayRetry, buffered)
	}
	if hedge {
		now := monoNow()
		l.hedge.observe(now, now-start)
	}
	return cc.respond(b, bc, start, mayRetry, sentFull)
}

// sendFailed handles a try whose request could not be written in full to bc
// (err). The backend may have answered before reading all of it and closed
// the connection, as a server refusing a body too large does (413): a
// response head that arrives within earlyAnswerWait is passed on. Otherwise
// the try failed like one that got no answer; with part of the client's
// body unread (s is sentPartBodyLeft) it cannot be retried and the client
// gets 502. In both cases an unread body ends the client connection (see
// linger).
func (cc *clientConn) sendFailed(b *Backend, bc *bconn, start int64, err error, mayRetry, buffered bool, s sent) attemptResult {
	l := cc.lb
	bc.SetReadDeadline(time.Now().Add(min(l.opts.perTry, earlyAnswerWait)))
	var res attemptResult
	switch {
	case readResponseHead(bc, &cc.resp, string(cc.req.method) == "HEAD") == nil:
		res = cc.respond(b, bc, start, mayRetry, s)
	case s == sentPart:
		return cc.tryFailed(b, bc, start, err, mayRetry, buffered)
	default:
		b.closeConn(bc)
		b.observe(monoNow(), monoNow()-start, false, l.opts.decay)
		cc.simple(http.StatusBadGateway, true)
		res = attemptResult{outcome: outcomeDone}
	}
	if s == sentPartBodyLeft && res.outcome == outcomeDone {
		cc.linger()
		res.keep = false
	}
	return res
}

// tryFailed handles a try on b whose request was written (in part or in
// full) to bc but that got no response head: err.
func (cc *clientConn) tryFailed(b *Backend, bc *bconn, start int64, err error, mayRetry, buffered bool) attemptResult {
	l := cc.lb
	req := &cc.req
	// A reused connection that ends without a byte of answer was most
	// likely closed by the backend as the request was sent.
	stale := bc.reused && !errors.Is(err, os.ErrDeadlineExceeded) && bc.br.Buffered() == 0
	b.closeConn(bc)
	if stale {
		b.staleAt.Store(monoNow())
	} else {
		b.observe(monoNow(), monoNow()-start, false, l.opts.decay)
	}
	if mayRetry || stale && buffered && replayable(req.method, req.idempotencyKey) {
		return attemptResult{outcome: outcomeRetry, err: err, stale: stale}
	}
	code := http.StatusBadGateway
	if errors.Is(err, os.ErrDeadlineExceeded) {
		code = http.StatusGatewayTimeout
	}
	cc.simple(code, true)
	return attemptResult{outcome: outcomeDone}
}

// dependencyUnavailable reports whether a response is a 503 with Retry-After: the backend
// answered, and says that something it depends on (a database shard, a cache tier) cannot
// serve the request now. Every backend shares such a dependency, so ejecting the one that
// said it would only move the same answers to the others, and eject them in turn, each time
// for longer: the outlier detector counts it neither as a failure nor as a success. A
// backend that cannot serve at all fails its readiness check instead (503 there takes it out
// of rotation), and one that is broken answers other 5xx, fails to connect or times out.
func dependencyUnavailable(resp *head) bool {
	return resp.status == http.StatusServiceUnavailable && resp.has("Retry-After")
}

// sent says how much of a request reached its backend.
type sent uint8

const (
	sentFull         sent = iota // all of it
	sentPart                     // writing it failed; the client's body was read in full
	sentPartBodyLeft             // writing it failed; part of the client's body is unread
)

// respond passes the response whose head is in cc.resp, read from bc, on
// to the client. s says how much of the request reached the backend: a
// connection that failed under a write is not reused, and a client
// connection with an unread body is closed after the response.
func (cc *clientConn) respond(b *Backend, bc *bconn, start int64, mayRetry bool, s sent) attemptResult {
	l := cc.lb
	req := &cc.req
	resp := &cc.resp
	now := monoNow()
	if dependencyUnavailable(resp) {
		b.observeLatency(now, now-start, l.opts.decay)
	} else {
		b.observe(now, now-start, resp.status < 500, l.opts.decay)
	}
	if mayRetry && l.opts.retryOnStatus(resp.status) {
		b.closeConn(bc)
		return attemptResult{outcome: outcomeRetry, status: resp.status}
	}

	closeClient := s == sentPartBodyLeft || req.closeConn || l.closing.Load() || resp.body == bodyClose ||
		resp.body == bodyChunked && req.minor == 0
	cc.buildResponseHead(closeClient)
	bc.br.Discard(resp.size)
	cc.bw.Write(cc.out)

	var cerr error
	switch resp.body {
	case bodyLength:
		if int64(bc.br.Buffered()) < resp.contentLength {
			bc.SetReadDeadline(time.Now().Add(l.opts.perTry))
		}
		cerr = copyN(cc.bw, bc.br, resp.contentLength)
	case bodyChunked:
		bc.SetReadDeadline(time.Now().Add(l.opts.perTry))
		cerr = copyChunked(cc.bw, bc.br, req.minor >= 1)
	case bodyClose:
		bc.SetReadDeadline(time.Now().Add(l.opts.perTry))
		cerr = copyUntilEOF(cc.bw, bc.br)
	}
	if cerr != nil || s != sentFull || resp.closeConn || resp.body == bodyClose {
		b.closeConn(bc)
	} else {
		b.putConn(bc, monoNow())
	}
	if cerr != nil {
		return attemptResult{outcome: outcomeFail}
	}
	return attemptResult{outcome: outcomeDone, keep: !closeClient}
}

func (o *options) retryOnStatus(s int) bool {
	if s >= 500 && s <= 505 {
		return o.onStatus[s-500]
	}
	for _, x := range o.onStatusOther {
		if x == s {
			return true
		}
	}
	return false
}

// readResponseHead reads the backend's response head into h, skipping
// interim 1xx responses (the proxy answered Expect: 100-continue itself).
// isHead says whether it answers a HEAD request.
func readResponseHead(bc *bconn, h *head, isHead bool) error {
	for {
		buf, err := readHead(bc.br)
		if err != nil {
			return err
		}
		if err := parseResponse(buf, h, isHead); err != nil {
			return err
		}
		switch {
		case h.status == 101:
			return malformed("unexpected 101 Switching Protocols")
		case h.status < 200:
			bc.br.Discard(h.size)
			continue
		}
		return nil
	}
}

// buildRequestHead writes the head sent to the backend into cc.out.
func (cc *clientConn) buildRequestHead() {
	l := cc.lb
	req := &cc.req
	b := cc.out[:0]
	b = append(b, req.method...)
	b = append(b, ' ')
	b = append(b, req.target...)
	b = append(b, " HTTP/1.1\r\n"...)
	if req.hostCount == 0 {
		// An HTTP/1.0 request without Host: HTTP/1.1 requires one.
		b = append(b, "Host: "...)
		b = append(b, cc.local...)
		b = append(b, "\r\n"...)
	}
	for _, h := range req.headers {
		if h.drop {
			continue
		}
		b = append(b, h.name...)
		b = append(b, ": "...)
		b = append(b, h.value...)
		b = append(b, "\r\n"...)
	}
	// X-Forwarded-For: the earlier hops, then the peer.
	b = append(b, "X-Forwarded-For: "...)
	if req.xff > 0 {
		b = appendEarlierHops(b, req.headers, "X-Forwarded-For")
	}
	b = append(b, cc.peerIP...)
	b = append(b, "\r\n"...)
	// Forwarded (RFC 7239): the earlier elements, then ours.
	b = append(b, "Forwarded: "...)
	if req.forwarded > 0 {
		b = appendEarlierHops(b, req.headers, "Forwarded")
	}
	b = append(b, "for="...)
	b = append(b, cc.peerNode...)
	b = append(b, ";proto=http\r\n"...)
	b = append(b, "X-Forwarded-Proto: "...)
	if cc.trusted && validToken(req.xfProto) {
		b = append(b, req.xfProto...)
	} else {
		b = append(b, "http"...)
	}
	b = append(b, "\r\nX-Request-Id: "...)
	if validRequestID(req.requestID) {
		b = append(b, req.requestID...)
	} else {
		b = append(b, l.idPrefix[:]...)
		b = append(b, '-')
		b = appendHex(b, l.idSeq.Add(1))
	}
	b = append(b, "\r\n"...)
	switch {
	case req.body == bodyLength, req.contentLength == 0:
		// An explicit "Content-Length: 0" is kept: some servers want a
		// length on every POST.
		b = append(b, "Content-Length: "...)
		b = appendInt(b, req.contentLength)
		b = append(b, "\r\n"...)
	case req.body == bodyChunked:
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
	}
	b = append(b, "\r\n"...)
	cc.out = b
}

func validToken(v []byte) bool {
	if len(v) == 0 || len(v) > 16 {
		return false
	}
	for _, c := range v {
		if !isTchar(c) {
			return false
		}
	}
	return true
}

// validRequestID accepts a client's X-Request-Id of up to 128 visible ASCII
// bytes; others are replaced.
func validRequestID(v []byte) bool {
	if len(v) == 0 || len(v) > 128 {
		return false
	}
	for _, c := range v {
		if c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

// buildResponseHead writes the head sent to the client into cc.out.
func (cc *clientConn) buildResponseHead(closeClient bool) {
	resp := &cc.resp
	b := cc.out[:0]
	b = append(b, "HTTP/1.1 "...)
	b = appendInt(b, int64(resp.status))
	b = append(b, ' ')
	b = append(b, resp.reason...)
	b = append(b, "\r\n"...)
	for _, h := range resp.headers {
		if h.drop {
			continue
		}
		b = append(b, h.name...)
		b = append(b, ": "...)
		b = append(b, h.value...)
		b = append(b, "\r\n"...)
	}
	switch {
	case resp.body == bodyLength:
		b = append(b, "Content-Length: "...)
		b = appendInt(b, resp.contentLength)
		b = append(b, "\r\n"...)
	case resp.body == bodyChunked && cc.req.minor >= 1:
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
	case resp.body == bodyNone && resp.contentLength >= 0 && resp.status != 204 && resp.status >= 200:
		// HEAD and 304 answers keep the length of the body they describe.
		b = append(b, "Content-Length: "...)
		b = appendInt(b, resp.contentLength)
		b = append(b, "\r\n"...)
	}
	switch {
	case closeClient:
		b = append(b, "Connection: close\r\n"...)
	case cc.req.minor == 0:
		b = append(b, "Connection: keep-alive\r\n"...)
	}
	b = append(b, "\r\n"...)
	cc.out = b
}

// clientAddr returns the client address: the peer, or what trusted proxies
// say it is.
func (cc *clientConn) clientAddr() netip.Addr {
	if !cc.trusted {
		return cc.peer
	}
	h := http.Header{}
	for _, hd := range cc.req.headers {
		if equalFold(hd.name, "X-Forwarded-For") || equalFold(hd.name, "Forwarded") {
			h.Add(string(hd.name), string(hd.value))
		}
	}
	return cc.lb.resolver.Resolve(net.JoinHostPort(cc.peer.String(), "0"), h)
}

// allowed applies the edge rate limit.
func (cc *clientConn) allowed() bool {
	l := cc.lb
	if name := l.opts.rateHeader; name != "" {
		for _, hd := range cc.req.headers {
			if len(hd.value) > 0 && equalFold(hd.name, name) {
				return l.limiter.Allow("key:" + string(hd.value))
			}
		}
	}
	return l.limiter.Allow("ip:" + cc.clientAddr().String())
}

// hashKey sets cc.pick's affinity key from the request.
func (cc *clientConn) hashKey() {
	o := &cc.lb.opts
	p := &cc.pick
	switch o.hash.Source {
	case HashHeader:
		for _, hd := range cc.req.headers {
			if equalFold(hd.name, o.hash.Name) {
				p.Key, p.HasKey = hashBytes(hd.value), true
				return
			}
		}
	case HashCookie:
		for _, hd := range cc.req.headers {
			if !equalFold(hd.name, "Cookie") {
				continue
			}
			if v, ok := cookieValue(hd.value, o.hash.Name); ok {
				p.Key, p.HasKey = hashBytes(v), true
				return
			}
		}
	default:
		a := cc.clientAddr()
		if a.IsValid() {
			var buf [16]byte
			s := a.As16()
			copy(buf[:], s[:])
			p.Key, p.HasKey = hashBytes(buf[:]), true
		}
	}
}

// cookieValue finds cookie name in a Cookie header value.
func cookieValue(v []byte, name string) ([]byte, bool) {
	for len(v) > 0 {
		var pair []byte
		if i := indexByte(v, ';'); i >= 0 {
			pair, v = v[:i], v[i+1:]
		} else {
			pair, v = v, nil
		}
		pair = trimOWS(pair)
		if i := indexByte(pair, '='); i > 0 && string(pair[:i]) == name {
			val := pair[i+1:]
			if len(val) >= 2 && val[0] == '"' && val[len(val)-1] == '"' {
				val = val[1 : len(val)-1]
			}
			return val, true
		}
	}
	return nil, false
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// appendEarlierHops appends the non-empty values of every header called name, each followed
// by ", ", so that the proxy's own hop can be appended after them.
func appendEarlierHops(b []byte, headers []header, name string) []byte {
	for _, h := range headers {
		if equalFold(h.name, name) && len(h.value) > 0 {
			b = append(b, h.value...)
			b = append(b, ", "...)
		}
	}
	return b
}
