//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package lb

import "net"

// newPeek is a no-op where a non-blocking peek is not available.
func (c *bconn) newPeek(net.Conn) {}

// alive reports whether an idle connection may still be written to. Without
// a non-blocking peek, only bytes already buffered prove it dead.
func (c *bconn) alive() bool { return c.br.Buffered() == 0 }
