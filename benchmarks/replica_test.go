package benchmarks

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/strata-project/strata/engines"
	"github.com/strata-project/strata/replica"
	"github.com/strata-project/strata/replica/pgreplica"
)

// BenchmarkReplicaRead compares point reads spread over two streaming replicas by the replica
// router (`spread`) with the same reads all sent to the primary (`primary-only`), 16 callers,
// on one PostgreSQL primary with two replicas started for the run. On one machine the
// replicas share its cores with the primary, so this measures the routing cost and the
// relief of the primary, not the capacity of extra machines.
func BenchmarkReplicaRead(b *testing.B) {
	c := benchPostgres(b, "replica", engines.PostgresOptions{Replicas: 2})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := pgreplica.Config{
		Primary: pgreplica.Node{Name: "primary", DSN: c.Primary.DSN("postgres")},
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	for _, r := range c.Replicas {
		cfg.Replicas = append(cfg.Replicas, pgreplica.Node{Name: r.Name, DSN: r.DSN("postgres")})
	}
	set, err := pgreplica.Open(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(set.Close)
	const rows = 1000
	if _, err := set.Write(ctx, func(ctx context.Context, tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "CREATE TABLE doc (id int PRIMARY KEY, body text NOT NULL)"); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, "INSERT INTO doc SELECT g, repeat('x', 200) FROM generate_series(0, $1) g", rows-1)
		return err
	}); err != nil {
		b.Fatal(err)
	}
	if err := c.WaitReplayed(ctx); err != nil {
		b.Fatal(err)
	}
	for {
		st := set.Status()
		if st[1].Usable && st[2].Usable {
			break
		}
		if ctx.Err() != nil {
			b.Fatalf("replicas never usable: %+v", st)
		}
		time.Sleep(10 * time.Millisecond) // polling the prober's view
	}
	read := func(b *testing.B, opts pgreplica.ReadOptions) {
		b.SetParallelism(8) // 16 callers on 2 cores
		b.RunParallel(func(pb *testing.PB) {
			id := 0
			var body string
			for pb.Next() {
				id = (id + 7) % rows
				_, err := set.Read(context.Background(), opts, func(ctx context.Context, q pgreplica.Querier) error {
					return q.QueryRow(ctx, "SELECT body FROM doc WHERE id = $1", id).Scan(&body)
				})
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	b.Run("spread", func(b *testing.B) { read(b, pgreplica.ReadOptions{}) })
	b.Run("primary-only", func(b *testing.B) { read(b, pgreplica.ReadOptions{Strong: true}) })
	_ = replica.LSN(0)
}
