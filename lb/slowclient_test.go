package lb

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/strata-project/strata/config"
)

// dialSmallRcvBuf connects to the balancer at url with a small receive
// buffer, so that its writes block as soon as the client stops reading.
func dialSmallRcvBuf(t *testing.T, url string, rcvbuf int) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf) })
		return nil
	}}
	c, err := d.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// bigBackend serves n bytes per request in 32 KiB writes and counts the
// handlers running.
func bigBackend(t *testing.T, n int, running *atomic.Int64) *backend {
	chunk := bytes.Repeat([]byte("x"), 32<<10)
	return newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		running.Add(1)
		defer running.Add(-1)
		w.Header().Set("Content-Length", fmt.Sprint(n))
		for left := n; left > 0; left -= len(chunk) {
			if _, err := w.Write(chunk[:min(left, len(chunk))]); err != nil {
				return // the balancer closed the connection
			}
		}
	})
}

// TestClientWriteTimeout: a client that sends pipelined GETs of a large
// response and never reads is given up after ClientWriteTimeout: its
// connection is closed, the backend request it held ends, and the backend
// connection is closed rather than pooled.
func TestClientWriteTimeout(t *testing.T) {
	const writeTimeout = 300 * time.Millisecond
	var running atomic.Int64
	be := bigBackend(t, 8<<20, &running)
	l, url := startLB(t, Config{
		Backends:           []BackendConfig{{Addr: be.addr()}},
		Health:             HealthConfig{Disabled: true},
		ClientWriteTimeout: writeTimeout,
	})
	b := l.Backends()[0]
	c := dialSmallRcvBuf(t, url, 4096)
	var pipe bytes.Buffer
	for range 20 {
		pipe.WriteString("GET /big HTTP/1.1\r\nHost: lb\r\n\r\n")
	}
	c.SetWriteDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write(pipe.Bytes()); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	deadline := sent.Add(5 * time.Second)
	for be.hits.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the first request never reached the backend")
		}
		runtimeGosched()
	}

	// The exchange is aborted: nothing in flight on the backend, its
	// handler ended (its write failed when the balancer closed the
	// connection), and that connection is not kept.
	for b.Inflight() != 0 || running.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s after the requests: %d in flight on the balancer, %d handlers running on the backend", time.Since(sent), b.Inflight(), running.Load())
		}
		runtimeGosched()
	}
	released := time.Since(sent)
	if released < writeTimeout {
		t.Fatalf("request released after %s, before the write timeout %s", released, writeTimeout)
	}
	waitPoolEmpty(t, b)
	if n := be.hits.Load(); n != 1 {
		t.Errorf("backend saw %d requests, want 1 (the first; the connection was closed before the next)", n)
	}

	// The client connection was closed: reading what was sent ends with
	// EOF or a reset, not the read deadline.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := io.Copy(io.Discard, c)
	if isTimeout(err) {
		t.Fatalf("client connection still open after %s (read %d bytes)", time.Since(sent), n)
	}
	if n >= 8<<20 {
		t.Fatalf("client read %d bytes: a whole response was written", n)
	}
}

// TestClientWriteTimeoutSlowReader: a client that reads slowly but steadily
// gets its whole response even when writing it takes many times the write
// timeout: the timeout bounds a write that makes no progress, not a
// response.
func TestClientWriteTimeoutSlowReader(t *testing.T) {
	const writeTimeout, size = 200 * time.Millisecond, 8 << 20
	var running atomic.Int64
	be := bigBackend(t, size, &running)
	_, url := startLB(t, Config{
		Backends:           []BackendConfig{{Addr: be.addr()}},
		Health:             HealthConfig{Disabled: true},
		ClientWriteTimeout: writeTimeout,
	})
	c := dialSmallRcvBuf(t, url, 64<<10)
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(c, "GET /big HTTP/1.1\r\nHost: lb\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256<<10)
	total := 0
	for {
		n, err := io.ReadFull(resp.Body, buf)
		total += n
		if err != nil {
			break
		}
		// Pacing, not synchronisation: about 10 MiB/s at most, so the
		// balancer's writes block again and again (the client's buffer is
		// small) while each makes progress well within the timeout.
		time.Sleep(25 * time.Millisecond)
	}
	d := time.Since(start)
	if resp.StatusCode != 200 || total != size {
		t.Fatalf("got %d with %d of %d bytes in %s", resp.StatusCode, total, size, d)
	}
	if d < 3*writeTimeout {
		t.Fatalf("response read in %s: too fast to show anything about a %s write timeout", d, writeTimeout)
	}
}

func TestClientWriteTimeoutDefault(t *testing.T) {
	for _, tc := range []struct {
		idle, write, want time.Duration
	}{
		{0, 0, 30 * time.Second},
		{3 * time.Second, 0, 3 * time.Second},
		{3 * time.Second, 10 * time.Second, 10 * time.Second},
		{0, time.Second, time.Second},
	} {
		c := Config{ClientIdleTimeout: tc.idle, ClientWriteTimeout: tc.write}
		o, err := c.options()
		if err != nil || o.clientWrite != tc.want {
			t.Errorf("idle %s, write %s: got %s, %v; want %s", tc.idle, tc.write, o.clientWrite, err, tc.want)
		}
	}
	c := Config{ClientWriteTimeout: -time.Second}
	if _, err := c.options(); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("negative ClientWriteTimeout: %v, want ErrInvalidConfig", err)
	}
}

func TestClientWriteTimeoutFromConfig(t *testing.T) {
	f, err := config.Parse([]byte("lb:\n  backends:\n    - address: 127.0.0.1:9001\n  limits: {client_write_timeout: 7s}\n"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, _, err := FromConfig(f.LB)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ClientWriteTimeout != 7*time.Second {
		t.Fatalf("ClientWriteTimeout %v, want 7s from limits.client_write_timeout", cfg.ClientWriteTimeout)
	}
}
