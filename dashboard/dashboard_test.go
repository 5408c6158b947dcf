package dashboard_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"

	"github.com/strata-project/strata/dashboard"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func get(t *testing.T, h http.Handler, path string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	return rec
}

func newDashboard(t *testing.T, cfg dashboard.Config) *dashboard.Dashboard {
	t.Helper()
	d, err := dashboard.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func TestNewRejects(t *testing.T) {
	src := &fakeSource{}
	for name, cfg := range map[string]dashboard.Config{
		"nil source":        {},
		"negative interval": {Source: src, Interval: -time.Second},
		"chaos query":       {Source: src, ChaosURL: "/admin?x=1"},
		"chaos relative":    {Source: src, ChaosURL: "admin"},
		"chaos scheme":      {Source: src, ChaosURL: "javascript:alert(1)"},
		"chaos userinfo":    {Source: src, ChaosURL: "http://u:p@127.0.0.1:1/admin"},
		"action name":       {Source: src, ChaosURL: "/admin", Actions: []dashboard.Action{{Name: "../x", Role: "app"}}},
	} {
		d, err := dashboard.New(cfg)
		if !errors.Is(err, dashboard.ErrInvalidConfig) {
			t.Errorf("%s: err = %v, want ErrInvalidConfig", name, err)
		}
		if d != nil {
			d.Close()
		}
	}
}

func TestSnapshotJSON(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &fakeSource{topo: threeApps()}
		d := newDashboard(t, dashboard.Config{Source: src})
		synctest.Wait() // the first snapshot is taken at once
		rec := get(t, d, "/snapshot.json")
		if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("status %d, type %q", rec.Code, rec.Header().Get("Content-Type"))
		}
		var s dashboard.Snapshot
		if err := json.Unmarshal(rec.Body.Bytes(), &s); err != nil {
			t.Fatal(err)
		}
		if s.Seq != 1 || s.Error != "" || len(s.Tiers) != 5 || len(s.Tiers[1].Nodes) != 3 {
			t.Fatalf("snapshot = seq %d, error %q, %d tiers", s.Seq, s.Error, len(s.Tiers))
		}
		// RPS from the load balancer, p99 the worst app server's.
		if s.RPS == nil || *s.RPS != 1021 || s.P99MS == nil || *s.P99MS != 7.5 {
			t.Fatalf("summary rps %v p99 %v, want 1021 and 7.5", s.RPS, s.P99MS)
		}
		if n := s.Tiers[1].Nodes[1]; n.Name != "app-2" || n.Health != "up" || *n.HitRatio != 0.94 {
			t.Fatalf("app-2 = %+v", n)
		}

		time.Sleep(2500 * time.Millisecond) // two more ticks
		synctest.Wait()
		if err := json.Unmarshal(get(t, d, "/snapshot.json").Body.Bytes(), &s); err != nil || s.Seq != 3 {
			t.Fatalf("after 2.5 s: seq %d (err %v), want 3", s.Seq, err)
		}
		var hist []dashboard.Point
		if err := json.Unmarshal(get(t, d, "/history.json").Body.Bytes(), &hist); err != nil || len(hist) != 3 {
			t.Fatalf("history has %d points (err %v), want 3", len(hist), err)
		}
		if hist[1].T-hist[0].T != 1000 || *hist[2].RPS != 1021 {
			t.Fatalf("history = %+v", hist)
		}
	})
}

func TestSummaryFromAppsWithoutLB(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		topo := threeApps()
		topo.Tiers = topo.Tiers[1:] // no load balancer
		d := newDashboard(t, dashboard.Config{Source: &fakeSource{topo: topo}})
		synctest.Wait()
		var s dashboard.Snapshot
		json.Unmarshal(get(t, d, "/snapshot.json").Body.Bytes(), &s)
		if s.RPS == nil || *s.RPS != 341+342+343 {
			t.Fatalf("rps = %v, want the sum of the app servers", s.RPS)
		}
	})
}

func TestSourceErrorKeepsLastTopology(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &fakeSource{topo: threeApps()}
		d := newDashboard(t, dashboard.Config{Source: src})
		synctest.Wait()
		src.fail(errors.New("scrape failed"))
		time.Sleep(time.Second)
		synctest.Wait()
		var s dashboard.Snapshot
		json.Unmarshal(get(t, d, "/snapshot.json").Body.Bytes(), &s)
		if s.Seq != 2 || s.Error != "scrape failed" || len(s.Tiers) != 5 {
			t.Fatalf("seq %d error %q tiers %d: want 2, the error and the last good tiers", s.Seq, s.Error, len(s.Tiers))
		}
		src.fail(nil)
		src.set(func(t *dashboard.Topology) { t.RPS = dashboard.Num(math.NaN()) })
		time.Sleep(time.Second)
		synctest.Wait()
		json.Unmarshal(get(t, d, "/snapshot.json").Body.Bytes(), &s)
		if s.Seq != 3 || !strings.Contains(s.Error, "JSON") {
			t.Fatalf("a NaN figure: seq %d error %q, want an error frame", s.Seq, s.Error)
		}
	})
}

func TestSnapshotTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		slow := dashboard.SourceFunc(func(ctx context.Context) (dashboard.Topology, error) {
			<-ctx.Done()
			return dashboard.Topology{}, ctx.Err()
		})
		d := newDashboard(t, dashboard.Config{Source: slow, Timeout: 300 * time.Millisecond})
		time.Sleep(400 * time.Millisecond)
		synctest.Wait()
		var s dashboard.Snapshot
		json.Unmarshal(get(t, d, "/snapshot.json").Body.Bytes(), &s)
		if !strings.Contains(s.Error, "deadline") {
			t.Fatalf("error %q, want the deadline", s.Error)
		}
	})
}

// streamWriter is a ResponseWriter that a test reads while the handler
// writes, with Flush counted.
type streamWriter struct {
	mu      sync.Mutex // protects the fields below
	header  http.Header
	code    int
	buf     strings.Builder
	flushes int
}

func (w *streamWriter) Header() http.Header { return w.header }
func (w *streamWriter) WriteHeader(code int) {
	w.mu.Lock()
	w.code = code
	w.mu.Unlock()
}
func (w *streamWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(b)
}
func (w *streamWriter) Flush() {
	w.mu.Lock()
	w.flushes++
	w.mu.Unlock()
}
func (w *streamWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

type event struct{ id, name, data string }

// parseEvents splits an event stream into events; retry lines are checked
// and dropped.
func parseEvents(t *testing.T, s string) []event {
	t.Helper()
	if !strings.HasSuffix(s, "\n\n") {
		t.Fatalf("stream does not end with a blank line: %q", s)
	}
	var out []event
	for _, block := range strings.Split(strings.TrimSuffix(s, "\n\n"), "\n\n") {
		var e event
		for _, line := range strings.Split(block, "\n") {
			k, v, ok := strings.Cut(line, ": ")
			if !ok {
				t.Fatalf("line %q is not field: value", line)
			}
			switch k {
			case "id":
				e.id = v
			case "event":
				e.name = v
			case "data":
				if e.data != "" {
					t.Fatalf("event with two data lines: %q", block)
				}
				e.data = v
			case "retry":
			default:
				t.Fatalf("unknown field %q", k)
			}
		}
		out = append(out, e)
	}
	return out
}

func TestEventStream(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &fakeSource{topo: threeApps()}
		d := newDashboard(t, dashboard.Config{Source: src, Interval: 500 * time.Millisecond})
		synctest.Wait()
		w := &streamWriter{header: http.Header{}}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ended := make(chan struct{})
		go func() {
			defer close(ended)
			d.ServeHTTP(w, httptest.NewRequest("GET", "/events", nil).WithContext(ctx))
		}()
		synctest.Wait()
		if ct := w.Header().Get("Content-Type"); ct != "text/event-stream" {
			t.Fatalf("Content-Type %q", ct)
		}
		ev := parseEvents(t, w.String())
		if len(ev) != 2 || ev[0].name != "history" || ev[1].name != "snapshot" || ev[1].id != "1" {
			t.Fatalf("first events = %+v, want history then snapshot 1", ev)
		}
		if !strings.HasPrefix(w.String(), "retry: 1000\n") {
			t.Fatalf("stream does not start with the retry delay: %q", w.String()[:20])
		}

		src.set(func(t *dashboard.Topology) { t.Tiers[1].Nodes[1].Health = dashboard.HealthDown })
		time.Sleep(1500 * time.Millisecond) // three ticks
		synctest.Wait()
		ev = parseEvents(t, w.String())
		if len(ev) != 5 || ev[4].id != "4" {
			t.Fatalf("after three ticks: %d events, last %+v; want 5, id 4", len(ev), ev[len(ev)-1])
		}
		var s dashboard.Snapshot
		if err := json.Unmarshal([]byte(ev[4].data), &s); err != nil || s.Tiers[1].Nodes[1].Health != "down" {
			t.Fatalf("last snapshot: app-2 %+v (err %v), want down", s.Tiers[1].Nodes[1], err)
		}
		w.mu.Lock()
		flushes := w.flushes
		w.mu.Unlock()
		if flushes != 5 {
			t.Fatalf("flushes = %d, want one per event (5)", flushes)
		}

		// Close ends the stream, and no more events come.
		d.Close()
		synctest.Wait()
		select {
		case <-ended:
		default:
			t.Fatal("stream still open after Close")
		}
		time.Sleep(2 * time.Second)
		if n := len(parseEvents(t, w.String())); n != 5 {
			t.Fatalf("%d events after Close, want 5", n)
		}
	})
}

func TestEventStreamOverHTTP(t *testing.T) {
	src := &fakeSource{topo: threeApps()}
	d, err := dashboard.New(dashboard.Config{Source: src, Interval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d)
	defer srv.Close()
	defer d.Close()
	res, err := http.Get(srv.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	r := bufio.NewReader(res.Body)
	var names []string
	for len(names) < 4 {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if v, ok := strings.CutPrefix(line, "event: "); ok {
			names = append(names, strings.TrimSpace(v))
		}
	}
	if strings.Join(names, " ") != "history snapshot snapshot snapshot" {
		t.Fatalf("events %v", names)
	}
	d.Close()
	if _, err := io.Copy(io.Discard, r); err != nil {
		t.Fatalf("stream did not end cleanly after Close: %v", err)
	}
}

func TestMaxStreams(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDashboard(t, dashboard.Config{Source: &fakeSource{}, MaxStreams: 1})
		ctx, cancel := context.WithCancel(context.Background())
		go d.ServeHTTP(&streamWriter{header: http.Header{}}, httptest.NewRequest("GET", "/events", nil).WithContext(ctx))
		synctest.Wait()
		if rec := get(t, d, "/events"); rec.Code != http.StatusServiceUnavailable {
			t.Fatalf("second stream: status %d, want 503", rec.Code)
		}
		cancel()
		synctest.Wait()
		ctx2, cancel2 := context.WithCancel(context.Background())
		w := &streamWriter{header: http.Header{}}
		go d.ServeHTTP(w, httptest.NewRequest("GET", "/events", nil).WithContext(ctx2))
		synctest.Wait()
		if w.code != 200 {
			t.Fatalf("stream after the first ended: status %d, want 200", w.code)
		}
		cancel2()
		synctest.Wait()
	})
}

func TestAuthorize(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDashboard(t, dashboard.Config{Source: &fakeSource{}, Authorize: func(r *http.Request) error {
			if r.Header.Get("X-Test") != "yes" {
				return errors.New("dashboard: not for you")
			}
			return nil
		}})
		synctest.Wait()
		for _, p := range []string{"/", "/snapshot.json", "/events", "/config.json", "/static/dashboard.js"} {
			if rec := get(t, d, p); rec.Code != http.StatusForbidden {
				t.Errorf("%s without the header: %d, want 403", p, rec.Code)
			}
		}
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/snapshot.json", nil)
		req.Header.Set("X-Test", "yes")
		d.ServeHTTP(rec, req)
		if rec.Code != 200 {
			t.Fatalf("authorized: %d, want 200", rec.Code)
		}
	})
}

func TestPageAndAssets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDashboard(t, dashboard.Config{Source: &fakeSource{}, ChaosURL: "http://127.0.0.1:7001/admin"})
		synctest.Wait()
		page := get(t, d, "/")
		if page.Code != 200 || !strings.Contains(page.Body.String(), `src="static/dashboard.js"`) {
			t.Fatalf("page: %d %q", page.Code, page.Body.String())
		}
		csp := page.Header().Get("Content-Security-Policy")
		if !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "connect-src 'self' http://127.0.0.1:7001") {
			t.Fatalf("CSP %q", csp)
		}
		// Offline: no asset refers to another host.
		for _, p := range []string{"/", "/static/dashboard.js", "/static/dashboard.css"} {
			rec := get(t, d, p)
			if rec.Code != 200 {
				t.Fatalf("%s: %d", p, rec.Code)
			}
			if b := rec.Body.String(); strings.Contains(b, "http://") || strings.Contains(b, "https://") || strings.Contains(b, "innerHTML") {
				t.Errorf("%s refers to another host or uses innerHTML", p)
			}
		}
		var cfg struct {
			ChaosURL string             `json:"chaos_url"`
			Actions  []dashboard.Action `json:"actions"`
		}
		json.Unmarshal(get(t, d, "/config.json").Body.Bytes(), &cfg)
		if cfg.ChaosURL != "http://127.0.0.1:7001/admin" || len(cfg.Actions) != len(dashboard.DefaultActions()) {
			t.Fatalf("config = %+v", cfg)
		}
		if rec := get(t, d, "/nothing"); rec.Code != 404 {
			t.Fatalf("unknown path: %d", rec.Code)
		}
	})
}

func TestNoChaosURLHidesActions(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDashboard(t, dashboard.Config{Source: &fakeSource{}})
		synctest.Wait()
		var cfg struct {
			Actions []dashboard.Action `json:"actions"`
		}
		if err := json.Unmarshal(get(t, d, "/config.json").Body.Bytes(), &cfg); err != nil || cfg.Actions == nil || len(cfg.Actions) != 0 {
			t.Fatalf("actions = %v (err %v), want an empty list", cfg.Actions, err)
		}
	})
}

func TestMountedUnderPrefix(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := newDashboard(t, dashboard.Config{Source: &fakeSource{}})
		mux := http.NewServeMux()
		mux.Handle("/ops/dashboard/", http.StripPrefix("/ops/dashboard", d))
		mux.Handle("/ops/dashboard", http.StripPrefix("/ops/dashboard", d))
		rec := get(t, mux, "/ops/dashboard")
		if rec.Code != http.StatusMovedPermanently || rec.Header().Get("Location") != "./dashboard/" {
			t.Fatalf("redirect: %d %q", rec.Code, rec.Header().Get("Location"))
		}
		if rec := get(t, mux, "/ops/dashboard/"); rec.Code != 200 {
			t.Fatalf("page under the prefix: %d", rec.Code)
		}
	})
}
