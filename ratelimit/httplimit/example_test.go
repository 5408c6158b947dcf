package httplimit_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"

	"github.com/strata-project/strata/ratelimit"
	"github.com/strata-project/strata/ratelimit/httplimit"
)

func Example() {
	limiter, _ := ratelimit.NewGCRA(ratelimit.GCRAConfig{Rate: ratelimit.PerMinute(100)})
	byIP, _ := httplimit.ByClientIP(httplimit.ClientIP{
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, // the load balancers
	})
	m, _ := httplimit.New(httplimit.Config{
		Limiter: limiter,
		Key:     httplimit.FirstOf(httplimit.ByHeader("X-API-Key"), byIP),
	})
	h := m.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "hello")
	}))

	req := httptest.NewRequest("GET", "/", nil)
	req.RemoteAddr = "10.0.0.5:40000"
	req.Header.Set("X-Forwarded-For", "198.51.100.7")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	fmt.Println(rec.Code, rec.Header().Get("RateLimit-Policy"))
	// Output: 200 "default";q=100;w=60
}
