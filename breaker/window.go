package breaker

import "time"

// window is the rolling window of the ratio policies: count-based (the last n calls, exact) or
// time-based (buckets of equal width, sliding one bucket at a time). Not safe for concurrent
// use: Breaker.mu protects it.
type window struct {
	// count-based
	ring []uint8 // outcome of each call: bit 0 failure, bit 1 slow
	pos  int     // next slot to write
	full bool    // ring has wrapped

	// time-based
	buckets []bucket
	width   time.Duration
	base    time.Time // start of epoch 0; zero until the first call after a reset

	// count-based running totals
	calls, fails, slows int
}

type bucket struct {
	epoch               int64
	calls, fails, slows int
}

func newWindow(calls int, d time.Duration, nb int) *window {
	if d == 0 {
		return &window{ring: make([]uint8, calls)}
	}
	w := &window{buckets: make([]bucket, nb), width: max(d/time.Duration(nb), 1)}
	w.reset()
	return w
}

func (w *window) reset() {
	if w.ring != nil {
		clear(w.ring)
		w.pos, w.full, w.calls, w.fails, w.slows = 0, false, 0, 0, 0
		return
	}
	for i := range w.buckets {
		w.buckets[i] = bucket{epoch: -1}
	}
	w.base = time.Time{}
}

// epoch returns the bucket number of instant now; instants before the base count as epoch 0.
func (w *window) epoch(now time.Time) int64 {
	if w.base.IsZero() {
		w.base = now
	}
	d := now.Sub(w.base)
	if d < 0 {
		return 0
	}
	return int64(d / w.width)
}

func (w *window) add(now time.Time, failed, slow bool) {
	var o uint8
	if failed {
		o |= 1
	}
	if slow {
		o |= 2
	}
	if w.ring != nil {
		if w.full {
			old := w.ring[w.pos]
			w.calls--
			w.fails -= int(old & 1)
			w.slows -= int(old >> 1)
		}
		w.ring[w.pos] = o
		w.calls++
		w.fails += int(o & 1)
		w.slows += int(o >> 1)
		if w.pos++; w.pos == len(w.ring) {
			w.pos, w.full = 0, true
		}
		return
	}
	e := w.epoch(now)
	b := &w.buckets[e%int64(len(w.buckets))]
	if b.epoch != e {
		*b = bucket{epoch: e}
	}
	b.calls++
	b.fails += int(o & 1)
	b.slows += int(o >> 1)
}

func (w *window) totals(now time.Time) (calls, fails, slows int) {
	if w.ring != nil {
		return w.calls, w.fails, w.slows
	}
	e := w.epoch(now)
	for _, b := range w.buckets {
		if b.epoch <= e && b.epoch > e-int64(len(w.buckets)) {
			calls += b.calls
			fails += b.fails
			slows += b.slows
		}
	}
	return calls, fails, slows
}

// shouldTrip reports whether a ratio policy trips on the window's contents at instant now.
func (w *window) shouldTrip(now time.Time, minCalls int, failureRatio, slowRatio float64) bool {
	calls, fails, slows := w.totals(now)
	if calls < minCalls || calls == 0 {
		return false
	}
	return failureRatio > 0 && float64(fails) >= failureRatio*float64(calls) ||
		slowRatio > 0 && float64(slows) >= slowRatio*float64(calls)
}
