package redislimit_test

import (
	"context"
	"errors"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/strata-project/strata/internal/testenv"
	"github.com/strata-project/strata/ratelimit"
	"github.com/strata-project/strata/ratelimit/redislimit"
)

// remote is what every limiter of the package offers besides AllowN.
type remote interface {
	ratelimit.Limiter
	Key(key string) string
	Client() rueidis.Client
	Close() error
}

// windowKinds builds each window limiter over Redis.
var windowKinds = []struct {
	name string
	new  func(cfg redislimit.Config, w ratelimit.WindowConfig) (remote, error)
}{
	{"fixed", func(cfg redislimit.Config, w ratelimit.WindowConfig) (remote, error) {
		return redislimit.NewFixedWindow(cfg, w)
	}},
	{"sliding", func(cfg redislimit.Config, w ratelimit.WindowConfig) (remote, error) {
		return redislimit.NewSlidingWindow(cfg, w)
	}},
	{"log", func(cfg redislimit.Config, w ratelimit.WindowConfig) (remote, error) {
		return redislimit.NewSlidingLog(cfg, w)
	}},
}

// backends runs f on the shared standalone Redis and on the shared Redis
// Cluster, with the address a client should be given.
func backends(t *testing.T, f func(t *testing.T, addr string)) {
	t.Run("standalone", func(t *testing.T) { f(t, testenv.SharedRedis(t).Addr()) })
	t.Run("cluster", func(t *testing.T) { f(t, testenv.SharedRedisCluster(t).Addrs()[0]) })
}

func openRemote(t *testing.T, l remote, err error) remote {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func newWindow(t *testing.T, kind int, addr string, w ratelimit.WindowConfig) remote {
	t.Helper()
	l, err := windowKinds[kind].new(redislimit.Config{Addrs: []string{addr}, Timeout: 2 * time.Second, FailMode: redislimit.FailError}, w)
	return openRemote(t, l, err)
}

// about reports whether d is within a minute below want (the seconds a test
// takes on a busy machine) and not above it.
func about(d, want time.Duration) bool { return d <= want && d > want-time.Minute }

func do(t *testing.T, c rueidis.Client, cmd rueidis.Completed) rueidis.RedisResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.Do(ctx, cmd)
}

// pttl returns the key's remaining time to live; it fails the test for a
// key without an expiry or a missing key.
func pttl(t *testing.T, l remote, key string) time.Duration {
	t.Helper()
	c := l.Client()
	ms, err := do(t, c, c.B().Pttl().Key(l.Key(key)).Build()).AsInt64()
	if err != nil {
		t.Fatal(err)
	}
	if ms < 0 {
		t.Fatalf("PTTL %s = %d: missing, or no expiry", l.Key(key), ms)
	}
	return time.Duration(ms) * time.Millisecond
}

func exists(t *testing.T, l remote, key string) bool {
	t.Helper()
	c := l.Client()
	n, err := do(t, c, c.B().Exists().Key(l.Key(key)).Build()).AsInt64()
	if err != nil {
		t.Fatal(err)
	}
	return n == 1
}

// serverTime returns the Redis server's clock, as the scripts read it, in
// microseconds since the Unix epoch. On a cluster it asks the node that
// holds key.
func serverTime(t *testing.T, l remote, key string) int64 {
	t.Helper()
	c := l.Client()
	// TIME takes no key; route it with a read of the key's node.
	cmd := c.B().Eval().Script("local t = redis.call('TIME') return t[1] * 1000000 + t[2]").Numkeys(1).Key(l.Key(key)).Build()
	v, err := do(t, c, cmd).AsInt64()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestWindowSequences: the exact decisions of each window limiter over an
// hour-long window, where the seconds a test takes change no outcome.
func TestWindowSequences(t *testing.T) {
	w := ratelimit.WindowConfig{Limit: 3, Window: time.Hour}
	backends(t, func(t *testing.T, addr string) {
		for kind, k := range windowKinds {
			t.Run(k.name, func(t *testing.T) {
				l := newWindow(t, kind, addr, w)
				if p := l.Policy(); p.Quota != 3 || p.Window != time.Hour {
					t.Fatalf("Policy = %+v", p)
				}
				// A query on a key never seen: full, and writes nothing.
				if d := allow(t, l, "k", 0); !d.Allowed || d.Remaining != 3 || d.ResetAfter != 0 || d.RetryAfter != 0 {
					t.Fatalf("query on a new key: %+v", d)
				}
				if exists(t, l, "k") {
					t.Fatal("a query wrote the key")
				}
				for i, want := range []int{2, 1} {
					d := allow(t, l, "k", 1)
					if !d.Allowed || d.Remaining != want || d.Limit != 3 || d.RetryAfter != 0 {
						t.Fatalf("call %d: %+v, want allowed with %d remaining", i, d, want)
					}
					// Fixed and log: the window of the first event ends in
					// an hour; sliding: the estimate is zero two windows
					// after the window's start.
					reset := time.Hour
					if k.name == "sliding" {
						reset = 2 * time.Hour
					}
					if !about(d.ResetAfter, reset) {
						t.Fatalf("call %d: ResetAfter %v, want about %v", i, d.ResetAfter, reset)
					}
				}
				// A cost larger than what is left is denied and counts
				// nothing. Sliding: 2 events weigh 2*(1-e) in the next
				// window, room for 2 more once e >= 1/2.
				retry2 := time.Hour
				if k.name == "sliding" {
					retry2 = 90 * time.Minute
				}
				if d := allow(t, l, "k", 2); d.Allowed || d.Remaining != 1 || !about(d.RetryAfter, retry2) {
					t.Fatalf("cost 2 with 1 left: %+v, want denied, retry after about %v", d, retry2)
				}
				if d := allow(t, l, "k", 1); !d.Allowed || d.Remaining != 0 {
					t.Fatalf("last unit: %+v", d)
				}
				d := allow(t, l, "k", 1)
				retry := time.Hour
				if k.name == "sliding" {
					// The current window's 3 events become the previous
					// window's after an hour, and weigh 3*(1-e) until then:
					// room for 1 more after e = 1/3 of the next window.
					retry = time.Hour + 20*time.Minute
				}
				if d.Allowed || d.Remaining != 0 || !about(d.RetryAfter, retry) {
					t.Fatalf("over the limit: %+v, want denied, retry after about %v", d, retry)
				}
				if d := allow(t, l, "k", 0); !d.Allowed || d.Remaining != 0 {
					t.Fatalf("query at the limit: %+v", d)
				}
				// Other keys are independent; the whole limit passes at once.
				if d := allow(t, l, "other", 3); !d.Allowed || d.Remaining != 0 {
					t.Fatalf("other key, cost 3: %+v", d)
				}
				if _, err := l.AllowN(context.Background(), "k", 4); !errors.Is(err, ratelimit.ErrCostExceedsLimit) {
					t.Fatalf("cost 4: %v, want ErrCostExceedsLimit", err)
				}
				if _, err := l.AllowN(context.Background(), "k", -1); !errors.Is(err, ratelimit.ErrInvalidCost) {
					t.Fatalf("cost -1: %v, want ErrInvalidCost", err)
				}
			})
		}
	})
}

// TestWindowsAgreeWithMemory: over one long window, each Redis limiter and
// its in-memory counterpart make the same decisions for the same calls.
func TestWindowsAgreeWithMemory(t *testing.T) {
	w := ratelimit.WindowConfig{Limit: 7, Window: time.Hour}
	locals := []func() (interface {
		AllowNAt(time.Time, string, int) (ratelimit.Decision, error)
	}, error){
		func() (interface {
			AllowNAt(time.Time, string, int) (ratelimit.Decision, error)
		}, error) {
			return ratelimit.NewFixedWindow(w)
		},
		func() (interface {
			AllowNAt(time.Time, string, int) (ratelimit.Decision, error)
		}, error) {
			return ratelimit.NewSlidingWindow(w)
		},
		func() (interface {
			AllowNAt(time.Time, string, int) (ratelimit.Decision, error)
		}, error) {
			return ratelimit.NewSlidingLog(w)
		},
	}
	r := testenv.SharedRedis(t)
	for kind, k := range windowKinds {
		t.Run(k.name, func(t *testing.T) {
			l := newWindow(t, kind, r.Addr(), w)
			mem, err := locals[kind]()
			if err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			for i := range 60 {
				key := "k" + strconv.Itoa(i%3)
				n := (i * 5) % 4 // costs 0..3
				got := allow(t, l, key, n)
				want, err := mem.AllowNAt(now, key, n)
				if err != nil {
					t.Fatal(err)
				}
				if got.Allowed != want.Allowed || got.Remaining != want.Remaining || got.Limit != want.Limit {
					t.Fatalf("call %d (%s, n=%d): Redis %+v, memory %+v", i, key, n, got, want)
				}
			}
		})
	}
}

// TestSlidingWindowWeighsPreviousWindow writes a state whose current window
// began 1h15m ago on the server's clock: the next call moves to the next
// window, where the 4 events of the previous one weigh 4*(1-1/4) = 3.
func TestSlidingWindowWeighsPreviousWindow(t *testing.T) {
	backends(t, func(t *testing.T, addr string) {
		l := newWindow(t, 1, addr, ratelimit.WindowConfig{Limit: 4, Window: time.Hour})
		c := l.Client()
		start := serverTime(t, l, "k") - (75 * time.Minute).Microseconds()
		err := do(t, c, c.B().Hset().Key(l.Key("k")).FieldValue().
			FieldValue("s", strconv.FormatInt(start, 10)).FieldValue("p", "0").FieldValue("c", "4").Build()).Error()
		if err != nil {
			t.Fatal(err)
		}
		if err := do(t, c, c.B().Pexpire().Key(l.Key("k")).Milliseconds(int64(2*time.Hour/time.Millisecond)).Build()).Error(); err != nil {
			t.Fatal(err)
		}
		// estimate 3 - (a little, as time passes): one more fits, not two.
		if d := allow(t, l, "k", 1); !d.Allowed || d.Remaining != 0 || !about(d.ResetAfter, 105*time.Minute) {
			t.Fatalf("first call: %+v, want allowed, 0 remaining, reset in about 1h45m", d)
		}
		// 4*(1-e)+1+1 <= 4 when e >= 1/2: 15 minutes from now.
		if d := allow(t, l, "k", 1); d.Allowed || !about(d.RetryAfter, 15*time.Minute) {
			t.Fatalf("second call: %+v, want denied, retry after about 15m", d)
		}
		if p := pttl(t, l, "k"); !about(p, 105*time.Minute) {
			t.Fatalf("PTTL %v, want about 1h45m (two windows after the new window's start)", p)
		}
	})
}

// TestWindowsReopen: with a short window, a denied key is allowed again
// once RetryAfter has passed on the server, not before.
func TestWindowsReopen(t *testing.T) {
	r := testenv.SharedRedis(t)
	w := ratelimit.WindowConfig{Limit: 2, Window: 300 * time.Millisecond}
	for kind, k := range windowKinds {
		t.Run(k.name, func(t *testing.T) {
			l := newWindow(t, kind, r.Addr(), w)
			for allow(t, l, "k", 1).Allowed {
			}
			before := time.Now() // before the server decided the denial
			d := allow(t, l, "k", 1)
			if d.Allowed || d.RetryAfter <= 0 || d.RetryAfter > 2*w.Window {
				t.Fatalf("denial: %+v", d)
			}
			deadline := time.Now().Add(10 * time.Second)
			for !allow(t, l, "k", 1).Allowed {
				if time.Now().After(deadline) {
					t.Fatal("still denied 10s later")
				}
			}
			if el := time.Since(before); el < d.RetryAfter {
				t.Fatalf("allowed again %v after a denial with RetryAfter %v", el, d.RetryAfter)
			}
		})
	}
}

// TestWindowsParallelNeverExceed: four clients (as four processes would
// have) and 64 callers on one key; exactly Limit calls pass in a window
// that the test does not outlast.
func TestWindowsParallelNeverExceed(t *testing.T) {
	w := ratelimit.WindowConfig{Limit: 100, Window: time.Hour}
	backends(t, func(t *testing.T, addr string) {
		for kind, k := range windowKinds {
			t.Run(k.name, func(t *testing.T) {
				var clients []remote
				for range 4 {
					clients = append(clients, newWindow(t, kind, addr, w))
				}
				var allowed atomic.Int64
				var wg sync.WaitGroup
				for i := range 64 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for j := range 5 {
							d, err := clients[i%4].AllowN(context.Background(), "hot", 1+(i+j)%2)
							if err != nil {
								t.Error(err)
								return
							}
							if d.Allowed {
								allowed.Add(int64(1 + (i+j)%2))
							}
						}
					}()
				}
				wg.Wait()
				// 480 units were asked for; costs of 1 and 2 fill the
				// limit exactly or leave one unit that only a cost 1 fits.
				if got := allowed.Load(); got < 99 || got > 100 {
					t.Fatalf("allowed %d units, want 99..100", got)
				}
			})
		}
	})
}

// TestWindowKeysHaveTTL: every key a window limiter writes has an expiry
// no longer than the time its state is that of a key never seen; denials
// and queries write nothing.
func TestWindowKeysHaveTTL(t *testing.T) {
	w := ratelimit.WindowConfig{Limit: 3, Window: time.Hour}
	backends(t, func(t *testing.T, addr string) {
		for kind, k := range windowKinds {
			t.Run(k.name, func(t *testing.T) {
				l := newWindow(t, kind, addr, w)
				life := w.Window
				if k.name == "sliding" {
					life = 2 * w.Window
				}
				for i := range 20 {
					key := "ttl-" + strconv.Itoa(i)
					allow(t, l, key, 1+i%3)
					if p := pttl(t, l, key); !about(p, life) {
						t.Fatalf("%s: PTTL %v, want about %v", key, p, life)
					}
					allow(t, l, key, 3) // denied: it changes nothing
					if p := pttl(t, l, key); !about(p, life) {
						t.Fatalf("%s after a second call: PTTL %v, want about %v", key, p, life)
					}
				}
				allow(t, l, "query", 0)
				if exists(t, l, "query") {
					t.Fatal("a query wrote its key")
				}
			})
		}
	})
}

// TestWindowsUseServerClock: the instants a window limiter stores are the
// Redis server's (TIME), whatever the client's clock says: processes whose
// clocks disagree share one window.
func TestWindowsUseServerClock(t *testing.T) {
	backends(t, func(t *testing.T, addr string) {
		for kind, k := range windowKinds {
			t.Run(k.name, func(t *testing.T) {
				l := newWindow(t, kind, addr, ratelimit.WindowConfig{Limit: 5, Window: time.Hour})
				before := serverTime(t, l, "k")
				allow(t, l, "k", 1)
				after := serverTime(t, l, "k")
				c := l.Client()
				var cmd rueidis.Completed
				if k.name == "log" {
					cmd = c.B().Lindex().Key(l.Key("k")).Index(0).Build()
				} else {
					cmd = c.B().Hget().Key(l.Key("k")).Field("s").Build()
				}
				s, err := do(t, c, cmd).ToString()
				if err != nil {
					t.Fatal(err)
				}
				got, err := strconv.ParseInt(s, 10, 64)
				if err != nil {
					t.Fatalf("stored instant %q: %v", s, err)
				}
				if got < before || got > after {
					t.Fatalf("stored instant %d outside the server's [%d, %d]", got, before, after)
				}
			})
		}
	})
}

// TestWindowConfigErrors: unusable windows are refused before connecting.
func TestWindowConfigErrors(t *testing.T) {
	bad := []ratelimit.WindowConfig{
		{Limit: 0, Window: time.Second},
		{Limit: 1},
		{Limit: 1, Window: -time.Second},
		{Limit: 1, Window: math.MaxInt64},
	}
	for _, k := range windowKinds {
		for _, w := range bad {
			if _, err := k.new(redislimit.Config{Addrs: []string{"127.0.0.1:1"}}, w); !errors.Is(err, redislimit.ErrConfig) {
				t.Errorf("%s %+v: %v, want ErrConfig", k.name, w, err)
			}
		}
	}
}
