package clientip

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
)

// ErrSyntax is wrapped by ParseForwarded for a malformed header.
var ErrSyntax = errors.New("clientip: malformed Forwarded header")

// Header names the forwarding header the trusted proxies write.
type Header int

const (
	// XForwardedFor is the de facto X-Forwarded-For header: a
	// comma-separated list of addresses, the client first.
	XForwardedFor Header = iota
	// Forwarded is the RFC 7239 Forwarded header; its for= parameters are
	// read.
	Forwarded
)

// Resolver finds client addresses. The zero Resolver trusts no proxy and
// always returns the socket address. A Resolver is safe for concurrent use.
type Resolver struct {
	trusted []netip.Prefix
	header  Header
}

// New returns a Resolver that reads header when the direct peer is in one
// of trusted. IPv4 prefixes also match IPv4-mapped IPv6 peers; IPv6
// prefixes match IPv6 peers only.
func New(trusted []netip.Prefix, header Header) (*Resolver, error) {
	if header != XForwardedFor && header != Forwarded {
		return nil, fmt.Errorf("clientip: unknown header %d", header)
	}
	r := &Resolver{header: header}
	for _, p := range trusted {
		if !p.IsValid() {
			return nil, fmt.Errorf("clientip: invalid trusted prefix %v", p)
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		r.trusted = append(r.trusted, netip.PrefixFrom(p.Addr().WithZone(""), p.Bits()).Masked())
	}
	return r, nil
}

// Trusted reports whether a is in one of the trusted prefixes.
func (r *Resolver) Trusted(a netip.Addr) bool {
	a = normalize(a)
	for _, p := range r.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// ClientIP returns the client address of req, or the zero Addr when the
// socket address cannot be parsed (a Unix socket, say).
func (r *Resolver) ClientIP(req *http.Request) netip.Addr {
	return r.Resolve(req.RemoteAddr, req.Header)
}

// Resolve returns the client address of a request from peer remoteAddr
// ("host:port", as in http.Request.RemoteAddr) with header h.
func (r *Resolver) Resolve(remoteAddr string, h http.Header) netip.Addr {
	addr := ParseNode(remoteAddr)
	if !addr.IsValid() || !r.Trusted(addr) {
		return addr
	}
	var hops []netip.Addr
	switch r.header {
	case Forwarded:
		var err error
		if hops, err = ParseForwarded(h.Values("Forwarded")); err != nil {
			return addr
		}
	default:
		hops = ParseXForwardedFor(h.Values("X-Forwarded-For"))
	}
	// addr is trusted: its claim about the previous hop is believed.
	for i := len(hops) - 1; i >= 0 && r.Trusted(addr); i-- {
		if !hops[i].IsValid() {
			break // the proxy at addr reported no usable address
		}
		addr = hops[i]
	}
	return addr
}

// normalize unmaps IPv4-mapped IPv6 addresses and drops zones, so that one
// client has one form.
func normalize(a netip.Addr) netip.Addr { return a.Unmap().WithZone("") }

// ParseNode parses one address as written in RemoteAddr, X-Forwarded-For or
// a Forwarded node: "192.0.2.1", "192.0.2.1:80", "2001:db8::1",
// "[2001:db8::1]" or "[2001:db8::1]:80". It returns the zero Addr for
// anything else, including the "unknown" and obfuscated ("_x") nodes of
// RFC 7239.
func ParseNode(s string) netip.Addr {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return normalize(ap.Addr())
	}
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		s = s[1 : len(s)-1]
		if !strings.Contains(s, ":") {
			return netip.Addr{} // brackets are for IPv6 only
		}
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return normalize(a)
	}
	return netip.Addr{}
}

// ParseXForwardedFor returns the hops of X-Forwarded-For header values, the
// client first. An entry that is not an address is returned as the zero
// Addr; empty entries are skipped.
func ParseXForwardedFor(values []string) []netip.Addr {
	var hops []netip.Addr
	for _, v := range values {
		for entry := range strings.SplitSeq(v, ",") {
			if entry = strings.Trim(entry, " \t"); entry != "" {
				hops = append(hops, ParseNode(entry))
			}
		}
	}
	return hops
}

// ParseForwarded returns the for= nodes of Forwarded header values
// (RFC 7239), one per forwarded-element, the client first. An element
// without for=, or whose node is not an address, gives the zero Addr. A
// header that does not follow the grammar returns an error wrapping
// ErrSyntax: values are then tokens or quoted strings, pairs are separated
// by ";" and elements by ",". Unquoted values may also hold ':' '[' ']',
// as some proxies write them.
func ParseForwarded(values []string) ([]netip.Addr, error) {
	var hops []netip.Addr
	for _, v := range values {
		p := v
		for {
			node, seen, rest, err := parseElement(p)
			if err != nil {
				return nil, err
			}
			if seen {
				hops = append(hops, ParseNode(node))
			}
			if rest == "" {
				break
			}
			p = rest[1:] // rest starts with ','
		}
	}
	return hops, nil
}

// parseElement parses one forwarded-element at the start of p. It returns
// the for= value, whether the element had any pair, and the rest of p
// (empty or starting with ',').
func parseElement(p string) (node string, seen bool, rest string, err error) {
	hasFor := false
	for {
		p = trimOWS(p)
		if p != "" && p[0] != ',' && p[0] != ';' {
			var name, value string
			if name, p = token(p, false); name == "" || p == "" || p[0] != '=' {
				return "", false, "", fmt.Errorf("%w: expected name=value", ErrSyntax)
			}
			if value, p, err = pairValue(p[1:]); err != nil {
				return "", false, "", err
			}
			seen = true
			if strings.EqualFold(name, "for") {
				if hasFor {
					return "", false, "", fmt.Errorf("%w: duplicate for=", ErrSyntax)
				}
				node, hasFor = value, true
			}
			p = trimOWS(p)
		}
		switch {
		case p == "" || p[0] == ',':
			return node, seen, p, nil
		case p[0] == ';':
			p = p[1:]
		default:
			return "", false, "", fmt.Errorf("%w: unexpected %q", ErrSyntax, p[0])
		}
	}
}

// pairValue parses a token or a quoted-string at the start of p.
func pairValue(p string) (value, rest string, err error) {
	if p == "" || p[0] != '"' {
		v, rest := token(p, true)
		if v == "" {
			return "", "", fmt.Errorf("%w: empty value", ErrSyntax)
		}
		return v, rest, nil
	}
	var b strings.Builder
	for i := 1; i < len(p); i++ {
		switch c := p[i]; {
		case c == '"':
			return b.String(), p[i+1:], nil
		case c == '\\' && i+1 < len(p):
			i++
			b.WriteByte(p[i])
		case c == '\t' || (c >= 0x20 && c != 0x7f):
			b.WriteByte(c)
		default:
			return "", "", fmt.Errorf("%w: control byte in quoted string", ErrSyntax)
		}
	}
	return "", "", fmt.Errorf("%w: unterminated quoted string", ErrSyntax)
}

// token returns the longest prefix of p made of RFC 9110 tchar (and, in a
// value, ':' '[' ']').
func token(p string, value bool) (tok, rest string) {
	i := 0
	for i < len(p) && (isTchar(p[i]) || value && (p[i] == ':' || p[i] == '[' || p[i] == ']')) {
		i++
	}
	return p[:i], p[i:]
}

func isTchar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func trimOWS(p string) string { return strings.TrimLeft(p, " \t") }
