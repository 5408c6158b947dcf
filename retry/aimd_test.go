package retry_test

import (
	"context"
	"errors"
	"testing"

	"github.com/strata-project/strata/retry"
)

func TestAIMD(t *testing.T) {
	l, err := retry.NewAIMD(retry.AIMDConfig{InitialLimit: 4, MinLimit: 2, MaxLimit: 5, Decrease: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	var ps []retry.AIMDPermit
	for range 4 {
		p, err := l.Acquire()
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	if _, err := l.Acquire(); !errors.Is(err, retry.ErrLimited) {
		t.Fatalf("fifth call at limit 4: %v, want ErrLimited", err)
	}
	// Of the four successes, the three admitted with at least half the limit in use each add
	// 1/limit: 1/4 + 1/4.25 + 1/4.49, about 0.71.
	for _, p := range ps {
		p.Done(nil)
	}
	if got := l.Limit(); got != 4 {
		t.Fatalf("limit %d after four successes, want 4 (increase below one)", got)
	}
	// Two more rounds of four pass 5, capped at MaxLimit.
	for range 2 {
		ps = ps[:0]
		for range 4 {
			p, _ := l.Acquire()
			ps = append(ps, p)
		}
		for _, p := range ps {
			p.Done(nil)
		}
	}
	if got := l.Limit(); got != 5 {
		t.Fatalf("limit %d after three rounds, want 5 (the cap)", got)
	}
	// Overload halves the limit, down to MinLimit.
	_ = l.Do(context.Background(), func(context.Context) error { return errBoom })
	if got := l.Limit(); got != 2 {
		t.Fatalf("limit %d after an overload, want 2", got)
	}
	_ = l.Do(context.Background(), func(context.Context) error { return errBoom })
	if got := l.Limit(); got != 2 {
		t.Fatalf("limit %d, want the floor 2", got)
	}
	// The caller's cancellation is not an overload signal.
	_ = l.Do(context.Background(), func(context.Context) error { return context.Canceled })
	if got := l.Limit(); got != 2 {
		t.Fatalf("limit %d after a cancellation, want 2", got)
	}
}

// Successes while the limiter is mostly idle say nothing about its capacity.
func TestAIMDNoIncreaseWhenIdle(t *testing.T) {
	l, _ := retry.NewAIMD(retry.AIMDConfig{InitialLimit: 10})
	for range 100 {
		if err := l.Do(context.Background(), func(context.Context) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if got := l.Limit(); got != 10 {
		t.Fatalf("limit %d after idle successes, want 10", got)
	}
}

func TestAIMDPanicReleasesSlot(t *testing.T) {
	l, _ := retry.NewAIMD(retry.AIMDConfig{InitialLimit: 1})
	func() {
		defer func() { _ = recover() }()
		_ = l.Do(context.Background(), func(context.Context) error { panic("kaboom") })
	}()
	if err := l.Do(context.Background(), func(context.Context) error { return nil }); err != nil {
		t.Fatalf("slot not released after a panic: %v", err)
	}
}

func TestNewAIMDValidates(t *testing.T) {
	for _, cfg := range []retry.AIMDConfig{{Decrease: 1}, {MinLimit: -1}, {MinLimit: 10, MaxLimit: 5}} {
		if _, err := retry.NewAIMD(cfg); !errors.Is(err, retry.ErrInvalidConfig) {
			t.Errorf("NewAIMD(%+v): %v", cfg, err)
		}
	}
}
