package postgres_test

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/strata-project/strata/docstore"
	"github.com/strata-project/strata/docstore/docstoretest"
	"github.com/strata-project/strata/docstore/postgres"
	"github.com/strata-project/strata/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func open(t *testing.T, cfg postgres.Config) *postgres.Store {
	t.Helper()
	if cfg.DSN == "" {
		c, db := testenv.SharedPostgres(t)
		cfg.DSN = c.Primary.DSN(db)
	}
	s, err := postgres.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	docstoretest.Run(t, func(t *testing.T) docstore.Store { return open(t, postgres.Config{}) })
}

func TestReopenMigratesOnce(t *testing.T) {
	c, db := testenv.SharedPostgres(t)
	ctx := context.Background()
	s := open(t, postgres.Config{DSN: c.Primary.DSN(db)})
	if _, err := s.Put(ctx, "c", "a", []byte(`{"x":1}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Delete(ctx, "c", "a"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := s.Get(ctx, "c", "a"); !errors.Is(err, docstore.ErrClosed) {
		t.Fatalf("Get after Close: %v, want ErrClosed", err)
	}
	s = open(t, postgres.Config{DSN: c.Primary.DSN(db)})
	if d, err := s.Put(ctx, "c", "a", []byte(`{"x":2}`)); err != nil || d.Version != 3 {
		t.Fatalf("Put after reopen = %+v, %v; want version 3", d, err)
	}
	if _, err := postgres.Open(ctx, postgres.Config{DSN: c.Primary.DSN(db), Partitions: 64}); !errors.Is(err, docstore.ErrInvalid) {
		t.Fatalf("open with other partition count: %v, want ErrInvalid", err)
	}
}

// countingReader counts the queries of the read path.
type countingReader struct {
	postgres.Reader
	n atomic.Int64
}

func (c *countingReader) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	c.n.Add(1)
	return c.Reader.Query(ctx, sql, args...)
}

func (c *countingReader) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	c.n.Add(1)
	return c.Reader.QueryRow(ctx, sql, args...)
}

// TestReadsThroughReplicaSeam sends the read path to a streaming replica through
// Config.Reads, while writes stay on the primary.
func TestReadsThroughReplicaSeam(t *testing.T) {
	c, db := testenv.SharedPostgres(t)
	ctx := context.Background()
	rpool, err := pgxpool.New(ctx, c.Replicas[0].DSN(db))
	if err != nil {
		t.Fatal(err)
	}
	defer rpool.Close()
	reads := &countingReader{Reader: rpool}
	s := open(t, postgres.Config{DSN: c.Primary.DSN(db), Reads: reads})
	if _, err := s.Put(ctx, "c", "a", []byte(`{"x":1}`)); err != nil {
		t.Fatal(err)
	}
	if reads.n.Load() != 0 {
		t.Fatalf("a write went through the read path")
	}
	// Wait (by condition, not by time) until the replica has replayed the write.
	want, err := c.Primary.CurrentLSN(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; {
		got, err := c.Replicas[0].ReplayLSN(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got >= want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica stuck at %d, want %d", got, want)
		}
		runtime.Gosched()
	}
	d, err := s.Get(ctx, "c", "a")
	if err != nil || d.Version != 1 {
		t.Fatalf("Get from replica = %+v, %v", d, err)
	}
	if _, err := s.GetMany(ctx, "c", []string{"a"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.List(ctx, "c", "", 10); err != nil {
		t.Fatal(err)
	}
	if n := reads.n.Load(); n != 3 {
		t.Fatalf("read path used %d times, want 3 (Get, GetMany, List)", n)
	}
}

func TestDeadPrimaryIsUnavailableFast(t *testing.T) {
	c := testenv.Postgres(t, 0)
	ctx := context.Background()
	if err := c.CreateDatabase(ctx, "docs"); err != nil {
		t.Fatal(err)
	}
	s := open(t, postgres.Config{DSN: c.Primary.DSN("docs"), Timeout: 2 * time.Second})
	if _, err := s.Put(ctx, "c", "a", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if err := c.Primary.Kill(); err != nil {
		t.Fatal(err)
	}
	// Kill waits for the postmaster; its backends die with it, a moment apart. Wait until
	// a pooled connection's backend is gone too (a read fails).
	for i := 0; ; i++ {
		if _, err := s.Get(ctx, "c", "a"); err != nil {
			break
		}
		if i == 1000 {
			t.Fatal("reads still succeed after the server was killed")
		}
		runtime.Gosched()
	}
	for _, op := range []func() error{
		func() error { _, err := s.Get(ctx, "c", "a"); return err },
		func() error { _, err := s.Put(ctx, "c", "a", []byte(`{}`)); return err },
		func() error { _, err := s.List(ctx, "c", "", 10); return err },
	} {
		start := time.Now()
		err := op()
		if !errors.Is(err, docstore.ErrUnavailable) {
			t.Fatalf("with the server dead: %v, want ErrUnavailable", err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("took %v to fail, want at most the 2s timeout", d)
		}
	}
	if err := c.Primary.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	d, err := s.Get(ctx, "c", "a")
	if err != nil || d.Version != 1 {
		t.Fatalf("after restart: %+v, %v", d, err)
	}
}

// TestRefusedValueKeepsServerTextOut: a value PostgreSQL refuses (a number beyond numeric's
// range, valid JSON nonetheless) is ErrInvalid whose text names the SQLSTATE but not the
// server's message; the PgError stays reachable for logs.
func TestRefusedValueKeepsServerTextOut(t *testing.T) {
	c, db := testenv.SharedPostgres(t)
	s := open(t, postgres.Config{DSN: c.Primary.DSN(db)})
	_, err := s.Put(context.Background(), "c", "big", []byte(`{"n":1e1000000}`))
	if !errors.Is(err, docstore.ErrInvalid) {
		t.Fatalf("Put of an out-of-range number: %v, want ErrInvalid", err)
	}
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), pe.Code) || strings.Contains(err.Error(), pe.Message) {
		t.Fatalf("error %q: want the SQLSTATE without the server's message (%v)", err, pe)
	}
}
