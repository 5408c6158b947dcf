package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-project/strata/breaker"
	"github.com/strata-project/strata/docstore"
	"github.com/strata-project/strata/ratelimit"
	"github.com/strata-project/strata/ratelimit/httplimit"
	"github.com/strata-project/strata/replica"
)

// ErrConfig is wrapped by the errors of New and SetKeys for a configuration the server
// cannot honour.
var ErrConfig = errors.New("server: invalid config")

// Consistency is what reads of a collection promise.
type Consistency string

// The consistency modes.
const (
	// Strong: single-document linearizable. Reads go to the primary (never a replica, never
	// a cache that could hold an older version) and fail with 503 when it cannot be reached.
	Strong Consistency = "strong"
	// Session: read-your-writes. Every response carries a session token (SessionHeader) that
	// the client sends back; reads are served by a node that has seen the token's writes.
	Session Consistency = "session"
	// Eventual: replicas and caches may serve older data, and the response says so (Age,
	// X-Cache). Reads keep being served from what can be reached.
	Eventual Consistency = "eventual"
)

func (c Consistency) replica() replica.Consistency {
	switch c {
	case Session:
		return replica.Session
	case Eventual:
		return replica.Eventual
	default:
		return replica.Strong
	}
}

// RateLimit is a GCRA limit: Rate sustained, Burst at once. The zero value means no limit.
type RateLimit struct {
	Rate  ratelimit.Rate
	Burst int // default Rate.Limit
}

func (l RateLimit) enabled() bool { return l.Rate.Limit > 0 }

// Collection is how one collection is served.
type Collection struct {
	// Access is the collection's access path (its caching strategy). Default: StoreAccess
	// over Config.Store (strategy none).
	Access Access
	// Strategy names the caching strategy, for logs and metrics. Default "none".
	Strategy string
	// Consistency is what reads promise. Default Strong.
	Consistency Consistency
	// RateLimit applies to each principal's requests on this collection (keyed by API key
	// id, or by client address for anonymous requests). Default: none.
	RateLimit RateLimit
}

// Config configures a Server. Every field but Store and Collections has a sensible zero
// value.
type Config struct {
	// Store is the document store: idempotency records and readiness checks use it, and it
	// backs every collection without an Access. Required. The server does not close it.
	Store docstore.Store
	// Collections maps each served collection name to its settings. Required (at least one).
	// Names beginning with ReservedPrefix are refused.
	Collections map[string]Collection
	// Keys are the API keys. Default none.
	Keys []Key
	// Anonymous are the scopes of requests without a key. Default nil: anonymous access off
	// (401). The server logs a warning at start when it is on.
	Anonymous []Scope
	// Signer signs session tokens. Required when a collection uses Session consistency; all
	// app servers of a deployment must share its key.
	Signer *replica.Signer
	// SessionHeader is the request and response header of session tokens. Default
	// "Strata-Session".
	SessionHeader string
	// MaxBodyBytes bounds request bodies (413 beyond). Default docstore.DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// RequestTimeout bounds the work of one API request. Default 10s.
	RequestTimeout time.Duration
	// RetryAfter is the Retry-After of 503 and 409 answers. Default 1s.
	RetryAfter time.Duration
	// IdempotencyTTL is how long a stored response answers retries of its Idempotency-Key.
	// Default 24h.
	IdempotencyTTL time.Duration
	// IdempotencyLease is how long a request that claimed an Idempotency-Key may run before
	// a retry may take the key over (the first is presumed dead: its app server was killed
	// before it could store its answer). Default twice RequestTimeout, at least 5 s; it must
	// be above RequestTimeout, or a slow request's key could be taken over while it runs.
	IdempotencyLease time.Duration
	// IdempotencyPurge is the interval at which Start's purge loop deletes expired
	// idempotency records (PurgeIdempotency). Default 1 hour; negative disables the loop.
	IdempotencyPurge time.Duration
	// TrustedProxies are the load balancers whose X-Forwarded-For is believed, for client
	// addresses (rate limits of anonymous requests). Default none.
	TrustedProxies []netip.Prefix
	// StoreCheck replaces /readyz's store check (a read of a reserved document through
	// Store). A sharded store passes one that is ready while any shard answers, so that one
	// shard's outage does not take every app server out of the balancer. Default nil: the
	// read through Store.
	StoreCheck func(ctx context.Context) error
	// Checks are extra readiness checks by name (a cache ping, say); /readyz fails when any
	// fails. The store is always checked. Default none.
	Checks map[string]func(ctx context.Context) error
	// Breakers are exported as metrics (strata_breaker_state) by name. Default none.
	Breakers map[string]*breaker.Breaker
	// Replicas report replica status by shard name for metrics (strata_replica_lag_seconds),
	// e.g. pgreplica.Set.Status. Default none.
	Replicas map[string]func() []replica.NodeStatus
	// Reload is run by POST /admin/reload (admin scope), e.g. to re-read keys from the
	// configuration file and call SetKeys. Default nil: 404.
	Reload func(ctx context.Context) error
	// Logger receives request logs. API keys and bodies are never logged. Default
	// slog.Default().
	Logger *slog.Logger
	// Registry receives the server's metrics. Default: a new registry.
	Registry *prometheus.Registry
	// Now is the clock of idempotency records. Default time.Now.
	Now func() time.Time
}

// collection is a configured collection, ready to serve.
type collection struct {
	name string
	Collection
	limit *httplimit.Middleware // nil: no limit
}

// Server serves the document API. Create it with New; it is safe for concurrent use.
type Server struct {
	cfg         Config
	log         *slog.Logger
	idem        docstore.Store
	collections map[string]*collection
	keys        atomic.Pointer[keyring]
	metrics     *metrics
	ipKey       httplimit.KeyFunc
	api         http.Handler
	admin       http.Handler

	mu        sync.Mutex // protects listeners, purgeStop, purgeDone
	listeners []*listener
	purgeStop chan struct{} // closed by Shutdown to stop the purge loop
	purgeDone chan struct{} // closed when the purge loop has returned
}

// New validates cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, fmt.Errorf("%w: Store is required", ErrConfig)
	}
	if len(cfg.Collections) == 0 {
		return nil, fmt.Errorf("%w: no collections", ErrConfig)
	}
	cfg.SessionHeader = cmpOr(cfg.SessionHeader, "Strata-Session")
	cfg.MaxBodyBytes = cmpOr(cfg.MaxBodyBytes, docstore.DefaultMaxBodyBytes)
	cfg.RequestTimeout = cmpOr(cfg.RequestTimeout, 10*time.Second)
	cfg.RetryAfter = cmpOr(cfg.RetryAfter, time.Second)
	cfg.IdempotencyTTL = cmpOr(cfg.IdempotencyTTL, 24*time.Hour)
	cfg.IdempotencyLease = cmpOr(cfg.IdempotencyLease, max(2*cfg.RequestTimeout, 5*time.Second))
	if cfg.IdempotencyLease <= cfg.RequestTimeout {
		return nil, fmt.Errorf("%w: IdempotencyLease %v must be above RequestTimeout %v", ErrConfig, cfg.IdempotencyLease, cfg.RequestTimeout)
	}
	cfg.IdempotencyPurge = cmpOr(cfg.IdempotencyPurge, time.Hour)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, log: cfg.Logger, idem: cfg.Store, collections: map[string]*collection{}}
	ipKey, err := httplimit.ByClientIP(httplimit.ClientIP{TrustedProxies: cfg.TrustedProxies})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	s.ipKey = ipKey
	s.metrics = newMetrics(cfg.Registry)
	for name, c := range cfg.Collections {
		if err := docstore.CheckCollection(name); err != nil {
			return nil, fmt.Errorf("%w: collection %q: %v", ErrConfig, name, err)
		}
		if strings.HasPrefix(name, ReservedPrefix) {
			return nil, fmt.Errorf("%w: collection %q: names beginning with %q are reserved", ErrConfig, name, ReservedPrefix)
		}
		switch c.Consistency {
		case "":
			c.Consistency = Strong
		case Strong, Eventual:
		case Session:
			if cfg.Signer == nil {
				return nil, fmt.Errorf("%w: collection %q uses session consistency, which needs a session token key (Signer)", ErrConfig, name)
			}
		default:
			return nil, fmt.Errorf("%w: collection %q: unknown consistency %q", ErrConfig, name, c.Consistency)
		}
		if c.Access == nil {
			c.Access = StoreAccess{Store: cfg.Store}
		}
		c.Strategy = cmpOr(c.Strategy, "none")
		col := &collection{name: name, Collection: c}
		if c.RateLimit.enabled() {
			m, err := s.limiter("collection:"+name, c.RateLimit)
			if err != nil {
				return nil, fmt.Errorf("%w: collection %q: %v", ErrConfig, name, err)
			}
			col.limit = m
		}
		if q, ok := c.Access.(interface{ Pending() int }); ok {
			s.metrics.pendingWrites(cfg.Registry, name, q.Pending)
		}
		s.collections[name] = col
	}
	s.metrics.observe(cfg.Registry, cfg.Breakers, cfg.Replicas)
	if err := s.SetKeys(cfg.Keys, cfg.Anonymous); err != nil {
		return nil, err
	}
	s.api = s.instrument(s.routeAPI)
	s.admin = s.instrument(s.routeAdmin)
	return s, nil
}

// SetKeys replaces the API keys and anonymous scopes (on reload). Requests in flight keep
// the keys they were authenticated with; per-key rate limits start afresh.
func (s *Server) SetKeys(keys []Key, anonymous []Scope) error {
	kr := &keyring{}
	ids := map[string]bool{}
	for _, k := range keys {
		if k.ID == "" || k.ID == "anonymous" {
			return fmt.Errorf("%w: key id %q", ErrConfig, k.ID)
		}
		if ids[k.ID] {
			return fmt.Errorf("%w: key id %q given twice", ErrConfig, k.ID)
		}
		ids[k.ID] = true
		p := &Principal{ID: k.ID, scopes: k.Scopes}
		if k.RateLimit.enabled() {
			m, err := s.limiter("key:"+k.ID, k.RateLimit)
			if err != nil {
				return fmt.Errorf("%w: key %q: %v", ErrConfig, k.ID, err)
			}
			p.limit = m
		}
		kr.keys = append(kr.keys, k)
		kr.principals = append(kr.principals, p)
	}
	if anonymous != nil {
		kr.anonymous = &Principal{ID: "anonymous", scopes: anonymous}
		s.log.Warn("anonymous access is ON: requests without an API key are served", "scopes", fmt.Sprint(anonymous))
	}
	s.keys.Store(kr)
	return nil
}

// limiter builds the rate-limit middleware of one collection or key.
func (s *Server) limiter(name string, l RateLimit) (*httplimit.Middleware, error) {
	g, err := ratelimit.NewGCRA(ratelimit.GCRAConfig{Rate: l.Rate, Burst: l.Burst})
	if err != nil {
		return nil, err
	}
	scope, _, _ := strings.Cut(name, ":")
	return httplimit.New(httplimit.Config{
		Limiter:     countingLimiter{Limiter: g, m: s.metrics, scope: scope},
		Key:         s.principalKey,
		PolicyName:  strings.NewReplacer(":", "-", "_", "-").Replace(name),
		ProblemType: ProblemTypePrefix + ProblemRateLimited,
	})
}

// principalKey keys rate limits by API key id, or by client address for anonymous requests.
func (s *Server) principalKey(r *http.Request) string {
	if p := PrincipalFrom(r.Context()); p != nil && p.ID != "anonymous" {
		return "key:" + p.ID
	}
	return s.ipKey(r)
}

// Handler returns the API handler: /v1/..., /healthz, /readyz, /openapi.yaml and
// /openapi.json, and /admin/... (metrics, pprof, reload) for keys with the admin scope.
func (s *Server) Handler() http.Handler { return s.api }

// AdminHandler returns the admin endpoints (/metrics, /debug/pprof/, /reload) for a
// separate listener. They require the admin scope unless open is true (a listener that only
// trusted networks reach).
func (s *Server) AdminHandler(open bool) http.Handler {
	if open {
		return s.instrument(func(w http.ResponseWriter, r *http.Request) { s.adminMux().ServeHTTP(w, r) })
	}
	return s.admin
}

func (s *Server) now() time.Time { return s.cfg.Now() }

// requestIDKey carries the request id in the context.
type requestIDKey struct{}

// RequestID returns the request id of a request's context ("" if none).
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// validRequestID accepts ids of 1 to 128 characters of [A-Za-z0-9._:-], so that whatever a
// load balancer sends can be logged and echoed safely.
func validRequestID(id string) bool {
	if len(id) == 0 || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

func newRequestID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// statusWriter records the status and size of a response and, in session mode, adds the
// advanced session token just before the header is written.
type statusWriter struct {
	http.ResponseWriter
	status  int
	bytes   int64
	onWrite func(h http.Header) // called once, before the header goes out
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status != 0 {
		return
	}
	w.status = code
	if w.onWrite != nil {
		w.onWrite(w.Header())
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// reqInfo is filled in by the handlers for the access log and metrics.
type reqInfo struct {
	route      string
	collection string
	principal  string
	cache      CacheStatus
}

type reqInfoKey struct{}

func info(r *http.Request) *reqInfo {
	i, _ := r.Context().Value(reqInfoKey{}).(*reqInfo)
	if i == nil {
		return &reqInfo{}
	}
	return i
}

// instrument wraps a handler with the request id, panic recovery, the access log and the
// request metrics.
func (s *Server) instrument(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get("X-Request-Id")
		if !validRequestID(id) {
			id = newRequestID()
		}
		w.Header().Set("X-Request-Id", id)
		ri := &reqInfo{route: "other"}
		ctx := context.WithValue(context.WithValue(r.Context(), requestIDKey{}, id), reqInfoKey{}, ri)
		r = r.WithContext(ctx)
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.ErrorContext(ctx, "panic serving request", "request_id", id, "panic", fmt.Sprint(v))
				if sw.status == 0 {
					writeProblem(sw, r, http.StatusInternalServerError, ProblemInternal, "", 0)
				}
			}
			status := cmpStatus(sw.status)
			d := time.Since(start)
			s.metrics.request(ri.route, r.Method, status, d)
			s.log.LogAttrs(ctx, slog.LevelInfo, "request",
				slog.String("request_id", id),
				slog.String("method", r.Method),
				slog.String("route", ri.route),
				slog.String("collection", ri.collection),
				slog.String("principal", ri.principal),
				slog.Int("status", status),
				slog.Int64("bytes", sw.bytes),
				slog.String("cache", string(ri.cache)),
				slog.Duration("duration", d),
			)
		}()
		next(sw, r)
	})
}
