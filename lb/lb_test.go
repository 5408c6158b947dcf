package lb

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.DiscardHandler)

// startLB runs an LB for cfg on a loopback port and returns its base URL.
func startLB(t *testing.T, cfg Config) (*LB, string) {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	l, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { l.Serve(ln); close(done) }()
	t.Cleanup(func() { l.Close(); <-done })
	return l, "http://" + ln.Addr().String()
}

// backend is a test backend that counts its requests.
type backend struct {
	*httptest.Server
	hits atomic.Int64
}

func newBackend(t *testing.T, h http.HandlerFunc) *backend {
	t.Helper()
	b := &backend{}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			b.hits.Add(1)
		}
		h(w, r)
	}))
	t.Cleanup(b.Close)
	return b
}

func (b *backend) addr() string { return b.Listener.Addr().String() }

func ok(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { io.Copy(io.Discard, r.Body); fmt.Fprint(w, name) }
}

func client() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 10 * time.Second}
}

func get(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestProxyBasics(t *testing.T) {
	var seen http.Header
	var mu sync.Mutex
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = r.Header.Clone()
		mu.Unlock()
		w.Header().Set("X-Backend", "a")
		io.Copy(w, r.Body)
	})
	_, url := startLB(t, Config{Backends: []BackendConfig{{Addr: be.addr()}}, Health: HealthConfig{Disabled: true}})
	c := client()
	req, _ := http.NewRequest("PUT", url+"/echo?q=1", strings.NewReader("payload"))
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	req.Header.Set("Connection", "X-Secret")
	req.Header.Set("X-Secret", "hop")
	req.Header.Set("X-Request-Id", "abc-123")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "payload" || resp.Header.Get("X-Backend") != "a" {
		t.Fatalf("got %d %q %v", resp.StatusCode, body, resp.Header)
	}
	mu.Lock()
	defer mu.Unlock()
	if got := seen.Get("X-Forwarded-For"); got != "203.0.113.9, 127.0.0.1" {
		t.Errorf("X-Forwarded-For = %q", got)
	}
	if got := seen.Get("Forwarded"); got != "for=127.0.0.1;proto=http" {
		t.Errorf("Forwarded = %q", got)
	}
	if got := seen.Get("X-Forwarded-Proto"); got != "http" {
		t.Errorf("X-Forwarded-Proto = %q", got)
	}
	if got := seen.Get("X-Request-Id"); got != "abc-123" {
		t.Errorf("X-Request-Id = %q", got)
	}
	if seen.Get("X-Secret") != "" {
		t.Errorf("header named in Connection was forwarded")
	}
}

func TestRequestIDGenerated(t *testing.T) {
	ids := make(chan string, 2)
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) { ids <- r.Header.Get("X-Request-Id") })
	_, url := startLB(t, Config{Backends: []BackendConfig{{Addr: be.addr()}}, Health: HealthConfig{Disabled: true}})
	c := client()
	get(t, c, url)
	get(t, c, url)
	a, b := <-ids, <-ids
	if a == "" || a == b {
		t.Fatalf("request ids %q %q", a, b)
	}
}

// TestKilledBackend kills one of three backends under load: no GET fails,
// the backend is ejected, and it serves again after it comes back.
func TestKilledBackend(t *testing.T) {
	var bs []*backend
	for i := range 3 {
		bs = append(bs, newBackend(t, ok(fmt.Sprint(i))))
	}
	victim := bs[1]
	addr := victim.addr()
	l, url := startLB(t, Config{
		Backends: []BackendConfig{{Addr: bs[0].addr()}, {Addr: addr}, {Addr: bs[2].addr()}},
		Policy:   RoundRobin,
		Health:   HealthConfig{Disabled: true},
		Outlier:  OutlierConfig{ConsecutiveFailures: 3, BaseEjection: 300 * time.Millisecond},
		Retry:    RetryConfig{Budget: retryBudgetGenerous},
	})
	c := client()
	var failures atomic.Int64
	var sent atomic.Int64
	load := func(n int) {
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range n {
					sent.Add(1)
					resp, err := c.Get(url + "/x")
					if err != nil {
						failures.Add(1)
						continue
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						failures.Add(1)
					}
				}
			})
		}
		wg.Wait()
	}
	load(20)
	victim.CloseClientConnections()
	victim.Listener.Close()
	victim.Close()
	killedAt := sent.Load()
	load(40)
	if f := failures.Load(); f != 0 {
		t.Fatalf("%d GETs failed after the kill", f)
	}
	st := statusOf(l, addr)
	if !st.Ejected || st.Ejections != 1 {
		t.Fatalf("victim not ejected: %+v", st)
	}
	// Bound: ejected after at most 3 failed tries, i.e. within a few requests.
	if st.Failures > 3+8 {
		t.Fatalf("victim failed %d tries before ejection (sent %d after kill)", st.Failures, sent.Load()-killedAt)
	}

	// Recover on the same address; after the ejection it is used again.
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot rebind %s: %v", addr, err)
	}
	var back atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { back.Add(1) })}
	go srv.Serve(ln)
	defer srv.Close()
	deadline := time.Now().Add(5 * time.Second)
	for back.Load() == 0 && time.Now().Before(deadline) {
		load(5)
	}
	if back.Load() == 0 {
		t.Fatalf("recovered backend never used again: %+v", statusOf(l, addr))
	}
	if f := failures.Load(); f != 0 {
		t.Fatalf("%d GETs failed", f)
	}
}

func statusOf(l *LB, addr string) BackendStatus {
	for _, s := range l.Status() {
		if s.Address == addr {
			return s
		}
	}
	return BackendStatus{}
}

// hangup is a backend that closes the connection without answering.
func hangup(hits *atomic.Int64) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.Copy(io.Discard, r.Body)
		c, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			c.Close()
		}
	}
}

func TestPostNotRetried(t *testing.T) {
	var bad atomic.Int64
	b1 := newBackend(t, hangup(&bad))
	b2 := newBackend(t, hangup(&bad))
	_, url := startLB(t, Config{
		Backends: []BackendConfig{{Addr: b1.addr()}, {Addr: b2.addr()}},
		Health:   HealthConfig{Disabled: true},
		Retry:    RetryConfig{Budget: retryBudgetGenerous},
	})
	c := client()
	for i := range 5 {
		resp, err := c.Post(url+"/orders", "text/plain", strings.NewReader("buy"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("POST %d: status %d, want 502", i, resp.StatusCode)
		}
		if got := bad.Load(); got != int64(i+1) {
			t.Fatalf("after %d POSTs the backends saw %d: a POST was retried", i+1, got)
		}
	}
}

func TestIdempotencyKeyRetried(t *testing.T) {
	var bad atomic.Int64
	b1 := newBackend(t, hangup(&bad))
	b2 := newBackend(t, ok("good"))
	_, url := startLB(t, Config{
		Backends: []BackendConfig{{Addr: b1.addr()}, {Addr: b2.addr()}},
		Policy:   RoundRobin,
		Health:   HealthConfig{Disabled: true},
		Retry:    RetryConfig{Budget: retryBudgetGenerous},
	})
	c := client()
	for range 4 {
		req, _ := http.NewRequest("POST", url+"/orders", strings.NewReader("buy"))
		req.Header.Set("Idempotency-Key", "k1")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "good" {
			t.Fatalf("status %d %q", resp.StatusCode, body)
		}
	}
	if bad.Load() == 0 {
		t.Fatal("the failing backend was never tried: the test proves nothing")
	}
}

func TestSlowBackendP2C(t *testing.T) {
	fast1 := newBackend(t, ok("f1"))
	fast2 := newBackend(t, ok("f2"))
	slow := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond) // the backend is slow; not synchronisation
	})
	_, url := startLB(t, Config{
		Backends: []BackendConfig{{Addr: fast1.addr()}, {Addr: slow.addr()}, {Addr: fast2.addr()}},
		Health:   HealthConfig{Disabled: true},
	})
	c := client()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 60 {
				get(t, c, url)
			}
		})
	}
	wg.Wait()
	total := fast1.hits.Load() + fast2.hits.Load() + slow.hits.Load()
	share := float64(fast1.hits.Load()+fast2.hits.Load()) / float64(total)
	t.Logf("fast share %.3f (slow %d of %d)", share, slow.hits.Load(), total)
	if total != 480 || share < 0.8 {
		t.Fatalf("fast backends got %.3f of %d requests, want >= 0.8", share, total)
	}
}

func TestDrainOnReadyz(t *testing.T) {
	var notReady atomic.Bool
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	a := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/readyz" && notReady.Load():
			w.WriteHeader(http.StatusServiceUnavailable)
		case r.URL.Path == "/slow":
			started <- struct{}{}
			<-release
			fmt.Fprint(w, "finished")
		}
	})
	b := newBackend(t, ok("b"))
	l, url := startLB(t, Config{
		Backends: []BackendConfig{{Addr: a.addr()}, {Addr: b.addr()}},
		Policy:   RoundRobin,
		Health:   HealthConfig{Interval: 10 * time.Millisecond, Timeout: time.Second},
	})
	c := client()
	// Pin the slow request on a: b answers /slow at once, so retry until a has it.
	slowDone := make(chan string, 1)
	go func() {
		for {
			resp, err := c.Get(url + "/slow")
			if err != nil {
				slowDone <- err.Error()
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) == "finished" {
				slowDone <- "finished"
				return
			}
		}
	}()
	<-started
	notReady.Store(true)
	deadline := time.Now().Add(5 * time.Second)
	for statusOf(l, a.addr()).Ready && time.Now().Before(deadline) {
		runtimeGosched()
	}
	if statusOf(l, a.addr()).Ready {
		t.Fatal("backend answering /readyz 503 was not drained")
	}
	before := a.hits.Load()
	for range 20 {
		if code, _ := get(t, c, url+"/x"); code != 200 {
			t.Fatalf("status %d during drain", code)
		}
	}
	if a.hits.Load() != before {
		t.Fatalf("drained backend got %d new requests", a.hits.Load()-before)
	}
	close(release)
	if got := <-slowDone; got != "finished" {
		t.Fatalf("in-flight request on the drained backend: %s", got)
	}
}

func TestGracefulShutdown(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	be := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		fmt.Fprint(w, "done")
	})
	l, url := startLB(t, Config{Backends: []BackendConfig{{Addr: be.addr()}}, Health: HealthConfig{Disabled: true}})
	res := make(chan string, 1)
	go func() {
		resp, err := client().Get(url)
		if err != nil {
			res <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		res <- string(b)
	}()
	<-started
	shut := make(chan error, 1)
	go func() { shut <- l.Shutdown(context.Background()) }()
	// New connections are refused once the listener is closed.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
		if err != nil {
			break
		}
		c.Close()
		runtimeGosched()
	}
	close(release)
	if got := <-res; got != "done" {
		t.Fatalf("in-flight request: %s", got)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
}

func TestRemoveBackendInFlight(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	a := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		fmt.Fprint(w, "a")
	})
	b := newBackend(t, ok("b"))
	l, url := startLB(t, Config{Backends: []BackendConfig{{Addr: a.addr()}}, Health: HealthConfig{Disabled: true}})
	res := make(chan string, 1)
	go func() {
		resp, err := client().Get(url)
		if err != nil {
			res <- err.Error()
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		res <- string(body)
	}()
	<-started
	if err := l.SetBackends([]BackendConfig{{Addr: b.addr()}}); err != nil {
		t.Fatal(err)
	}
	if _, body := get(t, client(), url); body != "b" {
		t.Fatalf("new backend not used: %q", body)
	}
	close(release)
	if got := <-res; got != "a" {
		t.Fatalf("in-flight request on the removed backend: %q", got)
	}
}

// rawRoundTrip writes raw to the LB and returns everything read until the
// LB closes the connection or a response with a known length ends.
func rawExchange(t *testing.T, url, raw string) string {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(bufio.NewReader(c))
	return string(b)
}

func runtimeGosched() { time.Sleep(time.Millisecond) } // polling pause, not synchronisation

var _ = retryBudgetGenerous

var retryBudgetGenerous = retryBudget()

// TestDependency503NotEjected: a backend answering 503 with Retry-After (a dependency of its
// is down, which every backend shares) is not ejected and its answers are not counted as
// failures; one answering 503 without Retry-After, or 500, is ejected after
// ConsecutiveFailures.
func TestDependency503NotEjected(t *testing.T) {
	answer := func(code int, retryAfter bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			if retryAfter {
				w.Header().Set("Retry-After", "1")
			}
			w.WriteHeader(code)
		}
	}
	dep := newBackend(t, answer(http.StatusServiceUnavailable, true))
	bare := newBackend(t, answer(http.StatusServiceUnavailable, false))
	broken := newBackend(t, answer(http.StatusInternalServerError, false))
	l, url := startLB(t, Config{
		Policy:   RoundRobin,
		Backends: []BackendConfig{{Addr: dep.addr()}, {Addr: bare.addr()}, {Addr: broken.addr()}},
		Health:   HealthConfig{Disabled: true},
		Outlier:  OutlierConfig{ConsecutiveFailures: 3, BaseEjection: time.Minute, MaxEjectedPercent: 100},
	})
	c := client()
	// POSTs are not retried: each request reaches exactly one backend.
	for i := range 12 {
		resp, err := c.Post(url+"/orders", "text/plain", strings.NewReader("buy"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable && resp.StatusCode != http.StatusInternalServerError {
			t.Fatalf("POST %d: status %d", i, resp.StatusCode)
		}
	}
	if n := dep.hits.Load(); n < 3 {
		t.Fatalf("the dependency-503 backend got %d requests, want at least 3 (as many as eject the others)", n)
	}
	if s := statusOf(l, dep.addr()); s.Ejected || s.Failures != 0 {
		t.Errorf("503 with Retry-After: ejected %v, failures %d; want neither", s.Ejected, s.Failures)
	}
	for _, b := range []*backend{bare, broken} {
		if s := statusOf(l, b.addr()); !s.Ejected {
			t.Errorf("%s (%d requests, %d failures) not ejected, want ejected after 3 failures", b.addr(), b.hits.Load(), s.Failures)
		}
	}
}
