package cache_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/strata-project/strata/cache"
	"github.com/strata-project/strata/cache/redisstore"
	"github.com/strata-project/strata/internal/testenv"
)

// kvInput is one operation on the register of a key; an absent key reads as "".
type kvInput struct {
	write bool
	key   string
	value string
}

// kvModel is a set of independent registers, one per key.
var kvModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		for _, op := range history {
			k := op.Input.(kvInput).key
			byKey[k] = append(byKey[k], op)
		}
		var out [][]porcupine.Operation
		for _, ops := range byKey {
			out = append(out, ops)
		}
		return out
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		in := input.(kvInput)
		if in.write {
			return true, in.value
		}
		return output.(string) == state.(string), state
	},
	DescribeOperation: func(input, output any) string {
		in := input.(kvInput)
		if in.write {
			return fmt.Sprintf("put(%s, %q)", in.key, in.value)
		}
		return fmt.Sprintf("get(%s) -> %q", in.key, output)
	},
}

// recorder collects a history with a logical clock: every call and return takes the next
// tick, so real-time order is preserved exactly.
type recorder struct {
	clock atomic.Int64
	mu    sync.Mutex
	ops   []porcupine.Operation
}

func (r *recorder) do(client int, in kvInput, fn func() string) {
	call := r.clock.Add(1)
	out := fn()
	ret := r.clock.Add(1)
	r.mu.Lock()
	r.ops = append(r.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret})
	r.mu.Unlock()
}

func (r *recorder) check(t *testing.T) porcupine.CheckResult {
	t.Helper()
	return porcupine.CheckOperationsTimeout(kvModel, r.ops, 60*time.Second)
}

// strategy is a read path and a write path over one cache.
type strategy struct {
	name  string
	read  func(c *cache.Cache, src cache.Source) func(context.Context, string) ([]byte, error)
	write func(c *cache.Cache) func(context.Context, string, []byte) (int64, error)
}

var strategies = []strategy{
	{"cache-aside",
		func(c *cache.Cache, src cache.Source) func(context.Context, string) ([]byte, error) {
			return func(ctx context.Context, k string) ([]byte, error) { return c.GetFunc(ctx, k, src.Load) }
		},
		func(c *cache.Cache) func(context.Context, string, []byte) (int64, error) { return c.WriteAround }},
	{"write-through",
		func(c *cache.Cache, _ cache.Source) func(context.Context, string) ([]byte, error) { return c.Get },
		func(c *cache.Cache) func(context.Context, string, []byte) (int64, error) { return c.WriteThrough }},
}

// sharedStore is a store the linearizability test runs over, with a way to make it lose
// everything, as a restart without persistence does. Add a store here to check it.
type sharedStore struct {
	name string
	// open returns the store and a function that empties it, as a restart without
	// persistence does (the test adds the outage around it).
	open func(t *testing.T) (cache.Store, func())
}

var linearizabilityStores = []sharedStore{
	{"memstore", func(t *testing.T) (cache.Store, func()) {
		s := newMem(t)
		return s, s.Clear
	}},
	{"redis", func(t *testing.T) (cache.Store, func()) {
		r := testenv.SharedRedis(t)
		s, err := redisstore.New(redisstore.Config{Addrs: []string{r.Addr()}, Timeout: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s, func() {
			if _, err := r.Do(context.Background(), "FLUSHALL"); err != nil {
				t.Errorf("FLUSHALL: %v", err)
			}
		}
	}},
}

// TestLinearizable: 8 clients read and write 3 keys through each strategy over each store,
// while the store restarts (loses every entry) three times; porcupine finds the history
// linearizable. The early-refresh runs read with a clock an hour ahead, so that every hit on
// an entry with a load cost (a fill's, not a write-through's) also starts a background
// refresh of its key.
func TestLinearizable(t *testing.T) {
	var refreshed uint64
	for _, st := range linearizabilityStores {
		for _, sg := range strategies {
			for _, early := range []bool{false, true} {
				name := st.name + "/" + sg.name
				if early {
					name += "/early-refresh"
				}
				t.Run(name, func(t *testing.T) { refreshed += testLinearizable(t, st, sg, early) })
			}
		}
	}
	if refreshed == 0 && !t.Failed() {
		t.Fatal("no early refresh was stored in any run: the early-refresh runs checked nothing more")
	}
}

// testLinearizable runs one history and returns the number of early refreshes stored.
func testLinearizable(t *testing.T, st sharedStore, sg strategy, early bool) uint64 {
	src := newFakeSource()
	store, wipe := st.open(t)
	// A restart: the store answers nothing for a moment (callers see errors), then
	// comes back empty, tombstones included.
	fl := &flakyStore{Store: store}
	cfg := cache.Config{Store: fl, Source: src}
	if early {
		cfg.EarlyRefresh = 1
		cfg.Now = func() time.Time { return time.Now().Add(time.Hour) }
	}
	c := newCache(t, cfg)
	restart := func() {
		before := c.Stats().StoreErrors
		fl.down.Store(true)
		for c.Stats().StoreErrors == before {
			time.Sleep(100 * time.Microsecond) // polling: until a call has seen the outage
		}
		for fl.calls.Load() != 0 {
			time.Sleep(100 * time.Microsecond) // polling: calls that got in before the outage land
		}
		wipe()
		fl.down.Store(false)
	}
	read, write := sg.read(c, src), sg.write(c)
	var rec recorder
	const clients, opsPerClient = 8, 300
	keys := []string{"a", "b", "c"}
	var wg sync.WaitGroup
	var done atomic.Int64
	for id := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(id), 7))
			ctx := context.Background()
			for i := range opsPerClient {
				k := keys[rng.IntN(len(keys))]
				if rng.IntN(4) == 0 {
					v := fmt.Sprintf("%d-%d", id, i)
					rec.do(id, kvInput{write: true, key: k, value: v}, func() string {
						if _, err := write(ctx, k, []byte(v)); err != nil {
							t.Errorf("write: %v", err)
						}
						return ""
					})
				} else {
					rec.do(id, kvInput{key: k}, func() string {
						got, err := read(ctx, k)
						if err != nil && !errors.Is(err, cache.ErrNotFound) {
							t.Errorf("read: %v", err)
						}
						return string(got)
					})
				}
				done.Add(1)
			}
		}()
	}
	// Restart the store three times during the run.
	for r := 1; r <= 3; r++ {
		for done.Load() < int64(r*clients*opsPerClient/4) {
			time.Sleep(time.Millisecond) // polling
		}
		restart()
	}
	wg.Wait()
	if res := rec.check(t); res != porcupine.Ok {
		t.Fatalf("history of %d operations is %v, want linearizable", len(rec.ops), res)
	}
	if s := c.Stats(); s.Hits == 0 || s.Loads == 0 {
		t.Fatalf("stats %+v: the run did not exercise both hits and loads", s)
	}
	return c.Stats().RefreshesStored
}

// TestLinearizabilityCatchesNaive: the stale-set schedule, recorded as a history, is caught
// by the checker for the seed's cache-aside and passes for Strata's.
func TestLinearizabilityCatchesNaive(t *testing.T) {
	schedule := func(src *fakeSource, get func(context.Context, string) ([]byte, error),
		write func(context.Context, string, []byte) error) *recorder {
		ctx := context.Background()
		var rec recorder
		rec.do(0, kvInput{write: true, key: "k", value: "v1"}, func() string { write(ctx, "k", []byte("v1")); return "" })
		loaded, proceed := make(chan struct{}), make(chan struct{})
		var once sync.Once
		src.setHook(func(string) { once.Do(func() { close(loaded); <-proceed }) })
		readerDone := make(chan struct{})
		go func() {
			defer close(readerDone)
			rec.do(1, kvInput{key: "k"}, func() string { v, _ := get(ctx, "k"); return string(v) })
		}()
		<-loaded
		rec.do(2, kvInput{write: true, key: "k", value: "v2"}, func() string { write(ctx, "k", []byte("v2")); return "" })
		close(proceed)
		<-readerDone
		src.setHook(nil)
		rec.do(3, kvInput{key: "k"}, func() string { v, _ := get(ctx, "k"); return string(v) })
		return &rec
	}
	t.Run("naive", func(t *testing.T) {
		src := newFakeSource()
		n := newNaive(src)
		write := func(ctx context.Context, k string, v []byte) error { return n.Write(ctx, k, v) }
		if res := schedule(src, n.Get, write).check(t); res != porcupine.Illegal {
			t.Fatalf("naive reference: checker says %v, want Illegal", res)
		}
	})
	t.Run("strata", func(t *testing.T) {
		src := newFakeSource()
		c := newCache(t, cache.Config{Store: newMem(t), Source: src})
		write := func(ctx context.Context, k string, v []byte) error { _, err := c.WriteAround(ctx, k, v); return err }
		if res := schedule(src, c.Get, write).check(t); res != porcupine.Ok {
			t.Fatalf("strata: checker says %v, want Ok", res)
		}
	})
}
