package memstore_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/strata-project/strata/cache"
	"github.com/strata-project/strata/cache/cachetest"
	"github.com/strata-project/strata/cache/memstore"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newStore(t *testing.T) cache.Store {
	s, err := memstore.New(memstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) { cachetest.Run(t, newStore) }

func TestNegativeMaxBytesRefused(t *testing.T) {
	if _, err := memstore.New(memstore.Config{MaxBytes: -1}); err == nil {
		t.Fatal("New accepted MaxBytes -1")
	}
}

func TestCapacityInBytesEvicts(t *testing.T) {
	evicted := make(chan string, 1024)
	s, err := memstore.New(memstore.Config{MaxBytes: 64 << 10, OnEvict: func(k string) {
		select {
		case evicted <- k:
		default:
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	value := make([]byte, 1024)
	for i := range 1000 { // about 1 MB into a 64 KiB store
		if _, err := s.SetIfNewer(ctx, fmt.Sprint("k", i), cache.Entry{Value: value, Version: 1}, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	// Eviction runs in otter's maintenance; wait for it to bring the size under capacity.
	deadline := time.Now().Add(10 * time.Second)
	for s.Stats().Bytes > 64<<10 {
		if time.Now().After(deadline) {
			t.Fatalf("weighted size %d still above 64 KiB", s.Stats().Bytes)
		}
		time.Sleep(10 * time.Millisecond) // polling
	}
	if st := s.Stats(); st.Evictions == 0 {
		t.Fatalf("stats %+v: want evictions counted", st)
	}
	<-evicted
}

func TestClosed(t *testing.T) {
	s := newStore(t)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.SetIfNewer(context.Background(), "k", cache.Entry{Version: 1}, 0); err == nil {
		t.Fatal("SetIfNewer after Close succeeded")
	}
}

func Example() {
	s, _ := memstore.New(memstore.Config{MaxBytes: 1 << 20})
	defer s.Close()
	ctx := context.Background()
	s.SetIfNewer(ctx, "user:1", cache.Entry{Value: []byte(`{"name":"ada"}`), Version: 1}, time.Minute)
	// A writer moved the row to version 2 and invalidated the key.
	s.Invalidate(ctx, "user:1", 2, time.Minute)
	// A slow reader that loaded version 1 cannot write it back.
	r, _ := s.SetIfNewer(ctx, "user:1", cache.Entry{Value: []byte(`{"name":"ada"}`), Version: 1}, time.Minute)
	fmt.Println(r == cache.Refused)
	_, ok, _ := s.Get(ctx, "user:1")
	fmt.Println(ok)
	// Output:
	// true
	// false
}

// TestPeekAgreesWithGet: Peek answers as Get does for a value, an empty value, a negative
// entry, a tombstone, a miss and an expired entry.
func TestPeekAgreesWithGet(t *testing.T) {
	ctx := context.Background()
	s, err := memstore.New(memstore.Config{ClockResolution: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	set := func(key string, e cache.Entry, ttl time.Duration) {
		t.Helper()
		if _, err := s.SetIfNewer(ctx, key, e, ttl); err != nil {
			t.Fatal(err)
		}
	}
	set("value", cache.Entry{Value: []byte("v"), Version: 1}, time.Hour)
	set("empty", cache.Entry{Value: []byte{}, Version: 1}, time.Hour)
	set("negative", cache.Entry{Negative: true, Version: 2}, time.Hour)
	set("expiring", cache.Entry{Value: []byte("e"), Version: 1}, time.Millisecond)
	if err := s.Invalidate(ctx, "tombstone", 3, time.Hour); err != nil {
		t.Fatal(err)
	}
	for {
		if _, ok, _ := s.Get(ctx, "expiring"); !ok {
			break
		}
		time.Sleep(time.Millisecond) // polling for the expiry
	}
	for _, key := range []string{"value", "empty", "negative", "tombstone", "absent", "expiring"} {
		e, ok, err := s.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		v, negative, pok := s.Peek(key)
		if pok != ok || negative != e.Negative || string(v) != string(e.Value) || (v == nil) != (e.Value == nil) {
			t.Errorf("%s: Peek = %q, negative %v, ok %v; Get = %q, negative %v, ok %v", key, v, negative, pok, e.Value, e.Negative, ok)
		}
		if key == "value" && !pok {
			t.Errorf("Peek missed a live entry")
		}
	}
}
