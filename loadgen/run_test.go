package loadgen

import (
	"context"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// memConfig is a run against f through an in-memory transport (for synctest bubbles).
func memConfig(f *fake) Config {
	return Config{URL: "http://strata.test", Client: memClient(f), Keys: 20}
}

// near reports whether an HDR percentile (the highest value equivalent to the recorded
// one, three significant digits) stands for want milliseconds.
func near(got, want float64) bool { return got >= want && got <= want*1.001 }

func mustRun(t *testing.T, ctx context.Context, cfg Config) *Report {
	t.Helper()
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func TestMix(t *testing.T) {
	for _, w := range []float64{0, 0.05, 0.2, 0.5, 1} {
		synctest.Test(t, func(t *testing.T) {
			f := newFake()
			f.delay = time.Millisecond
			cfg := memConfig(f)
			cfg.Writes, cfg.Concurrency, cfg.Duration = w, 4, 2*time.Second
			rep := mustRun(t, t.Context(), cfg)
			n := rep.Total.Requests
			if n != 8000 { // 4 workers, 1 ms each, 2 s
				t.Fatalf("writes=%v: %d requests, want 8000", w, n)
			}
			if int64(f.puts) != rep.Total.Writes || int64(f.gets) != rep.Total.Reads {
				t.Fatalf("writes=%v: server saw %d PUT, %d GET; report %d, %d", w, f.puts, f.gets, rep.Total.Writes, rep.Total.Reads)
			}
			sigma := math.Sqrt(float64(n) * w * (1 - w))
			if got := float64(f.puts); math.Abs(got-w*float64(n)) > 4*sigma+0.5 {
				t.Errorf("writes=%v: %v PUTs of %d, want %v ± %.0f", w, got, n, w*float64(n), 4*sigma)
			}
		})
	}
}

func TestClosedLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		f.delay = 10 * time.Millisecond
		cfg := memConfig(f)
		cfg.Concurrency, cfg.Duration = 4, time.Second
		rep := mustRun(t, t.Context(), cfg)
		if rep.Mode != "closed" || rep.Total.Requests != 400 {
			t.Errorf("mode %s, %d requests; want closed, 400 (4 workers x 100 of 10 ms)", rep.Mode, rep.Total.Requests)
		}
		if f.maxInflight != 4 {
			t.Errorf("server saw up to %d requests at once, want 4", f.maxInflight)
		}
		if l := rep.Total.Latency; !near(l.P50, 10) || !near(l.Max, 10) {
			t.Errorf("latency p50 %v max %v, want 10 ms", l.P50, l.Max)
		}
		if rep.Total.RPS != 400 || rep.Elapsed != 1 {
			t.Errorf("rps %v elapsed %v, want 400 and 1 s", rep.Total.RPS, rep.Elapsed)
		}
	})
}

func TestOpenLoop(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		f.delay = 10 * time.Millisecond
		cfg := memConfig(f)
		cfg.Rate, cfg.Concurrency, cfg.Duration = 200, 50, 2*time.Second
		rep := mustRun(t, t.Context(), cfg)
		if rep.Mode != "open" || rep.Total.Requests != 400 || rep.Total.Dropped != 0 {
			t.Errorf("mode %s, %d requests, %d dropped; want open, 400, 0", rep.Mode, rep.Total.Requests, rep.Total.Dropped)
		}
		// At 200 req/s and 10 ms each, two requests are in flight at a time, not 50 (three
		// at the instant one ends and another starts).
		if f.maxInflight > 3 {
			t.Errorf("server saw up to %d requests at once, want 2 or 3", f.maxInflight)
		}
		if l := rep.Total.Latency; !near(l.P99, 10) {
			t.Errorf("p99 %v ms, want 10", l.P99)
		}
	})
}

// TestOpenLoopBound: a server slower than the rate sees at most Concurrency requests at
// once, and the requests that could not be sent are counted as dropped, so that sent plus
// dropped is the schedule.
func TestOpenLoopBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		f.delay = time.Second
		cfg := memConfig(f)
		cfg.Rate, cfg.Concurrency, cfg.Duration = 100, 10, 3*time.Second
		rep := mustRun(t, t.Context(), cfg)
		if f.maxInflight != 10 {
			t.Errorf("server saw up to %d requests at once, want 10", f.maxInflight)
		}
		if got := rep.Total.Requests + rep.Total.Dropped; got != 300 {
			t.Errorf("sent %d + dropped %d = %d, want the 300 scheduled", rep.Total.Requests, rep.Total.Dropped, got)
		}
		if rep.Total.Requests != 30 { // 10 workers, 1 s each, 3 s
			t.Errorf("%d requests, want 30", rep.Total.Requests)
		}
		// Requests wait for a free worker, and that wait is latency: the last ones were
		// scheduled at about 0.2 s and sent at 2 s.
		if rep.Total.Latency.Max < 2500 {
			t.Errorf("max latency %v ms, want the queueing (> 2.5 s) included", rep.Total.Latency.Max)
		}
	})
}

// TestCoordinatedOmission stalls the server for one second in a four-second run at
// 100 req/s. The open loop must report about a hundred slow requests (p90 far above the
// normal 1 ms); a closed loop with one worker sees the stall as one slow request.
func TestCoordinatedOmission(t *testing.T) {
	run := func(t *testing.T, rate float64, conc int) *Report {
		f := newFake()
		f.delay = time.Millisecond
		now := time.Now()
		f.stallFrom, f.stallUntil = now.Add(time.Second), now.Add(2*time.Second)
		cfg := memConfig(f)
		cfg.Rate, cfg.Concurrency, cfg.Duration = rate, conc, 4*time.Second
		return mustRun(t, t.Context(), cfg)
	}
	synctest.Test(t, func(t *testing.T) {
		open := run(t, 100, 20)
		if open.Total.Requests != 400 {
			t.Fatalf("open loop: %d requests, want the 400 scheduled", open.Total.Requests)
		}
		// A request scheduled at 1+x s completes at 2 s: latency 1-x. About 90 of the 400
		// exceed 100 ms; the 90th percentile lies near 600 ms.
		if l := open.Total.Latency; l.P90 < 400 || l.Max < 990 {
			t.Errorf("open loop hides the stall: p90 %v ms, max %v ms", l.P90, l.Max)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		closed := run(t, 0, 1)
		if l := closed.Total.Latency; l.P90 > 2 || l.Max < 990 {
			t.Errorf("closed loop: p90 %v ms, max %v ms; want 1 ms and one slow request", l.P90, l.Max)
		}
	})
}

func TestTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		f.delay = time.Hour
		cfg := memConfig(f)
		cfg.Concurrency, cfg.Duration, cfg.Timeout = 2, time.Second, 100*time.Millisecond
		rep := mustRun(t, t.Context(), cfg)
		s := rep.Total
		if s.Requests != 20 || s.Timeouts != 20 || s.TransportErrors != 20 || s.Errors != 20 {
			t.Errorf("requests %d, timeouts %d, transport errors %d, errors %d; want 20 each", s.Requests, s.Timeouts, s.TransportErrors, s.Errors)
		}
		if !near(s.Latency.P50, 100) {
			t.Errorf("p50 %v ms, want the 100 ms timeout", s.Latency.P50)
		}
	})
}

func TestPhases(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		f.delay = time.Millisecond
		start := time.Now()
		events, err := ParseChaos("1s:kill-app:2,2s:restart-app:2,3s:stop-cache")
		if err != nil {
			t.Fatal(err)
		}
		cfg := memConfig(f)
		cfg.Concurrency, cfg.Duration, cfg.Prepopulate = 2, 4*time.Second, true
		cfg.Chaos = events
		cfg.ChaosRunner = &HTTPChaos{URL: "http://admin.test/", AdminKey: "adm", Client: memClient(f)}
		rep := mustRun(t, t.Context(), cfg)
		// Prepopulation (20 keys, 2 at a time, 1 ms each) took 10 ms before the start.
		start = start.Add(10 * time.Millisecond)
		if len(f.chaos) != 3 {
			t.Fatalf("chaos calls %v, want 3", f.chaos)
		}
		for i, want := range []chaosCall{
			{start.Add(time.Second), "kill-app", "2", "Bearer adm"},
			{start.Add(2 * time.Second), "restart-app", "2", "Bearer adm"},
			{start.Add(3 * time.Second), "stop-cache", "", "Bearer adm"},
		} {
			if got := f.chaos[i]; !got.at.Equal(want.at) || got.action != want.action || got.target != want.target || got.auth != want.auth {
				t.Errorf("chaos call %d: %+v at +%v, want %+v at +%v", i, got, got.at.Sub(start), want, want.at.Sub(start))
			}
		}
		if len(rep.Phases) != 4 {
			t.Fatalf("%d phases, want 4", len(rep.Phases))
		}
		names := []string{"start", "1s:kill-app:2", "2s:restart-app:2", "3s:stop-cache"}
		sum := int64(0)
		for i, p := range rep.Phases {
			if p.Name != names[i] || p.Start != float64(i) || p.End != float64(i+1) || p.Seconds != 1 {
				t.Errorf("phase %d: %q [%v, %v] %vs; want %q [%d, %d]", i, p.Name, p.Start, p.End, p.Seconds, names[i], i, i+1)
			}
			if (i == 0) != (p.Event == nil) || p.ChaosError != "" {
				t.Errorf("phase %d: event %v, chaos error %q", i, p.Event, p.ChaosError)
			}
			sum += p.Requests
		}
		if sum != rep.Total.Requests || int64(f.gets+f.puts) != sum+rep.Prepopulate.Requests {
			t.Errorf("phases sum to %d, total %d, server saw %d", sum, rep.Total.Requests, f.gets+f.puts)
		}
		// The two workers straddle each event by at most one request each.
		p := rep.Phases
		if p[0].ServerErrors > 2 || p[1].ServerErrors < p[1].Requests-2 || p[2].ServerErrors > 2 {
			t.Errorf("5xx by phase: %d, %d of %d, %d; want the kill-app phase to fail", p[0].ServerErrors, p[1].ServerErrors, p[1].Requests, p[2].ServerErrors)
		}
		if p[2].HitRatio < 0.95 || p[3].Cache.Hit > 2 {
			t.Errorf("hit ratio before stop-cache %v, hits after %d", p[2].HitRatio, p[3].Cache.Hit)
		}
	})
}

func TestChaosFailureIsReported(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		f.delay = time.Millisecond
		cfg := memConfig(f)
		cfg.Duration = 2 * time.Second
		cfg.Chaos = []ChaosEvent{{At: time.Second, Action: "fail", Target: "9"}}
		cfg.ChaosRunner = &HTTPChaos{URL: "http://admin.test", Client: memClient(f)}
		rep := mustRun(t, t.Context(), cfg)
		if e := rep.Phases[1].ChaosError; !strings.Contains(e, "404") || !strings.Contains(e, "no such node") {
			t.Errorf("chaos error %q, want the status and the body", e)
		}
		err := (&HTTPChaos{URL: "http://admin.test", Client: memClient(f)}).Run(t.Context(), "fail", "")
		if !errors.Is(err, ErrChaos) {
			t.Errorf("Run = %v, want ErrChaos", err)
		}
	})
}

func TestInterrupt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		f.delay = 100 * time.Millisecond
		cfg := memConfig(f)
		cfg.Concurrency, cfg.Duration = 3, 10*time.Second
		cfg.Chaos = []ChaosEvent{{At: time.Second, Action: "stop-cache"}, {At: 5 * time.Second, Action: "kill-app"}}
		cfg.ChaosRunner = &HTTPChaos{URL: "http://admin.test", Client: memClient(f)}
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(1550*time.Millisecond, cancel)
		rep := mustRun(t, ctx, cfg)
		if !rep.Interrupted || rep.Elapsed != 1.55 {
			t.Errorf("interrupted %v after %v s, want true after 1.55", rep.Interrupted, rep.Elapsed)
		}
		if len(rep.Phases) != 2 || rep.Phases[1].End != 1.55 || len(f.chaos) != 1 {
			t.Errorf("phases %+v, chaos calls %d; want two, the second ending at 1.55 s, one call", rep.Phases, len(f.chaos))
		}
		// 15 requests of each worker completed; the 16th of each was in flight.
		if rep.Total.Requests != 45 || rep.Total.Canceled != 3 {
			t.Errorf("%d requests, %d canceled; want 45 and 3", rep.Total.Requests, rep.Total.Canceled)
		}
	})
}

func TestProgress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		f.delay = 7 * time.Millisecond // requests end at 7k ms, never on a tick
		f.every429 = 4
		var got []Progress
		cfg := memConfig(f)
		cfg.Concurrency, cfg.Duration = 1, 3500*time.Millisecond
		cfg.Progress = func(p Progress) { got = append(got, p) }
		cfg.Chaos = []ChaosEvent{{At: time.Second, Action: "noop"}}
		cfg.ChaosRunner = ChaosRunnerFunc(func(context.Context, string, string) error { return nil })
		rep := mustRun(t, t.Context(), cfg)
		if len(got) != 3 {
			t.Fatalf("%d progress reports, want 3: %+v", len(got), got)
		}
		sum := int64(0)
		for i, p := range got {
			// The tick at 1 s, on the event, reports the interval before it.
			phase := map[bool]string{true: "start", false: "1s:noop"}[i == 0]
			if want := time.Duration(i+1) * time.Second; p.Elapsed != want || p.Phase != phase {
				t.Errorf("report %d at %v in %q, want %v in %q", i, p.Elapsed, p.Phase, want, phase)
			}
			// 142 or 143 requests of 7 ms end in each second, a quarter of them 429.
			s := p.Stats
			if s.Requests < 142 || s.Requests > 143 || s.RPS != float64(s.Requests) || s.RateLimited < 35 || s.RateLimited > 36 || !near(s.Latency.P99, 7) {
				t.Errorf("report %d: %d requests, %v req/s, %d 429s, p99 %v", i, s.Requests, s.RPS, s.RateLimited, s.Latency.P99)
			}
			sum += s.Requests
		}
		if got[2].Total != sum || sum != 428 || rep.Total.Requests != 500 {
			t.Errorf("running total %d, sum of intervals %d, final %d; want 428, 428, 500", got[2].Total, sum, rep.Total.Requests)
		}
		if line := FormatProgress(got[0]); !strings.Contains(line, "142 req/s") || !strings.Contains(line, "429 35") {
			t.Errorf("progress line %q", line)
		}
	})
	synctest.Test(t, func(t *testing.T) {
		f := newFake()
		f.delay = 60 * time.Millisecond
		var got []Progress
		cfg := memConfig(f)
		cfg.Concurrency, cfg.Duration, cfg.Prepopulate = 1, time.Second, true
		cfg.Progress = func(p Progress) { got = append(got, p) }
		mustRun(t, t.Context(), cfg) // 20 keys at 60 ms: 1.2 s of prepopulation
		if len(got) < 2 || got[0].Phase != "prepopulate" || got[0].Total != 0 || got[0].Stats.Writes != 16 || got[1].Phase != "start" {
			t.Errorf("progress %+v, want prepopulate (16 writes) then start", got)
		}
	})
}

// TestCountsAgree runs over real HTTP against the fake and checks that every figure of the
// report matches what the server counted, exactly.
func TestCountsAgree(t *testing.T) {
	f := newFake()
	f.key, f.keyHdr = "secret", "X-API-Key"
	f.every429, f.every500 = 7, 11
	srv := httptest.NewServer(f)
	defer srv.Close()
	rep := mustRun(t, t.Context(), Config{
		URL: srv.URL, APIKey: "secret", KeyHeader: "X-API-Key", Keys: 30, Writes: 0.3,
		Concurrency: 4, Duration: 300 * time.Millisecond, Prepopulate: true,
	})
	pre, tot := rep.Prepopulate, rep.Total
	if pre.Requests != 30 {
		t.Errorf("prepopulated %d, want 30", pre.Requests)
	}
	if tot.Requests == 0 || tot.Canceled != 0 || tot.TransportErrors != 0 {
		t.Fatalf("total %+v", tot)
	}
	if int64(f.puts) != pre.Requests+tot.Writes || int64(f.gets) != tot.Reads {
		t.Errorf("server: %d PUT %d GET; report %d+%d writes, %d reads", f.puts, f.gets, pre.Requests, tot.Writes, tot.Reads)
	}
	for code, n := range f.status {
		c := strconv.Itoa(code)
		if got := pre.Status[c] + tot.Status[c]; got != int64(n) {
			t.Errorf("status %d: server %d, report %d", code, n, got)
		}
	}
	if f.status[401] != 0 {
		t.Errorf("%d requests without the key", f.status[401])
	}
	if tot.RateLimited+pre.RateLimited != int64(f.status[429]) || tot.ServerErrors+pre.ServerErrors != int64(f.status[500]) {
		t.Errorf("429 %d, 5xx %d; server %d, %d", tot.RateLimited, tot.ServerErrors, f.status[429], f.status[500])
	}
	if tot.Cache.Hit != int64(f.xcache["hit"]) || tot.Cache.Miss != int64(f.xcache["miss"]) {
		t.Errorf("cache %+v, server %v", tot.Cache, f.xcache)
	}
	if sum := tot.OK + tot.NotFound + tot.RateLimited + tot.ClientErrors + tot.ServerErrors + tot.TransportErrors; sum != tot.Requests {
		t.Errorf("classes sum to %d, requests %d", sum, tot.Requests)
	}
	if tot.Latency.Count != tot.Requests {
		t.Errorf("latency count %d, requests %d", tot.Latency.Count, tot.Requests)
	}
}

func TestConfigErrors(t *testing.T) {
	ok := Config{URL: "http://x"}
	for _, tc := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.URL = "" }, "URL is required"},
		{func(c *Config) { c.URL = "ftp://x" }, "want http://"},
		{func(c *Config) { c.Keys = -1 }, "keys must be"},
		{func(c *Config) { c.Keys = MaxKeys + 1 }, "keys must be"},
		{func(c *Config) { c.ZipfS = -1 }, "zipf exponent"},
		{func(c *Config) { c.Writes = 1.5 }, "writes must be"},
		{func(c *Config) { c.Writes = math.NaN() }, "writes must be"},
		{func(c *Config) { c.Concurrency = MaxConcurrency + 1 }, "concurrency must be"},
		{func(c *Config) { c.Rate = -1 }, "rate must be"},
		{func(c *Config) { c.Duration = -1 }, "duration must be"},
		{func(c *Config) { c.DocSize = MaxDocSize + 1 }, "document size"},
		{func(c *Config) { c.Collection = "a/b" }, "collection"},
		{func(c *Config) { c.Chaos = []ChaosEvent{{At: time.Second, Action: "x"}} }, "needs a ChaosRunner"},
		{func(c *Config) {
			c.Chaos, c.ChaosRunner = []ChaosEvent{{At: time.Minute, Action: "x"}}, ChaosRunnerFunc(nil)
		}, "not within the run's duration"},
		{func(c *Config) {
			c.Chaos = []ChaosEvent{{At: 2 * time.Second, Action: "x"}, {At: time.Second, Action: "y"}}
			c.ChaosRunner = ChaosRunnerFunc(nil)
		}, "time order"},
	} {
		c := ok
		tc.mod(&c)
		_, err := Run(t.Context(), c)
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Run(%+v) = %v, want ErrInvalidConfig with %q", c, err, tc.want)
		}
	}
}

func TestDocumentSize(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sizes := map[int]bool{}
		h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			sizes[int(r.ContentLength)] = true
			time.Sleep(time.Millisecond) // time passes in the bubble only when requests take some
			w.WriteHeader(http.StatusCreated)
		})
		_, err := Run(t.Context(), Config{URL: "http://x", Client: memClient(h), Keys: 5, Concurrency: 1, Writes: 1,
			DocSize: 1000, Duration: 10 * time.Millisecond, Prepopulate: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(sizes) != 1 || !sizes[1000] {
			t.Errorf("document sizes %v, want 1000 only", sizes)
		}
	})
}
