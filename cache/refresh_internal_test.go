package cache

import (
	"math"
	"testing"
	"time"
)

// TestRefreshDue: the XFetch decision over named instants, and its probability over a grid
// of random draws.
func TestRefreshDue(t *testing.T) {
	const cost = 10 * time.Millisecond
	for _, tc := range []struct {
		name      string
		remaining time.Duration
		beta, r   float64
		want      bool
	}{
		{"expired, lowest draw", 0, 1, 0, true},
		{"past expiry", -time.Second, 1, 0.5, true},
		{"lowest draw never refreshes a live entry", time.Nanosecond, 1, 0, false},
		{"one cost left, draw above 1-1/e", cost, 1, 0.64, true},
		{"one cost left, draw below 1-1/e", cost, 1, 0.62, false},
		{"one cost left, beta 2 halves the threshold", cost, 2, 0.4, true},
		{"one cost left, beta 0.5", cost, 0.5, 0.8, false},
		{"far from expiry, highest draw", 100 * cost, 1, math.Nextafter(1, 0), false},
		{"an hour left", time.Hour, 1, 0.999, false},
		{"beta 0 never refreshes a live entry", time.Nanosecond, 0, 0.999, false},
	} {
		if got := refreshDue(tc.remaining, cost, tc.beta, tc.r); got != tc.want {
			t.Errorf("%s: refreshDue(%v, %v, %v, %v) = %v, want %v", tc.name, tc.remaining, cost, tc.beta, tc.r, got, tc.want)
		}
	}
	// With remaining = k*cost*beta, a hit refreshes with probability e^-k.
	for _, k := range []float64{0.5, 1, 2, 4} {
		const n = 100000
		due := 0
		for i := range n {
			r := (float64(i) + 0.5) / n
			if refreshDue(time.Duration(k*float64(cost)*1.5), cost, 1.5, r) {
				due++
			}
		}
		got, want := float64(due)/n, math.Exp(-k)
		if math.Abs(got-want) > 0.001 {
			t.Errorf("remaining %v cost*beta: refresh probability %.4f, want e^-%v = %.4f", k, got, k, want)
		}
	}
}
