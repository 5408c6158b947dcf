package docstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/strata-project/strata/docstore"
	"github.com/strata-project/strata/docstore/docstoretest"
	"github.com/strata-project/strata/docstore/postgres"
	"github.com/strata-project/strata/docstore/sqlite"
	"github.com/strata-project/strata/internal/testenv"
	"github.com/strata-project/strata/shard"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// backendFunc makes the backend of one shard for a test.
type backendFunc func(t *testing.T, partitions int) docstore.Backend

func sqliteBackend(t *testing.T, partitions int) docstore.Backend {
	s, err := sqlite.Open(context.Background(), sqlite.Config{
		Path: filepath.Join(t.TempDir(), "shard.db"), Partitions: partitions})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func postgresBackend(t *testing.T, partitions int) docstore.Backend {
	c, db := testenv.SharedPostgres(t)
	s, err := postgres.Open(context.Background(), postgres.Config{DSN: c.Primary.DSN(db), Partitions: partitions, MaxConns: 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newSharded(t *testing.T, mk backendFunc, partitions int, ids ...string) *docstore.Sharded {
	t.Helper()
	m, err := shard.NewMap(ids, partitions)
	if err != nil {
		t.Fatal(err)
	}
	bs := make(map[string]docstore.Backend)
	for _, id := range ids {
		bs[id] = mk(t, m.Partitions())
	}
	s, err := docstore.NewSharded(m, bs, docstore.ShardedConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestShardedConformanceSQLite(t *testing.T) {
	docstoretest.Run(t, func(t *testing.T) docstore.Store { return newSharded(t, sqliteBackend, 0, "s1", "s2", "s3") })
}

func TestShardedConformancePostgres(t *testing.T) {
	docstoretest.Run(t, func(t *testing.T) docstore.Store { return newSharded(t, postgresBackend, 0, "p1", "p2", "p3") })
}

func TestNewShardedChecks(t *testing.T) {
	m, _ := shard.NewMap([]string{"a", "b"}, 16)
	a := sqliteBackend(t, 16)
	if _, err := docstore.NewSharded(m, map[string]docstore.Backend{"a": a}, docstore.ShardedConfig{}); !errors.Is(err, docstore.ErrInvalid) {
		t.Fatalf("missing backend: %v, want ErrInvalid", err)
	}
	other := sqliteBackend(t, 32)
	if _, err := docstore.NewSharded(m, map[string]docstore.Backend{"a": a, "b": other}, docstore.ShardedConfig{}); !errors.Is(err, docstore.ErrInvalid) {
		t.Fatalf("partition count mismatch: %v, want ErrInvalid", err)
	}
}

// strayRows counts, over all backends, the rows held for partitions it does not own.
func strayRows(t *testing.T, s *docstore.Sharded, bs map[string]docstore.Backend) int {
	t.Helper()
	m := s.Map()
	n := 0
	for id, b := range bs {
		for p := range m.Partitions() {
			if owner, _ := m.Owner(p); owner == id {
				continue
			}
			rows, err := b.ScanPartition(context.Background(), p, docstore.Key{}, docstore.MaxLimit)
			if err != nil {
				t.Fatal(err)
			}
			n += len(rows)
		}
	}
	return n
}

func TestReshardOnlineSQLite(t *testing.T) { testReshardOnline(t, sqliteBackend) }

func TestReshardOnlinePostgres(t *testing.T) { testReshardOnline(t, postgresBackend) }

// testReshardOnline reshards from 2 to 3 shards while writers and readers run, and checks
// that no request fails and no acknowledged write is lost or reverted; then it reverses
// the move, cleans up and removes the third shard.
func testReshardOnline(t *testing.T, mk backendFunc) {
	const (
		partitions = 64
		writers    = 4
		keysPer    = 25
		readers    = 2
	)
	ctx := context.Background()
	m, err := shard.NewMap([]string{"a", "b"}, partitions)
	if err != nil {
		t.Fatal(err)
	}
	bs := map[string]docstore.Backend{"a": mk(t, partitions), "b": mk(t, partitions)}
	var switches atomic.Int64
	s, err := docstore.NewSharded(m, maps(bs), docstore.ShardedConfig{OnSwitch: func(*shard.Map) { switches.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	key := func(w, k int) string { return fmt.Sprintf("w%d-k%02d", w, k) }
	// acked[w][k] is the last version acknowledged to writer w for its key k.
	var acked [writers][keysPer]atomic.Int64
	for w := range writers {
		for k := range keysPer {
			d, err := s.Put(ctx, "docs", key(w, k), body(w, 0))
			if err != nil {
				t.Fatal(err)
			}
			acked[w][k].Store(d.Version)
		}
	}
	// Tombstones must move too: delete then re-create one key per writer after the move.
	for w := range writers {
		v, err := s.Delete(ctx, "docs", fmt.Sprintf("gone-%d", w))
		if !errors.Is(err, docstore.ErrNotFound) || v != 0 {
			t.Fatalf("Delete of a missing doc: %d, %v", v, err)
		}
		if _, err := s.Put(ctx, "docs", fmt.Sprintf("gone-%d", w), []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Delete(ctx, "docs", fmt.Sprintf("gone-%d", w)); err != nil {
			t.Fatal(err)
		}
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var writes, reads, lists atomic.Int64
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			for n := 1; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				k := r.IntN(keysPer)
				var d docstore.Doc
				var err error
				if n%3 == 0 {
					d, err = s.PutIfVersion(ctx, "docs", key(w, k), body(w, n), acked[w][k].Load())
				} else {
					d, err = s.Put(ctx, "docs", key(w, k), body(w, n))
				}
				if err != nil {
					t.Errorf("write %s: %v", key(w, k), err)
					return
				}
				if prev := acked[w][k].Load(); d.Version != prev+1 {
					t.Errorf("write %s: version %d after acknowledged %d", key(w, k), d.Version, prev)
					return
				}
				acked[w][k].Store(d.Version)
				writes.Add(1)
			}
		}()
	}
	for rd := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(rd), 2))
			for {
				select {
				case <-stop:
					return
				default:
				}
				w, k := r.IntN(writers), r.IntN(keysPer)
				floor := acked[w][k].Load()
				d, err := s.Get(ctx, "docs", key(w, k))
				if err != nil {
					t.Errorf("read %s: %v", key(w, k), err)
					return
				}
				if d.Version < floor {
					t.Errorf("read %s: version %d, but %d was acknowledged before the read began", key(w, k), d.Version, floor)
					return
				}
				ids := []string{key(w, k), key((w+1)%writers, k), key(w, (k+1)%keysPer)}
				floors := []int64{acked[w][k].Load(), acked[(w+1)%writers][k].Load(), acked[w][(k+1)%keysPer].Load()}
				got, err := s.GetMany(ctx, "docs", ids)
				if err != nil {
					t.Errorf("GetMany: %v", err)
					return
				}
				for i, id := range ids {
					if got[id].Version < floors[i] {
						t.Errorf("GetMany %s: version %d, acknowledged %d", id, got[id].Version, floors[i])
						return
					}
				}
				reads.Add(1)
			}
		}()
	}
	wg.Add(1)
	go func() { // lister: every key, exactly once, in order, through every page
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			var all []string
			cursor := ""
			for {
				p, err := s.List(ctx, "docs", cursor, 7)
				if err != nil {
					t.Errorf("List: %v", err)
					return
				}
				for _, d := range p.Docs {
					all = append(all, d.ID)
				}
				if cursor = p.Next; cursor == "" {
					break
				}
			}
			if len(all) != writers*keysPer || !slices.IsSorted(all) || len(slices.Compact(slices.Clone(all))) != len(all) {
				t.Errorf("List returned %d ids (want %d, sorted, unique): %v", len(all), writers*keysPer, all)
				return
			}
			lists.Add(1)
		}
	}()

	before := writes.Load()
	bs["c"] = mk(t, partitions)
	if err := s.AddShard("c", bs["c"]); err != nil {
		t.Fatal(err)
	}
	plan, _ := shard.PlanMoves(m, []string{"a", "b", "c"})
	rep, err := s.Reshard(ctx, []string{"a", "b", "c"})
	if err != nil {
		t.Fatal(err)
	}
	during := writes.Load() - before
	// Reverse before cleanup: move everything back to a and b, and forward again.
	back, err := s.Reshard(ctx, []string{"a", "b"})
	if err != nil {
		t.Fatal(err)
	}
	again, err := s.Reshard(ctx, []string{"a", "b", "c"})
	if err != nil {
		t.Fatal(err)
	}
	close(stop)
	wg.Wait()
	if t.Failed() {
		return
	}
	t.Logf("moves %d+%d+%d, copied %d rows, longest fence %v; %d writes during the first reshard, %d reads, %d full listings",
		len(rep.Moves), len(back.Moves), len(again.Moves), rep.Copied, rep.MaxFenced, during, reads.Load(), lists.Load())

	if !slices.Equal(rep.Moves, plan) || len(plan) == 0 {
		t.Fatalf("moves %v, want the plan %v", rep.Moves, plan)
	}
	for _, mv := range plan {
		if mv.To != "c" {
			t.Fatalf("growing to 3 shards moved %v, not to the new shard", mv)
		}
	}
	if got := s.Map().Counts(); got["a"]+got["b"]+got["c"] != partitions || got["c"] < partitions/3 || got["c"] > partitions/3+1 {
		t.Fatalf("partition counts %v", got)
	}
	if n := int64(len(plan) + len(back.Moves) + len(again.Moves)); switches.Load() != n {
		t.Fatalf("OnSwitch called %d times, want %d", switches.Load(), n)
	}
	// Every acknowledged write is there, with its body.
	for w := range writers {
		for k := range keysPer {
			d, err := s.Get(ctx, "docs", key(w, k))
			if err != nil || d.Version != acked[w][k].Load() {
				t.Fatalf("%s: %+v, %v; want version %d", key(w, k), d, err, acked[w][k].Load())
			}
		}
		// The tombstone moved with its version: re-create continues from 3.
		d, err := s.Put(ctx, "docs", fmt.Sprintf("gone-%d", w), []byte(`{}`))
		if err != nil || d.Version != 3 {
			t.Fatalf("re-create after move: %+v, %v; want version 3", d, err)
		}
	}
	if stray := strayRows(t, s, bs); stray == 0 {
		t.Fatal("no old copies before Cleanup: the moves were not reversible")
	}
	removed, err := s.Cleanup(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if stray := strayRows(t, s, bs); stray != 0 || removed == 0 {
		t.Fatalf("after Cleanup (removed %d): %d stray rows", removed, stray)
	}
	// Shrink back to two shards and retire c.
	if _, err := s.RemoveShard("c"); !errors.Is(err, docstore.ErrInvalid) {
		t.Fatalf("RemoveShard of an owner: %v, want ErrInvalid", err)
	}
	if _, err := s.Reshard(ctx, []string{"a", "b"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := s.RemoveShard("c")
	if err != nil || c != bs["c"] {
		t.Fatalf("RemoveShard: %v", err)
	}
	for w := range writers {
		got, err := s.GetMany(ctx, "docs", []string{key(w, 0), key(w, keysPer-1)})
		if err != nil || got[key(w, 0)].Version != acked[w][0].Load() || got[key(w, keysPer-1)].Version != acked[w][keysPer-1].Load() {
			t.Fatalf("after removing a shard: %v, %v", got, err)
		}
	}
}

func body(w, n int) json.RawMessage { return json.RawMessage(fmt.Sprintf(`{"w":%d,"n":%d}`, w, n)) }

func maps(m map[string]docstore.Backend) map[string]docstore.Backend {
	out := make(map[string]docstore.Backend, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func TestMovePartitionChecks(t *testing.T) {
	s := newSharded(t, sqliteBackend, 8, "a", "b")
	ctx := context.Background()
	owner, _ := s.Map().Owner(0)
	other := "a"
	if owner == "a" {
		other = "b"
	}
	if _, err := s.MovePartition(ctx, shard.Move{Partition: 0, From: other, To: owner}); !errors.Is(err, docstore.ErrInvalid) {
		t.Fatalf("move from a non-owner: %v, want ErrInvalid", err)
	}
	if _, err := s.MovePartition(ctx, shard.Move{Partition: 0, From: owner, To: "nowhere"}); !errors.Is(err, docstore.ErrInvalid) {
		t.Fatalf("move to an unknown shard: %v, want ErrInvalid", err)
	}
	if _, err := s.Reshard(ctx, []string{"a", "zzz"}); !errors.Is(err, docstore.ErrInvalid) {
		t.Fatalf("reshard to a shard without backend: %v, want ErrInvalid", err)
	}
	if s.Map().Version() != 1 {
		t.Fatalf("failed moves changed the map: version %d", s.Map().Version())
	}
}
