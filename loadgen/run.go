package loadgen

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Run drives the load described by cfg and returns its report. It returns an error only
// for an invalid cfg (ErrInvalidConfig). Cancelling ctx stops the run early: requests in
// flight are cancelled (counted as Canceled) and the report so far is returned with
// Interrupted set. Run blocks until every goroutine it started has ended.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	z, err := NewZipf(cfg.Keys, cfg.ZipfS)
	if err != nil {
		return nil, err
	}
	r := &runner{
		cfg:  cfg,
		zipf: z,
		base: strings.TrimSuffix(cfg.URL, "/") + "/v1/" + cfg.Collection + "/k",
		rec:  newRecorder(len(cfg.Chaos) + 1),
		pad:  strings.Repeat("x", cfg.DocSize-minDocSize),
	}
	r.client = cfg.Client
	if r.client == nil {
		tr := &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			DialContext:         (&net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        cfg.Concurrency,
			MaxIdleConnsPerHost: cfg.Concurrency,
			MaxConnsPerHost:     cfg.Concurrency,
			IdleConnTimeout:     90 * time.Second,
		}
		defer tr.CloseIdleConnections()
		r.client = &http.Client{Transport: tr}
	}
	return r.run(ctx), nil
}

type runner struct {
	cfg    Config
	zipf   *Zipf
	client *http.Client
	base   string // URL of key 0 without the "0"
	pad    string
	rec    *recorder
	seq    atomic.Uint64 // written document counter

	mu        sync.Mutex // protects the fields below
	started   bool       // the measured run has begun
	start     time.Time
	chaosErr  []string // per event
	chaosTook []time.Duration
}

func (r *runner) run(ctx context.Context) *Report {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.chaosErr = make([]string, len(r.cfg.Chaos))
	r.chaosTook = make([]time.Duration, len(r.cfg.Chaos))

	var wg sync.WaitGroup
	progressDone := make(chan struct{})
	if r.cfg.Progress != nil {
		wg.Go(func() { r.progress(progressDone) })
	}
	defer wg.Wait()
	defer close(progressDone)

	rep := &Report{
		Schema: ReportSchema, URL: r.cfg.URL, Collection: r.cfg.Collection, Mode: "closed",
		Concurrency: r.cfg.Concurrency, Keys: r.cfg.Keys, ZipfS: r.cfg.ZipfS,
		Writes: r.cfg.Writes, DocSize: r.cfg.DocSize, Duration: r.cfg.Duration.Seconds(),
	}
	if r.cfg.Rate > 0 {
		rep.Mode, rep.Rate = "open", r.cfg.Rate
	}
	if r.cfg.Prepopulate {
		r.prepopulate(ctx)
		s := r.rec.prepop.finish(0)
		rep.Prepopulate = &s
	}
	if ctx.Err() != nil {
		rep.Interrupted = true
		return rep
	}

	start := time.Now()
	r.mu.Lock()
	r.started, r.start = true, start
	r.mu.Unlock()

	var chaos sync.WaitGroup
	chaosCtx, stopChaos := context.WithCancel(ctx)
	defer stopChaos()
	if len(r.cfg.Chaos) > 0 {
		chaos.Go(func() { r.chaos(chaosCtx, start) })
	}
	var sent []atomic.Int64 // open loop: requests sent per phase
	var workers sync.WaitGroup
	if r.cfg.Rate > 0 {
		sent = make([]atomic.Int64, len(r.cfg.Chaos)+1)
		var next atomic.Int64
		for w := range r.cfg.Concurrency {
			workers.Go(func() { r.openWorker(ctx, w, start, &next, sent) })
		}
	} else {
		for w := range r.cfg.Concurrency {
			workers.Go(func() { r.closedWorker(ctx, w, start) })
		}
	}
	workers.Wait()
	end := time.Since(start)
	stopChaos()
	chaos.Wait()
	rep.Interrupted = ctx.Err() != nil
	rep.Elapsed = end.Seconds()

	stop := r.cfg.Duration
	if rep.Interrupted {
		stop = min(end, stop)
	}
	total := newBucket()
	for i := range r.rec.phases {
		from, to := r.phaseBounds(i)
		if from > stop || (from == stop && i > 0) {
			break
		}
		to = min(to, stop)
		b := r.rec.phases[i]
		if sent != nil {
			b.s.Dropped = max(r.scheduled(from, to)-sent[i].Load(), 0)
		}
		p := Phase{Name: phaseName(r.cfg.Chaos, i), Start: from.Seconds(), End: to.Seconds(),
			Stats: b.finish(to.Seconds() - from.Seconds())}
		if i > 0 {
			ev := r.cfg.Chaos[i-1]
			p.Event = &ev
			r.mu.Lock()
			p.ChaosError, p.ChaosSeconds = r.chaosErr[i-1], r.chaosTook[i-1].Seconds()
			r.mu.Unlock()
		}
		rep.Phases = append(rep.Phases, p)
		b.s.Seconds = p.Seconds
		total.merge(b)
	}
	rep.Total = total.finish(total.s.Seconds)
	return rep
}

// phaseBounds returns the bounds of phase i as offsets from the start.
func (r *runner) phaseBounds(i int) (from, to time.Duration) {
	to = r.cfg.Duration
	if i > 0 {
		from = r.cfg.Chaos[i-1].At
	}
	if i < len(r.cfg.Chaos) {
		to = r.cfg.Chaos[i].At
	}
	return from, to
}

// phaseAt returns the phase of a request starting at offset d.
func (r *runner) phaseAt(d time.Duration) int {
	i := 0
	for i < len(r.cfg.Chaos) && r.cfg.Chaos[i].At <= d {
		i++
	}
	return i
}

// slot returns the scheduled start of the open loop's request i.
func (r *runner) slot(i int64) time.Duration {
	return time.Duration(float64(i) * float64(time.Second) / r.cfg.Rate)
}

// scheduled returns how many open-loop slots fall in [from, to).
func (r *runner) scheduled(from, to time.Duration) int64 {
	return r.firstSlot(to) - r.firstSlot(from)
}

// firstSlot returns the first open-loop slot scheduled at or after d.
func (r *runner) firstSlot(d time.Duration) int64 {
	i := int64(math.Ceil(d.Seconds() * r.cfg.Rate))
	for i > 0 && r.slot(i-1) >= d {
		i--
	}
	for r.slot(i) < d {
		i++
	}
	return i
}

func (r *runner) rng(worker int) *rand.Rand {
	return rand.New(rand.NewPCG(r.cfg.Seed, uint64(worker)))
}

// next picks the next request: a write or a read, and the key.
func (r *runner) next(rng *rand.Rand) (write bool, key int) {
	write = r.cfg.Writes > 0 && rng.Float64() < r.cfg.Writes
	return write, r.zipf.Rank(rng)
}

func (r *runner) closedWorker(ctx context.Context, w int, start time.Time) {
	rng := r.rng(w)
	for ctx.Err() == nil {
		t0 := time.Now()
		d := t0.Sub(start)
		if d >= r.cfg.Duration {
			return
		}
		write, key := r.next(rng)
		o := r.do(ctx, write, key)
		o.latency = time.Since(t0)
		r.rec.add(r.phaseAt(d), o)
	}
}

// openWorker sends the requests of the slots it claims, each at its scheduled time, and
// measures latency from that time: when the server stalls, the slots scheduled meanwhile
// wait for a free worker, and their wait counts as latency.
func (r *runner) openWorker(ctx context.Context, w int, start time.Time, next *atomic.Int64, sent []atomic.Int64) {
	rng := r.rng(w)
	timer := time.NewTimer(0)
	<-timer.C
	defer timer.Stop()
	for {
		d := r.slot(next.Add(1) - 1)
		if d >= r.cfg.Duration {
			return
		}
		at := start.Add(d)
		if wait := time.Until(at); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
		} else if ctx.Err() != nil || time.Since(start) >= r.cfg.Duration {
			return // a backlog left at the end is dropped, so a run lasts at most Duration+Timeout
		}
		write, key := r.next(rng)
		i := r.phaseAt(d)
		sent[i].Add(1)
		o := r.do(ctx, write, key)
		o.latency = time.Since(at)
		r.rec.add(i, o)
	}
}

func (r *runner) prepopulate(ctx context.Context) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(r.cfg.Concurrency, r.cfg.Keys) {
		wg.Go(func() {
			for ctx.Err() == nil {
				k := next.Add(1) - 1
				if k >= int64(r.cfg.Keys) {
					return
				}
				t0 := time.Now()
				o := r.do(ctx, true, int(k))
				o.latency = time.Since(t0)
				r.rec.add(-1, o)
			}
		})
	}
	wg.Wait()
}

// body returns a JSON document of exactly DocSize bytes.
func (r *runner) body() []byte {
	b := make([]byte, 0, r.cfg.DocSize)
	b = append(b, `{"n":"`...)
	n := strconv.FormatUint(r.seq.Add(1), 10)
	b = append(b, strings.Repeat("0", 20-len(n))...)
	b = append(b, n...)
	b = append(b, `","pad":"`...)
	b = append(b, r.pad...)
	b = append(b, `"}`...)
	return b
}

// do sends one request and classifies its outcome (without latency).
func (r *runner) do(ctx context.Context, write bool, key int) outcome {
	o := outcome{write: write}
	rctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	url := r.base + strconv.Itoa(key)
	var req *http.Request
	var err error
	if write {
		req, err = http.NewRequestWithContext(rctx, http.MethodPut, url, bytes.NewReader(r.body()))
		if err == nil {
			req.Header.Set("Content-Type", "application/json")
		}
	} else {
		req, err = http.NewRequestWithContext(rctx, http.MethodGet, url, nil)
	}
	if err != nil { // the URL was validated: cannot happen
		return o
	}
	if r.cfg.APIKey != "" {
		if strings.EqualFold(r.cfg.KeyHeader, "Authorization") {
			req.Header.Set("Authorization", "Bearer "+r.cfg.APIKey)
		} else {
			req.Header.Set(r.cfg.KeyHeader, r.cfg.APIKey)
		}
	}
	resp, err := r.client.Do(req)
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil {
			o.status = resp.StatusCode
			o.cache = strings.ToLower(strings.TrimSpace(resp.Header.Get("X-Cache")))
			return o
		}
	}
	switch {
	case ctx.Err() != nil:
		o.canceled = true
	case errors.Is(err, context.DeadlineExceeded) || rctx.Err() != nil:
		o.timeout = true
	}
	return o
}

// chaos carries out the schedule; each action's result is kept for its phase.
func (r *runner) chaos(ctx context.Context, start time.Time) {
	timer := time.NewTimer(0)
	<-timer.C
	defer timer.Stop()
	for i, e := range r.cfg.Chaos {
		if wait := time.Until(start.Add(e.At)); wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
		}
		t0 := time.Now()
		cctx, cancel := context.WithTimeout(ctx, r.cfg.ChaosTimeout)
		err := r.cfg.ChaosRunner.Run(cctx, e.Action, e.Target)
		cancel()
		r.mu.Lock()
		r.chaosTook[i] = time.Since(t0)
		if err != nil {
			r.chaosErr[i] = err.Error()
		}
		r.mu.Unlock()
	}
}

// progress reports each interval until done is closed.
func (r *runner) progress(done <-chan struct{}) {
	t := time.NewTicker(r.cfg.ProgressInterval)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-done:
			return
		case now := <-t.C:
			b, total := r.rec.takeInterval()
			p := Progress{Total: total, Stats: b.finish(now.Sub(last).Seconds()), Phase: "prepopulate"}
			last = now
			r.mu.Lock()
			if r.started {
				p.Elapsed = now.Sub(r.start)
				// The phase the interval ended in (a tick on an event belongs to the
				// phase before it).
				p.Phase = phaseName(r.cfg.Chaos, r.phaseAt(p.Elapsed-1))
			}
			r.mu.Unlock()
			r.cfg.Progress(p)
		}
	}
}
