package testenv

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/strata-project/strata/engines"
)

func TestMain(m *testing.M) { Main(m) }

// recorder captures Skipf and Fatalf instead of stopping the goroutine.
type recorder struct {
	testing.TB
	skipped, fatal string
}

func (r *recorder) Helper()                        {}
func (r *recorder) Skipf(format string, a ...any)  { r.skipped = fmt.Sprintf(format, a...) }
func (r *recorder) Fatalf(format string, a ...any) { r.fatal = fmt.Sprintf(format, a...) }

func TestMissingBinarySkipsUnlessRequired(t *testing.T) {
	missing := fmt.Errorf("wrapped: %w", &engines.MissingBinaryError{Binary: "memcached", Package: "memcached"})
	for _, tc := range []struct {
		env      string
		err      error
		wantSkip bool
	}{
		{"", missing, true},
		{"0", missing, true},
		{"1", missing, false},
		{"", errors.New("port in use"), false},
	} {
		t.Setenv("STRATA_REQUIRE_SERVICES", tc.env)
		r := &recorder{TB: t}
		fail(r, "memcached", tc.err)
		if tc.wantSkip {
			if r.skipped == "" || r.fatal != "" || !strings.Contains(r.skipped, "memcached") {
				t.Errorf("env %q, err %v: skipped %q, fatal %q; want a skip naming the package", tc.env, tc.err, r.skipped, r.fatal)
			}
		} else if r.fatal == "" || r.skipped != "" {
			t.Errorf("env %q, err %v: skipped %q, fatal %q; want a failure", tc.env, tc.err, r.skipped, r.fatal)
		}
	}
}

func TestSharedRedisIsFlushedForEachCaller(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r := SharedRedis(t)
	if _, err := r.Do(ctx, "SET", "left-over", "1"); err != nil {
		t.Fatal(err)
	}
	again := SharedRedis(t)
	if again != r {
		t.Fatal("SharedRedis started a second server")
	}
	if v, err := again.Do(ctx, "EXISTS", "left-over"); err != nil || v != int64(0) {
		t.Fatalf("the shared Redis was not flushed: EXISTS = %v, %v", v, err)
	}
}

func TestSharedMemcachedIsFlushedForEachCaller(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m := SharedMemcached(t)
	if reply, err := engines.MemcachedCmd(ctx, m.Addr(), "set k 0 0 1\r\nx"); err != nil || strings.TrimSpace(reply) != "STORED" {
		t.Fatalf("set: %q %v", reply, err)
	}
	SharedMemcached(t)
	if reply, err := engines.MemcachedCmd(ctx, m.Addr(), "get k"); err != nil || strings.TrimSpace(reply) != "END" {
		t.Fatalf("the shared memcached was not flushed: %q %v", reply, err)
	}
}

func TestSharedPostgresGivesEachCallerItsOwnDatabase(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, db1 := SharedPostgres(t)
	c2, db2 := SharedPostgres(t)
	if c != c2 {
		t.Fatal("SharedPostgres started a second cluster")
	}
	if db1 == db2 {
		t.Fatalf("two callers got the same database %q", db1)
	}
	if err := c.Primary.Exec(ctx, db1, "CREATE TABLE only_in_db1 (x int)"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := c.Primary.QueryRow(ctx, db2, "SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_db1'", nil, &n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatal("a table made in one caller's database is visible in another's")
	}
	if len(c.Replicas) != 2 {
		t.Fatalf("%d replicas, want 2", len(c.Replicas))
	}
}

func TestSharedRedisClusterIsFlushedForEachCaller(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := SharedRedisCluster(t)
	i, err := c.MasterOf(ctx, 0, "k")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Nodes[i].Do(ctx, "SET", "k", "v"); err != nil {
		t.Fatal(err)
	}
	SharedRedisCluster(t)
	if v, err := c.Nodes[i].Do(ctx, "EXISTS", "k"); err != nil || v != int64(0) {
		t.Fatalf("the shared cluster was not flushed: EXISTS = %v, %v", v, err)
	}
}
