package benchmarks

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/strata-project/strata/engines"
)

// engineDir returns a fresh directory for an engine started by a benchmark, reachable by the
// account PostgreSQL runs under, and removed when the benchmark ends.
func engineDir(b *testing.B, prefix string) string {
	b.Helper()
	dir, err := os.MkdirTemp("", "strata-bench-"+prefix+"-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o711); err != nil {
		b.Fatal(err)
	}
	return dir
}

// skipOrFatal skips a benchmark whose engine is not installed.
func skipOrFatal(b *testing.B, err error) {
	b.Helper()
	if engines.IsMissingBinary(err) {
		b.Skip(err)
	}
	b.Fatal(err)
}

// benchRedis starts a private redis-server for the benchmark (stopped when it ends).
func benchRedis(b *testing.B, prefix string) *engines.Redis {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := engines.StartRedis(ctx, engines.RedisOptions{Dir: engineDir(b, prefix)})
	if err != nil {
		skipOrFatal(b, err)
	}
	b.Cleanup(func() { r.Close() })
	return r
}

// benchPostgres starts a private PostgreSQL primary (with opts.Replicas replicas) for the
// benchmark (stopped when it ends).
func benchPostgres(b *testing.B, prefix string, opts engines.PostgresOptions) *engines.PostgresCluster {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	opts.Dir = engineDir(b, prefix)
	c, err := engines.StartPostgres(ctx, opts)
	if err != nil {
		skipOrFatal(b, err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}
