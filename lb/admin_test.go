package lb

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func adminServer(t *testing.T) (*LB, *httptest.Server, *backend) {
	t.Helper()
	be := newBackend(t, ok("a"))
	l, _ := startLB(t, Config{Backends: []BackendConfig{{Addr: be.addr()}}, Health: HealthConfig{Disabled: true}})
	rk, _ := ParseAdminKey("reader", HashKey("read-secret"), "read")
	wk, _ := ParseAdminKey("writer", HashKey("write-secret"), "write")
	h, err := l.AdminHandler([]AdminKey{rk, wk}, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return l, srv, be
}

func adminDo(t *testing.T, srv *httptest.Server, method, path, key, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestAdminAuth(t *testing.T) {
	_, srv, _ := adminServer(t)
	for _, tc := range []struct {
		method, path, key, body string
		want                    int
	}{
		{"GET", "/status", "", "", 401},
		{"GET", "/status", "wrong", "", 401},
		{"GET", "/status", "read-secret", "", 200},
		{"GET", "/metrics", "", "", 401},
		{"GET", "/metrics", "read-secret", "", 200},
		{"POST", "/backends", "read-secret", `{"address":"127.0.0.1:1"}`, 403},
		{"POST", "/backends/127.0.0.1:1/drain", "read-secret", "", 403},
		{"DELETE", "/backends/127.0.0.1:1", "", "", 401},
	} {
		if got, body := adminDo(t, srv, tc.method, tc.path, tc.key, tc.body); got != tc.want {
			t.Errorf("%s %s key %q: %d, want %d (%s)", tc.method, tc.path, tc.key, got, tc.want, body)
		}
	}
}

func TestAdminChanges(t *testing.T) {
	l, srv, be := adminServer(t)
	const w = "write-secret"
	for _, tc := range []struct {
		method, path, body string
		want               int
	}{
		{"POST", "/backends", `{"address":"127.0.0.1:9","weight":2}`, 201},
		{"POST", "/backends", `{"address":"127.0.0.1:9"}`, 409},
		{"POST", "/backends", `{"address":"nohost"}`, 400},
		{"POST", "/backends", `{"address":"127.0.0.1:99999"}`, 400},
		{"POST", "/backends", `{"address":"127.0.0.1:8","weight":-1}`, 400},
		{"POST", "/backends", `{"address":"127.0.0.1:8","extra":1}`, 400},
		{"POST", "/backends", `{"address":"127.0.0.1:8"} {}`, 400},
		{"POST", "/backends", `not json`, 400},
		{"POST", "/backends/127.0.0.1:9/drain", "", 200},
		{"POST", "/backends/127.0.0.1:7/drain", "", 404},
		{"DELETE", "/backends/127.0.0.1:7", "", 404},
		{"DELETE", "/backends/127.0.0.1:9", "", 200},
		{"DELETE", "/backends/" + be.addr(), "", 400}, // the last one
	} {
		if got, body := adminDo(t, srv, tc.method, tc.path, w, tc.body); got != tc.want {
			t.Errorf("%s %s %s: %d, want %d (%s)", tc.method, tc.path, tc.body, got, tc.want, body)
		}
	}
	if bs := l.Backends(); len(bs) != 1 || bs[0].Addr() != be.addr() {
		t.Fatalf("backends after changes: %v", bs)
	}
	code, body := adminDo(t, srv, "GET", "/status", w, "")
	var st struct {
		Backends []BackendStatus `json:"backends"`
	}
	if code != 200 || json.Unmarshal([]byte(body), &st) != nil || len(st.Backends) != 1 || !st.Backends[0].Healthy {
		t.Fatalf("status %d %s", code, body)
	}
	_, metrics := adminDo(t, srv, "GET", "/metrics", w, "")
	if !strings.Contains(metrics, `strata_lb_backend_up{backend="`+be.addr()+`"} 1`) {
		t.Fatalf("metrics lack backend_up:\n%s", metrics)
	}
}

// FuzzAdminAdd feeds arbitrary bodies to POST /backends: the answer is 201
// only for a valid new backend, and never a 5xx.
func FuzzAdminAdd(f *testing.F) {
	f.Add(`{"address":"127.0.0.1:9","weight":2}`)
	f.Add(`{"address":"[::1]:80"}`)
	f.Add(`{"address":"a b:1"}`)
	f.Add(`{"address":"host:0"}`)
	f.Add(`{"weight":1e9}`)
	f.Add(`[]`)
	f.Fuzz(func(t *testing.T, body string) {
		l, err := New(Config{Backends: []BackendConfig{{Addr: "127.0.0.1:1"}}, Health: HealthConfig{Disabled: true}, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		wk, _ := ParseAdminKey("w", HashKey("k"), "write")
		h, err := l.AdminHandler([]AdminKey{wk}, prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest("POST", "/backends", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer k")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		n := len(l.Backends())
		switch rec.Code {
		case 201:
			if n != 2 || validAddr(l.Backends()[1].Addr()) != nil {
				t.Fatalf("201 but backends %d", n)
			}
		case 400, 409:
			if n != 1 {
				t.Fatalf("%d but a backend was added", rec.Code)
			}
		default:
			t.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	})
}
