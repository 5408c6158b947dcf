package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

func TestBenchFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-keys", "0"}, "-keys must be at least 1"},
		{[]string{"-c", "-3"}, "-c must be at least 1"},
		{[]string{"-d", "0s"}, "-d must be positive"},
		{[]string{"-timeout", "-1s"}, "-timeout must be positive"},
		{[]string{"-size", "0"}, "-size must be at least 1"},
		{[]string{"-zipf", "-1"}, "zipf exponent must be in [0, 100]"},
		{[]string{"-writes", "2"}, "writes must be a fraction in [0, 1]"},
		{[]string{"-rate", "-5"}, "rate must be in"},
		{[]string{"-url", "localhost:8080"}, "want http://host:port"},
		{[]string{"-url", ""}, "a target URL is required"},
		{[]string{"-c", "100000"}, "concurrency must be in [1, 10000]"},
		{[]string{"-chaos", "10s:kill-app:2"}, "-chaos needs -admin-url"},
		{[]string{"-chaos", "soon:kill-app", "-admin-url", "http://a"}, `-chaos: chaos event "soon:kill-app": time`},
		{[]string{"-chaos", "20s:kill-app", "-admin-url", "http://a", "-d", "10s"}, "not within the run's duration 10s"},
		{[]string{"-d", "1s", "extra"}, `unexpected argument "extra"`},
		{[]string{"-nosuchflag"}, "flag provided but not defined: -nosuchflag"},
		{[]string{"-d", "ten"}, `invalid value "ten" for flag -d`},
	} {
		var out, errb bytes.Buffer
		if code := run(append([]string{"bench"}, tc.args...), &out, &errb); code != 2 {
			t.Errorf("bench %q: exit %d, want 2", tc.args, code)
		}
		if !strings.Contains(errb.String(), tc.want) || out.Len() != 0 {
			t.Errorf("bench %q: stderr %q, stdout %q; want %q on stderr only", tc.args, errb.String(), out.String(), tc.want)
		}
	}
}

// counter is a minimal document API that counts what it answers.
type counter struct {
	mu         sync.Mutex
	gets, puts int
	hits       int
	chaos      []string
	keySeen    string
}

func (c *counter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if strings.HasPrefix(r.URL.Path, "/chaos/") {
		c.chaos = append(c.chaos, r.URL.Path+"?"+r.URL.RawQuery+" "+r.Header.Get("Authorization"))
		w.WriteHeader(http.StatusNoContent)
		return
	}
	c.keySeen = r.Header.Get("X-API-Key")
	switch r.Method {
	case http.MethodPut:
		c.puts++
		w.WriteHeader(http.StatusCreated)
	case http.MethodGet:
		c.gets++
		if c.gets%2 == 0 {
			c.hits++
			w.Header().Set("X-Cache", "hit")
		} else {
			w.Header().Set("X-Cache", "miss")
		}
		w.Write([]byte(`{"n":"1"}`))
	}
}

func TestBenchJSON(t *testing.T) {
	c := &counter{}
	srv := httptest.NewServer(c)
	defer srv.Close()
	var out, errb bytes.Buffer
	code := run([]string{"bench", "-url", srv.URL, "-json", "-quiet", "-d", "300ms", "-c", "2", "-keys", "10",
		"-prepopulate", "-writes", "0.2", "-key", "sekrit", "-key-header", "X-API-Key",
		"-chaos", "150ms:kill-app:2", "-admin-url", srv.URL, "-admin-key", "adm"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d, stderr %s", code, errb.String())
	}
	if errb.Len() != 0 {
		t.Errorf("-quiet printed %q", errb.String())
	}
	// The schema, by field names and JSON types.
	var m map[string]any
	if err := json.Unmarshal(out.Bytes(), &m); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out.String())
	}
	for field, kind := range map[string]string{
		"schema": "string", "url": "string", "collection": "string", "mode": "string",
		"concurrency": "number", "keys": "number", "zipf_s": "number", "writes": "number",
		"doc_size": "number", "duration_s": "number", "elapsed_s": "number", "interrupted": "bool",
		"prepopulate": "object", "phases": "array", "total": "object",
	} {
		if got := jsonKind(m[field]); got != kind {
			t.Errorf("%s: %s, want %s", field, got, kind)
		}
	}
	if m["schema"] != "strata.bench/v1" || m["mode"] != "closed" {
		t.Errorf("schema %v, mode %v", m["schema"], m["mode"])
	}
	total := m["total"].(map[string]any)
	for _, f := range []string{"seconds", "requests", "reads", "writes", "rps", "ok", "not_found", "rate_limited",
		"client_errors", "server_errors", "transport_errors", "timeouts", "errors", "canceled", "dropped", "hit_ratio"} {
		if jsonKind(total[f]) != "number" {
			t.Errorf("total.%s: %v", f, total[f])
		}
	}
	lat, _ := total["latency_ms"].(map[string]any)
	for _, f := range []string{"count", "min", "mean", "p50", "p90", "p99", "p999", "max"} {
		if jsonKind(lat[f]) != "number" {
			t.Errorf("total.latency_ms.%s: %v", f, lat[f])
		}
	}
	if jsonKind(total["status"]) != "object" || jsonKind(total["cache"]) != "object" {
		t.Errorf("total.status %v, total.cache %v", total["status"], total["cache"])
	}
	phases := m["phases"].([]any)
	if len(phases) != 2 || phases[0].(map[string]any)["name"] != "start" || phases[1].(map[string]any)["name"] != "150ms:kill-app:2" {
		t.Errorf("phases %v", phases)
	}
	ev, _ := phases[1].(map[string]any)["event"].(map[string]any)
	if ev["action"] != "kill-app" || ev["target"] != "2" {
		t.Errorf("phase 1 event %v", ev)
	}

	// The counts agree with the server's.
	var rep struct {
		Prepopulate struct{ Requests int }
		Total       struct {
			Requests, Reads, Writes int
			Cache                   struct{ Hit int }
		}
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if rep.Prepopulate.Requests != 10 || c.puts != 10+rep.Total.Writes || c.gets != rep.Total.Reads ||
		c.hits != rep.Total.Cache.Hit || rep.Total.Requests != rep.Total.Reads+rep.Total.Writes {
		t.Errorf("report %+v; server %d PUT, %d GET, %d hits", rep, c.puts, c.gets, c.hits)
	}
	if c.keySeen != "sekrit" || len(c.chaos) != 1 || c.chaos[0] != "/chaos/kill-app?target=2 Bearer adm" {
		t.Errorf("key %q, chaos calls %q", c.keySeen, c.chaos)
	}
}

func TestBenchText(t *testing.T) {
	srv := httptest.NewServer(&counter{})
	defer srv.Close()
	var out, errb bytes.Buffer
	code := run([]string{"bench", "-url", srv.URL, "-d", "1200ms", "-rate", "200", "-c", "4"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d, stderr %s", code, errb.String())
	}
	for _, want := range []string{"open loop at 200 req/s", "phase", "p99", "start"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
	if !strings.Contains(errb.String(), "req/s") || !strings.Contains(errb.String(), "hit ") {
		t.Errorf("no progress line on stderr: %q", errb.String())
	}
}

func jsonKind(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "bool"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	case nil:
		return "null"
	}
	return "?"
}
