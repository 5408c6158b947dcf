package benchmarks

import (
	"fmt"
	"testing"

	"github.com/buraksezer/consistent"
	"github.com/cespare/xxhash/v2"

	"github.com/strata-project/strata/shard"
)

// shardKeys are the keys every BenchmarkShardLocate sub-benchmark looks up,
// generated once so that all of them hash the same bytes.
var shardKeys = func() [][]byte {
	ks := make([][]byte, 1<<16)
	for i := range ks {
		ks[i] = fmt.Appendf(nil, "user:%d", i)
	}
	return ks
}()

// shardMembers are the 16 shard IDs of BenchmarkShardLocate.
var shardMembers = func() []string {
	ids := make([]string, 16)
	for i := range ids {
		ids[i] = fmt.Sprintf("db-%02d", i)
	}
	return ids
}()

// jumpFloor is xxhash64 of the key and the jump consistent hash over the 16
// shards directly: the least work any consistent placement can do.
func jumpFloor(key []byte, buckets int64) int64 {
	h := xxhash.Sum64(key)
	b, j := int64(-1), int64(0)
	for j < buckets {
		b = j
		h = h*2862933555777941757 + 1
		j = int64(float64(b+1) * (float64(int64(1)<<31) / float64((h>>33)+1)))
	}
	return b
}

// member is a buraksezer/consistent member named by its shard ID.
type member string

func (m member) String() string { return string(m) }

// xxhasher is buraksezer/consistent's Hasher over xxhash64.
type xxhasher struct{}

func (xxhasher) Sum64(data []byte) uint64 { return xxhash.Sum64(data) }

// sinkShard keeps the located shards alive so the compiler cannot drop the
// lookups.
var sinkShard string

// BenchmarkShardLocate looks up the shard of a key among 16 shards:
// strata's default placement (xxhash64 to one of 4096 virtual partitions,
// then the partition map, through a Table as a resharding server would use
// it), xxhash64 and the jump hash directly over the 16 shards (the floor
// named in the issue, with no way to move single partitions), and
// buraksezer/consistent with 7919 partitions and bounded loads.
func BenchmarkShardLocate(b *testing.B) {
	mask := len(shardKeys) - 1
	b.Run("strata", func(b *testing.B) {
		m, err := shard.NewMap(shardMembers, 0)
		if err != nil {
			b.Fatal(err)
		}
		t, err := shard.NewTable(m)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		var s string
		i := 0
		for b.Loop() {
			s, err = t.Locate(shardKeys[i&mask])
			if err != nil {
				b.Fatal(err)
			}
			i++
		}
		sinkShard = s
	})
	b.Run("jump", func(b *testing.B) {
		b.ReportAllocs()
		var s string
		i := 0
		for b.Loop() {
			s = shardMembers[jumpFloor(shardKeys[i&mask], int64(len(shardMembers)))]
			i++
		}
		sinkShard = s
	})
	b.Run("buraksezer-consistent", func(b *testing.B) {
		members := make([]consistent.Member, len(shardMembers))
		for i, id := range shardMembers {
			members[i] = member(id)
		}
		c := consistent.New(members, consistent.Config{
			PartitionCount:    7919,
			ReplicationFactor: 20,
			Load:              1.25,
			Hasher:            xxhasher{},
		})
		b.ReportAllocs()
		var s string
		i := 0
		for b.Loop() {
			s = c.LocateKey(shardKeys[i&mask]).String()
			i++
		}
		sinkShard = s
	})
}
