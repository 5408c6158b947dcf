package engines

import (
	"context"
	"errors"
	"net"
	"strconv"
	"testing"
	"time"
)

// TestNewNodeMovesOffATakenPort: a node whose port another process took between FreePort and
// the server's bind starts on another port instead of failing.
func TestNewNodeMovesOffATakenPort(t *testing.T) {
	binDir, err := postgresBinDir()
	var missing *MissingBinaryError
	if errors.As(err, &missing) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	acct, err := serviceAccount()
	if err != nil {
		t.Fatal(err)
	}
	c := &PostgresCluster{opts: PostgresOptions{Dir: t.TempDir()}, binDir: binDir, acct: acct}
	n, err := c.newNode("primary")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := c.tool(ctx, "initdb", "-D", n.dataDir, "-U", pgUser, "-A", "trust", "--no-sync"); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	taken := n.port
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(taken)))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := n.startNew(ctx); err != nil {
		t.Fatalf("startNew with its port taken: %v", err)
	}
	defer n.close()
	if n.port == taken {
		t.Fatalf("the node claims the taken port %d", taken)
	}
	var one int
	if err := n.QueryRow(ctx, "postgres", "SELECT 1", nil, &one); err != nil || one != 1 {
		t.Fatalf("SELECT 1 on the new port %d: %v", n.port, err)
	}
}

// takenThenFree returns a pick for onFreePort whose first port is held by a listener of the
// test, as if another process had bound it after FreePort chose it; later picks are free.
func takenThenFree(t *testing.T) (pick func() (int, error), taken int) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	taken = ln.Addr().(*net.TCPAddr).Port
	first := true
	return func() (int, error) {
		if first {
			first = false
			return taken, nil
		}
		return FreePort()
	}, taken
}

// TestRedisAndMemcachedMoveOffATakenPort: a Redis or Memcached started on a port that is
// taken before it binds starts on another one instead of failing; a port the caller chose
// is not replaced.
func TestRedisAndMemcachedMoveOffATakenPort(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	skipMissing := func(err error) {
		var missing *MissingBinaryError
		if errors.As(err, &missing) {
			t.Skip(err)
		}
	}
	t.Run("redis", func(t *testing.T) {
		pick, taken := takenThenFree(t)
		r, err := startRedis(ctx, RedisOptions{Dir: t.TempDir()}, pick)
		skipMissing(err)
		if err != nil {
			t.Fatalf("start with the port taken: %v", err)
		}
		defer r.Close()
		if r.Addr() == net.JoinHostPort("127.0.0.1", strconv.Itoa(taken)) {
			t.Fatalf("the server claims the taken port %d", taken)
		}
		if s, err := redisString(ctx, r.Addr(), "PING"); err != nil || s != "PONG" {
			t.Fatalf("PING on %s = %q, %v", r.Addr(), s, err)
		}
		if _, err := startRedis(ctx, RedisOptions{Dir: t.TempDir(), Port: taken}, pick); err == nil || !portTaken(err) {
			t.Fatalf("start on a taken port the caller chose: %v, want Address already in use", err)
		}
	})
	t.Run("memcached", func(t *testing.T) {
		pick, taken := takenThenFree(t)
		m, err := startMemcached(ctx, MemcachedOptions{Dir: t.TempDir()}, pick)
		skipMissing(err)
		if err != nil {
			t.Fatalf("start with the port taken: %v", err)
		}
		defer m.Close()
		if m.Addr() == net.JoinHostPort("127.0.0.1", strconv.Itoa(taken)) {
			t.Fatalf("the server claims the taken port %d", taken)
		}
		if _, err := MemcachedCmd(ctx, m.Addr(), "version"); err != nil {
			t.Fatalf("version on %s: %v", m.Addr(), err)
		}
	})
}
