package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/strata-project/strata/breaker"
	"github.com/strata-project/strata/cache"
	"github.com/strata-project/strata/cache/docsource"
	"github.com/strata-project/strata/cache/memcachestore"
	"github.com/strata-project/strata/cache/memstore"
	"github.com/strata-project/strata/cache/redisstore"
	"github.com/strata-project/strata/cache/writebehind"
	"github.com/strata-project/strata/cache/writebehind/redisqueue"
	"github.com/strata-project/strata/docstore"
	"github.com/strata-project/strata/engines"
	"github.com/strata-project/strata/internal/testenv"
	"github.com/strata-project/strata/server"
)

// cacheKind opens cache stores of one kind: open returns a new client (one per app server)
// of the same cache tier.
type cacheKind struct {
	name   string
	shared bool
	open   func(t *testing.T) func(t *testing.T) cache.Store
}

func memoryKind(t *testing.T) func(t *testing.T) cache.Store {
	s, err := memstore.New(memstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return func(*testing.T) cache.Store { return s }
}

func redisClient(t *testing.T, addrs ...string) cache.Store {
	t.Helper()
	s, err := redisstore.New(redisstore.Config{Addrs: addrs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func memcachedClient(t *testing.T, addr string) cache.Store {
	t.Helper()
	s, err := memcachestore.New(memcachestore.Config{Addrs: []string{addr}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

var cacheKinds = []cacheKind{
	{"memory", false, memoryKind},
	{"redis", true, func(t *testing.T) func(t *testing.T) cache.Store {
		r := testenv.SharedRedis(t)
		return func(t *testing.T) cache.Store { return redisClient(t, r.Addr()) }
	}},
	{"redis-cluster", true, func(t *testing.T) func(t *testing.T) cache.Store {
		c := testenv.SharedRedisCluster(t)
		return func(t *testing.T) cache.Store { return redisClient(t, c.Addrs()...) }
	}},
	{"memcached", true, func(t *testing.T) func(t *testing.T) cache.Store {
		m := testenv.SharedMemcached(t)
		return func(t *testing.T) cache.Store { return memcachedClient(t, m.Addr()) }
	}},
}

// cachedOpts are the knobs of a test's access path.
type cachedOpts struct {
	strategy    string
	consistency server.Consistency
	shared      bool
	breaker     *breaker.Breaker
	wb          func(t *testing.T, store docstore.Store, onApplied func(string, int64)) *writebehind.WriteBehind
}

// newCached builds the access path of collection docs over store and cstore.
func newCached(t *testing.T, store docstore.Store, cstore cache.Store, o cachedOpts) *server.Cached {
	t.Helper()
	br := o.breaker
	if br == nil {
		var err error
		br, err = breaker.New(breaker.Config{Name: "cache", ConsecutiveFailures: 3, OpenDuration: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
	}
	cfg := server.CachedConfig{
		Collection: "docs", Store: store, Strategy: o.strategy, Consistency: o.consistency, Shared: o.shared,
		Cache: cache.Config{Store: cstore, Breaker: br, TTL: time.Minute, NegativeTTL: time.Minute, LeaseWait: 200 * time.Millisecond},
	}
	var acc *server.Cached
	if o.wb != nil {
		cfg.WriteBehind = o.wb(t, store, func(id string, v int64) { acc.Applied(id, v) })
	}
	acc, err := server.NewCached(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { acc.Close() })
	return acc
}

// startWith runs a server whose collection docs uses acc.
func startWith(t *testing.T, store docstore.Store, acc server.Access, strategy string, cons server.Consistency) *env {
	t.Helper()
	return start(t, store, func(c *server.Config, _ *server.Listen) {
		c.Collections = map[string]server.Collection{"docs": {Access: acc, Strategy: strategy, Consistency: cons}}
	})
}

// expect checks a response's status and, when not "", its X-Cache and ETag.
func expect(t *testing.T, r resp, status int, xcache, etag string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	if xcache != "" && r.header.Get("X-Cache") != xcache {
		t.Fatalf("X-Cache %q, want %q", r.header.Get("X-Cache"), xcache)
	}
	if etag != "" && r.header.Get("ETag") != etag {
		t.Fatalf("ETag %q, want %q", r.header.Get("ETag"), etag)
	}
}

func bodyN(t *testing.T, r resp) float64 {
	t.Helper()
	n, ok := r.json(t)["n"].(float64)
	if !ok {
		t.Fatalf("body %s has no n", r.body)
	}
	return n
}

// TestCachedStrategiesAPI runs the document API through every read/write-through strategy,
// on SQLite and PostgreSQL, over every cache store: CRUD, ETag/If-Match, a hit after a miss,
// invalidation after a write, a negative entry cleared by a later write.
func TestCachedStrategiesAPI(t *testing.T) {
	for _, st := range stores {
		t.Run(st.name, func(t *testing.T) {
			for _, ck := range cacheKinds {
				t.Run(ck.name, func(t *testing.T) {
					open := ck.open(t)
					for _, strategy := range []string{server.StrategyCacheAside, server.StrategyReadThrough, server.StrategyWriteThrough} {
						t.Run(strategy, func(t *testing.T) {
							store := st.open(t)
							acc := newCached(t, store, open(t), cachedOpts{strategy: strategy, shared: ck.shared})
							e := startWith(t, store, acc, strategy, server.Strong)
							testCachedCRUD(t, e, strategy)
						})
					}
				})
			}
		})
	}
}

func testCachedCRUD(t *testing.T, e *env, strategy string) {
	id := "/v1/docs/" + strategy // distinct per subtest on a shared cache
	// Negative caching: a miss, then a cached not-found.
	expect(t, e.do("GET", id, adminKey, ""), 404, "miss", "")
	expect(t, e.do("GET", id, adminKey, ""), 404, "hit", "")
	// A write clears the negative entry.
	expect(t, e.do("PUT", id, adminKey, `{"n":1}`), 201, "", `"1"`)
	first := e.do("GET", id, adminKey, "")
	if strategy == server.StrategyWriteThrough {
		expect(t, first, 200, "hit", `"1"`)
	} else {
		expect(t, first, 200, "miss", `"1"`)
	}
	if bodyN(t, first) != 1 {
		t.Fatalf("body %s, want n=1", first.body)
	}
	hit := e.do("GET", id, adminKey, "")
	expect(t, hit, 200, "hit", `"1"`)
	if a, err := strconv.Atoi(hit.header.Get("Age")); hit.header.Get("Age") != "" && (err != nil || a < 0 || a > 60) {
		t.Fatalf("Age %q", hit.header.Get("Age"))
	}
	if hit.header.Get("Last-Modified") == "" {
		t.Fatal("a cached read lost the update time")
	}
	// Conditional writes keep their meaning.
	expect(t, e.do("PUT", id, adminKey, `{"n":2}`, "If-Match", `"1"`), 200, "", `"2"`)
	e.do("PUT", id, adminKey, `{"n":9}`, "If-Match", `"1"`).problem(t, 412, server.ProblemPreconditionFailed)
	e.do("PUT", id, adminKey, `{"n":9}`, "If-None-Match", "*").problem(t, 412, server.ProblemPreconditionFailed)
	// The write invalidated (or replaced) the cached version.
	r := e.do("GET", id, adminKey, "")
	expect(t, r, 200, "", `"2"`)
	if bodyN(t, r) != 2 {
		t.Fatalf("after a write, read %s", r.body)
	}
	expect(t, e.do("GET", id, adminKey, "", "If-None-Match", `"2"`), 304, "hit", `"2"`)
	// PATCH reads, merges and writes conditionally.
	expect(t, e.do("PATCH", id, adminKey, `{"m":3}`, "Content-Type", "application/merge-patch+json"), 200, "", `"3"`)
	r = e.do("GET", id, adminKey, "")
	if m := r.json(t); m["m"] != float64(3) || m["n"] != float64(2) {
		t.Fatalf("after PATCH, read %s", r.body)
	}
	// Deletes go through the strategy: the tombstone's version is the ETag, reads see 404.
	e.do("DELETE", id, adminKey, "", "If-Match", `"2"`).problem(t, 412, server.ProblemPreconditionFailed)
	expect(t, e.do("DELETE", id, adminKey, "", "If-Match", `"3"`), 204, "", `"4"`)
	expect(t, e.do("GET", id, adminKey, ""), 404, "", "")
	// Re-create: version 5, seen at once.
	expect(t, e.do("PUT", id, adminKey, `{"n":5}`, "If-None-Match", "*"), 201, "", `"5"`)
	expect(t, e.do("GET", id, adminKey, ""), 200, "", `"5"`)
	// Lists and batchGet read the store.
	l := e.do("GET", "/v1/docs", adminKey, "")
	expect(t, l, 200, "bypass", "")
	b := e.do("POST", "/v1/docs:batchGet", adminKey, `{"ids":["`+id[len("/v1/docs/"):]+`","none"]}`)
	expect(t, b, 200, "bypass", "")
	if items := b.json(t)["items"].([]any); len(items) != 1 {
		t.Fatalf("batchGet %s", b.body)
	}
}

// TestCacheMetrics checks the cache-result metric counts hits and misses.
func TestCacheMetrics(t *testing.T) {
	store := openSQLite(t)
	acc := newCached(t, store, memoryKind(t)(t), cachedOpts{strategy: server.StrategyCacheAside})
	e := startWith(t, store, acc, server.StrategyCacheAside, server.Strong)
	e.do("PUT", "/v1/docs/m", adminKey, `{"n":1}`)
	for range 3 {
		e.do("GET", "/v1/docs/m", adminKey, "")
	}
	m := e.doURL("GET", e.admin+"/metrics", adminKey, "")
	for _, want := range []string{
		`strata_cache_reads_total{collection="docs",result="miss"} 1`,
		`strata_cache_reads_total{collection="docs",result="hit"} 2`,
		`strata_writebehind_depth{collection="docs"} 0`,
	} {
		if !strings.Contains(string(m.body), want) {
			t.Fatalf("metrics lack %s", want)
		}
	}
}

// logWB builds a write-behind buffer on a local log.
func logWB(t *testing.T, store docstore.Store, onApplied func(string, int64)) *writebehind.WriteBehind {
	q, err := writebehind.OpenLog(writebehind.LogConfig{Dir: filepath.Join(t.TempDir(), "wb")})
	if err != nil {
		t.Fatal(err)
	}
	wb, err := writebehind.New(writebehind.Config{Queue: q, Target: docsource.New(store, "docs"), OnApplied: onApplied})
	if err != nil {
		t.Fatal(err)
	}
	return wb
}

// TestWriteBehindAPI: acknowledged after the durable append (202, no version yet), reads
// see pending writes, conditional writes are refused with 400, Flush applies everything.
func TestWriteBehindAPI(t *testing.T) {
	queues := []struct {
		name string
		wb   func(t *testing.T) func(*testing.T, docstore.Store, func(string, int64)) *writebehind.WriteBehind
	}{
		{"log", func(*testing.T) func(*testing.T, docstore.Store, func(string, int64)) *writebehind.WriteBehind {
			return logWB
		}},
		{"redis-stream", func(t *testing.T) func(*testing.T, docstore.Store, func(string, int64)) *writebehind.WriteBehind {
			r := testenv.SharedRedis(t)
			return func(t *testing.T, store docstore.Store, onApplied func(string, int64)) *writebehind.WriteBehind {
				rs := redisClient(t, r.Addr()).(*redisstore.Store)
				q, err := redisqueue.New(context.Background(), redisqueue.Config{Client: rs.Client(), Stream: "wb:" + t.Name()})
				if err != nil {
					t.Fatal(err)
				}
				wb, err := writebehind.New(writebehind.Config{Queue: q, Target: docsource.New(store, "docs"), OnApplied: onApplied})
				if err != nil {
					t.Fatal(err)
				}
				return wb
			}
		}},
	}
	for _, st := range stores {
		for _, q := range queues {
			t.Run(st.name+"/"+q.name, func(t *testing.T) {
				store := st.open(t)
				acc := newCached(t, store, memoryKind(t)(t), cachedOpts{strategy: server.StrategyWriteBehind, consistency: server.Eventual, wb: q.wb(t)})
				e := startWith(t, store, acc, server.StrategyWriteBehind, server.Eventual)
				r := e.do("PUT", "/v1/docs/w", adminKey, `{"n":1}`)
				expect(t, r, 202, "", "")
				if r.header.Get("ETag") != "" {
					t.Fatalf("a write not yet applied has ETag %q", r.header.Get("ETag"))
				}
				if r = e.do("GET", "/v1/docs/w", adminKey, ""); r.status != 200 || bodyN(t, r) != 1 {
					t.Fatalf("read of a pending or applied write: %d %s", r.status, r.body)
				}
				e.do("PUT", "/v1/docs/w", adminKey, `{"n":2}`, "If-Match", `"1"`).problem(t, 400, server.ProblemConditionalUnsupported)
				e.do("PUT", "/v1/docs/w", adminKey, `{"n":2}`, "If-None-Match", `*`).problem(t, 400, server.ProblemConditionalUnsupported)
				e.do("PATCH", "/v1/docs/w", adminKey, `{"n":2}`).problem(t, 400, server.ProblemConditionalUnsupported)
				e.do("DELETE", "/v1/docs/w", adminKey, "", "If-Match", `"1"`).problem(t, 400, server.ProblemConditionalUnsupported)
				for i := 2; i <= 20; i++ {
					expect(t, e.do("PUT", "/v1/docs/w", adminKey, fmt.Sprintf(`{"n":%d}`, i)), 202, "", "")
				}
				if r = e.do("GET", "/v1/docs/w", adminKey, ""); bodyN(t, r) != 20 {
					t.Fatalf("read your writes: %s", r.body)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := e.srv.Flush(ctx); err != nil {
					t.Fatal(err)
				}
				if acc.Pending() != 0 {
					t.Fatalf("%d pending after Flush", acc.Pending())
				}
				d, err := store.Get(ctx, "docs", "w")
				if err != nil || string(d.Body) != `{"n": 20}` && string(d.Body) != `{"n":20}` {
					t.Fatalf("store after Flush: %s %v", d.Body, err)
				}
				r = e.do("GET", "/v1/docs/w", adminKey, "")
				if r.status != 200 || r.header.Get("ETag") != `"`+strconv.FormatInt(d.Version, 10)+`"` || bodyN(t, r) != 20 {
					t.Fatalf("read after Flush: %d %v %s (store version %d)", r.status, r.header.Get("ETag"), r.body, d.Version)
				}
				expect(t, e.do("DELETE", "/v1/docs/w", adminKey, ""), 202, "", "")
				expect(t, e.do("GET", "/v1/docs/w", adminKey, ""), 404, "", "")
				// Shutdown flushes.
				expect(t, e.do("PUT", "/v1/docs/x", adminKey, `{"n":7}`), 202, "", "")
				if err := e.srv.Shutdown(ctx); err != nil {
					t.Fatal(err)
				}
				if d, err := store.Get(ctx, "docs", "x"); err != nil || d.Version != 1 {
					t.Fatalf("after Shutdown: %v %v", d, err)
				}
				if _, err := store.Get(ctx, "docs", "w"); err == nil {
					t.Fatal("the pending delete was not applied")
				}
			})
		}
	}
}

// TestCachedRefusesPromisesItCannotKeep: write-behind is eventual only.
func TestCachedRefusesPromisesItCannotKeep(t *testing.T) {
	store := openSQLite(t)
	for _, cons := range []server.Consistency{server.Strong, server.Session} {
		wb := logWB(t, store, nil)
		_, err := server.NewCached(server.CachedConfig{Collection: "docs", Store: store, Strategy: server.StrategyWriteBehind,
			Consistency: cons, WriteBehind: wb, Cache: cache.Config{Store: memoryKind(t)(t)}})
		wb.Close()
		if err == nil {
			t.Fatalf("write-behind with %s consistency accepted", cons)
		}
	}
	if _, err := server.NewCached(server.CachedConfig{Collection: "docs", Store: store, Strategy: server.StrategyWriteBehind,
		Consistency: server.Eventual, Cache: cache.Config{Store: memoryKind(t)(t)}}); err == nil {
		t.Fatal("write-behind without a durable buffer accepted")
	}
	if _, err := server.NewCached(server.CachedConfig{Collection: "docs", Store: store, Strategy: "lru",
		Cache: cache.Config{Store: memoryKind(t)(t)}}); err == nil {
		t.Fatal("unknown strategy accepted")
	}
}

// cluster is several app servers over one docstore and one shared cache tier.
type cluster struct{ envs []*env }

func newCluster(t *testing.T, n int, store docstore.Store, open func(t *testing.T) cache.Store, o cachedOpts) cluster {
	var c cluster
	for range n {
		acc := newCached(t, store, open(t), o)
		c.envs = append(c.envs, startWith(t, store, acc, o.strategy, cmpCons(o.consistency)))
	}
	return c
}

func cmpCons(c server.Consistency) server.Consistency {
	if c == "" {
		return server.Strong
	}
	return c
}

// TestNoStaleReadAcrossServers: three app servers share a Redis and a docstore; after a
// write through any of them, no server serves the old version from the cache.
func TestNoStaleReadAcrossServers(t *testing.T) {
	for _, strategy := range []string{server.StrategyCacheAside, server.StrategyWriteThrough} {
		t.Run(strategy, func(t *testing.T) {
			r := testenv.SharedRedis(t)
			store := openSQLite(t)
			c := newCluster(t, 3, store, func(t *testing.T) cache.Store { return redisClient(t, r.Addr()) },
				cachedOpts{strategy: strategy, shared: true})
			for i := 1; i <= 12; i++ {
				w := c.envs[i%3]
				expect(t, w.do("PUT", "/v1/docs/k", adminKey, fmt.Sprintf(`{"n":%d}`, i)), map[bool]int{true: 201, false: 200}[i == 1], "", "")
				for j, e := range c.envs {
					for range 2 { // the second read is a hit: the cache holds the new version
						got := e.do("GET", "/v1/docs/k", adminKey, "")
						if got.status != 200 || bodyN(t, got) != float64(i) {
							t.Fatalf("write %d through server %d; server %d read %d %s (X-Cache %s)", i, i%3, j, got.status, got.body, got.header.Get("X-Cache"))
						}
					}
				}
			}
			hit := c.envs[0].do("GET", "/v1/docs/k", adminKey, "")
			expect(t, hit, 200, "hit", `"12"`)
		})
	}
}

// TestCacheKilledUnderLoad: the cache tier dies under load. Strong reads never fail (they
// bypass the cache), writes get 503 with Retry-After while it is down, and everything is
// back to normal after it restarts.
func TestCacheKilledUnderLoad(t *testing.T) {
	r := testenv.Redis(t, engines.RedisOptions{})
	store := openSQLite(t)
	c := newCluster(t, 2, store, func(t *testing.T) cache.Store { return redisClient(t, r.Addr()) },
		cachedOpts{strategy: server.StrategyCacheAside, shared: true})
	for i := range 4 {
		expect(t, c.envs[0].do("PUT", fmt.Sprintf("/v1/docs/k%d", i), adminKey, `{"n":1}`), 201, "", "")
	}
	load := startReaders(t, c, 4)
	load.wait(50)
	if err := r.Kill(); err != nil {
		t.Fatal(err)
	}
	refused := 0
	for i := range 6 {
		w := c.envs[i%2].do("PUT", "/v1/docs/k0", adminKey, `{"n":2}`)
		if w.status != 503 {
			continue // a write that raced the kill may have been delivered
		}
		w.problem(t, 503, server.ProblemUnavailable)
		if w.header.Get("Retry-After") == "" {
			t.Fatal("503 without Retry-After")
		}
		refused++
	}
	if refused < 4 {
		t.Fatalf("only %d of 6 writes refused while the cache is down", refused)
	}
	if n := load.wait(200); n < 200 { // reads go on while the cache is down
		t.Fatalf("the readers stopped after %d reads", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	// Back to normal: writes succeed once the breakers probe the cache again.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for ok := false; !ok; {
		ok = c.envs[0].do("PUT", "/v1/docs/k1", adminKey, `{"n":3}`).status == 200 &&
			c.envs[1].do("PUT", "/v1/docs/k2", adminKey, `{"n":3}`).status == 200
		if !ok {
			select {
			case <-tick.C:
			case <-ctx.Done():
				t.Fatal("writes did not recover after the cache restarted")
			}
		}
	}
	failed := load.stop()
	if failed != 0 {
		t.Fatalf("%d reads failed while the cache was down (%s)", failed, load.firstErr)
	}
	// A key written after the recovery is cached again. (Keys whose invalidation was queued
	// during the outage bypass the cache in that server until the queue is retried.)
	expect(t, c.envs[0].do("PUT", "/v1/docs/after", adminKey, `{"n":3}`), 201, "", "")
	for _, e := range c.envs {
		e.do("GET", "/v1/docs/after", adminKey, "")
		got := e.do("GET", "/v1/docs/after", adminKey, "")
		expect(t, got, 200, "hit", "")
		if bodyN(t, got) != 3 {
			t.Fatalf("after recovery read %s", got.body)
		}
	}
}

// readers is a bounded read load over a cluster.
type readers struct {
	stopc    chan struct{}
	done     chan struct{}
	reads    chan int
	failed   int
	firstErr string
}

func startReaders(t *testing.T, c cluster, n int) *readers {
	l := &readers{stopc: make(chan struct{}), done: make(chan struct{}), reads: make(chan int, 1<<16)}
	type result struct {
		failed int
		err    string
	}
	results := make(chan result, n)
	for g := range n {
		go func() {
			var res result
			defer func() { results <- res }()
			client := &http.Client{Timeout: 20 * time.Second}
			for i := 0; i < 100_000; i++ {
				select {
				case <-l.stopc:
					return
				default:
				}
				e := c.envs[(g+i)%len(c.envs)]
				req, _ := http.NewRequest("GET", fmt.Sprintf("%s/v1/docs/k%d", e.base, i%4), nil)
				req.Header.Set("Authorization", "Bearer "+adminKey)
				res0, err := client.Do(req)
				if err == nil {
					res0.Body.Close()
					if res0.StatusCode != 200 {
						err = fmt.Errorf("status %d", res0.StatusCode)
					}
				}
				if err != nil {
					res.failed++
					if res.err == "" {
						res.err = err.Error()
					}
				}
				select {
				case l.reads <- 1:
				default:
				}
			}
		}()
	}
	go func() {
		for range n {
			r := <-results
			l.failed += r.failed
			if l.firstErr == "" {
				l.firstErr = r.err
			}
		}
		close(l.done)
	}()
	t.Cleanup(func() { l.stop() })
	return l
}

// wait blocks until n more reads completed (or the readers ended) and returns how many did.
func (l *readers) wait(n int) int {
	got := 0
	for got < n {
		select {
		case <-l.reads:
			got++
		case <-l.done:
			return got
		}
	}
	return got
}

func (l *readers) stop() int {
	select {
	case <-l.stopc:
	default:
		close(l.stopc)
	}
	<-l.done
	return l.failed
}

// writeDoc decodes {"n": N} bodies.
func decodeN(b []byte) (int, bool) {
	var m struct {
		N *int `json:"n"`
	}
	if json.Unmarshal(b, &m) != nil || m.N == nil {
		return 0, false
	}
	return *m.N, true
}
