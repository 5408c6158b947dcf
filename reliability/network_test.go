package reliability

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/strata-project/strata/engines"
	"github.com/strata-project/strata/internal/testenv"
)

// toxics runs in-process toxiproxy proxies in front of engines.
type toxics struct {
	t       *testing.T
	srv     *toxiproxy.ApiServer
	proxies map[string]*toxiproxy.Proxy
}

func newToxics(t *testing.T) *toxics {
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	tx := &toxics{t: t, srv: srv, proxies: map[string]*toxiproxy.Proxy{}}
	t.Cleanup(func() {
		for _, p := range tx.proxies {
			p.Stop()
		}
	})
	return tx
}

// proxy starts a proxy named name to upstream and returns its listen address.
func (tx *toxics) proxy(name, upstream string) string {
	p := toxiproxy.NewProxy(tx.srv, name, "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		tx.t.Fatal(err)
	}
	tx.proxies[name] = p
	return p.Listen
}

// add puts a toxic (JSON as toxiproxy's API takes it) on every proxy whose name has prefix.
func (tx *toxics) add(prefix, toxic string) {
	for name, p := range tx.proxies {
		if strings.HasPrefix(name, prefix) {
			if _, err := p.Toxics.AddToxicJson(strings.NewReader(toxic)); err != nil {
				tx.t.Fatalf("toxic on %s: %v", name, err)
			}
		}
	}
}

// clear removes every toxic.
func (tx *toxics) clear() {
	for _, p := range tx.proxies {
		p.Toxics.ResetToxics(context.Background())
	}
}

// TestNetworkFaults puts latency, connection resets and a black hole between the app servers
// and the database, then the cache: no request outlives its deadline, the breakers close
// again once the network heals, and every acknowledged write is in the database.
func TestNetworkFaults(t *testing.T) {
	needBinary(t)
	c, db := sharedPG.get(t)
	r := testenv.Redis(t, engines.RedisOptions{})
	tx := newToxics(t)
	sh := shardSpec{name: "a", primary: tx.proxy("pg-primary", c.Primary.Addr()), db: db}
	for i, rep := range c.Replicas {
		sh.replicas = append(sh.replicas, tx.proxy(fmt.Sprintf("pg-replica%d", i+1), rep.Addr()))
	}
	redisAddr := tx.proxy("redis", r.Addr())
	const requestTimeout = 3 * time.Second // the app servers' timeouts.request (topology default)
	tp := startTopo(t, topoSpec{shards: []shardSpec{sh},
		cache: map[string]any{"kind": "redis", "addrs": []string{redisAddr}},
		collections: map[string]map[string]any{
			"docs":   {"consistency": "strong"},
			"cached": {"strategy": "cache-aside", "consistency": "strong"},
		}})
	h := NewHistory(time.Now())
	var specs []loadSpec
	for i, coll := range []string{"docs", "cached"} {
		specs = append(specs, loadSpec{base: tp.lbURL, apiKey: tp.keyRW, coll: coll, clients: 4, keys: 3, reads: 0.6, prefix: coll[:1],
			writes: []Kind{Put, Patch}, dur: scale(40*time.Second, 120*time.Second), maxOps: 1 << 30, timeout: 2 * requestTimeout, seed: uint64(10 + i)})
	}
	for _, s := range specs {
		seedKeys(t, h, s)
	}
	loadStart := h.Now()
	done := make(chan struct{}, len(specs))
	loadCtx, stopLoad := context.WithCancel(context.Background())
	defer stopLoad()
	for _, s := range specs {
		go func() { runLoad(loadCtx, h, s); done <- struct{}{} }()
	}
	faults := []struct{ target, toxic string }{
		{"pg", `{"name":"lat","type":"latency","attributes":{"latency":400,"jitter":100}}`},
		{"pg", `{"name":"rst","type":"reset_peer","attributes":{"timeout":0}}`},
		{"pg", `{"name":"hole","type":"timeout","attributes":{"timeout":0}}`},
		{"redis", `{"name":"lat","type":"latency","attributes":{"latency":400,"jitter":100}}`},
		{"redis", `{"name":"rst","type":"reset_peer","attributes":{"timeout":0}}`},
		{"redis", `{"name":"hole","type":"timeout","attributes":{"timeout":0}}`},
	}
	var firstFault, healed time.Duration
	type window struct{ from, to time.Duration }
	phases := make([]window, len(faults))
	healthy := func() bool {
		for _, a := range tp.apps {
			if a.breakerState("store") != 0 || a.breakerState("cache") != 0 || !tp.backendUp(a.addr) {
				return false
			}
		}
		return true
	}
	for i, f := range faults {
		// Each fault starts on a healed system, so that its row counts only its own effect.
		waitUntil(15*time.Second, healthy)
		time.Sleep(scale(300*time.Millisecond, 3*time.Second))
		if i == 0 {
			firstFault = h.Now()
		}
		phases[i].from = h.Now()
		tx.add(f.target, f.toxic)
		time.Sleep(scale(1200*time.Millisecond, 5*time.Second))
		tx.clear()
		phases[i].to = h.Now()
	}
	healed = h.Now()
	stopLoad()
	for range specs {
		<-done
	}
	// Breakers close again.
	recov := waitUntil(15*time.Second, healthy)
	if recov < 0 {
		t.Errorf("breakers still not closed 15s after the network healed")
	} else {
		recov += time.Duration(h.Now()-healed) - recov
	}
	ops := filter(h.Ops(), func(o Op) bool { return o.Start >= loadStart })
	slow := filter(ops, func(o Op) bool { return o.End-o.Start > requestTimeout+time.Second })
	if len(slow) > 0 {
		t.Errorf("%d requests outlived the %s deadline by more than 1s: %s%s", len(slow), requestTimeout, statuses(slow), firstErrs(slow, 3))
	}
	var detect time.Duration = -1
	for _, o := range ops {
		if !o.OK() && o.Start >= firstFault {
			detect = o.End - firstFault
			break
		}
	}
	var perPhase []string
	for i, f := range faults {
		in := filter(ops, func(o Op) bool { return o.Start >= phases[i].from && o.Start < phases[i].to })
		bad := filter(in, func(o Op) bool { return !o.OK() })
		name := f.target + " " + strings.SplitN(strings.SplitN(f.toxic, `"type":"`, 2)[1], `"`, 2)[0]
		perPhase = append(perPhase, fmt.Sprintf("%s %d/%d failed", name, len(bad), len(in)))
	}
	t.Logf("per fault: %s", strings.Join(perPhase, "; "))
	lost := 0
	store := openStore(t, c.Primary.Addr(), db)
	for _, coll := range []string{"docs", "cached"} {
		lost += checkNothingLost(t, store, coll, filter(h.Ops(), func(o Op) bool { return o.Key[0] == coll[0] }))
	}
	row := Summarize("network: latency, resets, black hole (db, cache)", ops)
	row.Detect, row.Recover = detect, recov
	row.Note = fmt.Sprintf("requests past deadline+1s %d (max %s); per fault: %s; lost %d", len(slow), maxLatency(ops), strings.Join(perPhase, ", "), lost)
	addRow(t, row)
}

func maxLatency(ops []Op) time.Duration {
	var m time.Duration
	for _, o := range ops {
		m = max(m, o.End-o.Start)
	}
	return m.Round(time.Millisecond)
}
