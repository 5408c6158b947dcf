package httplimit_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	"github.com/strata-project/strata/ratelimit"
	"github.com/strata-project/strata/ratelimit/httplimit"
)

var ok = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusOK) })

func gcra(t *testing.T, rate ratelimit.Rate, burst int) *ratelimit.GCRA {
	t.Helper()
	l, err := ratelimit.NewGCRA(ratelimit.GCRAConfig{Rate: rate, Burst: burst})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func newMiddleware(t *testing.T, cfg httplimit.Config) *httplimit.Middleware {
	t.Helper()
	m, err := httplimit.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func serve(h http.Handler, remote string, header http.Header) *httptest.ResponseRecorder {
	req := httptest.NewRequest("GET", "/items/1", nil)
	req.RemoteAddr = remote
	for k, v := range header {
		req.Header[k] = v
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// TestHeadersAndDenial follows one client through its budget on a fake
// clock: 2 per minute, burst 2 (an empty bucket refills in 60s).
func TestHeadersAndDenial(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newMiddleware(t, httplimit.Config{Limiter: gcra(t, ratelimit.PerMinute(2), 2)}).Wrap(ok)
		want := []struct {
			code             int
			rateLimit, retry string
		}{
			{200, `"default";r=1;t=30`, ""},
			{200, `"default";r=0;t=60`, ""},
			{429, `"default";r=0;t=60`, "30"},
		}
		for i, w := range want {
			rec := serve(h, "192.0.2.1:1234", nil)
			if rec.Code != w.code || rec.Header().Get("RateLimit") != w.rateLimit || rec.Header().Get("Retry-After") != w.retry {
				t.Fatalf("request %d: %d RateLimit=%q Retry-After=%q; want %d %q %q", i, rec.Code,
					rec.Header().Get("RateLimit"), rec.Header().Get("Retry-After"), w.code, w.rateLimit, w.retry)
			}
			if got := rec.Header().Get("RateLimit-Policy"); got != `"default";q=2;w=60` {
				t.Fatalf("RateLimit-Policy = %q", got)
			}
			if w.code == 429 {
				var p struct {
					Type, Title, Detail string
					Status              int
				}
				if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
					t.Fatalf("Content-Type = %q", ct)
				}
				if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p.Status != 429 || p.Type != "about:blank" || p.Title != "Too Many Requests" || p.Detail == "" {
					t.Fatalf("problem body %q: %+v, %v", rec.Body, p, err)
				}
			}
		}
		time.Sleep(30 * time.Second) // fake clock: one token back
		if rec := serve(h, "192.0.2.1:1234", nil); rec.Code != 200 {
			t.Fatalf("after 30s: %d, want 200", rec.Code)
		}
		if rec := serve(h, "192.0.2.2:1234", nil); rec.Code != 200 || rec.Header().Get("RateLimit") != `"default";r=1;t=30` {
			t.Fatalf("another client: %d %q, want its own budget", rec.Code, rec.Header().Get("RateLimit"))
		}
	})
}

// TestSpoofedForwardedForIgnored: a client that is not a trusted proxy
// cannot pick its key by sending X-Forwarded-For or Forwarded.
func TestSpoofedForwardedForIgnored(t *testing.T) {
	byIP, err := httplimit.ByClientIP(httplimit.ClientIP{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	if err != nil {
		t.Fatal(err)
	}
	h := newMiddleware(t, httplimit.Config{Limiter: gcra(t, ratelimit.PerHour(1), 1), Key: byIP}).Wrap(ok)
	if rec := serve(h, "203.0.113.9:5000", http.Header{"X-Forwarded-For": {"198.51.100.1"}}); rec.Code != 200 {
		t.Fatalf("first request: %d", rec.Code)
	}
	for _, spoof := range []http.Header{
		{"X-Forwarded-For": {"198.51.100.2"}},
		{"X-Forwarded-For": {"198.51.100.3, 10.0.0.1"}},
		{"Forwarded": {"for=198.51.100.4"}},
	} {
		if rec := serve(h, "203.0.113.9:5000", spoof); rec.Code != 429 {
			t.Fatalf("untrusted peer with %v: %d, want 429 (same key as before)", spoof, rec.Code)
		}
	}
	// Behind the trusted proxy, the header names the client.
	if rec := serve(h, "10.0.0.1:80", http.Header{"X-Forwarded-For": {"198.51.100.2"}}); rec.Code != 200 {
		t.Fatalf("trusted proxy, new client: %d, want 200", rec.Code)
	}
	if rec := serve(h, "10.0.0.2:80", http.Header{"X-Forwarded-For": {"198.51.100.2"}}); rec.Code != 429 {
		t.Fatalf("trusted proxy, same client again: %d, want 429", rec.Code)
	}
}

func TestKeyFuncs(t *testing.T) {
	byIP, err := httplimit.ByClientIP(httplimit.ClientIP{})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	var got string
	key := httplimit.Join(httplimit.ByRoute(), httplimit.FirstOf(httplimit.ByHeader("x-api-key"), byIP))
	mux.HandleFunc("GET /items/{id}", func(w http.ResponseWriter, r *http.Request) { got = key(r) })
	for _, tc := range []struct {
		remote string
		header http.Header
		want   string
	}{
		{"192.0.2.1:1", nil, "route:GET /items/{id}|ip:192.0.2.1"},
		{"192.0.2.1:1", http.Header{"X-Api-Key": {"k1"}}, "route:GET /items/{id}|h:X-Api-Key=k1"},
		{"[2001:db8:1:2:3::4]:1", nil, "route:GET /items/{id}|ip:2001:db8:1:2::/64"},
	} {
		serve(mux, tc.remote, tc.header)
		if got != tc.want {
			t.Errorf("key = %q, want %q", got, tc.want)
		}
	}
	full, _ := httplimit.ByClientIP(httplimit.ClientIP{IPv6PrefixLen: 128})
	req := httptest.NewRequest("GET", "/x", nil)
	req.RemoteAddr = "[2001:db8::7]:1"
	if k := full(req); k != "ip:2001:db8::7" {
		t.Errorf("IPv6PrefixLen 128: key %q", k)
	}
	if k := httplimit.ByRoute()(req); k != "route:/x" {
		t.Errorf("ByRoute without a pattern: %q", k)
	}
}

func TestConcurrencyReleased(t *testing.T) {
	l, err := ratelimit.NewConcurrency(ratelimit.ConcurrencyConfig{Max: 1})
	if err != nil {
		t.Fatal(err)
	}
	m := newMiddleware(t, httplimit.Config{Limiter: l})
	var inner *httptest.ResponseRecorder
	outer := m.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inner = serve(m.Wrap(ok), r.RemoteAddr, nil) // same client while the first is in flight
	}))
	rec := serve(outer, "192.0.2.1:1", nil)
	if rec.Code != 200 || inner.Code != 429 || inner.Header().Get("Retry-After") != "1" {
		t.Fatalf("outer %d, inner %d Retry-After %q; want 200, 429, 1", rec.Code, inner.Code, inner.Header().Get("Retry-After"))
	}
	if got := rec.Header().Get("RateLimit-Policy"); got != `"default";q=1` {
		t.Fatalf("RateLimit-Policy = %q", got)
	}
	if rec := serve(m.Wrap(ok), "192.0.2.1:1", nil); rec.Code != 200 {
		t.Fatalf("after the first returned: %d, want 200 (released)", rec.Code)
	}
}

type failing struct{}

func (failing) AllowN(context.Context, string, int) (ratelimit.Decision, error) {
	return ratelimit.Decision{}, errors.New("store down")
}
func (failing) Policy() ratelimit.Policy { return ratelimit.Policy{Quota: 1, Window: time.Second} }

func TestErrorsAndConfig(t *testing.T) {
	if rec := serve(newMiddleware(t, httplimit.Config{Limiter: failing{}}).Wrap(ok), "192.0.2.1:1", nil); rec.Code != 503 {
		t.Fatalf("failing limiter: %d, want 503", rec.Code)
	}
	h := newMiddleware(t, httplimit.Config{
		Limiter:    gcra(t, ratelimit.PerSecond(5), 5),
		Cost:       func(*http.Request) int { return 6 },
		PolicyName: `a "b"`,
	}).Wrap(ok)
	rec := serve(h, "192.0.2.1:1", nil)
	if rec.Code != 429 || rec.Header().Get("Retry-After") != "" || rec.Header().Get("RateLimit-Policy") != `"a \"b\"";q=5;w=1` {
		t.Fatalf("cost over the burst: %d Retry-After=%q Policy=%q", rec.Code, rec.Header().Get("Retry-After"), rec.Header().Get("RateLimit-Policy"))
	}
	for _, cfg := range []httplimit.Config{{}, {Limiter: failing{}, PolicyName: "bad\n"}} {
		if _, err := httplimit.New(cfg); !errors.Is(err, httplimit.ErrConfig) {
			t.Errorf("New(%+v) err = %v, want ErrConfig", cfg, err)
		}
	}
	if _, err := httplimit.ByClientIP(httplimit.ClientIP{IPv6PrefixLen: 129}); !errors.Is(err, httplimit.ErrConfig) {
		t.Errorf("IPv6PrefixLen 129: %v", err)
	}
	if _, err := httplimit.ByClientIP(httplimit.ClientIP{Header: 7}); !errors.Is(err, httplimit.ErrConfig) {
		t.Errorf("Header 7: %v", err)
	}
}
