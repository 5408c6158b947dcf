package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/strata-project/strata/docstore"
	"github.com/strata-project/strata/shard"
)

// Reader runs the queries of the read path (Get, GetMany, List). *pgxpool.Pool satisfies it.
// It is the seam for read replicas: a router that sends each query to a replica (or back to
// the primary for read-your-writes) implements Reader and is passed as Config.Reads.
type Reader interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

var _ Reader = (*pgxpool.Pool)(nil)

// Writer runs the write path and every query that must see the primary (conditional-write
// conflicts, resharding scans, migrations). *pgxpool.Pool satisfies it; so does
// pgreplica.Writer, which follows failover, fails fast without a primary and records commit
// positions for read-your-writes sessions.
type Writer interface {
	Reader
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Begin(ctx context.Context) (pgx.Tx, error)
}

var _ Writer = (*pgxpool.Pool)(nil)

// Config configures a Store. One of DSN, Pool and Writes is required; every other field's
// zero value is a sensible default. For a shard with read replicas, open a pgreplica.Set and
// pass its Writer and Reader as Writes and Reads.
type Config struct {
	// DSN is the primary's connection string; the Store opens a pool and closes it on Close.
	DSN string
	// Pool is a primary pool owned by the caller (not closed by Close). Used when DSN is "".
	Pool *pgxpool.Pool
	// MaxConns is the size of the pool opened from DSN. Default 16.
	MaxConns int32
	// Writes serves the write path. Default nil: the primary pool.
	Writes Writer
	// Reads serves the read path. Default nil: the write path.
	Reads Reader
	// Timeout bounds every call, connecting included; a call that runs out of time fails with
	// docstore.ErrUnavailable. Default 5s.
	Timeout time.Duration
	// MaxBodyBytes is the body size limit. Default docstore.DefaultMaxBodyBytes (1 MiB).
	MaxBodyBytes int
	// Partitions is the virtual partition count rows are tagged with; it must equal the
	// placement map's when the store is a shard. It is fixed when the schema is created.
	// Default shard.DefaultPartitions.
	Partitions int
	// Now returns the time written into Doc.Updated. Default time.Now.
	Now func() time.Time
}

// Store is a docstore.Backend on a PostgreSQL database: documents live in table docs with
// the body as jsonb and ids in the "C" collation (bytewise order, as in every backend).
// Writes are single statements on the primary (upserts with RETURNING), so they need no
// explicit transaction. It is safe for concurrent use.
type Store struct {
	cfg    Config
	pool   *pgxpool.Pool // nil when Config.Writes is given
	owned  bool
	writes Writer
	reads  Reader
	closed atomic.Bool
}

var _ docstore.Backend = (*Store)(nil)

// migrations[i] takes the schema from version i to i+1.
var migrations = []string{
	`CREATE TABLE docs (
		collection text COLLATE "C" NOT NULL,
		id text COLLATE "C" NOT NULL,
		part integer NOT NULL,
		version bigint NOT NULL,
		deleted boolean NOT NULL DEFAULT false,
		body jsonb,
		updated timestamptz NOT NULL,
		PRIMARY KEY (collection, id)
	);
	CREATE INDEX docs_part ON docs (part, collection, id);
	CREATE TABLE strata_meta (name text PRIMARY KEY, value text NOT NULL);`,
}

// schemaLock is the advisory lock key that serialises migrations of concurrent starters.
const schemaLock = 0x5354524154410001

// Open connects (unless cfg.Pool is given), then creates or migrates the schema.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 16
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = docstore.DefaultMaxBodyBytes
	}
	if cfg.Partitions == 0 {
		cfg.Partitions = shard.DefaultPartitions
	}
	if cfg.Partitions < 1 || cfg.Partitions > shard.MaxPartitions {
		return nil, fmt.Errorf("%w: postgres: %d partitions", docstore.ErrInvalid, cfg.Partitions)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Store{cfg: cfg, pool: cfg.Pool, writes: cfg.Writes}
	if s.pool == nil && s.writes == nil {
		if cfg.DSN == "" {
			return nil, fmt.Errorf("%w: postgres: Config needs DSN, Pool or Writes", docstore.ErrInvalid)
		}
		pc, err := pgxpool.ParseConfig(cfg.DSN)
		if err != nil {
			return nil, fmt.Errorf("%w: postgres: %w", docstore.ErrInvalid, err)
		}
		pc.MaxConns = cfg.MaxConns
		if pc.ConnConfig.ConnectTimeout == 0 || pc.ConnConfig.ConnectTimeout > cfg.Timeout {
			pc.ConnConfig.ConnectTimeout = cfg.Timeout
		}
		if s.pool, err = pgxpool.NewWithConfig(ctx, pc); err != nil {
			return nil, fmt.Errorf("postgres: %w", err)
		}
		s.owned = true
	}
	if s.writes == nil {
		s.writes = s.pool
	}
	s.reads = cfg.Reads
	if s.reads == nil {
		s.reads = s.writes
	}
	if err := s.migrate(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) migrate(parent context.Context) error {
	ctx, cancel := context.WithTimeout(parent, 4*s.cfg.Timeout)
	defer cancel()
	tx, err := s.writes.Begin(ctx)
	if err != nil {
		return fail(parent, "migrate", err)
	}
	defer tx.Rollback(context.Background())
	steps := []string{
		`SELECT pg_advisory_xact_lock(` + strconv.FormatInt(schemaLock, 10) + `)`,
		`CREATE TABLE IF NOT EXISTS strata_schema (version integer NOT NULL)`,
	}
	for _, q := range steps {
		if _, err := tx.Exec(ctx, q); err != nil {
			return fail(parent, "migrate", err)
		}
	}
	var v int
	switch err := tx.QueryRow(ctx, `SELECT version FROM strata_schema`).Scan(&v); {
	case errors.Is(err, pgx.ErrNoRows):
		if _, err := tx.Exec(ctx, `INSERT INTO strata_schema (version) VALUES (0)`); err != nil {
			return fail(parent, "migrate", err)
		}
	case err != nil:
		return fail(parent, "migrate", err)
	}
	if v > len(migrations) {
		return fmt.Errorf("postgres: schema version %d is newer than this code's %d", v, len(migrations))
	}
	for ; v < len(migrations); v++ {
		if _, err := tx.Exec(ctx, migrations[v]); err != nil {
			return fail(parent, fmt.Sprintf("migration %d", v+1), err)
		}
	}
	if _, err := tx.Exec(ctx, `UPDATE strata_schema SET version = $1`, v); err != nil {
		return fail(parent, "migrate", err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO strata_meta (name, value) VALUES ('partitions', $1) ON CONFLICT (name) DO NOTHING`,
		strconv.Itoa(s.cfg.Partitions)); err != nil {
		return fail(parent, "migrate", err)
	}
	var parts string
	if err := tx.QueryRow(ctx, `SELECT value FROM strata_meta WHERE name = 'partitions'`).Scan(&parts); err != nil {
		return fail(parent, "migrate", err)
	}
	if parts != strconv.Itoa(s.cfg.Partitions) {
		return fmt.Errorf("%w: postgres: database has %s partitions, config says %d", docstore.ErrInvalid, parts, s.cfg.Partitions)
	}
	if err := tx.Commit(ctx); err != nil {
		return fail(parent, "migrate", err)
	}
	return nil
}

// Partitions implements docstore.Backend.
func (s *Store) Partitions() int { return s.cfg.Partitions }

// Close closes the pool if the Store opened it.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	if s.owned {
		s.pool.Close()
	}
	return nil
}

func (s *Store) call(ctx context.Context) (context.Context, context.CancelFunc, error) {
	if s.closed.Load() {
		return nil, nil, docstore.ErrClosed
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	return ctx, cancel, nil
}

// fail maps a pgx error to the package's errors. An error from the server is kept as is,
// except for connection, resource and shutdown classes (ErrUnavailable) and data
// exceptions (ErrInvalid); any other error (refused or lost connection, timeout) means the
// server could not be reached: ErrUnavailable.
func fail(parent context.Context, op string, err error) error {
	if perr := parent.Err(); perr != nil {
		return fmt.Errorf("postgres: %s: %w", op, perr)
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code[:2] {
		case "08", "53", "57", "40", "58":
			return fmt.Errorf("%w: postgres: %s: %w", docstore.ErrUnavailable, op, err)
		case "22":
			return &refusedError{op: op, code: pe.Code, err: err}
		}
		return fmt.Errorf("postgres: %s: %w", op, err)
	}
	return fmt.Errorf("%w: postgres: %s: %w", docstore.ErrUnavailable, op, err)
}

// refusedError is a data exception: PostgreSQL refused a value. Its text names the
// operation and the SQLSTATE only, so that it can reach a client without the server's
// message (which may quote the input); errors.As finds the *pgconn.PgError for logs.
type refusedError struct {
	op, code string
	err      error
}

func (e *refusedError) Error() string {
	return fmt.Sprintf("%v: postgres: %s: the database refused a value (SQLSTATE %s)", docstore.ErrInvalid, e.op, e.code)
}

func (e *refusedError) Unwrap() []error { return []error{docstore.ErrInvalid, e.err} }

func (s *Store) now() time.Time { return docstore.Timestamp(s.cfg.Now()) }

func (s *Store) checkWrite(collection, id string, body []byte) error {
	if err := docstore.CheckKey(collection, id); err != nil {
		return err
	}
	return docstore.CheckBody(body, s.cfg.MaxBodyBytes)
}

// Get implements docstore.Store.
func (s *Store) Get(parent context.Context, collection, id string) (docstore.Doc, error) {
	if err := docstore.CheckKey(collection, id); err != nil {
		return docstore.Doc{}, err
	}
	ctx, cancel, err := s.call(parent)
	if err != nil {
		return docstore.Doc{}, err
	}
	defer cancel()
	d := docstore.Doc{Collection: collection, ID: id}
	var deleted bool
	var body []byte
	err = s.reads.QueryRow(ctx, `SELECT version, deleted, body, updated FROM docs WHERE collection = $1 AND id = $2`,
		collection, id).Scan(&d.Version, &deleted, &body, &d.Updated)
	if errors.Is(err, pgx.ErrNoRows) || err == nil && deleted {
		return docstore.Doc{}, docstore.NotFound(collection, id)
	}
	if err != nil {
		return docstore.Doc{}, fail(parent, "get", err)
	}
	d.Body, d.Updated = body, d.Updated.UTC()
	return d, nil
}

// GetMany implements docstore.Store.
func (s *Store) GetMany(parent context.Context, collection string, ids []string) (map[string]docstore.Doc, error) {
	if err := docstore.CheckBatch(collection, ids); err != nil {
		return nil, err
	}
	out := make(map[string]docstore.Doc, len(ids))
	if len(ids) == 0 {
		return out, nil
	}
	ctx, cancel, err := s.call(parent)
	if err != nil {
		return nil, err
	}
	defer cancel()
	rows, err := s.reads.Query(ctx, `SELECT id, version, body, updated FROM docs
		WHERE collection = $1 AND id = ANY($2) AND NOT deleted`, collection, ids)
	if err != nil {
		return nil, fail(parent, "get many", err)
	}
	docs, err := scanDocs(rows, collection)
	if err != nil {
		return nil, fail(parent, "get many", err)
	}
	for _, d := range docs {
		out[d.ID] = d
	}
	return out, nil
}

func scanDocs(rows pgx.Rows, collection string) ([]docstore.Doc, error) {
	defer rows.Close()
	var out []docstore.Doc
	for rows.Next() {
		d := docstore.Doc{Collection: collection}
		var body []byte
		if err := rows.Scan(&d.ID, &d.Version, &body, &d.Updated); err != nil {
			return nil, err
		}
		d.Body, d.Updated = body, d.Updated.UTC()
		out = append(out, d)
	}
	return out, rows.Err()
}

// Put implements docstore.Store.
func (s *Store) Put(parent context.Context, collection, id string, body json.RawMessage) (docstore.Doc, error) {
	if err := s.checkWrite(collection, id, body); err != nil {
		return docstore.Doc{}, err
	}
	ctx, cancel, err := s.call(parent)
	if err != nil {
		return docstore.Doc{}, err
	}
	defer cancel()
	d := docstore.Doc{Collection: collection, ID: id, Body: body, Updated: s.now()}
	err = s.writes.QueryRow(ctx, `INSERT INTO docs (collection, id, part, version, deleted, body, updated)
		VALUES ($1, $2, $3, 1, false, $4::jsonb, $5)
		ON CONFLICT (collection, id) DO UPDATE SET version = docs.version + 1, deleted = false,
			body = excluded.body, updated = excluded.updated
		RETURNING version`,
		collection, id, docstore.PartitionOf(collection, id, s.cfg.Partitions), string(body), d.Updated).Scan(&d.Version)
	if err != nil {
		return docstore.Doc{}, fail(parent, "put", err)
	}
	return d, nil
}

// PutIfVersion implements docstore.Store.
func (s *Store) PutIfVersion(parent context.Context, collection, id string, body json.RawMessage, version int64) (docstore.Doc, error) {
	if err := s.checkWrite(collection, id, body); err != nil {
		return docstore.Doc{}, err
	}
	if version < 0 {
		return docstore.Doc{}, fmt.Errorf("%w: negative version %d", docstore.ErrInvalid, version)
	}
	ctx, cancel, err := s.call(parent)
	if err != nil {
		return docstore.Doc{}, err
	}
	defer cancel()
	d := docstore.Doc{Collection: collection, ID: id, Body: body, Updated: s.now()}
	if version == 0 {
		err = s.writes.QueryRow(ctx, `INSERT INTO docs (collection, id, part, version, deleted, body, updated)
			VALUES ($1, $2, $3, 1, false, $4::jsonb, $5)
			ON CONFLICT (collection, id) DO UPDATE SET version = docs.version + 1, deleted = false,
				body = excluded.body, updated = excluded.updated
			WHERE docs.deleted
			RETURNING version`,
			collection, id, docstore.PartitionOf(collection, id, s.cfg.Partitions), string(body), d.Updated).Scan(&d.Version)
	} else {
		err = s.writes.QueryRow(ctx, `UPDATE docs SET version = version + 1, body = $1::jsonb, updated = $2
			WHERE collection = $3 AND id = $4 AND version = $5 AND NOT deleted RETURNING version`,
			string(body), d.Updated, collection, id, version).Scan(&d.Version)
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return docstore.Doc{}, s.conflict(ctx, parent, collection, id, version)
	}
	if err != nil {
		return docstore.Doc{}, fail(parent, "put if version", err)
	}
	return d, nil
}

func (s *Store) conflict(ctx, parent context.Context, collection, id string, expected int64) error {
	var v int64
	var deleted bool
	err := s.writes.QueryRow(ctx, `SELECT version, deleted FROM docs WHERE collection = $1 AND id = $2`,
		collection, id).Scan(&v, &deleted)
	if errors.Is(err, pgx.ErrNoRows) || err == nil && deleted {
		v = 0
	} else if err != nil {
		return fail(parent, "read version", err)
	}
	return docstore.Conflict(collection, id, expected, v)
}

// Delete implements docstore.Store.
func (s *Store) Delete(parent context.Context, collection, id string) (int64, error) {
	return s.del(parent, collection, id, 0)
}

// DeleteIfVersion implements docstore.Store.
func (s *Store) DeleteIfVersion(parent context.Context, collection, id string, version int64) (int64, error) {
	if version <= 0 {
		return 0, fmt.Errorf("%w: DeleteIfVersion needs a version > 0, got %d", docstore.ErrInvalid, version)
	}
	return s.del(parent, collection, id, version)
}

func (s *Store) del(parent context.Context, collection, id string, version int64) (int64, error) {
	if err := docstore.CheckKey(collection, id); err != nil {
		return 0, err
	}
	ctx, cancel, err := s.call(parent)
	if err != nil {
		return 0, err
	}
	defer cancel()
	var v int64
	err = s.writes.QueryRow(ctx, `UPDATE docs SET version = version + 1, deleted = true, body = NULL, updated = $1
		WHERE collection = $2 AND id = $3 AND NOT deleted AND ($4::bigint = 0 OR version = $4) RETURNING version`,
		s.now(), collection, id, version).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		if version == 0 {
			return 0, docstore.NotFound(collection, id)
		}
		return 0, s.conflict(ctx, parent, collection, id, version)
	}
	if err != nil {
		return 0, fail(parent, "delete", err)
	}
	return v, nil
}

// List implements docstore.Store.
func (s *Store) List(parent context.Context, collection, cursor string, limit int) (docstore.Page, error) {
	if err := docstore.CheckCollection(collection); err != nil {
		return docstore.Page{}, err
	}
	after, err := docstore.DecodeCursor(collection, cursor)
	if err != nil {
		return docstore.Page{}, err
	}
	limit = docstore.ClampLimit(limit)
	ctx, cancel, err := s.call(parent)
	if err != nil {
		return docstore.Page{}, err
	}
	defer cancel()
	rows, err := s.reads.Query(ctx, `SELECT id, version, body, updated FROM docs
		WHERE collection = $1 AND id > $2 AND NOT deleted ORDER BY id LIMIT $3`, collection, after, limit+1)
	if err != nil {
		return docstore.Page{}, fail(parent, "list", err)
	}
	docs, err := scanDocs(rows, collection)
	if err != nil {
		return docstore.Page{}, fail(parent, "list", err)
	}
	p := docstore.Page{Docs: docs}
	if len(p.Docs) > limit {
		p.Docs = p.Docs[:limit]
		p.Next = docstore.EncodeCursor(collection, p.Docs[limit-1].ID)
	}
	return p, nil
}

// ScanPartition implements docstore.Backend, reading from the primary.
func (s *Store) ScanPartition(parent context.Context, part int, after docstore.Key, limit int) ([]docstore.Row, error) {
	ctx, cancel, err := s.call(parent)
	if err != nil {
		return nil, err
	}
	defer cancel()
	rows, err := s.writes.Query(ctx, `SELECT collection, id, version, deleted, body, updated FROM docs
		WHERE part = $1 AND (collection, id) > ($2, $3) ORDER BY collection, id LIMIT $4`,
		part, after.Collection, after.ID, docstore.ClampLimit(limit))
	if err != nil {
		return nil, fail(parent, "scan partition", err)
	}
	defer rows.Close()
	var out []docstore.Row
	for rows.Next() {
		var r docstore.Row
		var body []byte
		if err := rows.Scan(&r.Collection, &r.ID, &r.Version, &r.Deleted, &body, &r.Updated); err != nil {
			return nil, fail(parent, "scan partition", err)
		}
		r.Body, r.Updated = body, r.Updated.UTC()
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fail(parent, "scan partition", err)
	}
	return out, nil
}

// ApplyRows implements docstore.Backend, in one transaction sent as one batch.
func (s *Store) ApplyRows(parent context.Context, rows []docstore.Row) (int, error) {
	if len(rows) == 0 {
		return 0, nil
	}
	ctx, cancel, err := s.call(parent)
	if err != nil {
		return 0, err
	}
	defer cancel()
	tx, err := s.writes.Begin(ctx)
	if err != nil {
		return 0, fail(parent, "apply rows", err)
	}
	defer tx.Rollback(context.Background())
	var b pgx.Batch
	for _, r := range rows {
		var body any
		if !r.Deleted {
			body = string(r.Body)
		}
		b.Queue(`INSERT INTO docs (collection, id, part, version, deleted, body, updated)
			VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7)
			ON CONFLICT (collection, id) DO UPDATE SET part = excluded.part, version = excluded.version,
				deleted = excluded.deleted, body = excluded.body, updated = excluded.updated
			WHERE excluded.version > docs.version`,
			r.Collection, r.ID, docstore.PartitionOf(r.Collection, r.ID, s.cfg.Partitions), r.Version, r.Deleted, body, r.Updated)
	}
	br := tx.SendBatch(ctx, &b)
	n := 0
	for range rows {
		tag, err := br.Exec()
		if err != nil {
			br.Close()
			return 0, fail(parent, "apply rows", err)
		}
		n += int(tag.RowsAffected())
	}
	if err := br.Close(); err != nil {
		return 0, fail(parent, "apply rows", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fail(parent, "apply rows", err)
	}
	return n, nil
}

// DeletePartition implements docstore.Backend.
func (s *Store) DeletePartition(parent context.Context, part int) (int64, error) {
	ctx, cancel, err := s.call(parent)
	if err != nil {
		return 0, err
	}
	defer cancel()
	tag, err := s.writes.Exec(ctx, `DELETE FROM docs WHERE part = $1`, part)
	if err != nil {
		return 0, fail(parent, "delete partition", err)
	}
	return tag.RowsAffected(), nil
}
