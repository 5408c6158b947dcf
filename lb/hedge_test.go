package lb

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/strata-project/strata/config"
	"github.com/strata-project/strata/retry"
)

func TestLatencyBuckets(t *testing.T) {
	for _, d := range []int64{1, 1023, 1024, 1500, 2047, 2048, 1e6, 123456789, 5e9, 1 << 41, 1<<42 - 1} {
		i := latBucket(d)
		up := latUpper(i)
		if up <= d {
			t.Errorf("latency %d: bucket %d ends at %d, not above it", d, i, up)
		}
		if d >= 1<<latMinExp && float64(up) > float64(d)*1.126 {
			t.Errorf("latency %d: bucket %d ends at %d, more than 12.5%% above", d, i, up)
		}
		if i > 0 && latUpper(i-1) > d {
			t.Errorf("latency %d: the bucket below (%d) ends at %d, above it", d, i-1, latUpper(i-1))
		}
	}
	if latBucket(1<<50) != latBuckets-1 {
		t.Error("a huge latency is not in the last bucket")
	}
}

func TestLatencyHistQuantile(t *testing.T) {
	const ms = int64(time.Millisecond)
	var h latencyHist
	h.width = int64(10 * time.Second / latSlots)
	t0 := int64(100 * time.Second)
	for range 95 {
		h.observe(t0, 1*ms)
	}
	for range 5 {
		h.observe(t0+ms, 300*ms)
	}
	for _, tc := range []struct {
		name   string
		now    int64
		q      float64
		lo, hi int64 // the answer, within a bucket
		n      int
	}{
		{"p50", t0 + ms, 0.5, 1 * ms, 1*ms + ms/8 + 1, 100},
		{"p95 is the last fast sample", t0 + ms, 0.95, 1 * ms, 1*ms + ms/8 + 1, 100},
		{"p96 is a slow one", t0 + ms, 0.96, 300 * ms, 300*ms + 300*ms/8 + 1, 100},
		{"still within the window", t0 + int64(7*time.Second), 0.95, 1 * ms, 1*ms + ms/8 + 1, 100},
		{"the window has passed", t0 + int64(11*time.Second), 0.95, 0, 0, 0},
	} {
		got, n := h.quantile(tc.now, tc.q)
		if n != tc.n || got < tc.lo || got > tc.hi {
			t.Errorf("%s: quantile %v = %d from %d samples, want %d..%d from %d", tc.name, tc.q, got, n, tc.lo, tc.hi, tc.n)
		}
	}
	// A slot that is reused for a later epoch starts empty.
	later := t0 + int64(10*time.Second)
	h.observe(later, 50*ms)
	if got, n := h.quantile(later, 0.5); n != 1 || got < 50*ms || got > 50*ms+50*ms/8+1 {
		t.Errorf("after rotation: %d from %d samples, want 50ms from 1", got, n)
	}
}

// slowHandler answers "slow" after d unless the request is cancelled first
// (the balancer closed the connection), which it counts.
func slowHandler(d time.Duration, cancelled *atomic.Int64) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		t := time.NewTimer(d) // the backend is slow; not synchronisation
		defer t.Stop()
		select {
		case <-t.C:
			fmt.Fprint(w, "slow")
		case <-r.Context().Done():
			cancelled.Add(1)
		}
	}
}

// hedgePair starts a fast and a slow backend behind a round-robin balancer
// with hedging configured by hc, so that every other request goes first to
// the slow one.
func hedgePair(t *testing.T, slowFor time.Duration, hc HedgeConfig) (l *LB, url string, fast, slow *backend, cancelled *atomic.Int64) {
	t.Helper()
	cancelled = new(atomic.Int64)
	fast = newBackend(t, ok("fast"))
	slow = newBackend(t, slowHandler(slowFor, cancelled))
	l, url = startLB(t, Config{
		Backends: []BackendConfig{{Addr: slow.addr()}, {Addr: fast.addr()}},
		Policy:   RoundRobin,
		Health:   HealthConfig{Disabled: true},
		Hedge:    hc,
	})
	return l, url, fast, slow, cancelled
}

var hedgeBudgetGenerous = retry.BudgetConfig{Ratio: 1, MinPerSecond: 1000}

// TestHedgeCutsTail: half the GETs go first to a backend that takes 5s;
// with a 20ms hedge delay every one is answered by the fast backend well
// within a second.
func TestHedgeCutsTail(t *testing.T) {
	l, url, fast, slow, _ := hedgePair(t, 5*time.Second, HedgeConfig{Delay: 20 * time.Millisecond, Budget: hedgeBudgetGenerous})
	c := client()
	const n = 20
	var worst time.Duration
	for i := range n {
		start := time.Now()
		code, body := get(t, c, url+"/item")
		el := time.Since(start)
		worst = max(worst, el)
		if code != 200 || body != "fast" {
			t.Fatalf("GET %d: %d %q", i, code, body)
		}
	}
	st := l.Stats()
	t.Logf("worst latency %v, hedges %d won %d", worst, st.Hedges, st.HedgesWon)
	if worst > time.Second {
		t.Fatalf("worst latency %v with a 20ms hedge delay in front of a 5s backend", worst)
	}
	if s := uint64(slow.hits.Load()); s == 0 || st.Hedges != s || st.HedgesWon != s {
		t.Fatalf("slow backend got %d first tries; hedges sent %d, won %d: want all equal and > 0", s, st.Hedges, st.HedgesWon)
	}
	if got := fast.hits.Load() + slow.hits.Load(); got != n+int64(st.Hedges) {
		t.Fatalf("backends saw %d requests, want %d requests + %d hedges", got, n, st.Hedges)
	}
}

// TestHedgeLoserCancelled: the try that loses the race is cancelled: the
// slow backend sees the context of each of its requests cancelled.
func TestHedgeLoserCancelled(t *testing.T) {
	l, url, _, slow, cancelled := hedgePair(t, 10*time.Second, HedgeConfig{Delay: 10 * time.Millisecond, Budget: hedgeBudgetGenerous})
	c := client()
	for range 10 {
		if code, body := get(t, c, url+"/item"); code != 200 || body != "fast" {
			t.Fatalf("GET: %d %q", code, body)
		}
	}
	won := int64(l.Stats().HedgesWon)
	if won == 0 || won != slow.hits.Load() {
		t.Fatalf("hedges won %d, slow backend requests %d", won, slow.hits.Load())
	}
	// The backend learns of the closed connection asynchronously.
	deadline := time.Now().Add(5 * time.Second)
	for cancelled.Load() < won && time.Now().Before(deadline) {
		runtimeGosched()
	}
	if got := cancelled.Load(); got != won {
		t.Fatalf("slow backend saw %d of its %d requests cancelled", got, won)
	}
	if st := statusOf(l, slow.addr()); st.Failures != 0 {
		t.Fatalf("cancelled tries counted as %d failures of the slow backend", st.Failures)
	}
}

// TestHedgeBudget: with every other request slow, hedging would add 50% to
// the requests; the budget (10%, no floor) holds it to a tenth.
func TestHedgeBudget(t *testing.T) {
	l, url, fast, slow, _ := hedgePair(t, 150*time.Millisecond, HedgeConfig{
		Delay:  5 * time.Millisecond,
		Budget: retry.BudgetConfig{Ratio: 0.1, MinPerSecond: 1e-9},
	})
	c := client()
	const n = 200
	var wg sync.WaitGroup
	var next atomic.Int64
	var bad atomic.Int64
	for range 10 {
		wg.Go(func() {
			for next.Add(1) <= n {
				resp, err := c.Get(url + "/item")
				if err != nil {
					bad.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					bad.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d requests failed", bad.Load())
	}
	st := l.Stats()
	total := fast.hits.Load() + slow.hits.Load()
	t.Logf("%d requests: backends saw %d; hedges %d, denied %d", n, total, st.Hedges, st.HedgesDenied)
	if total != n+int64(st.Hedges) {
		t.Fatalf("backends saw %d requests, want %d + %d hedges", total, n, st.Hedges)
	}
	if st.Hedges == 0 || st.Hedges > n/10 {
		t.Fatalf("%d hedges for %d requests, want 1..%d", st.Hedges, n, n/10)
	}
	if st.HedgesDenied == 0 {
		t.Fatal("no hedge was denied: the budget was never the limit, the test proves nothing")
	}
}

// TestHedgeOnlyBodilessGET: other methods, and GETs with a body, are never
// hedged, however slow the backend.
func TestHedgeOnlyBodilessGET(t *testing.T) {
	l, url, fast, slow, _ := hedgePair(t, 100*time.Millisecond, HedgeConfig{Delay: 5 * time.Millisecond, Budget: hedgeBudgetGenerous})
	c := client()
	sent := 0
	for _, m := range []string{"POST", "PUT", "DELETE", "OPTIONS", "PATCH", "GET with body"} {
		for range 4 {
			method, body := m, ""
			if m == "GET with body" {
				method, body = "GET", "q=1"
			} else if m != "DELETE" && m != "OPTIONS" {
				body = "payload"
			}
			req, _ := http.NewRequest(method, url+"/item", strings.NewReader(body))
			if body == "" {
				req.Body, req.ContentLength = nil, 0
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatalf("%s: %v", m, err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			sent++
			if resp.StatusCode != 200 {
				t.Fatalf("%s: status %d", m, resp.StatusCode)
			}
		}
	}
	if st := l.Stats(); st.Hedges != 0 {
		t.Fatalf("%d hedges among requests that must not be hedged", st.Hedges)
	}
	if got := fast.hits.Load() + slow.hits.Load(); got != int64(sent) {
		t.Fatalf("backends saw %d requests for %d sent", got, sent)
	}
	if slow.hits.Load() == 0 {
		t.Fatal("no request went to the slow backend: the test proves nothing")
	}
	// The same balancer hedges a plain GET and HEAD.
	for _, m := range []string{"GET", "HEAD", "GET", "HEAD"} {
		req, _ := http.NewRequest(m, url+"/item", nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	if st := l.Stats(); st.Hedges == 0 {
		t.Fatal("GET and HEAD to the slow backend were not hedged")
	}
}

// TestHedgePercentile: the delay is the p95 of recent response times within
// its floor and cap; it is the cap until enough requests were seen.
func TestHedgePercentile(t *testing.T) {
	var cancelled atomic.Int64
	slowPath := slowHandler(10*time.Second, &cancelled)
	a := newBackend(t, ok("a"))
	b := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			slowPath(w, r)
			return
		}
		fmt.Fprint(w, "b")
	})
	const floor, ceiling = 15 * time.Millisecond, 3 * time.Second
	l, url := startLB(t, Config{
		Backends: []BackendConfig{{Addr: b.addr()}, {Addr: a.addr()}},
		Policy:   RoundRobin,
		Health:   HealthConfig{Disabled: true},
		Hedge:    HedgeConfig{Percentile: 95, MinDelay: floor, MaxDelay: ceiling, Budget: hedgeBudgetGenerous},
	})
	if d := l.HedgeDelay(); d != ceiling {
		t.Fatalf("delay before any request %v, want the cap %v", d, ceiling)
	}
	c := client()
	for range 250 {
		if code, _ := get(t, c, url+"/"); code != 200 {
			t.Fatalf("status %d", code)
		}
	}
	if d := l.HedgeDelay(); d != floor {
		t.Fatalf("delay after 250 fast requests %v, want the floor %v (their p95 is far below it)", d, floor)
	}
	for range 6 {
		start := time.Now()
		code, body := get(t, c, url+"/slow")
		if el := time.Since(start); code != 200 || body != "a" || el > time.Second {
			t.Fatalf("GET /slow: %d %q after %v; want a's answer well before the %v cap", code, body, el, ceiling)
		}
	}
	if l.Stats().HedgesWon == 0 {
		t.Fatal("no hedge won")
	}
}

func TestHedgeConfigErrors(t *testing.T) {
	b := []BackendConfig{{Addr: "127.0.0.1:1"}}
	for _, tc := range []struct {
		hc   HedgeConfig
		retr RetryConfig
		want string
	}{
		{HedgeConfig{Delay: -time.Second}, RetryConfig{}, "negative hedge delay"},
		{HedgeConfig{Delay: time.Second, Percentile: 95}, RetryConfig{}, "not both"},
		{HedgeConfig{Percentile: 20}, RetryConfig{}, "outside 50..99.9"},
		{HedgeConfig{Percentile: 100}, RetryConfig{}, "outside 50..99.9"},
		{HedgeConfig{MaxDelay: time.Second}, RetryConfig{}, "hedging is off"},
		{HedgeConfig{Budget: retry.BudgetConfig{Ratio: 0.5}}, RetryConfig{}, "hedging is off"},
		{HedgeConfig{Delay: time.Second, MinDelay: time.Millisecond}, RetryConfig{}, "Percentile only"},
		{HedgeConfig{Delay: time.Second}, RetryConfig{PerTryTimeout: time.Second}, "not below the per-try timeout"},
		{HedgeConfig{Percentile: 95, MaxDelay: 2 * time.Second}, RetryConfig{PerTryTimeout: time.Second}, "not below the per-try timeout"},
		{HedgeConfig{Percentile: 95, MinDelay: time.Second, MaxDelay: 100 * time.Millisecond}, RetryConfig{}, "above max delay"},
		{HedgeConfig{Percentile: 95, MinDelay: 900 * time.Millisecond}, RetryConfig{PerTryTimeout: time.Second}, "above max delay"},
		{HedgeConfig{Delay: time.Second, Budget: retry.BudgetConfig{Ratio: 2}}, RetryConfig{}, "above 1"},
		{HedgeConfig{Delay: time.Second, Budget: retry.BudgetConfig{MinPerSecond: -1}}, RetryConfig{}, "hedge budget"},
	} {
		_, err := New(Config{Backends: b, Hedge: tc.hc, Retry: tc.retr, Logger: quiet})
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v, want ErrInvalidConfig with %q", tc.hc, err, tc.want)
		}
	}
	for _, hc := range []HedgeConfig{{Delay: 50 * time.Millisecond}, {Percentile: 99}, {Percentile: 95, MinDelay: time.Millisecond, MaxDelay: 200 * time.Millisecond}} {
		l, err := New(Config{Backends: b, Hedge: hc, Health: HealthConfig{Disabled: true}, Logger: quiet})
		if err != nil {
			t.Errorf("%+v: %v", hc, err)
			continue
		}
		l.Close()
	}
}

func TestHedgeFromConfig(t *testing.T) {
	f, err := config.Parse([]byte("lb:\n  backends:\n    - address: 127.0.0.1:9001\n  health: {disabled: true}\n" +
		"  hedge: {percentile: 95, min_delay: 5ms, max_delay: 300ms, budget_ratio: 0.05}\n"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, _, err := FromConfig(f.LB)
	if err != nil {
		t.Fatal(err)
	}
	want := HedgeConfig{Percentile: 95, MinDelay: 5 * time.Millisecond, MaxDelay: 300 * time.Millisecond, Budget: retry.BudgetConfig{Ratio: 0.05}}
	if cfg.Hedge != want {
		t.Fatalf("hedge config %+v, want %+v", cfg.Hedge, want)
	}
	cfg.Logger = quiet
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if d := l.HedgeDelay(); d != 300*time.Millisecond {
		t.Fatalf("hedge delay %v before any request, want the cap 300ms", d)
	}
}

// TestHedgeFailures: a hedge to a backend that refuses connections leaves
// the first try to answer; when both tries fail, the request is retried on a
// third backend. No client sees an error. Smooth weighted round robin with
// weights 1000:1:1 sends every first try to the slow backend and the first
// hedge to the second one.
func TestHedgeFailures(t *testing.T) {
	var cancelled, hung atomic.Int64
	slow := newBackend(t, slowHandler(60*time.Millisecond, &cancelled))
	dead := newBackend(t, ok("dead"))
	deadAddr := dead.addr()
	dead.Close()
	slowThenHangup := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		t := time.NewTimer(40 * time.Millisecond) // the backend is slow; not synchronisation
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
		}
		hangup(&hung)(w, r)
	})
	good := newBackend(t, ok("good"))
	c := client()
	for _, tc := range []struct {
		name        string
		backends    []string
		want        string
		wantRetries bool
	}{
		{"hedge refused", []string{slow.addr(), deadAddr}, "slow", false},
		{"both fail", []string{slowThenHangup.addr(), deadAddr, good.addr()}, "good", true},
	} {
		bc := []BackendConfig{{Addr: tc.backends[0], Weight: 1000}}
		for _, a := range tc.backends[1:] {
			bc = append(bc, BackendConfig{Addr: a, Weight: 1})
		}
		l, url := startLB(t, Config{
			Backends: bc,
			Policy:   WeightedRoundRobin,
			Health:   HealthConfig{Disabled: true},
			Outlier:  OutlierConfig{ConsecutiveFailures: -1},
			Retry:    RetryConfig{Budget: retryBudgetGenerous},
			Hedge:    HedgeConfig{Delay: 10 * time.Millisecond, Budget: hedgeBudgetGenerous},
		})
		const n = 6
		for i := range n {
			if code, body := get(t, c, url+"/item"); code != 200 || body != tc.want {
				t.Fatalf("%s: GET %d: %d %q, want 200 %q", tc.name, i, code, body, tc.want)
			}
		}
		st := l.Stats()
		t.Logf("%s: %+v", tc.name, st)
		if st.Hedges != n || st.UpstreamErrors != 0 {
			t.Fatalf("%s: %d hedges for %d requests, %d upstream errors", tc.name, st.Hedges, n, st.UpstreamErrors)
		}
		// Each request either had its hedge answer (it went to the good
		// backend) or had both tries fail and was retried.
		if !tc.wantRetries && (st.HedgesWon != 0 || st.Retries != 0) ||
			tc.wantRetries && (st.Retries == 0 || st.Retries+st.HedgesWon != n) {
			t.Fatalf("%s: %d hedges won, %d retries", tc.name, st.HedgesWon, st.Retries)
		}
	}
	if hung.Load() == 0 {
		t.Fatal("the hanging backend was never tried")
	}
}
