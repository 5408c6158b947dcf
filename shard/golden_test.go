package shard_test

import (
	"testing"

	"github.com/strata-project/strata/shard"
)

// golden pins the placement hash and every algorithm's answer for a few keys.
// The values were computed once and must never change: a change means keys
// land elsewhere than where earlier releases (or other processes) put them.
// Hashes of "" and "abc" are the published xxHash64 reference values.
var golden = []struct {
	key        string
	hash       uint64
	jump16     int    // JumpHash(hash, 16)
	jump1000   int    // JumpHash(hash, 1000)
	partition  int    // partition among DefaultPartitions (4096)
	mapShard   string // NewMap(goldenShards, 0)
	ringShard  string // NewRing(goldenShards, RingConfig{})
	rendShard  string // NewRendezvous(goldenShards)
	boundShard string // NewBounded(goldenShards, BoundedConfig{}), keys assigned in table order
}{
	{"", 0xef46db3751d8e999, 7, 332, 3828, "db-d", "db-d", "db-c", "db-d"},
	{"a", 0xd24ec4f1a98c6e5b, 8, 894, 3364, "db-e", "db-b", "db-c", "db-b"},
	{"abc", 0x44bc2cf5ad770999, 14, 722, 1099, "db-e", "db-d", "db-d", "db-e"},
	{"user:1", 0xd9c7c4609e6080f3, 2, 182, 3484, "db-e", "db-a", "db-c", "db-a"},
	{"user:42", 0xdc1fea7da8d2d1c2, 12, 717, 3521, "db-b", "db-e", "db-a", "db-e"},
	{"order:2026-01-01:99", 0xc4452e3bcc76cdd7, 0, 567, 3140, "db-a", "db-d", "db-e", "db-d"},
	{"\x00\xff", 0xe0d97d9a03131d7d, 11, 545, 3597, "db-c", "db-e", "db-b", "db-c"},
	{"the quick brown fox jumps over the lazy dog", 0xed714233c5a9a792, 0, 37, 3799, "db-e", "db-a", "db-b", "db-a"},
}

// goldenShards are given out of order on purpose: placements depend on the
// set only.
var goldenShards = []string{"db-c", "db-a", "db-e", "db-b", "db-d"}

func TestGoldenVectors(t *testing.T) {
	m := must(shard.NewMap(goldenShards, 0))
	r := must(shard.NewRing(goldenShards, shard.RingConfig{}))
	z := must(shard.NewRendezvous(goldenShards))
	b := must(shard.NewBounded(goldenShards, shard.BoundedConfig{}))
	for _, g := range golden {
		if h := shard.Hash([]byte(g.key)); h != g.hash {
			t.Errorf("Hash(%q) = %#x, want %#x", g.key, h, g.hash)
		}
		if h := shard.HashString(g.key); h != g.hash {
			t.Errorf("HashString(%q) = %#x, want %#x", g.key, h, g.hash)
		}
		if j := shard.JumpHash(g.hash, 16); j != g.jump16 {
			t.Errorf("JumpHash(%#x, 16) = %d, want %d", g.hash, j, g.jump16)
		}
		if j := shard.JumpHash(g.hash, 1000); j != g.jump1000 {
			t.Errorf("JumpHash(%#x, 1000) = %d, want %d", g.hash, j, g.jump1000)
		}
		if p := m.Partition([]byte(g.key)); p != g.partition {
			t.Errorf("Partition(%q) = %d, want %d", g.key, p, g.partition)
		}
		for _, c := range []struct {
			name string
			l    shard.Locator
			want string
		}{{"map", m, g.mapShard}, {"ring", r, g.ringShard}, {"rendezvous", z, g.rendShard}, {"bounded", b, g.boundShard}} {
			if got := must(c.l.LocateString(g.key)); got != c.want {
				t.Errorf("%s: LocateString(%q) = %s, want %s", c.name, g.key, got, c.want)
			}
			if got := must(c.l.Locate([]byte(g.key))); got != c.want {
				t.Errorf("%s: Locate(%q) = %s, want %s", c.name, g.key, got, c.want)
			}
		}
	}
}
