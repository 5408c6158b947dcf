package dashboard

import "context"

// Source reports the topology as it is now. The dashboard calls Snapshot
// once per Config.Interval, whatever the number of viewers, with a context
// that ends after Config.Timeout; implementations must be safe for that one
// caller (calls never overlap).
type Source interface {
	Snapshot(ctx context.Context) (Topology, error)
}

// SourceFunc adapts a function to the Source interface.
type SourceFunc func(ctx context.Context) (Topology, error)

// Snapshot calls f(ctx).
func (f SourceFunc) Snapshot(ctx context.Context) (Topology, error) { return f(ctx) }

var _ Source = SourceFunc(nil)

// Topology is the picture of the system at one instant: tiers of nodes, top
// to bottom (load balancer, app servers, cache, then one tier per shard).
type Topology struct {
	// Tiers are shown in this order.
	Tiers []Tier `json:"tiers"`
	// RPS is the system's requests per second for the chart. Nil: the sum
	// of the load balancer nodes' RPS, or of the app servers' when no load
	// balancer reports one.
	RPS *float64 `json:"rps,omitempty"`
	// P99MS is the system's 99th percentile latency in milliseconds for the
	// chart. Nil: the largest P99MS of the app servers (of the load
	// balancers when no app server reports one).
	P99MS *float64 `json:"p99_ms,omitempty"`
}

// Tier is one row of the picture, such as "App servers" or "Shard 0".
type Tier struct {
	// Name is the tier's heading; unique within a Topology.
	Name string `json:"name"`
	// Nodes are shown in this order; their names are unique within the tier.
	Nodes []Node `json:"nodes"`
}

// Roles of nodes. Actions apply to nodes by role.
const (
	RoleLB      = "lb"
	RoleApp     = "app"
	RoleCache   = "cache"
	RolePrimary = "primary"
	RoleReplica = "replica"
)

// Health values of a node.
const (
	HealthUp       = "up"
	HealthDown     = "down"
	HealthDraining = "draining"
	HealthEjected  = "ejected"
)

// Breaker states of a node (the worst of its circuit breakers).
const (
	BreakerClosed   = "closed"
	BreakerHalfOpen = "half-open"
	BreakerOpen     = "open"
)

// Node is one process or engine in the picture. Every figure is optional:
// nil (or "") is shown as a dash and omitted from the JSON.
type Node struct {
	// Name identifies the node within its tier, such as "app-2".
	Name string `json:"name"`
	// Address is where the node listens, such as "127.0.0.1:8081".
	Address string `json:"address,omitempty"`
	// Role is one of the Role constants (or any other word, which gets no
	// actions unless Config.Actions names it).
	Role string `json:"role,omitempty"`
	// Target is the value sent as ?target= by the chaos actions on this
	// node; empty means the node shows no action buttons.
	Target string `json:"target,omitempty"`
	// Health is one of the Health constants; empty means unknown.
	Health string `json:"health,omitempty"`
	// Breaker is one of the Breaker constants; empty means none.
	Breaker string `json:"breaker,omitempty"`
	// RPS is requests per second.
	RPS *float64 `json:"rps,omitempty"`
	// P99MS is the 99th percentile latency in milliseconds.
	P99MS *float64 `json:"p99_ms,omitempty"`
	// HitRatio is the cache hit ratio, 0 to 1.
	HitRatio *float64 `json:"hit_ratio,omitempty"`
	// LagSeconds is a replica's replay lag in seconds.
	LagSeconds *float64 `json:"lag_s,omitempty"`
	// LimitedPerSec is rate-limit rejections per second.
	LimitedPerSec *float64 `json:"limited_per_s,omitempty"`
	// WriteBehind is the depth of the write-behind queue (acknowledged
	// writes not yet in the store).
	WriteBehind *float64 `json:"writebehind,omitempty"`
	// Note is a short free text shown with the node, such as an error.
	Note string `json:"note,omitempty"`
}

// Num returns a pointer to v, for the optional figures of Node and Topology.
func Num(v float64) *float64 { return &v }

// summarize fills t.RPS and t.P99MS when the source left them nil.
func summarize(t *Topology) {
	sum := func(role string) *float64 {
		var s float64
		var any bool
		for _, tier := range t.Tiers {
			for _, n := range tier.Nodes {
				if n.Role == role && n.RPS != nil {
					s += *n.RPS
					any = true
				}
			}
		}
		if !any {
			return nil
		}
		return &s
	}
	max := func(role string) *float64 {
		var m *float64
		for _, tier := range t.Tiers {
			for _, n := range tier.Nodes {
				if n.Role == role && n.P99MS != nil && (m == nil || *n.P99MS > *m) {
					v := *n.P99MS
					m = &v
				}
			}
		}
		return m
	}
	if t.RPS == nil {
		if t.RPS = sum(RoleLB); t.RPS == nil {
			t.RPS = sum(RoleApp)
		}
	}
	if t.P99MS == nil {
		if t.P99MS = max(RoleApp); t.P99MS == nil {
			t.P99MS = max(RoleLB)
		}
	}
}
