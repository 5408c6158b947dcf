// Package pgreplica drives a replica.Router for one PostgreSQL shard: a primary and its
// streaming replicas, each reached through its own pgx connection pool.
//
// A prober goroutine asks every node, every ProbeInterval, whether it is in recovery and how
// far its WAL has gone (one query per node), and feeds the answers to the router. Queries that
// fail for a reason that concerns the node (connection refused or reset, shutdown, timeout) ban
// it at once, without waiting for the next probe.
//
// Writes run in a transaction on the primary and return the WAL position after their commit,
// for read-your-writes tokens. Reads run on a replica chosen by the router, on the primary when
// no replica qualifies, and are retried once elsewhere when the chosen node fails under them,
// so that a replica dying in the middle of a stream of reads fails none of them.
package pgreplica

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strata-project/strata/replica"
)

// Node names one server and how to reach it.
type Node struct {
	Name string // for logs, metrics and ReadInfo
	DSN  string // a PostgreSQL connection URL or key=value string
}

// Config describes one shard. Zero values are defaults.
type Config struct {
	// Shard is the shard's number in read-your-writes tokens.
	Shard    uint32
	Primary  Node
	Replicas []Node
	// Router tunes lag bounds, bans and the replica policy.
	Router replica.Config
	// ProbeInterval is how often every node is probed. Default 250ms. The time to notice a dead
	// node that no query touches is about one interval.
	ProbeInterval time.Duration
	// ProbeTimeout bounds one probe, connection included. Default 1s.
	ProbeTimeout time.Duration
	// QueryTimeout bounds each Read or Write attempt that has no earlier deadline. Default 5s.
	QueryTimeout time.Duration
	// TokenWait is how long a read whose token no replica has reached may wait for one to
	// catch up when the primary cannot serve it. Default 500ms.
	TokenWait time.Duration
	// MaxConns is the pool size per node. Default 16.
	MaxConns int32
	// Logger receives role changes and bans. Default: slog.Default().
	Logger *slog.Logger
}

// ReadOptions say what a read needs.
type ReadOptions struct {
	// Strong sends the read to the primary.
	Strong bool
	// MinLSN is the position the session's token requires on this shard (0: none).
	MinLSN replica.LSN
}

// ReadInfo says where a read was served.
type ReadInfo struct {
	Node    string
	Primary bool
	// Lag is the serving replica's lag when it was chosen (0 on the primary).
	Lag time.Duration
}

// Set is one shard's nodes with their router and prober. It is safe for concurrent use.
type Set struct {
	cfg    Config
	router *replica.Router
	nodes  []Node
	pools  []*pgxpool.Pool
	probes []*pgxpool.Pool
	log    *slog.Logger
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
}

// Open connects to every node lazily (a node that is down does not stop Open), runs one
// probe round so that the set is usable at once, and starts the prober.
func Open(ctx context.Context, cfg Config) (*Set, error) {
	if cfg.Primary.DSN == "" {
		return nil, errors.New("pgreplica: Primary.DSN is required")
	}
	if cfg.ProbeInterval <= 0 {
		cfg.ProbeInterval = 250 * time.Millisecond
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = time.Second
	}
	if cfg.QueryTimeout <= 0 {
		cfg.QueryTimeout = 5 * time.Second
	}
	if cfg.TokenWait <= 0 {
		cfg.TokenWait = 500 * time.Millisecond
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 16
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	nodes := append([]Node{cfg.Primary}, cfg.Replicas...)
	names := make([]string, len(nodes))
	for i, n := range nodes {
		names[i] = n.Name
		if names[i] == "" {
			names[i] = fmt.Sprintf("node%d", i)
			nodes[i].Name = names[i]
		}
	}
	router, err := replica.NewRouter(cfg.Router, names, 0)
	if err != nil {
		return nil, err
	}
	s := &Set{cfg: cfg, router: router, nodes: nodes, log: cfg.Logger,
		stop: make(chan struct{}), done: make(chan struct{})}
	for _, n := range nodes {
		pool, err := newPool(n.DSN, cfg.MaxConns, cfg.ProbeTimeout)
		if err != nil {
			s.closePools()
			return nil, fmt.Errorf("pgreplica: %s: %w", n.Name, err)
		}
		probe, err := newPool(n.DSN, 1, cfg.ProbeTimeout)
		if err != nil {
			pool.Close()
			s.closePools()
			return nil, fmt.Errorf("pgreplica: %s: %w", n.Name, err)
		}
		s.pools = append(s.pools, pool)
		s.probes = append(s.probes, probe)
	}
	s.probeAll(ctx)
	go s.run()
	return s, nil
}

func newPool(dsn string, maxConns int32, connectTimeout time.Duration) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	pc.MaxConns = maxConns
	pc.ConnConfig.ConnectTimeout = connectTimeout
	return pgxpool.NewWithConfig(context.Background(), pc)
}

// Router returns the decision core, for status and metrics.
func (s *Set) Router() *replica.Router { return s.router }

// Status describes every node now.
func (s *Set) Status() []replica.NodeStatus { return s.router.Status(time.Now()) }

// Close stops the prober and closes every pool. It is safe to call more than once.
func (s *Set) Close() {
	s.once.Do(func() {
		close(s.stop)
		<-s.done
		s.closePools()
	})
}

func (s *Set) closePools() {
	for _, p := range s.pools {
		p.Close()
	}
	for _, p := range s.probes {
		p.Close()
	}
}

func (s *Set) run() {
	defer close(s.done)
	t := time.NewTicker(s.cfg.ProbeInterval)
	defer t.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-s.stop; cancel() }()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.probeAll(ctx)
		}
	}
}

// probeAll probes every node in parallel and records the answers.
func (s *Set) probeAll(ctx context.Context) {
	var wg sync.WaitGroup
	for i := range s.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.router.Observe(s.probe(ctx, i))
		}()
	}
	wg.Wait()
}

const probeSQL = `SELECT pg_is_in_recovery(),
	(CASE WHEN pg_is_in_recovery() THEN coalesce(pg_last_wal_replay_lsn(), '0/0') ELSE pg_current_wal_lsn() END)::text`

func (s *Set) probe(ctx context.Context, i int) replica.Observation {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ProbeTimeout)
	defer cancel()
	var inRecovery bool
	var lsnText string
	err := s.probes[i].QueryRow(ctx, probeSQL).Scan(&inRecovery, &lsnText)
	now := time.Now()
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			err = fmt.Errorf("probe cancelled: %w", err)
		}
		return replica.Observation{Node: i, At: now, Err: err}
	}
	lsn, err := replica.ParseLSN(lsnText)
	if err != nil {
		return replica.Observation{Node: i, At: now, Err: err}
	}
	role := replica.RolePrimary
	if inRecovery {
		role = replica.RoleReplica
	}
	return replica.Observation{Node: i, At: now, Role: role, LSN: lsn}
}

// nodeFailure reports whether err says the node itself is unusable (as opposed to a problem
// with the query), so that it should be banned and the query retried elsewhere.
func nodeFailure(err error) bool {
	if err == nil {
		return false
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case len(pgErr.Code) >= 2 && pgErr.Code[:2] == "08": // connection exception
			return true
		case pgErr.Code == "57P01", pgErr.Code == "57P02", pgErr.Code == "57P03": // shutdown, cannot connect now
			return true
		case pgErr.Code == "25006": // read-only transaction: a demoted primary
			return true
		}
		return false
	}
	var connErr *pgconn.ConnectError
	var netErr net.Error
	return errors.As(err, &connErr) || errors.As(err, &netErr) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, context.DeadlineExceeded) || pgconn.SafeToRetry(err)
}

// retryableRead reports whether a read that failed with err may be sent to another node: the
// node failed, or a replica cancelled the query for a conflict with recovery.
func retryableRead(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "40001" {
		return true
	}
	return nodeFailure(err)
}

func (s *Set) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, s.cfg.QueryTimeout)
}

// Write runs fn in a transaction on the primary and returns the primary's WAL position after
// the commit: a replica that has replayed it sees the write. With no usable primary it fails at
// once with an error wrapping replica.ErrNoPrimary.
func (s *Set) Write(ctx context.Context, fn func(ctx context.Context, tx pgx.Tx) error) (replica.LSN, error) {
	i, err := s.router.Primary(time.Now())
	if err != nil {
		return 0, err
	}
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	conn, err := s.pools[i].Acquire(ctx)
	if err != nil {
		return 0, s.failed(i, err)
	}
	defer conn.Release()
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { return fn(ctx, tx) })
	if err != nil {
		return 0, s.failed(i, err)
	}
	var lsnText string
	if err := conn.QueryRow(ctx, "SELECT pg_current_wal_lsn()::text").Scan(&lsnText); err != nil {
		// The commit succeeded; only its position is unknown. Report the write done with the
		// position 0 would break read-your-writes, so report the failure.
		return 0, s.failed(i, fmt.Errorf("pgreplica: write committed but its position is unknown: %w", err))
	}
	return replica.ParseLSN(lsnText)
}

// failed bans node i when err concerns the node, and returns err with ErrNoPrimary's or the
// node's context.
func (s *Set) failed(i int, err error) error {
	if nodeFailure(err) {
		s.router.ReportFailure(i, time.Now(), err)
		s.log.Warn("pgreplica: node failed", "node", s.nodes[i].Name, "err", err)
		return fmt.Errorf("%w: %s: %w", replica.ErrNoPrimary, s.nodes[i].Name, err)
	}
	return err
}

// WriteSession is Write for a request whose consistency travels in ctx (replica.WithSession):
// the commit position is recorded in the session, for the token handed back to the client.
func (s *Set) WriteSession(ctx context.Context, fn func(ctx context.Context, tx pgx.Tx) error) error {
	lsn, err := s.Write(ctx, fn)
	if err != nil {
		return err
	}
	if ss := replica.SessionFrom(ctx); ss != nil {
		ss.Wrote(s.cfg.Shard, lsn)
	}
	return nil
}

// ReadSession is Read for a request whose consistency travels in ctx: strong reads go to the
// primary, session reads need the session token's position on this shard, and reads without
// a session are eventual.
func (s *Set) ReadSession(ctx context.Context, fn func(ctx context.Context, q Querier) error) (ReadInfo, error) {
	var opts ReadOptions
	if ss := replica.SessionFrom(ctx); ss != nil {
		opts.Strong = ss.Mode() == replica.Strong
		opts.MinLSN = ss.MinLSN(s.cfg.Shard)
	}
	return s.Read(ctx, opts, fn)
}

// Read runs fn on the node chosen for opts and says which node served it. If the node fails
// under the read (or a replica cancels it for a recovery conflict), the read is retried once on
// another node.
func (s *Set) Read(ctx context.Context, opts ReadOptions, fn func(ctx context.Context, q Querier) error) (ReadInfo, error) {
	var firstErr error
	for attempt := 0; attempt < 2; attempt++ {
		i, info, err := s.choose(ctx, opts)
		if err != nil {
			if firstErr != nil {
				return info, fmt.Errorf("%w (after %v)", err, firstErr)
			}
			return info, err
		}
		err = s.readOn(ctx, i, fn)
		s.router.Done(i)
		if err == nil {
			return info, nil
		}
		if !retryableRead(err) || ctx.Err() != nil {
			return info, err
		}
		if nodeFailure(err) {
			s.router.ReportFailure(i, time.Now(), err)
		}
		firstErr = err
	}
	return ReadInfo{}, firstErr
}

func (s *Set) readOn(ctx context.Context, i int, fn func(ctx context.Context, q Querier) error) error {
	ctx, cancel := s.withTimeout(ctx)
	defer cancel()
	return fn(ctx, s.pools[i])
}

// choose picks the node for a read and counts it in flight.
func (s *Set) choose(ctx context.Context, opts ReadOptions) (int, ReadInfo, error) {
	now := time.Now()
	if !opts.Strong {
		if i, err := s.router.PickRead(now, opts.MinLSN); err == nil {
			return i, s.info(i, now), nil
		}
	}
	if p, err := s.router.Primary(now); err == nil {
		s.router.Begin(p)
		return p, ReadInfo{Node: s.nodes[p].Name, Primary: true}, nil
	} else if opts.Strong {
		return -1, ReadInfo{}, err
	}
	// No primary: serve from what can be reached.
	if opts.MinLSN == 0 {
		// An eventual read may go to any live replica, past the lag bound.
		return s.anyReplica(now)
	}
	// A token read waits, up to TokenWait, for a replica to reach the token.
	deadline := time.NewTimer(s.cfg.TokenWait)
	defer deadline.Stop()
	tick := time.NewTicker(s.cfg.ProbeInterval / 4)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return -1, ReadInfo{}, ctx.Err()
		case <-deadline.C:
			return -1, ReadInfo{}, fmt.Errorf("%w: none reached %v within %v and the primary is down", replica.ErrNoReplica, opts.MinLSN, s.cfg.TokenWait)
		case <-tick.C:
			if i, err := s.router.PickRead(time.Now(), opts.MinLSN); err == nil {
				return i, s.info(i, time.Now()), nil
			}
		}
	}
}

func (s *Set) anyReplica(now time.Time) (int, ReadInfo, error) {
	for i, st := range s.router.Status(now) {
		if st.Role == replica.RoleReplica && !st.Banned && !st.Fenced && st.Failures == 0 {
			s.router.Begin(i)
			return i, ReadInfo{Node: st.Name, Lag: st.Lag}, nil
		}
	}
	return -1, ReadInfo{}, fmt.Errorf("%w and the primary is down", replica.ErrNoReplica)
}

func (s *Set) info(i int, now time.Time) ReadInfo {
	st := s.router.Status(now)[i]
	return ReadInfo{Node: st.Name, Lag: st.Lag}
}

// Querier is what a read runs its queries on (a pool; never a transaction).
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

var _ Querier = (*pgxpool.Pool)(nil)
