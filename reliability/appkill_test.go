package reliability

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/strata-project/strata/docstore"
	"github.com/strata-project/strata/engines"
)

// pgShards returns the one-shard store spec of a cluster's database.
func pgShards(c *engines.PostgresCluster, db string) []shardSpec {
	s := shardSpec{name: "a", primary: c.Primary.Addr(), db: db}
	for _, r := range c.Replicas {
		s.replicas = append(s.replicas, r.Addr())
	}
	return []shardSpec{s}
}

// checkNothingLost reads every written key from the store directly and checks that it holds
// the last acknowledged value, or a later one whose write had no answer.
func checkNothingLost(t *testing.T, store docstore.Store, coll string, ops []Op) int {
	t.Helper()
	lost := 0
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for key, allowed := range lastAcked(ops) {
		d, err := store.Get(ctx, coll, key)
		got := int64(-1)
		if err == nil {
			got = docValue(d.Body)
		} else if !errors.Is(err, docstore.ErrNotFound) {
			t.Fatalf("read %s from the database: %v", key, err)
		}
		if !slices.Contains(allowed, got) {
			lost++
			if lost <= 5 {
				t.Errorf("key %s: the database holds %d; acknowledged (and later unanswered) writes: %v", key, got, allowed)
			}
		}
	}
	return lost
}

// TestAppServerKilled kills one of three app servers under load (SIGKILL), then restarts it.
// No GET and no keyed PUT may fail; a write without Idempotency-Key may fail only if it was
// in flight when the server died; every acknowledged write is in the database.
func TestAppServerKilled(t *testing.T) {
	c, db := sharedPG.get(t)
	tp := startTopo(t, topoSpec{shards: pgShards(c, db), collections: map[string]map[string]any{"docs": {"consistency": "strong"}}})
	h := NewHistory(time.Now())
	spec := loadSpec{base: tp.lbURL, apiKey: tp.keyRW, coll: "docs", clients: 8, keys: 4, reads: 0.6,
		writes: []Kind{Put, PutKeyed, Patch}, dur: scale(5*time.Second, 40*time.Second), maxOps: 100000,
		timeout: 5 * time.Second, seed: 1}
	seedKeys(t, h, spec)
	loadStart := h.Now()
	done := make(chan struct{})
	go func() { defer close(done); runLoad(context.Background(), h, spec) }()

	victim := tp.apps[1]
	kills := scale(1, 4)
	type killWindow struct{ from, to time.Duration }
	var windows []killWindow
	var detect, recov []time.Duration
	var inflightAtKill int64
	for k := range kills {
		time.Sleep(scale(1500*time.Millisecond, 5*time.Second)) // let load run between faults
		for _, s := range tp.lb.Status() {
			if s.Address == victim.addr {
				inflightAtKill += s.Inflight
			}
		}
		from := h.Now()
		victim.kill()
		to := h.Now()
		windows = append(windows, killWindow{from, to})
		detect = append(detect, waitUntil(5*time.Second, func() bool { return !tp.backendUp(victim.addr) }))
		time.Sleep(scale(500*time.Millisecond, 2*time.Second)) // the server stays down a while
		restart := time.Now()
		if err := victim.start(20 * time.Second); err != nil {
			t.Fatalf("restart %d: %v", k, err)
		}
		recov = append(recov, time.Since(restart)+waitUntil(10*time.Second, func() bool { return tp.backendUp(victim.addr) }))
	}
	<-done
	ops := filter(h.Ops(), func(o Op) bool { return o.Start >= loadStart })

	inWindow := func(o Op, grace time.Duration) bool {
		for i, w := range windows {
			g := time.Duration(0)
			if grace > 0 && detect[i] > 0 {
				g = detect[i]
			}
			if o.Start <= w.to+g && o.End >= w.from {
				return true
			}
		}
		return false
	}
	failedGets := filter(ops, func(o Op) bool { return o.Kind == Get && !o.OK() })
	failedKeyed := filter(ops, func(o Op) bool { return o.Kind == PutKeyed && !o.OK() })
	failedUnkeyed := filter(ops, func(o Op) bool { return (o.Kind == Put || o.Kind == Patch) && !o.OK() })
	inFlight := len(filter(ops, func(o Op) bool { return (o.Kind == Put || o.Kind == Patch) && inWindow(o, 0) }))
	if len(failedGets) > 0 {
		t.Errorf("%d GETs failed (want 0): %s%s", len(failedGets), statuses(failedGets), firstErrs(failedGets, 3))
	}
	// A keyed PUT whose claim the killed server held is busy (409) until the claim's lease
	// expires (timeouts.idempotency_lease, 4 s here): its retries, within the client's 5 s,
	// then run it.
	keyedBlocked := 0
	for _, o := range failedKeyed {
		if o.Status == 409 && inWindow(o, 0) {
			keyedBlocked++
		}
		t.Errorf("a PUT with Idempotency-Key failed: %+v", o)
	}
	// Writes without a key may fail when in flight on the killed server. Those sent after the
	// kill, before the balancer noticed, are a balancer bug: it writes them on a pooled
	// connection the dead server's kernel had already closed, then cannot retry them.
	afterKill := 0
	for _, o := range failedUnkeyed {
		switch {
		case inWindow(o, 0):
		case inWindow(o, 1):
			afterKill++
			knownBug(t, "write without Idempotency-Key sent %s after the kill ended failed with %d: the balancer reused a connection the dead server had closed: %+v",
				o.Start-windows[0].to, o.Status, o)
		default:
			t.Errorf("a write without Idempotency-Key failed although it was not in flight at a kill: %+v (kills %v)", o, windows)
		}
	}
	if n := len(failedUnkeyed) - afterKill; n > inFlight {
		t.Errorf("%d writes without Idempotency-Key failed, more than the %d in flight at the kills", n, inFlight)
	}
	lost := checkNothingLost(t, openStore(t, c.Primary.Addr(), db), "docs", h.Ops())
	row := Summarize("app server killed (1 of 3)", ops)
	row.Detect, row.Recover = slices.Max(detect), slices.Max(recov)
	row.Note = fmt.Sprintf("%d kill(s); failed GETs %d; keyed PUTs failed %d (409, claim held by the dead server); unkeyed writes failed %d of %d in flight (lb counted %d) + %d sent after the kill; lost %d",
		kills, len(failedGets), keyedBlocked, len(failedUnkeyed)-afterKill, inFlight, inflightAtKill, afterKill, lost)
	addRow(t, row)
	if slices.Contains(detect, -1) {
		t.Errorf("the balancer did not mark the killed server down within 5s")
	}
}
