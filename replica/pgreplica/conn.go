package pgreplica

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/strata-project/strata/replica"
)

// Writer is the shard's write path as a query interface: every call goes to the node that
// takes writes now (following a promotion), fails at once with an error wrapping
// replica.ErrNoPrimary when there is none, bans the primary when it fails under a call, and,
// when ctx carries a session (replica.WithSession), records the WAL position after each
// successful statement or commit in it, for read-your-writes tokens.
//
// It lets a store written against a plain pool (docstore/postgres takes a Writer and a Reader)
// gain failover and sessions without knowing about them.
type Writer struct{ s *Set }

// Reader is the shard's read path as a query interface: each call goes to the node the
// session in ctx calls for (strong: the primary; session: a node that replayed the token's
// position; none: a replica within the lag bounds), and a call that fails because its node
// failed is retried once elsewhere.
type Reader struct{ s *Set }

// Writer returns the shard's write path.
func (s *Set) Writer() Writer { return Writer{s} }

// Reader returns the shard's read path.
func (s *Set) Reader() Reader { return Reader{s} }

func (w Writer) primary() (int, error) {
	return w.s.router.Primary(time.Now())
}

// record stores the primary's current WAL position in the session of ctx, if any.
func (w Writer) record(ctx context.Context, i int) error {
	ss := replica.SessionFrom(ctx)
	if ss == nil {
		return nil
	}
	var text string
	if err := w.s.pools[i].QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&text); err != nil {
		return w.s.failed(i, fmt.Errorf("pgreplica: write done but its position is unknown: %w", err))
	}
	lsn, err := replica.ParseLSN(text)
	if err != nil {
		return err
	}
	ss.Wrote(w.s.cfg.Shard, lsn)
	return nil
}

// QueryRow runs a statement returning one row on the primary (its error, including
// ErrNoPrimary, comes from Scan).
func (w Writer) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return rowFunc(func(dest ...any) error {
		i, err := w.primary()
		if err != nil {
			return err
		}
		if err := w.s.pools[i].QueryRow(ctx, sql, args...).Scan(dest...); err != nil {
			return w.s.failed(i, err)
		}
		return w.record(ctx, i)
	})
}

// Query runs a query on the primary. Positions are not recorded: use it for reads that must
// see the primary (scans for resharding, for example).
func (w Writer) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	i, err := w.primary()
	if err != nil {
		return nil, err
	}
	rows, err := w.s.pools[i].Query(ctx, sql, args...)
	if err != nil {
		return nil, w.s.failed(i, err)
	}
	return rows, nil
}

// Exec runs a statement on the primary.
func (w Writer) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	i, err := w.primary()
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	tag, err := w.s.pools[i].Exec(ctx, sql, args...)
	if err != nil {
		return tag, w.s.failed(i, err)
	}
	return tag, w.record(ctx, i)
}

// Begin starts a transaction on the primary; its Commit records the position.
func (w Writer) Begin(ctx context.Context) (pgx.Tx, error) {
	i, err := w.primary()
	if err != nil {
		return nil, err
	}
	tx, err := w.s.pools[i].Begin(ctx)
	if err != nil {
		return nil, w.s.failed(i, err)
	}
	return &recordingTx{Tx: tx, w: w, node: i}, nil
}

type recordingTx struct {
	pgx.Tx
	w    Writer
	node int
}

func (t *recordingTx) Commit(ctx context.Context) error {
	if err := t.Tx.Commit(ctx); err != nil {
		return t.w.s.failed(t.node, err)
	}
	return t.w.record(ctx, t.node)
}

// QueryRow runs a one-row query on the node the session calls for (its error comes from Scan).
func (r Reader) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return rowFunc(func(dest ...any) error {
		_, err := r.s.ReadSession(ctx, func(ctx context.Context, q Querier) error {
			return q.QueryRow(ctx, sql, args...).Scan(dest...)
		})
		return err
	})
}

// Query runs a query on the node the session calls for, retrying once elsewhere when the node
// fails before answering. The node counts the read in flight until the rows are closed.
func (r Reader) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	var opts ReadOptions
	if ss := replica.SessionFrom(ctx); ss != nil {
		opts.Strong = ss.Mode() == replica.Strong
		opts.MinLSN = ss.MinLSN(r.s.cfg.Shard)
	}
	var firstErr error
	for attempt := 0; attempt < 2; attempt++ {
		i, _, err := r.s.choose(ctx, opts)
		if err != nil {
			if firstErr != nil {
				return nil, fmt.Errorf("%w (after %v)", err, firstErr)
			}
			return nil, err
		}
		rows, err := r.s.pools[i].Query(ctx, sql, args...)
		if err == nil {
			return &doneRows{Rows: rows, done: func() { r.s.router.Done(i) }}, nil
		}
		r.s.router.Done(i)
		if !retryableRead(err) || ctx.Err() != nil {
			return nil, err
		}
		if nodeFailure(err) {
			r.s.router.ReportFailure(i, time.Now(), err)
		}
		firstErr = err
	}
	return nil, firstErr
}

type doneRows struct {
	pgx.Rows
	done   func()
	closed atomic.Bool
}

func (d *doneRows) Close() {
	d.Rows.Close()
	if !d.closed.Swap(true) {
		d.done()
	}
}

// rowFunc is a pgx.Row whose Scan runs the query.
type rowFunc func(dest ...any) error

func (f rowFunc) Scan(dest ...any) error { return f(dest...) }
