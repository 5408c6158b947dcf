// Package engines starts real storage engines — Redis, Redis Cluster, Memcached and PostgreSQL
// with streaming replicas — as private child processes built from the machine's own binaries.
//
// Each node listens on a free loopback port, keeps its files in a directory of its own, and has
// fault handles for reliability work: Stop (graceful), Kill (SIGKILL to the whole process
// group), Restart (same port, same data), Pause and Resume (SIGSTOP/SIGCONT). PostgreSQL
// replicas can also pause and resume WAL replay, to create replica lag on demand, and be promoted.
//
// The package serves two callers: the test bed (internal/testenv), which starts engines per test
// or per package, and `strata up --engines local`, which starts a realistic topology on one
// machine. Neither needs a container runtime or a service manager.
//
// Binaries are looked up on PATH and, for PostgreSQL, under /usr/lib/postgresql/*/bin (newest
// version first). A missing binary is reported as a *MissingBinaryError that names the Debian
// package providing it.
//
// PostgreSQL refuses to run as root. When the calling process is root, the PostgreSQL servers
// and tools run as an unprivileged system user ("postgres" if it exists, else "nobody"), and
// Memcached is told to drop to the same user; the engine directories are made accessible to it.
//
// Children are started with a parent-death signal (SIGKILL) and in their own process group, so
// that neither a crash of the parent nor a forgotten Close leaves an engine running.
package engines
