package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestLBCheck(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("lb:\n  backends:\n    - address: 127.0.0.1:9001\n"), 0o600)
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("lb:\n  backends:\n    - address: nope\n"), 0o600)
	for _, tc := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{"-config", good, "-check"}, 0, "valid"},
		{[]string{"-config", bad, "-check"}, 2, "line 3"},
		{[]string{"-check"}, 2, "at least one backend"},
		{[]string{"-backends", "127.0.0.1:1", "-policy", "fastest", "-check"}, 2, "unknown policy"},
	} {
		var out, errb bytes.Buffer
		if code := cmdLB(tc.args, &out, &errb); code != tc.code || !strings.Contains(out.String()+errb.String(), tc.out) {
			t.Errorf("cmdLB(%q) = %d, %q %q; want %d and %q", tc.args, code, out.String(), errb.String(), tc.code, tc.out)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestLBReloadAndShutdown runs `strata lb` on a file, reloads it with SIGHUP
// onto another backend, and stops it with SIGTERM.
func TestLBReloadAndShutdown(t *testing.T) {
	a := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "a") }))
	defer a.Close()
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "b") }))
	defer b.Close()
	path := filepath.Join(t.TempDir(), "strata.yaml")
	write := func(backend string) {
		doc := fmt.Sprintf("lb:\n  listen: 127.0.0.1:0\n  health: {disabled: true}\n  backends:\n    - address: %s\n", backend)
		if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(a.Listener.Addr().String())

	pr, pw := io.Pipe()
	var stderr syncBuffer
	code := make(chan int, 1)
	go func() { code <- cmdLB([]string{"-config", path}, pw, &stderr); pw.Close() }()
	sc := bufio.NewScanner(pr)
	var addr string
	for sc.Scan() {
		if a, ok := strings.CutPrefix(sc.Text(), "strata lb: listening on "); ok {
			addr = a
			break
		}
	}
	go io.Copy(io.Discard, pr)
	if addr == "" {
		t.Fatalf("no listen line; stderr: %s", stderr.String())
	}
	body := func() string {
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if got := body(); got != "a" {
		t.Fatalf("before reload: %q", got)
	}
	write(b.Listener.Addr().String())
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	deadline := time.Now().Add(5 * time.Second)
	for body() != "b" {
		if time.Now().After(deadline) {
			t.Fatalf("reload not applied; stderr: %s", stderr.String())
		}
		time.Sleep(5 * time.Millisecond) // polling for the signal's effect
	}
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	select {
	case c := <-code:
		if c != 0 {
			t.Fatalf("exit code %d; stderr: %s", c, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no shutdown after SIGTERM")
	}
}
