package main

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/strata-project/strata/dashboard"
	"github.com/strata-project/strata/lb"
)

// lbSource shows what a lone `strata lb` knows on its dashboard: itself and its backends,
// with health, requests per second (from the counters' deltas between two snapshots), in
// flight and the peak-EWMA latency estimate. It does not scrape the backends.
type lbSource struct {
	l    *lb.LB
	addr string

	mu   sync.Mutex // protects prev and at
	prev map[string]uint64
	at   time.Time
}

func (s *lbSource) Snapshot(context.Context) (dashboard.Topology, error) {
	now := time.Now()
	st := s.l.Status()
	s.mu.Lock()
	prev, at := s.prev, s.at
	s.prev, s.at = make(map[string]uint64, len(st)), now
	for _, b := range st {
		s.prev[b.Address] = b.Requests
	}
	s.mu.Unlock()
	dt := now.Sub(at).Seconds()
	rate := func(addr string, cur uint64) *float64 {
		p, ok := prev[addr]
		if !ok || dt <= 0 || cur < p {
			return nil
		}
		return dashboard.Num(float64(cur-p) / dt)
	}
	apps := dashboard.Tier{Name: "Backends"}
	var total float64
	for _, b := range st {
		n := dashboard.Node{Name: b.Address, Address: b.Address, Role: dashboard.RoleApp,
			RPS:  rate(b.Address, b.Requests),
			Note: fmt.Sprintf("%d in flight, latency ~%.1f ms, %d ejections", b.Inflight, b.LatencyMS, b.Ejections)}
		switch {
		case b.Drained:
			n.Health = dashboard.HealthDraining
		case b.Ejected:
			n.Health = dashboard.HealthEjected
		case !b.Healthy || !b.Ready:
			n.Health = dashboard.HealthDown
		default:
			n.Health = dashboard.HealthUp
		}
		if n.RPS != nil {
			total += *n.RPS
		}
		apps.Nodes = append(apps.Nodes, n)
	}
	lbNode := dashboard.Node{Name: "lb", Address: s.addr, Role: dashboard.RoleLB, Health: dashboard.HealthUp}
	if at.IsZero() {
		return dashboard.Topology{Tiers: []dashboard.Tier{{Name: "Load balancer", Nodes: []dashboard.Node{lbNode}}, apps}}, nil
	}
	lbNode.RPS = dashboard.Num(total)
	return dashboard.Topology{Tiers: []dashboard.Tier{{Name: "Load balancer", Nodes: []dashboard.Node{lbNode}}, apps}}, nil
}

// loopbackOrAdminKey lets the dashboard be read from the machine itself, and from elsewhere
// only with an admin key (read or write) as a Bearer token.
func loopbackOrAdminKey(keys []lb.AdminKey) func(*http.Request) error {
	return func(r *http.Request) error {
		if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			if ip, err := netip.ParseAddr(host); err == nil && ip.Unmap().IsLoopback() {
				return nil
			}
		}
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		sum := sha256.Sum256([]byte(tok))
		found := 0
		for _, k := range keys {
			found |= subtle.ConstantTimeCompare(sum[:], k.SHA256[:])
		}
		if !ok || found != 1 {
			return errors.New("the dashboard needs an admin key from outside this machine")
		}
		return nil
	}
}
