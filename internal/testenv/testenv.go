// Package testenv is the test-facing layer over package engines: it starts real Redis, Redis
// Cluster, Memcached and PostgreSQL servers for tests and stops them when the test (or the test
// binary) ends.
//
// Two kinds of instance:
//   - Private ones (Redis, RedisCluster, Memcached, Postgres) belong to one test and are removed
//     by t.Cleanup. Use them for fault injection: kill, pause, promote at will.
//   - Shared ones (SharedRedis, SharedRedisCluster, SharedMemcached, SharedPostgres) are started
//     once per test binary and reset (flushed, or given a fresh database) for each caller. A test
//     that uses them must not break them. Packages that use them call Main from TestMain so
//     that they are stopped and their files removed at the end.
//
// A missing binary skips the test with the Debian package to install, unless the environment
// sets STRATA_REQUIRE_SERVICES=1 (as CI does), in which case the test fails.
package testenv

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/strata-project/strata/engines"
)

// StartTimeout bounds the start of any engine or topology.
const StartTimeout = 60 * time.Second

// RequireServices reports whether missing engines must fail tests instead of skipping them.
func RequireServices() bool { return os.Getenv("STRATA_REQUIRE_SERVICES") == "1" }

// Main runs the package's tests and then stops the shared engines and removes their files.
// Call it from TestMain: func TestMain(m *testing.M) { testenv.Main(m) }.
func Main(m *testing.M) {
	code := m.Run()
	closeShared()
	os.Exit(code)
}

// handle failure to start: skip for a missing binary unless services are required.
func fail(t testing.TB, what string, err error) {
	t.Helper()
	if engines.IsMissingBinary(err) && !RequireServices() {
		t.Skipf("testenv: %s needs an engine that is not installed: %v", what, err)
		return
	}
	t.Fatalf("testenv: start %s: %v", what, err)
}

// newDir makes a fresh directory for engines, reachable by the account that servers run under.
func newDir(prefix string) (string, error) {
	dir, err := os.MkdirTemp("", "strata-"+prefix+"-")
	if err != nil {
		return "", err
	}
	// MkdirTemp makes 0700; servers that drop root need to traverse it.
	return dir, os.Chmod(dir, 0o711)
}

// Dir returns a fresh directory for a test's engines, removed when the test ends.
func Dir(t testing.TB) string {
	t.Helper()
	dir, err := newDir(sanitize(t.Name()))
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func sanitize(s string) string {
	s = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, s)
	if len(s) > 40 {
		s = s[:40]
	}
	return s
}

func startCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), StartTimeout)
}

// Redis starts a private redis-server for this test. opts.Dir is filled in when empty.
func Redis(t testing.TB, opts engines.RedisOptions) *engines.Redis {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = Dir(t)
	}
	ctx, cancel := startCtx()
	defer cancel()
	r, err := engines.StartRedis(ctx, opts)
	if err != nil {
		fail(t, "redis", err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// RedisCluster starts a private Redis Cluster (3 masters, 3 replicas unless opts say otherwise).
func RedisCluster(t testing.TB, opts engines.RedisClusterOptions) *engines.RedisCluster {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = Dir(t)
	}
	ctx, cancel := startCtx()
	defer cancel()
	c, err := engines.StartRedisCluster(ctx, opts)
	if err != nil {
		fail(t, "redis cluster", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Memcached starts a private memcached for this test.
func Memcached(t testing.TB) *engines.Memcached {
	t.Helper()
	ctx, cancel := startCtx()
	defer cancel()
	m, err := engines.StartMemcached(ctx, engines.MemcachedOptions{Dir: Dir(t)})
	if err != nil {
		fail(t, "memcached", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// Postgres starts a private PostgreSQL primary with the given number of streaming replicas.
func Postgres(t testing.TB, replicas int) *engines.PostgresCluster {
	t.Helper()
	ctx, cancel := startCtx()
	defer cancel()
	c, err := engines.StartPostgres(ctx, engines.PostgresOptions{Dir: Dir(t), Replicas: replicas})
	if err != nil {
		fail(t, "postgres", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// shared holds one lazily started engine per test binary.
type shared[T any] struct {
	once  sync.Once
	val   T
	err   error
	dir   string
	close func()
}

func (s *shared[T]) get(start func(ctx context.Context, dir string) (T, func(), error)) (T, error) {
	s.once.Do(func() {
		s.dir, s.err = newDir("shared")
		if s.err != nil {
			return
		}
		ctx, cancel := startCtx()
		defer cancel()
		s.val, s.close, s.err = start(ctx, s.dir)
	})
	return s.val, s.err
}

func (s *shared[T]) stop() {
	if s.close != nil {
		s.close()
	}
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
}

var (
	sharedRedis     shared[*engines.Redis]
	sharedCluster   shared[*engines.RedisCluster]
	sharedMemcached shared[*engines.Memcached]
	sharedPostgres  shared[*engines.PostgresCluster]
	dbSeq           atomic.Int64
)

func closeShared() {
	var wg sync.WaitGroup
	for _, stop := range []func(){sharedRedis.stop, sharedCluster.stop, sharedMemcached.stop, sharedPostgres.stop} {
		wg.Add(1)
		go func() { defer wg.Done(); stop() }()
	}
	wg.Wait()
}

// SharedRedis returns the test binary's Redis (no persistence), emptied for this test.
func SharedRedis(t testing.TB) *engines.Redis {
	t.Helper()
	r, err := sharedRedis.get(func(ctx context.Context, dir string) (*engines.Redis, func(), error) {
		r, err := engines.StartRedis(ctx, engines.RedisOptions{Dir: dir})
		if err != nil {
			return nil, nil, err
		}
		return r, func() { r.Close() }, nil
	})
	if err != nil {
		fail(t, "shared redis", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := r.Do(ctx, "FLUSHALL"); err != nil {
		t.Fatalf("testenv: flush shared redis: %v", err)
	}
	return r
}

// SharedRedisCluster returns the test binary's Redis Cluster (3 masters, 3 replicas), emptied
// for this test.
func SharedRedisCluster(t testing.TB) *engines.RedisCluster {
	t.Helper()
	c, err := sharedCluster.get(func(ctx context.Context, dir string) (*engines.RedisCluster, func(), error) {
		c, err := engines.StartRedisCluster(ctx, engines.RedisClusterOptions{Dir: dir})
		if err != nil {
			return nil, nil, err
		}
		return c, func() { c.Close() }, nil
	})
	if err != nil {
		fail(t, "shared redis cluster", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.FlushAll(ctx); err != nil {
		t.Fatalf("testenv: flush shared redis cluster: %v", err)
	}
	return c
}

// SharedMemcached returns the test binary's memcached, emptied for this test.
func SharedMemcached(t testing.TB) *engines.Memcached {
	t.Helper()
	m, err := sharedMemcached.get(func(ctx context.Context, dir string) (*engines.Memcached, func(), error) {
		m, err := engines.StartMemcached(ctx, engines.MemcachedOptions{Dir: dir})
		if err != nil {
			return nil, nil, err
		}
		return m, func() { m.Close() }, nil
	})
	if err != nil {
		fail(t, "shared memcached", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if reply, err := engines.MemcachedCmd(ctx, m.Addr(), "flush_all"); err != nil || strings.TrimSpace(reply) != "OK" {
		t.Fatalf("testenv: flush shared memcached: %q %v", reply, err)
	}
	return m
}

// SharedPostgres returns the test binary's PostgreSQL primary with two streaming replicas, and
// the name of a database created for this test alone (present on the replicas too).
func SharedPostgres(t testing.TB) (*engines.PostgresCluster, string) {
	t.Helper()
	c, err := sharedPostgres.get(func(ctx context.Context, dir string) (*engines.PostgresCluster, func(), error) {
		c, err := engines.StartPostgres(ctx, engines.PostgresOptions{Dir: dir, Replicas: 2})
		if err != nil {
			return nil, nil, err
		}
		return c, func() { c.Close() }, nil
	})
	if err != nil {
		fail(t, "shared postgres", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	db := fmt.Sprintf("t%d_%d", os.Getpid(), dbSeq.Add(1))
	if err := c.CreateDatabase(ctx, db); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return c, db
}
