package reliability

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/strata-project/strata/docstore"
	"github.com/strata-project/strata/internal/testenv"
	"github.com/strata-project/strata/shard"
)

// replicaUsable reads strata_replica_usable for a node of shard a from app server 0.
func (tp *topo) replicaUsable(node string) (bool, bool) {
	v, ok := tp.apps[0].metric(`strata_replica_usable{node="` + node + `",shard="a"}`)
	return v == 1, ok
}

// TestReplicaKilledAndLagging kills a replica, restarts it, then pauses the other's replay,
// under a load of session-mode clients: no read fails and no client misses its own write.
func TestReplicaKilledAndLagging(t *testing.T) {
	needBinary(t)
	c := testenv.Postgres(t, 2)
	if err := c.CreateDatabase(callCtx(t), "rel"); err != nil {
		t.Fatal(err)
	}
	tp := startTopo(t, topoSpec{shards: pgShards(c, "rel"), collections: map[string]map[string]any{"sess": {"consistency": "session"}}})
	h := NewHistory(time.Now())
	spec := loadSpec{base: tp.lbURL, apiKey: tp.keyRW, coll: "sess", clients: 8, keys: 3, reads: 0.7, session: true,
		writes: []Kind{Put, PutKeyed}, dur: scale(7*time.Second, 60*time.Second), maxOps: 1 << 30, timeout: 5 * time.Second, seed: 2}
	seedKeys(t, h, spec)
	loadStart := h.Now()
	done := make(chan struct{})
	go func() { defer close(done); runLoad(context.Background(), h, spec) }()

	cycles := scale(1, 5)
	var detect, recov time.Duration = -1, -1
	for range cycles {
		time.Sleep(scale(time.Second, 3*time.Second))
		r1, r2 := c.Replicas[0], c.Replicas[1]
		if err := r1.Kill(); err != nil {
			t.Fatal(err)
		}
		detect = max(detect, waitUntil(5*time.Second, func() bool { u, ok := tp.replicaUsable("a-replica1"); return ok && !u }))
		time.Sleep(scale(time.Second, 3*time.Second))
		restart := time.Now()
		if err := r1.Restart(callCtx(t)); err != nil {
			t.Fatal(err)
		}
		recov = max(recov, time.Since(restart)+waitUntil(10*time.Second, func() bool { u, _ := tp.replicaUsable("a-replica1"); return u }))
		if err := r2.PauseReplay(callCtx(t)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(scale(2*time.Second, 5*time.Second))
		if err := r2.ResumeReplay(callCtx(t)); err != nil {
			t.Fatal(err)
		}
	}
	<-done
	ops := filter(h.Ops(), func(o Op) bool { return o.Start >= loadStart })
	failedReads := filter(ops, func(o Op) bool { return o.Kind == Get && !o.OK() })
	if len(failedReads) > 0 {
		t.Errorf("%d reads failed (want 0): %s%s", len(failedReads), statuses(failedReads), firstErrs(failedReads, 3))
	}
	n, first := rywViolations(h.Ops())
	if n > 0 {
		t.Errorf("%d read-your-writes violations in session mode; first: %s", n, first)
	}
	replicaReads := len(filter(ops, func(o Op) bool { return o.Kind == Get && strings.HasPrefix(o.Served, "replica") }))
	row := Summarize("replica killed, then replica lagging (session)", ops)
	row.Detect, row.Recover = detect, recov
	row.Note = fmt.Sprintf("%d cycle(s); failed reads %d; RYW violations %d; %d reads from replicas", cycles, len(failedReads), n, replicaReads)
	addRow(t, row)
}

// shardOf returns the shard ("a" or "b") that the app servers place coll/id on, with the
// map they compute from the shard names.
func shardOf(t *testing.T, coll, id string) string {
	m, err := shard.NewMap([]string{"a", "b"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	owner, err := m.Owner(docstore.PartitionOf(coll, id, m.Partitions()))
	if err != nil {
		t.Fatal(err)
	}
	return owner
}

// TestShardPrimaryKilled kills the primary of one of two shards under load: writes to that
// shard fail within 1 s with 503 and Retry-After, the other shard is unaffected, strong
// reads of the shard fail closed (503) and eventual reads are served by its replicas.
func TestShardPrimaryKilled(t *testing.T) {
	needBinary(t)
	a := testenv.Postgres(t, 2)
	b, dbB := sharedPG.get(t)
	if err := a.CreateDatabase(callCtx(t), "rel"); err != nil {
		t.Fatal(err)
	}
	shards := []shardSpec{pgShards(a, "rel")[0], {name: "b", primary: b.Primary.Addr(), db: dbB}}
	tp := startTopo(t, topoSpec{shards: shards, collections: map[string]map[string]any{
		"strong": {"consistency": "strong"}, "ev": {"consistency": "eventual"}}})
	h := NewHistory(time.Now())
	specs := []loadSpec{
		{base: tp.lbURL, apiKey: tp.keyRW, coll: "strong", clients: 6, keys: 4, reads: 0.5, prefix: "s",
			writes: []Kind{Put, PutKeyed}, dur: scale(8*time.Second, 40*time.Second), maxOps: 1 << 30, timeout: 5 * time.Second, seed: 3},
		{base: tp.lbURL, apiKey: tp.keyRW, coll: "ev", clients: 4, keys: 4, reads: 0.7, prefix: "e",
			writes: []Kind{Put}, dur: scale(8*time.Second, 40*time.Second), maxOps: 1 << 30, timeout: 5 * time.Second, seed: 4},
	}
	for _, s := range specs {
		seedKeys(t, h, s)
	}
	if err := a.WaitReplayed(callCtx(t)); err != nil {
		t.Fatal(err)
	}
	loadStart := h.Now()
	done := make(chan struct{}, len(specs))
	for _, s := range specs {
		go func() { runLoad(context.Background(), h, s); done <- struct{}{} }()
	}
	time.Sleep(scale(1500*time.Millisecond, 5*time.Second))
	killAt := h.Now()
	if err := a.Primary.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := h.Now()
	time.Sleep(scale(1500*time.Millisecond, 10*time.Second))
	readyDuring := 0
	for _, st := range tp.lb.Status() {
		if st.Healthy && st.Ready && !st.Ejected {
			readyDuring++
		}
	}
	time.Sleep(scale(500*time.Millisecond, 5*time.Second))
	restartAt := h.Now()
	if err := a.Primary.Restart(callCtx(t)); err != nil {
		t.Fatal(err)
	}
	// Recovery: how long after the restart a write to the shard is accepted again.
	var probeKey string
	for i := 0; probeKey == ""; i++ {
		if k := fmt.Sprintf("probe%d", i); shardOf(t, "ev", k) == "a" {
			probeKey = k
		}
	}
	probe := &client{n: 99, spec: &loadSpec{base: tp.lbURL, apiKey: tp.keyRW, coll: "ev", timeout: 2 * time.Second}, hc: newClient(2 * time.Second), h: NewHistory(time.Now())}
	recov := waitUntil(30*time.Second, func() bool { return probe.do(context.Background(), Put, probeKey, 1).OK() })
	if recov >= 0 {
		recov += time.Duration(h.Now()-restartAt) - recov
	}
	for range specs {
		<-done
	}
	all := filter(h.Ops(), func(o Op) bool { return o.Start >= loadStart })
	coll := map[string]string{}
	for _, o := range all {
		if _, ok := coll[o.Key]; !ok {
			if o.Key[0] == 's' {
				coll[o.Key] = "strong"
			} else {
				coll[o.Key] = "ev"
			}
		}
	}
	onA := func(o Op) bool { return shardOf(t, coll[o.Key], o.Key) == "a" }
	down := func(o Op) bool { return o.Start > killed && o.End < restartAt }

	// Shard b: nothing fails, ever.
	bFailed := filter(all, func(o Op) bool { return !onA(o) && !o.OK() })
	lb503 := len(filter(bFailed, func(o Op) bool { return o.Status == 503 && o.Retry == "" }))
	if len(bFailed) > 0 {
		// Each shard's writes have their own breaker, /readyz stays ready while any shard
		// answers, and a keyed write's idempotency record lives on its document's shard.
		t.Errorf("%d operations on the healthy shard failed (%d of them the balancer's own 503, %d of 3 app servers ready 1.5s into the outage): %s%s",
			len(bFailed), lb503, readyDuring, statuses(bFailed), firstErrs(bFailed, 2))
	}
	// Shard a while its primary is down: writes get 503 + Retry-After within 1 s.
	var detect time.Duration = -1
	var slowWrites, badWrites, writesDown int
	for _, o := range all {
		if !onA(o) || !o.Write() || !down(o) {
			continue
		}
		writesDown++
		if o.Kind == PutKeyed {
			continue // the client retries it until its deadline, by design
		}
		if o.Status != 503 || o.Retry == "" {
			badWrites++
			if badWrites <= 3 {
				t.Errorf("write to the shard without primary: status %d, Retry-After %q (want 503 with Retry-After): %+v", o.Status, o.Retry, o)
			}
		}
		if o.End-o.Start > time.Second {
			slowWrites++
			if slowWrites <= 3 {
				t.Errorf("write to the shard without primary took %s to fail (want <= 1s)", o.End-o.Start)
			}
		}
		if detect < 0 {
			detect = o.End - killAt
		}
	}
	if writesDown == 0 {
		t.Errorf("no write reached the shard while its primary was down")
	}
	// Reads of shard a while down: eventual ones succeed (replicas); strong ones fail closed.
	var evReadsDown, evFailed, strongReadsDown, strongBad int
	for _, o := range all {
		if !onA(o) || o.Kind != Get || !down(o) {
			continue
		}
		if coll[o.Key] == "ev" {
			evReadsDown++
			if !o.OK() {
				evFailed++
			}
		} else {
			strongReadsDown++
			if !o.OK() && o.Status != 503 {
				strongBad++
			}
		}
	}
	if evFailed > 0 {
		t.Errorf("%d of %d eventual reads of the shard without primary failed (want 0: replicas serve them)", evFailed, evReadsDown)
	}
	if strongBad > 0 {
		t.Errorf("%d strong reads of the shard without primary failed with something else than 503", strongBad)
	}
	if recov < 0 {
		t.Errorf("writes to the shard still refused 30s after its primary restarted")
	}
	lost := checkNothingLost(t, openStore(t, a.Primary.Addr(), "rel"), "strong", filter(h.Ops(), func(o Op) bool { return o.Key[0] == 's' && onA(o) }))
	row := Summarize("shard primary killed (1 of 2 shards)", all)
	row.Detect, row.Recover = detect, recov
	row.Note = fmt.Sprintf("writes to the shard while down %d (without 503+Retry-After %d, >1s %d); other shard failed %d (%d/3 app servers ready); eventual reads while down %d failed %d; strong reads %d; lost %d",
		writesDown, badWrites, slowWrites, len(bFailed), readyDuring, evReadsDown, evFailed, strongReadsDown, lost)
	addRow(t, row)
}

// TestCacheStopped stops the shared cache under load on a strong cache-aside collection, for
// every shared store (a Redis server, a Redis Cluster master, Memcached, the Strata cache
// node): no read fails, every app server's cache breaker opens within 1 s and closes within
// 5 s of the cache's return, and the history stays linearizable.
func TestCacheStopped(t *testing.T) {
	needBinary(t)
	for _, kind := range cacheKinds {
		t.Run(kind, func(t *testing.T) { testCacheStopped(t, kind) })
	}
}

// testCacheStopped runs the cache-stopped scenario over one kind of store. A server (or the
// cache node) is killed and, after a while, restarted empty. In a Redis Cluster, the master
// that serves every key of the load is killed, its replica takes over (the cache's return),
// and the old master is then restarted and rejoins as a replica.
func testCacheStopped(t *testing.T, kind string) {
	c, db := sharedPG.get(t)
	sc := startCache(t, kind)
	tp := startTopo(t, topoSpec{shards: pgShards(c, db), env: sc.env,
		cache:       sc.cacheSection(nil),
		collections: map[string]map[string]any{"cached": {"strategy": "cache-aside", "consistency": "strong"}}})
	h := NewHistory(time.Now())
	spec := loadSpec{base: tp.lbURL, apiKey: tp.keyRW, coll: "cached", clients: 8, keys: 6, shared: true, reads: 0.8,
		writes: []Kind{Put, PutKeyed}, dur: 2 * time.Minute, maxOps: 1 << 30, timeout: 5 * time.Second, seed: 5}
	spec.prefix = sc.keyPrefix(t, spec.coll, spec.keys, spec.keys)
	seedKeys(t, h, spec)
	sc.checkPlacement(t, spec)
	loadStart := h.Now()
	done := make(chan struct{})
	// The load runs until a second after the last cycle, so that every cycle is under load.
	loadCtx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	go func() { defer close(done); runLoad(loadCtx, h, spec) }()
	states := func() []int {
		var out []int
		for _, a := range tp.apps {
			out = append(out, a.breakerState("cache"))
		}
		return out
	}
	all := func(state int) func() bool {
		return func() bool {
			for _, a := range tp.apps {
				if a.breakerState("cache") != state {
					return false
				}
			}
			return true
		}
	}
	watch := watchBreakers(tp)
	defer watch.stop()
	cycles := scale(1, 4)
	var detect, recov, failover, rejoin time.Duration = -1, -1, -1, -1
	var faults []string // when, in the history, for failure messages
	for range cycles {
		time.Sleep(scale(time.Second, 3*time.Second))
		killed := time.Now()
		watch.mark("kill the cache")
		sc.kill(t)
		d := waitUntil(3*time.Second, all(2))
		if d < 0 || d > time.Second {
			msg := fmt.Sprintf("cache breakers open %s after the cache stopped (want <= 1s; -1: not all opened within 3s; states now %v)", d, states())
			if ok, why := watch.late(killed, time.Second, 2); ok {
				knownBug(t, "%s: %s%s", msg, why, watch)
			} else {
				t.Errorf("%s: %s%s", msg, why, watch)
			}
		}
		detect = max(detect, d)
		if sc.cluster == nil {
			time.Sleep(scale(2*time.Second, 6*time.Second)) // the outage
		}
		watch.mark("bring the cache back")
		back := sc.back(t)
		watch.mark("the cache is back")
		faults = append(faults, fmt.Sprintf("killed at %.3fs, back at %.3fs", h.Since(killed).Seconds(), h.Since(back).Seconds()))
		if sc.cluster != nil {
			failover = max(failover, back.Sub(killed))
		}
		rc := waitUntil(15*time.Second, all(0))
		if rc >= 0 {
			rc = time.Since(back) // from the cache's return, its restart included
		}
		if rc < 0 || rc > 5*time.Second {
			msg := fmt.Sprintf("cache breakers closed %s after the cache returned (want <= 5s; -1: not within 15s; states now %v)", rc, states())
			if ok, why := watch.late(back, 5*time.Second, 0); ok {
				knownBug(t, "%s: %s%s", msg, why, watch)
			} else {
				t.Errorf("%s: %s%s", msg, why, watch)
			}
		}
		recov = max(recov, rc)
		if sc.cluster != nil {
			before := states()
			rejoin = max(rejoin, sc.rejoin(t))
			if after := states(); slices.ContainsFunc(after, func(s int) bool { return s != 0 }) {
				for i := range after {
					if before[i] == 0 && after[i] != 0 {
						t.Errorf("the killed master's rejoining (as a replica) opened cache breakers: states %v before, %v after%s", before, after, watch)
						break
					}
				}
			}
		}
	}
	time.Sleep(time.Second) // load after the last recovery, for the record
	stopLoad()
	<-done
	watch.stop()
	ops := filter(h.Ops(), func(o Op) bool { return o.Start >= loadStart })
	failedReads := filter(ops, func(o Op) bool { return o.Kind == Get && !o.OK() })
	if len(failedReads) > 0 {
		t.Errorf("%d reads failed (want 0: served from the database): %s%s", len(failedReads), statuses(failedReads), firstErrs(failedReads, 3))
	}
	res, n := checkLinearizable(t, sc.name+" stopped and back ("+strings.Join(faults, "; ")+")", h.Ops(), scale(30*time.Second, 3*time.Minute), linCheck{served: tp.servedBy(h, spec.coll), known: sc.illegalKnown})
	refused := len(filter(ops, func(o Op) bool { return o.Write() && o.Status == 503 }))
	var scenario, note string
	if sc.cluster != nil {
		scenario = "cache (Redis Cluster master of every key) killed, strong cache-aside"
		note = fmt.Sprintf("; replica took over %s after the kill, old master rejoined in %s", ms(failover), ms(rejoin))
	} else {
		scenario = "cache (" + sc.name + ") stopped, strong cache-aside"
	}
	row := Summarize(scenario, ops)
	row.Detect, row.Recover = detect, recov
	row.Note = fmt.Sprintf("%d cycle(s); failed reads %d; writes refused 503 while open %d; linearizability %s over %d ops%s", cycles, len(failedReads), refused, res, n, note)
	addRow(t, row)
}

// breakerWatch samples the cache breaker of every app server until stopped and keeps a
// timeline of its changes and of the events marked, for failure messages, and the samples,
// to tell why a breaker stayed open.
type breakerWatch struct {
	start   time.Time
	mu      sync.Mutex // protects lines, samples
	lines   []string
	samples [][]breakerSample // per app server
	quit    chan struct{}
	done    chan struct{}
}

// breakerSample is one app server's cache breaker and cached reads at one instant.
type breakerSample struct {
	at    time.Time
	state int // -1 unreadable, 0 closed, 1 half-open, 2 open
	trips int // transitions to open so far
	reads int // cached reads so far
}

func watchBreakers(tp *topo) *breakerWatch {
	w := &breakerWatch{start: time.Now(), samples: make([][]breakerSample, len(tp.apps)),
		quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		type seen struct {
			state, trips int
			lb           string
		}
		last := make([]seen, len(tp.apps))
		for i := range last {
			last[i] = seen{-2, -2, ""}
		}
		names := map[int]string{-1: "unreadable", 0: "closed", 1: "half-open", 2: "open"}
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		reads, lastReads := make([]int, len(tp.apps)), make([]int, len(tp.apps))
		for n := 0; ; n++ {
			if n%10 == 0 {
				var b strings.Builder
				for i := range reads {
					fmt.Fprintf(&b, " app%d %d", i, reads[i]-lastReads[i])
				}
				copy(lastReads, reads)
				w.mark("cached reads in the last 0.5s:%s", b.String())
			}
			for i, a := range tp.apps {
				state, trips, rejected, r := a.cacheBreaker()
				if r >= 0 {
					reads[i] = r
				}
				lbs := "not in the balancer"
				for _, st := range tp.lb.Status() {
					if st.Address == a.addr {
						lbs = fmt.Sprintf("balancer: healthy %v, ready %v, ejected %v, drained %v", st.Healthy, st.Ready, st.Ejected, st.Drained)
					}
				}
				w.mu.Lock()
				w.samples[i] = append(w.samples[i], breakerSample{at: time.Now(), state: state, trips: trips, reads: reads[i]})
				w.mu.Unlock()
				if now := (seen{state, trips, lbs}); now != last[i] {
					last[i] = now
					w.mark("app%d cache breaker %s (trips %d, calls refused %d); %s", i, names[state], trips, rejected, lbs)
				}
			}
			select {
			case <-w.quit:
				return
			case <-tick.C:
			}
		}
	}()
	return w
}

// late looks at the app servers whose cache breaker was never in state want (0 closed, 2
// open) during [from, from+limit] and describes what each served there. explained is true
// when each of them is held back by a known bug: it served no read (a breaker looks at the
// cache only for reads and the app server's own queued invalidations, never for a write it
// refuses while open; and the balancer ejects an app server for those 503s), or, waiting to
// close, one of its probes failed after the cache's return.
func (w *breakerWatch) late(from time.Time, limit time.Duration, want int) (explained bool, desc string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	explained = true
	for i, ss := range w.samples {
		var first, last *breakerSample
		reached := false
		for k := range ss {
			s := &ss[k]
			if s.at.After(from.Add(limit)) {
				break
			}
			if s.at.Before(from) || first == nil {
				first = s
			}
			last = s
			reached = reached || !s.at.Before(from) && s.state == want
		}
		if reached {
			continue
		}
		if first == nil {
			out = append(out, fmt.Sprintf("app%d: no sample", i))
			explained = false
			continue
		}
		reads, failed := last.reads-first.reads, last.trips-first.trips
		out = append(out, fmt.Sprintf("app%d served %d reads and had %d failed probe(s) in the %s", i, reads, failed, limit))
		if reads > 0 && !(want == 0 && failed > 0) {
			explained = false
		}
	}
	return explained, strings.Join(out, "; ")
}

// cacheBreaker reads the state (-1 when unreadable), trips and refused calls of the app
// server's cache breaker, and the reads of its cached collections, from one scrape of its
// metrics.
func (a *appProc) cacheBreaker() (state, trips, rejected, reads int) {
	state, trips, rejected, reads = -1, -1, -1, -1
	c := &http.Client{Timeout: 500 * time.Millisecond}
	resp, err := c.Get("http://" + a.admin + "/metrics")
	if err != nil {
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	reads = 0
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "strata_cache_reads_total{") {
			if f, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64); err == nil {
				reads += int(f)
			}
		}
		for series, dst := range map[string]*int{"strata_breaker_state": &state, "strata_breaker_trips_total": &trips, "strata_breaker_rejected_total": &rejected} {
			if v, ok := strings.CutPrefix(line, series+`{name="cache"} `); ok {
				if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
					*dst = int(f)
				}
			}
		}
	}
	return
}

// mark adds an event to the timeline.
func (w *breakerWatch) mark(format string, args ...any) {
	w.mu.Lock()
	w.lines = append(w.lines, fmt.Sprintf("%8.3fs ", time.Since(w.start).Seconds())+fmt.Sprintf(format, args...))
	w.mu.Unlock()
}

func (w *breakerWatch) stop() {
	select {
	case <-w.quit:
	default:
		close(w.quit)
	}
	<-w.done
}

// String returns the timeline, one event a line.
func (w *breakerWatch) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return "\n  breaker timeline:\n    " + strings.Join(w.lines, "\n    ")
}
