package pgreplica_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/strata-project/strata/engines"
	"github.com/strata-project/strata/internal/testenv"
	"github.com/strata-project/strata/replica"
	"github.com/strata-project/strata/replica/pgreplica"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func open(t *testing.T, c *engines.PostgresCluster, rc replica.Config) *pgreplica.Set {
	t.Helper()
	return openDB(t, c, "postgres", rc)
}

func openDB(t *testing.T, c *engines.PostgresCluster, db string, rc replica.Config) *pgreplica.Set {
	t.Helper()
	cfg := pgreplica.Config{
		Primary:       pgreplica.Node{Name: "primary", DSN: c.Primary.DSN(db)},
		Router:        rc,
		ProbeInterval: 50 * time.Millisecond,
		ProbeTimeout:  500 * time.Millisecond,
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	for _, r := range c.Replicas {
		cfg.Replicas = append(cfg.Replicas, pgreplica.Node{Name: r.Name, DSN: r.DSN(db)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := pgreplica.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if _, err := s.Write(ctx, exec("CREATE TABLE IF NOT EXISTS doc (id int PRIMARY KEY, v int NOT NULL)")); err != nil {
		t.Fatal(err)
	}
	return s
}

func exec(sql string, args ...any) func(context.Context, pgx.Tx) error {
	return func(ctx context.Context, tx pgx.Tx) error {
		_, err := tx.Exec(ctx, sql, args...)
		return err
	}
}

func put(t *testing.T, s *pgreplica.Set, id, v int) replica.LSN {
	t.Helper()
	lsn, err := s.Write(context.Background(), exec(
		"INSERT INTO doc VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET v = excluded.v", id, v))
	if err != nil {
		t.Fatalf("write %d=%d: %v", id, v, err)
	}
	if lsn == 0 {
		t.Fatal("write returned position 0")
	}
	return lsn
}

func get(ctx context.Context, s *pgreplica.Set, opts pgreplica.ReadOptions, id int) (int, pgreplica.ReadInfo, error) {
	var v int
	info, err := s.Read(ctx, opts, func(ctx context.Context, q pgreplica.Querier) error {
		err := q.QueryRow(ctx, "SELECT v FROM doc WHERE id = $1", id).Scan(&v)
		if errors.Is(err, pgx.ErrNoRows) {
			v, err = -1, nil
		}
		return err
	})
	return v, info, err
}

// eventually polls cond (a condition on the system under test, not a sleep standing in for
// synchronisation) until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
	return time.Since(start)
}

func status(s *pgreplica.Set, name string) replica.NodeStatus {
	for _, st := range s.Status() {
		if st.Name == name {
			return st
		}
	}
	return replica.NodeStatus{}
}

// caughtUp waits until the named replicas are usable and seen to have replayed lsn.
func caughtUp(t *testing.T, s *pgreplica.Set, lsn replica.LSN, names ...string) {
	t.Helper()
	for _, n := range names {
		eventually(t, 10*time.Second, n+" caught up", func() bool {
			st := status(s, n)
			return st.Usable && st.LSN >= lsn
		})
	}
}

func TestTokensAndLagBoundWithReplayPaused(t *testing.T) {
	c, db := testenv.SharedPostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := openDB(t, c, db, replica.Config{MaxLag: 300 * time.Millisecond, MaxLagBytes: -1})
	put(t, s, 1, 1)
	lagging := c.Replicas[0]
	if err := lagging.PauseReplay(ctx); err != nil {
		t.Fatal(err)
	}
	resumed := false
	t.Cleanup(func() { // leave the shared replica replaying for the next test
		if !resumed {
			_ = lagging.ResumeReplay(context.Background())
		}
	})
	lsn := put(t, s, 1, 2)
	eventually(t, 10*time.Second, "replica2 seen past the token", func() bool { return status(s, "replica2").LSN >= lsn })

	// Reads with the token never see the old version, whoever serves them.
	served := map[string]int{}
	for range 200 {
		v, info, err := get(ctx, s, pgreplica.ReadOptions{MinLSN: lsn}, 1)
		if err != nil {
			t.Fatal(err)
		}
		if v != 2 {
			t.Fatalf("read with token %v returned version %d from %s, older than the session's write", lsn, v, info.Node)
		}
		served[info.Node]++
	}
	if served[lagging.Name] != 0 {
		t.Fatalf("the paused replica served %d token reads", served[lagging.Name])
	}
	if served["replica2"] == 0 {
		t.Fatalf("token reads never went to the caught-up replica: %v; status %+v", served, s.Status())
	}

	// Without a token, the lagging replica serves reads only while within the lag bound.
	eventually(t, 10*time.Second, "paused replica exceeds the lag bound", func() bool {
		st := status(s, lagging.Name)
		return st.Lag > 300*time.Millisecond && !st.Usable
	})
	for range 100 {
		_, info, err := get(ctx, s, pgreplica.ReadOptions{}, 1)
		if err != nil {
			t.Fatal(err)
		}
		if info.Node == lagging.Name {
			t.Fatalf("a read went to %s, lagging %v beyond the 300ms bound", lagging.Name, status(s, lagging.Name).Lag)
		}
	}
	if err := lagging.ResumeReplay(ctx); err != nil {
		t.Fatal(err)
	}
	resumed = true
	eventually(t, 10*time.Second, "resumed replica usable again", func() bool { return status(s, lagging.Name).Usable })
	if st := status(s, lagging.Name); st.LagBytes != 0 {
		t.Fatalf("caught-up replica reports %d bytes of lag", st.LagBytes)
	}

	// Strong reads go to the primary.
	if _, info, err := get(ctx, s, pgreplica.ReadOptions{Strong: true}, 1); err != nil || !info.Primary {
		t.Fatalf("strong read served by %+v, %v", info, err)
	}
}

func TestIdlePrimaryMeansZeroLag(t *testing.T) {
	c, db := testenv.SharedPostgres(t)
	s := openDB(t, c, db, replica.Config{})
	caughtUp(t, s, put(t, s, 1, 1), "replica1")
	// Leave the primary idle for several probe rounds: lag must stay 0, not grow.
	first := time.Now()
	eventually(t, 5*time.Second, "several idle probe rounds", func() bool { return time.Since(first) > 400*time.Millisecond })
	if st := status(s, "replica1"); st.Lag != 0 || st.LagBytes != 0 {
		t.Fatalf("idle, caught-up replica reports lag %v / %d bytes", st.Lag, st.LagBytes)
	}
}

func TestReplicaKilledDuringReads(t *testing.T) {
	c := testenv.Postgres(t, 2)
	s := open(t, c, replica.Config{BanFor: 200 * time.Millisecond})
	lsn := put(t, s, 1, 7)
	caughtUp(t, s, lsn, "replica1", "replica2")

	var reads, failures atomic.Int64
	var lastErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				v, _, err := get(context.Background(), s, pgreplica.ReadOptions{MinLSN: lsn}, 1)
				reads.Add(1)
				if err != nil || v != 7 {
					failures.Add(1)
					lastErr.Store(err)
				}
			}
		}()
	}
	victim := c.Replicas[0]
	eventually(t, 10*time.Second, "reads flowing", func() bool { return reads.Load() > 100 })
	killed := time.Now()
	if err := victim.Kill(); err != nil {
		t.Fatal(err)
	}
	detect := eventually(t, 10*time.Second, "dead replica banned", func() bool { return !status(s, victim.Name).Usable })
	t.Logf("dead replica detected in %v (kill to ban)", detect)
	before := reads.Load()
	eventually(t, 10*time.Second, "reads continue", func() bool { return reads.Load() > before+200 })
	if err := victim.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "restarted replica used again", func() bool { return status(s, victim.Name).Usable })
	close(stop)
	wg.Wait()
	t.Logf("%d reads, %d failed, replica down for %v", reads.Load(), failures.Load(), time.Since(killed))
	if failures.Load() != 0 {
		t.Fatalf("%d of %d reads failed while a replica died (last: %v)", failures.Load(), reads.Load(), lastErr.Load())
	}
}

func TestPrimaryKilledWritesFailFastReadsContinue(t *testing.T) {
	c := testenv.Postgres(t, 2)
	s := open(t, c, replica.Config{})
	caughtUp(t, s, put(t, s, 1, 3), "replica1", "replica2")
	if err := c.Primary.Kill(); err != nil {
		t.Fatal(err)
	}
	var worst time.Duration
	for range 5 {
		start := time.Now()
		_, err := s.Write(context.Background(), exec("INSERT INTO doc VALUES (2, 2)"))
		took := time.Since(start)
		worst = max(worst, took)
		if !errors.Is(err, replica.ErrNoPrimary) {
			t.Fatalf("write with the primary dead: %v, want ErrNoPrimary", err)
		}
	}
	t.Logf("writes with the primary dead failed in at most %v", worst)
	if worst > time.Second {
		t.Fatalf("a write took %v to fail with the primary dead (bound 1s)", worst)
	}
	for range 50 {
		v, info, err := get(context.Background(), s, pgreplica.ReadOptions{}, 1)
		if err != nil || v != 3 || info.Primary {
			t.Fatalf("read with the primary dead: %d from %+v, %v", v, info, err)
		}
	}
}

func TestPromotedReplicaFollowedStalePrimaryNeverWritten(t *testing.T) {
	c := testenv.Postgres(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := open(t, c, replica.Config{})
	caughtUp(t, s, put(t, s, 1, 1), "replica1", "replica2")

	// The primary dies and replica2 is promoted.
	if err := c.Primary.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := c.Replicas[1].Promote(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "promotion followed", func() bool { return status(s, "replica2").Writable })
	put(t, s, 1, 2)
	var v int
	if err := c.Replicas[1].QueryRow(ctx, "postgres", "SELECT v FROM doc WHERE id = 1", nil, &v); err != nil || v != 2 {
		t.Fatalf("the write did not land on the promoted node: %d, %v", v, err)
	}
	// No read goes to the promoted node as if it were a replica.
	for range 20 {
		_, info, err := get(ctx, s, pgreplica.ReadOptions{}, 1)
		if err != nil {
			t.Fatal(err)
		}
		if info.Node == "replica2" && !info.Primary {
			t.Fatal("the promoted node served a read as a replica")
		}
	}

	// The old primary comes back, still believing it is the primary: it is never written to.
	if err := c.Primary.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "old primary seen again", func() bool {
		st := status(s, "primary")
		return st.Role == replica.RolePrimary && st.Failures == 0 && !st.Banned
	})
	if st := status(s, "primary"); !st.Fenced || st.Writable {
		t.Fatalf("stale primary is not fenced: %+v", st)
	}
	put(t, s, 1, 3)
	if err := c.Primary.QueryRow(ctx, "postgres", "SELECT v FROM doc WHERE id = 1", nil, &v); err != nil {
		t.Fatal(err)
	}
	if v != 1 {
		t.Fatalf("the stale primary received a write: v = %d", v)
	}
}

func TestSessionInContextCarriesReadYourWrites(t *testing.T) {
	c, db := testenv.SharedPostgres(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := openDB(t, c, db, replica.Config{MaxLag: -1, MaxLagBytes: -1})
	put(t, s, 1, 1)
	lagging := c.Replicas[0]
	if err := lagging.PauseReplay(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lagging.ResumeReplay(context.Background()) })

	// A request in session mode writes; its token goes back to the client.
	first := replica.NewSession(replica.Session, replica.Token{})
	err := s.WriteSession(replica.WithSession(ctx, first), exec("UPDATE doc SET v = 2 WHERE id = 1"))
	if err != nil {
		t.Fatal(err)
	}
	tok := first.Token()
	if tok.For(0) == 0 {
		t.Fatal("the session recorded no position for the write")
	}
	// The client's next requests present the token: none may read the old version.
	for range 100 {
		next := replica.WithSession(ctx, replica.NewSession(replica.Session, tok))
		var v int
		info, err := s.ReadSession(next, func(ctx context.Context, q pgreplica.Querier) error {
			return q.QueryRow(ctx, "SELECT v FROM doc WHERE id = 1").Scan(&v)
		})
		if err != nil {
			t.Fatal(err)
		}
		if v != 2 || info.Node == lagging.Name {
			t.Fatalf("session read got v=%d from %s after writing v=2", v, info.Node)
		}
	}
	// Strong reads go to the primary whatever the token.
	strong := replica.WithSession(ctx, replica.NewSession(replica.Strong, replica.Token{}))
	info, err := s.ReadSession(strong, func(ctx context.Context, q pgreplica.Querier) error {
		return q.QueryRow(ctx, "SELECT 1").Scan(new(int))
	})
	if err != nil || !info.Primary {
		t.Fatalf("strong read served by %+v, %v", info, err)
	}
}

func TestDeadReplicaDetectedByProbesAlone(t *testing.T) {
	c := testenv.Postgres(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Default probe settings, no traffic: only the prober can notice.
	s, err := pgreplica.Open(ctx, pgreplica.Config{
		Primary:  pgreplica.Node{Name: "primary", DSN: c.Primary.DSN("postgres")},
		Replicas: []pgreplica.Node{{Name: "replica1", DSN: c.Replicas[0].DSN("postgres")}},
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	eventually(t, 10*time.Second, "replica usable", func() bool { return status(s, "replica1").Usable })
	if err := c.Replicas[0].Kill(); err != nil {
		t.Fatal(err)
	}
	took := eventually(t, 10*time.Second, "dead replica banned by the prober", func() bool { return !status(s, "replica1").Usable })
	t.Logf("with the default 250ms probe interval and no traffic, a dead replica was detected in %v", took)
	if took > 2*time.Second {
		t.Fatalf("detection took %v", took)
	}
}
