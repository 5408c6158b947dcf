package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/strata-project/strata/docstore"
	"github.com/strata-project/strata/shard"
	sqlite "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Config configures a Store. The zero value of every field but Path is a sensible default.
type Config struct {
	// Path is the database file. Required. It is created with its schema if absent; the
	// write-ahead log lives next to it (Path-wal, Path-shm).
	Path string
	// Readers is the size of the reader connection pool. Default 4.
	Readers int
	// BusyTimeout is how long a statement waits for a lock held by another process before
	// failing with docstore.ErrUnavailable. Default 5s.
	BusyTimeout time.Duration
	// Timeout bounds every call; a call that runs out of time fails with
	// docstore.ErrUnavailable. Default 10s.
	Timeout time.Duration
	// MaxBodyBytes is the body size limit. Default docstore.DefaultMaxBodyBytes (1 MiB).
	MaxBodyBytes int
	// Partitions is the virtual partition count rows are tagged with; it must equal the
	// placement map's when the store is a shard. It is fixed when the database is created.
	// Default shard.DefaultPartitions.
	Partitions int
	// Now returns the time written into Doc.Updated. Default time.Now.
	Now func() time.Time
}

// Store is a docstore.Backend on one SQLite database file in WAL mode: one writer
// connection, so writes never wait on each other inside SQLite, and a pool of read-only
// connections that read concurrently with the writer. It is safe for concurrent use.
type Store struct {
	cfg    Config
	w      *sql.DB // one connection: all writes
	r      *sql.DB // read-only pool
	closed atomic.Bool
}

var _ docstore.Backend = (*Store)(nil)

// schemaVersion is the version this code migrates to; migrations[i] takes the schema from
// version i to i+1.
const schemaVersion = 1

var migrations = []string{
	`CREATE TABLE docs (
		collection TEXT NOT NULL,
		id TEXT NOT NULL,
		part INTEGER NOT NULL,
		version INTEGER NOT NULL,
		deleted INTEGER NOT NULL DEFAULT 0,
		body TEXT,
		updated INTEGER NOT NULL,
		PRIMARY KEY (collection, id)
	) WITHOUT ROWID;
	CREATE INDEX docs_part ON docs (part, collection, id);
	CREATE TABLE strata_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;`,
}

// Open opens (creating and migrating if needed) the database at cfg.Path.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Path == "" {
		return nil, fmt.Errorf("%w: sqlite: Config.Path is required", docstore.ErrInvalid)
	}
	if cfg.Readers <= 0 {
		cfg.Readers = 4
	}
	if cfg.BusyTimeout <= 0 {
		cfg.BusyTimeout = 5 * time.Second
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = docstore.DefaultMaxBodyBytes
	}
	if cfg.Partitions == 0 {
		cfg.Partitions = shard.DefaultPartitions
	}
	if cfg.Partitions < 1 || cfg.Partitions > shard.MaxPartitions {
		return nil, fmt.Errorf("%w: sqlite: %d partitions", docstore.ErrInvalid, cfg.Partitions)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	dsn := func(extra ...string) string {
		q := url.Values{}
		q.Add("_pragma", "busy_timeout("+strconv.FormatInt(cfg.BusyTimeout.Milliseconds(), 10)+")")
		q.Add("_pragma", "journal_mode(WAL)")
		q.Add("_pragma", "synchronous(NORMAL)")
		q.Add("_txlock", "immediate")
		for _, e := range extra {
			q.Add("_pragma", e)
		}
		return "file:" + cfg.Path + "?" + q.Encode()
	}
	s := &Store{cfg: cfg}
	var err error
	if s.w, err = sql.Open("sqlite", dsn()); err != nil {
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}
	s.w.SetMaxOpenConns(1)
	s.w.SetMaxIdleConns(1)
	s.w.SetConnMaxLifetime(0)
	s.w.SetConnMaxIdleTime(0)
	if err := s.migrate(ctx); err != nil {
		s.w.Close()
		return nil, err
	}
	if s.r, err = sql.Open("sqlite", dsn("query_only(1)")); err != nil {
		s.w.Close()
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}
	s.r.SetMaxOpenConns(cfg.Readers)
	s.r.SetMaxIdleConns(cfg.Readers)
	s.r.SetConnMaxIdleTime(0)
	return s, nil
}

func (s *Store) migrate(ctx context.Context) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS strata_schema (version INTEGER NOT NULL)`); err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	var v int
	switch err := tx.QueryRowContext(ctx, `SELECT version FROM strata_schema`).Scan(&v); {
	case errors.Is(err, sql.ErrNoRows):
		if _, err := tx.ExecContext(ctx, `INSERT INTO strata_schema (version) VALUES (0)`); err != nil {
			return fmt.Errorf("sqlite: migrate: %w", err)
		}
	case err != nil:
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	if v > schemaVersion {
		return fmt.Errorf("sqlite: schema version %d is newer than this code's %d", v, schemaVersion)
	}
	for ; v < schemaVersion; v++ {
		if _, err := tx.ExecContext(ctx, migrations[v]); err != nil {
			return fmt.Errorf("sqlite: migration %d: %w", v+1, err)
		}
	}
	if _, err := tx.ExecContext(ctx, `UPDATE strata_schema SET version = ?`, v); err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO strata_meta (name, value) VALUES ('partitions', ?) ON CONFLICT (name) DO NOTHING`,
		strconv.Itoa(s.cfg.Partitions)); err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	var parts string
	if err := tx.QueryRowContext(ctx, `SELECT value FROM strata_meta WHERE name = 'partitions'`).Scan(&parts); err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	if parts != strconv.Itoa(s.cfg.Partitions) {
		return fmt.Errorf("%w: sqlite: database has %s partitions, config says %d", docstore.ErrInvalid, parts, s.cfg.Partitions)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: migrate: %w", err)
	}
	return nil
}

// Partitions implements docstore.Backend.
func (s *Store) Partitions() int { return s.cfg.Partitions }

// Close closes both connection pools.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	return errors.Join(s.r.Close(), s.w.Close())
}

// call returns the context of one call and an error if the store is closed.
func (s *Store) call(ctx context.Context) (context.Context, context.CancelFunc, error) {
	if s.closed.Load() {
		return nil, nil, docstore.ErrClosed
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	return ctx, cancel, nil
}

// fail maps a driver error to the package's errors. parent is the caller's context.
func fail(parent context.Context, op string, err error) error {
	if perr := parent.Err(); perr != nil {
		return fmt.Errorf("sqlite: %s: %w", op, perr)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: sqlite: %s: timeout", docstore.ErrUnavailable, op)
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_FULL:
			return fmt.Errorf("%w: sqlite: %s: %w", docstore.ErrUnavailable, op, err)
		}
	}
	if errors.Is(err, sql.ErrConnDone) || strings.Contains(err.Error(), "database is closed") {
		return fmt.Errorf("%w: sqlite: %s", docstore.ErrClosed, op)
	}
	return fmt.Errorf("sqlite: %s: %w", op, err)
}

func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

func (s *Store) now() time.Time { return docstore.Timestamp(s.cfg.Now()) }

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
	var body sql.NullString
	var up int64
	err = s.r.QueryRowContext(ctx, `SELECT version, deleted, body, updated FROM docs WHERE collection = ? AND id = ?`,
		collection, id).Scan(&d.Version, &deleted, &body, &up)
	if errors.Is(err, sql.ErrNoRows) || err == nil && deleted {
		return docstore.Doc{}, docstore.NotFound(collection, id)
	}
	if err != nil {
		return docstore.Doc{}, fail(parent, "get", err)
	}
	d.Body, d.Updated = json.RawMessage(body.String), fromMicros(up)
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
	args := make([]any, 0, len(ids)+1)
	args = append(args, collection)
	seen := make(map[string]bool, len(ids))
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			args = append(args, id)
		}
	}
	q := `SELECT id, version, body, updated FROM docs WHERE collection = ? AND deleted = 0 AND id IN (?` +
		strings.Repeat(",?", len(args)-2) + `)`
	rows, err := s.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fail(parent, "get many", err)
	}
	defer rows.Close()
	for rows.Next() {
		d := docstore.Doc{Collection: collection}
		var body string
		var up int64
		if err := rows.Scan(&d.ID, &d.Version, &body, &up); err != nil {
			return nil, fail(parent, "get many", err)
		}
		d.Body, d.Updated = json.RawMessage(body), fromMicros(up)
		out[d.ID] = d
	}
	if err := rows.Err(); err != nil {
		return nil, fail(parent, "get many", err)
	}
	return out, nil
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
	now := s.now()
	d := docstore.Doc{Collection: collection, ID: id, Body: body, Updated: now}
	err = s.w.QueryRowContext(ctx, `INSERT INTO docs (collection, id, part, version, deleted, body, updated)
		VALUES (?, ?, ?, 1, 0, ?, ?)
		ON CONFLICT (collection, id) DO UPDATE SET version = version + 1, deleted = 0, body = excluded.body, updated = excluded.updated
		RETURNING version`,
		collection, id, docstore.PartitionOf(collection, id, s.cfg.Partitions), string(body), micros(now)).Scan(&d.Version)
	if err != nil {
		return docstore.Doc{}, fail(parent, "put", err)
	}
	return d, nil
}

func (s *Store) checkWrite(collection, id string, body []byte) error {
	if err := docstore.CheckKey(collection, id); err != nil {
		return err
	}
	return docstore.CheckBody(body, s.cfg.MaxBodyBytes)
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
	now := s.now()
	d := docstore.Doc{Collection: collection, ID: id, Body: body, Updated: now}
	if version == 0 {
		err = s.w.QueryRowContext(ctx, `INSERT INTO docs (collection, id, part, version, deleted, body, updated)
			VALUES (?, ?, ?, 1, 0, ?, ?)
			ON CONFLICT (collection, id) DO UPDATE SET version = version + 1, deleted = 0, body = excluded.body, updated = excluded.updated
			WHERE deleted = 1
			RETURNING version`,
			collection, id, docstore.PartitionOf(collection, id, s.cfg.Partitions), string(body), micros(now)).Scan(&d.Version)
	} else {
		err = s.w.QueryRowContext(ctx, `UPDATE docs SET version = version + 1, body = ?, updated = ?
			WHERE collection = ? AND id = ? AND version = ? AND deleted = 0 RETURNING version`,
			string(body), micros(now), collection, id, version).Scan(&d.Version)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return docstore.Doc{}, s.conflict(ctx, parent, collection, id, version)
	}
	if err != nil {
		return docstore.Doc{}, fail(parent, "put if version", err)
	}
	return d, nil
}

// conflict reads the current version of a document whose conditional write lost.
func (s *Store) conflict(ctx, parent context.Context, collection, id string, expected int64) error {
	var v int64
	var deleted bool
	err := s.w.QueryRowContext(ctx, `SELECT version, deleted FROM docs WHERE collection = ? AND id = ?`,
		collection, id).Scan(&v, &deleted)
	if errors.Is(err, sql.ErrNoRows) || err == nil && deleted {
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
	err = s.w.QueryRowContext(ctx, `UPDATE docs SET version = version + 1, deleted = 1, body = NULL, updated = ?
		WHERE collection = ? AND id = ? AND deleted = 0 AND (? = 0 OR version = ?) RETURNING version`,
		micros(s.now()), collection, id, version, version).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
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
	rows, err := s.r.QueryContext(ctx, `SELECT id, version, body, updated FROM docs
		WHERE collection = ? AND id > ? AND deleted = 0 ORDER BY id LIMIT ?`, collection, after, limit+1)
	if err != nil {
		return docstore.Page{}, fail(parent, "list", err)
	}
	defer rows.Close()
	var p docstore.Page
	for rows.Next() {
		d := docstore.Doc{Collection: collection}
		var body string
		var up int64
		if err := rows.Scan(&d.ID, &d.Version, &body, &up); err != nil {
			return docstore.Page{}, fail(parent, "list", err)
		}
		d.Body, d.Updated = json.RawMessage(body), fromMicros(up)
		p.Docs = append(p.Docs, d)
	}
	if err := rows.Err(); err != nil {
		return docstore.Page{}, fail(parent, "list", err)
	}
	if len(p.Docs) > limit {
		p.Docs = p.Docs[:limit]
		p.Next = docstore.EncodeCursor(collection, p.Docs[limit-1].ID)
	}
	return p, nil
}

// ScanPartition implements docstore.Backend. It reads through the writer connection, so it
// sees every acknowledged write.
func (s *Store) ScanPartition(parent context.Context, part int, after docstore.Key, limit int) ([]docstore.Row, error) {
	ctx, cancel, err := s.call(parent)
	if err != nil {
		return nil, err
	}
	defer cancel()
	rows, err := s.w.QueryContext(ctx, `SELECT collection, id, version, deleted, body, updated FROM docs
		WHERE part = ? AND (collection, id) > (?, ?) ORDER BY collection, id LIMIT ?`,
		part, after.Collection, after.ID, docstore.ClampLimit(limit))
	if err != nil {
		return nil, fail(parent, "scan partition", err)
	}
	defer rows.Close()
	var out []docstore.Row
	for rows.Next() {
		var r docstore.Row
		var body sql.NullString
		var up int64
		if err := rows.Scan(&r.Collection, &r.ID, &r.Version, &r.Deleted, &body, &up); err != nil {
			return nil, fail(parent, "scan partition", err)
		}
		if body.Valid {
			r.Body = json.RawMessage(body.String)
		}
		r.Updated = fromMicros(up)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fail(parent, "scan partition", err)
	}
	return out, nil
}

// ApplyRows implements docstore.Backend, in one transaction.
func (s *Store) ApplyRows(parent context.Context, rows []docstore.Row) (int, error) {
	if len(rows) == 0 {
		return 0, nil
	}
	ctx, cancel, err := s.call(parent)
	if err != nil {
		return 0, err
	}
	defer cancel()
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, fail(parent, "apply rows", err)
	}
	defer tx.Rollback()
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO docs (collection, id, part, version, deleted, body, updated)
		VALUES (?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (collection, id) DO UPDATE SET part = excluded.part, version = excluded.version,
			deleted = excluded.deleted, body = excluded.body, updated = excluded.updated
		WHERE excluded.version > docs.version`)
	if err != nil {
		return 0, fail(parent, "apply rows", err)
	}
	defer stmt.Close()
	n := 0
	for _, r := range rows {
		var body any
		if !r.Deleted {
			body = string(r.Body)
		}
		res, err := stmt.ExecContext(ctx, r.Collection, r.ID, docstore.PartitionOf(r.Collection, r.ID, s.cfg.Partitions),
			r.Version, r.Deleted, body, micros(r.Updated))
		if err != nil {
			return 0, fail(parent, "apply rows", err)
		}
		k, _ := res.RowsAffected()
		n += int(k)
	}
	if err := tx.Commit(); err != nil {
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
	res, err := s.w.ExecContext(ctx, `DELETE FROM docs WHERE part = ?`, part)
	if err != nil {
		return 0, fail(parent, "delete partition", err)
	}
	return res.RowsAffected()
}
