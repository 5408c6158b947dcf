package topology

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-project/strata/dashboard"
	"github.com/strata-project/strata/lb"
)

// DashboardPath is where the admin listener serves the live dashboard.
const DashboardPath = "/dashboard/"

// startDashboard builds the admin listener's extra handlers: the load balancer's own admin API
// (metrics and status, under /lb/, behind the admin key) and the dashboard, fed by scraping
// the load balancer's and the app servers' metrics with the admin key.
func (t *Topology) startDashboard() error {
	reg := prometheus.NewRegistry()
	lbAdmin, err := t.lb.AdminHandler([]lb.AdminKey{{Name: "admin", SHA256: t.adminHash, Write: true}}, reg)
	if err != nil {
		return err
	}
	t.lbAdmin = http.StripPrefix("/lb", lbAdmin)
	hdr := http.Header{"Authorization": {"Bearer " + t.m.AdminKey}}
	base := "http://" + t.m.Admin
	cfg := dashboard.PromConfig{
		LB: []dashboard.PromTarget{{Name: "lb", URL: base + "/lb/metrics", Address: t.m.LB, Header: hdr}},
	}
	for i, a := range t.m.Apps {
		cfg.Apps = append(cfg.Apps, dashboard.PromTarget{
			Name: fmt.Sprintf("app-%d", i+1), URL: "http://" + a + "/admin/metrics", Address: a,
			Target: strconv.Itoa(i + 1), Header: hdr,
		})
	}
	// Each cache node is probed by a TCP connection.
	cacheAddrs := strings.Fields(t.m.Cache)
	for i, a := range cacheAddrs {
		name := t.m.CacheKind
		switch {
		case t.cluster != nil:
			name = fmt.Sprintf("redis-%d", i+1)
		case len(cacheAddrs) > 1:
			name = fmt.Sprintf("%s-%d", t.m.CacheKind, i+1)
		}
		cfg.Cache = append(cfg.Cache, dashboard.PromTarget{Name: name, Address: a})
	}
	if len(t.pg) > 0 {
		cfg.ShardTarget = func(shard, node, role string) string { return shardTarget(shard) }
	}
	d, err := dashboard.New(dashboard.Config{
		Source:   dashboard.NewPromSource(cfg),
		Title:    "strata up",
		ChaosURL: base,
		Logger:   t.cfg.Logger,
	})
	if err != nil {
		return err
	}
	t.dash = d
	t.m.Dashboard = base + DashboardPath
	return nil
}

// shardTarget returns the chaos target of a local engines shard: "shard-N" is target N.
func shardTarget(name string) string {
	n, ok := strings.CutPrefix(name, "shard-")
	if _, err := strconv.Atoi(n); !ok || err != nil {
		return ""
	}
	return n
}
