// Package reliability is Strata's fault suite: it starts the real topology (app server
// processes behind the load balancer, PostgreSQL with streaming replicas, and a shared cache:
// Redis, a Redis Cluster, Memcached or the Strata cache node), drives a
// bounded load of concurrent clients through it, injects a fault (SIGKILL of an app server, a
// replica killed or lagging, a shard primary killed, the cache stopped, network latency,
// resets and black holes through toxiproxy, kills during write-behind), records every
// operation as the client saw it and checks the record: counted failures against a
// threshold, read-your-writes, nothing acknowledged lost (read back from the database
// directly) and linearizability with porcupine.
//
// The non-test files hold what other code may reuse: the History of operations, the Row of
// the table each scenario prints (attempted, succeeded, failed, p99, time to detect, time to
// recover) and the Linearizable check (a register per key). The scenarios are the package's
// tests; `go test` runs them short, STRATA_RELIABILITY_LONG=1 (or benchmarks/chaos/run.sh)
// runs them longer and prints the table. Bugs found in other packages are reported by
// knownBug: logged by default, failures with STRATA_RELIABILITY_KNOWN_BUGS=1.
//
// Compared with the seed, which only says "design for high availability and fault
// tolerance", each such claim here is a number that a test can fail.
package reliability
