package replica

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// LSN is a position in the primary's write-ahead log, in bytes.
type LSN uint64

// String formats the LSN as PostgreSQL does ("16/B374D848").
func (l LSN) String() string { return fmt.Sprintf("%X/%X", uint64(l)>>32, uint32(l)) }

// Role is what a node says it is.
type Role int

const (
	// RoleUnknown: not probed successfully yet.
	RoleUnknown Role = iota
	// RolePrimary: accepts writes (pg_is_in_recovery() is false).
	RolePrimary
	// RoleReplica: a standby replaying the primary's WAL.
	RoleReplica
)

func (r Role) String() string {
	switch r {
	case RolePrimary:
		return "primary"
	case RoleReplica:
		return "replica"
	}
	return "unknown"
}

// Errors callers act on.
var (
	// ErrNoPrimary: no node can take writes now (the primary is down, banned, demoted, or
	// fenced off after a failover). Writes must fail fast with it, never hang.
	ErrNoPrimary = errors.New("replica: no usable primary")
	// ErrNoReplica: no replica satisfies the read's constraints (health, lag bound, token).
	ErrNoReplica = errors.New("replica: no usable replica")
)

// Policy chooses among the replicas that may serve a read.
type Policy int

const (
	// LeastOutstanding picks the usable replica with the fewest reads in flight, breaking ties
	// round robin (the default).
	LeastOutstanding Policy = iota
	// RoundRobin rotates over the usable replicas.
	RoundRobin
)

// Config tunes a Router. The zero value is valid.
type Config struct {
	// MaxLagBytes is the largest replay lag, in WAL bytes, at which a replica may serve a read
	// that presents no token. Default 16 MiB. Negative means no byte bound.
	MaxLagBytes int64
	// MaxLag is the largest replay lag in time at which a replica may serve such a read.
	// Default 5s. Negative means no time bound.
	MaxLag time.Duration
	// BanFor is how long a node whose probe or query failed is kept out of use before it is
	// probed again; repeated failures double it up to MaxBan. Default 1s.
	BanFor time.Duration
	// MaxBan caps the ban. Default 30s.
	MaxBan time.Duration
	// StaleAfter is how old a node's last successful observation may be before the node is
	// treated as unknown (its prober is stuck or slow). Default 5s.
	StaleAfter time.Duration
	// Policy picks among usable replicas. Default LeastOutstanding.
	Policy Policy
}

func (c Config) withDefaults() Config {
	if c.MaxLagBytes == 0 {
		c.MaxLagBytes = 16 << 20
	}
	if c.MaxLag == 0 {
		c.MaxLag = 5 * time.Second
	}
	if c.BanFor <= 0 {
		c.BanFor = time.Second
	}
	if c.MaxBan <= 0 {
		c.MaxBan = 30 * time.Second
	}
	if c.MaxBan < c.BanFor {
		c.MaxBan = c.BanFor
	}
	if c.StaleAfter <= 0 {
		c.StaleAfter = 5 * time.Second
	}
	return c
}

// Observation is one probe result for one node.
type Observation struct {
	Node int       // index given to NewRouter
	At   time.Time // when the probe answered
	Err  error     // non-nil when the probe failed; the other fields are ignored
	Role Role      // what the node says it is
	// LSN is, for a primary, its current WAL position (pg_current_wal_lsn()); for a replica,
	// the position it has replayed up to (pg_last_wal_replay_lsn()).
	LSN LSN
}

// NodeStatus describes one node for metrics and status pages.
type NodeStatus struct {
	Name        string
	Role        Role      // last reported role
	Configured  Role      // the role the node was configured with
	Writable    bool      // writes go here
	Usable      bool      // may serve reads that present no token
	Banned      bool      // kept out after a failure
	BannedUntil time.Time // zero when not banned
	Fenced      bool      // a former primary that must not take writes
	LSN         LSN       // last reported LSN
	LagBytes    int64     // replicas: primary LSN minus replay LSN, 0 when caught up
	Lag         time.Duration
	Outstanding int
	Failures    int // consecutive failures
	LastErr     string
}

type node struct {
	name       string
	configured Role
	role       Role
	lsn        LSN
	seen       time.Time // last successful observation
	bannedTill time.Time
	failures   int
	fenced     bool
	inflight   int
	lastErr    string
}

// sample is the primary's LSN as seen at a moment.
type sample struct {
	lsn LSN
	at  time.Time
}

const historyLen = 128

// Router is the decision core of replica routing: it is fed observations of every node of one
// shard (by a prober, see package pgreplica) and answers which node a write or a read goes to.
// It does no I/O and takes time as a parameter. It is safe for concurrent use.
//
// Lag in time is measured without trusting any clock but the caller's: the router remembers
// when it saw the primary reach each LSN, and a replica that has replayed up to L lags by the
// time since the primary was first seen beyond L (which errs low by at most one probe
// interval). A replica that has replayed everything the
// primary wrote lags by 0, however long the primary has been idle.
type Router struct {
	cfg     Config
	mu      sync.Mutex // protects everything below
	nodes   []node
	primary int // index of the node writes go to
	history []sample
	rr      int
}

// NewRouter makes a router over the named nodes; nodes[primary] is the configured primary and
// the rest are replicas.
func NewRouter(cfg Config, names []string, primary int) (*Router, error) {
	if len(names) == 0 {
		return nil, errors.New("replica: no nodes")
	}
	if primary < 0 || primary >= len(names) {
		return nil, fmt.Errorf("replica: primary index %d out of range", primary)
	}
	r := &Router{cfg: cfg.withDefaults(), nodes: make([]node, len(names)), primary: primary}
	for i, n := range names {
		r.nodes[i] = node{name: n, configured: RoleReplica}
	}
	r.nodes[primary].configured = RolePrimary
	return r, nil
}

// Len returns the number of nodes.
func (r *Router) Len() int { return len(r.nodes) }

// Name returns node i's name.
func (r *Router) Name(i int) string { return r.nodes[i].name }

// Observe records a probe result.
func (r *Router) Observe(o Observation) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if o.Node < 0 || o.Node >= len(r.nodes) {
		return
	}
	n := &r.nodes[o.Node]
	if o.Err != nil {
		r.failLocked(n, o.At, o.Err)
		return
	}
	n.role, n.lsn, n.seen = o.Role, o.LSN, o.At
	if !o.At.Before(n.bannedTill) {
		// The ban has expired and the node answered: it is usable again. An answer during the
		// ban is recorded but does not lift it, so that a flapping node stays out.
		n.failures, n.bannedTill, n.lastErr = 0, time.Time{}, ""
	}
	switch {
	case o.Node == r.primary && o.Role == RoleReplica:
		// The primary was demoted: nothing takes writes until a primary shows up.
		n.fenced = true
	case o.Node != r.primary && o.Role == RolePrimary && !n.fenced:
		// A replica was promoted. If the current primary is unusable, follow the promotion and
		// fence the old primary off for good, so that it is never written to again should it
		// come back believing it is still the primary.
		cur := &r.nodes[r.primary]
		if cur.fenced || cur.role != RolePrimary || !r.aliveLocked(cur, o.At) {
			cur.fenced = true
			r.primary = o.Node
			r.history = r.history[:0]
		} else {
			// Two nodes claim to be primary while ours is alive: do not trust the newcomer.
			n.fenced = true
		}
	case o.Node == r.primary && o.Role == RolePrimary:
		if len(r.history) == 0 || o.LSN > r.history[len(r.history)-1].lsn {
			if len(r.history) == historyLen {
				copy(r.history, r.history[1:])
				r.history = r.history[:historyLen-1]
			}
			r.history = append(r.history, sample{o.LSN, o.At})
		}
	case o.Role == RoleReplica && n.fenced && o.Node != r.primary:
		// A fenced former primary that rejoined as a standby may serve reads again.
		n.fenced = false
	}
}

// ReportFailure records that a query on node i failed for a reason that concerns the node
// (connection refused, timeout), so that it is banned at once instead of at the next probe.
func (r *Router) ReportFailure(i int, now time.Time, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if i >= 0 && i < len(r.nodes) {
		r.failLocked(&r.nodes[i], now, err)
	}
}

func (r *Router) failLocked(n *node, now time.Time, err error) {
	n.seen = time.Time{} // usable again only after a successful probe
	n.lastErr = err.Error()
	if now.Before(n.bannedTill) {
		return // already banned: failures during a ban do not lengthen it
	}
	n.failures++
	ban := r.cfg.BanFor
	for i := 1; i < n.failures && ban < r.cfg.MaxBan; i++ {
		ban *= 2
	}
	n.bannedTill = now.Add(min(ban, r.cfg.MaxBan))
}

func (r *Router) aliveLocked(n *node, now time.Time) bool {
	return n.failures == 0 && !n.seen.IsZero() && now.Sub(n.seen) <= r.cfg.StaleAfter && !now.Before(n.bannedTill)
}

// primaryLSNLocked is the newest LSN seen on the primary.
func (r *Router) primaryLSNLocked() LSN {
	if len(r.history) == 0 {
		return 0
	}
	return r.history[len(r.history)-1].lsn
}

// lagLocked returns a replica's lag in bytes and in time at now.
func (r *Router) lagLocked(n *node, now time.Time) (int64, time.Duration) {
	p := r.primaryLSNLocked()
	if n.lsn >= p {
		return 0, 0
	}
	// The oldest write the replica has not replayed was first seen on the primary at the
	// first sample beyond the replica's position: count from there. This errs low by at most
	// one probe interval, and never grows while the primary is idle.
	from := r.history[len(r.history)-1].at
	for _, s := range r.history {
		if s.lsn > n.lsn {
			from = s.at
			break
		}
	}
	return int64(p - n.lsn), max(now.Sub(from), 0)
}

// Primary returns the node that takes writes, or ErrNoPrimary.
func (r *Router) Primary(now time.Time) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := &r.nodes[r.primary]
	if n.fenced || n.role != RolePrimary || !r.aliveLocked(n, now) {
		return -1, fmt.Errorf("%w: %s is %s", ErrNoPrimary, n.name, r.describeLocked(n, now))
	}
	return r.primary, nil
}

func (r *Router) describeLocked(n *node, now time.Time) string {
	switch {
	case n.fenced:
		return "fenced off"
	case now.Before(n.bannedTill):
		return "down (" + n.lastErr + ")"
	case n.seen.IsZero():
		return "not probed yet"
	case now.Sub(n.seen) > r.cfg.StaleAfter:
		return "not answering probes"
	default:
		return "a " + n.role.String()
	}
}

// PickRead chooses a replica for a read that needs at least minLSN replayed (0: no token).
// Reads without a token also respect the lag bounds. It returns ErrNoReplica when none
// qualifies; the caller then waits for a replica to catch up or reads from the primary.
// A successful pick counts as in flight until Done(node) is called.
func (r *Router) PickRead(now time.Time, minLSN LSN) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	best, bestLoad, seen := -1, 0, 0
	for k := range r.nodes {
		i := (r.rr + k) % len(r.nodes)
		n := &r.nodes[i]
		if i == r.primary || n.fenced || n.role != RoleReplica || !r.aliveLocked(n, now) {
			continue
		}
		if n.lsn < minLSN {
			continue
		}
		if minLSN == 0 {
			lagB, lagT := r.lagLocked(n, now)
			if (r.cfg.MaxLagBytes >= 0 && lagB > r.cfg.MaxLagBytes) || (r.cfg.MaxLag >= 0 && lagT > r.cfg.MaxLag) {
				continue
			}
		}
		seen++
		if best < 0 || (r.cfg.Policy == LeastOutstanding && n.inflight < bestLoad) {
			best, bestLoad = i, n.inflight
		}
		if r.cfg.Policy == RoundRobin {
			break
		}
	}
	if best < 0 {
		return -1, ErrNoReplica
	}
	r.rr = (best + 1) % len(r.nodes)
	r.nodes[best].inflight++
	return best, nil
}

// Begin counts a read in flight on node i that was not chosen by PickRead (a read sent to the
// primary, for example). Pair it with Done.
func (r *Router) Begin(i int) {
	r.mu.Lock()
	r.nodes[i].inflight++
	r.mu.Unlock()
}

// Done ends a read counted by PickRead or Begin.
func (r *Router) Done(i int) {
	r.mu.Lock()
	if r.nodes[i].inflight > 0 {
		r.nodes[i].inflight--
	}
	r.mu.Unlock()
}

// Replayed reports whether node i was last seen with at least lsn replayed.
func (r *Router) Replayed(i int, lsn LSN) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.nodes[i].lsn >= lsn
}

// Status describes every node at now.
func (r *Router) Status(now time.Time) []NodeStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]NodeStatus, len(r.nodes))
	for i := range r.nodes {
		n := &r.nodes[i]
		s := NodeStatus{
			Name: n.name, Role: n.role, Configured: n.configured, LSN: n.lsn,
			Fenced: n.fenced, Outstanding: n.inflight, Failures: n.failures, LastErr: n.lastErr,
			Banned: now.Before(n.bannedTill),
		}
		if s.Banned {
			s.BannedUntil = n.bannedTill
		}
		alive := r.aliveLocked(n, now)
		s.Writable = i == r.primary && alive && !n.fenced && n.role == RolePrimary
		if i != r.primary && n.role == RoleReplica {
			s.LagBytes, s.Lag = r.lagLocked(n, now)
			s.Usable = alive && !n.fenced &&
				(r.cfg.MaxLagBytes < 0 || s.LagBytes <= r.cfg.MaxLagBytes) && (r.cfg.MaxLag < 0 || s.Lag <= r.cfg.MaxLag)
		}
		out[i] = s
	}
	return out
}

// ParseLSN parses PostgreSQL's text form of an LSN ("16/B374D848").
func ParseLSN(s string) (LSN, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("replica: bad LSN %q", s)
	}
	h, err1 := strconv.ParseUint(hi, 16, 32)
	l, err2 := strconv.ParseUint(lo, 16, 32)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("replica: bad LSN %q", s)
	}
	return LSN(h<<32 | l), nil
}
