package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/strata-project/strata/config"
	"github.com/strata-project/strata/topology"
)

const upUsage = `Usage: strata up [flags]

Brings the whole diagram up on this machine: a load balancer, app servers (each
a process of this binary), a shared cache tier and the database, each on its own
port, and prints where everything is. Ctrl-C (or SIGTERM) stops it all.

  --engines embedded   (default) a strata cache node and SQLite: nothing to install
  --engines local      a Redis Cluster and PostgreSQL shards with streaming replicas,
                       started from the machine's binaries (Debian: redis-server
                       postgresql); the shards keep their data across runs
  --config FILE        the topology of a configuration file: its up: section (number
                       of app servers, admin address), its app: section for every app
                       server (store and cache: SQLite files, or the addresses of your
                       PostgreSQL, Redis Cluster, Memcached) and its lb: section for the
                       balancer, whose backends are where the app servers listen

Flags:
`

// cmdUp runs `strata up`.
func cmdUp(args []string, stdout, stderr io.Writer) int {
	began := time.Now()
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, upUsage); fs.PrintDefaults() }
	var cfg topology.Config
	configPath := fs.String("config", "", "configuration file (YAML with up:, app: and lb: sections); see docs/examples/up.yaml")
	fs.StringVar(&cfg.DataDir, "data", defaultDataDir(), "data directory (data, generated configuration, logs)")
	fs.BoolVar(&cfg.Fresh, "fresh", false, "start empty: remove the data directory's contents first")
	fs.StringVar(&cfg.Engines, "engines", topology.Embedded, "embedded or local")
	fs.StringVar(&cfg.Listen, "listen", "127.0.0.1:8080", "load balancer address (a free port if taken; default lb.listen with --config)")
	fs.StringVar(&cfg.AdminListen, "admin", "127.0.0.1:8079", "admin API address (a free port if taken; default up.admin with --config)")
	fs.IntVar(&cfg.AppServers, "app-servers", 3, "number of app servers")
	fs.IntVar(&cfg.Shards, "shards", 4, "shards: SQLite files, or PostgreSQL primaries with --engines local")
	fs.IntVar(&cfg.Replicas, "replicas", 2, "streaming replicas per PostgreSQL shard (--engines local)")
	fs.Int64Var(&cfg.CacheBytes, "cache-bytes", 64<<20, "cache node capacity in bytes (--engines embedded)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "strata up: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if abs, err := filepath.Abs(cfg.DataDir); err == nil {
		cfg.DataDir = abs
	}
	what := cfg.Engines + " engines"
	if *configPath != "" {
		// The file describes the tiers; of the flags, only where up listens and keeps its
		// files may be given beside it.
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for _, name := range []string{"engines", "app-servers", "shards", "replicas", "cache-bytes"} {
			if set[name] {
				fmt.Fprintf(stderr, "strata up: --%s and --config: the file describes the tiers (up.app_servers, app.store, app.cache)\n", name)
				return 2
			}
		}
		f, err := config.Load(*configPath)
		if err == nil {
			if err = f.CheckUp(); err != nil {
				err = fmt.Errorf("%s: %w", *configPath, err)
			}
		}
		if err != nil {
			fmt.Fprintln(stderr, "strata up:", err)
			return 2
		}
		cfg.File = f
		cfg.Engines, cfg.AppServers, cfg.Shards, cfg.Replicas, cfg.CacheBytes = "", 0, 0, 0, 0
		if !set["listen"] {
			cfg.Listen = ""
		}
		if !set["admin"] {
			cfg.AdminListen = ""
		}
		what = "configuration " + *configPath
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	cfg.Logger = log

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	fmt.Fprintf(stdout, "strata up: starting (%s, data in %s)\n", what, cfg.DataDir)
	t, err := topology.Start(ctx, cfg)
	if err != nil {
		fmt.Fprintln(stderr, "strata up:", err)
		if errors.Is(err, topology.ErrConfig) {
			return 2
		}
		return 1
	}
	m := t.Map()
	m.Config = *configPath
	fmt.Fprintf(stdout, "strata up: ready in %.2fs\n\n", time.Since(began).Seconds())
	m.Print(stdout, "strata")
	<-ctx.Done()
	stop() // a second Ctrl-C now kills at once
	fmt.Fprintln(stdout, "\nstrata up: stopping")
	closeCtx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if err := t.Close(closeCtx); err != nil {
		fmt.Fprintln(stderr, "strata up:", err)
		return 1
	}
	fmt.Fprintln(stdout, "strata up: stopped")
	return 0
}

// defaultDataDir is $XDG_DATA_HOME/strata/up, else ~/.local/share/strata/up, else a
// directory under the working directory.
func defaultDataDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "strata", "up")
	}
	if h, err := os.UserHomeDir(); err == nil && !strings.HasPrefix(h, "/nonexistent") {
		return filepath.Join(h, ".local", "share", "strata", "up")
	}
	return "strata-up-data"
}
