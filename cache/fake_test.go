package cache_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/strata-project/strata/cache"
)

// fakeSource is a controllable source of truth for the pure-logic tests: a map with
// versions that grow on every write and delete, and a hook that runs inside Load after the
// value was read, so that a test can hold a load with the old value in hand.
type fakeSource struct {
	mu       sync.Mutex
	rows     map[string]row
	afterGet func(key string) // called by Load after reading, before returning; may block
	loads    atomic.Int64
}

type row struct {
	value   []byte
	version int64
	deleted bool
}

func newFakeSource() *fakeSource { return &fakeSource{rows: make(map[string]row)} }

func (s *fakeSource) Load(ctx context.Context, key string) ([]byte, int64, error) {
	s.loads.Add(1)
	s.mu.Lock()
	r, ok := s.rows[key]
	hook := s.afterGet
	s.mu.Unlock()
	if hook != nil {
		hook(key)
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	if !ok || r.deleted {
		return nil, r.version, fmt.Errorf("fake: %w", cache.ErrNotFound)
	}
	return r.value, r.version, nil
}

func (s *fakeSource) Write(_ context.Context, key string, value []byte) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.rows[key]
	r = row{value: append([]byte{}, value...), version: r.version + 1}
	s.rows[key] = r
	return r.version, nil
}

func (s *fakeSource) Delete(_ context.Context, key string) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.rows[key]
	if !ok || r.deleted {
		return 0, fmt.Errorf("fake: %w", cache.ErrNotFound)
	}
	r = row{version: r.version + 1, deleted: true}
	s.rows[key] = r
	return r.version, nil
}

func (s *fakeSource) setHook(h func(string)) {
	s.mu.Lock()
	s.afterGet = h
	s.mu.Unlock()
}

// flakyStore wraps a store and fails every call with cache.ErrUnavailable while down.
type flakyStore struct {
	cache.Store
	down atomic.Bool
	// calls counts the calls in the store (those that passed the down check, and briefly
	// the ones turned away), so that a test can wait for them to land before it changes the
	// store underneath.
	calls atomic.Int64
	// failNext fails that many calls, as a brief outage would.
	failNext atomic.Int64
}

// enter reports whether a call may go through to the store; calls.Add(-1) must follow when
// it did.
func (f *flakyStore) enter() bool {
	f.calls.Add(1)
	if f.down.Load() || f.failNext.Add(-1) >= 0 {
		f.calls.Add(-1)
		return false
	}
	return true
}

var errDown = fmt.Errorf("flaky: %w", cache.ErrUnavailable)

func (f *flakyStore) Get(ctx context.Context, k string) (cache.Entry, bool, error) {
	if !f.enter() {
		return cache.Entry{}, false, errDown
	}
	defer f.calls.Add(-1)
	return f.Store.Get(ctx, k)
}

func (f *flakyStore) SetIfNewer(ctx context.Context, k string, e cache.Entry, ttl time.Duration) (cache.SetResult, error) {
	if !f.enter() {
		return 0, errDown
	}
	defer f.calls.Add(-1)
	return f.Store.SetIfNewer(ctx, k, e, ttl)
}

func (f *flakyStore) SetIfNotOlder(ctx context.Context, k string, e cache.Entry, ttl time.Duration) (cache.SetResult, error) {
	if !f.enter() {
		return 0, errDown
	}
	defer f.calls.Add(-1)
	return f.Store.SetIfNotOlder(ctx, k, e, ttl)
}

func (f *flakyStore) Invalidate(ctx context.Context, k string, v int64, ttl time.Duration) error {
	if !f.enter() {
		return errDown
	}
	defer f.calls.Add(-1)
	return f.Store.Invalidate(ctx, k, v, ttl)
}

func (f *flakyStore) Lease(ctx context.Context, k string, ttl time.Duration) (cache.Lease, bool, error) {
	if !f.enter() {
		return nil, false, errDown
	}
	defer f.calls.Add(-1)
	return f.Store.Lease(ctx, k, ttl)
}

// naive is the seed's cache-aside, kept as a reference that the tests catch: `if cached:
// return cached` (an empty value is a miss), no versions, the loaded value set after the
// load whatever happened meanwhile, writes that delete the key.
type naive struct {
	src *fakeSource
	mu  sync.Mutex
	m   map[string][]byte
}

func newNaive(src *fakeSource) *naive { return &naive{src: src, m: make(map[string][]byte)} }

func (n *naive) Get(ctx context.Context, key string) ([]byte, error) {
	n.mu.Lock()
	cached := n.m[key]
	n.mu.Unlock()
	if len(cached) > 0 { // `if cached:`
		return cached, nil
	}
	v, _, err := n.src.Load(ctx, key)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	n.m[key] = v
	n.mu.Unlock()
	return v, nil
}

func (n *naive) Write(ctx context.Context, key string, value []byte) error {
	if _, err := n.src.Write(ctx, key, value); err != nil {
		return err
	}
	n.mu.Lock()
	delete(n.m, key)
	n.mu.Unlock()
	return nil
}
