package lb

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// establishedTo counts the TCP connections in state ESTABLISHED whose remote
// end is addr, from /proc/net/tcp: the balancer's side of its connections to
// a backend. Once the backend has closed them, the FIN moves them to
// CLOSE_WAIT, which is how a test knows the balancer's kernel has seen it.
func establishedTo(t *testing.T, addr string) int {
	t.Helper()
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().Is4() {
		t.Fatalf("establishedTo wants an IPv4 address: %q", addr)
	}
	a := ap.Addr().As4()
	want := fmt.Sprintf("%02X%02X%02X%02X:%04X", a[3], a[2], a[1], a[0], ap.Port())
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 3 && fields[2] == want && fields[3] == "01" {
			n++
		}
	}
	return n
}

// waitPeerClosed polls until no connection to addr is ESTABLISHED any more.
func waitPeerClosed(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for establishedTo(t, addr) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("connections to %s still established after the backend closed them", addr)
		}
		runtimeGosched()
	}
}

// warmIdle makes the balancer open n connections to its only eligible
// backend and leave them idle in its pool: n GETs are held by the backend
// until all n have arrived, so each has its own connection.
func warmIdle(t *testing.T, url string, n int, arrived chan struct{}, release chan struct{}) {
	t.Helper()
	c := client()
	defer c.CloseIdleConnections()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			resp, err := c.Get(url + "/warm")
			if err != nil {
				errs <- err
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				errs <- fmt.Errorf("warm-up GET: status %d", resp.StatusCode)
			}
		})
	}
	for range n {
		<-arrived
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// warmable is a backend whose GET /warm waits for release; other requests
// are counted by method.
type warmable struct {
	*backend
	arrived chan struct{}
	release chan struct{}
	posts   atomic.Int64
}

func newWarmable(t *testing.T, n int) *warmable {
	w := &warmable{arrived: make(chan struct{}, n), release: make(chan struct{})}
	w.backend = newBackend(t, func(rw http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/warm" {
			w.arrived <- struct{}{}
			<-w.release
			return
		}
		if r.Method == "POST" {
			w.posts.Add(1)
		}
		fmt.Fprint(rw, "created")
	})
	return w
}

func postOnce(t *testing.T, url string) (int, string) {
	t.Helper()
	c := client()
	defer c.CloseIdleConnections()
	resp, err := c.Post(url+"/orders", "text/plain", strings.NewReader("buy"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestPostAfterBackendClosedIdle: the backend closes the balancer's idle
// keep-alive connections (a keep-alive timeout, a restart of its listener
// loop) and stays up. A POST sent right after must reach it, not get a 502
// from a write on a dead pooled connection.
func TestPostAfterBackendClosedIdle(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("needs /proc/net/tcp to know when the close has reached the balancer")
	}
	const idle = 4
	for trial := range 25 {
		w := newWarmable(t, idle)
		l, url := startLB(t, Config{
			Backends: []BackendConfig{{Addr: w.addr()}},
			Health:   HealthConfig{Disabled: true},
		})
		warmIdle(t, url, idle, w.arrived, w.release)
		if _, n := w.poolCounts(l); n != idle {
			t.Fatalf("trial %d: %d idle connections after warm-up, want %d", trial, n, idle)
		}
		w.CloseClientConnections()
		waitPeerClosed(t, w.addr())
		code, body := postOnce(t, url)
		if code != 200 || body != "created" {
			t.Fatalf("trial %d: POST after the backend closed its idle connections: %d %q", trial, code, body)
		}
		if got := w.posts.Load(); got != 1 {
			t.Fatalf("trial %d: backend saw %d POSTs, want 1", trial, got)
		}
		l.Close()
		w.Close()
	}
}

// TestGetOnStaleConnectionRetried: a GET skips the liveness check of a
// connection that went idle less than peekAfter ago (here: always), so when
// the backend has closed its idle connections, the GET is written to a dead
// one. It must be replayed, reach the backend once, and not count as a
// failure of the backend.
func TestGetOnStaleConnectionRetried(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("needs /proc/net/tcp to know when the close has reached the balancer")
	}
	const idle = 4
	w := newWarmable(t, idle)
	l, url := startLB(t, Config{
		Backends:  []BackendConfig{{Addr: w.addr()}},
		Health:    HealthConfig{Disabled: true},
		peekAfter: time.Hour,
	})
	warmIdle(t, url, idle, w.arrived, w.release)
	w.CloseClientConnections()
	waitPeerClosed(t, w.addr())
	before, hits := l.Stats().Retries, w.hits.Load()
	c := client()
	defer c.CloseIdleConnections()
	resp, err := c.Get(url + "/item")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "created" {
		t.Fatalf("GET after the backend closed its idle connections: %d %q; stats %+v", resp.StatusCode, body, l.Stats())
	}
	if got := w.hits.Load() - hits; got != 1 {
		t.Fatalf("backend saw %d GETs, want 1", got)
	}
	if l.Stats().Retries == before {
		t.Fatal("no retry: the GET did not meet a stale connection, the test proves nothing")
	}
	if st := statusOf(l, w.addr()); st.Failures != 0 || st.FailStreak != 0 {
		t.Fatalf("a stale connection counted against the backend: %+v", st)
	}
}

// TestPostAfterBackendDied: the backend dies (listener and connections
// closed) while the balancer holds idle connections to it. A POST chosen for
// it right after is sent to the other backend instead: its idle connections
// are found dead and the dial is refused before a byte of the request was
// written.
func TestPostAfterBackendDied(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("needs /proc/net/tcp to know when the close has reached the balancer")
	}
	const idle = 4
	for trial := range 25 {
		victim := newWarmable(t, idle)
		other := newWarmable(t, 1)
		// Smooth weighted round robin with weights 1000:1 sends the first
		// few hundred requests to the victim: the warm-up and the POST.
		l, url := startLB(t, Config{
			Backends: []BackendConfig{{Addr: victim.addr(), Weight: 1000}, {Addr: other.addr(), Weight: 1}},
			Policy:   WeightedRoundRobin,
			Health:   HealthConfig{Disabled: true},
		})
		warmIdle(t, url, idle, victim.arrived, victim.release)
		if _, n := victim.poolCounts(l); n != idle {
			t.Fatalf("trial %d: %d idle connections after warm-up, want %d", trial, n, idle)
		}
		addr := victim.addr()
		before := statusOf(l, addr).Requests
		victim.Close()
		waitPeerClosed(t, addr)
		code, body := postOnce(t, url)
		if code != 200 || body != "created" {
			t.Fatalf("trial %d: POST right after a backend died: %d %q", trial, code, body)
		}
		if statusOf(l, addr).Requests == before {
			t.Fatalf("trial %d: the POST was never routed to the dead backend: the test proves nothing", trial)
		}
		if got := other.posts.Load(); got != 1 {
			t.Fatalf("trial %d: the other backend saw %d POSTs, want 1", trial, got)
		}
		l.Close()
		other.Close()
	}
}

// poolCounts returns the open and idle connection counts the balancer has
// to this backend, from its status.
func (w *warmable) poolCounts(l *LB) (open, idle int) {
	st := statusOf(l, w.addr())
	return st.OpenConns, st.IdleConns
}
