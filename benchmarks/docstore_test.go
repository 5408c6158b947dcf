package benchmarks

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/strata-project/strata/docstore"
	"github.com/strata-project/strata/docstore/postgres"
	"github.com/strata-project/strata/docstore/sqlite"
	"github.com/strata-project/strata/engines"
)

// docstoreCallers is the number of concurrent callers of BenchmarkDocstore.
const docstoreCallers = 16

// docstoreKeys is the number of documents loaded before measuring.
const docstoreKeys = 10000

// BenchmarkDocstore measures point reads (Get of a random existing document) and writes
// (Put replacing one) with 16 concurrent callers, on SQLite (a temporary file) and on a
// private PostgreSQL server, as a throughput baseline. ops/s is the figure to read.
func BenchmarkDocstore(b *testing.B) {
	ctx := context.Background()
	dir := b.TempDir()
	sq, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(dir, "bench.db")})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sq.Close() })
	benchStore(b, "sqlite", sq)

	c := benchPostgres(b, "pg", engines.PostgresOptions{})
	if err := c.CreateDatabase(ctx, "bench"); err != nil {
		b.Fatal(err)
	}
	pg, err := postgres.Open(ctx, postgres.Config{DSN: c.Primary.DSN("bench"), MaxConns: docstoreCallers})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { pg.Close() })
	benchStore(b, "postgres", pg)
}

func benchStore(b *testing.B, name string, s docstore.Store) {
	ctx := context.Background()
	ids := make([]string, docstoreKeys)
	for i := range ids {
		ids[i] = fmt.Sprintf("user-%06d", i)
		if _, err := s.Put(ctx, "users", ids[i], []byte(fmt.Sprintf(`{"name":"user %d","plan":"free","n":%d}`, i, i))); err != nil {
			b.Fatal(err)
		}
	}
	par := (docstoreCallers + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0)
	run := func(op string, fn func(i int) error) {
		b.Run(name+"-"+op, func(b *testing.B) {
			b.SetParallelism(par)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := int(rand.Uint32())
				for pb.Next() {
					i = i*1103515245 + 12345
					if err := fn(int(uint32(i>>8)) % docstoreKeys); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
		})
	}
	run("get", func(i int) error { _, err := s.Get(ctx, "users", ids[i]); return err })
	run("put", func(i int) error {
		_, err := s.Put(ctx, "users", ids[i], []byte(`{"name":"someone","plan":"pro","n":1}`))
		return err
	})
}
