package lb

import (
	"time"
)

// CheckResult is the outcome of one active health check.
type CheckResult uint8

// The outcomes of an active health check.
const (
	CheckPass     CheckResult = iota // 2xx: healthy and ready
	CheckFail                        // connection error, timeout or unexpected status
	CheckNotReady                    // 503: alive but draining; take no new requests
)

// Health is the active health state machine of one backend: it turns check
// results into healthy/unhealthy transitions with rise and fall thresholds,
// and tracks readiness. It is a synchronous core with no I/O; it is not safe
// for concurrent use. The zero Health is healthy and ready with thresholds
// of 1; set Rise and Fall first.
type Health struct {
	// Rise is how many passing checks in a row make an unhealthy backend
	// healthy. Values below 1 count as 1.
	Rise int
	// Fall is how many failing checks in a row make a healthy backend
	// unhealthy. Values below 1 count as 1.
	Fall int

	unhealthy bool
	notReady  bool
	passes    int
	fails     int
}

// Healthy reports whether the backend passes its health checks.
func (h *Health) Healthy() bool { return !h.unhealthy }

// Ready reports whether the backend's last check said it takes new requests.
func (h *Health) Ready() bool { return !h.notReady }

// Observe feeds one check result and reports whether Healthy or Ready
// changed.
func (h *Health) Observe(r CheckResult) (changed bool) {
	wasU, wasN := h.unhealthy, h.notReady
	switch r {
	case CheckPass, CheckNotReady:
		h.fails = 0
		h.passes++
		if h.unhealthy && h.passes >= max(h.Rise, 1) {
			h.unhealthy = false
		}
		// Readiness follows the last answer at once: a 503 drains now, and a
		// 200 after a drain resumes traffic (the process is plainly alive).
		h.notReady = r == CheckNotReady
	default:
		h.passes = 0
		h.fails++
		if !h.unhealthy && h.fails >= max(h.Fall, 1) {
			h.unhealthy = true
		}
	}
	return wasU != h.unhealthy || wasN != h.notReady
}

// Ejector is the passive outlier detector of one backend: consecutive
// failures (5xx answers, connection errors, timeouts) eject it for a time
// that doubles with each ejection, from BaseEjection up to MaxEjection. The
// multiplier resets once the backend has gone MaxEjection since its last
// ejection ended without being ejected again. It is a synchronous core with
// no I/O and it is not safe for concurrent use. Whether the ejection may
// happen (the share of backends already ejected) is the caller's decision.
type Ejector struct {
	// ConsecutiveFailures ejects after this many failures in a row.
	// Values below 1 count as 1.
	ConsecutiveFailures int
	// BaseEjection is the first ejection's length. Zero means no ejection.
	BaseEjection time.Duration
	// MaxEjection caps the ejection length. Zero means BaseEjection*64.
	MaxEjection time.Duration

	streak    int
	ejections int
	until     time.Time
	prevUntil time.Time
}

// Success records a successful response: the failure streak ends.
func (e *Ejector) Success() { e.streak = 0 }

// Streak returns the current run of consecutive failures.
func (e *Ejector) Streak() int { return e.streak }

// Ejections returns the number of ejections since the multiplier last reset.
func (e *Ejector) Ejections() int { return e.ejections }

// FailureAt records a failure at now. When the streak reaches the threshold
// it returns true and the instant the ejection ends; the caller either
// applies it or calls Cancel.
func (e *Ejector) FailureAt(now time.Time) (eject bool, until time.Time) {
	if now.Before(e.until) {
		return false, time.Time{} // a late answer from before the ejection
	}
	e.streak++
	if e.BaseEjection <= 0 || e.streak < max(e.ConsecutiveFailures, 1) {
		return false, time.Time{}
	}
	maxEj := e.MaxEjection
	if maxEj <= 0 {
		maxEj = e.BaseEjection * 64
	}
	if !e.until.IsZero() && now.Sub(e.until) >= maxEj {
		e.ejections = 0 // long since the last ejection: start over
	}
	d := e.BaseEjection
	for i := 0; i < e.ejections && d < maxEj; i++ {
		d *= 2
	}
	d = min(d, maxEj)
	e.ejections++
	e.streak = 0
	e.prevUntil = e.until
	e.until = now.Add(d)
	return true, e.until
}

// Cancel undoes the ejection FailureAt just proposed (because too many
// backends are already ejected). The failure streak starts over.
func (e *Ejector) Cancel() {
	e.ejections--
	e.until = e.prevUntil
}
