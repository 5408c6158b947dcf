package dashboard_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/strata-project/strata/dashboard"
)

func Example() {
	src := dashboard.SourceFunc(func(ctx context.Context) (dashboard.Topology, error) {
		return dashboard.Topology{Tiers: []dashboard.Tier{
			{Name: "App servers", Nodes: []dashboard.Node{
				{Name: "app-1", Role: dashboard.RoleApp, Health: dashboard.HealthUp, RPS: dashboard.Num(120)},
				{Name: "app-2", Role: dashboard.RoleApp, Health: dashboard.HealthDown},
			}},
		}}, nil
	})
	d, err := dashboard.New(dashboard.Config{Source: src})
	if err != nil {
		panic(err)
	}
	defer d.Close()
	mux := http.NewServeMux()
	mux.Handle("/dashboard/", http.StripPrefix("/dashboard", d))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	// The first snapshot is taken in the background; the stream's first
	// "snapshot" event waits for it.
	res, err := http.Get(srv.URL + "/dashboard/events")
	if err != nil {
		panic(err)
	}
	defer res.Body.Close()
	var s dashboard.Snapshot
	if err := json.NewDecoder(eventData(res, "snapshot")).Decode(&s); err != nil {
		panic(err)
	}
	for _, n := range s.Tiers[0].Nodes {
		fmt.Println(n.Name, n.Health)
	}
	fmt.Println("requests/s:", *s.RPS)
	// Output:
	// app-1 up
	// app-2 down
	// requests/s: 120
}
