package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/strata-project/strata/config"
	"github.com/strata-project/strata/dashboard"
	"github.com/strata-project/strata/lb"
)

const lbUsage = `Usage: strata lb [flags]

Runs the load balancer. Settings come from the lb: section of -config; the
flags below override it (or replace it when there is no file). SIGHUP reloads
the file's backends without failing in-flight requests; SIGINT and SIGTERM
shut down gracefully.

Flags:
`

// cmdLB runs `strata lb`.
func cmdLB(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("lb", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, lbUsage); fs.PrintDefaults() }
	path := fs.String("config", "", "configuration file (YAML with an lb: section)")
	listen := fs.String("listen", "", "listen address (default :8080)")
	backends := fs.String("backends", "", "comma-separated backend host:port list")
	policy := fs.String("policy", "", "policy: "+strings.Join(config.Policies, ", "))
	noHealth := fs.Bool("no-health-checks", false, "disable active health checks")
	adminListen := fs.String("admin", "", "admin listen address")
	check := fs.Bool("check", false, "validate the configuration and exit")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	load := func() (*config.LB, error) {
		c := &config.LB{}
		if *path != "" {
			f, err := config.Load(*path)
			if err != nil {
				return nil, err
			}
			if f.LB == nil {
				return nil, fmt.Errorf("%s: no lb: section", *path)
			}
			c = f.LB
		}
		if *listen != "" {
			c.Listen = *listen
		}
		if *backends != "" {
			c.Backends = nil
			for _, a := range strings.Split(*backends, ",") {
				c.Backends = append(c.Backends, config.Backend{Address: strings.TrimSpace(a)})
			}
		}
		if *policy != "" {
			c.Policy = *policy
		}
		if *noHealth {
			c.Health.Disabled = true
		}
		if *adminListen != "" {
			c.Admin.Listen = *adminListen
		}
		if err := (&config.File{LB: c}).Validate(); err != nil {
			return nil, err
		}
		return c, nil
	}
	fc, err := load()
	if err != nil {
		fmt.Fprintln(stderr, "strata lb:", err)
		return 2
	}
	cfg, keys, err := lb.FromConfig(fc)
	if err != nil {
		fmt.Fprintln(stderr, "strata lb:", err)
		return 2
	}
	if *check {
		fmt.Fprintln(stdout, "strata lb: configuration is valid")
		return 0
	}
	cfg.Logger = log
	l, err := lb.New(cfg)
	if err != nil {
		fmt.Fprintln(stderr, "strata lb:", err)
		return 1
	}
	defer l.Close()
	addr := fc.Listen
	if addr == "" {
		addr = ":8080"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		fmt.Fprintln(stderr, "strata lb:", err)
		return 1
	}
	var adminSrv *http.Server
	var adminLn net.Listener
	if fc.Admin.Listen != "" {
		h, err := l.AdminHandler(keys, prometheus.NewRegistry())
		if err != nil {
			fmt.Fprintln(stderr, "strata lb:", err)
			return 1
		}
		if adminLn, err = net.Listen("tcp", fc.Admin.Listen); err != nil {
			ln.Close()
			fmt.Fprintln(stderr, "strata lb:", err)
			return 1
		}
		dash, err := dashboard.New(dashboard.Config{
			Source:    &lbSource{l: l, addr: fc.Listen},
			Title:     "strata lb",
			Authorize: loopbackOrAdminKey(keys),
			Logger:    log,
		})
		if err != nil {
			ln.Close()
			adminLn.Close()
			fmt.Fprintln(stderr, "strata lb:", err)
			return 1
		}
		defer dash.Close()
		mux := http.NewServeMux()
		mux.Handle("/dashboard/", http.StripPrefix("/dashboard", dash))
		mux.Handle("/", h)
		adminSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	}

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	serveErr := make(chan error, 2)
	go func() { serveErr <- l.Serve(ln) }()
	if adminSrv != nil {
		go func() { serveErr <- adminSrv.Serve(adminLn) }()
		fmt.Fprintln(stdout, "strata lb: admin on", adminLn.Addr())
	}
	fmt.Fprintln(stdout, "strata lb: listening on", ln.Addr())

	shutdownTimeout := fc.Limits.ShutdownTimeout.D()
	if shutdownTimeout == 0 {
		shutdownTimeout = 30 * time.Second
	}
	for {
		select {
		case err := <-serveErr:
			fmt.Fprintln(stderr, "strata lb:", err)
			return 1
		case s := <-sigs:
			if s == syscall.SIGHUP {
				nc, err := load()
				if err == nil {
					var ncfg lb.Config
					if ncfg, _, err = lb.FromConfig(nc); err == nil {
						err = l.SetBackends(ncfg.Backends)
					}
				}
				if err != nil {
					log.Error("strata lb: reload failed; keeping the running configuration", "err", err)
				} else {
					log.Info("strata lb: reloaded backends", "backends", len(nc.Backends))
				}
				continue
			}
			log.Info("strata lb: shutting down", "signal", s.String())
			ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
			if adminSrv != nil {
				adminSrv.Shutdown(ctx)
			}
			err := l.Shutdown(ctx)
			cancel()
			if err != nil {
				log.Error("strata lb: shutdown cut short", "err", err)
				return 1
			}
			return 0
		}
	}
}
