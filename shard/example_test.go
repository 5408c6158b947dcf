package shard_test

import (
	"errors"
	"fmt"

	"github.com/strata-project/strata/shard"
)

// A sharded service locates keys through a Table, grows from three shards to
// four by moving partitions one at a time, and stores the map.
func Example() {
	m, err := shard.NewMap([]string{"db-a", "db-b", "db-c"}, 0)
	if err != nil {
		panic(err)
	}
	tab, err := shard.NewTable(m)
	if err != nil {
		panic(err)
	}
	before, _ := tab.LocateString("user:42")

	plan, err := shard.PlanMoves(tab.Map(), []string{"db-a", "db-b", "db-c", "db-d"})
	if err != nil {
		panic(err)
	}
	for _, mv := range plan {
		// Copy the partition's rows from mv.From to mv.To here, then switch.
		if _, err := tab.Move(mv); err != nil {
			panic(err)
		}
	}
	after, _ := tab.LocateString("user:42")

	fmt.Println("moves:", len(plan), "of", m.Partitions(), "partitions")
	fmt.Println("user:42:", before, "->", after)
	fmt.Println("partitions per shard:", tab.Map().Counts())
	fmt.Println("version:", tab.Map().Version())
	// Output:
	// moves: 1024 of 4096 partitions
	// user:42: db-c -> db-d
	// partitions per shard: map[db-a:1024 db-b:1024 db-c:1024 db-d:1024]
	// version: 1025
}

func ExamplePlanMoves() {
	m, _ := shard.NewMap([]string{"a", "b"}, 6)
	plan, _ := shard.PlanMoves(m, []string{"a", "b", "c"})
	for _, mv := range plan {
		fmt.Println(mv)
	}
	// Output:
	// partition 4: a -> c
	// partition 5: b -> c
}

func ExampleDecodeMap() {
	m, err := shard.DecodeMap([]byte(`{"version":3,"shards":["a","b"],"owners":[0,1,1,0]}`))
	if err != nil {
		panic(err)
	}
	fmt.Println(m.Version(), m.Partitions(), m.Owned("b"))

	_, err = shard.DecodeMap([]byte(`{"version":3,"shards":["a","b"],"owners":[0,2]}`))
	fmt.Println(errors.Is(err, shard.ErrInvalidMap))
	// Output:
	// 3 4 [1 2]
	// true
}

func ExampleNewRing() {
	r, _ := shard.NewRing([]string{"cache-1", "cache-2", "cache-3"}, shard.RingConfig{VirtualNodes: 200})
	s, _ := r.LocateString("session:9f2c")
	fmt.Println(s)
	// Output:
	// cache-2
}

func ExampleNewRendezvous() {
	r, _ := shard.NewRendezvous([]string{"cache-1", "cache-2", "cache-3"})
	s, _ := r.LocateString("session:9f2c")
	fmt.Println(s)
	// Output:
	// cache-3
}

func ExampleBounded() {
	b, _ := shard.NewBounded([]string{"ws-1", "ws-2"}, shard.BoundedConfig{Capacity: 2})
	for _, tenant := range []string{"t1", "t2", "t3", "t4", "t5"} {
		s, err := b.LocateString(tenant)
		fmt.Println(tenant, s, err)
	}
	b.Release("t1")
	s, _ := b.LocateString("t5")
	fmt.Println("t5", s)
	// Output:
	// t1 ws-2 <nil>
	// t2 ws-1 <nil>
	// t3 ws-1 <nil>
	// t4 ws-2 <nil>
	// t5  shard: all shards full: 2 shards hold 2 keys each
	// t5 ws-2
}

func ExampleJumpHash() {
	h := shard.HashString("user:42")
	fmt.Println(shard.JumpHash(h, 10), shard.JumpHash(h, 11))
	// Output:
	// 5 5
}
