package lb

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// rawBackend is a backend on a plain listener: serve runs once per accepted
// connection, which is closed when it returns. Cleanup closes the listener
// and waits for every serve to end.
func rawBackend(t *testing.T, serve func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				serve(c)
			})
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// readHeadAnd reads a request head and then n bytes of its body (fewer if
// the connection ends first).
func readHeadAnd(c net.Conn, n int64) *bufio.Reader {
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		if err != nil || line == "\r\n" {
			break
		}
	}
	io.CopyN(io.Discard, br, n)
	return br
}

// upload sends a PUT with a body of n bytes to the balancer on a raw
// connection, Content-Length framed or chunked, writing while it reads the
// response as an HTTP client does, and returns the response and its body.
// It fails the test if no response comes within 10 s.
func upload(t *testing.T, url string, n int, chunked bool) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var req bytes.Buffer
	body := bytes.Repeat([]byte("b"), n)
	if chunked {
		req.WriteString("PUT /upload HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked\r\n\r\n")
		for len(body) > 0 {
			k := min(len(body), 32<<10)
			fmt.Fprintf(&req, "%x\r\n%s\r\n", k, body[:k])
			body = body[k:]
		}
		req.WriteString("0\r\n\r\n")
	} else {
		fmt.Fprintf(&req, "PUT /upload HTTP/1.1\r\nHost: lb\r\nContent-Length: %d\r\n\r\n%s", n, body)
	}
	written := make(chan struct{})
	go func() { defer close(written); c.Write(req.Bytes()) }()
	defer func() { c.Close(); <-written }()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("PUT of %d bytes: no response: %v", n, err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("PUT of %d bytes: reading the %d response: %v", n, resp.StatusCode, err)
	}
	return resp, string(b)
}

// waitPoolEmpty polls until b has no connection open, idle or busy.
func waitPoolEmpty(t *testing.T, b *Backend) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		open, idle := b.poolStats()
		if open == 0 && idle == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("backend %s: %d connections open (%d idle), want none: a connection whose request was not written in full went back to the pool", b.Addr(), open, idle)
		}
		runtimeGosched()
	}
}

// TestEarlyAnswerToLargeBody: a backend that refuses a body larger than the
// retry buffer (so streamed) answers 413 before reading it and closes the
// connection; the balancer's write of the body fails, and it must relay the
// 413, not answer 502, closing the client connection after it.
func TestEarlyAnswerToLargeBody(t *testing.T) {
	const limit = 32 << 10
	// An app server refusing bodies above 32 KiB with net/http's
	// MaxBytesReader, as Strata's does.
	goBackend := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit)); err != nil {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
			return
		}
		fmt.Fprint(w, "stored")
	}).addr()
	// A backend that reads the head and 4 KiB of the body, answers and
	// closes at once: the unread body makes its kernel reset the connection.
	rawRefuser := rawBackend(t, func(c net.Conn) {
		readHeadAnd(c, 4<<10)
		io.WriteString(c, "HTTP/1.1 413 Content Too Large\r\nContent-Length: 14\r\nConnection: close\r\n\r\nbody too large")
	})
	for _, tc := range []struct {
		name, addr string
		n          int
		chunked    bool
		unread     bool // the backend surely reset the connection before the whole body was sent
	}{
		{"net/http 4 MiB", goBackend, 4 << 20, false, false},
		{"net/http 100 KiB", goBackend, 100 << 10, false, false},
		{"net/http 4 MiB chunked", goBackend, 4 << 20, true, false},
		{"raw 4 MiB", rawRefuser, 4 << 20, false, true},
		{"raw 4 MiB chunked", rawRefuser, 4 << 20, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, url := startLB(t, Config{Backends: []BackendConfig{{Addr: tc.addr}}, Health: HealthConfig{Disabled: true}})
			resp, body := upload(t, url, tc.n, tc.chunked)
			if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(body, "body too large") {
				t.Fatalf("got %d %q, want the backend's 413", resp.StatusCode, body)
			}
			if tc.unread && !resp.Close {
				t.Errorf("413 relayed before the body was read without Connection: close: %v", resp.Header)
			}
			waitPoolEmpty(t, l.Backends()[0])
			if st := statusOf(l, tc.addr); st.Failures != 0 {
				t.Errorf("a 413 counted as a backend failure: %+v", st)
			}
			// The balancer serves the next request (a small one).
			if tc.addr == goBackend {
				resp, body := upload(t, url, 10, false)
				if resp.StatusCode != 200 || body != "stored" {
					t.Errorf("next request: %d %q", resp.StatusCode, body)
				}
			}
		})
	}
}

// TestBackendDiesMidBody: a backend that dies while a large body is being
// streamed to it, without answering, still gives 502, promptly; a body
// within the retry buffer whose backend answers before reading it is
// relayed too, and the client connection stays usable.
func TestBackendDiesMidBody(t *testing.T) {
	dies := rawBackend(t, func(c net.Conn) {
		readHeadAnd(c, 64<<10)
		// Return: the connection is closed with unread input, a reset.
	})
	l, url := startLB(t, Config{Backends: []BackendConfig{{Addr: dies}}, Health: HealthConfig{Disabled: true}})
	for _, chunked := range []bool{false, true} {
		start := time.Now()
		resp, _ := upload(t, url, 4<<20, chunked)
		if resp.StatusCode != http.StatusBadGateway {
			t.Fatalf("chunked %v: got %d, want 502", chunked, resp.StatusCode)
		}
		// Well below the per-try timeout (15 s): the failed read after the
		// failed write ends at once on the reset connection.
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("chunked %v: 502 after %s", chunked, d)
		}
	}
	waitPoolEmpty(t, l.Backends()[0])

	// A buffered, replayable body refused early: 413 relayed, connection kept.
	early := rawBackend(t, func(c net.Conn) {
		readHeadAnd(c, 0)
		io.WriteString(c, "HTTP/1.1 413 Content Too Large\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno")
	})
	_, url = startLB(t, Config{Backends: []BackendConfig{{Addr: early}}, Health: HealthConfig{Disabled: true}})
	c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	for i := range 2 {
		body := strings.Repeat("s", 60<<10)
		// With a key: a replayable request (a PUT without one is not replayed, and when the
		// early answer is lost with the connection the client may get it with a close).
		fmt.Fprintf(c, "PUT /small HTTP/1.1\r\nHost: lb\r\nIdempotency-Key: small-%d\r\nContent-Length: %d\r\n\r\n%s", i, len(body), body)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusRequestEntityTooLarge || string(b) != "no" || resp.Close {
			t.Fatalf("request %d: %d %q close=%v, want 413 \"no\" on a kept connection", i, resp.StatusCode, b, resp.Close)
		}
	}
}

// isTimeout reports whether err is a deadline error.
func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// TestBackendStopsReadingBody: a backend that reads the head of a streamed request and then
// neither reads the body nor answers nor closes must not hold the exchange forever: the
// balancer's write of the body fails after the per-try timeout and the client gets an error
// answer, and the backend connection is not pooled.
func TestBackendStopsReadingBody(t *testing.T) {
	release := make(chan struct{})
	stuck := rawBackend(t, func(c net.Conn) {
		readHeadAnd(c, 0)
		<-release // hold the connection open without reading
	})
	defer close(release)
	const perTry = 300 * time.Millisecond
	l, url := startLB(t, Config{Backends: []BackendConfig{{Addr: stuck}}, Health: HealthConfig{Disabled: true},
		Retry: RetryConfig{PerTryTimeout: perTry}})
	start := time.Now()
	resp, _ := upload(t, url, 16<<20, false) // far more than the socket buffers hold
	if resp.StatusCode < 500 {
		t.Fatalf("got %d, want a 5xx", resp.StatusCode)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("answered after %s: the write to a backend that stopped reading was not bounded by the per-try timeout %s", d, perTry)
	}
	waitPoolEmpty(t, l.Backends()[0])
}

// TestUnkeyedPutNotReplayed: a PUT without an Idempotency-Key that reached a backend which
// then died without answering is not sent to another backend (it may have been applied: a
// replay would land after other clients' later writes); with a key, or a GET, it is.
func TestUnkeyedPutNotReplayed(t *testing.T) {
	var dyingGot, healthyGot atomic.Int64
	dying := rawBackend(t, func(c net.Conn) {
		readHeadAnd(c, 2) // the whole request (a 2-byte body), then die without answering
		dyingGot.Add(1)
	})
	healthy := rawBackend(t, func(c net.Conn) {
		readHeadAnd(c, 0)
		healthyGot.Add(1)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
	})
	_, url := startLB(t, Config{Backends: []BackendConfig{{Addr: dying}, {Addr: healthy}}, Policy: RoundRobin,
		Health: HealthConfig{Disabled: true}, Outlier: OutlierConfig{ConsecutiveFailures: -1}})
	send := func(method string, hdr ...string) int {
		req, _ := http.NewRequest(method, url+"/x", strings.NewReader("{}"))
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		req.Close = true
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for i := range 6 {
		before := healthyGot.Load()
		dyingBefore := dyingGot.Load()
		status := send("PUT")
		if dyingGot.Load() > dyingBefore && (status != http.StatusBadGateway || healthyGot.Load() != before) {
			t.Fatalf("try %d: an unkeyed PUT the dying backend received was answered %d and sent on to the other backend (%d new requests there)", i, status, healthyGot.Load()-before)
		}
	}
	if dyingGot.Load() == 0 {
		t.Fatal("no PUT reached the dying backend")
	}
	for _, tc := range []struct {
		method string
		hdr    []string
	}{{"PUT", []string{"Idempotency-Key", "k1"}}, {"GET", nil}} {
		for range 4 {
			if status := send(tc.method, tc.hdr...); status != 200 {
				t.Fatalf("%s %v: %d, want 200 (retried on the healthy backend)", tc.method, tc.hdr, status)
			}
		}
	}
}
