package replica

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

const (
	p  = 0 // primary
	r1 = 1
	r2 = 2
)

func newRouter(t *testing.T, cfg Config) *Router {
	t.Helper()
	r, err := NewRouter(cfg, []string{"primary", "replica1", "replica2"}, p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func observeAll(r *Router, now time.Time, primaryLSN, lsn1, lsn2 LSN) {
	r.Observe(Observation{Node: p, At: now, Role: RolePrimary, LSN: primaryLSN})
	r.Observe(Observation{Node: r1, At: now, Role: RoleReplica, LSN: lsn1})
	r.Observe(Observation{Node: r2, At: now, Role: RoleReplica, LSN: lsn2})
}

func pick(t *testing.T, r *Router, now time.Time, min LSN) int {
	t.Helper()
	i, err := r.PickRead(now, min)
	if err != nil {
		return -1
	}
	r.Done(i)
	return i
}

func TestNewRouterValidates(t *testing.T) {
	if _, err := NewRouter(Config{}, nil, 0); err == nil {
		t.Error("no nodes accepted")
	}
	if _, err := NewRouter(Config{}, []string{"a"}, 1); err == nil {
		t.Error("primary index out of range accepted")
	}
}

func TestUnprobedNodesAreNotUsed(t *testing.T) {
	r := newRouter(t, Config{})
	if _, err := r.Primary(t0); !errors.Is(err, ErrNoPrimary) {
		t.Fatalf("Primary before any probe: %v, want ErrNoPrimary", err)
	}
	if _, err := r.PickRead(t0, 0); !errors.Is(err, ErrNoReplica) {
		t.Fatalf("PickRead before any probe: %v, want ErrNoReplica", err)
	}
}

func TestReadsSpreadOverReplicas(t *testing.T) {
	for _, pol := range []Policy{LeastOutstanding, RoundRobin} {
		r := newRouter(t, Config{Policy: pol})
		observeAll(r, t0, 100, 100, 100)
		count := map[int]int{}
		for range 100 {
			count[pick(t, r, t0, 0)]++
		}
		if count[r1] != 50 || count[r2] != 50 {
			t.Errorf("policy %d: reads went %v, want 50 to each replica and none to the primary", pol, count)
		}
	}
}

func TestLeastOutstandingPrefersIdleReplica(t *testing.T) {
	r := newRouter(t, Config{})
	observeAll(r, t0, 100, 100, 100)
	first, _ := r.PickRead(t0, 0) // held in flight
	for range 5 {
		if got := pick(t, r, t0, 0); got == first {
			t.Fatalf("picked busy replica %d while the other was idle", got)
		}
	}
	r.Done(first)
}

func TestLagBounds(t *testing.T) {
	r := newRouter(t, Config{MaxLagBytes: 1000, MaxLag: 2 * time.Second})
	// Idle and caught up: lag 0, however long nothing happens.
	observeAll(r, t0, 5000, 5000, 5000)
	observeAll(r, at(time.Hour), 5000, 5000, 5000)
	for _, s := range r.Status(at(time.Hour)) {
		if s.LagBytes != 0 || s.Lag != 0 {
			t.Fatalf("idle caught-up node %s reports lag %d bytes, %v", s.Name, s.LagBytes, s.Lag)
		}
	}
	// The primary writes at +1h+1s; replica1 replays, replica2 is stuck.
	now := at(time.Hour + time.Second)
	observeAll(r, now, 5500, 5500, 5000)
	if got := pick(t, r, now, 0); got < 0 {
		t.Fatal("no replica within bounds")
	}
	// Within 1000 bytes and 2s, replica2 still qualifies: both get reads.
	seen := map[int]bool{}
	for range 4 {
		seen[pick(t, r, now, 0)] = true
	}
	if !seen[r2] {
		t.Fatal("replica2 (500 bytes, <2s behind) was never used")
	}
	// Three seconds later it is still stuck: over the time bound.
	later := now.Add(3 * time.Second)
	observeAll(r, later, 5500, 5500, 5000)
	for range 4 {
		if got := pick(t, r, later, 0); got != r1 {
			t.Fatalf("picked %d; replica2 lags 3s > 2s and must be skipped", got)
		}
	}
	// Over the byte bound.
	observeAll(r, later, 9000, 9000, 5000)
	st := r.Status(later)
	if st[r2].LagBytes != 4000 || st[r2].Usable {
		t.Fatalf("replica2 status %+v, want 4000 bytes behind and unusable", st[r2])
	}
}

func TestTokenRequiresReplayedPosition(t *testing.T) {
	r := newRouter(t, Config{MaxLag: -1, MaxLagBytes: -1})
	observeAll(r, t0, 900, 900, 500)
	for range 6 {
		if got := pick(t, r, t0, 800); got != r1 {
			t.Fatalf("token 800: picked %d, want replica1 (900); replica2 has only 500", got)
		}
	}
	if _, err := r.PickRead(t0, 901); !errors.Is(err, ErrNoReplica) {
		t.Fatalf("token beyond every replica: %v, want ErrNoReplica", err)
	}
	if !r.Replayed(r1, 900) || r.Replayed(r2, 900) {
		t.Fatal("Replayed disagrees with observations")
	}
}

func TestFailureBansWithBackoffAndRecheck(t *testing.T) {
	r := newRouter(t, Config{BanFor: time.Second, MaxBan: 4 * time.Second})
	observeAll(r, t0, 1, 1, 1)
	dead := errors.New("connection refused")
	r.ReportFailure(r1, t0, dead)
	for range 4 {
		if got := pick(t, r, t0, 0); got != r2 {
			t.Fatalf("picked %d while replica1 is banned", got)
		}
	}
	// A probe that succeeds during the ban does not lift it.
	r.Observe(Observation{Node: r1, At: at(500 * time.Millisecond), Role: RoleReplica, LSN: 1})
	if st := r.Status(at(500 * time.Millisecond)); st[r1].Usable || !st[r1].Banned {
		t.Fatalf("replica1 usable during its ban: %+v", st[r1])
	}
	// After the ban, a successful probe brings it back.
	r.Observe(Observation{Node: r2, At: at(1100 * time.Millisecond), Role: RoleReplica, LSN: 1})
	r.Observe(Observation{Node: r1, At: at(1100 * time.Millisecond), Role: RoleReplica, LSN: 1})
	seen := map[int]bool{}
	for range 4 {
		seen[pick(t, r, at(1100*time.Millisecond), 0)] = true
	}
	if !seen[r1] {
		t.Fatal("replica1 not used again after its ban expired and a probe succeeded")
	}
	// Repeated failures double the ban up to MaxBan: 1s, 2s, 4s, 4s.
	now := at(2 * time.Second)
	want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second}
	for i, w := range want {
		r.Observe(Observation{Node: r2, At: now, Err: dead})
		if got := r.Status(now)[r2].BannedUntil.Sub(now); got != w {
			t.Fatalf("failure %d: banned for %v, want %v", i+1, got, w)
		}
		now = now.Add(w) // the re-check after the ban fails again
	}
}

func TestStaleObservationsMakeNodeUnknown(t *testing.T) {
	r := newRouter(t, Config{StaleAfter: time.Second})
	observeAll(r, t0, 1, 1, 1)
	if _, err := r.Primary(at(2 * time.Second)); !errors.Is(err, ErrNoPrimary) {
		t.Fatalf("primary not probed for 2s still writable: %v", err)
	}
	if _, err := r.PickRead(at(2*time.Second), 0); !errors.Is(err, ErrNoReplica) {
		t.Fatalf("replicas not probed for 2s still readable: %v", err)
	}
}

func TestPrimaryDownFailsWritesAtOnce(t *testing.T) {
	r := newRouter(t, Config{})
	observeAll(r, t0, 1, 1, 1)
	if i, err := r.Primary(t0); err != nil || i != p {
		t.Fatalf("Primary = %d, %v", i, err)
	}
	r.ReportFailure(p, t0, errors.New("connection refused"))
	if _, err := r.Primary(t0); !errors.Is(err, ErrNoPrimary) {
		t.Fatalf("Primary after failure: %v, want ErrNoPrimary", err)
	}
	if got := pick(t, r, t0, 0); got < 0 {
		t.Fatal("reads stopped when the primary went down")
	}
}

func TestPromotionIsFollowedAndOldPrimaryFenced(t *testing.T) {
	r := newRouter(t, Config{})
	observeAll(r, t0, 10, 10, 10)
	r.Observe(Observation{Node: p, At: at(time.Second), Err: errors.New("connection refused")})
	r.Observe(Observation{Node: r2, At: at(time.Second), Role: RolePrimary, LSN: 20})
	i, err := r.Primary(at(time.Second))
	if err != nil || i != r2 {
		t.Fatalf("after promotion Primary = %d, %v; want replica2", i, err)
	}
	for range 4 {
		if got := pick(t, r, at(time.Second), 0); got == r2 {
			t.Fatal("the promoted node is still used as a replica")
		}
	}
	// The old primary comes back still claiming to be primary: it is never written to.
	later := at(5 * time.Second)
	r.Observe(Observation{Node: p, At: later, Role: RolePrimary, LSN: 15})
	r.Observe(Observation{Node: r2, At: later, Role: RolePrimary, LSN: 30})
	if i, err := r.Primary(later); err != nil || i != r2 {
		t.Fatalf("stale primary back: Primary = %d, %v; want replica2", i, err)
	}
	if st := r.Status(later); !st[p].Fenced || st[p].Writable {
		t.Fatalf("stale primary not fenced: %+v", st[p])
	}
	// Rejoined as a standby, it may serve reads again.
	r.Observe(Observation{Node: p, At: later, Role: RoleReplica, LSN: 30})
	if st := r.Status(later); st[p].Fenced || !st[p].Usable {
		t.Fatalf("old primary rejoined as replica but unusable: %+v", st[p])
	}
}

func TestPromotionWhilePrimaryHealthyFencesNewcomer(t *testing.T) {
	r := newRouter(t, Config{})
	observeAll(r, t0, 10, 10, 10)
	r.Observe(Observation{Node: r1, At: t0, Role: RolePrimary, LSN: 10})
	if i, err := r.Primary(t0); err != nil || i != p {
		t.Fatalf("Primary = %d, %v; want the configured primary", i, err)
	}
	if st := r.Status(t0); !st[r1].Fenced {
		t.Fatal("a second node claiming primary was not fenced")
	}
}

func TestDemotedPrimaryTakesNoWrites(t *testing.T) {
	r := newRouter(t, Config{})
	observeAll(r, t0, 10, 10, 10)
	r.Observe(Observation{Node: p, At: t0, Role: RoleReplica, LSN: 10})
	if _, err := r.Primary(t0); !errors.Is(err, ErrNoPrimary) {
		t.Fatalf("demoted primary still writable: %v", err)
	}
}

func TestConcurrentUse(t *testing.T) {
	r := newRouter(t, Config{})
	observeAll(r, t0, 1, 1, 1)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range 1000 {
				now := at(time.Duration(k) * time.Millisecond)
				if g == 0 {
					observeAll(r, now, LSN(k+1), LSN(k+1), LSN(k))
					continue
				}
				if i, err := r.PickRead(now, 0); err == nil {
					r.Done(i)
				}
				_ = r.Status(now)
			}
		}()
	}
	wg.Wait()
	for _, s := range r.Status(at(time.Second)) {
		if s.Outstanding != 0 {
			t.Fatalf("%s has %d reads outstanding after all finished", s.Name, s.Outstanding)
		}
	}
}

func TestFailuresDuringBanDoNotLengthenIt(t *testing.T) {
	r := newRouter(t, Config{BanFor: time.Second, MaxBan: time.Minute})
	observeAll(r, t0, 1, 1, 1)
	dead := errors.New("refused")
	for k := range 20 { // a probe every 50ms fails throughout the first ban
		r.Observe(Observation{Node: r1, At: at(time.Duration(k) * 50 * time.Millisecond), Err: dead})
	}
	if until := r.Status(t0)[r1].BannedUntil; !until.Equal(at(time.Second)) {
		t.Fatalf("banned until %v, want %v: failures during the ban lengthened it", until, at(time.Second))
	}
}

func TestSessionState(t *testing.T) {
	s := NewSession(Session, Token{}.Add(2, 50))
	if s.MinLSN(2) != 50 || s.MinLSN(3) != 0 {
		t.Fatalf("MinLSN = %v, %v", s.MinLSN(2), s.MinLSN(3))
	}
	s.Wrote(3, 70)
	s.Wrote(2, 40) // older than the token's: kept at 50
	if tok := s.Token(); tok.For(2) != 50 || tok.For(3) != 70 {
		t.Fatalf("token after writes = %v", tok.Positions())
	}
	if NewSession(Eventual, Token{}.Add(2, 50)).MinLSN(2) != 0 {
		t.Fatal("an eventual read asked for a position")
	}
	if SessionFrom(context.Background()) != nil {
		t.Fatal("a session from nowhere")
	}
	if got := SessionFrom(WithSession(context.Background(), s)); got != s {
		t.Fatal("WithSession/SessionFrom lost the session")
	}
}
