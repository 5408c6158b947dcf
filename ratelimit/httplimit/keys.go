package httplimit

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"

	"github.com/strata-project/strata/internal/clientip"
)

// KeyFunc returns the rate-limit key of a request. An empty key is a key
// like any other (all such requests share one budget); FirstOf skips it.
type KeyFunc func(r *http.Request) string

// Header names the forwarding header that trusted proxies write.
type Header int

const (
	// XForwardedFor is the X-Forwarded-For header.
	XForwardedFor = Header(clientip.XForwardedFor)
	// Forwarded is the RFC 7239 Forwarded header.
	Forwarded = Header(clientip.Forwarded)
)

// ClientIP configures ByClientIP.
type ClientIP struct {
	// TrustedProxies lists the prefixes of the proxies in front of the
	// server. The forwarding header is read only when the socket peer is
	// in one of them, walking from the right and skipping trusted hops.
	// Default (nil): no proxy is trusted and the socket address is used.
	TrustedProxies []netip.Prefix
	// Header is the forwarding header the trusted proxies write; the other
	// one is ignored, since a client could forge it. Default: XForwardedFor.
	Header Header
	// IPv6PrefixLen is the length of the prefix an IPv6 client is keyed by,
	// since one subscriber usually holds a whole /64. 128 keys each IPv6
	// address on its own. Default (0): 64.
	IPv6PrefixLen int
}

// ByClientIP returns a KeyFunc keying requests by client address, as
// "ip:192.0.2.1" or "ip:2001:db8::/64". It fails for an invalid prefix or
// header.
func ByClientIP(c ClientIP) (KeyFunc, error) {
	res, err := clientip.New(c.TrustedProxies, clientip.Header(c.Header))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	bits := c.IPv6PrefixLen
	if bits == 0 {
		bits = 64
	}
	if bits < 0 || bits > 128 {
		return nil, errConfigf("IPv6 prefix length %d", bits)
	}
	return func(r *http.Request) string {
		a := res.ClientIP(r)
		switch {
		case !a.IsValid():
			return "ip:" + r.RemoteAddr
		case a.Is6() && bits < 128:
			p, _ := a.Prefix(bits)
			return "ip:" + p.String()
		}
		return "ip:" + a.String()
	}, nil
}

// ByHeader returns a KeyFunc keying requests by the value of a header, such
// as an API key, as "h:Name=value", or "" when the header is absent.
func ByHeader(name string) KeyFunc {
	name = http.CanonicalHeaderKey(name)
	return func(r *http.Request) string {
		if v := r.Header.Get(name); v != "" {
			return "h:" + name + "=" + v
		}
		return ""
	}
}

// ByRoute returns a KeyFunc keying requests by the http.ServeMux pattern
// that matched them (Request.Pattern), or by the URL path when there is
// none, as "route:GET /items/{id}".
func ByRoute() KeyFunc {
	return func(r *http.Request) string {
		if r.Pattern != "" {
			return "route:" + r.Pattern
		}
		return "route:" + r.URL.Path
	}
}

// FirstOf returns a KeyFunc returning the first non-empty key of fns, such
// as FirstOf(ByHeader("X-API-Key"), byIP).
func FirstOf(fns ...KeyFunc) KeyFunc {
	return func(r *http.Request) string {
		for _, f := range fns {
			if k := f(r); k != "" {
				return k
			}
		}
		return ""
	}
}

// Join returns a KeyFunc joining the keys of fns with "|", such as
// Join(ByRoute(), byIP) for a budget per route and client.
func Join(fns ...KeyFunc) KeyFunc {
	return func(r *http.Request) string {
		parts := make([]string, len(fns))
		for i, f := range fns {
			parts[i] = f(r)
		}
		return strings.Join(parts, "|")
	}
}
