package loadgen

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

// chiSquare returns Pearson's statistic of counts against the probabilities p.
func chiSquare(counts []int, n int, p func(i int) float64) float64 {
	x := 0.0
	for i, c := range counts {
		e := float64(n) * p(i)
		x += (float64(c) - e) * (float64(c) - e) / e
	}
	return x
}

// zipfP is the textbook Zipf probability of rank i (from 0) over k ranks, computed
// independently of the table the generator uses.
func zipfP(k int, s float64) func(int) float64 {
	h := 0.0
	for r := 1; r <= k; r++ {
		h += 1 / math.Pow(float64(r), s)
	}
	return func(i int) float64 { return 1 / math.Pow(float64(i+1), s) / h }
}

func TestZipfChiSquare(t *testing.T) {
	const k, n = 50, 200_000
	// The 99.9th percentile of chi-square with 49 degrees of freedom.
	const critical = 85.35
	for _, s := range []float64{0, 0.5, 0.99, 1, 1.2, 2} {
		z, err := NewZipf(k, s)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewPCG(7, uint64(s*100)))
		counts := make([]int, k)
		for range n {
			counts[z.Rank(rng)]++
		}
		if x := chiSquare(counts, n, zipfP(k, s)); x > critical {
			t.Errorf("s=%v: chi-square %.1f > %.1f: draws do not follow Zipf", s, x, critical)
		}
		// The same draws against a slightly different exponent must be rejected: the
		// check has the power to see a wrong skew.
		if x := chiSquare(counts, n, zipfP(k, s+0.1)); x < critical {
			t.Errorf("s=%v: chi-square against s+0.1 is only %.1f: the check cannot tell them apart", s, x)
		}
		for i := range k {
			if got, want := z.Prob(i), zipfP(k, s)(i); math.Abs(got-want) > 1e-12 {
				t.Errorf("s=%v: Prob(%d) = %v, want %v", s, i, got, want)
			}
		}
	}
}

// TestZipfRankFrequency checks the defining property on a large key space: at s = 1 the
// frequency of rank r is proportional to 1/r, so rank 1 is drawn 10 times as often as rank
// 10 and 100 times as often as rank 100.
func TestZipfRankFrequency(t *testing.T) {
	const k, n = 100_000, 2_000_000
	z, err := NewZipf(k, 1)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	counts := make([]int, k)
	for range n {
		counts[z.Rank(rng)]++
	}
	h := 0.0
	for r := 1; r <= k; r++ {
		h += 1 / float64(r)
	}
	if got, want := float64(counts[0])/n, 1/h; math.Abs(got-want) > 0.02*want {
		t.Errorf("frequency of rank 1 = %.4f, want %.4f (1/H_k)", got, want)
	}
	for _, r := range []int{10, 100} {
		ratio := float64(counts[0]) / float64(counts[r-1])
		if math.Abs(ratio-float64(r)) > 0.1*float64(r) {
			t.Errorf("count(rank 1)/count(rank %d) = %.1f, want about %d", r, ratio, r)
		}
	}
	// The tail is reached: ranks in the last tenth are drawn with total probability
	// ln(10/9)/H_k, about 0.87%.
	tail := 0
	for _, c := range counts[k*9/10:] {
		tail += c
	}
	if got, want := float64(tail)/n, math.Log(10.0/9)/h; math.Abs(got-want) > 0.05*want {
		t.Errorf("tail frequency %.5f, want %.5f", got, want)
	}
}

func TestNewZipfErrors(t *testing.T) {
	for _, tc := range []struct {
		n int
		s float64
	}{{0, 1}, {-1, 1}, {10, -0.5}, {10, math.NaN()}, {10, math.Inf(1)}} {
		if _, err := NewZipf(tc.n, tc.s); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("NewZipf(%d, %v) = %v, want ErrInvalidConfig", tc.n, tc.s, err)
		}
	}
	z, err := NewZipf(1, 1)
	if err != nil {
		t.Fatal(err)
	}
	if r := z.Rank(rand.New(rand.NewPCG(1, 1))); r != 0 {
		t.Errorf("one key: rank %d", r)
	}
}
