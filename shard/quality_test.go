package shard_test

import (
	"fmt"
	"math"
	"strconv"
	"testing"

	"github.com/strata-project/strata/shard"
)

// keys returns n distinct keys "user:0", "user:1", ...
func keys(n int) []string {
	ks := make([]string, n)
	for i := range ks {
		ks[i] = "user:" + strconv.Itoa(i)
	}
	return ks
}

// shardIDs returns n shard IDs "db-00", "db-01", ...
func shardIDs(n int) []string {
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("db-%02d", i)
	}
	return ids
}

// placement builds one algorithm over a shard set. Each call returns a fresh
// placement (Bounded is stateful).
type placement struct {
	name string
	make func(t testing.TB, shards []string) shard.Locator
	// grow returns the placement after adding shard id to the one made by
	// make; nil means "make over the larger set".
	grow func(t testing.TB, l shard.Locator, id string) shard.Locator
}

// must returns v, or panics (failing the test) on an unexpected error.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func placements() []placement {
	return []placement{
		{
			name: "partitions",
			make: func(t testing.TB, s []string) shard.Locator {
				return must(shard.NewTable(must(shard.NewMap(s, 0))))
			},
			grow: func(t testing.TB, l shard.Locator, id string) shard.Locator {
				tab := l.(*shard.Table)
				plan := must(shard.PlanMoves(tab.Map(), append(tab.Map().Shards(), id)))
				for _, mv := range plan {
					must(tab.Move(mv))
				}
				return tab
			},
		},
		{name: "ring-100", make: func(t testing.TB, s []string) shard.Locator {
			return must(shard.NewRing(s, shard.RingConfig{VirtualNodes: 100}))
		}},
		{name: "ring-160", make: func(t testing.TB, s []string) shard.Locator {
			return must(shard.NewRing(s, shard.RingConfig{}))
		}},
		{name: "ring-200", make: func(t testing.TB, s []string) shard.Locator {
			return must(shard.NewRing(s, shard.RingConfig{VirtualNodes: 200}))
		}},
		{name: "ring-1000", make: func(t testing.TB, s []string) shard.Locator {
			return must(shard.NewRing(s, shard.RingConfig{VirtualNodes: 1000}))
		}},
		{name: "rendezvous", make: func(t testing.TB, s []string) shard.Locator {
			return must(shard.NewRendezvous(s))
		}},
		{name: "bounded-1.25", make: func(t testing.TB, s []string) shard.Locator {
			return must(shard.NewBounded(s, shard.BoundedConfig{}))
		}},
	}
}

// locateAll returns the shard of every key.
func locateAll(t testing.TB, l shard.Locator, ks []string) []string {
	out := make([]string, len(ks))
	for i, k := range ks {
		out[i] = must(l.LocateString(k))
	}
	return out
}

// cv returns the coefficient of variation of the number of keys per shard.
func cv(owners []string, shards []string) float64 {
	count := make(map[string]int, len(shards))
	for _, o := range owners {
		count[o]++
	}
	mean := float64(len(owners)) / float64(len(shards))
	var ss float64
	for _, s := range shards {
		d := float64(count[s]) - mean
		ss += d * d
	}
	return math.Sqrt(ss/float64(len(shards))) / mean
}

// moved adds shard "db-new" to a placement of n shards and returns the
// fraction of keys whose shard changed and the number of them that did not
// go to the new shard.
func moved(t testing.TB, p placement, n int, ks []string) (frac float64, elsewhere int) {
	const newID = "db-new"
	ids := shardIDs(n)
	l := p.make(t, ids)
	before := locateAll(t, l, ks)
	var after []string
	if p.grow != nil {
		after = locateAll(t, p.grow(t, l, newID), ks)
	} else {
		after = locateAll(t, p.make(t, append(ids, newID)), ks)
	}
	m := 0
	for i := range ks {
		if before[i] != after[i] {
			m++
			if after[i] != newID {
				elsewhere++
			}
		}
	}
	return float64(m) / float64(len(ks)), elsewhere
}

// TestPlacementQuality measures, for 16 shards and 1,000,000 keys, the
// coefficient of variation of keys per shard of every algorithm and the
// fraction of keys that move when a 17th shard is added. It asserts the 1%
// CV bound for the default placement and logs the others:
//
//	go test -run TestPlacementQuality -v ./shard/
func TestPlacementQuality(t *testing.T) {
	const nShards, nKeys = 16, 1_000_000
	ks := keys(nKeys)
	ids := shardIDs(nShards)
	for _, p := range placements() {
		if raceEnabled && p.name != "partitions" {
			t.Logf("%-16s skipped under the race detector", p.name)
			continue
		}
		c := cv(locateAll(t, p.make(t, ids), ks), ids)
		frac, _ := moved(t, p, nShards, ks)
		t.Logf("%-16s CV %.2f%%  moved on 16->17: %.4f (ideal %.4f, %.3fx)",
			p.name, 100*c, frac, 1.0/17, frac*17)
		if p.name == "partitions" && c > 0.01 {
			t.Errorf("default placement: CV %.3f%% > 1%%", 100*c)
		}
	}
}

// TestAddShardMovesMinimum adds one shard to N for N = 1..20 and checks
// that at most 1.05/(N+1) of 100,000 keys move. Virtual partitions and
// rendezvous move each key with probability 1/(N+1) independently, so the
// bound holds for every N and every moved key goes to the new shard. On a
// ring the moved fraction is the new shard's share of the ring, which varies
// from one shard ID to another by about 1/sqrt(VirtualNodes) (8% at 160); its
// mean over the twenty additions is checked instead, and on the ring too
// every moved key goes to the new shard. Bounded loads can also shift keys
// between old shards when the bound binds, so only its mean is checked.
func TestAddShardMovesMinimum(t *testing.T) {
	ks := keys(100_000)
	for _, p := range placements() {
		exact := p.name == "partitions" || p.name == "rendezvous"
		if !exact && p.name != "ring-160" && p.name != "bounded-1.25" {
			continue
		}
		t.Run(p.name, func(t *testing.T) {
			// Under the race detector every other N keeps the run short.
			step := 1
			if raceEnabled {
				step = 2
			}
			var sum, worst float64
			trials := 0
			for n := 1; n <= 20; n += step {
				trials++
				frac, elsewhere := moved(t, p, n, ks)
				ratio := frac * float64(n+1)
				sum += ratio
				worst = max(worst, ratio)
				if exact && ratio > 1.05 {
					t.Errorf("%d -> %d shards: moved %.4f of keys, %.3f x 1/(N+1)", n, n+1, frac, ratio)
				}
				if p.name != "bounded-1.25" && elsewhere > 0 {
					t.Errorf("%d -> %d shards: %d keys moved between old shards", n, n+1, elsewhere)
				}
			}
			mean := sum / float64(trials)
			t.Logf("moved / (1/(N+1)) over %d values of N in 1..20: mean %.3f, worst %.3f", trials, mean, worst)
			if mean > 1.05 {
				t.Errorf("mean moved fraction %.3f x 1/(N+1) > 1.05", mean)
			}
		})
	}
}
