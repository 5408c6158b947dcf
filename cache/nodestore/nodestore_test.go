package nodestore_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/strata-project/strata/cache"
	"github.com/strata-project/strata/cache/cachetest"
	"github.com/strata-project/strata/cache/memstore"
	"github.com/strata-project/strata/cache/nodestore"
	"github.com/strata-project/strata/cachenode"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var token = []byte("0123456789abcdef-test-token")

// node starts a cache node on a loopback port and returns its address and server.
func node(t testing.TB, ln net.Listener) (string, *cachenode.Server) {
	t.Helper()
	mem, err := memstore.New(memstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := cachenode.New(cachenode.Config{Store: mem, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	if ln == nil {
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, cachenode.ErrClosed) {
			t.Errorf("Serve: %v", err)
		}
		mem.Close()
	})
	return ln.Addr().String(), srv
}

func client(t testing.TB, addr string, cfg nodestore.Config) *nodestore.Store {
	t.Helper()
	cfg.Addr = addr
	if cfg.Token == nil {
		cfg.Token = token
	}
	s, err := nodestore.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	addr, _ := node(t, nil)
	cachetest.Run(t, func(t *testing.T) cache.Store {
		return client(t, addr, nodestore.Config{Timeout: 5 * time.Second})
	})
}

func TestWrongTokenIsUnavailable(t *testing.T) {
	addr, srv := node(t, nil)
	s := client(t, addr, nodestore.Config{Token: []byte("not-the-token-at-all")})
	defer s.Close()
	_, _, err := s.Get(context.Background(), "k")
	if !errors.Is(err, cache.ErrUnavailable) {
		t.Fatalf("Get with a wrong token: %v, want cache.ErrUnavailable", err)
	}
	if n := srv.Stats().AuthFailures; n != 1 {
		t.Fatalf("AuthFailures = %d, want 1", n)
	}
}

func TestDownNodeIsUnavailable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	s := client(t, addr, nodestore.Config{})
	defer s.Close()
	if _, err := s.SetIfNewer(context.Background(), "k", cache.Entry{Value: []byte("v"), Version: 1}, 0); !errors.Is(err, cache.ErrUnavailable) {
		t.Fatalf("SetIfNewer on a down node: %v, want cache.ErrUnavailable", err)
	}
}

// TestHungNodeTimesOut: a node that accepts but never answers (like a paused process) costs
// a call at most the configured timeout.
func TestHungNodeTimesOut(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	const timeout = 100 * time.Millisecond
	s := client(t, ln.Addr().String(), nodestore.Config{Timeout: timeout, DialTimeout: timeout})
	start := time.Now()
	_, _, err = s.Get(context.Background(), "k")
	took := time.Since(start)
	if !errors.Is(err, cache.ErrUnavailable) {
		t.Fatalf("Get on a hung node: %v, want cache.ErrUnavailable", err)
	}
	if took > 10*timeout {
		t.Fatalf("Get on a hung node took %v, want about %v", took, timeout)
	}
	s.Close()
	ln.Close()
	for c := range accepted {
		c.Close()
	}
}

// TestReconnectAfterRestart: calls fail while the node is down and succeed again once a node
// listens on the same address, without a new client.
func TestReconnectAfterRestart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	mem, _ := memstore.New(memstore.Config{})
	defer mem.Close()
	srv, _ := cachenode.New(cachenode.Config{Store: mem, Token: token})
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	s := client(t, addr, nodestore.Config{Conns: 1, RedialBackoff: time.Millisecond})
	defer s.Close()
	ctx := context.Background()
	if _, err := s.SetIfNewer(ctx, "k", cache.Entry{Value: []byte("v"), Version: 1}, 0); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	<-done
	if _, _, err := s.Get(ctx, "k"); !errors.Is(err, cache.ErrUnavailable) {
		t.Fatalf("Get after the node stopped: %v, want cache.ErrUnavailable", err)
	}
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("port taken meanwhile: %v", err)
	}
	node(t, ln2)
	var got bool
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if _, ok, err := s.Get(ctx, "k"); err == nil {
			got = true
			if ok {
				t.Fatal("the restarted node remembers the old entry: want an empty cache")
			}
			break
		}
		time.Sleep(5 * time.Millisecond) // polling the redial, not synchronisation
	}
	if !got {
		t.Fatal("no successful Get within 5s of the node's restart")
	}
}

func TestLongKeyRefused(t *testing.T) {
	addr, _ := node(t, nil)
	s := client(t, addr, nodestore.Config{})
	defer s.Close()
	if _, _, err := s.Get(context.Background(), string(make([]byte, 70000))); err == nil {
		t.Fatal("Get of a 70000-byte key succeeded")
	}
}

func BenchmarkGet(b *testing.B) {
	addr, _ := node(b, nil)
	// A generous timeout: on a loaded machine a parallel run's tail can pass the default.
	s := client(b, addr, nodestore.Config{Timeout: 5 * time.Second})
	defer s.Close()
	ctx := context.Background()
	if _, err := s.SetIfNewer(ctx, "k", cache.Entry{Value: make([]byte, 256), Version: 1}, 0); err != nil {
		b.Fatal(err)
	}
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			if _, ok, err := s.Get(ctx, "k"); err != nil || !ok {
				b.Fatal(ok, err)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.SetParallelism(16)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, ok, err := s.Get(ctx, "k"); err != nil || !ok {
					b.Fatal(ok, err)
				}
			}
		})
	})
}
