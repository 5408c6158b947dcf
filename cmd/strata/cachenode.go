package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/strata-project/strata/cache/memstore"
	"github.com/strata-project/strata/cachenode"
	"github.com/strata-project/strata/topology"
)

// cmdCacheNode runs `strata cachenode`: the embedded shared cache tier, until SIGTERM or
// SIGINT. The token comes from the environment, never from the command line.
func cmdCacheNode(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("cachenode", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:7379", "listen address")
	maxBytes := fs.Int64("max-bytes", memstore.DefaultMaxBytes, "capacity in bytes (keys, values and overhead)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: strata cachenode [flags]\n\nServes a shared in-memory cache to app servers. The shared token (16 bytes or more)\nis read from the environment variable %s.\n\nFlags:\n", topology.EnvCacheToken)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	token := os.Getenv(topology.EnvCacheToken)
	os.Unsetenv(topology.EnvCacheToken)
	log := slog.New(slog.NewJSONHandler(stderr, nil))
	mem, err := memstore.New(memstore.Config{MaxBytes: *maxBytes})
	if err != nil {
		fmt.Fprintln(stderr, "strata cachenode:", err)
		return 2
	}
	defer mem.Close()
	srv, err := cachenode.New(cachenode.Config{Store: mem, Token: []byte(token), Logger: log})
	if err != nil {
		fmt.Fprintf(stderr, "strata cachenode: %v (set %s)\n", err, topology.EnvCacheToken)
		return 2
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(stderr, "strata cachenode:", err)
		return 1
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, os.Interrupt)
	defer signal.Stop(sigs)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	fmt.Fprintln(stdout, "strata cachenode: listening on", ln.Addr())
	select {
	case s := <-sigs:
		log.Info("strata cachenode: stopping", "signal", s.String())
		srv.Close()
		<-done
		return 0
	case err := <-done:
		fmt.Fprintln(stderr, "strata cachenode:", err)
		return 1
	}
}
