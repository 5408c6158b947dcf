package reliability

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/strata-project/strata/engines"
	"github.com/strata-project/strata/internal/testenv"
)

// TestWriteBehindKills kills app servers with SIGKILL during a stream of write-behind writes
// (durable local queues) and restarts them: after recovery every acknowledged write is in the
// database at its latest value.
func TestWriteBehindKills(t *testing.T) {
	needBinary(t)
	c, db := sharedPG.get(t)
	r := testenv.Redis(t, engines.RedisOptions{})
	tp := startTopo(t, topoSpec{shards: pgShards(c, db),
		cache:       map[string]any{"kind": "redis", "addrs": []string{r.Addr()}, "queue_dir": ""},
		collections: map[string]map[string]any{"wb": {"strategy": "write-behind", "consistency": "eventual"}}})
	h := NewHistory(time.Now())
	spec := loadSpec{base: tp.lbURL, apiKey: tp.keyRW, coll: "wb", clients: 8, keys: 4, reads: 0.1,
		writes: []Kind{Put}, dur: scale(8*time.Second, 90*time.Second), maxOps: 1 << 30, timeout: 5 * time.Second, seed: 7}
	seedKeys(t, h, spec)
	loadStart := h.Now()
	done := make(chan struct{})
	go func() { defer close(done); runLoad(context.Background(), h, spec) }()
	kills := scale(4, 20)
	rng := rand.New(rand.NewPCG(7, 7))
	var recov time.Duration = -1
	for range kills {
		time.Sleep(scale(800*time.Millisecond, 3*time.Second))
		a := tp.apps[rng.IntN(len(tp.apps))]
		a.kill()
		restart := time.Now()
		if err := a.start(20 * time.Second); err != nil {
			t.Fatal(err)
		}
		recov = max(recov, time.Since(restart))
	}
	<-done
	ops := filter(h.Ops(), func(o Op) bool { return o.Start >= loadStart })
	acked := len(filter(ops, func(o Op) bool { return o.Write() && o.OK() }))
	// Every queue drains into the database; wait for it, then count what is missing.
	store := openStore(t, c.Primary.Addr(), db)
	var missing int
	drain := waitUntil(30*time.Second, func() bool {
		missing = 0
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for key, allowed := range lastAcked(h.Ops()) {
			d, err := store.Get(ctx, "wb", key)
			if err != nil || !containsValue(allowed, docValue(d.Body)) {
				missing++
			}
		}
		return missing == 0
	})
	lost := 0
	if drain < 0 {
		// Each app server has its own queue; the writes' stamps make the newest write of a
		// key win whichever server applies last.
		lost = missing
		t.Errorf("30s after the last restart, %d keys do not hold their last acknowledged write-behind value", lost)
	}
	row := Summarize(fmt.Sprintf("write-behind, %d app server SIGKILLs", kills), ops)
	row.Detect, row.Recover = -1, recov
	row.Note = fmt.Sprintf("acknowledged writes %d; keys not at their last acknowledged value after draining: %d (drained in %s)", acked, lost, ms(drain))
	addRow(t, row)
}

func containsValue(vs []int64, v int64) bool {
	for _, x := range vs {
		if x == v {
			return true
		}
	}
	return false
}
