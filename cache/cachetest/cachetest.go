// Package cachetest is the conformance suite of the cache.Store contract. Every store —
// in-process, Redis, Redis Cluster, Memcached, two-tier — runs the same tests:
//
//	func TestConformance(t *testing.T) {
//		cachetest.Run(t, func(t *testing.T) cache.Store { return newStore(t) })
//	}
//
// The suite checks misses and hits, empty values, negative entries, expiry of entries,
// tombstones and leases, the SetIfNewer/SetIfNotOlder/Invalidate ordering rule in every case,
// the expiry and cost Get reports, that SetIfNotOlder extends the life of an entry of the same
// version, the atomicity of SetIfNewer and SetIfNotOlder under concurrent writers, lease
// exclusivity and Delete.
//
// Expiry is checked by polling the store's own answer with a bounded deadline: the shortest
// TTL the suite uses is one second (Memcached counts in whole seconds), and a store has
// MaxExpiryDelay to notice that an entry expired.
package cachetest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/strata-project/strata/cache"
)

// ShortTTL is the TTL the suite gives entries it expects to expire.
const ShortTTL = time.Second

// LongTTL is the TTL the suite gives entries it expects to outlive the test.
const LongTTL = time.Hour

// MaxExpiryDelay bounds how long after ShortTTL an entry may still be visible.
const MaxExpiryDelay = 5 * time.Second

// Run runs the conformance suite. newStore returns a store for one subtest: a fresh one, or a
// shared one (keys of different subtests never collide, they carry the subtest's name). The
// suite closes the store when the subtest ends.
func Run(t *testing.T, newStore func(t *testing.T) cache.Store) {
	t.Helper()
	open := func(t *testing.T) cache.Store {
		s := newStore(t)
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return s
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, s cache.Store)
	}{
		{"Miss", testMiss},
		{"Hit", testHit},
		{"EmptyValueIsHit", testEmptyValue},
		{"NegativeEntry", testNegative},
		{"ZeroTTLDoesNotExpire", testZeroTTL},
		{"SetIfNewerOrdering", testSetOrdering},
		{"SetIfNotOlderOrdering", testNotOlderOrdering},
		{"ExpiresAndCost", testExpiresAndCost},
		{"InvalidateOrdering", testInvalidateOrdering},
		{"TombstoneIsMiss", testTombstoneMiss},
		{"Delete", testDelete},
		{"ConcurrentSetIfNewer", testConcurrentSet},
		{"ConcurrentSetAndInvalidate", testConcurrentSetInvalidate},
		{"ConcurrentSetIfNotOlderAndInvalidate", testConcurrentNotOlderInvalidate},
		{"LeaseExclusive", testLeaseExclusive},
		{"LeaseRelease", testLeaseRelease},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open(t)) })
	}
	// Expiry tests wait for real time to pass: run them in parallel with each other.
	t.Run("Expiry", func(t *testing.T) {
		expiry := []struct {
			name string
			fn   func(t *testing.T, s cache.Store)
		}{
			{"Entry", testEntryExpires},
			{"SetIfNotOlderExtendsLife", testNotOlderExtends},
			{"NegativeEntry", testNegativeExpires},
			{"Tombstone", testTombstoneExpires},
			{"Lease", testLeaseExpires},
			{"StaleLeaseReleaseIsNoOp", testStaleRelease},
		}
		for _, tc := range expiry {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				tc.fn(t, open(t))
			})
		}
	})
}

func ctxOf(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func key(t *testing.T, suffix string) string { return "cachetest/" + t.Name() + "/" + suffix }

func val(v int64) []byte { return []byte("value-" + strconv.FormatInt(v, 10)) }

func entry(v int64) cache.Entry { return cache.Entry{Value: val(v), Version: v} }

func mustGet(t *testing.T, s cache.Store, k string) (cache.Entry, bool) {
	t.Helper()
	e, ok, err := s.Get(ctxOf(t), k)
	if err != nil {
		t.Fatalf("Get(%q): %v", k, err)
	}
	return e, ok
}

func mustSet(t *testing.T, s cache.Store, k string, e cache.Entry, ttl time.Duration) cache.SetResult {
	t.Helper()
	r, err := s.SetIfNewer(ctxOf(t), k, e, ttl)
	if err != nil {
		t.Fatalf("SetIfNewer(%q, v%d): %v", k, e.Version, err)
	}
	if r != cache.Stored && r != cache.Refused {
		t.Fatalf("SetIfNewer(%q, v%d) = %d, want Stored or Refused", k, e.Version, r)
	}
	return r
}

func mustSetNotOlder(t *testing.T, s cache.Store, k string, e cache.Entry, ttl time.Duration) cache.SetResult {
	t.Helper()
	r, err := s.SetIfNotOlder(ctxOf(t), k, e, ttl)
	if err != nil {
		t.Fatalf("SetIfNotOlder(%q, v%d): %v", k, e.Version, err)
	}
	if r != cache.Stored && r != cache.Refused {
		t.Fatalf("SetIfNotOlder(%q, v%d) = %d, want Stored or Refused", k, e.Version, r)
	}
	return r
}

func mustInvalidate(t *testing.T, s cache.Store, k string, v int64, ttl time.Duration) {
	t.Helper()
	if err := s.Invalidate(ctxOf(t), k, v, ttl); err != nil {
		t.Fatalf("Invalidate(%q, v%d): %v", k, v, err)
	}
}

func wantEntry(t *testing.T, s cache.Store, k string, want cache.Entry) {
	t.Helper()
	got, ok := mustGet(t, s, k)
	if !ok {
		t.Fatalf("Get(%q): miss, want v%d", k, want.Version)
	}
	if got.Version != want.Version || got.Negative != want.Negative || string(got.Value) != string(want.Value) {
		t.Fatalf("Get(%q) = {%q v%d neg=%v}, want {%q v%d neg=%v}", k, got.Value, got.Version, got.Negative,
			want.Value, want.Version, want.Negative)
	}
	if got.Negative && got.Value != nil {
		t.Fatalf("Get(%q): negative entry with non-nil value %q", k, got.Value)
	}
}

func wantMiss(t *testing.T, s cache.Store, k string) {
	t.Helper()
	if got, ok := mustGet(t, s, k); ok {
		t.Fatalf("Get(%q) = {%q v%d neg=%v}, want a miss", k, got.Value, got.Version, got.Negative)
	}
}

// wantTombstoneAt checks, by probing, that k holds a tombstone at exactly version v: a set at
// v-1 is refused and a set at v is stored. The probe consumes the tombstone.
func wantTombstoneAt(t *testing.T, s cache.Store, k string, v int64) {
	t.Helper()
	wantMiss(t, s, k)
	if r := mustSet(t, s, k, entry(v-1), LongTTL); r != cache.Refused {
		t.Fatalf("SetIfNewer(v%d) over a tombstone at v%d: stored, want refused", v-1, v)
	}
	if r := mustSet(t, s, k, entry(v), LongTTL); r != cache.Stored {
		t.Fatalf("SetIfNewer(v%d) over a tombstone at v%d: refused, want stored", v, v)
	}
	wantEntry(t, s, k, entry(v))
}

// eventually polls cond every few milliseconds until it holds or the expiry bound passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(ShortTTL + MaxExpiryDelay)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: still not the case %v after it should have been", what, ShortTTL+MaxExpiryDelay)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
}

func testMiss(t *testing.T, s cache.Store) {
	wantMiss(t, s, key(t, "absent"))
}

func testHit(t *testing.T, s cache.Store) {
	k := key(t, "k")
	if r := mustSet(t, s, k, entry(7), LongTTL); r != cache.Stored {
		t.Fatalf("SetIfNewer on an empty key: refused")
	}
	wantEntry(t, s, k, entry(7))
	// A binary value with every byte survives.
	bin := make([]byte, 256)
	for i := range bin {
		bin[i] = byte(i)
	}
	kb := key(t, "binary")
	mustSet(t, s, kb, cache.Entry{Value: bin, Version: 1}, LongTTL)
	wantEntry(t, s, kb, cache.Entry{Value: bin, Version: 1})
}

func testEmptyValue(t *testing.T, s cache.Store) {
	k := key(t, "empty")
	mustSet(t, s, k, cache.Entry{Value: []byte{}, Version: 3}, LongTTL)
	got, ok := mustGet(t, s, k)
	if !ok {
		t.Fatal("an empty value is a miss, want a hit")
	}
	if got.Negative || len(got.Value) != 0 || got.Version != 3 {
		t.Fatalf("Get = {%q v%d neg=%v}, want an empty value at v3", got.Value, got.Version, got.Negative)
	}
}

func testNegative(t *testing.T, s cache.Store) {
	k := key(t, "neg")
	mustSet(t, s, k, cache.Entry{Negative: true, Version: 4}, LongTTL)
	wantEntry(t, s, k, cache.Entry{Negative: true, Version: 4})
	// A later write replaces it.
	if r := mustSet(t, s, k, entry(5), LongTTL); r != cache.Stored {
		t.Fatal("SetIfNewer(v5) over a negative entry at v4: refused")
	}
	wantEntry(t, s, k, entry(5))
	// A negative entry at version 0 (never written) is a hit too.
	k0 := key(t, "neg0")
	mustSet(t, s, k0, cache.Entry{Negative: true}, LongTTL)
	wantEntry(t, s, k0, cache.Entry{Negative: true})
}

func testZeroTTL(t *testing.T, s cache.Store) {
	k := key(t, "k")
	mustSet(t, s, k, entry(1), 0)
	wantEntry(t, s, k, entry(1))
}

type state int

const (
	stateNothing state = iota
	stateEntry
	stateNegative
	stateTombstone
)

func (s state) String() string {
	return [...]string{"nothing", "entry", "negative entry", "tombstone"}[s]
}

// prepare puts k in state st at version 5.
func prepare(t *testing.T, s cache.Store, k string, st state) {
	t.Helper()
	switch st {
	case stateEntry:
		mustSet(t, s, k, entry(5), LongTTL)
	case stateNegative:
		mustSet(t, s, k, cache.Entry{Negative: true, Version: 5}, LongTTL)
	case stateTombstone:
		mustInvalidate(t, s, k, 5, LongTTL)
	}
}

func prepared(st state) cache.Entry {
	if st == stateNegative {
		return cache.Entry{Negative: true, Version: 5}
	}
	return entry(5)
}

func testSetOrdering(t *testing.T, s cache.Store) {
	for _, st := range []state{stateNothing, stateEntry, stateNegative, stateTombstone} {
		for _, v := range []int64{4, 5, 6} {
			for _, neg := range []bool{false, true} {
				name := fmt.Sprintf("%v/v%d/negative=%v", st, v, neg)
				t.Run(name, func(t *testing.T) {
					k := key(t, "k")
					prepare(t, s, k, st)
					e := entry(v)
					if neg {
						e = cache.Entry{Negative: true, Version: v}
					}
					var want cache.SetResult
					switch st {
					case stateNothing:
						want = cache.Stored
					case stateEntry, stateNegative:
						want = cache.Refused
						if v > 5 {
							want = cache.Stored
						}
					case stateTombstone:
						want = cache.Refused
						if v >= 5 {
							want = cache.Stored
						}
					}
					if got := mustSet(t, s, k, e, LongTTL); got != want {
						t.Fatalf("SetIfNewer(v%d) over %v at v5 = %d, want %d", v, st, got, want)
					}
					wantAfterSet(t, s, k, st, e, want)
				})
			}
		}
	}
}

// wantAfterSet checks what k holds after a set of e over state st at version 5 that gave
// want: e when stored, else what prepare left.
func wantAfterSet(t *testing.T, s cache.Store, k string, st state, e cache.Entry, want cache.SetResult) {
	t.Helper()
	switch {
	case want == cache.Stored:
		wantEntry(t, s, k, e)
	case st == stateTombstone:
		wantTombstoneAt(t, s, k, 5)
	default:
		wantEntry(t, s, k, prepared(st))
	}
}

// testNotOlderOrdering: SetIfNotOlder writes over nothing and over anything of a version
// <= its own (an entry of the same version included), and never below a newer entry or
// tombstone.
func testNotOlderOrdering(t *testing.T, s cache.Store) {
	for _, st := range []state{stateNothing, stateEntry, stateNegative, stateTombstone} {
		for _, v := range []int64{4, 5, 6} {
			for _, neg := range []bool{false, true} {
				t.Run(fmt.Sprintf("%v/v%d/negative=%v", st, v, neg), func(t *testing.T) {
					k := key(t, "k")
					prepare(t, s, k, st)
					e := cache.Entry{Value: []byte("refreshed-" + strconv.FormatInt(v, 10)), Version: v}
					if neg {
						e = cache.Entry{Negative: true, Version: v}
					}
					want := cache.Refused
					if st == stateNothing || v >= 5 {
						want = cache.Stored
					}
					if got := mustSetNotOlder(t, s, k, e, LongTTL); got != want {
						t.Fatalf("SetIfNotOlder(v%d) over %v at v5 = %d, want %d", v, st, got, want)
					}
					wantAfterSet(t, s, k, st, e, want)
				})
			}
		}
	}
}

// testExpiresAndCost: Get reports the load cost a set gave and an expiry of the set's time
// plus its ttl (none for ttl 0); a SetIfNotOlder of the same version replaces both.
func testExpiresAndCost(t *testing.T, s cache.Store) {
	const slack = time.Millisecond
	check := func(k string, cost time.Duration, before, after time.Time, ttl time.Duration) {
		t.Helper()
		got, ok := mustGet(t, s, k)
		if !ok {
			t.Fatalf("Get(%q): miss", k)
		}
		if got.Cost != cost {
			t.Fatalf("Get(%q).Cost = %v, want %v", k, got.Cost, cost)
		}
		if ttl <= 0 {
			if !got.Expires.IsZero() {
				t.Fatalf("Get(%q).Expires = %v, want none for an entry without expiry", k, got.Expires)
			}
			return
		}
		lo, hi := before.Add(ttl-slack), after.Add(ttl+slack)
		if got.Expires.Before(lo) || got.Expires.After(hi) {
			t.Fatalf("Get(%q).Expires = %v, want within [%v, %v]", k, got.Expires, lo, hi)
		}
	}
	k := key(t, "k")
	before := time.Now()
	mustSet(t, s, k, cache.Entry{Value: val(1), Version: 1, Cost: 1500 * time.Microsecond}, LongTTL)
	after := time.Now()
	check(k, 1500*time.Microsecond, before, after, LongTTL)
	// A refresh of the same version: new cost, new expiry.
	before = time.Now()
	if r := mustSetNotOlder(t, s, k, cache.Entry{Value: val(1), Version: 1, Cost: 2 * time.Millisecond}, 2*LongTTL); r != cache.Stored {
		t.Fatal("SetIfNotOlder of the same version: refused")
	}
	after = time.Now()
	check(k, 2*time.Millisecond, before, after, 2*LongTTL)
	wantEntry(t, s, k, entry(1))
	// A negative entry carries them too; an entry without cost reports none.
	kn := key(t, "neg")
	before = time.Now()
	mustSet(t, s, kn, cache.Entry{Negative: true, Version: 2, Cost: time.Second}, LongTTL)
	after = time.Now()
	check(kn, time.Second, before, after, LongTTL)
	kz := key(t, "nocost")
	before = time.Now()
	mustSet(t, s, kz, entry(3), LongTTL)
	after = time.Now()
	check(kz, 0, before, after, LongTTL)
	k0 := key(t, "noexpiry")
	mustSet(t, s, k0, cache.Entry{Value: val(1), Version: 1, Cost: time.Millisecond}, 0)
	check(k0, time.Millisecond, time.Time{}, time.Time{}, 0)
}

func testInvalidateOrdering(t *testing.T, s cache.Store) {
	for _, st := range []state{stateNothing, stateEntry, stateNegative, stateTombstone} {
		for _, v := range []int64{4, 5, 6} {
			t.Run(fmt.Sprintf("%v/v%d", st, v), func(t *testing.T) {
				k := key(t, "k")
				prepare(t, s, k, st)
				mustInvalidate(t, s, k, v, LongTTL)
				switch {
				case st == stateNothing || v >= 5:
					wantTombstoneAt(t, s, k, v)
				case st == stateTombstone:
					wantTombstoneAt(t, s, k, 5)
				default:
					wantEntry(t, s, k, prepared(st))
				}
			})
		}
	}
}

func testTombstoneMiss(t *testing.T, s cache.Store) {
	k := key(t, "k")
	mustSet(t, s, k, entry(1), LongTTL)
	mustInvalidate(t, s, k, 2, LongTTL)
	wantMiss(t, s, k)
	// The reader that loaded v1 before the invalidation cannot write it back.
	if r := mustSet(t, s, k, entry(1), LongTTL); r != cache.Refused {
		t.Fatal("stale set of v1 after Invalidate(v2) was stored")
	}
	wantMiss(t, s, k)
}

func testDelete(t *testing.T, s cache.Store) {
	ctx := ctxOf(t)
	k := key(t, "k")
	mustSet(t, s, k, entry(5), LongTTL)
	if err := s.Delete(ctx, k); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	wantMiss(t, s, k)
	// Delete removes whatever version was there: an older set is stored again.
	if r := mustSet(t, s, k, entry(1), LongTTL); r != cache.Stored {
		t.Fatal("SetIfNewer(v1) after Delete of v5: refused")
	}
	// Delete removes tombstones too.
	kt := key(t, "tomb")
	mustInvalidate(t, s, kt, 9, LongTTL)
	if err := s.Delete(ctx, kt); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if r := mustSet(t, s, kt, entry(1), LongTTL); r != cache.Stored {
		t.Fatal("SetIfNewer(v1) after Delete of a tombstone at v9: refused")
	}
	// Deleting an absent key is not an error.
	if err := s.Delete(ctx, key(t, "absent")); err != nil {
		t.Fatalf("Delete of an absent key: %v", err)
	}
}

// testConcurrentSet races writers that each set every version 1..versions in their own
// random order. Whatever the interleaving, each version is stored at most once (an equal
// version is refused), the maximum version is stored exactly once, and it is what remains.
func testConcurrentSet(t *testing.T, s cache.Store) {
	const writers, versions = 8, 100
	k := key(t, "k")
	ctx := ctxOf(t)
	var stored [versions + 1]atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			order := rand.New(rand.NewPCG(uint64(w), 1)).Perm(versions)
			for _, i := range order {
				v := int64(i + 1)
				r, err := s.SetIfNewer(ctx, k, entry(v), LongTTL)
				if err != nil {
					errs <- err
					return
				}
				if r == cache.Stored {
					stored[v].Add(1)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("SetIfNewer: %v", err)
	}
	total := 0
	for v := 1; v <= versions; v++ {
		n := int(stored[v].Load())
		if n > 1 {
			t.Errorf("version %d stored %d times, want at most once", v, n)
		}
		total += n
	}
	if n := stored[versions].Load(); n != 1 {
		t.Errorf("max version stored %d times, want exactly once", n)
	}
	if total < 1 {
		t.Errorf("no set stored")
	}
	wantEntry(t, s, k, entry(versions))
}

// testConcurrentSetInvalidate races setters of versions 1..n with invalidations at every
// even version: what remains is the newest set (n is odd, so an entry at n).
func testConcurrentSetInvalidate(t *testing.T, s cache.Store) {
	k := key(t, "k")
	if raceSetInvalidate(t, s, k, 2, s.SetIfNewer) {
		wantEntry(t, s, k, entry(raceVersions))
	}
}

// raceVersions is the number of versions raceSetInvalidate writes (odd).
const raceVersions = 101

// raceSetInvalidate has 4 writers each write versions 1..raceVersions of k in their own
// random order (seeded with seed): writers 0 and 2 set every version with set, writers 1 and
// 3 set the odd ones and invalidate at the even ones. It reports whether every call
// succeeded (a failure is reported on t).
func raceSetInvalidate(t *testing.T, s cache.Store, k string, seed uint64,
	set func(context.Context, string, cache.Entry, time.Duration) (cache.SetResult, error)) bool {
	ctx := ctxOf(t)
	var wg sync.WaitGroup
	var failed atomic.Bool
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, i := range rand.New(rand.NewPCG(uint64(w), seed)).Perm(raceVersions) {
				v := int64(i + 1)
				var err error
				if w%2 == 0 || v%2 == 1 {
					_, err = set(ctx, k, entry(v), LongTTL)
				} else {
					err = s.Invalidate(ctx, k, v, LongTTL)
				}
				if err != nil {
					failed.Store(true)
					t.Errorf("write v%d: %v", v, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	return !failed.Load()
}

// testConcurrentNotOlderInvalidate races refreshes (SetIfNotOlder) of versions 1..n, each
// version set by two writers, with invalidations at every even version: whatever the
// interleaving, no refresh lands below a newer tombstone or entry, so what remains is the
// newest (n is odd: an entry at n), and a refresh of n-1 is refused afterwards.
func testConcurrentNotOlderInvalidate(t *testing.T, s cache.Store) {
	const n = raceVersions
	k := key(t, "k")
	if !raceSetInvalidate(t, s, k, 3, s.SetIfNotOlder) {
		return
	}
	wantEntry(t, s, k, entry(n))
	if r := mustSetNotOlder(t, s, k, entry(n-1), LongTTL); r != cache.Refused {
		t.Fatalf("SetIfNotOlder(v%d) over an entry at v%d: stored", n-1, n)
	}
	wantEntry(t, s, k, entry(n))
}

func testLeaseExclusive(t *testing.T, s cache.Store) {
	const callers = 32
	k := key(t, "k")
	ctx := ctxOf(t)
	var won atomic.Int32
	var mu sync.Mutex
	var held []cache.Lease
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			l, ok, err := s.Lease(ctx, k, LongTTL)
			if err != nil {
				t.Errorf("Lease: %v", err)
				return
			}
			if ok {
				won.Add(1)
				mu.Lock()
				held = append(held, l)
				mu.Unlock()
			}
		}()
	}
	close(start)
	wg.Wait()
	if n := won.Load(); n != 1 {
		t.Fatalf("%d of %d callers got the lease, want exactly 1", n, callers)
	}
	// The lease is separate from the entry: a key with a lease is still a miss and can be set.
	wantMiss(t, s, k)
	mustSet(t, s, k, entry(1), LongTTL)
	wantEntry(t, s, k, entry(1))
	if _, ok, err := s.Lease(ctx, k, LongTTL); err != nil || ok {
		t.Fatalf("Lease while held = ok %v, err %v; want refused", ok, err)
	}
	if err := held[0].Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
}

func testLeaseRelease(t *testing.T, s cache.Store) {
	k := key(t, "k")
	ctx := ctxOf(t)
	l, ok, err := s.Lease(ctx, k, LongTTL)
	if err != nil || !ok {
		t.Fatalf("Lease on a free key = ok %v, err %v", ok, err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
	l2, ok, err := s.Lease(ctx, k, LongTTL)
	if err != nil || !ok {
		t.Fatalf("Lease after Release = ok %v, err %v; want it free", ok, err)
	}
	// A second release of the first lease must not free the second one.
	if err := l.Release(ctx); err != nil {
		t.Fatalf("second Release: %v", err)
	}
	if _, ok, err := s.Lease(ctx, k, LongTTL); err != nil || ok {
		t.Fatalf("Lease after a stale Release = ok %v, err %v; want it still held", ok, err)
	}
	if err := l2.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
	// Leases of different keys are independent.
	a, ok1, err1 := s.Lease(ctx, key(t, "a"), LongTTL)
	b, ok2, err2 := s.Lease(ctx, key(t, "b"), LongTTL)
	if err1 != nil || err2 != nil || !ok1 || !ok2 {
		t.Fatalf("leases of two keys: ok %v %v, err %v %v", ok1, ok2, err1, err2)
	}
	_ = a.Release(ctx)
	_ = b.Release(ctx)
}

func testEntryExpires(t *testing.T, s cache.Store) {
	k, kl := key(t, "short"), key(t, "long")
	mustSet(t, s, k, entry(1), ShortTTL)
	mustSet(t, s, kl, entry(1), LongTTL)
	eventually(t, "entry with a short TTL expired", func() bool { _, ok := mustGet(t, s, k); return !ok })
	wantEntry(t, s, kl, entry(1))
	// An expired entry does not refuse an older set.
	if r := mustSet(t, s, k, entry(0), LongTTL); r != cache.Stored {
		t.Fatal("SetIfNewer over an expired entry: refused")
	}
}

// testNotOlderExtendsLife: a SetIfNotOlder of the same version with a long ttl keeps an entry
// alive past the expiry of its first set, as an early refresh must; its twin, not refreshed,
// expires.
func testNotOlderExtends(t *testing.T, s cache.Store) {
	k, twin := key(t, "refreshed"), key(t, "twin")
	mustSet(t, s, k, entry(1), ShortTTL)
	mustSet(t, s, twin, entry(1), ShortTTL)
	if r := mustSet(t, s, k, entry(1), LongTTL); r != cache.Refused {
		t.Fatal("SetIfNewer of the same version: stored, want refused")
	}
	if r := mustSetNotOlder(t, s, k, entry(1), LongTTL); r != cache.Stored {
		t.Fatal("SetIfNotOlder of the same version: refused, want stored")
	}
	eventually(t, "the twin entry expired", func() bool { _, ok := mustGet(t, s, twin); return !ok })
	wantEntry(t, s, k, entry(1))
}

func testNegativeExpires(t *testing.T, s cache.Store) {
	k := key(t, "neg")
	mustSet(t, s, k, cache.Entry{Negative: true, Version: 2}, ShortTTL)
	wantEntry(t, s, k, cache.Entry{Negative: true, Version: 2})
	eventually(t, "negative entry expired", func() bool { _, ok := mustGet(t, s, k); return !ok })
}

func testTombstoneExpires(t *testing.T, s cache.Store) {
	k := key(t, "tomb")
	mustInvalidate(t, s, k, 10, ShortTTL)
	if r := mustSet(t, s, k, entry(3), LongTTL); r != cache.Refused {
		t.Fatal("SetIfNewer(v3) over a live tombstone at v10: stored")
	}
	// Once the tombstone expired, it refuses nothing.
	eventually(t, "tombstone expired", func() bool {
		return mustSet(t, s, k, entry(3), LongTTL) == cache.Stored
	})
	wantEntry(t, s, k, entry(3))
}

func testLeaseExpires(t *testing.T, s cache.Store) {
	k := key(t, "k")
	ctx := ctxOf(t)
	if _, ok, err := s.Lease(ctx, k, ShortTTL); err != nil || !ok {
		t.Fatalf("Lease = ok %v, err %v", ok, err)
	}
	eventually(t, "expired lease taken by another caller", func() bool {
		l, ok, err := s.Lease(ctx, k, LongTTL)
		if err != nil {
			t.Fatalf("Lease: %v", err)
		}
		if ok {
			_ = l.Release(ctx)
		}
		return ok
	})
}

// testStaleRelease: a holder whose lease expired and was taken by someone else cannot release
// the new holder's lease.
func testStaleRelease(t *testing.T, s cache.Store) {
	k := key(t, "k")
	ctx := ctxOf(t)
	old, ok, err := s.Lease(ctx, k, ShortTTL)
	if err != nil || !ok {
		t.Fatalf("Lease = ok %v, err %v", ok, err)
	}
	var current cache.Lease
	eventually(t, "expired lease taken by another caller", func() bool {
		l, ok, err := s.Lease(ctx, k, LongTTL)
		if err != nil {
			t.Fatalf("Lease: %v", err)
		}
		current = l
		return ok
	})
	if err := old.Release(ctx); err != nil {
		t.Fatalf("stale Release: %v", err)
	}
	if _, ok, err := s.Lease(ctx, k, LongTTL); err != nil || ok {
		t.Fatalf("Lease after a stale holder's Release = ok %v, err %v; want still held", ok, err)
	}
	if err := current.Release(ctx); err != nil {
		t.Fatalf("Release: %v", err)
	}
	if _, ok, err := s.Lease(ctx, k, LongTTL); err != nil || !ok {
		t.Fatalf("Lease after the holder's Release = ok %v, err %v; want free", ok, err)
	}
}
