package lb

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// AdminKey is an admin API key, stored as the SHA-256 of the key.
type AdminKey struct {
	// Name identifies the key in logs.
	Name string
	// SHA256 is the SHA-256 of the key.
	SHA256 [32]byte
	// Write allows backend changes; without it the key reads status only.
	Write bool
}

// ParseAdminKey returns an AdminKey from its name, hex SHA-256 and role
// ("read", default, or "write").
func ParseAdminKey(name, sha256Hex, role string) (AdminKey, error) {
	k := AdminKey{Name: name}
	b, err := hex.DecodeString(sha256Hex)
	if err != nil || len(b) != 32 {
		return k, fmt.Errorf("%w: admin key %q: sha256 is not 64 hex digits", ErrInvalidConfig, name)
	}
	copy(k.SHA256[:], b)
	switch role {
	case "", "read":
	case "write":
		k.Write = true
	default:
		return k, fmt.Errorf("%w: admin key %q: unknown role %q", ErrInvalidConfig, name, role)
	}
	return k, nil
}

// HashKey returns the SHA-256 of an admin key in hex, as the configuration
// stores it.
func HashKey(key string) string {
	s := sha256.Sum256([]byte(key))
	return hex.EncodeToString(s[:])
}

// AdminHandler returns the admin API of l:
//
//	GET    /metrics                  Prometheus metrics (read key)
//	GET    /status                   backends with health, ejections, in-flight, latency (read key)
//	POST   /backends                 add {"address": "host:port", "weight": 1} (write key)
//	DELETE /backends/{address}       remove (write key)
//	POST   /backends/{address}/drain   stop new requests (write key)
//	POST   /backends/{address}/undrain resume (write key)
//
// Requests authenticate with "Authorization: Bearer <key>": a missing or
// unknown key gets 401, a read key on a write endpoint 403. The metrics are
// registered on reg, which must not be nil (use a registry of your own, not
// the global default).
func (l *LB) AdminHandler(keys []AdminKey, reg *prometheus.Registry) (http.Handler, error) {
	if reg == nil {
		return nil, fmt.Errorf("%w: nil registry", ErrInvalidConfig)
	}
	if err := reg.Register(&collector{l: l}); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	a := &admin{l: l, keys: keys}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", a.auth(false, promhttp.HandlerFor(reg, promhttp.HandlerOpts{})))
	mux.Handle("GET /status", a.auth(false, http.HandlerFunc(a.status)))
	mux.Handle("POST /backends", a.auth(true, http.HandlerFunc(a.add)))
	mux.Handle("DELETE /backends/{addr}", a.auth(true, http.HandlerFunc(a.remove)))
	mux.Handle("POST /backends/{addr}/drain", a.auth(true, http.HandlerFunc(a.drain(true))))
	mux.Handle("POST /backends/{addr}/undrain", a.auth(true, http.HandlerFunc(a.drain(false))))
	return mux, nil
}

type admin struct {
	l    *LB
	keys []AdminKey
}

func (a *admin) auth(write bool, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		var key *AdminKey
		if ok && tok != "" {
			sum := sha256.Sum256([]byte(tok))
			for i := range a.keys {
				if subtle.ConstantTimeCompare(sum[:], a.keys[i].SHA256[:]) == 1 {
					key = &a.keys[i]
				}
			}
		}
		switch {
		case key == nil:
			w.Header().Set("WWW-Authenticate", `Bearer realm="strata-lb"`)
			problem(w, http.StatusUnauthorized, "missing or unknown admin key")
		case write && !key.Write:
			problem(w, http.StatusForbidden, "this key may only read")
		default:
			if write {
				a.l.log.Info("lb: admin change", "key", key.Name, "method", r.Method, "path", r.URL.Path)
			}
			h.ServeHTTP(w, r)
		}
	})
}

func problem(w http.ResponseWriter, code int, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]any{"status": code, "title": http.StatusText(code), "detail": detail})
}

// BackendStatus is one backend in the admin status.
type BackendStatus struct {
	Address    string  `json:"address"`
	Weight     int     `json:"weight"`
	Healthy    bool    `json:"healthy"`
	Ready      bool    `json:"ready"`
	Drained    bool    `json:"drained"`
	Ejected    bool    `json:"ejected"`
	Ejections  uint64  `json:"ejections"`
	Inflight   int64   `json:"inflight"`
	LatencyMS  float64 `json:"latency_ms"`
	Requests   uint64  `json:"requests"`
	Failures   uint64  `json:"failures"`
	Retries    uint64  `json:"retries"`
	OpenConns  int     `json:"open_conns"`
	IdleConns  int     `json:"idle_conns"`
	FailStreak int     `json:"fail_streak"`
}

// Stats are a balancer's counters since New.
type Stats struct {
	Requests       uint64 // requests received
	Retries        uint64 // retries made
	RetriesDenied  uint64 // retries refused by the retry budget
	RateLimited    uint64 // requests refused by the edge rate limit
	BadRequests    uint64 // malformed requests
	UpstreamErrors uint64 // requests answered with a proxy error (502, 503, 504)
	Hedges         uint64 // hedged tries sent
	HedgesWon      uint64 // hedged tries that answered before the first try
	HedgesDenied   uint64 // hedges refused by the hedge budget
}

// Stats returns the balancer's counters.
func (l *LB) Stats() Stats {
	s := &l.stats
	return Stats{
		Requests: s.requests.Load(), Retries: s.retries.Load(), RetriesDenied: s.retriesDenied.Load(),
		RateLimited: s.limited.Load(), BadRequests: s.badRequests.Load(), UpstreamErrors: s.upstreamErrors.Load(),
		Hedges: s.hedges.Load(), HedgesWon: s.hedgesWon.Load(), HedgesDenied: s.hedgesDenied.Load(),
	}
}

// Status returns the state of every backend.
func (l *LB) Status() []BackendStatus {
	now := monoNow()
	var out []BackendStatus
	for _, b := range l.Backends() {
		b.available(now) // clear an expired ejection
		s := b.state.Load()
		open, idle := b.poolStats()
		out = append(out, BackendStatus{
			Address: b.addr, Weight: b.Weight(),
			Healthy: s&stateUnhealthy == 0, Ready: s&stateNotReady == 0,
			Drained: s&stateAdminDrain != 0, Ejected: s&stateEjected != 0,
			Ejections: b.ejections.Load(), Inflight: b.inflight.Load(),
			LatencyMS: b.latency() / float64(time.Millisecond),
			Requests:  b.requests.Load(), Failures: b.failures.Load(), Retries: b.retries.Load(),
			OpenConns: open, IdleConns: idle, FailStreak: int(b.failStreak.Load()),
		})
	}
	return out
}

func (a *admin) status(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"policy": a.l.opts.policy, "backends": a.l.Status()})
}

// maxAdminBody bounds an admin request body.
const maxAdminBody = 4096

func (a *admin) add(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Address string `json:"address"`
		Weight  int    `json:"weight"`
	}
	dec := json.NewDecoder(io.LimitReader(r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		problem(w, http.StatusBadRequest, "body must be {\"address\": \"host:port\", \"weight\": n}: "+err.Error())
		return
	}
	if dec.More() {
		problem(w, http.StatusBadRequest, "trailing data after the JSON object")
		return
	}
	a.result(w, a.l.AddBackend(BackendConfig{Addr: in.Address, Weight: in.Weight}), http.StatusCreated)
}

func (a *admin) remove(w http.ResponseWriter, r *http.Request) {
	a.result(w, a.l.RemoveBackend(r.PathValue("addr")), http.StatusOK)
}

func (a *admin) drain(on bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		a.result(w, a.l.Drain(r.PathValue("addr"), on), http.StatusOK)
	}
}

func (a *admin) result(w http.ResponseWriter, err error, okCode int) {
	switch {
	case err == nil:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(okCode)
		json.NewEncoder(w).Encode(map[string]any{"backends": a.l.Status()})
	case errors.Is(err, ErrUnknownBackend):
		problem(w, http.StatusNotFound, err.Error())
	case errors.Is(err, ErrDuplicateBackend):
		problem(w, http.StatusConflict, err.Error())
	default:
		problem(w, http.StatusBadRequest, err.Error())
	}
}

// collector exports the load balancer's counters when scraped, so the proxy
// path only bumps atomics.
type collector struct{ l *LB }

var (
	descRequests   = prometheus.NewDesc("strata_lb_requests_total", "Requests received.", nil, nil)
	descRetries    = prometheus.NewDesc("strata_lb_retries_total", "Retries made.", nil, nil)
	descDenied     = prometheus.NewDesc("strata_lb_retries_denied_total", "Retries refused by the retry budget.", nil, nil)
	descLimited    = prometheus.NewDesc("strata_lb_rate_limited_total", "Requests refused by the edge rate limit.", nil, nil)
	descBad        = prometheus.NewDesc("strata_lb_bad_requests_total", "Malformed requests.", nil, nil)
	descUpstream   = prometheus.NewDesc("strata_lb_upstream_errors_total", "Requests answered with a proxy error (502, 503, 504).", nil, nil)
	descBReq       = prometheus.NewDesc("strata_lb_backend_requests_total", "Tries sent to a backend.", []string{"backend"}, nil)
	descBFail      = prometheus.NewDesc("strata_lb_backend_failures_total", "Tries that failed (5xx, connection error, timeout).", []string{"backend"}, nil)
	descBEject     = prometheus.NewDesc("strata_lb_backend_ejections_total", "Passive ejections.", []string{"backend"}, nil)
	descBInflight  = prometheus.NewDesc("strata_lb_backend_inflight", "Requests in flight.", []string{"backend"}, nil)
	descBLatency   = prometheus.NewDesc("strata_lb_backend_latency_seconds", "Peak-EWMA latency estimate.", []string{"backend"}, nil)
	descBUp        = prometheus.NewDesc("strata_lb_backend_up", "1 when the backend takes new requests.", []string{"backend"}, nil)
	descBOpenConns = prometheus.NewDesc("strata_lb_backend_open_connections", "Connections open to the backend.", []string{"backend"}, nil)
	descHedges     = prometheus.NewDesc("strata_lb_hedges_total", "Hedged tries sent.", nil, nil)
	descHedgesWon  = prometheus.NewDesc("strata_lb_hedges_won_total", "Hedged tries that answered first.", nil, nil)
	descHedgesDen  = prometheus.NewDesc("strata_lb_hedges_denied_total", "Hedges refused by the hedge budget.", nil, nil)
	descHedgeDelay = prometheus.NewDesc("strata_lb_hedge_delay_seconds", "Current hedge delay (0: hedging off).", nil, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRequests, descRetries, descDenied, descLimited, descBad, descUpstream,
		descBReq, descBFail, descBEject, descBInflight, descBLatency, descBUp, descBOpenConns,
		descHedges, descHedgesWon, descHedgesDen, descHedgeDelay} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.l.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter(descRequests, s.Requests)
	counter(descRetries, s.Retries)
	counter(descDenied, s.RetriesDenied)
	counter(descLimited, s.RateLimited)
	counter(descBad, s.BadRequests)
	counter(descUpstream, s.UpstreamErrors)
	counter(descHedges, s.Hedges)
	counter(descHedgesWon, s.HedgesWon)
	counter(descHedgesDen, s.HedgesDenied)
	gauge(descHedgeDelay, c.l.HedgeDelay().Seconds())
	for _, st := range c.l.Status() {
		a := st.Address
		counter(descBReq, st.Requests, a)
		counter(descBFail, st.Failures, a)
		counter(descBEject, st.Ejections, a)
		gauge(descBInflight, float64(st.Inflight), a)
		gauge(descBLatency, st.LatencyMS/1000, a)
		up := 0.0
		if st.Healthy && st.Ready && !st.Drained && !st.Ejected {
			up = 1
		}
		gauge(descBUp, up, a)
		gauge(descBOpenConns, float64(st.OpenConns), a)
	}
}
