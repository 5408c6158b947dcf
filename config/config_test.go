package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const good = `lb:
  listen: 127.0.0.1:8080
  backends:
    - address: 127.0.0.1:9001
      weight: 2
    - address: 127.0.0.1:9002
  policy: consistent-hash
  hash: {source: header, name: X-User, load_factor: 1.5}
  health: {path: /readyz, interval: 500ms, timeout: 200ms, rise: 2, fall: 3}
  outlier: {consecutive_failures: 3, base_ejection: 2s, max_ejection: 1m, max_ejected_percent: 34}
  retry: {attempts: 2, per_try_timeout: 3s, on_status: [502, 503]}
  trusted_proxies: [10.0.0.0/8, 192.0.2.1]
  admin:
    listen: 127.0.0.1:9090
    keys:
      - {name: ops, sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08, role: write}
`

func TestParseGood(t *testing.T) {
	f, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	lb := f.LB
	if lb == nil || len(lb.Backends) != 2 || lb.Backends[0].Weight != 2 || lb.Policy != "consistent-hash" {
		t.Fatalf("parsed %+v", lb)
	}
	if lb.Health.Interval.D() != 500*time.Millisecond || lb.Outlier.MaxEjection.D() != time.Minute {
		t.Fatalf("durations %v %v", lb.Health.Interval, lb.Outlier.MaxEjection)
	}
	if lb.Admin.Keys[0].Role != "write" || len(lb.TrustedProxies) != 2 {
		t.Fatalf("admin %+v", lb.Admin)
	}
}

func TestParseEmpty(t *testing.T) {
	f, err := Parse(nil)
	if err != nil || f.LB != nil {
		t.Fatalf("Parse(nil) = %+v, %v", f, err)
	}
}

func TestErrorsCarryLines(t *testing.T) {
	for _, tc := range []struct {
		name, doc, want string
	}{
		{"unknown field", "lb:\n  backends: [{address: 'a:1'}]\n  bogus: 1\n", "line 3"},
		{"bad address", "lb:\n  backends:\n    - address: a:1\n    - address: nohost\n", "line 4: lb.backends[1].address"},
		{"duplicate", "lb:\n  backends:\n    - address: a:1\n    - address: a:1\n", "line 4: lb.backends[1].address: duplicate"},
		{"bad duration", "lb:\n  backends: [{address: 'a:1'}]\n  health:\n    interval: soon\n", "line 4"},
		{"bad policy", "lb:\n  backends: [{address: 'a:1'}]\n  policy: fastest\n", "line 3: lb.policy"},
		{"no backends", "lb:\n  listen: :80\n", "lb.backends"},
		{"weight", "lb:\n  backends:\n    - address: a:1\n      weight: 5000\n", "line 4: lb.backends[0].weight"},
		{"syntax", "lb:\n  backends: [\n", "line"},
		{"type", "lb:\n  backends: 7\n", "line 2"},
		{"key hash", "lb:\n  backends: [{address: 'a:1'}]\n  admin:\n    keys:\n      - name: a\n        sha256: xyz\n", "line 6: lb.admin.keys[0].sha256"},
		{"admin without keys", "lb:\n  backends: [{address: 'a:1'}]\n  admin:\n    listen: 127.0.0.1:9\n", "lb.admin.keys"},
		{"proxy", "lb:\n  backends: [{address: 'a:1'}]\n  trusted_proxies: [10.0.0.0/99]\n", "line 3: lb.trusted_proxies[0]"},
		{"status", "lb:\n  backends: [{address: 'a:1'}]\n  retry: {on_status: [200]}\n", "lb.retry.on_status[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc))
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("err = %v, want ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	p := filepath.Join(t.TempDir(), "strata.yaml")
	if err := os.WriteFile(p, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := Load(p)
	if err != nil || f.LB.Listen != "127.0.0.1:8080" {
		t.Fatalf("Load = %+v, %v", f, err)
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.yaml")); !errors.Is(err, ErrInvalid) {
		t.Fatalf("missing file: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte("lb:\n  backends: [{address: 'a:1', weight: 3}]\n"))
	f.Add([]byte("lb: {backends: [], policy: random}"))
	f.Add([]byte("lb:\n  health: {interval: -1s}\n"))
	f.Add([]byte("- 1\n- 2\n"))
	f.Add([]byte("lb: &a\n  x: *a\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if err := file.Validate(); err != nil {
			t.Fatalf("accepted file fails Validate: %v", err)
		}
	})
}

func TestHedgeAccepted(t *testing.T) {
	for _, doc := range []string{
		"lb:\n  backends:\n    - address: 127.0.0.1:9001\n  hedge:\n    delay: 50ms\n",
		"lb:\n  backends:\n    - address: 127.0.0.1:9001\n  hedge: {percentile: 95, min_delay: 5ms, max_delay: 500ms, budget_ratio: 0.05, budget_min_per_second: 2}\n",
		"lb:\n  backends:\n    - address: 127.0.0.1:9001\n  retry: {per_try_timeout: 1s}\n  hedge: {percentile: 99.9}\n",
	} {
		f, err := Parse([]byte(doc))
		if err != nil {
			t.Fatalf("%q: %v", doc, err)
		}
		if h := f.LB.Hedge; h.Delay.D() == 0 && h.Percentile == 0 {
			t.Fatalf("%q: hedge section lost: %+v", doc, h)
		}
	}
}

func TestHedgeErrors(t *testing.T) {
	const head = "lb:\n  backends:\n    - address: 127.0.0.1:9001\n  hedge:\n"
	for _, tc := range []struct {
		name, body, want string
	}{
		{"both", "    delay: 10ms\n    percentile: 95\n", "line 6: lb.hedge.percentile: set lb.hedge.delay or lb.hedge.percentile, not both"},
		{"percentile low", "    percentile: 10\n", "line 5: lb.hedge.percentile: 10 outside 50..99.9"},
		{"percentile 100", "    percentile: 100\n", "line 5: lb.hedge.percentile: 100 outside 50..99.9"},
		{"delay at per-try", "    delay: 15s\n", "line 5: lb.hedge.delay: 15s is not below the per-try timeout 15s"},
		{"max at per-try", "    percentile: 95\n    max_delay: 20s\n", "line 6: lb.hedge.max_delay: 20s is not below the per-try timeout 15s"},
		{"min above max", "    percentile: 95\n    min_delay: 2s\n", "line 6: lb.hedge.min_delay: 2s above the max delay 1s"},
		{"min with fixed delay", "    delay: 10ms\n    min_delay: 1ms\n", "line 6: lb.hedge.min_delay: applies to lb.hedge.percentile only"},
		{"max with fixed delay", "    delay: 10ms\n    max_delay: 1s\n", "line 6: lb.hedge.max_delay: applies to lb.hedge.percentile only"},
		{"budget while off", "    budget_ratio: 0.1\n", "line 5: lb.hedge.budget_ratio: hedging is off"},
		{"max while off", "    max_delay: 1s\n", "line 5: lb.hedge.max_delay: hedging is off"},
		{"ratio", "    delay: 10ms\n    budget_ratio: 1.5\n", "line 6: lb.hedge.budget_ratio: 1.5 outside 0..1"},
		{"negative ratio", "    delay: 10ms\n    budget_ratio: -0.1\n", "line 6: lb.hedge.budget_ratio"},
		{"floor", "    delay: 10ms\n    budget_min_per_second: -1\n", "line 6: lb.hedge.budget_min_per_second"},
		{"negative delay", "    delay: -1s\n", "line 5"},
		{"unknown field", "    delay: 10ms\n    jitter: 1ms\n", "line 6"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(head + tc.body))
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrInvalid containing %q", err, tc.want)
			}
		})
	}
	// The per-try timeout in force bounds the delay.
	_, err := Parse([]byte("lb:\n  backends:\n    - address: 127.0.0.1:9001\n  retry: {per_try_timeout: 100ms}\n  hedge: {delay: 200ms}\n"))
	if err == nil || !strings.Contains(err.Error(), "line 5: lb.hedge.delay: 200ms is not below the per-try timeout 100ms") {
		t.Fatalf("delay above a configured per-try timeout: %v", err)
	}
}

func TestIdempotencyLeaseAboveRequestTimeout(t *testing.T) {
	base := "app:\n  store: {kind: sqlite, path: x.db}\n  collections: {docs: {}}\n  timeouts:\n"
	if _, err := Parse([]byte(base + "    idempotency_lease: 10s\n")); err == nil || !strings.Contains(err.Error(), "idempotency_lease") {
		t.Fatalf("lease equal to the default request timeout: %v, want an error naming idempotency_lease", err)
	}
	f, err := Parse([]byte(base + "    request: 2s\n    idempotency_lease: 5s\n    idempotency_ttl: 1h\n"))
	if err != nil {
		t.Fatal(err)
	}
	if f.App.Timeouts.IdempotencyLease.D() != 5*time.Second || f.App.Timeouts.IdempotencyTTL.D() != time.Hour {
		t.Fatalf("parsed %+v", f.App.Timeouts)
	}
}

func TestEarlyRefresh(t *testing.T) {
	doc := func(v string) []byte {
		return []byte("app:\n  store: {kind: sqlite, path: x.db}\n  cache: {kind: redis, addrs: ['127.0.0.1:6379']}\n  collections:\n    docs: {strategy: cache-aside, early_refresh: " + v + "}\n")
	}
	f, err := Parse(doc("1.5"))
	if err != nil {
		t.Fatal(err)
	}
	if got := f.App.Collections["docs"].EarlyRefresh; got != 1.5 {
		t.Fatalf("early_refresh parsed as %v, want 1.5", got)
	}
	for _, bad := range []string{"-1", ".nan", ".inf", "1000"} {
		if _, err := Parse(doc(bad)); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "early_refresh") {
			t.Errorf("early_refresh %s: %v, want an error naming early_refresh", bad, err)
		}
	}
}
