package lb

import (
	"testing"
	"time"
)

func TestHealthRiseFall(t *testing.T) {
	h := Health{Rise: 2, Fall: 3}
	steps := []struct {
		r              CheckResult
		healthy, ready bool
		changed        bool
	}{
		{CheckFail, true, true, false},
		{CheckFail, true, true, false},
		{CheckFail, false, true, true},
		{CheckPass, false, true, false},
		{CheckFail, false, true, false},
		{CheckPass, false, true, false},
		{CheckPass, true, true, true},
		{CheckNotReady, true, false, true},
		{CheckNotReady, true, false, false},
		{CheckPass, true, true, true},
	}
	for i, s := range steps {
		changed := h.Observe(s.r)
		if h.Healthy() != s.healthy || h.Ready() != s.ready || changed != s.changed {
			t.Fatalf("step %d (%v): healthy %v ready %v changed %v, want %v %v %v",
				i, s.r, h.Healthy(), h.Ready(), changed, s.healthy, s.ready, s.changed)
		}
	}
}

func TestEjectorBackoff(t *testing.T) {
	t0 := time.Unix(1000, 0)
	e := Ejector{ConsecutiveFailures: 2, BaseEjection: time.Second, MaxEjection: 5 * time.Second}
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	for _, s := range []struct {
		now   time.Duration
		eject bool
		dur   time.Duration
	}{
		{0, false, 0},
		{0, true, time.Second},                    // first ejection: 1s
		{500 * time.Millisecond, false, 0},        // still ejected: no new ejection
		{2 * time.Second, false, 0},               // streak restarts after ejection
		{2 * time.Second, true, 2 * time.Second},  // second: doubled
		{5 * time.Second, false, 0},               //
		{5 * time.Second, true, 4 * time.Second},  // third: 4s
		{10 * time.Second, false, 0},              //
		{10 * time.Second, true, 5 * time.Second}, // capped at MaxEjection
		{100 * time.Second, false, 0},             //
		{100 * time.Second, true, time.Second},    // long quiet: multiplier reset
	} {
		eject, until := e.FailureAt(at(s.now))
		if eject != s.eject || eject && until.Sub(at(s.now)) != s.dur {
			t.Fatalf("at %v: eject %v for %v, want %v for %v", s.now, eject, until.Sub(at(s.now)), s.eject, s.dur)
		}
	}
	e.Success()
	if e.Streak() != 0 {
		t.Fatal("Success did not reset the streak")
	}
}

func TestEjectorCancel(t *testing.T) {
	t0 := time.Unix(1000, 0)
	e := Ejector{ConsecutiveFailures: 1, BaseEjection: time.Second}
	if ej, _ := e.FailureAt(t0); !ej {
		t.Fatal("no ejection")
	}
	e.Cancel()
	// Cancelled: the next failure may eject again, with the base duration.
	if ej, until := e.FailureAt(t0.Add(time.Millisecond)); !ej || until.Sub(t0.Add(time.Millisecond)) != time.Second {
		t.Fatalf("after Cancel: %v %v", ej, until)
	}
}

func TestMaxEjectedShare(t *testing.T) {
	// Four backends, all failing, at most 50% ejected: exactly two are.
	var bs []BackendConfig
	for i := range 4 {
		bs = append(bs, BackendConfig{Addr: "127.0.0.1:" + string(rune('1'+i))})
	}
	l, err := New(Config{Backends: bs, Health: HealthConfig{Disabled: true}, Logger: quiet,
		Outlier: OutlierConfig{ConsecutiveFailures: 1, MaxEjectedPercent: 50}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	now := monoNow()
	for _, b := range l.Backends() {
		for range 3 {
			b.observe(now, 1, false, time.Second)
		}
	}
	n := 0
	for _, s := range l.Status() {
		if s.Ejected {
			n++
		}
	}
	if n != 2 {
		t.Fatalf("%d of 4 ejected, want 2", n)
	}
}

func TestPolicies(t *testing.T) {
	for _, pol := range []Policy{RoundRobin, WeightedRoundRobin, LeastOutstanding, Random, P2CEWMA, ConsistentHash} {
		t.Run(string(pol), func(t *testing.T) {
			l, err := New(Config{Policy: pol, Health: HealthConfig{Disabled: true}, Logger: quiet,
				Backends: []BackendConfig{{Addr: "a:1", Weight: 1}, {Addr: "b:1", Weight: 3}, {Addr: "c:1", Weight: 1}}})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			bs := l.Backends()
			bs[2].state.Or(stateAdminDrain)
			set := l.set.Load()
			counts := map[string]int{}
			p := &Pick{Backends: bs, now: monoNow()}
			for i := range 500 {
				p.Key, p.HasKey = uint64(i%7)*0x9e3779b97f4a7c15, true
				b := set.selector.Select(p)
				if b == nil {
					t.Fatal("nil pick")
				}
				counts[b.Addr()]++
			}
			if counts["c:1"] != 0 {
				t.Fatalf("drained backend picked %d times", counts["c:1"])
			}
			if pol == WeightedRoundRobin && counts["b:1"] != 3*counts["a:1"] {
				t.Fatalf("weighted counts %v", counts)
			}
			if pol == RoundRobin && counts["a:1"] != counts["b:1"] {
				t.Fatalf("round robin counts %v", counts)
			}
		})
	}
}
