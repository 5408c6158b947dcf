package loadgen

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sort"
)

// Zipf draws ranks in [0, n) with probability proportional to 1/(rank+1)^s. Unlike
// math/rand/v2's Zipf, which needs s > 1, any s >= 0 works: s = 0 is uniform, s = 1 is
// the classic web-cache skew. Sampling is an inverse-CDF lookup (binary search) over the
// cumulative weights, computed once: 8 bytes per rank and O(log n) per draw.
//
// A Zipf is immutable after NewZipf and safe for concurrent use; the *rand.Rand passed to
// Rank is not, so give each goroutine its own.
type Zipf struct {
	cum []float64 // cum[i] = sum of weights of ranks 0..i
	s   float64
}

// NewZipf returns the distribution over n ranks with exponent s. It fails with
// ErrInvalidConfig when n < 1 or s is negative, infinite or NaN.
func NewZipf(n int, s float64) (*Zipf, error) {
	if n < 1 {
		return nil, fmt.Errorf("%w: zipf needs at least one key (got %d)", ErrInvalidConfig, n)
	}
	if !(s >= 0) || math.IsInf(s, 0) {
		return nil, fmt.Errorf("%w: zipf exponent must be a finite number >= 0 (got %v)", ErrInvalidConfig, s)
	}
	cum := make([]float64, n)
	total := 0.0
	for i := range cum {
		total += math.Pow(float64(i+1), -s)
		cum[i] = total
	}
	return &Zipf{cum: cum, s: s}, nil
}

// N returns the number of ranks.
func (z *Zipf) N() int { return len(z.cum) }

// S returns the exponent.
func (z *Zipf) S() float64 { return z.s }

// Prob returns the probability of rank i (0 is the most frequent).
func (z *Zipf) Prob(i int) float64 {
	if i < 0 || i >= len(z.cum) {
		return 0
	}
	prev := 0.0
	if i > 0 {
		prev = z.cum[i-1]
	}
	return (z.cum[i] - prev) / z.cum[len(z.cum)-1]
}

// Rank draws one rank using r.
func (z *Zipf) Rank(r *rand.Rand) int {
	u := r.Float64() * z.cum[len(z.cum)-1]
	// The first rank whose cumulative weight exceeds u.
	i := sort.Search(len(z.cum), func(i int) bool { return z.cum[i] > u })
	if i == len(z.cum) { // u rounding up to the total
		i--
	}
	return i
}
