package loadgen

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Sentinel errors.
var (
	// ErrInvalidConfig reports a Config (or chaos schedule) that cannot run.
	ErrInvalidConfig = errors.New("loadgen: invalid config")
	// ErrChaos reports a chaos action that failed.
	ErrChaos = errors.New("loadgen: chaos action failed")
)

// Limits on a Config: they keep memory and goroutines bounded whatever the flags say.
const (
	MaxKeys        = 10_000_000 // 80 MB of cumulative weights for the Zipf table
	MaxConcurrency = 10_000     // workers (closed loop) or requests in flight (open loop)
	MaxRate        = 1_000_000  // requests per second in open loop
	MaxDocSize     = 1 << 20    // bytes of a written document
	minDocSize     = len(`{"n":"00000000000000000000","pad":""}`)
	maxLatency     = time.Hour // latencies above are recorded as an hour
	defaultKeys    = 10_000    //
	defaultConc    = 16        //
	defaultDocSize = 256       //
	defaultTimeout = 5 * time.Second
)

// Config describes a run. The zero value of each field (except URL) is a sensible default.
type Config struct {
	// URL is the base URL of a Strata app server or load balancer, such as
	// "http://127.0.0.1:8080". Required. Documents live at {URL}/v1/{Collection}/{id}.
	URL string
	// Collection is the collection written and read. "" means "bench".
	Collection string
	// APIKey is presented on every request. "" sends none.
	APIKey string
	// KeyHeader is the header carrying APIKey. "" or "Authorization" sends
	// "Authorization: Bearer KEY"; any other name (such as "X-API-Key") carries the key as is.
	KeyHeader string

	// Keys is the number of documents K; ids are "k0" (the most popular) to "k{K-1}".
	// 0 means 10,000; at most MaxKeys.
	Keys int
	// ZipfS is the skew of key popularity: rank r (from 1) is drawn with probability
	// proportional to 1/r^ZipfS. 0 means 1.0; Uniform overrides it.
	ZipfS float64
	// Uniform draws keys uniformly (ZipfS = 0).
	Uniform bool
	// Writes is the fraction of requests that are writes (PUT of a whole document), in
	// [0, 1]; the rest are GETs. 0 means reads only.
	Writes float64
	// DocSize is the size in bytes of each written JSON document. 0 means 256; values below
	// 38 give 38-byte documents; at most MaxDocSize.
	DocSize int

	// Concurrency is the number of workers in a closed loop, and the bound on requests in
	// flight in an open loop. 0 means 16; at most MaxConcurrency.
	Concurrency int
	// Rate, when > 0, runs an open loop: requests are scheduled at Rate per second whatever
	// the server does, and latency is measured from each request's scheduled start, so a
	// stalled server shows up as latency instead of as fewer requests (no coordinated
	// omission). 0 means a closed loop: each worker sends its next request when the last
	// one returned. At most MaxRate.
	Rate float64
	// Duration is how long requests are started, after prepopulation. 0 means 10 s.
	Duration time.Duration
	// Timeout bounds each request. 0 means 5 s.
	Timeout time.Duration
	// Prepopulate writes every key once, Concurrency at a time, before the measured run.
	Prepopulate bool

	// Chaos is the fault schedule (see ParseChaos); each event starts a new phase of the
	// report. Events must lie within Duration.
	Chaos []ChaosEvent
	// ChaosRunner carries out the events. Required when Chaos is not empty.
	ChaosRunner ChaosRunner
	// ChaosTimeout bounds each chaos action. 0 means 30 s.
	ChaosTimeout time.Duration

	// Client sends the requests. nil means a client of its own whose transport keeps up to
	// Concurrency connections to the target, closed when the run ends.
	Client *http.Client
	// Progress, when not nil, is called every ProgressInterval with the figures of the
	// interval just ended. It is called from one goroutine and must return quickly.
	Progress func(Progress)
	// ProgressInterval is the period of Progress. 0 means 1 s.
	ProgressInterval time.Duration
	// Seed seeds the key and mix choices, so that two runs with one seed send the same
	// sequence from each worker. 0 means 1.
	Seed uint64
}

// withDefaults returns c with zero fields filled in and checks it.
func (c Config) withDefaults() (Config, error) {
	bad := func(format string, a ...any) (Config, error) {
		return c, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, a...)...)
	}
	if c.URL == "" {
		return bad("a target URL is required")
	}
	u, err := url.Parse(c.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return bad("target URL %q: want http://host:port or https://host:port", c.URL)
	}
	if c.Collection == "" {
		c.Collection = "bench"
	}
	if strings.ContainsAny(c.Collection, "/?#% ") {
		return bad("collection %q: no '/', '?', '#', '%%' or spaces", c.Collection)
	}
	if c.KeyHeader == "" {
		c.KeyHeader = "Authorization"
	}
	if c.Keys == 0 {
		c.Keys = defaultKeys
	}
	if c.Keys < 1 || c.Keys > MaxKeys {
		return bad("keys must be in [1, %d] (got %d)", MaxKeys, c.Keys)
	}
	if c.Uniform {
		c.ZipfS = 0
	} else if c.ZipfS == 0 {
		c.ZipfS = 1
	}
	if !(c.ZipfS >= 0) || math.IsInf(c.ZipfS, 0) || c.ZipfS > 100 {
		return bad("zipf exponent must be in [0, 100] (got %v)", c.ZipfS)
	}
	if !(c.Writes >= 0 && c.Writes <= 1) {
		return bad("writes must be a fraction in [0, 1] (got %v)", c.Writes)
	}
	if c.DocSize == 0 {
		c.DocSize = defaultDocSize
	}
	if c.DocSize < 0 || c.DocSize > MaxDocSize {
		return bad("document size must be in [1, %d] bytes (got %d)", MaxDocSize, c.DocSize)
	}
	c.DocSize = max(c.DocSize, minDocSize)
	if c.Concurrency == 0 {
		c.Concurrency = defaultConc
	}
	if c.Concurrency < 1 || c.Concurrency > MaxConcurrency {
		return bad("concurrency must be in [1, %d] (got %d)", MaxConcurrency, c.Concurrency)
	}
	if !(c.Rate >= 0 && c.Rate <= MaxRate) {
		return bad("rate must be in [0, %d] requests per second (got %v)", MaxRate, c.Rate)
	}
	if c.Duration == 0 {
		c.Duration = 10 * time.Second
	}
	if c.Duration < 0 {
		return bad("duration must be positive (got %v)", c.Duration)
	}
	if c.Timeout == 0 {
		c.Timeout = defaultTimeout
	}
	if c.Timeout < 0 {
		return bad("timeout must be positive (got %v)", c.Timeout)
	}
	if c.ChaosTimeout == 0 {
		c.ChaosTimeout = 30 * time.Second
	}
	if c.ChaosTimeout < 0 {
		return bad("chaos timeout must be positive (got %v)", c.ChaosTimeout)
	}
	if len(c.Chaos) > MaxChaosEvents {
		return bad("at most %d chaos events (got %d)", MaxChaosEvents, len(c.Chaos))
	}
	for i, e := range c.Chaos {
		if err := e.validate(); err != nil {
			return bad("chaos event %s: %v", e, err)
		}
		if e.At >= c.Duration {
			return bad("chaos event %s is not within the run's duration %v", e, c.Duration)
		}
		if i > 0 && e.At < c.Chaos[i-1].At {
			return bad("chaos events must be in time order (%s after %s)", e, c.Chaos[i-1])
		}
	}
	if len(c.Chaos) > 0 && c.ChaosRunner == nil {
		return bad("a chaos schedule needs a ChaosRunner (the admin URL of strata up)")
	}
	if c.ProgressInterval == 0 {
		c.ProgressInterval = time.Second
	}
	if c.ProgressInterval < 0 {
		return bad("progress interval must be positive (got %v)", c.ProgressInterval)
	}
	if c.Seed == 0 {
		c.Seed = 1
	}
	return c, nil
}
