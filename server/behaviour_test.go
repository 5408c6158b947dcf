package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/strata-project/strata/breaker"
	"github.com/strata-project/strata/docstore"
	"github.com/strata-project/strata/server"
)

// gatedAccess blocks Put until released, to hold a write in flight.
type gatedAccess struct {
	server.StoreAccess
	entered chan struct{}
	release chan struct{}
	flushed chan struct{}
	once    sync.Once
}

func (g *gatedAccess) Put(ctx context.Context, c, id string, body json.RawMessage, v int64) (docstore.Doc, error) {
	g.entered <- struct{}{}
	<-g.release
	return g.StoreAccess.Put(ctx, c, id, body, v)
}

func (g *gatedAccess) Flush(context.Context) error {
	g.once.Do(func() { close(g.flushed) })
	return nil
}

func TestIdempotency(t *testing.T) {
	eachStore(t, func(t *testing.T, open func(*testing.T) docstore.Store) {
		store := open(t)
		gate := &gatedAccess{StoreAccess: server.StoreAccess{Store: store}, entered: make(chan struct{}), release: make(chan struct{}), flushed: make(chan struct{})}
		mod := func(c *server.Config, _ *server.Listen) { c.Collections["gated"] = server.Collection{Access: gate} }
		a := start(t, store, mod)
		b := start(t, store, mod) // a second app server over the same store
		first := a.do("PUT", "/v1/docs/x", writerKey, `{"v":1}`, "Idempotency-Key", "op-1")
		if first.status != 201 || first.header.Get("ETag") != `"1"` {
			t.Fatalf("first: %d %s", first.status, first.body)
		}
		for _, e := range []*env{a, b} {
			r := e.do("PUT", "/v1/docs/x", writerKey, `{"v":1}`, "Idempotency-Key", "op-1")
			if r.status != 201 || r.header.Get("ETag") != `"1"` || r.header.Get("Idempotent-Replayed") != "true" || string(r.body) != string(first.body) {
				t.Fatalf("replay: %d %v %s", r.status, r.header, r.body)
			}
		}
		if r := a.do("GET", "/v1/docs/x", readerKey, ""); r.header.Get("ETag") != `"1"` {
			t.Fatalf("the retried write applied again: ETag %s", r.header.Get("ETag"))
		}
		// The same key for another request: 422. Another principal's same key: its own.
		a.do("PUT", "/v1/docs/x", writerKey, `{"v":2}`, "Idempotency-Key", "op-1").problem(t, 422, "idempotency-key-reuse")
		if r := a.do("PUT", "/v1/docs/x", adminKey, `{"v":1}`, "Idempotency-Key", "op-1"); r.status != 200 || r.header.Get("ETag") != `"2"` {
			t.Fatalf("other principal: %d %v", r.status, r.header)
		}
		// Deletes and patches replay too.
		d1 := a.do("DELETE", "/v1/docs/x", writerKey, "", "Idempotency-Key", "del-1")
		d2 := b.do("DELETE", "/v1/docs/x", writerKey, "", "Idempotency-Key", "del-1")
		if d1.status != 204 || d2.status != 204 || d2.header.Get("ETag") != d1.header.Get("ETag") {
			t.Fatalf("delete replay: %d %d", d1.status, d2.status)
		}
		// Errors that are the request's fault are stored and replayed as well.
		p1 := a.do("PATCH", "/v1/docs/x", writerKey, `{"a":1}`, "Idempotency-Key", "patch-1")
		p1.problem(t, 404, "not-found")
		b.do("PATCH", "/v1/docs/x", writerKey, `{"a":1}`, "Idempotency-Key", "patch-1").problem(t, 404, "not-found")

		// A duplicate while the first is in flight: 409, then the first completes once.
		done := make(chan resp)
		go func() { done <- a.do("PUT", "/v1/gated/g", adminKey, `{}`, "Idempotency-Key", "slow") }()
		select {
		case <-gate.entered:
		case r := <-done:
			t.Fatalf("the first request did not reach the store: %d %s", r.status, r.body)
		}
		r := b.do("PUT", "/v1/gated/g", adminKey, `{}`, "Idempotency-Key", "slow")
		r.problem(t, 409, "idempotency-in-flight")
		if r.header.Get("Retry-After") == "" {
			t.Fatal("409 without Retry-After")
		}
		close(gate.release)
		if r := <-done; r.status != 201 {
			t.Fatalf("slow first: %d %s", r.status, r.body)
		}
		if r := b.do("PUT", "/v1/gated/g", adminKey, `{}`, "Idempotency-Key", "slow"); r.status != 201 || r.header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("after the first: %d %v", r.status, r.header)
		}
	})
}

// failingStore fails every call as unavailable and counts the calls that reached it.
type failingStore struct {
	docstore.Store
	mu    sync.Mutex
	calls int
	down  bool
}

func (f *failingStore) fail() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.down {
		return docstore.ErrUnavailable
	}
	return nil
}

func (f *failingStore) Get(ctx context.Context, c, id string) (docstore.Doc, error) {
	if err := f.fail(); err != nil {
		return docstore.Doc{}, err
	}
	return f.Store.Get(ctx, c, id)
}

func (f *failingStore) Put(ctx context.Context, c, id string, b json.RawMessage) (docstore.Doc, error) {
	if err := f.fail(); err != nil {
		return docstore.Doc{}, err
	}
	return f.Store.Put(ctx, c, id, b)
}

func TestUnavailableFailsClosed(t *testing.T) {
	raw := &failingStore{Store: openSQLite(t)}
	br, err := breaker.New(breaker.Config{Name: "store", ConsecutiveFailures: 2, OpenDuration: time.Hour, Classify: server.ClassifyStoreError})
	if err != nil {
		t.Fatal(err)
	}
	guarded := server.BreakerStore{Store: raw, Breaker: br}
	e := start(t, guarded, func(c *server.Config, _ *server.Listen) {
		c.Breakers = map[string]*breaker.Breaker{"store": br}
	})
	if r := e.do("PUT", "/v1/docs/a", writerKey, `{}`); r.status != 201 {
		t.Fatalf("healthy: %d", r.status)
	}
	// Not-found is not a failure of the store.
	for range 3 {
		e.do("GET", "/v1/docs/missing", readerKey, "").problem(t, 404, "not-found")
	}
	raw.mu.Lock()
	raw.down = true
	raw.mu.Unlock()
	for range 2 {
		r := e.do("GET", "/v1/docs/a", readerKey, "")
		r.problem(t, 503, "unavailable")
		if r.header.Get("Retry-After") != "1" {
			t.Fatalf("Retry-After %q", r.header.Get("Retry-After"))
		}
	}
	raw.mu.Lock()
	before := raw.calls
	raw.mu.Unlock()
	e.do("PUT", "/v1/docs/a", writerKey, `{}`).problem(t, 503, "unavailable")
	e.do("GET", "/v1/docs/a", readerKey, "").problem(t, 503, "unavailable")
	raw.mu.Lock()
	after := raw.calls
	raw.mu.Unlock()
	if after != before {
		t.Fatalf("the open breaker let %d calls through", after-before)
	}
	if r := e.do("GET", "/readyz", "", ""); r.status != 503 {
		t.Fatalf("readyz with the store down: %d", r.status)
	}
	m := e.do("GET", "/admin/metrics", adminKey, "")
	if !strings.Contains(string(m.body), `strata_breaker_state{name="store"} 2`) {
		t.Fatalf("breaker metric:\n%s", m.body)
	}
}

func TestGracefulShutdown(t *testing.T) {
	store := openSQLite(t)
	gate := &gatedAccess{StoreAccess: server.StoreAccess{Store: store}, entered: make(chan struct{}), release: make(chan struct{}), flushed: make(chan struct{})}
	e := start(t, store, func(c *server.Config, _ *server.Listen) { c.Collections["gated"] = server.Collection{Access: gate} })
	done := make(chan resp)
	go func() { done <- e.do("PUT", "/v1/gated/g", adminKey, `{}`) }()
	select {
	case <-gate.entered:
	case r := <-done:
		t.Fatalf("the request did not reach the store: %d %s", r.status, r.body)
	}
	shut := make(chan error)
	go func() { shut <- e.srv.Shutdown(context.Background()) }()
	// New connections are refused once the listener is closed, while the request in flight
	// is still held.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Get(e.base + "/healthz")
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("still accepting connections during shutdown")
		}
		runtime_Gosched()
	}
	select {
	case <-gate.flushed:
		t.Fatal("flushed before the request in flight finished")
	default:
	}
	close(gate.release)
	if r := <-done; r.status != 201 {
		t.Fatalf("in-flight request: %d", r.status)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
	select {
	case <-gate.flushed:
	default:
		t.Fatal("shutdown did not flush")
	}
	if _, err := store.Get(context.Background(), "gated", "g"); errors.Is(err, docstore.ErrNotFound) {
		t.Fatal("the in-flight write was lost")
	}
}
