package dashboard_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/strata-project/strata/dashboard"
)

// fakeSource is a Source whose nodes a test changes while the dashboard
// reads it.
type fakeSource struct {
	mu    sync.Mutex // protects the fields below
	topo  dashboard.Topology
	err   error
	calls int
}

func (f *fakeSource) Snapshot(ctx context.Context) (dashboard.Topology, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	// Copy the tiers so the caller never shares our slices.
	t := f.topo
	t.Tiers = append([]dashboard.Tier(nil), f.topo.Tiers...)
	for i := range t.Tiers {
		t.Tiers[i].Nodes = append([]dashboard.Node(nil), t.Tiers[i].Nodes...)
	}
	return t, f.err
}

func (f *fakeSource) set(fn func(t *dashboard.Topology)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(&f.topo)
}

func (f *fakeSource) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.err = err
}

// threeApps is the topology of `strata up` on defaults: one load balancer,
// three app servers, one cache node and two shards of a primary and a
// replica.
func threeApps() dashboard.Topology {
	n := dashboard.Num
	t := dashboard.Topology{Tiers: []dashboard.Tier{
		{Name: "Load balancer", Nodes: []dashboard.Node{{Name: "lb", Address: "127.0.0.1:8080", Role: dashboard.RoleLB,
			Health: dashboard.HealthUp, RPS: n(1021), LimitedPerSec: n(3)}}},
		{Name: "App servers"},
		{Name: "Cache", Nodes: []dashboard.Node{{Name: "memstore", Role: dashboard.RoleCache, Target: "0",
			Health: dashboard.HealthUp, HitRatio: n(0.94)}}},
	}}
	for i := 1; i <= 3; i++ {
		t.Tiers[1].Nodes = append(t.Tiers[1].Nodes, dashboard.Node{
			Name: fmt.Sprintf("app-%d", i), Address: fmt.Sprintf("127.0.0.1:%d", 8080+i), Role: dashboard.RoleApp,
			Target: fmt.Sprint(i), Health: dashboard.HealthUp, Breaker: dashboard.BreakerClosed,
			RPS: n(340 + float64(i)), P99MS: n(2.5 * float64(i)), HitRatio: n(0.94), WriteBehind: n(12),
		})
	}
	for s := range 2 {
		t.Tiers = append(t.Tiers, dashboard.Tier{Name: fmt.Sprintf("Shard %d", s), Nodes: []dashboard.Node{
			{Name: fmt.Sprintf("shard%d-primary", s), Role: dashboard.RolePrimary, Target: fmt.Sprint(s), Health: dashboard.HealthUp},
			{Name: fmt.Sprintf("shard%d-replica1", s), Role: dashboard.RoleReplica, Target: fmt.Sprintf("%d/1", s),
				Health: dashboard.HealthUp, LagSeconds: n(0.012)},
		}})
	}
	return t
}

// eventData returns the data of the first event of the given name in an
// event stream.
func eventData(res *http.Response, name string) io.Reader {
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(nil, 1<<20)
	current := ""
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "event: "); ok {
			current = v
		}
		if v, ok := strings.CutPrefix(line, "data: "); ok && current == name {
			return strings.NewReader(v)
		}
	}
	return strings.NewReader("")
}
