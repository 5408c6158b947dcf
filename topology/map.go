package topology

import (
	"fmt"
	"io"
	"strings"
)

// Print writes the map as `strata up` shows it: each tier's address, where the data lives,
// the keys of this run and commands that work when pasted.
func (m Map) Print(w io.Writer, exe string) {
	row := func(k, v string) { fmt.Fprintf(w, "  %-15s %s\n", k, v) }
	row("load balancer", "http://"+m.LB)
	row("app servers", strings.Join(m.Apps, "  "))
	cache := m.Cache + " (" + m.CacheKind + ")"
	if m.Cache == "" {
		cache = m.CacheKind
	}
	if m.CacheNote != "" {
		cache += "; " + m.CacheNote
	}
	row("cache", cache)
	for i, s := range m.Shards {
		k := ""
		if i == 0 {
			k = "shards"
		}
		row(k, s)
	}
	if m.Dashboard != "" {
		row("dashboard", m.Dashboard)
	}
	row("admin", "http://"+m.Admin+" (chaos, status; admin key below)")
	if m.Config != "" {
		row("config", m.Config)
	}
	row("data", m.DataDir)
	row("logs", m.Logs)
	fmt.Fprintln(w)
	row("demo key", m.DemoKey)
	row("admin key", m.AdminKey)
	fmt.Fprintln(w, "  (new keys on every start; only their hashes are written to disk)")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Try:")
	base := "http://" + m.LB + "/v1/" + m.Collections[0] + "/hello"
	fmt.Fprintf(w, "  curl -X PUT -H 'Authorization: Bearer %s' -H 'Content-Type: application/json' -d '{\"greeting\":\"hi\"}' %s\n", m.DemoKey, base)
	fmt.Fprintf(w, "  curl -H 'Authorization: Bearer %s' %s\n", m.DemoKey, base)
	fmt.Fprintf(w, "  %s chaos kill-app %d --url http://%s --key %s\n", exe, min(2, max(1, len(m.Apps))), m.Admin, m.AdminKey)
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Ctrl-C stops everything.")
}
