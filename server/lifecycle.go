package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/pprof"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/strata-project/strata/docstore"
)

// Listen says where and how the server listens. The zero value listens on :8080 without
// TLS and without an admin listener, with the default timeouts.
type Listen struct {
	// Addr is the API's address. Default ":8080".
	Addr string
	// AdminAddr is the admin listener's address (metrics, pprof, reload). Default "": none;
	// the admin endpoints are then under /admin/ on the API listener, for the admin scope.
	AdminAddr string
	// AdminOpen serves the admin listener without authentication, for an address that only
	// trusted networks reach (127.0.0.1, a private interface). Default false: admin scope.
	AdminOpen bool
	// TLSCertFile and TLSKeyFile turn on TLS (both listeners) when both are set.
	TLSCertFile, TLSKeyFile string
	// ReadHeaderTimeout bounds reading a request's header. Default 5s.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request. Default 30s.
	ReadTimeout time.Duration
	// WriteTimeout bounds writing a response, from the end of the request header. Default
	// 30s; keep it above Config.RequestTimeout.
	WriteTimeout time.Duration
	// IdleTimeout bounds how long a keep-alive connection waits for its next request.
	// Default 120s.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's header; beyond it the answer is 431. Default 16 KiB.
	MaxHeaderBytes int
}

// listener is one running http.Server.
type listener struct {
	srv  *http.Server
	addr net.Addr
	done chan error
}

// Start opens the listeners and serves in the background until Shutdown. It fails if a
// listener cannot be opened or the TLS files cannot be loaded; listeners opened before the
// failure are closed.
func (s *Server) Start(l Listen) (err error) {
	l.Addr = cmpOr(l.Addr, ":8080")
	var tlsCfg *tls.Config
	if l.TLSCertFile != "" || l.TLSKeyFile != "" {
		cert, err := tls.LoadX509KeyPair(l.TLSCertFile, l.TLSKeyFile)
		if err != nil {
			return fmt.Errorf("%w: TLS: %v", ErrConfig, err)
		}
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	}
	defer func() {
		if err != nil {
			s.Shutdown(context.Background())
		}
	}()
	if err := s.listen(l, l.Addr, s.api, tlsCfg); err != nil {
		return err
	}
	if l.AdminAddr != "" {
		if err := s.listen(l, l.AdminAddr, s.AdminHandler(l.AdminOpen), tlsCfg); err != nil {
			return err
		}
	}
	s.startPurge()
	return nil
}

// startPurge starts the loop that deletes expired idempotency records, once.
func (s *Server) startPurge() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cfg.IdempotencyPurge < 0 || s.purgeStop != nil {
		return
	}
	stop, done := make(chan struct{}), make(chan struct{})
	s.purgeStop, s.purgeDone = stop, done
	base, stopped := context.WithCancel(context.Background())
	go func() { <-stop; stopped() }()
	go func() {
		defer close(done)
		// A random first delay, so that app servers started together purge apart.
		t := time.NewTimer(time.Duration(rand.Int64N(int64(s.cfg.IdempotencyPurge))) + time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			ctx, cancel := context.WithTimeout(base, s.cfg.IdempotencyPurge/2+time.Second)
			if n, err := s.PurgeIdempotency(ctx); err != nil {
				s.log.Warn("idempotency: purge", "deleted", n, "err", err)
			} else if n > 0 {
				s.log.Info("idempotency: purged expired records", "deleted", n)
			}
			cancel()
			t.Reset(s.cfg.IdempotencyPurge)
		}
	}()
}

func (s *Server) listen(l Listen, addr string, h http.Handler, tlsCfg *tls.Config) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("server: listen on %s: %w", addr, err)
	}
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: cmpOr(l.ReadHeaderTimeout, 5*time.Second),
		ReadTimeout:       cmpOr(l.ReadTimeout, 30*time.Second),
		WriteTimeout:      cmpOr(l.WriteTimeout, 30*time.Second),
		IdleTimeout:       cmpOr(l.IdleTimeout, 120*time.Second),
		MaxHeaderBytes:    cmpOr(l.MaxHeaderBytes, 16<<10),
		ErrorLog:          nil,
	}
	lis := &listener{srv: srv, addr: ln.Addr(), done: make(chan error, 1)}
	s.mu.Lock()
	s.listeners = append(s.listeners, lis)
	s.mu.Unlock()
	go func() { lis.done <- srv.Serve(ln) }()
	return nil
}

// Addrs returns the addresses the listeners are bound to (API first), e.g. to learn the
// port chosen for ":0".
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]net.Addr, len(s.listeners))
	for i, l := range s.listeners {
		out[i] = l.addr
	}
	return out
}

// Shutdown stops accepting connections, waits for requests in flight (until ctx ends), then
// flushes the access paths that hold acknowledged writes (write-behind). It does not close
// the store. It is safe to call more than once and after a failed Start.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	ls := s.listeners
	s.listeners = nil
	s.mu.Unlock()
	var errs []error
	for _, l := range ls {
		if err := l.srv.Shutdown(ctx); err != nil {
			errs = append(errs, err)
			l.srv.Close()
		}
		if err := <-l.done; err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, err)
		}
	}
	errs = append(errs, s.Flush(ctx))
	s.mu.Lock()
	stop, done := s.purgeStop, s.purgeDone
	s.purgeStop = nil
	s.mu.Unlock()
	if stop != nil {
		close(stop)
		<-done
	}
	return errors.Join(errs...)
}

// Flush flushes every collection whose access path holds acknowledged writes not yet in
// the store.
func (s *Server) Flush(ctx context.Context) error {
	var errs []error
	for name, c := range s.collections {
		if f, ok := c.Access.(Flusher); ok {
			if err := f.Flush(ctx); err != nil {
				errs = append(errs, fmt.Errorf("server: flush %s: %w", name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// healthz answers 200 while the process serves.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz answers 200 when every dependency is reachable: the store (a read of a reserved
// document) and every configured check; 503 otherwise. Failures are named but not
// described (errors may hold addresses); the log has the details.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	checks := map[string]func(context.Context) error{
		"store": func(ctx context.Context) error {
			_, err := s.cfg.Store.Get(strongContext(ctx), IdempotencyCollection, "readyz")
			if errors.Is(err, docstore.ErrNotFound) {
				return nil
			}
			return err
		},
	}
	if s.cfg.StoreCheck != nil {
		checks["store"] = func(ctx context.Context) error { return s.cfg.StoreCheck(strongContext(ctx)) }
	}
	for k, f := range s.cfg.Checks {
		checks[k] = f
	}
	names := make([]string, 0, len(checks))
	for k := range checks {
		names = append(names, k)
	}
	sort.Strings(names)
	out := map[string]string{}
	status := http.StatusOK
	for _, n := range names {
		if err := checks[n](ctx); err != nil {
			s.log.WarnContext(ctx, "readiness check failed", "check", n, "err", err)
			out[n] = "failing"
			status = http.StatusServiceUnavailable
		} else {
			out[n] = "ok"
		}
	}
	if status != http.StatusOK {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, status, map[string]any{"ready": status == http.StatusOK, "checks": out})
}

// adminMux serves /metrics, /debug/pprof/ and /reload.
func (s *Server) adminMux() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.cfg.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("POST /reload", func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.Reload == nil {
			writeProblem(w, r, http.StatusNotFound, ProblemNotFound, "reload is not configured", 0)
			return
		}
		if err := s.cfg.Reload(r.Context()); err != nil {
			s.log.ErrorContext(r.Context(), "reload failed", "err", err)
			writeProblem(w, r, http.StatusInternalServerError, ProblemInternal, "reload failed; see the log", 0)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "reloaded"})
	})
	return mux
}
