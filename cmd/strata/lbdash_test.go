package main

import (
	"context"
	"crypto/sha256"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/strata-project/strata/dashboard"
	"github.com/strata-project/strata/lb"
)

func TestLBDashboardSource(t *testing.T) {
	var backends []lb.BackendConfig
	var servers []*httptest.Server
	for range 3 {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
		defer s.Close()
		servers = append(servers, s)
		backends = append(backends, lb.BackendConfig{Addr: strings.TrimPrefix(s.URL, "http://")})
	}
	l, err := lb.New(lb.Config{Backends: backends, Health: lb.HealthConfig{Interval: 50 * time.Millisecond, Timeout: 40 * time.Millisecond, Rise: 1, Fall: 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	src := &lbSource{l: l, addr: "127.0.0.1:8080"}
	topo, err := src.Snapshot(context.Background())
	if err != nil || len(topo.Tiers) != 2 || len(topo.Tiers[1].Nodes) != 3 {
		t.Fatalf("snapshot = %+v, %v; want the lb and 3 backends", topo, err)
	}
	// A dead backend shows down once the health checks notice.
	servers[1].Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		topo, _ = src.Snapshot(context.Background())
		if topo.Tiers[1].Nodes[1].Health == dashboard.HealthDown {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a closed backend is still shown %q", topo.Tiers[1].Nodes[1].Health)
		}
		time.Sleep(20 * time.Millisecond) // polling the health checker's view
	}
	if topo.Tiers[0].Nodes[0].RPS == nil {
		t.Fatal("the second snapshot has no request rate for the lb")
	}
}

func TestLBDashboardAuthorize(t *testing.T) {
	key := "an-admin-key-for-the-dashboard"
	auth := loopbackOrAdminKey([]lb.AdminKey{{Name: "ops", SHA256: sha256.Sum256([]byte(key))}})
	req := func(remote, bearer string) *http.Request {
		r := httptest.NewRequest("GET", "/dashboard/", nil)
		r.RemoteAddr = remote
		if bearer != "" {
			r.Header.Set("Authorization", "Bearer "+bearer)
		}
		return r
	}
	for _, tc := range []struct {
		remote, bearer string
		ok             bool
	}{
		{"127.0.0.1:5000", "", true},
		{"[::1]:5000", "", true},
		{"192.0.2.7:5000", "", false},
		{"192.0.2.7:5000", "wrong", false},
		{"192.0.2.7:5000", key, true},
	} {
		if err := auth(req(tc.remote, tc.bearer)); (err == nil) != tc.ok {
			t.Errorf("from %s with key %q: %v, want ok=%v", tc.remote, tc.bearer, err, tc.ok)
		}
	}
}
