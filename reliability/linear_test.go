package reliability

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/strata-project/strata/docstore"
	"github.com/strata-project/strata/engines"
	"github.com/strata-project/strata/internal/testenv"
	"github.com/strata-project/strata/lb"
)

// TestLinearizableUnderFaults runs 8 clients on shared keys through the whole topology
// (strong consistency) for every cache strategy over every shared store (a Redis server, a
// Redis Cluster, Memcached, the Strata cache node) while one app server is killed and the
// cache is killed and comes back: porcupine must find no violation. The strategies of one
// store run side by side (one collection each, one history each) under the same faults;
// strategy none, which does not use the cache, runs over Redis only.
func TestLinearizableUnderFaults(t *testing.T) {
	needBinary(t)
	for _, kind := range cacheKinds {
		t.Run(kind, func(t *testing.T) { testLinearizableUnderFaults(t, kind) })
	}
}

func testLinearizableUnderFaults(t *testing.T, kind string) {
	c, db := sharedPG.get(t)
	sc := startCache(t, kind)
	colls := []string{"aside", "wt"}
	if kind == "redis" {
		colls = append([]string{"none"}, colls...)
	}
	collections := map[string]map[string]any{
		"none":  {"consistency": "strong"},
		"aside": {"strategy": "cache-aside", "consistency": "strong"},
		"wt":    {"strategy": "write-through", "consistency": "strong"},
	}
	tp := startTopo(t, topoSpec{shards: pgShards(c, db), env: sc.env,
		// Invalidations that could not reach the cache are kept on disk, so that a killed app
		// server still delivers them after its restart (without pending_dir they are lost with
		// the process, and a persistent cache may serve the old value: porcupine catches it).
		cache:       sc.cacheSection(map[string]any{"pending_dir": ""}),
		collections: collections})
	hists := map[string]*History{}
	specs := map[string]loadSpec{}
	for _, coll := range colls {
		h := NewHistory(time.Now())
		spec := loadSpec{base: tp.lbURL, apiKey: tp.keyRW, coll: coll, clients: 8, keys: 8, shared: true, reads: 0.6,
			writes: []Kind{Put, PutKeyed}, dur: 10 * time.Minute, maxOps: 1 << 30, timeout: 5 * time.Second, seed: 20}
		if coll != "none" {
			// In a Redis Cluster, half the keys live on the master that is killed: the others
			// stay served by the cache while it fails over.
			spec.prefix = sc.keyPrefix(t, coll, spec.keys, spec.keys/2)
		}
		seedKeys(t, h, spec)
		if coll != "none" {
			sc.checkPlacement(t, spec)
		}
		hists[coll], specs[coll] = h, spec
	}
	// The loads run until a while after the last fault has healed, so that every fault and
	// every recovery is under load.
	loadCtx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	var wg sync.WaitGroup
	for _, coll := range colls {
		wg.Add(1)
		go func() { defer wg.Done(); runLoad(loadCtx, hists[coll], specs[coll]) }()
	}
	// What happened when, for failure messages (as offsets in each history).
	type event struct {
		at   time.Time
		what string
	}
	var events []event
	mark := func(what string) { events = append(events, event{time.Now(), what}) }
	cycles := scale(1, 3)
	for range cycles {
		time.Sleep(scale(time.Second, 8*time.Second))
		mark("kill app2")
		tp.apps[2].kill()
		mark("app2 dead, kill the cache")
		sc.kill(t)
		time.Sleep(scale(time.Second, 5*time.Second)) // the outage (a cluster fails over meanwhile)
		mark("cache back from")
		sc.back(t)
		sc.rejoin(t)
		mark("cache back, start app2")
		if err := tp.apps[2].start(20 * time.Second); err != nil {
			t.Fatal(err)
		}
		mark("app2 ready")
	}
	time.Sleep(scale(time.Second, 5*time.Second))
	stopLoad()
	wg.Wait()
	for _, coll := range colls {
		t.Run(coll, func(t *testing.T) {
			ops := hists[coll].Ops()
			what := coll + " over " + sc.name + " ("
			var kills [][2]time.Duration
			for i, e := range events {
				if i > 0 {
					what += ", "
				}
				what += fmt.Sprintf("%s %.3fs", e.what, hists[coll].Since(e.at).Seconds())
				if e.what == "kill app2" {
					kills = append(kills, [2]time.Duration{hists[coll].Since(e.at), hists[coll].Since(events[i+1].at)})
				}
			}
			what += ")"
			res, n := checkLinearizable(t, what, ops, scale(60*time.Second, 3*time.Minute),
				linCheck{served: tp.servedBy(hists[coll], coll), known: sc.illegalKnown, kills: kills})
			row := Summarize(fmt.Sprintf("linearizability, strong, %s over %s, app kill + cache kill", coll, sc.name), ops)
			row.Note = fmt.Sprintf("porcupine %s over %d ops, 8 clients, 8 keys, %d cycle(s)", res, n, cycles)
			addRow(t, row)
		})
	}
}

// linCheck says how checkLinearizable judges and explains a history.
type linCheck struct {
	// served names what served an operation (see topo.servedBy); nil: unknown.
	served func(Op) string
	// known, when not empty, is a known bug of the store that makes its histories not
	// linearizable: any Illegal verdict goes through knownBug.
	known string
	// kills are the intervals (offsets in the history) in which an app server was killed:
	// from the kill signal to the process gone.
	kills [][2]time.Duration
}

// checkLinearizable checks a history with porcupine (Linearizable) and fails the test unless
// the verdict is Ok. An Illegal verdict's message holds what Explain and FirstViolation find
// (the first read that cannot be linearized and the operations on its key just before, each
// followed by what served it); it is reported as a known bug when c.known says so, or when
// the first read that cannot be linearized returned the value of an unkeyed PUT that was in
// flight when an app server was killed (see latePut) or has the shape of the window the
// server documents (see bypassWindow).
func checkLinearizable(t *testing.T, what string, ops []Op, timeout time.Duration, c linCheck) (porcupine.CheckResult, int) {
	t.Helper()
	res, n := Linearizable(ops, timeout)
	switch {
	case res == porcupine.Ok:
	case res == porcupine.Illegal:
		bad, lines, found := firstViolation(ops)
		why := violation(ops, lines, c.served)
		late := ""
		if found {
			late = latePut(ops, bad, c.kills)
		}
		if found && late == "" {
			late = bypassWindow(ops, bad)
		}
		switch {
		case c.known != "":
			knownBug(t, "%s: history of %d operations is not linearizable (%s):%s", what, n, c.known, why)
		case late != "":
			knownBug(t, "%s: history of %d operations is not linearizable (%s):%s", what, n, late, why)
		default:
			t.Errorf("%s: history of %d operations is not linearizable:%s", what, n, why)
		}
	default:
		t.Errorf("%s: history of %d operations: %s (want Ok)", what, n, res)
	}
	return res, n
}

// firstViolation runs FirstViolation and finds the operation of its first line, the first
// read that cannot be linearized.
func firstViolation(ops []Op) (bad Op, lines []string, found bool) {
	lines, ok := FirstViolation(ops, 300*time.Millisecond, time.Minute)
	if !ok {
		return Op{}, nil, false
	}
	if _, d, ok := strings.Cut(lines[0], ": first read that cannot be linearized: "); ok {
		for _, o := range ops {
			if describeOp(o) == d {
				return o, lines, true
			}
		}
	}
	return Op{}, lines, false
}

// latePut describes the known bug behind a violation whose first bad read returned the value
// of an unkeyed PUT that was in flight when an app server was killed, or returns "": the
// balancer retries such a PUT on another app server (PUT is idempotent), and the value took
// effect again after later writes of the key had been acknowledged.
func latePut(ops []Op, bad Op, kills [][2]time.Duration) string {
	for _, w := range ops {
		if w.Kind != Put || w.Key != bad.Key || w.Value != bad.Value {
			continue
		}
		for _, k := range kills {
			if w.Start <= k[1] && k[0] <= w.End {
				return fmt.Sprintf("the read returned the value of %s, an unkeyed PUT in flight when an app server was killed at %v, after later writes of %s were acknowledged",
					strings.Join(strings.Fields(describeOp(w)), " "), k[0].Round(time.Millisecond), w.Key)
			}
		}
	}
	return ""
}

// bypassWindow describes the window package server documents, when the first bad read has
// its shape, or returns "": an app server whose cache breaker is still open reads the store
// and can return a write that is not yet acknowledged, while another app server serves the
// older value from the cache until that write's invalidation lands. The bad read must
// return no value older than a write acknowledged before it began (that would be a stale
// read, not this window), and an earlier read that bypassed the cache must have returned
// a write still unacknowledged when the bad read began.
func bypassWindow(ops []Op, bad Op) string {
	var writes []Op
	var wb *Op
	for i, o := range ops {
		if o.Key == bad.Key && o.Write() && !o.NotApplied {
			writes = append(writes, o)
			if o.Value == bad.Value {
				wb = &ops[i]
			}
		}
	}
	if wb == nil {
		return ""
	}
	for _, w := range writes {
		if w.Value != bad.Value && w.OK() && wb.OK() && w.Start > wb.End && w.End < bad.Start {
			return "" // overwritten by an acknowledged write before the read began
		}
	}
	for _, r := range ops {
		if r.Key != bad.Key || r.Kind != Get || !r.OK() || r.End >= bad.Start || r.Value == bad.Value || !strings.Contains(r.Served, "bypass") {
			continue
		}
		for _, w := range writes {
			if w.Value == r.Value && (!w.OK() || w.End > bad.Start) {
				return fmt.Sprintf("the window the server documents: %s bypassed the cache and saw %s, not acknowledged yet when %s read the older value",
					strings.Join(strings.Fields(describeOp(r)), " "), strings.Join(strings.Fields(describeOp(w)), " "), strings.Join(strings.Fields(describeOp(bad)), " "))
			}
		}
	}
	return ""
}

// violation describes why an illegal history is illegal, for a failure message: Explain's
// lines, then FirstViolation's (lines), each operation followed by what served it.
func violation(ops []Op, lines []string, served func(Op) string) string {
	var b strings.Builder
	for _, e := range Explain(ops, 3) {
		b.WriteString("\n" + e)
	}
	if lines == nil {
		return b.String() + "\n(no single key is illegal on its own)"
	}
	byLine := map[string]Op{}
	for _, o := range ops {
		byLine[describeOp(o)] = o
	}
	for _, l := range lines {
		b.WriteString("\n" + l)
		desc := strings.TrimSpace(l)
		if _, d, ok := strings.Cut(l, ": first read that cannot be linearized: "); ok {
			desc = d
		}
		if o, ok := byLine[desc]; ok && served != nil {
			b.WriteString("  <- " + served(o))
		}
	}
	return b.String()
}

// naiveAside is the seed's cache-aside, as a tiny HTTP app server speaking the same API:
// a read that misses loads the row and sets it in the cache without any guard, a write
// updates the row and then deletes the cache entry. A reader that missed can put an old row
// back after a writer's delete (the stale set); the pause widens that window as any GC pause
// or slow network would.
type naiveAside struct {
	store docstore.Store
	redis *engines.Redis
	pause time.Duration
}

func (n *naiveAside) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:]
	ctx := r.Context()
	switch r.Method {
	case http.MethodGet:
		if v, err := n.redis.Do(ctx, "GET", "naive:"+id); err == nil && v != nil {
			w.Header().Set("X-Cache", "hit")
			fmt.Fprintf(w, `{"n":%s}`, toString(v))
			return
		}
		d, err := n.store.Get(ctx, "naive", id)
		if errors.Is(err, docstore.ErrNotFound) {
			http.Error(w, `{"type":"not-found"}`, http.StatusNotFound)
			return
		} else if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		time.Sleep(n.pause) // between reading the row and filling the cache
		v := strconv.FormatInt(docValue(d.Body), 10)
		n.redis.Do(ctx, "SET", "naive:"+id, v)
		fmt.Fprintf(w, `{"n":%s}`, v)
	case http.MethodPut:
		var body strings.Builder
		buf := make([]byte, 512)
		k, _ := r.Body.Read(buf)
		body.Write(buf[:k])
		if _, err := n.store.Put(ctx, "naive", id, []byte(body.String())); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		n.redis.Do(ctx, "DEL", "naive:"+id)
		w.WriteHeader(http.StatusOK)
	}
}

func toString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case []byte:
		return string(x)
	}
	return fmt.Sprint(v)
}

// TestNaiveCacheAsideCaught runs the seed's naive cache-aside through the same load and
// checker: porcupine must find the stale reads it serves.
func TestNaiveCacheAsideCaught(t *testing.T) {
	c, db := sharedPG.get(t)
	r := testenv.Redis(t, engines.RedisOptions{})
	store := openStore(t, c.Primary.Addr(), db)
	var backends []lb.BackendConfig
	for range 3 {
		srv := &http.Server{Handler: &naiveAside{store: store, redis: r, pause: 5 * time.Millisecond}}
		ln := listen(t)
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		backends = append(backends, lb.BackendConfig{Addr: ln.Addr().String()})
	}
	_, url := startLB(t, lb.Config{Backends: backends, Health: lb.HealthConfig{Disabled: true}, Logger: quietLogger()})
	caught := false
	var res porcupine.CheckResult
	var n, rounds int
	for rounds = 1; rounds <= 5 && !caught; rounds++ {
		h := NewHistory(time.Now())
		spec := loadSpec{base: url, apiKey: "unused", coll: "naive", clients: 8, keys: 2, shared: true, reads: 0.7,
			writes: []Kind{Put}, dur: 2 * time.Second, maxOps: 1 << 30, timeout: 5 * time.Second, seed: uint64(30 + rounds), prefix: fmt.Sprintf("r%d", rounds)}
		seedKeys(t, h, spec)
		runLoad(context.Background(), h, spec)
		res, n = Linearizable(h.Ops(), 30*time.Second)
		caught = res == porcupine.Illegal
	}
	if !caught {
		t.Fatalf("the checker did not catch the naive cache-aside in %d rounds (last verdict %s over %d ops)", rounds-1, res, n)
	}
	addRow(t, Row{Scenario: "naive seed cache-aside (reference)", Attempted: n, Detect: -1, Recover: -1,
		Note: fmt.Sprintf("porcupine %s after %d round(s): caught, as it must be", res, rounds-1)})
}
