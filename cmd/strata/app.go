package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/strata-project/strata/config"
	"github.com/strata-project/strata/ratelimit"
	"github.com/strata-project/strata/replica"
	"github.com/strata-project/strata/server"
)

// cmdApp runs `strata app --config FILE`: the app server, until SIGTERM or SIGINT (graceful
// shutdown) with SIGHUP reloading the API keys.
func cmdApp(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("app", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "configuration file (YAML) with an app: section")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *path == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: strata app --config FILE")
		return 2
	}
	log := slog.New(slog.NewJSONHandler(stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := runApp(ctx, *path, log, nil); err != nil {
		fmt.Fprintln(stderr, "strata app:", err)
		return 1
	}
	return 0
}

// runApp serves until ctx ends. started, when not nil, receives the server once it listens.
func runApp(ctx context.Context, path string, log *slog.Logger, started func(*server.Server)) error {
	f, err := config.Load(path)
	if err != nil {
		return err
	}
	if f.App == nil {
		return fmt.Errorf("%s: no app: section", path)
	}
	a := f.App
	store, err := openStore(ctx, a, log)
	if err != nil {
		return err
	}
	defer store.Close()
	keys, anon, err := appKeys(a)
	if err != nil {
		return err
	}
	var signer *replica.Signer
	if a.SessionKeyEnv != "" {
		signer, err = replica.NewSigner([]byte(os.Getenv(a.SessionKeyEnv)))
		if err != nil {
			return fmt.Errorf("session_key_env %s: %w", a.SessionKeyEnv, err)
		}
	}
	var proxies []netip.Prefix
	for _, p := range a.TrustedProxies {
		pp, _ := config.ParsePrefix(p)
		proxies = append(proxies, pp)
	}
	guarded := store.Store // each shard's writes are behind a breaker of their own
	tier, err := openCache(a)
	if err != nil {
		return err
	}
	// Deferred after the store's Close, so it runs first: write-behind's flusher stops
	// before the store closes.
	defer tier.Close()
	breakers := store.Breakers
	if tier != nil {
		breakers["cache"] = tier.br
	}
	cols := map[string]server.Collection{}
	for name, c := range a.Collections {
		sc := server.Collection{
			Strategy:    cmpOr(c.Strategy, "none"),
			Consistency: server.Consistency(c.Consistency),
			RateLimit:   appRate(c.RateLimit),
		}
		if sc.Strategy != server.StrategyNone {
			if tier == nil {
				return fmt.Errorf("collection %s: strategy %s needs a cache section", name, sc.Strategy)
			}
			acc, err := tier.access(ctx, name, c, guarded, log)
			if err != nil {
				return err
			}
			sc.Access = acc
		}
		cols[name] = sc
	}
	var srv *server.Server
	srv, err = server.New(server.Config{
		Store:            guarded,
		Collections:      cols,
		Keys:             keys,
		Anonymous:        anon,
		Signer:           signer,
		MaxBodyBytes:     int64(a.MaxBodyBytes),
		RequestTimeout:   a.Timeouts.Request.D(),
		IdempotencyLease: a.Timeouts.IdempotencyLease.D(),
		IdempotencyTTL:   a.Timeouts.IdempotencyTTL.D(),
		TrustedProxies:   proxies,
		Breakers:         breakers,
		Replicas:         store.Replicas,
		StoreCheck:       store.Ready,
		Logger:           log,
		Reload: func(context.Context) error {
			f, err := config.Load(path)
			if err != nil {
				return err
			}
			if f.App == nil {
				return fmt.Errorf("%s: no app: section", path)
			}
			keys, anon, err := appKeys(f.App)
			if err != nil {
				return err
			}
			return srv.SetKeys(keys, anon)
		},
	})
	if err != nil {
		return err
	}
	l := server.Listen{
		Addr: a.Listen, AdminAddr: a.AdminListen, AdminOpen: a.AdminOpen,
		ReadHeaderTimeout: a.Timeouts.ReadHeader.D(), ReadTimeout: a.Timeouts.Read.D(),
		WriteTimeout: a.Timeouts.Write.D(), IdleTimeout: a.Timeouts.Idle.D(), MaxHeaderBytes: a.MaxHeaderBytes,
	}
	if a.TLS != nil {
		l.TLSCertFile, l.TLSKeyFile = a.TLS.Cert, a.TLS.Key
	}
	if err := srv.Start(l); err != nil {
		return err
	}
	log.Info("strata app listening", "addrs", fmt.Sprint(srv.Addrs()))
	if started != nil {
		started(srv)
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for done := false; !done; {
		select {
		case <-hup:
			keysF, err := config.Load(path)
			if err == nil && keysF.App != nil {
				var k []server.Key
				var an []server.Scope
				if k, an, err = appKeys(keysF.App); err == nil {
					err = srv.SetKeys(k, an)
				}
			}
			if err != nil {
				log.Error("reload failed", "err", err)
			} else {
				log.Info("keys reloaded")
			}
		case <-ctx.Done():
			done = true
		}
	}
	log.Info("shutting down: draining requests in flight")
	sctx, cancel := context.WithTimeout(context.Background(), cmpOr(a.Timeouts.Shutdown.D(), 30*time.Second))
	defer cancel()
	return srv.Shutdown(sctx)
}

// openStore opens the configured document store, and the replica sets' status for metrics.
// appKeys turns the configured keys (hashes, from the file or the environment) into server
// keys.
func appKeys(a *config.App) ([]server.Key, []server.Scope, error) {
	var keys []server.Key
	for _, k := range a.Keys {
		hs := k.SHA256
		if k.SHA256Env != "" {
			hs = os.Getenv(k.SHA256Env)
		}
		h, err := server.ParseKeyHash(hs)
		if err != nil {
			return nil, nil, fmt.Errorf("key %s: %w", k.ID, err)
		}
		sk := server.Key{ID: k.ID, Hash: h, RateLimit: appRate(k.RateLimit)}
		for _, s := range k.Scopes {
			sc, err := server.ParseScope(s)
			if err != nil {
				return nil, nil, fmt.Errorf("key %s: %w", k.ID, err)
			}
			sk.Scopes = append(sk.Scopes, sc)
		}
		keys = append(keys, sk)
	}
	var anon []server.Scope
	if a.Anonymous {
		list := a.AnonymousScopes
		if len(list) == 0 {
			list = []string{"read:*"}
		}
		anon = []server.Scope{}
		for _, s := range list {
			sc, err := server.ParseScope(s)
			if err != nil {
				return nil, nil, err
			}
			anon = append(anon, sc)
		}
	}
	return keys, anon, nil
}

func appRate(r *config.AppRateLimit) server.RateLimit {
	if r == nil {
		return server.RateLimit{}
	}
	return server.RateLimit{Rate: ratelimit.Rate{Limit: r.Rate, Period: cmpOr(r.Period.D(), time.Second)}, Burst: r.Burst}
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}
