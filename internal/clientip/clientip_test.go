package clientip_test

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"testing"

	"github.com/strata-project/strata/internal/clientip"
)

func mustResolver(t testing.TB, h clientip.Header, cidrs ...string) *clientip.Resolver {
	t.Helper()
	var ps []netip.Prefix
	for _, c := range cidrs {
		ps = append(ps, netip.MustParsePrefix(c))
	}
	r, err := clientip.New(ps, h)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestResolveXForwardedFor(t *testing.T) {
	r := mustResolver(t, clientip.XForwardedFor, "10.0.0.0/8", "2001:db8:ffff::/48")
	for _, tc := range []struct {
		name, peer string
		xff        []string
		want       string
	}{
		{"no proxy, no header", "203.0.113.7:5000", nil, "203.0.113.7"},
		{"untrusted peer, spoofed header", "203.0.113.7:5000", []string{"198.51.100.1"}, "203.0.113.7"},
		{"trusted peer", "10.0.0.1:80", []string{"198.51.100.1"}, "198.51.100.1"},
		{"two trusted hops", "10.0.0.1:80", []string{"198.51.100.1, 10.0.0.2"}, "198.51.100.1"},
		{"client spoofs the left part", "10.0.0.1:80", []string{"1.2.3.4, 198.51.100.1"}, "198.51.100.1"},
		{"client spoofs a trusted hop", "10.0.0.1:80", []string{"1.2.3.4, 10.9.9.9, 198.51.100.1"}, "198.51.100.1"},
		{"several header lines", "10.0.0.1:80", []string{"1.2.3.4", "198.51.100.1, 10.0.0.3"}, "198.51.100.1"},
		{"garbage reported by a trusted hop", "10.0.0.1:80", []string{"198.51.100.1, garbage"}, "10.0.0.1"},
		{"all trusted", "10.0.0.1:80", []string{"10.0.0.5, 10.0.0.6"}, "10.0.0.5"},
		{"trusted peer, no header", "10.0.0.1:80", nil, "10.0.0.1"},
		{"ipv6 peer and hop with port", "[2001:db8:ffff::1]:443", []string{"[2001:db8::5]:1234"}, "2001:db8::5"},
		{"mapped ipv4 peer is trusted", "[::ffff:10.1.2.3]:80", []string{"198.51.100.9"}, "198.51.100.9"},
		{"empty entries skipped", "10.0.0.1:80", []string{"198.51.100.1,, ,"}, "198.51.100.1"},
		{"peer without port", "10.0.0.1", []string{"198.51.100.1"}, "198.51.100.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			for _, v := range tc.xff {
				h.Add("X-Forwarded-For", v)
			}
			h.Set("Forwarded", "for=192.0.2.99") // never read in this mode
			if got := r.Resolve(tc.peer, h); got.String() != tc.want {
				t.Fatalf("Resolve(%q, %q) = %v, want %s", tc.peer, tc.xff, got, tc.want)
			}
		})
	}
	if got := r.Resolve("@", nil); got.IsValid() {
		t.Fatalf("unparseable peer resolved to %v", got)
	}
}

func TestResolveForwarded(t *testing.T) {
	r := mustResolver(t, clientip.Forwarded, "10.0.0.0/8")
	for _, tc := range []struct {
		name, peer, fwd, want string
	}{
		{"rfc example", "10.0.0.1:80", `for="_gazonk"`, "10.0.0.1"},
		{"quoted ipv6 with port", "10.0.0.1:80", `For="[2001:db8:cafe::17]:4711"`, "2001:db8:cafe::17"},
		{"several pairs", "10.0.0.1:80", `for=192.0.2.60;proto=http;by=203.0.113.43`, "192.0.2.60"},
		{"two elements", "10.0.0.1:80", `for=192.0.2.43, for=10.0.0.7`, "192.0.2.43"},
		{"spoofed left part", "10.0.0.1:80", `for=1.1.1.1, for=192.0.2.43`, "192.0.2.43"},
		{"untrusted peer", "192.0.2.1:80", `for=1.1.1.1`, "192.0.2.1"},
		{"malformed header falls back to the peer", "10.0.0.1:80", `for="1.1.1.1, for=192.0.2.43`, "10.0.0.1"},
		{"element without for", "10.0.0.1:80", `for=192.0.2.43, proto=https`, "10.0.0.1"},
		{"unknown", "10.0.0.1:80", `for=unknown`, "10.0.0.1"},
		{"quoted escapes", "10.0.0.1:80", `for="192.0.2.\44"`, "192.0.2.44"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			h.Set("Forwarded", tc.fwd)
			h.Set("X-Forwarded-For", "198.51.100.200") // never read in this mode
			if got := r.Resolve(tc.peer, h); got.String() != tc.want {
				t.Fatalf("Resolve(%q, %q) = %v, want %s", tc.peer, tc.fwd, got, tc.want)
			}
		})
	}
}

func TestParseForwardedErrors(t *testing.T) {
	for _, v := range []string{`for`, `for=`, `for="x`, `for=1.2.3.4 x`, `=x`, `for=a;for=b`, "for=\"\x01\""} {
		if _, err := clientip.ParseForwarded([]string{v}); !errors.Is(err, clientip.ErrSyntax) {
			t.Errorf("ParseForwarded(%q) err = %v, want ErrSyntax", v, err)
		}
	}
	if _, err := clientip.New(nil, clientip.Header(9)); err == nil {
		t.Error("New accepted an unknown header")
	}
	if _, err := clientip.New([]netip.Prefix{{}}, clientip.XForwardedFor); err == nil {
		t.Error("New accepted an invalid prefix")
	}
}

// FuzzResolve feeds arbitrary peers and headers. Whatever the headers, an
// untrusted peer is its own client address (a spoofed header changes
// nothing), and a trusted peer's client is the peer or one of the hops.
func FuzzResolve(f *testing.F) {
	f.Add("203.0.113.7:5000", "198.51.100.1", "for=198.51.100.1")
	f.Add("10.0.0.1:80", "1.2.3.4, 10.9.9.9, 198.51.100.1", `for="[2001:db8::1]:80", for=10.1.1.1`)
	f.Add("[::ffff:10.0.0.1]:80", "garbage, ,", `for="unterminated`)
	f.Add("[fe80::1%eth0]:80", "[::1]:9", `for=_hidden;by=x`)
	x := mustResolver(f, clientip.XForwardedFor, "10.0.0.0/8", "fe80::/10")
	fw := mustResolver(f, clientip.Forwarded, "10.0.0.0/8", "fe80::/10")
	f.Fuzz(func(t *testing.T, peer, xff, fwd string) {
		h := http.Header{"X-Forwarded-For": {xff}, "Forwarded": {fwd}}
		p := clientip.ParseNode(peer)
		for _, r := range []*clientip.Resolver{x, fw} {
			got := r.Resolve(peer, h)
			if !p.IsValid() || !r.Trusted(p) {
				if got != p {
					t.Fatalf("untrusted peer %q resolved to %v", peer, got)
				}
				continue
			}
			if got != p && !containsAddr(xff, fwd, got) {
				t.Fatalf("trusted peer %q resolved to %v, not in the headers", peer, got)
			}
			if got.Zone() != "" || got.Is4In6() {
				t.Fatalf("resolved %v not normalised", got)
			}
		}
	})
}

func containsAddr(xff, fwd string, a netip.Addr) bool {
	for _, h := range clientip.ParseXForwardedFor([]string{xff}) {
		if h == a {
			return true
		}
	}
	hops, _ := clientip.ParseForwarded([]string{fwd})
	for _, h := range hops {
		if h == a {
			return true
		}
	}
	return false
}

// FuzzParseForwarded checks that parsing never panics and that the hops of
// a well-formed header survive formatting and parsing again.
func FuzzParseForwarded(f *testing.F) {
	for _, s := range []string{
		`for=192.0.2.43`, `For="[2001:db8:cafe::17]:4711"`, `for=192.0.2.60;proto=http;by=203.0.113.43`,
		`for=192.0.2.43, for=198.51.100.17`, `for="_gazonk"`, `for=unknown, ,;`, `for="\"x\\"`, `a=b;c="d,e"`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		hops, err := clientip.ParseForwarded([]string{v})
		if err != nil {
			if !errors.Is(err, clientip.ErrSyntax) {
				t.Fatalf("error %v does not wrap ErrSyntax", err)
			}
			return
		}
		parts := make([]string, len(hops))
		for i, h := range hops {
			if !h.IsValid() {
				parts[i] = "proto=http"
				continue
			}
			parts[i] = fmt.Sprintf("for=%q", netip.AddrPortFrom(h, 1).String())
		}
		again, err := clientip.ParseForwarded([]string{strings.Join(parts, ", ")})
		if err != nil || len(again) != len(hops) {
			t.Fatalf("re-parse of %q: %v, %d hops, want %d", parts, err, len(again), len(hops))
		}
		for i := range hops {
			if again[i] != hops[i] {
				t.Fatalf("hop %d: %v after a round trip, want %v", i, again[i], hops[i])
			}
		}
	})
}

// FuzzParseXForwardedFor checks that parsing never panics, returns only
// normalised addresses and that valid hops survive a round trip.
func FuzzParseXForwardedFor(f *testing.F) {
	for _, s := range []string{"192.0.2.1", "192.0.2.1:80, [2001:db8::1]:443", "::ffff:1.2.3.4", ",,x, ", "fe80::1%eth0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		hops := clientip.ParseXForwardedFor([]string{v})
		var parts []string
		for _, h := range hops {
			if h.IsValid() && (h.Zone() != "" || h.Is4In6()) {
				t.Fatalf("hop %v not normalised", h)
			}
			if h.IsValid() {
				parts = append(parts, h.String())
			} else {
				parts = append(parts, "unknown")
			}
		}
		again := clientip.ParseXForwardedFor([]string{strings.Join(parts, ", ")})
		if len(again) != len(hops) {
			t.Fatalf("%d hops after a round trip, want %d", len(again), len(hops))
		}
		for i := range hops {
			if again[i] != hops[i] {
				t.Fatalf("hop %d: %v after a round trip, want %v", i, again[i], hops[i])
			}
		}
	})
}

// FuzzTrusted compares the trusted-proxy match with a bit-by-bit reference.
func FuzzTrusted(f *testing.F) {
	f.Add([]byte{10, 0, 0, 1}, []byte{10, 0, 0, 0}, 8)
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3}, []byte{10, 0, 0, 0}, 8)
	f.Add([]byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, []byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, 32)
	f.Add([]byte{192, 168, 1, 1}, []byte{192, 168, 1, 0}, 32)
	f.Fuzz(func(t *testing.T, addr, prefix []byte, bits int) {
		a, ok1 := netip.AddrFromSlice(addr)
		pa, ok2 := netip.AddrFromSlice(prefix)
		if !ok1 || !ok2 {
			return
		}
		p := netip.PrefixFrom(pa, bits)
		r, err := clientip.New([]netip.Prefix{p}, clientip.XForwardedFor)
		if !p.IsValid() {
			if err == nil {
				t.Fatalf("New accepted invalid prefix %v", p)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if got, want := r.Trusted(a), refContains(pa, bits, a); got != want {
			t.Fatalf("Trusted(%v) with %v = %v, want %v", a, p, got, want)
		}
	})
}

// refContains compares the first bits of prefix and addr in their 16-byte
// forms (IPv4 as ::ffff:a.b.c.d). IPv4 clients, mapped or not, match only
// IPv4 prefixes (or IPv4-mapped ones of at least 96 bits); IPv6 clients
// match only IPv6 prefixes.
func refContains(prefix netip.Addr, bits int, addr netip.Addr) bool {
	v4 := addr.Unmap().Is4()
	switch {
	case prefix.Is4():
		bits += 96
		if !v4 {
			return false
		}
	case prefix.Is4In6() && bits >= 96:
		if !v4 {
			return false
		}
	case v4:
		return false
	}
	pb, ab := prefix.As16(), addr.As16()
	for i := range bits {
		if pb[i/8]>>(7-i%8)&1 != ab[i/8]>>(7-i%8)&1 {
			return false
		}
	}
	return true
}
