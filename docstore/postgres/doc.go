// Package postgres is the PostgreSQL docstore backend, through pgx (pgxpool).
//
// Documents live in table docs: body as jsonb (so PostgreSQL returns it normalised), ids
// in the "C" collation so that listing order is bytewise, as in every backend. Every write
// is one statement with RETURNING on the primary, using only bind parameters. Every call
// runs under a timeout (Config.Timeout, connecting included), and anything that means the
// server cannot be reached now (refused or lost connection, timeout, shutdown, too many
// connections) is docstore.ErrUnavailable, so a dead server fails calls fast instead of
// hanging them.
//
// The schema is created and migrated on Open under an advisory lock, recorded in table
// strata_schema, with the partition count in strata_meta.
//
// Read replicas: the read path (Get, GetMany, List) goes through Config.Reads, a Reader
// (the primary pool by default). A replica router implements Reader; writes and the
// resharding scans always use the primary.
package postgres
