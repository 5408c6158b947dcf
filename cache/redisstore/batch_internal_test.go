package redisstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/strata-project/strata/cache"
)

// gatedFetch is a fetch that reports each call's keys on seen and then waits for the test
// to release it with an error (nil: answer). Keys starting with "p:missing" have no value;
// the others have "v:" + key.
type gatedFetch struct {
	seen    chan []string
	release chan error
}

func newGatedFetch() *gatedFetch {
	return &gatedFetch{seen: make(chan []string, 16), release: make(chan error)}
}

func (f *gatedFetch) fetch(ctx context.Context, keys []string, vals [][]byte) error {
	f.seen <- slices.Clone(keys)
	if err := <-f.release; err != nil {
		return err
	}
	fill(keys, vals)
	return nil
}

func fill(keys []string, vals [][]byte) {
	for i, k := range keys {
		if !strings.HasPrefix(k, "p:missing") {
			vals[i] = []byte("v:" + k)
		}
	}
}

type getResult struct {
	key string
	val []byte
	err error
}

// start runs one get in a goroutine and delivers its result on out.
func start(g *getBatcher, ctx context.Context, key string, deadline time.Time, out chan<- getResult) {
	go func() {
		v, err := g.get(ctx, key, deadline)
		out <- getResult{key, v, err}
	}()
}

// waitState waits until the batcher has n queued calls and flights flights.
func waitState(t *testing.T, g *getBatcher, n, flights int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		g.mu.Lock()
		q, f := len(g.queue), g.flights
		g.mu.Unlock()
		if q == n && f == flights {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("batcher has %d queued calls and %d flights, want %d and %d", q, f, n, flights)
		}
		runtime.Gosched()
	}
}

func expectKeys(t *testing.T, f *gatedFetch, want ...string) {
	t.Helper()
	select {
	case got := <-f.seen:
		if !slices.Equal(got, want) {
			t.Fatalf("fetch of %q, want %q", got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no fetch; want one of %q", want)
	}
}

func collect(t *testing.T, out <-chan getResult, n int) map[string]getResult {
	t.Helper()
	got := make(map[string]getResult)
	for range n {
		select {
		case r := <-out:
			got[r.key] = r
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of %d gets returned", len(got), n)
		}
	}
	return got
}

var far = time.Now().Add(time.Hour)

// queued is a get to queue behind a held fetch.
type queued struct {
	ctx      context.Context
	key      string
	deadline time.Time
}

// queueBehindA starts a get of "a" that leads a fetch the test holds (g has one flight),
// then the gets of calls, each queued behind it in order.
func queueBehindA(t *testing.T, g *getBatcher, f *gatedFetch, out chan<- getResult, calls ...queued) {
	t.Helper()
	start(g, context.Background(), "a", far, out)
	expectKeys(t, f, "p:a")
	for i, c := range calls {
		start(g, c.ctx, c.key, c.deadline, out)
		waitState(t, g, i+1, 1)
	}
}

// TestBatchGathersQueuedCalls: while one MGET is under way, later Gets queue; the first of
// them leads the next MGET with up to maxBatch keys, oldest first, and the rest follow.
func TestBatchGathersQueuedCalls(t *testing.T) {
	f := newGatedFetch()
	g := newGetBatcher(f.fetch, "p:", 4, 1, &sharedDeadline{}, time.Minute)
	ctx := context.Background()
	out := make(chan getResult, 8)
	queueBehindA(t, g, f, out, queued{ctx, "b", far}, queued{ctx, "c", far},
		queued{ctx, "missing-d", far}, queued{ctx, "e", far}, queued{ctx, "f", far})
	f.release <- nil
	expectKeys(t, f, "p:b", "p:c", "p:missing-d", "p:e")
	f.release <- nil
	expectKeys(t, f, "p:f")
	f.release <- nil
	got := collect(t, out, 6)
	for _, k := range []string{"a", "b", "c", "missing-d", "e", "f"} {
		r := got[k]
		want := "v:p:" + k
		if k == "missing-d" {
			want = ""
		}
		if r.err != nil || string(r.val) != want || (want == "") != (r.val == nil) {
			t.Errorf("get(%q) = %q, %v; want %q", k, r.val, r.err, want)
		}
	}
	waitState(t, g, 0, 0)
}

// TestBatchCallerLeavesQueue: a queued caller whose context ends returns at once and its key
// is not sent; the others are served.
func TestBatchCallerLeavesQueue(t *testing.T) {
	f := newGatedFetch()
	g := newGetBatcher(f.fetch, "p:", 8, 1, &sharedDeadline{}, time.Minute)
	out := make(chan getResult, 4)
	ctx, cancel := context.WithCancel(context.Background())
	queueBehindA(t, g, f, out, queued{ctx, "b", far}, queued{context.Background(), "c", far})
	cancel()
	b := collect(t, out, 1)["b"]
	if !errors.Is(b.err, context.Canceled) || !errors.Is(b.err, cache.ErrUnavailable) {
		t.Fatalf("cancelled get = %q, %v; want context.Canceled wrapping cache.ErrUnavailable", b.val, b.err)
	}
	waitState(t, g, 1, 1)
	f.release <- nil
	expectKeys(t, f, "p:c")
	f.release <- nil
	got := collect(t, out, 2)
	if r := got["c"]; r.err != nil || string(r.val) != "v:p:c" {
		t.Fatalf("get(c) = %q, %v", r.val, r.err)
	}
	waitState(t, g, 0, 0)
}

// TestBatchLeadPassedOnByLeaver: a caller handed the lead whose context has ended passes it
// on: the queue behind it is still sent.
func TestBatchLeadPassedOnByLeaver(t *testing.T) {
	f := newGatedFetch()
	g := newGetBatcher(f.fetch, "p:", 8, 1, &sharedDeadline{}, time.Minute)
	g.mu.Lock()
	g.flights = 1 // the flight handed to c below
	g.mu.Unlock()
	out := make(chan getResult, 1)
	start(g, context.Background(), "d", far, out)
	waitState(t, g, 1, 1)
	c := &getCall{key: "x", deadline: far, lead: true, done: make(chan struct{}, 1)}
	g.leave(c)
	expectKeys(t, f, "p:x", "p:d")
	f.release <- nil
	if r := collect(t, out, 1)["d"]; r.err != nil || string(r.val) != "v:p:d" {
		t.Fatalf("get(d) = %q, %v", r.val, r.err)
	}
	waitState(t, g, 0, 0)
}

// TestBatchDeadlinePassed: a call whose deadline passed before its batch was sent gets an
// error without being sent; a lone call past its deadline is not sent either.
func TestBatchDeadlinePassed(t *testing.T) {
	f := newGatedFetch()
	g := newGetBatcher(f.fetch, "p:", 8, 1, &sharedDeadline{}, time.Minute)
	ctx := context.Background()
	past := time.Now().Add(-time.Second)
	if _, err := g.get(ctx, "lone", past); !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, cache.ErrUnavailable) {
		t.Fatalf("get past its deadline = %v; want context.DeadlineExceeded wrapping cache.ErrUnavailable", err)
	}
	out := make(chan getResult, 3)
	queueBehindA(t, g, f, out, queued{ctx, "late", past}, queued{ctx, "c", far})
	f.release <- nil
	expectKeys(t, f, "p:c")
	f.release <- nil
	got := collect(t, out, 3)
	if r := got["late"]; !errors.Is(r.err, context.DeadlineExceeded) {
		t.Errorf("get(late) = %q, %v; want context.DeadlineExceeded", r.val, r.err)
	}
	for _, k := range []string{"a", "c"} {
		if r := got[k]; r.err != nil || string(r.val) != "v:p:"+k {
			t.Errorf("get(%s) = %q, %v", k, r.val, r.err)
		}
	}
	select {
	case keys := <-f.seen:
		t.Fatalf("unexpected fetch of %q", keys)
	default:
	}
}

// TestBatchFetchErrorReachesEveryCall: an MGET that fails fails each call of its batch.
func TestBatchFetchErrorReachesEveryCall(t *testing.T) {
	f := newGatedFetch()
	g := newGetBatcher(f.fetch, "p:", 8, 1, &sharedDeadline{}, time.Minute)
	ctx := context.Background()
	out := make(chan getResult, 3)
	queueBehindA(t, g, f, out, queued{ctx, "b", far}, queued{ctx, "c", far})
	f.release <- nil
	expectKeys(t, f, "p:b", "p:c")
	boom := errors.New("boom")
	f.release <- boom
	got := collect(t, out, 3)
	if r := got["a"]; r.err != nil {
		t.Errorf("get(a) = %v", r.err)
	}
	for _, k := range []string{"b", "c"} {
		if r := got[k]; !errors.Is(r.err, boom) || r.val != nil {
			t.Errorf("get(%s) = %q, %v; want the fetch's error", k, r.val, r.err)
		}
	}
}

// TestBatchConcurrent: many callers, some giving up at random, against a fetch that checks
// the batcher's bounds: every answer is the right one, no more than maxFlights fetches run
// at once, no batch is larger than maxBatch, and every caller returns.
func TestBatchConcurrent(t *testing.T) {
	const maxBatch, flights = 5, 2
	var inFlight, most atomic.Int32
	var fetches, keysSent atomic.Int64
	fetch := func(ctx context.Context, keys []string, vals [][]byte) error {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		if len(keys) > maxBatch {
			return fmt.Errorf("batch of %d keys", len(keys))
		}
		if _, ok := ctx.Deadline(); !ok {
			return errors.New("fetch without a deadline")
		}
		fetches.Add(1)
		keysSent.Add(int64(len(keys)))
		runtime.Gosched()
		fill(keys, vals)
		return nil
	}
	g := newGetBatcher(fetch, "p:", maxBatch, flights, &sharedDeadline{}, time.Minute)
	var wg sync.WaitGroup
	var answered atomic.Int64
	for w := range 32 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for range 300 {
				key := fmt.Sprint("k", rng.IntN(50))
				ctx, cancel := context.WithCancel(context.Background())
				if rng.IntN(10) == 0 {
					cancel()
				}
				v, err := g.get(ctx, key, time.Now().Add(time.Minute))
				cancel()
				if err != nil {
					if !errors.Is(err, context.Canceled) {
						t.Errorf("get(%s): %v", key, err)
					}
					continue
				}
				if string(v) != "v:p:"+key {
					t.Errorf("get(%s) = %q", key, v)
				}
				answered.Add(1)
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("callers still waiting after 60s")
	}
	waitState(t, g, 0, 0)
	if m := most.Load(); m > flights {
		t.Errorf("%d fetches ran at once, want at most %d", m, flights)
	}
	if answered.Load() == 0 || keysSent.Load() < answered.Load() {
		t.Errorf("%d answers from %d keys sent in %d fetches", answered.Load(), keysSent.Load(), fetches.Load())
	}
	t.Logf("%d answers, %d fetches", answered.Load(), fetches.Load())
}

// TestBatchFetchDeadline: a batch's fetch ends by the earliest deadline in it: a deadline
// sooner than the store's timeout is the fetch's own; a later one (a caller's longer
// context) is cut to the timeout, through the context shared by calls of the same instant.
func TestBatchFetchDeadline(t *testing.T) {
	var got time.Time
	fetch := func(ctx context.Context, keys []string, vals [][]byte) error {
		got, _ = ctx.Deadline()
		fill(keys, vals)
		return nil
	}
	g := newGetBatcher(fetch, "p:", 8, 1, &sharedDeadline{}, time.Minute)
	ctx := context.Background()
	soon := time.Now().Add(10 * time.Second)
	if v, err := g.get(ctx, "a", soon); err != nil || string(v) != "v:p:a" {
		t.Fatalf("get(a) = %q, %v", v, err)
	}
	if !got.Equal(soon) {
		t.Errorf("fetch deadline %v, want the call's %v", got, soon)
	}
	if v, err := g.get(ctx, "b", far); err != nil || string(v) != "v:p:b" {
		t.Fatalf("get(b) = %q, %v", v, err)
	}
	if got.IsZero() || got.After(time.Now().Add(time.Minute)) {
		t.Errorf("fetch deadline %v, want at most the timeout (1m) from now", got)
	}
}
