// Package lb holds the load balancer comparisons: run.sh (against nginx and
// HAProxy with wrk) and the in-process proxy benchmark below.
package lb

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/strata-project/strata/lb"
)

// BenchmarkLBProxy measures one keep-alive GET through a proxy on loopback
// to one of three tiny backends, from GOMAXPROCS clients with a connection
// each: strata's balancer with hedging off (strata), with hedging on at a
// delay no request reaches (strata-hedge: the cost of tracking latencies and
// the hedge budget), and a plain httputil.ReverseProxy (httputil), the
// reference that does not change with Strata.
func BenchmarkLBProxy(b *testing.B) {
	var addrs []string
	for range 3 {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte("hello from strata benchmark backend\n"))
		}))
		defer s.Close()
		addrs = append(addrs, s.Listener.Addr().String())
	}
	backends := func() []lb.BackendConfig {
		var bc []lb.BackendConfig
		for _, a := range addrs {
			bc = append(bc, lb.BackendConfig{Addr: a})
		}
		return bc
	}
	quiet := slog.New(slog.DiscardHandler)
	strata := func(hc lb.HedgeConfig) string {
		l, err := lb.New(lb.Config{Backends: backends(), Health: lb.HealthConfig{Disabled: true}, Hedge: hc, Logger: quiet})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { l.Close() })
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		go l.Serve(ln)
		return ln.Addr().String()
	}
	var proxies []*httputil.ReverseProxy
	for _, a := range addrs {
		u, _ := url.Parse("http://" + a)
		rp := httputil.NewSingleHostReverseProxy(u)
		rp.Transport = &http.Transport{MaxIdleConnsPerHost: 256}
		proxies = append(proxies, rp)
	}
	var next atomic.Uint64
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		proxies[next.Add(1)%3].ServeHTTP(w, r) // round robin
	}))
	defer plain.Close()

	for _, p := range []struct{ name, addr string }{
		{"strata", strata(lb.HedgeConfig{})},
		{"strata-hedge", strata(lb.HedgeConfig{Delay: 10 * time.Second})},
		{"httputil", plain.Listener.Addr().String()},
	} {
		b.Run(p.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				c, err := net.Dial("tcp", p.addr)
				if err != nil {
					b.Error(err)
					return
				}
				defer c.Close()
				br := bufio.NewReader(c)
				req := []byte("GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
				for pb.Next() {
					if _, err := c.Write(req); err != nil {
						b.Error(err)
						return
					}
					resp, err := http.ReadResponse(br, nil)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Errorf("status %d", resp.StatusCode)
						return
					}
				}
			})
		})
	}
}
