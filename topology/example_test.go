package topology_test

import (
	"os"

	"github.com/strata-project/strata/topology"
)

func ExampleMap_Print() {
	m := topology.Map{
		LB: "127.0.0.1:8080", Admin: "127.0.0.1:8079",
		Apps:  []string{"127.0.0.1:41001", "127.0.0.1:41002", "127.0.0.1:41003"},
		Cache: "127.0.0.1:41010", CacheKind: "strata cachenode",
		Shards:  []string{"/data/sqlite/shard-1.db", "/data/sqlite/shard-2.db"},
		DataDir: "/data", Logs: "/data/logs", Dashboard: "http://127.0.0.1:8079/dashboard/",
		DemoKey: "strata_demo_K", AdminKey: "strata_admin_A", Collections: []string{"items"},
	}
	m.Print(os.Stdout, "strata")
	// Output:
	//   load balancer   http://127.0.0.1:8080
	//   app servers     127.0.0.1:41001  127.0.0.1:41002  127.0.0.1:41003
	//   cache           127.0.0.1:41010 (strata cachenode)
	//   shards          /data/sqlite/shard-1.db
	//                   /data/sqlite/shard-2.db
	//   dashboard       http://127.0.0.1:8079/dashboard/
	//   admin           http://127.0.0.1:8079 (chaos, status; admin key below)
	//   data            /data
	//   logs            /data/logs
	//
	//   demo key        strata_demo_K
	//   admin key       strata_admin_A
	//   (new keys on every start; only their hashes are written to disk)
	//
	// Try:
	//   curl -X PUT -H 'Authorization: Bearer strata_demo_K' -H 'Content-Type: application/json' -d '{"greeting":"hi"}' http://127.0.0.1:8080/v1/items/hello
	//   curl -H 'Authorization: Bearer strata_demo_K' http://127.0.0.1:8080/v1/items/hello
	//   strata chaos kill-app 2 --url http://127.0.0.1:8079 --key strata_admin_A
	//
	// Ctrl-C stops everything.
}
