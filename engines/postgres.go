package engines

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/strata-project/strata/replica"
)

// PostgresOptions configures a PostgreSQL primary with streaming replicas.
type PostgresOptions struct {
	// Dir holds one subdirectory per node. Required.
	Dir string
	// Replicas is the number of streaming replicas. Default 0.
	Replicas int
	// Durable turns fsync and full-page writes on. Default off: the test bed trades crash
	// safety of the whole machine (which tests do not exercise) for speed; a killed server still
	// recovers everything it acknowledged, since the operating system keeps its writes.
	Durable bool
	// Settings are extra server settings (name -> value), applied to every node.
	Settings map[string]string
	// Reuse starts on what an earlier cluster left in Dir: a primary whose data directory
	// holds a cluster skips initdb and starts on its data, and a replica that has data
	// resumes streaming from where it stopped (the primary's new port reaches it on its
	// command line); a replica without data is cloned as usual. Without a primary's data,
	// the replicas' old data is removed and they are cloned anew. Default false: Dir must
	// not hold a cluster yet.
	Reuse bool
}

// PostgresCluster is a PostgreSQL primary and its streaming replicas, each a child process.
type PostgresCluster struct {
	Primary  *PGNode
	Replicas []*PGNode
	opts     PostgresOptions
	binDir   string
	acct     runAs
}

// PGNode is one PostgreSQL server. Its fault handles (Stop, Kill, Pause, Resume) act on the
// postmaster and every backend; Restart brings it back on the same port and data directory.
type PGNode struct {
	*process
	Name    string // "primary", "replica1", ...
	port    int
	dataDir string
}

// pgUser is the superuser created by initdb and used by every connection the package makes.
const pgUser = "postgres"

// StartPostgres initialises a primary, starts it, clones each replica from it with
// pg_basebackup and waits until the primary's pg_stat_replication lists every replica as
// streaming.
func StartPostgres(ctx context.Context, opts PostgresOptions) (*PostgresCluster, error) {
	if opts.Dir == "" {
		return nil, errors.New("engines: PostgresOptions.Dir is required")
	}
	if opts.Replicas < 0 || opts.Replicas > 16 {
		return nil, fmt.Errorf("engines: bad replica count %d (0..16)", opts.Replicas)
	}
	binDir, err := postgresBinDir()
	if err != nil {
		return nil, err
	}
	acct, err := serviceAccount()
	if err != nil {
		return nil, err
	}
	c := &PostgresCluster{opts: opts, binDir: binDir, acct: acct}
	c.Primary, err = c.newNode("primary")
	if err != nil {
		return nil, err
	}
	reused := opts.Reuse && hasCluster(c.Primary.dataDir)
	if !reused {
		if out, err := c.tool(ctx, "initdb", "-D", c.Primary.dataDir, "-U", pgUser, "-A", "trust",
			"-E", "UTF8", "--locale=C", "--no-sync"); err != nil {
			return nil, fmt.Errorf("engines: initdb: %w\n%s", err, out)
		}
	}
	if err := c.Primary.startNew(ctx); err != nil {
		c.Close()
		return nil, err
	}
	c.Replicas = make([]*PGNode, opts.Replicas)
	errs := make([]error, opts.Replicas)
	var wg sync.WaitGroup
	for i := range opts.Replicas {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Replicas[i], errs[i] = c.startReplica(ctx, fmt.Sprintf("replica%d", i+1), reused)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.Close()
		return nil, err
	}
	if err := c.WaitStreaming(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *PostgresCluster) newNode(name string) (*PGNode, error) {
	dir := filepath.Join(c.opts.Dir, name)
	if err := makeDir(dir, c.acct); err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	n := &PGNode{Name: name, port: port, dataDir: filepath.Join(dir, "data")}
	args := []string{
		"-D", n.dataDir,
		"-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1",
		"-c", "unix_socket_directories=",
		"-c", "cluster_name=" + name, // the application_name a replica streams under
		"-c", "wal_level=replica",
		"-c", "max_wal_senders=20",
		"-c", "wal_keep_size=256MB",
		"-c", "hot_standby=on",
		"-c", "shared_buffers=32MB",
		"-c", "max_connections=200",
		// A replica whose primary restarted reconnects after this long (default 5s).
		"-c", "wal_retrieve_retry_interval=200ms",
	}
	if !c.opts.Durable {
		args = append(args, "-c", "fsync=off", "-c", "full_page_writes=off")
	}
	for k, v := range c.opts.Settings {
		args = append(args, "-c", k+"="+v)
	}
	n.process = &process{
		name:    "postgres:" + name + ":" + strconv.Itoa(port),
		bin:     filepath.Join(c.binDir, "postgres"),
		args:    args,
		logPath: filepath.Join(dir, "postgres.log"),
		cred:    c.acct.cred,
		stopSig: syscall.SIGINT, // fast shutdown: roll back open transactions, checkpoint, exit
	}
	return n, nil
}

// hasCluster reports whether dir holds an initialised PostgreSQL data directory.
func hasCluster(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "PG_VERSION"))
	return err == nil
}

// startReplica clones a replica from the primary and starts it; with resume, a replica that
// has data from an earlier run starts on it instead.
func (c *PostgresCluster) startReplica(ctx context.Context, name string, resume bool) (*PGNode, error) {
	n, err := c.newNode(name)
	if err != nil {
		return nil, err
	}
	if resume && hasCluster(n.dataDir) {
		// The primary listens on a new port: the command line overrides the primary_conninfo
		// that pg_basebackup wrote.
		n.args = append(n.args, "-c", fmt.Sprintf("primary_conninfo=host=127.0.0.1 port=%d user=%s", c.Primary.port, pgUser))
	} else {
		if c.opts.Reuse {
			// Data of a replica whose primary was made anew cannot stream from it.
			if err := os.RemoveAll(n.dataDir); err != nil {
				return nil, fmt.Errorf("engines: %w", err)
			}
		}
		if out, err := c.tool(ctx, "pg_basebackup", "-h", "127.0.0.1", "-p", strconv.Itoa(c.Primary.port),
			"-U", pgUser, "-D", n.dataDir, "-R", "-X", "stream", "-c", "fast", "--no-sync"); err != nil {
			return nil, fmt.Errorf("engines: pg_basebackup for %s: %w\n%s", name, err, out)
		}
	}
	if err := n.startNew(ctx); err != nil {
		n.close()
		return nil, err
	}
	return n, nil
}

// tool runs a PostgreSQL command-line tool as the service account.
func (c *PostgresCluster) tool(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.binDir, name), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.acct.cred, Pdeathsig: syscall.SIGKILL}
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Nodes returns the primary followed by the replicas.
func (c *PostgresCluster) Nodes() []*PGNode {
	return append([]*PGNode{c.Primary}, c.Replicas...)
}

// WaitStreaming waits until the primary lists every running replica as streaming.
func (c *PostgresCluster) WaitStreaming(ctx context.Context) error {
	var want []string
	for _, r := range c.Replicas {
		if r.Running() && !r.Paused() {
			want = append(want, r.Name)
		}
	}
	if len(want) == 0 {
		return nil
	}
	return waitFor(ctx, c.Primary.process, "replicas streaming", func(ctx context.Context) error {
		var n int
		err := c.Primary.QueryRow(ctx, "postgres",
			`SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming' AND application_name = ANY($1)`,
			[]any{want}, &n)
		if err != nil {
			return err
		}
		if n != len(want) {
			return fmt.Errorf("%d of %d replicas streaming", n, len(want))
		}
		return nil
	})
}

// CreateDatabase creates a database on the primary (replicas receive it through the WAL).
// The name must be a plain identifier.
func (c *PostgresCluster) CreateDatabase(ctx context.Context, name string) error {
	if !isIdent(name) {
		return fmt.Errorf("engines: bad database name %q", name)
	}
	if err := c.Primary.Exec(ctx, "postgres", "CREATE DATABASE "+name); err != nil {
		return err
	}
	return c.WaitReplayed(ctx)
}

// WaitReplayed waits until every running, unpaused replica has replayed everything the primary
// has written so far.
func (c *PostgresCluster) WaitReplayed(ctx context.Context) error {
	target, err := c.Primary.CurrentLSN(ctx)
	if err != nil {
		return err
	}
	for _, r := range c.Replicas {
		if !r.Running() || r.Paused() {
			continue
		}
		err := waitFor(ctx, r.process, "replay to catch up", func(ctx context.Context) error {
			got, err := r.ReplayLSN(ctx)
			if err == nil && got < target {
				err = fmt.Errorf("replayed %X of %X", got, target)
			}
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// Close kills every node. It is safe after a partial start.
func (c *PostgresCluster) Close() error {
	var wg sync.WaitGroup
	for _, n := range c.Nodes() {
		if n != nil && n.process != nil {
			wg.Add(1)
			go func() { defer wg.Done(); n.close() }()
		}
	}
	wg.Wait()
	return nil
}

// Addr returns the node's host:port.
func (n *PGNode) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(n.port)) }

// DataDir returns the node's data directory.
func (n *PGNode) DataDir() string { return n.dataDir }

// DSN returns a connection URL for database db on this node, with a connect timeout.
func (n *PGNode) DSN(db string) string {
	return fmt.Sprintf("postgres://%s@%s/%s?sslmode=disable&connect_timeout=5", pgUser, n.Addr(), db)
}

// startNew starts a node for the first time. The port FreePort chose can be taken by another
// process of the machine before the server binds it (test packages start engines at the same
// time): the server then exits with "Address already in use", and the node is started again
// on another port, up to three times.
func (n *PGNode) startNew(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		err := n.Restart(ctx)
		if err == nil || attempt == 3 || !portTaken(err) {
			return err
		}
		port, perr := FreePort()
		if perr != nil {
			return err
		}
		for i := range n.args {
			if n.args[i] == "-p" && i+1 < len(n.args) {
				n.args[i+1] = strconv.Itoa(port)
			}
		}
		n.port = port
		n.process.name = "postgres:" + n.Name + ":" + strconv.Itoa(port)
	}
}

// Restart starts the server again (after Stop or Kill) on the same port and data directory,
// and waits until it accepts queries. A killed primary goes through crash recovery; a replica
// resumes streaming from where it was.
func (n *PGNode) Restart(ctx context.Context) error {
	if err := n.start(); err != nil {
		return err
	}
	return waitFor(ctx, n.process, "SELECT 1", func(ctx context.Context) error {
		var one int
		return n.QueryRow(ctx, "postgres", "SELECT 1", nil, &one)
	})
}

// Exec runs one statement on database db of this node over a new connection.
func (n *PGNode) Exec(ctx context.Context, db, sql string, args ...any) error {
	conn, err := n.connect(ctx, db)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("engines: %s: %w", n.Name, err)
	}
	return nil
}

// QueryRow runs one query on database db of this node and scans its single row into dest.
func (n *PGNode) QueryRow(ctx context.Context, db, sql string, args []any, dest ...any) error {
	conn, err := n.connect(ctx, db)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(ctx, sql, args...).Scan(dest...); err != nil {
		return fmt.Errorf("engines: %s: %w", n.Name, err)
	}
	return nil
}

func (n *PGNode) connect(ctx context.Context, db string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(n.DSN(db))
	if err != nil {
		return nil, err
	}
	cfg.ConnectTimeout = 5 * time.Second
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("engines: %s: %w", n.Name, err)
	}
	return conn, nil
}

// InRecovery reports whether the node is a standby (pg_is_in_recovery()).
func (n *PGNode) InRecovery(ctx context.Context) (bool, error) {
	var b bool
	err := n.QueryRow(ctx, "postgres", "SELECT pg_is_in_recovery()", nil, &b)
	return b, err
}

// CurrentLSN returns the primary's current WAL write position (pg_current_wal_lsn()).
func (n *PGNode) CurrentLSN(ctx context.Context) (uint64, error) {
	return n.lsn(ctx, "SELECT pg_current_wal_lsn()::text")
}

// ReplayLSN returns the position up to which a replica has replayed WAL
// (pg_last_wal_replay_lsn()).
func (n *PGNode) ReplayLSN(ctx context.Context) (uint64, error) {
	return n.lsn(ctx, "SELECT coalesce(pg_last_wal_replay_lsn()::text, '0/0')")
}

func (n *PGNode) lsn(ctx context.Context, q string) (uint64, error) {
	var s string
	if err := n.QueryRow(ctx, "postgres", q, nil, &s); err != nil {
		return 0, err
	}
	return ParseLSN(s)
}

// PauseReplay stops WAL replay on a replica (pg_wal_replay_pause()): it keeps receiving WAL
// but its data stays where it was, so it lags on demand.
func (n *PGNode) PauseReplay(ctx context.Context) error {
	if err := n.Exec(ctx, "postgres", "SELECT pg_wal_replay_pause()"); err != nil {
		return err
	}
	// Pausing takes effect at the next record: wait until the server says it has.
	return waitFor(ctx, n.process, "replay paused", func(ctx context.Context) error {
		var state string
		if err := n.QueryRow(ctx, "postgres", "SELECT pg_get_wal_replay_pause_state()", nil, &state); err != nil {
			return err
		}
		if state != "paused" {
			return fmt.Errorf("replay pause state %q", state)
		}
		return nil
	})
}

// ResumeReplay resumes WAL replay on a replica (pg_wal_replay_resume()).
func (n *PGNode) ResumeReplay(ctx context.Context) error {
	return n.Exec(ctx, "postgres", "SELECT pg_wal_replay_resume()")
}

// Promote turns a replica into a primary (pg_promote()) and waits until it accepts writes.
func (n *PGNode) Promote(ctx context.Context) error {
	var ok bool
	if err := n.QueryRow(ctx, "postgres", "SELECT pg_promote(true, 60)", nil, &ok); err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("engines: %s: promotion did not finish", n.Name)
	}
	return nil
}

// ParseLSN parses a PostgreSQL LSN of the form "16/B374D848" into a byte position.
func ParseLSN(s string) (uint64, error) {
	l, err := replica.ParseLSN(s)
	return uint64(l), err
}

func isIdent(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r == '_':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
