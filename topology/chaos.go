package topology

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Actions lists the chaos actions, in the order `strata chaos` documents them. The target
// of an app action is the app server's number (1-based, default 1); of a replica or primary
// action, the shard's number (default 1), and a replica action acts on the shard's first
// replica.
var Actions = []string{
	"kill-app", "restart-app", "stop-cache", "start-cache",
	"pause-replica", "resume-replica", "kill-primary", "restart-primary",
}

// Chaos carries out one fault and returns when it is in effect: a killed app server has
// exited, a restarted one answers /readyz, a stopped cache has exited, a started one answers.
// Errors wrap ErrUnknownAction, ErrBadTarget or ErrNotApplicable when the request is at
// fault.
func (t *Topology) Chaos(ctx context.Context, action, target string) error {
	t.chaosMu.Lock()
	defer t.chaosMu.Unlock()
	switch action {
	case "kill-app", "restart-app":
		i, err := t.target(target, len(t.apps), "app server")
		if err != nil {
			return err
		}
		p := t.apps[i]
		if action == "kill-app" {
			if err := p.kill(); err != nil {
				return fmt.Errorf("%w: app server %d is not running", ErrNotApplicable, i+1)
			}
			return nil
		}
		if p.PID() != 0 {
			_ = p.stop(ctx, t.cfg.StopTimeout)
		}
		if err := p.start(); err != nil {
			return err
		}
		return t.waitApp(ctx, i)
	case "stop-cache":
		switch {
		case t.node != nil:
			if err := t.node.stop(ctx, t.cfg.StopTimeout); errors.Is(err, errNotRunning) {
				return fmt.Errorf("%w: the cache node is stopped already", ErrNotApplicable)
			}
			return nil
		case t.cluster != nil:
			return t.stopCache(ctx)
		}
		return fmt.Errorf("%w: up did not start the cache tier (it is the configuration file's)", ErrNotApplicable)
	case "start-cache":
		switch {
		case t.node != nil:
			if t.node.PID() != 0 {
				return fmt.Errorf("%w: the cache node is running", ErrNotApplicable)
			}
			if err := t.node.start(); err != nil {
				return err
			}
			return t.waitCache(ctx, t.m.Cache)
		case t.cluster != nil:
			return t.startCache(ctx)
		}
		return fmt.Errorf("%w: up did not start the cache tier (it is the configuration file's)", ErrNotApplicable)
	case "pause-replica", "resume-replica", "kill-primary", "restart-primary":
		if len(t.pg) == 0 {
			return fmt.Errorf("%w: %s needs PostgreSQL shards with replicas (strata up --engines local)", ErrNotApplicable, action)
		}
		i, err := t.target(target, len(t.pg), "shard")
		if err != nil {
			return err
		}
		c := t.pg[i]
		switch action {
		case "pause-replica", "resume-replica":
			if len(c.Replicas) == 0 {
				return fmt.Errorf("%w: shard %d has no replica", ErrNotApplicable, i+1)
			}
			if action == "pause-replica" {
				return c.Replicas[0].PauseReplay(ctx)
			}
			return c.Replicas[0].ResumeReplay(ctx)
		case "kill-primary":
			if err := c.Primary.Kill(); err != nil {
				return fmt.Errorf("%w: %v", ErrNotApplicable, err)
			}
			return nil
		default:
			if c.Primary.Running() {
				return fmt.Errorf("%w: the primary of shard %d is running", ErrNotApplicable, i+1)
			}
			return c.Primary.Restart(ctx)
		}
	}
	return fmt.Errorf("%w: %q (known: %s)", ErrUnknownAction, action, strings.Join(Actions, ", "))
}

// target parses a 1-based node number; "" means 1.
func (t *Topology) target(s string, n int, what string) (int, error) {
	if n == 0 {
		return 0, fmt.Errorf("%w: no %s runs", ErrNotApplicable, what)
	}
	if s == "" {
		return 0, nil
	}
	i, err := strconv.Atoi(s)
	if err != nil || i < 1 || i > n {
		return 0, fmt.Errorf("%w: %s %q: want 1..%d", ErrBadTarget, what, s, n)
	}
	return i - 1, nil
}

// AdminHandler serves the admin API, every route but the dashboard behind
// "Authorization: Bearer ADMINKEY":
//
//	POST /chaos/{action}[?target=N]  carry out a chaos action; 200 once it is in effect
//	GET  /status                     the map and the state of each process and backend
//	GET  /lb/metrics, /lb/status     the load balancer's own admin API (lb.AdminHandler)
//	GET  /dashboard/                 the live dashboard (read-only, no key; its chaos
//	                                 buttons ask for the admin key)
//
// Errors are problem+json (RFC 9457): 401 without the key, 404 for an unknown action, 400
// for a bad target, 409 for an action this topology cannot carry out, 500 when it failed.
func (t *Topology) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /chaos/{action}", func(w http.ResponseWriter, r *http.Request) {
		action, target := r.PathValue("action"), r.URL.Query().Get("target")
		start := time.Now()
		err := t.Chaos(r.Context(), action, target)
		switch {
		case err == nil:
			writeJSON(w, http.StatusOK, map[string]any{"action": action, "target": target,
				"took_ms": float64(time.Since(start).Microseconds()) / 1000})
		case errors.Is(err, ErrUnknownAction):
			problem(w, http.StatusNotFound, "unknown chaos action", err)
		case errors.Is(err, ErrBadTarget):
			problem(w, http.StatusBadRequest, "bad chaos target", err)
		case errors.Is(err, ErrNotApplicable):
			problem(w, http.StatusConflict, "chaos action not applicable", err)
		default:
			problem(w, http.StatusInternalServerError, "chaos action failed", err)
		}
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, t.Status())
	})
	if t.lbAdmin != nil {
		mux.Handle("/lb/", t.lbAdmin)
	}
	var dash http.Handler
	if t.dash != nil {
		dash = http.StripPrefix(strings.TrimSuffix(DashboardPath, "/"), t.dash)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if dash != nil && (r.URL.Path == strings.TrimSuffix(DashboardPath, "/") || strings.HasPrefix(r.URL.Path, DashboardPath)) {
			dash.ServeHTTP(w, r)
			return
		}
		key, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		h := sha256.Sum256([]byte(key))
		if !ok || subtle.ConstantTimeCompare(h[:], t.adminHash[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="strata up admin"`)
			problem(w, http.StatusUnauthorized, "admin key required", errors.New("send the admin key that strata up printed as Authorization: Bearer KEY"))
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// Status is the state of a running topology.
type Status struct {
	Map      Map             `json:"map"`
	Apps     []ProcStatus    `json:"apps"`
	Cache    ProcStatus      `json:"cache"`
	Backends json.RawMessage `json:"backends,omitempty"`
}

// ProcStatus is one process's state.
type ProcStatus struct {
	Name    string `json:"name"`
	Addr    string `json:"addr"`
	PID     int    `json:"pid,omitempty"`
	Running bool   `json:"running"`
}

// Status returns the state of each process and the load balancer's view of the backends.
func (t *Topology) Status() Status {
	s := Status{Map: t.Map()}
	for i, p := range t.apps {
		pid := p.PID()
		s.Apps = append(s.Apps, ProcStatus{Name: p.name, Addr: t.m.Apps[i], PID: pid, Running: pid != 0})
	}
	switch {
	case t.node != nil:
		pid := t.node.PID()
		s.Cache = ProcStatus{Name: "cachenode", Addr: t.m.Cache, PID: pid, Running: pid != 0}
	case t.cluster != nil:
		// The first node stands for the tier: running while every node runs.
		s.Cache = ProcStatus{Name: "redis cluster", Addr: t.m.Cache, PID: t.cluster.Nodes[0].PID(), Running: true}
		for _, n := range t.cluster.Nodes {
			s.Cache.Running = s.Cache.Running && n.Running()
		}
	default:
		s.Cache = ProcStatus{Name: t.m.CacheKind, Addr: t.m.Cache}
	}
	if t.lb != nil {
		s.Backends, _ = json.Marshal(t.lb.Status())
	}
	return s
}

func (t *Topology) startAdmin() {
	t.admin = &http.Server{Handler: t.AdminHandler(), ReadHeaderTimeout: 5 * time.Second}
	t.serving.Add(1)
	go func() { // owned by t: Close shuts the server down
		defer t.serving.Done()
		_ = t.admin.Serve(t.adminLn)
	}()
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func problem(w http.ResponseWriter, code int, title string, err error) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"type": "about:blank", "title": title, "status": code, "detail": err.Error(),
	})
}
