package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/strata-project/strata/docstore"
	"github.com/strata-project/strata/docstore/docstoretest"
	"github.com/strata-project/strata/docstore/postgres"
	"github.com/strata-project/strata/engines"
	"github.com/strata-project/strata/internal/testenv"
	"github.com/strata-project/strata/replica"
	"github.com/strata-project/strata/replica/pgreplica"
)

// openReplicated opens a Store whose writes and reads go through a pgreplica.Set over the
// cluster's primary and replicas.
func openReplicated(t *testing.T, c *engines.PostgresCluster, db string, reads bool) (*postgres.Store, *pgreplica.Set) {
	t.Helper()
	cfg := pgreplica.Config{
		Shard:         3,
		Primary:       pgreplica.Node{Name: "primary", DSN: c.Primary.DSN(db)},
		ProbeInterval: 50 * time.Millisecond,
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	for _, r := range c.Replicas {
		cfg.Replicas = append(cfg.Replicas, pgreplica.Node{Name: r.Name, DSN: r.DSN(db)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	set, err := pgreplica.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(set.Close)
	pc := postgres.Config{Writes: set.Writer(), Timeout: 2 * time.Second}
	if reads {
		pc.Reads = set.Reader()
	}
	s, err := postgres.Open(ctx, pc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, set
}

func TestConformanceThroughReplicaWriter(t *testing.T) {
	docstoretest.Run(t, func(t *testing.T) docstore.Store {
		c, db := testenv.SharedPostgres(t)
		s, _ := openReplicated(t, c, db, false)
		return s
	})
}

func TestSessionReadsNeverOlderThanOwnWrites(t *testing.T) {
	c, db := testenv.SharedPostgres(t)
	s, _ := openReplicated(t, c, db, true)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := s.Put(ctx, "users", "u1", []byte(`{"n":1}`)); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitReplayed(ctx); err != nil {
		t.Fatal(err)
	}
	for _, r := range c.Replicas {
		if err := r.PauseReplay(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = r.ResumeReplay(context.Background()) })
	}

	// A session request writes version 2; the token it gets back travels to the next requests.
	w := replica.NewSession(replica.Session, replica.Token{})
	d, err := s.Put(replica.WithSession(ctx, w), "users", "u1", []byte(`{"n":2}`))
	if err != nil || d.Version != 2 {
		t.Fatalf("put = %+v, %v", d, err)
	}
	tok := w.Token()
	if tok.For(3) == 0 {
		t.Fatal("the write recorded no position for shard 3")
	}
	for range 50 {
		rctx := replica.WithSession(ctx, replica.NewSession(replica.Session, tok))
		got, err := s.Get(rctx, "users", "u1")
		if err != nil || got.Version != 2 {
			t.Fatalf("session read after own write = %+v, %v; want version 2", got, err)
		}
		many, err := s.GetMany(rctx, "users", []string{"u1"})
		if err != nil || many["u1"].Version != 2 {
			t.Fatalf("session batch read = %+v, %v", many, err)
		}
	}
	// Without a token the paused replicas may serve version 1: that is eventual consistency,
	// and the read must still succeed.
	if got, err := s.Get(ctx, "users", "u1"); err != nil || got.Version < 1 {
		t.Fatalf("eventual read = %+v, %v", got, err)
	}
}

func TestPrimaryDownWritesFailFastThroughSet(t *testing.T) {
	c := testenv.Postgres(t, 1)
	s, set := openReplicated(t, c, "postgres", true)
	ctx := context.Background()
	if _, err := s.Put(ctx, "c", "a", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	// Replication is asynchronous: the replica must hold the document before the primary
	// dies, or the read below would rightly not find it.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.WaitReplayed(wctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Primary.Kill(); err != nil {
		t.Fatal(err)
	}
	// The first write may find the dead primary itself; every write after it fails at once.
	for i := range 5 {
		start := time.Now()
		_, err := s.Put(ctx, "c", "a", []byte(`{}`))
		if !errors.Is(err, docstore.ErrUnavailable) {
			t.Fatalf("write %d with the primary dead: %v, want ErrUnavailable", i, err)
		}
		if took := time.Since(start); i > 0 && took > 100*time.Millisecond {
			t.Fatalf("write %d took %v to fail with the primary known dead", i, took)
		}
	}
	if st := set.Status(); st[0].Writable {
		t.Fatalf("dead primary still writable: %+v", st[0])
	}
	// Reads go on from the replica.
	var lastErr error
	eventually(t, 10*time.Second, func() bool {
		_, lastErr = s.Get(ctx, "c", "a")
		return lastErr == nil
	}, func() string { return fmt.Sprintf("read with the primary dead: %v; status %+v", lastErr, set.Status()) })
}

func eventually(t *testing.T, d time.Duration, cond func() bool, why func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", d, why())
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}
