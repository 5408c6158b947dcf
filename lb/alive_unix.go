//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package lb

import (
	"net"
	"syscall"
)

// newPeek prepares c's liveness check: a non-blocking peek at its socket.
func (c *bconn) newPeek(nc net.Conn) {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	c.raw = rc
	c.peekFn = func(fd uintptr) {
		_, _, err := syscall.Recvfrom(int(fd), c.peekBuf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		// Alive means nothing to read yet. Anything else is the end: a FIN
		// (no error, 0 bytes), an RST (ECONNRESET), or unsolicited bytes
		// (such as the 408 some servers write before closing an idle
		// connection).
		c.peekOK = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
	}
}

// alive reports whether an idle connection may still be written to: its
// peer has neither closed it nor sent anything since the last response. It
// does not block and does not consume anything. A connection found dead
// here has had no byte of the next request written to it.
func (c *bconn) alive() bool {
	if c.br.Buffered() > 0 {
		return false
	}
	if c.raw == nil {
		return true
	}
	c.peekOK = false
	// Control, unlike Read, ignores the read deadline left from the last
	// request, and the socket is non-blocking either way.
	if c.raw.Control(c.peekFn) != nil {
		return false
	}
	return c.peekOK
}
