package loadgen

import (
	"strconv"
	"strings"
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// outcome is what one request ended with.
type outcome struct {
	write    bool
	status   int    // 0 when there was no response
	cache    string // X-Cache, lower case
	timeout  bool   // no response within Config.Timeout
	canceled bool   // the run was interrupted while the request was in flight
	latency  time.Duration
}

// bucket accumulates the outcomes of one phase (or one progress interval).
type bucket struct {
	s    Stats
	hist *hdrhistogram.Histogram // microseconds
}

func newHist() *hdrhistogram.Histogram {
	return hdrhistogram.New(1, maxLatency.Microseconds(), 3)
}

func newBucket() *bucket {
	return &bucket{s: Stats{Status: map[string]int64{}}, hist: newHist()}
}

func (b *bucket) add(o outcome) {
	s := &b.s
	if o.canceled {
		s.Canceled++
		return
	}
	s.Requests++
	if o.write {
		s.Writes++
	} else {
		s.Reads++
	}
	switch {
	case o.status == 0:
		s.TransportErrors++
		if o.timeout {
			s.Timeouts++
		}
	case o.status == 429:
		s.RateLimited++
	case o.status == 404:
		s.NotFound++
	case o.status >= 500:
		s.ServerErrors++
	case o.status >= 400:
		s.ClientErrors++
	case o.status >= 200 && o.status < 400:
		s.OK++
	default:
		s.ClientErrors++ // 1xx as a final status: the server misbehaves
	}
	if o.status != 0 {
		s.Status[strconv.Itoa(o.status)]++
	}
	switch o.cache {
	case "":
	case "hit":
		s.Cache.Hit++
	case "miss":
		s.Cache.Miss++
	case "bypass":
		s.Cache.Bypass++
	case "stale":
		s.Cache.Stale++
	default:
		s.Cache.Other++
	}
	us := max(o.latency.Microseconds(), 0)
	_ = b.hist.RecordValue(min(us, maxLatency.Microseconds()))
}

// merge adds o's counts and latencies to b.
func (b *bucket) merge(o *bucket) {
	s, t := &b.s, &o.s
	s.Requests += t.Requests
	s.Reads += t.Reads
	s.Writes += t.Writes
	s.OK += t.OK
	s.NotFound += t.NotFound
	s.RateLimited += t.RateLimited
	s.ClientErrors += t.ClientErrors
	s.ServerErrors += t.ServerErrors
	s.TransportErrors += t.TransportErrors
	s.Timeouts += t.Timeouts
	s.Canceled += t.Canceled
	s.Dropped += t.Dropped
	for k, v := range t.Status {
		s.Status[k] += v
	}
	s.Cache.Hit += t.Cache.Hit
	s.Cache.Miss += t.Cache.Miss
	s.Cache.Bypass += t.Cache.Bypass
	s.Cache.Stale += t.Cache.Stale
	s.Cache.Other += t.Cache.Other
	s.Seconds += t.Seconds
	b.hist.Merge(o.hist)
}

// finish fills in the derived figures of b's Stats for seconds of run and returns them.
func (b *bucket) finish(seconds float64) Stats {
	s := b.s
	s.Seconds = seconds
	s.Errors = s.TransportErrors + s.ServerErrors + s.ClientErrors
	if seconds > 0 {
		s.RPS = float64(s.Requests) / seconds
	}
	if n := s.Cache.Hit + s.Cache.Miss + s.Cache.Bypass + s.Cache.Stale; n > 0 {
		s.HitRatio = float64(s.Cache.Hit) / float64(n)
	}
	s.Latency = latencyOf(b.hist)
	return s
}

func latencyOf(h *hdrhistogram.Histogram) Latency {
	if h.TotalCount() == 0 {
		return Latency{}
	}
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return Latency{
		Count: h.TotalCount(),
		Min:   ms(h.Min()),
		Mean:  h.Mean() / 1000,
		P50:   ms(h.ValueAtQuantile(50)),
		P90:   ms(h.ValueAtQuantile(90)),
		P99:   ms(h.ValueAtQuantile(99)),
		P999:  ms(h.ValueAtQuantile(99.9)),
		Max:   ms(h.Max()),
	}
}

// Stats are the figures of a phase, of a whole run, or of prepopulation.
//
// Requests counts every request that was sent and completed, with a response or with a
// transport error; the classes OK (2xx and 3xx), NotFound, RateLimited (429),
// ClientErrors (other 4xx), ServerErrors (5xx) and TransportErrors (no response,
// including Timeouts) add up to it. Errors is ClientErrors + ServerErrors +
// TransportErrors: 404 and 429 are counted apart, since reads of keys not yet written and
// rate limiting are expected outcomes of a benchmark. Canceled requests (in flight when the
// run was interrupted) are not in Requests nor in the latencies. Latency covers every
// request in Requests, errors included, a transport error measured until it was seen.
// Dropped counts, in an open loop, the requests scheduled within the phase that were never
// sent, because Concurrency requests were in flight until the run ended.
type Stats struct {
	Seconds         float64          `json:"seconds"`
	Requests        int64            `json:"requests"`
	Reads           int64            `json:"reads"`
	Writes          int64            `json:"writes"`
	RPS             float64          `json:"rps"`
	OK              int64            `json:"ok"`
	NotFound        int64            `json:"not_found"`
	RateLimited     int64            `json:"rate_limited"`
	ClientErrors    int64            `json:"client_errors"`
	ServerErrors    int64            `json:"server_errors"`
	TransportErrors int64            `json:"transport_errors"`
	Timeouts        int64            `json:"timeouts"`
	Errors          int64            `json:"errors"`
	Canceled        int64            `json:"canceled"`
	Dropped         int64            `json:"dropped"`
	Status          map[string]int64 `json:"status"`
	Cache           CacheCounts      `json:"cache"`
	HitRatio        float64          `json:"hit_ratio"`
	Latency         Latency          `json:"latency_ms"`
}

// CacheCounts counts responses by their X-Cache header. Responses without it (writes,
// errors) are not counted. HitRatio in Stats is Hit / (Hit + Miss + Bypass + Stale).
type CacheCounts struct {
	Hit    int64 `json:"hit"`
	Miss   int64 `json:"miss"`
	Bypass int64 `json:"bypass"`
	Stale  int64 `json:"stale"`
	Other  int64 `json:"other"`
}

// Latency summarises a latency histogram, in milliseconds (microsecond resolution, three
// significant digits: HdrHistogram's guarantee).
type Latency struct {
	Count int64   `json:"count"`
	Min   float64 `json:"min"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p999"`
	Max   float64 `json:"max"`
}

// Progress is what Config.Progress receives: the figures of the interval just ended.
type Progress struct {
	// Elapsed is the time since the start of the measured run (negative: still
	// prepopulating).
	Elapsed time.Duration
	// Phase names the phase the interval ended in ("prepopulate" while prepopulating).
	Phase string
	// Total is the number of requests completed so far in the measured run.
	Total int64
	// Stats are the interval's figures.
	Stats Stats
}

// recorder collects outcomes into the phases of a run and the current progress interval.
type recorder struct {
	mu       sync.Mutex // protects the fields below
	prepop   *bucket
	phases   []*bucket
	interval *bucket
	total    int64
}

func newRecorder(phases int) *recorder {
	r := &recorder{prepop: newBucket(), interval: newBucket()}
	for range phases {
		r.phases = append(r.phases, newBucket())
	}
	return r
}

// add records o in phase i (-1: prepopulation) and in the current interval.
func (r *recorder) add(i int, o outcome) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if i < 0 {
		r.prepop.add(o)
	} else {
		r.phases[i].add(o)
		if !o.canceled {
			r.total++
		}
	}
	r.interval.add(o)
}

// takeInterval returns the interval's bucket and starts a new one.
func (r *recorder) takeInterval() (*bucket, int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.interval
	r.interval = newBucket()
	return b, r.total
}

// Report is the result of a run. Its JSON form (Schema "strata.bench/v1") is what
// `strata bench --json` prints.
type Report struct {
	Schema      string  `json:"schema"`
	URL         string  `json:"url"`
	Collection  string  `json:"collection"`
	Mode        string  `json:"mode"` // "closed" or "open"
	Concurrency int     `json:"concurrency"`
	Rate        float64 `json:"rate,omitempty"`
	Keys        int     `json:"keys"`
	ZipfS       float64 `json:"zipf_s"`
	Writes      float64 `json:"writes"`
	DocSize     int     `json:"doc_size"`
	// Duration is the configured duration, Elapsed the measured run's wall time (the
	// duration plus the tail of requests in flight, or less when interrupted), in seconds.
	Duration    float64 `json:"duration_s"`
	Elapsed     float64 `json:"elapsed_s"`
	Interrupted bool    `json:"interrupted"`
	// Prepopulate are the figures of prepopulation; nil when it was not asked for.
	Prepopulate *Stats `json:"prepopulate,omitempty"`
	// Phases split the measured run at the chaos events: phase 0 runs from the start to
	// the first event (or the end), phase i from event i to the next. A request belongs to
	// the phase in which it started (in an open loop: was scheduled to start).
	Phases []Phase `json:"phases"`
	// Total covers the whole measured run (all phases, not prepopulation).
	Total Stats `json:"total"`
}

// ReportSchema is Report.Schema.
const ReportSchema = "strata.bench/v1"

// Phase is one part of the run, between two chaos events.
type Phase struct {
	// Name is "start" for phase 0 and the event ("10s:kill-app:2") for the others.
	Name string `json:"name"`
	// Start and End are the phase's bounds in seconds since the start of the run.
	Start float64 `json:"start_s"`
	End   float64 `json:"end_s"`
	// Event is the chaos event that began the phase; nil for phase 0.
	Event *ChaosEvent `json:"event,omitempty"`
	// ChaosError is the error of the chaos action, "" when it succeeded.
	ChaosError string `json:"chaos_error,omitempty"`
	// ChaosSeconds is how long the chaos action took.
	ChaosSeconds float64 `json:"chaos_s,omitempty"`
	Stats
}

func phaseName(events []ChaosEvent, i int) string {
	if i == 0 {
		return "start"
	}
	return strings.TrimSpace(events[i-1].String())
}
