package writebehind_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/strata-project/strata/cache"
	"github.com/strata-project/strata/cache/writebehind"
)

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		crashChild()
		return
	}
	goleak.VerifyTestMain(m)
}

// fakeTarget records applied writes; gate, when set, blocks Apply until closed; fail makes
// Apply fail while set.
type fakeTarget struct {
	mu      sync.Mutex
	rows    map[string]string
	version map[string]int64
	applies atomic.Int64
	gate    chan struct{}
	fail    atomic.Bool
}

func newTarget() *fakeTarget {
	return &fakeTarget{rows: map[string]string{}, version: map[string]int64{}}
}

func (f *fakeTarget) Apply(ctx context.Context, key string, value []byte, deleted bool, _ int64) (int64, error) {
	f.mu.Lock()
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	if f.fail.Load() {
		return 0, errors.New("fake: database down")
	}
	f.applies.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.version[key]++
	if deleted {
		delete(f.rows, key)
	} else {
		f.rows[key] = string(value)
	}
	return f.version[key], nil
}

func (f *fakeTarget) get(key string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.rows[key]
	return v, ok
}

func openLog(t *testing.T, dir string) *writebehind.Log {
	t.Helper()
	l, err := writebehind.OpenLog(writebehind.LogConfig{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func newWB(t *testing.T, cfg writebehind.Config) *writebehind.WriteBehind {
	t.Helper()
	w, err := writebehind.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

func TestConfigErrors(t *testing.T) {
	if _, err := writebehind.New(writebehind.Config{Target: newTarget()}); !errors.Is(err, cache.ErrConfig) {
		t.Fatalf("New without a queue = %v, want cache.ErrConfig", err)
	}
	l := openLog(t, t.TempDir())
	defer l.Close()
	if _, err := writebehind.New(writebehind.Config{Queue: l}); !errors.Is(err, cache.ErrConfig) {
		t.Fatalf("New without a target = %v, want cache.ErrConfig", err)
	}
}

func TestReadYourWritesAndCoalescing(t *testing.T) {
	ctx := context.Background()
	tg := newTarget()
	tg.gate = make(chan struct{})
	var applied sync.Map
	w := newWB(t, writebehind.Config{Queue: openLog(t, t.TempDir()), Target: tg,
		OnApplied: func(k string, v int64) { applied.Store(k, v) }})
	for i := range 50 {
		if err := w.Write(ctx, "k", []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Delete(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	if v, del, ok := w.Get("k"); !ok || del || string(v) != "49" {
		t.Fatalf("Get(k) = %q %v %v, want the pending 49", v, del, ok)
	}
	if _, del, ok := w.Get("gone"); !ok || !del {
		t.Fatalf("Get(gone): want a pending delete")
	}
	close(tg.gate)
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if v, _ := tg.get("k"); v != "49" {
		t.Fatalf("database holds %q, want 49", v)
	}
	if _, _, ok := w.Get("k"); ok {
		t.Fatal("applied write still in the overlay")
	}
	// 51 writes, at most a few batches: coalescing applied far fewer.
	if n := tg.applies.Load(); n > 10 {
		t.Fatalf("%d applies for 50 writes of one key and a delete: not coalesced", n)
	}
	if _, ok := applied.Load("k"); !ok {
		t.Fatal("OnApplied not called for k")
	}
}

func TestFailedApplyRetriedNotDropped(t *testing.T) {
	ctx := context.Background()
	tg := newTarget()
	tg.fail.Store(true)
	w := newWB(t, writebehind.Config{Queue: openLog(t, t.TempDir()), Target: tg, RetryInterval: time.Millisecond})
	for i := range 20 {
		if err := w.Write(ctx, fmt.Sprint("k", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	if n := w.Pending(); n != 20 {
		t.Fatalf("Pending = %d with the database down, want 20", n)
	}
	tg.fail.Store(false)
	fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := w.Flush(fctx); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if v, ok := tg.get(fmt.Sprint("k", i)); !ok || v != "v" {
			t.Fatalf("k%d = %q %v after recovery", i, v, ok)
		}
	}
}

func TestFullQueueWaitsThenErrFull(t *testing.T) {
	ctx := context.Background()
	tg := newTarget()
	tg.gate = make(chan struct{})
	w := newWB(t, writebehind.Config{Queue: openLog(t, t.TempDir()), Target: tg, MaxPending: 4, WaitTimeout: 20 * time.Millisecond})
	for i := range 4 {
		if err := w.Write(ctx, fmt.Sprint("k", i), []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Write(ctx, "k4", []byte("v")); !errors.Is(err, writebehind.ErrFull) {
		t.Fatalf("5th write into a full queue of 4 = %v, want ErrFull", err)
	}
	if _, _, ok := w.Get("k4"); ok {
		t.Fatal("refused write is visible")
	}
	// Room frees as the flusher applies: a writer that waits gets in.
	done := make(chan error, 1)
	w2done := func() { done <- w.Write(ctx, "k5", []byte("v")) }
	go w2done()
	close(tg.gate)
	if err := <-done; err != nil && !errors.Is(err, writebehind.ErrFull) {
		t.Fatal(err)
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		if _, ok := tg.get(fmt.Sprint("k", i)); !ok {
			t.Fatalf("acknowledged write k%d lost", i)
		}
	}
}

func TestReplayAfterClose(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	tg := newTarget()
	tg.fail.Store(true)
	w, err := writebehind.New(writebehind.Config{Queue: openLog(t, dir), Target: tg, RetryInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		w.Write(ctx, "k", []byte(fmt.Sprint(i)))
	}
	w.Close()
	tg.fail.Store(false)
	w2 := newWB(t, writebehind.Config{Queue: openLog(t, dir), Target: tg})
	if v, _, ok := w2.Get("k"); !ok || string(v) != "9" {
		t.Fatalf("replayed overlay Get = %q %v, want 9", v, ok)
	}
	if err := w2.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if v, _ := tg.get("k"); v != "9" {
		t.Fatalf("database holds %q after replay, want 9", v)
	}
}

func ExampleWriteBehind() {
	dir, _ := os.MkdirTemp("", "writebehind-example")
	defer os.RemoveAll(dir)
	q, _ := writebehind.OpenLog(writebehind.LogConfig{Dir: filepath.Join(dir, "queue")})
	db := newTarget()
	w, _ := writebehind.New(writebehind.Config{Queue: q, Target: db})
	defer w.Close()
	ctx := context.Background()
	w.Write(ctx, "user:1", []byte(`{"name":"ada"}`)) // durable in the log when it returns
	w.Flush(ctx)
	v, _ := db.get("user:1")
	fmt.Println(v)
	// Output: {"name":"ada"}
}
