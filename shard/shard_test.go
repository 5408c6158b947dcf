package shard_test

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/strata-project/strata/shard"
)

// TestDeterminism checks that a placement depends only on the shard set and
// the key: fresh instances built from shuffled shard lists agree on every
// key, and Locate agrees with LocateString.
func TestDeterminism(t *testing.T) {
	ids := shardIDs(7)
	shuffled := slices.Clone(ids)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) {
		shuffled[i], shuffled[j] = shuffled[j], shuffled[i]
	})
	ks := keys(20_000)
	for _, p := range placements() {
		a := locateAll(t, p.make(t, ids), ks)
		b := locateAll(t, p.make(t, shuffled), ks)
		l := p.make(t, ids)
		for i, k := range ks {
			if a[i] != b[i] {
				t.Fatalf("%s: key %q on %s, with shuffled shards on %s", p.name, k, a[i], b[i])
			}
			if got := must(l.Locate([]byte(k))); got != a[i] {
				t.Fatalf("%s: Locate(%q) = %s, LocateString = %s", p.name, k, got, a[i])
			}
		}
	}
}

// TestJumpHash checks the jump hash's range and its consistency: growing
// from n to n+1 buckets either keeps a key or moves it to the new bucket.
func TestJumpHash(t *testing.T) {
	for _, n := range []int{0, -1} {
		if got := shard.JumpHash(42, n); got != -1 {
			t.Errorf("JumpHash(42, %d) = %d, want -1", n, got)
		}
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		k := rng.Uint64()
		prev := shard.JumpHash(k, 1)
		if prev != 0 {
			t.Fatalf("JumpHash(%#x, 1) = %d", k, prev)
		}
		for n := 2; n <= 300; n++ {
			got := shard.JumpHash(k, n)
			if got != prev && got != n-1 {
				t.Fatalf("JumpHash(%#x): %d buckets -> %d, %d buckets -> %d", k, n-1, prev, n, got)
			}
			prev = got
		}
	}
}

// TestInputLimits checks every constructor's validation.
func TestInputLimits(t *testing.T) {
	long := strings.Repeat("x", shard.MaxShardIDLen+1)
	sets := []struct {
		name   string
		shards []string
		want   error
	}{
		{"nil", nil, shard.ErrNoShards},
		{"empty", []string{}, shard.ErrNoShards},
		{"duplicate", []string{"a", "b", "a"}, shard.ErrDuplicateShard},
		{"empty ID", []string{"a", ""}, shard.ErrInvalidShardID},
		{"space", []string{"a b"}, shard.ErrInvalidShardID},
		{"control", []string{"a\n"}, shard.ErrInvalidShardID},
		{"non-ASCII", []string{"shärd"}, shard.ErrInvalidShardID},
		{"too long", []string{long}, shard.ErrInvalidShardID},
	}
	ctors := map[string]func([]string) error{
		"NewMap":        func(s []string) error { _, err := shard.NewMap(s, 0); return err },
		"NewRing":       func(s []string) error { _, err := shard.NewRing(s, shard.RingConfig{}); return err },
		"NewRendezvous": func(s []string) error { _, err := shard.NewRendezvous(s); return err },
		"NewBounded":    func(s []string) error { _, err := shard.NewBounded(s, shard.BoundedConfig{}); return err },
		"PlanMoves": func(s []string) error {
			_, err := shard.PlanMoves(must(shard.NewMap([]string{"a"}, 8)), s)
			return err
		},
	}
	for cname, ctor := range ctors {
		for _, c := range sets {
			if err := ctor(c.shards); !errors.Is(err, c.want) {
				t.Errorf("%s(%s): error %v, want %v", cname, c.name, err, c.want)
			}
		}
		if err := ctor([]string{"a", strings.Repeat("y", shard.MaxShardIDLen)}); err != nil {
			t.Errorf("%s: longest valid ID rejected: %v", cname, err)
		}
	}
	for _, p := range []int{-1, shard.MaxPartitions + 1} {
		if _, err := shard.NewMap([]string{"a"}, p); !errors.Is(err, shard.ErrInvalidPartitions) {
			t.Errorf("NewMap(partitions %d): error %v, want ErrInvalidPartitions", p, err)
		}
	}
	if _, err := shard.NewMap([]string{"a", "b", "c"}, 2); !errors.Is(err, shard.ErrInvalidPartitions) {
		t.Errorf("NewMap(3 shards, 2 partitions): error %v, want ErrInvalidPartitions", err)
	}
	if _, err := shard.PlanMoves(must(shard.NewMap([]string{"a"}, 2)), []string{"a", "b", "c"}); !errors.Is(err, shard.ErrInvalidPartitions) {
		t.Errorf("PlanMoves(3 shards, 2 partitions): error %v, want ErrInvalidPartitions", err)
	}
	if m := must(shard.NewMap([]string{"a"}, 0)); m.Partitions() != shard.DefaultPartitions {
		t.Errorf("NewMap(partitions 0) has %d partitions, want %d", m.Partitions(), shard.DefaultPartitions)
	}
	for _, v := range []int{-1, shard.MaxVirtualNodes + 1} {
		if _, err := shard.NewRing([]string{"a"}, shard.RingConfig{VirtualNodes: v}); !errors.Is(err, shard.ErrInvalidConfig) {
			t.Errorf("NewRing(VirtualNodes %d): error %v, want ErrInvalidConfig", v, err)
		}
	}
	for _, c := range []shard.BoundedConfig{{Factor: 0.99}, {Factor: math.NaN()}, {Factor: math.Inf(1)}, {Capacity: -1}} {
		if _, err := shard.NewBounded([]string{"a"}, c); !errors.Is(err, shard.ErrInvalidConfig) {
			t.Errorf("NewBounded(%+v): error %v, want ErrInvalidConfig", c, err)
		}
	}
}

// TestZeroValues checks that zero placements report ErrNoShards instead of
// panicking.
func TestZeroValues(t *testing.T) {
	var nilMap *shard.Map
	for name, l := range map[string]shard.Locator{
		"Map": &shard.Map{}, "nil Map": nilMap, "Table": &shard.Table{}, "Ring": &shard.Ring{},
		"Rendezvous": &shard.Rendezvous{}, "Bounded": &shard.Bounded{},
	} {
		if _, err := l.Locate([]byte("k")); !errors.Is(err, shard.ErrNoShards) {
			t.Errorf("zero %s: Locate error %v, want ErrNoShards", name, err)
		}
		if _, err := l.LocateString("k"); !errors.Is(err, shard.ErrNoShards) {
			t.Errorf("zero %s: LocateString error %v, want ErrNoShards", name, err)
		}
	}
	var tab shard.Table
	if _, err := tab.Move(shard.Move{From: "a", To: "b"}); !errors.Is(err, shard.ErrNoShards) {
		t.Errorf("zero Table: Move error %v, want ErrNoShards", err)
	}
	if _, err := shard.PlanMoves(&shard.Map{}, []string{"a"}); !errors.Is(err, shard.ErrNoShards) {
		t.Errorf("PlanMoves(zero Map): error %v, want ErrNoShards", err)
	}
	if err := tab.Update(&shard.Map{}); !errors.Is(err, shard.ErrNoShards) {
		t.Errorf("Update(zero Map): error %v, want ErrNoShards", err)
	}
}

// TestMapWith checks single moves: version, immutability of the old map,
// shards joining and leaving, and rejected moves.
func TestMapWith(t *testing.T) {
	m := must(shard.NewMap([]string{"b", "a"}, 4)) // a: 0, 2; b: 1, 3
	if got, want := m.Owned("a"), []int{0, 2}; !slices.Equal(got, want) {
		t.Fatalf("Owned(a) = %v, want %v", got, want)
	}
	m2 := must(m.With(shard.Move{Partition: 1, From: "b", To: "c"}))
	if m2.Version() != m.Version()+1 {
		t.Errorf("version %d after one move from %d", m2.Version(), m.Version())
	}
	if got := must(m.Owner(1)); got != "b" {
		t.Errorf("old map changed: partition 1 on %s", got)
	}
	if got, want := m2.Shards(), []string{"a", "b", "c"}; !slices.Equal(got, want) {
		t.Errorf("shards after move to c = %v, want %v", got, want)
	}
	m3 := must(m2.With(shard.Move{Partition: 3, From: "b", To: "a"}))
	if got, want := m3.Shards(), []string{"a", "c"}; !slices.Equal(got, want) {
		t.Errorf("shards after b's last partition left = %v, want %v", got, want)
	}
	if got, want := m3.Counts(), map[string]int{"a": 3, "c": 1}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("counts = %v, want %v", got, want)
	}
	for _, c := range []struct {
		mv   shard.Move
		want error
	}{
		{shard.Move{Partition: 0, From: "c", To: "a"}, shard.ErrOwnerMismatch},
		{shard.Move{Partition: 0, From: "a", To: "a"}, shard.ErrOwnerMismatch},
		{shard.Move{Partition: 4, From: "a", To: "c"}, shard.ErrInvalidPartitions},
		{shard.Move{Partition: -1, From: "a", To: "c"}, shard.ErrInvalidPartitions},
		{shard.Move{Partition: 0, From: "a", To: "bad id"}, shard.ErrInvalidShardID},
	} {
		if _, err := m3.With(c.mv); !errors.Is(err, c.want) {
			t.Errorf("With(%v): error %v, want %v", c.mv, err, c.want)
		}
	}
}

// randomMap returns a map over a random subset of pool with a random,
// usually unbalanced, assignment of partitions.
func randomMap(rng *rand.Rand, pool []string, partitions int) *shard.Map {
	n := 1 + rng.IntN(min(len(pool), partitions))
	ids := slices.Clone(pool)
	rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	m := must(shard.NewMap(ids[:n], partitions))
	for range rng.IntN(3 * partitions) {
		p := rng.IntN(partitions)
		from := must(m.Owner(p))
		to := pool[rng.IntN(len(pool))]
		if to != from {
			m = must(m.With(shard.Move{Partition: p, From: from, To: to}))
		}
	}
	return m
}

// minMoves returns the fewest moves that reach a balanced map over target,
// by trying every choice of which shards get the larger quota.
func minMoves(m *shard.Map, target []string) int {
	P, n := m.Partitions(), len(target)
	owned := m.Counts()
	best := P
	for mask := 0; mask < 1<<n; mask++ {
		if popcount(mask) != P%n {
			continue
		}
		keep := 0
		for i, id := range target {
			q := P / n
			if mask&(1<<i) != 0 {
				q++
			}
			keep += min(owned[id], q)
		}
		best = min(best, P-keep)
	}
	return best
}

func popcount(x int) int {
	c := 0
	for ; x != 0; x &= x - 1 {
		c++
	}
	return c
}

// TestPlanMovesProperties checks PlanMoves over random maps and random target
// shard sets: the plan applies cleanly, reaches exactly the target set with
// counts differing by at most one, moves each partition at most once and
// only to a new owner, and moves as few partitions as any balanced outcome
// allows (compared with an exhaustive search).
func TestPlanMovesProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	pool := []string{"s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7"}
	for trial := range 3000 {
		partitions := 1 + rng.IntN(64)
		m := randomMap(rng, pool, partitions)
		tn := 1 + rng.IntN(min(len(pool), partitions))
		target := slices.Clone(pool)
		rng.Shuffle(len(target), func(i, j int) { target[i], target[j] = target[j], target[i] })
		target = target[:tn]

		plan := must(shard.PlanMoves(m, target))
		seen := map[int]bool{}
		for _, mv := range plan {
			if seen[mv.Partition] {
				t.Fatalf("trial %d: partition %d moved twice", trial, mv.Partition)
			}
			seen[mv.Partition] = true
			if mv.From == mv.To {
				t.Fatalf("trial %d: no-op move %v", trial, mv)
			}
		}
		after, err := m.Apply(plan)
		if err != nil {
			t.Fatalf("trial %d: plan does not apply: %v", trial, err)
		}
		sortedTarget := slices.Sorted(slices.Values(target))
		if got := after.Shards(); !slices.Equal(got, sortedTarget) {
			t.Fatalf("trial %d: shards after plan %v, want %v", trial, got, sortedTarget)
		}
		lo, hi := partitions, 0
		for _, c := range after.Counts() {
			lo, hi = min(lo, c), max(hi, c)
		}
		if hi-lo > 1 {
			t.Fatalf("trial %d: counts after plan %v differ by %d", trial, after.Counts(), hi-lo)
		}
		if want := minMoves(m, target); len(plan) != want {
			t.Fatalf("trial %d: %d moves, minimum is %d (map %v, target %v)", trial, len(plan), want, m.Counts(), target)
		}
		if after.Version() != m.Version()+uint64(len(plan)) {
			t.Fatalf("trial %d: version %d after %d moves from %d", trial, after.Version(), len(plan), m.Version())
		}
	}
}

// TestPlanMovesAddRemove checks the common cases on a balanced map: adding a
// shard moves partitions only to it, and removing one moves only its own
// partitions.
func TestPlanMovesAddRemove(t *testing.T) {
	m := must(shard.NewMap(shardIDs(16), 0))
	add := must(shard.PlanMoves(m, append(shardIDs(16), "db-new")))
	if want := shard.DefaultPartitions / 17; len(add) != want {
		t.Errorf("adding a 17th shard moves %d partitions, want %d", len(add), want)
	}
	for _, mv := range add {
		if mv.To != "db-new" {
			t.Fatalf("adding a shard: move %v does not go to the new shard", mv)
		}
	}
	grown := must(m.Apply(add))
	remove := must(shard.PlanMoves(grown, shardIDs(16)))
	for _, mv := range remove {
		if mv.From != "db-new" {
			t.Fatalf("removing a shard: move %v does not leave the removed shard", mv)
		}
	}
	if len(remove) != len(add) {
		t.Errorf("removing the shard again moves %d partitions, adding it moved %d", len(remove), len(add))
	}
	if again := must(shard.PlanMoves(m, shardIDs(16))); len(again) != 0 {
		t.Errorf("plan to the current set of a balanced map has %d moves", len(again))
	}
}

// TestTableConcurrentMoves runs readers against a Table while a writer moves
// partitions one by one to a new shard, under the race detector in CI. Each
// reader checks that a key's shard is always its partition's owner before
// or after its move, that versions never go backwards, and that a snapshot
// never changes.
func TestTableConcurrentMoves(t *testing.T) {
	start := must(shard.NewMap(shardIDs(4), 256))
	tab := must(shard.NewTable(start))
	plan := must(shard.PlanMoves(start, append(shardIDs(4), "db-new")))
	final := must(start.Apply(plan))
	ks := keys(2000)

	done := make(chan struct{})
	var reads atomic.Int64 // lookups done by all readers
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	// report keeps the first few errors; readers go on reading so that the
	// writer, which waits for reads, always progresses.
	report := func(err error) {
		select {
		case errs <- err:
		default:
		}
	}
	for r := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var last uint64
			for i := r; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				reads.Add(1)
				k := ks[i%len(ks)]
				snap := tab.Map()
				if snap.Version() < last {
					report(fmt.Errorf("version went from %d to %d", last, snap.Version()))
					continue
				}
				last = snap.Version()
				got := must(tab.LocateString(k))
				before, after := must(start.LocateString(k)), must(final.LocateString(k))
				if got != before && got != after {
					report(fmt.Errorf("key %q on %s, owner before %s, after %s", k, got, before, after))
					continue
				}
				p := snap.PartitionString(k)
				if must(snap.LocateString(k)) != must(snap.Owner(p)) {
					report(fmt.Errorf("snapshot %d inconsistent for %q", snap.Version(), k))
					continue
				}
			}
		}()
	}
	for _, mv := range plan {
		// Let the readers look up a few keys under every version.
		for r := reads.Load(); reads.Load() < r+8; {
			runtime.Gosched()
		}
		if _, err := tab.Move(mv); err != nil {
			t.Error(err)
		}
	}
	close(done)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := tab.Map(); got.Version() != final.Version() || !slices.Equal(got.Shards(), final.Shards()) {
		t.Errorf("table ends at version %d %v, want %d %v", got.Version(), got.Shards(), final.Version(), final.Shards())
	}
	for _, k := range ks {
		if got, want := must(tab.LocateString(k)), must(final.LocateString(k)); got != want {
			t.Fatalf("after the moves %q on %s, want %s", k, got, want)
		}
	}
	if _, err := tab.Move(plan[0]); !errors.Is(err, shard.ErrOwnerMismatch) {
		t.Errorf("replaying a done move: error %v, want ErrOwnerMismatch", err)
	}
}

// TestTableUpdate checks that a Table only accepts newer maps.
func TestTableUpdate(t *testing.T) {
	m1 := must(shard.NewMap([]string{"a", "b"}, 8))
	tab := must(shard.NewTable(m1))
	m2 := must(m1.With(shard.Move{Partition: 0, From: "a", To: "b"}))
	if err := tab.Update(m1); !errors.Is(err, shard.ErrStaleVersion) {
		t.Errorf("Update(same version): error %v, want ErrStaleVersion", err)
	}
	if err := tab.Update(m2); err != nil {
		t.Fatalf("Update(newer): %v", err)
	}
	if tab.Map() != m2 {
		t.Error("Update did not publish the newer map")
	}
	if err := tab.Update(m1); !errors.Is(err, shard.ErrStaleVersion) {
		t.Errorf("Update(older): error %v, want ErrStaleVersion", err)
	}
}

// TestBoundedNeverExceedsBound assigns keys one by one and checks after every
// assignment that no shard holds more than ceil(Factor*keys/shards).
func TestBoundedNeverExceedsBound(t *testing.T) {
	for _, f := range []float64{1, 1.05, 1.25, 2} {
		ids := shardIDs(10)
		b := must(shard.NewBounded(ids, shard.BoundedConfig{Factor: f}))
		ks := keys(5000)
		for i, k := range ks {
			first := must(b.LocateString(k))
			if again := must(b.LocateString(k)); again != first {
				t.Fatalf("factor %v: key %q moved from %s to %s", f, k, first, again)
			}
			bound := int(math.Ceil(f * float64(i+1) / float64(len(ids))))
			total := 0
			for id, n := range b.Loads() {
				total += n
				if n > bound {
					t.Fatalf("factor %v, %d keys: %s holds %d > bound %d", f, i+1, id, n, bound)
				}
			}
			if total != i+1 {
				t.Fatalf("factor %v: loads sum to %d after %d keys", f, total, i+1)
			}
		}
		if f == 1 {
			for id, n := range b.Loads() {
				if n != len(ks)/len(ids) {
					t.Errorf("factor 1: %s holds %d keys, want exactly %d", id, n, len(ks)/len(ids))
				}
			}
		}
	}
}

// TestBoundedFull fills every shard to its capacity and checks that a new
// key gets ErrFull (no panic), known keys still resolve, and a release makes
// room again.
func TestBoundedFull(t *testing.T) {
	ids := []string{"a", "b", "c"}
	b := must(shard.NewBounded(ids, shard.BoundedConfig{Capacity: 4}))
	ks := keys(12)
	for _, k := range ks {
		must(b.LocateString(k))
	}
	for id, n := range b.Loads() {
		if n != 4 {
			t.Errorf("%s holds %d keys, want 4", id, n)
		}
	}
	if _, err := b.LocateString("one-more"); !errors.Is(err, shard.ErrFull) {
		t.Fatalf("new key when all full: error %v, want ErrFull", err)
	}
	if _, err := b.Locate([]byte("one-more")); !errors.Is(err, shard.ErrFull) {
		t.Fatalf("new key when all full: error %v, want ErrFull", err)
	}
	if got, ok := b.Lookup(ks[0]); !ok || got != must(b.LocateString(ks[0])) {
		t.Errorf("known key: Lookup = %s, %v", got, ok)
	}
	owner, _ := b.Lookup(ks[5])
	if !b.Release(ks[5]) || b.Release(ks[5]) {
		t.Fatal("Release should report true once, then false")
	}
	if _, ok := b.Lookup(ks[5]); ok {
		t.Error("released key still assigned")
	}
	if got := must(b.LocateString("one-more")); got != owner {
		t.Errorf("after a release on %s the new key went to %s", owner, got)
	}
	if b.Bound() != 4 {
		t.Errorf("Bound() = %d, want the capacity 4", b.Bound())
	}
}

// TestBoundedConcurrent assigns keys from several goroutines and checks the
// totals and the bound.
func TestBoundedConcurrent(t *testing.T) {
	b := must(shard.NewBounded(shardIDs(5), shard.BoundedConfig{Factor: 1.1}))
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				must(b.LocateString(fmt.Sprintf("g%d-%d", g, i)))
			}
		}()
	}
	wg.Wait()
	total := 0
	for id, n := range b.Loads() {
		total += n
		if n > b.Bound() {
			t.Errorf("%s holds %d > bound %d", id, n, b.Bound())
		}
	}
	if total != 2000 {
		t.Errorf("loads sum to %d, want 2000", total)
	}
}

// TestMapJSON checks the encoding round trip and the canonical form.
func TestMapJSON(t *testing.T) {
	m := must(shard.NewMap([]string{"b", "a", "c"}, 6))
	m = must(m.With(shard.Move{Partition: 1, From: "b", To: "d"}))
	data := must(m.MarshalJSON())
	if want := `{"version":2,"shards":["a","b","c","d"],"owners":[0,3,2,0,1,2]}`; string(data) != want {
		t.Errorf("MarshalJSON = %s, want %s", data, want)
	}
	back := must(shard.DecodeMap(data))
	if again := must(back.MarshalJSON()); string(again) != string(data) {
		t.Errorf("round trip: %s, want %s", again, data)
	}
	// The same map with shards listed in another order decodes to the same map.
	perm := `{"version":2,"shards":["d","c","b","a"],"owners":[3,0,1,3,2,1]}`
	if got := must(must(shard.DecodeMap([]byte(perm))).MarshalJSON()); string(got) != string(data) {
		t.Errorf("decoding reordered shards: %s, want %s", got, data)
	}
	var into shard.Map
	if err := into.UnmarshalJSON(data); err != nil || into.Version() != 2 {
		t.Errorf("UnmarshalJSON: %v, version %d", err, into.Version())
	}
	if err := into.UnmarshalJSON(data); !errors.Is(err, shard.ErrInvalidMap) {
		t.Errorf("UnmarshalJSON into a map in use: error %v, want ErrInvalidMap", err)
	}
}

// invalidMaps are stored maps DecodeMap must reject.
var invalidMaps = []string{
	``,
	`null`,
	`[]`,
	`{}`,
	`{"version":1,"shards":["a"],"owners":[0]} {}`,
	`{"version":0,"shards":["a"],"owners":[0]}`,
	`{"version":-1,"shards":["a"],"owners":[0]}`,
	`{"version":1,"shards":[],"owners":[0]}`,
	`{"version":1,"shards":["a","a"],"owners":[0,1]}`,
	`{"version":1,"shards":["a",""],"owners":[0,1]}`,
	`{"version":1,"shards":["a b"],"owners":[0]}`,
	`{"version":1,"shards":["a"],"owners":[]}`,
	`{"version":1,"shards":["a"],"owners":[1]}`,
	`{"version":1,"shards":["a"],"owners":[-1]}`,
	`{"version":1,"shards":["a"],"owners":[0.5]}`,
	`{"version":1,"shards":["a","b"],"owners":[0,0]}`,
	`{"version":1,"shards":["a"],"owners":[0],"extra":1}`,
	`{"version":1,"shards":["a"],"owners":"0"}`,
}

func TestDecodeMapRejects(t *testing.T) {
	for _, in := range invalidMaps {
		if m, err := shard.DecodeMap([]byte(in)); !errors.Is(err, shard.ErrInvalidMap) {
			t.Errorf("DecodeMap(%s) = %v, %v; want ErrInvalidMap", in, m, err)
		}
	}
	tooMany := `{"version":1,"shards":["a"],"owners":[0` + strings.Repeat(",0", shard.MaxPartitions) + `]}`
	if _, err := shard.DecodeMap([]byte(tooMany)); !errors.Is(err, shard.ErrInvalidPartitions) {
		t.Errorf("DecodeMap(%d partitions): error %v, want ErrInvalidPartitions", shard.MaxPartitions+1, err)
	}
	if _, err := shard.DecodeMap([]byte(`{"version":1,"shards":["a","a"],"owners":[0,1]}`)); !errors.Is(err, shard.ErrDuplicateShard) {
		t.Errorf("duplicate shard: error %v, want ErrDuplicateShard too", err)
	}
}

// FuzzDecodeMap feeds arbitrary bytes to DecodeMap, the parser of stored
// maps. It must never panic; whatever it accepts must satisfy the Map
// invariants, locate keys, and survive an encoding round trip unchanged.
func FuzzDecodeMap(f *testing.F) {
	f.Add([]byte(`{"version":2,"shards":["a","b","c","d"],"owners":[0,3,2,0,1,2]}`))
	f.Add([]byte(`{"version":7,"shards":["db-1","db-0"],"owners":[1,0,1,0]}`))
	f.Add(must(must(shard.NewMap(shardIDs(3), 16)).MarshalJSON()))
	for _, in := range invalidMaps {
		f.Add([]byte(in))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := shard.DecodeMap(data)
		if err != nil {
			if !errors.Is(err, shard.ErrInvalidMap) {
				t.Fatalf("error %v does not wrap ErrInvalidMap", err)
			}
			return
		}
		if m.Version() < 1 || m.Partitions() < 1 || m.Partitions() > shard.MaxPartitions {
			t.Fatalf("accepted version %d, %d partitions", m.Version(), m.Partitions())
		}
		ids := m.Shards()
		if !slices.IsSorted(ids) || len(slices.Compact(slices.Clone(ids))) != len(ids) {
			t.Fatalf("shards not sorted and unique: %q", ids)
		}
		counts := m.Counts()
		for _, id := range ids {
			if counts[id] == 0 {
				t.Fatalf("shard %q owns no partition", id)
			}
		}
		if got := must(m.LocateString("k")); !slices.Contains(ids, got) {
			t.Fatalf("Locate returned %q, not a shard of the map", got)
		}
		enc := must(m.MarshalJSON())
		again := must(must(shard.DecodeMap(enc)).MarshalJSON())
		if string(again) != string(enc) {
			t.Fatalf("round trip changed the map: %s -> %s", enc, again)
		}
		if _, err := shard.PlanMoves(m, append(ids, "fuzz-new")); err != nil && m.Partitions() > len(ids) {
			t.Fatalf("PlanMoves on an accepted map: %v", err)
		}
	})
}
