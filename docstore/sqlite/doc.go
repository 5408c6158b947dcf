// Package sqlite is the embedded docstore backend: documents in one SQLite database file,
// through the pure-Go driver modernc.org/sqlite (no cgo).
//
// The database runs in WAL mode with synchronous=NORMAL and a busy timeout. The Store keeps
// one writer connection, so writes queue in Go rather than spinning on SQLite's lock, and a
// pool of read-only connections that read concurrently with the writer. Each write is one
// statement (an upsert or update with RETURNING), so it needs no explicit transaction.
//
// The schema is created and migrated on Open, under a write lock, and recorded in table
// strata_schema; the partition count rows are tagged with is recorded in strata_meta and
// checked on every Open. Ids compare bytewise (BINARY collation), as in every backend.
package sqlite
