package engines

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// AOF selects Redis's append-only-file persistence.
type AOF int

const (
	// AOFOff keeps nothing on disk (the default): a killed node restarts empty.
	AOFOff AOF = iota
	// AOFEverySec appends every write and fsyncs once a second.
	AOFEverySec
	// AOFAlways appends and fsyncs every write before replying.
	AOFAlways
)

// RedisOptions configures one redis-server.
type RedisOptions struct {
	// Dir holds the node's files (AOF, cluster state, log). Required.
	Dir string
	// Port to listen on, on 127.0.0.1. Zero picks a free port.
	Port int
	// AOF persistence. Default AOFOff.
	AOF AOF
	// Args are extra redis-server arguments, e.g. "--maxmemory", "64mb".
	Args []string

	cluster     bool
	nodeTimeout time.Duration
}

// Redis is one redis-server child process. Its fault handles (Stop, Kill, Pause, Resume) act on
// the server process; Restart brings it back on the same port with the same directory.
type Redis struct {
	*process
	opts RedisOptions
	addr string
}

// StartRedis starts a redis-server and waits until it answers PING. Without
// RedisOptions.Port it runs on a free port, moving to another if that one is taken before
// the server binds it (see onFreePort).
func StartRedis(ctx context.Context, opts RedisOptions) (*Redis, error) {
	return startRedis(ctx, opts, FreePort)
}

func startRedis(ctx context.Context, opts RedisOptions, pick func() (int, error)) (*Redis, error) {
	bin, err := LookBinary("redis-server")
	if err != nil {
		return nil, err
	}
	if opts.Dir == "" {
		return nil, errors.New("engines: RedisOptions.Dir is required")
	}
	if err := makeDir(opts.Dir, runAs{}); err != nil {
		return nil, err
	}
	switch opts.AOF {
	case AOFOff, AOFEverySec, AOFAlways:
	default:
		return nil, fmt.Errorf("engines: unknown AOF mode %d", opts.AOF)
	}
	var r *Redis
	err = onFreePort(opts.Port, pick, func(port int) error {
		opts.Port = port
		r = newRedis(bin, opts)
		err := r.Restart(ctx)
		if err != nil {
			r.close()
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return r, nil
}

// newRedis returns the (not started) server of opts, whose Port is set.
func newRedis(bin string, opts RedisOptions) *Redis {
	args := []string{
		"--port", strconv.Itoa(opts.Port),
		"--bind", "127.0.0.1",
		"--dir", opts.Dir,
		"--daemonize", "no",
		"--save", "",
		"--logfile", "",
	}
	switch opts.AOF {
	case AOFOff:
		args = append(args, "--appendonly", "no")
	case AOFEverySec:
		args = append(args, "--appendonly", "yes", "--appendfsync", "everysec")
	case AOFAlways:
		args = append(args, "--appendonly", "yes", "--appendfsync", "always")
	}
	if opts.cluster {
		args = append(args,
			"--cluster-enabled", "yes",
			"--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", strconv.FormatInt(opts.nodeTimeout.Milliseconds(), 10),
			// A master sends its data to a new replica at once, instead of waiting (5s by
			// default) for more replicas to share one transfer: on one machine there is
			// nothing to save, and a cluster's replicas attach one by one.
			"--repl-diskless-sync-delay", "0",
		)
	}
	args = append(args, opts.Args...)
	return &Redis{
		process: &process{
			name:    "redis-server:" + strconv.Itoa(opts.Port),
			bin:     bin,
			args:    args,
			logPath: filepath.Join(opts.Dir, "redis.log"),
			stopSig: syscall.SIGTERM,
		},
		opts: opts,
		addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(opts.Port)),
	}
}

// Addr returns the node's host:port.
func (r *Redis) Addr() string { return r.addr }

// Dir returns the node's directory.
func (r *Redis) Dir() string { return r.opts.Dir }

// Restart starts the server again (after Stop or Kill) on the same port and directory, and waits
// until it answers PING (for an AOF node: until it has loaded its data).
func (r *Redis) Restart(ctx context.Context) error {
	if err := r.start(); err != nil {
		return err
	}
	return waitFor(ctx, r.process, "PING", func(ctx context.Context) error {
		s, err := redisString(ctx, r.addr, "PING")
		if err == nil && s != "PONG" {
			err = fmt.Errorf("PING answered %q", s)
		}
		return err
	})
}

// Do sends one administrative command to the node (see RedisDo).
func (r *Redis) Do(ctx context.Context, args ...string) (any, error) {
	return RedisDo(ctx, r.addr, args...)
}

// Close kills the server if it runs. The directory is left for the caller to remove.
func (r *Redis) Close() error {
	r.close()
	return nil
}
