// Package topology brings Strata's whole diagram up on one machine: what `strata up` runs.
//
// The default (Engines Embedded) needs nothing installed: a load balancer (package lb, in the
// calling process), three app servers (`strata app`, each a process of the same binary), a
// shared cache node (`strata cachenode`, a process too) and four SQLite shards in the data
// directory, which the app servers share (WAL mode, one writer at a time per file, busy
// timeout). Engines Local runs the same diagram on real engines started through package
// engines: a Redis Cluster as the cache tier and PostgreSQL shards, each a primary with
// streaming replicas, whose data is kept in the data directory across runs.
//
// With Config.File (`strata up --config`), the tiers are the ones a configuration file
// describes: one app server per backend of its lb: section, each configured by its app:
// section, behind the balancer of the lb: section, against the engines the app section
// names (see config.Up).
//
// # Why processes
//
// The app servers and the cache node are separate processes so that a fault is the real
// thing: kill-app is SIGKILL, its connections reset, its in-flight requests are lost, and
// the load balancer has to notice through failed connections and health checks, exactly as
// in production. Goroutines in one process could only pretend. Every child runs in its own
// process group (a Ctrl-C reaches `up` alone, which stops the tiers in order: balancer,
// app servers draining, then the cache and the engines) with a parent-death signal, so that
// no child survives a crash of `up`.
//
// # Secrets
//
// The demo API key and the admin key are generated on every start and printed once; the
// generated configuration holds only their SHA-256. The cache node's shared token reaches
// the node and the app servers through the environment (EnvCacheToken), never a command
// line.
//
// # Chaos
//
// Topology.Chaos and Topology.AdminHandler carry out faults: kill-app, restart-app,
// stop-cache, start-cache (not on a file's engines, which up did not start), and with local
// engines pause-replica, resume-replica, kill-primary, restart-primary. The HTTP form is the contract of loadgen.HTTPChaos.
//
// # Compared with the seed
//
// The seed draws the diagram; here it runs, each box a real process or server on its own
// port, and each arrow a real connection that can be cut.
package topology
