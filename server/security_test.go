package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/strata-project/strata/ratelimit"
	"github.com/strata-project/strata/server"
)

func TestAuthAndScopes(t *testing.T) {
	e := start(t, openSQLite(t), nil)
	r := e.do("GET", "/v1/docs/a", "", "")
	r.problem(t, 401, "unauthorized")
	if r.header.Get("WWW-Authenticate") == "" {
		t.Fatal("401 without WWW-Authenticate")
	}
	wrong := "wrong-key-0000000000000000000000000"
	r = e.do("GET", "/v1/docs/a", wrong, "")
	r.problem(t, 401, "unauthorized")
	e.do("GET", "/v1/docs/a", "short", "").problem(t, 401, "unauthorized")
	// X-API-Key works as well as Bearer.
	if r := e.do("GET", "/v1/docs/a", "", "", "X-API-Key", readerKey); r.status != 404 {
		t.Fatalf("X-API-Key: %d %s", r.status, r.body)
	}
	e.do("GET", "/v1/docs/a", "", "", "Authorization", "Basic "+readerKey).problem(t, 401, "unauthorized")
	e.do("PUT", "/v1/docs/a", readerKey, `{}`).problem(t, 403, "forbidden")
	e.do("GET", "/v1/sess/a", readerKey, "").problem(t, 403, "forbidden")
	e.do("PUT", "/v1/eventual/a", writerKey, `{}`).problem(t, 403, "forbidden")
	if r := e.do("PUT", "/v1/eventual/a", adminKey, `{}`); r.status != 201 {
		t.Fatalf("admin write: %d", r.status)
	}
	// Admin endpoints: on the API listener under /admin/ for the admin scope only.
	e.do("GET", "/admin/metrics", "", "").problem(t, 401, "unauthorized")
	e.do("GET", "/admin/metrics", writerKey, "").problem(t, 403, "forbidden")
	r = e.do("GET", "/admin/metrics", adminKey, "")
	if r.status != 200 || !strings.Contains(string(r.body), `strata_http_requests_total{code="403",method="PUT",route="doc"}`) {
		t.Fatalf("metrics: %d\n%s", r.status, r.body)
	}
	if !strings.Contains(string(r.body), `strata_cache_reads_total{collection="docs",result="bypass"}`) ||
		!strings.Contains(string(r.body), "strata_http_request_duration_seconds_bucket") {
		t.Fatalf("metrics lack cache reads or latency:\n%s", r.body)
	}
	if r := e.do("GET", "/admin/debug/pprof/", adminKey, ""); r.status != 200 {
		t.Fatalf("pprof: %d", r.status)
	}
	e.do("POST", "/admin/reload", adminKey, "").problem(t, 404, "not-found")
	// And on the admin listener, also behind the admin scope.
	e.doURL("GET", e.admin+"/metrics", readerKey, "").problem(t, 403, "forbidden")
	if r := e.doURL("GET", e.admin+"/metrics", adminKey, ""); r.status != 200 {
		t.Fatalf("admin listener metrics: %d", r.status)
	}
	// Keys never reach the logs nor problem bodies.
	logs := e.logs.String()
	for _, k := range []string{adminKey, writerKey, readerKey, wrong} {
		if strings.Contains(logs, k) {
			t.Fatalf("a key is in the logs")
		}
	}
	if strings.Contains(string(r.body), adminKey) || !strings.Contains(logs, `"principal":"writer"`) {
		t.Fatalf("logs do not name principals by id")
	}
}

func TestAnonymousAndReload(t *testing.T) {
	var reloads atomic.Int32
	var e *env
	e = start(t, openSQLite(t), func(c *server.Config, _ *server.Listen) {
		c.Anonymous = []server.Scope{{Action: "read", Collection: "docs"}}
		c.Reload = func(ctx context.Context) error {
			reloads.Add(1)
			// Drop the writer key and anonymous access.
			return e.srv.SetKeys(testKeys[:1], nil)
		}
	})
	if !strings.Contains(e.logs.String(), "anonymous access is ON") {
		t.Fatal("anonymous access not announced")
	}
	if r := e.do("GET", "/v1/docs/a", "", ""); r.status != 404 {
		t.Fatalf("anonymous read: %d", r.status)
	}
	e.do("PUT", "/v1/docs/a", "", `{}`).problem(t, 403, "forbidden")
	if r := e.do("PUT", "/v1/docs/a", writerKey, `{}`); r.status != 201 {
		t.Fatalf("writer before reload: %d", r.status)
	}
	if r := e.do("POST", "/admin/reload", adminKey, ""); r.status != 200 || reloads.Load() != 1 {
		t.Fatalf("reload: %d %s", r.status, r.body)
	}
	e.do("PUT", "/v1/docs/a", writerKey, `{}`).problem(t, 401, "unauthorized")
	e.do("GET", "/v1/docs/a", "", "").problem(t, 401, "unauthorized")
}

func TestRateLimits(t *testing.T) {
	e := start(t, openSQLite(t), func(c *server.Config, _ *server.Listen) {
		c.Collections["limited"] = server.Collection{RateLimit: server.RateLimit{Rate: ratelimit.PerMinute(2)}}
		keys := append([]server.Key(nil), testKeys...)
		keys[2].RateLimit = server.RateLimit{Rate: ratelimit.PerHour(3)}
		c.Keys = keys
	})
	for i := range 2 {
		r := e.do("GET", "/v1/limited/a", writerKey, "")
		if r.status != 404 || r.header.Get("RateLimit-Policy") == "" {
			t.Fatalf("request %d: %d %v", i, r.status, r.header)
		}
	}
	r := e.do("GET", "/v1/limited/a", writerKey, "")
	r.problem(t, 429, "rate-limited")
	if r.header.Get("Retry-After") == "" {
		t.Fatal("429 without Retry-After")
	}
	// Per principal: the admin key has its own budget on the collection.
	if r := e.do("GET", "/v1/limited/a", adminKey, ""); r.status != 404 {
		t.Fatalf("other key limited: %d", r.status)
	}
	// The reader key's own limit applies across collections.
	for i := range 3 {
		if r := e.do("GET", "/v1/docs/a", readerKey, ""); r.status != 404 {
			t.Fatalf("reader %d: %d", i, r.status)
		}
	}
	e.do("GET", "/v1/docs/a", readerKey, "").problem(t, 429, "rate-limited")
	m := e.do("GET", "/admin/metrics", adminKey, "")
	if !strings.Contains(string(m.body), `strata_ratelimit_decisions_total{decision="limited",scope="collection"} 1`) ||
		!strings.Contains(string(m.body), `strata_ratelimit_decisions_total{decision="limited",scope="key"} 1`) {
		t.Fatalf("limiter metrics:\n%s", m.body)
	}
}

func TestRequestIDAndProbes(t *testing.T) {
	failing := errors.New("cache down")
	var fail atomic.Bool
	e := start(t, openSQLite(t), func(c *server.Config, _ *server.Listen) {
		c.Checks = map[string]func(context.Context) error{"cache": func(context.Context) error {
			if fail.Load() {
				return failing
			}
			return nil
		}}
	})
	r := e.do("GET", "/v1/docs/a", readerKey, "", "X-Request-Id", "lb-1234.abc")
	if r.header.Get("X-Request-Id") != "lb-1234.abc" || r.json(t)["request_id"] != "lb-1234.abc" {
		t.Fatalf("request id not propagated: %v %s", r.header, r.body)
	}
	if !strings.Contains(e.logs.String(), `"request_id":"lb-1234.abc"`) {
		t.Fatal("request id not logged")
	}
	r = e.do("GET", "/healthz", "", "", "X-Request-Id", "bad id with spaces")
	if id := r.header.Get("X-Request-Id"); r.status != 200 || len(id) != 32 {
		t.Fatalf("healthz / fresh id: %d %q", r.status, id)
	}
	if r := e.do("GET", "/readyz", "", ""); r.status != 200 {
		t.Fatalf("readyz: %d %s", r.status, r.body)
	}
	fail.Store(true)
	r = e.do("GET", "/readyz", "", "")
	if r.status != 503 || r.json(t)["checks"].(map[string]any)["cache"] != "failing" || strings.Contains(string(r.body), "cache down") {
		t.Fatalf("readyz failing: %d %s", r.status, r.body)
	}
	// The OpenAPI file is served in both forms and names every problem type.
	y := e.do("GET", "/openapi.yaml", "", "")
	j := e.do("GET", "/openapi.json", "", "")
	var doc map[string]any
	if y.status != 200 || j.status != 200 || json.Unmarshal(j.body, &doc) != nil || doc["openapi"] != "3.0.3" {
		t.Fatalf("openapi: %d %d", y.status, j.status)
	}
	for _, p := range []string{"not-found", "unknown-collection", "method-not-allowed", "invalid-path", "invalid-body",
		"invalid-query", "invalid-header", "body-too-large", "unsupported-media", "precondition-failed", "unauthorized",
		"forbidden", "rate-limited", "idempotency-in-flight", "idempotency-key-reuse", "unavailable", "internal"} {
		if !strings.Contains(string(y.body), p) {
			t.Errorf("openapi.yaml does not mention problem %s", p)
		}
	}
	for _, h := range []string{"If-Match", "If-None-Match", "Idempotency-Key", "X-Cache", "Age", "Strata-Session", "X-Request-Id", "Retry-After", "RateLimit"} {
		if !strings.Contains(string(y.body), h) {
			t.Errorf("openapi.yaml does not mention %s", h)
		}
	}
}

func TestTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	pool := selfSigned(t, certFile, keyFile)
	e := start(t, openSQLite(t), func(_ *server.Config, l *server.Listen) {
		l.TLSCertFile, l.TLSKeyFile = certFile, keyFile
	})
	e.client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	r := e.doURL("GET", strings.Replace(e.base, "http://", "https://", 1)+"/healthz", "", "")
	if r.status != 200 {
		t.Fatalf("https healthz: %d", r.status)
	}
	// Plain HTTP to the TLS port does not get an answer from the API.
	if _, err := (&http.Client{Timeout: 5 * time.Second}).Get(e.base + "/healthz"); err == nil {
		resp, _ := http.Get(e.base + "/healthz")
		if resp != nil && resp.StatusCode == 200 {
			t.Fatal("plain HTTP served on the TLS listener")
		}
	}
	if _, err := server.New(server.Config{}); !errors.Is(err, server.ErrConfig) {
		t.Fatalf("empty config: %v", err)
	}
	s, _ := server.New(server.Config{Store: openSQLite(t), Collections: map[string]server.Collection{"x": {}}})
	if err := s.Start(server.Listen{Addr: "127.0.0.1:0", TLSCertFile: certFile, TLSKeyFile: filepath.Join(dir, "missing")}); !errors.Is(err, server.ErrConfig) {
		t.Fatalf("missing key file: %v", err)
	}
}

func selfSigned(t *testing.T, certFile, keyFile string) *x509.CertPool {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "strata test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return pool
}

// TestInvalidBodyDetails: bodies no store can hold (U+0000, unpaired surrogates) are refused
// with 400 whatever the store, and the problem detail says why without package prefixes.
func TestInvalidBodyDetails(t *testing.T) {
	e := start(t, openSQLite(t), nil)
	for _, body := range []string{`{"nul":"a\u0000b"}`, `{"s":"\ud800"}`} {
		r := e.do("PUT", "/v1/docs/bad", writerKey, body)
		r.problem(t, 400, "invalid-body")
		d, _ := r.json(t)["detail"].(string)
		if !strings.HasPrefix(d, "invalid input: body holds") {
			t.Errorf("%s: detail %q, want it to begin with %q", body, d, "invalid input: body holds")
		}
	}
	if r := e.do("GET", "/v1/docs/bad", writerKey, ""); r.status != 404 {
		t.Fatalf("a refused body was stored: %d %s", r.status, r.body)
	}
}
