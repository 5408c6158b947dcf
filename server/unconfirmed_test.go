package server_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/strata-project/strata/cache"
	"github.com/strata-project/strata/server"
)

// invalidationsFail is a shared cache store whose invalidations (and sets) fail while
// failing is set; reads still work, as with a cache tier that drops some calls.
type invalidationsFail struct {
	cache.Store
	failing atomic.Bool
}

var errDropped = errors.New("test: cache call dropped")

func (s *invalidationsFail) Invalidate(ctx context.Context, k string, v int64, ttl time.Duration) error {
	if s.failing.Load() {
		return errDropped
	}
	return s.Store.Invalidate(ctx, k, v, ttl)
}

func (s *invalidationsFail) SetIfNewer(ctx context.Context, k string, e cache.Entry, ttl time.Duration) (cache.SetResult, error) {
	if s.failing.Load() {
		return 0, errDropped
	}
	return s.Store.SetIfNewer(ctx, k, e, ttl)
}

// TestUnconfirmedWriteConfirmedByRetry: a keyed PUT that reached the store but whose
// invalidation the shared cache dropped answers 503 (not known to be complete). Its retry
// with the same Idempotency-Key must not apply it again (a newer write in between would be
// overwritten): while the cache still drops invalidations it answers 503 again, and once the
// cache takes the republished invalidation it replays the answer the write would have had.
// The collection is a session one: a strong collection invalidates before it writes the
// store, so its writes are refused before they are applied instead (see
// TestStrongWriteRefusedBeforeStore).
func TestUnconfirmedWriteConfirmedByRetry(t *testing.T) {
	store := openSQLite(t)
	cstore := &invalidationsFail{Store: memoryKind(t)(t)}
	shared := func(*testing.T) cache.Store { return cstore }
	c := newCluster(t, 2, store, shared, cachedOpts{strategy: server.StrategyCacheAside, consistency: server.Session, shared: true})
	a, b := c.envs[0], c.envs[1]
	expect(t, a.do("PUT", "/v1/docs/k", adminKey, `{"n":1}`), 201, "", `"1"`)

	cstore.failing.Store(true)
	first := a.do("PUT", "/v1/docs/k", adminKey, `{"n":2}`, "Idempotency-Key", "once")
	if first.status != 503 || first.header.Get(server.HeaderWriteApplied) == "false" {
		t.Fatalf("first attempt: %d %s %v, want 503 without %s: false (the write is in the store)", first.status, first.body, first.header, server.HeaderWriteApplied)
	}
	again := b.do("PUT", "/v1/docs/k", adminKey, `{"n":2}`, "Idempotency-Key", "once")
	if again.status != 503 {
		t.Fatalf("retry while the cache still drops invalidations: %d %s, want 503", again.status, again.body)
	}
	cstore.failing.Store(false)
	// A newer write by someone else lands before the client retries (refused, not applied,
	// until the breaker the failed calls opened lets calls through again).
	deadline := time.Now().Add(10 * time.Second)
	for {
		w := b.do("PUT", "/v1/docs/k", adminKey, `{"n":3}`)
		if w.status == 200 {
			expect(t, w, 200, "", `"3"`)
			break
		}
		if w.status != 503 || w.header.Get(server.HeaderWriteApplied) != "false" || time.Now().After(deadline) {
			t.Fatalf("newer write: %d %s", w.status, w.body)
		}
	}

	retry := b.do("PUT", "/v1/docs/k", adminKey, `{"n":2}`, "Idempotency-Key", "once")
	if retry.status != 200 || retry.header.Get("Idempotent-Replayed") != "true" || retry.header.Get("ETag") != `"2"` {
		t.Fatalf("retry after the cache is back: %d %v %s, want the replayed 200 with ETag \"2\"", retry.status, retry.header, retry.body)
	}
	for i, e := range c.envs {
		if got := e.do("GET", "/v1/docs/k", adminKey, ""); got.status != 200 || bodyN(t, got) != 3 {
			t.Fatalf("server %d reads %d %s after the retry, want n=3: the unconfirmed write was applied again", i, got.status, got.body)
		}
	}
	if r, err := cstore.SetIfNewer(context.Background(), "docs/k", cache.Entry{Value: []byte("x"), Version: 2}, time.Minute); err != nil || r != cache.Refused {
		t.Fatalf("a stale set of version 2 after the confirmation: %v %v, want refused", r, err)
	}
}

// TestPurgeIdempotency: records past their TTL (answers) or lease (claims) are deleted; the
// others stay, and a key whose record was purged runs its request again.
func TestPurgeIdempotency(t *testing.T) {
	store := openSQLite(t)
	var now atomic.Int64
	now.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	e := start(t, store, func(c *server.Config, _ *server.Listen) {
		c.Now = func() time.Time { return time.Unix(0, now.Load()) }
		c.IdempotencyTTL = time.Hour
		c.IdempotencyPurge = -1
	})
	expect(t, e.do("PUT", "/v1/docs/a", writerKey, `{"n":1}`, "Idempotency-Key", "old"), 201, "", `"1"`)
	now.Add(int64(2 * time.Hour))
	expect(t, e.do("PUT", "/v1/docs/b", writerKey, `{"n":1}`, "Idempotency-Key", "new"), 201, "", `"1"`)
	// A claim left by a request that never finished (its server died), past its lease.
	if _, err := store.Put(context.Background(), server.IdempotencyCollection, "dead-claim",
		[]byte(`{"state":"pending","fp":"x","at":0}`)); err != nil {
		t.Fatal(err)
	}
	n, err := e.srv.PurgeIdempotency(context.Background())
	if err != nil || n != 2 {
		t.Fatalf("PurgeIdempotency = %d, %v; want 2 (the old answer and the dead claim)", n, err)
	}
	if r := e.do("PUT", "/v1/docs/b", writerKey, `{"n":1}`, "Idempotency-Key", "new"); r.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("the fresh record was purged: %d %v", r.status, r.header)
	}
	if r := e.do("PUT", "/v1/docs/a", writerKey, `{"n":1}`, "Idempotency-Key", "old"); r.status != 200 || r.header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("retry of a purged key: %d %v, want the request run again (200, version 2)", r.status, r.header)
	}
	if n, err := e.srv.PurgeIdempotency(context.Background()); err != nil || n != 0 {
		t.Fatalf("second purge = %d, %v; want 0", n, err)
	}
}

// TestIdempotencyLeaseMustExceedRequestTimeout: a lease no longer than the request timeout
// would let a retry take over a key while its first request still runs.
func TestIdempotencyLeaseMustExceedRequestTimeout(t *testing.T) {
	_, err := server.New(server.Config{Store: openSQLite(t), Collections: map[string]server.Collection{"docs": {}},
		RequestTimeout: 10 * time.Second, IdempotencyLease: 10 * time.Second})
	if !errors.Is(err, server.ErrConfig) {
		t.Fatalf("New with lease = request timeout: %v, want ErrConfig", err)
	}
}
