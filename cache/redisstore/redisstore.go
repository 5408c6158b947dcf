package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/strata-project/strata/cache"
	"github.com/strata-project/strata/cache/internal/entrycodec"
)

// Config configures a Store. The zero value is not usable: set Addrs or Client.
type Config struct {
	// Addrs are the Redis addresses (host:port). One address of a standalone server gives a
	// standalone client; any node of a Redis Cluster gives a cluster client. The Store owns the
	// client it builds and closes it in Close. Ignored when Client is set.
	Addrs []string
	// Client is a client to use instead of building one from Addrs. The Store does not close
	// it. Client-side caching (ClientCacheTTL) then depends on how it was built, and
	// OnInvalidate is not called. Nil: build a client from Addrs.
	Client rueidis.Client
	// Prefix is put before every key, so that several stores can share one Redis.
	// Default "strata:".
	Prefix string
	// Timeout bounds every call (on top of the caller's context). Default 250ms.
	Timeout time.Duration
	// ClientCacheTTL, when positive, turns on server-assisted client-side caching for Get:
	// a hit is served from process memory for at most this long, and Redis invalidates it
	// (RESP3 tracking) when any client changes the key. See the package doc for the bound on
	// staleness. Default 0: off, every Get asks Redis.
	ClientCacheTTL time.Duration
	// MaxFlushDelay lets the client gather concurrent calls for up to this long before
	// writing them to the connection: fewer system calls on both ends, more throughput
	// under concurrency, at most this much added latency. Negative: off. Default 20µs.
	MaxFlushDelay time.Duration
	// MaxGetBatch bounds how many concurrent Gets are read with one MGET. Gets that callers
	// make while earlier ones are under way are gathered and sent together, so that a burst
	// of reads costs Redis one command and both ends a few system calls per batch instead of
	// per key; a Get made while the store is idle is sent at once, alone. Standalone Redis
	// (and Sentinel) only, without client-side caching: on a Redis Cluster, keys of
	// different hash slots cannot share a command, and each Get is sent by itself (rueidis
	// still pipelines them). 1 or negative: off. Default 64.
	MaxGetBatch int
	// OnInvalidate, when set, is called with the store keys (without Prefix) whose client-side
	// cached copies Redis invalidated, after they were dropped; nil keys mean "everything" (a
	// flush or a lost connection). It runs on the connection's reader: keep it fast.
	// Default nil.
	OnInvalidate func(keys []string)
}

// Store is a cache.Store over Redis or Redis Cluster. It is safe for concurrent use.
type Store struct {
	client  rueidis.Client
	own     bool
	prefix  string
	timeout time.Duration
	cscTTL  time.Duration
	fences  fences
	batch   *getBatcher // nil: one GET per Get
	// deadline bounds the calls of callers whose context has neither deadline nor
	// cancellation.
	deadline sharedDeadline
	pingState
}

var _ cache.Store = (*Store)(nil)

// Lua scripts: each touches one key, so they run unchanged on Redis Cluster. Versions are
// compared as two 32-bit halves (exact in Lua's doubles) read from the biased big-endian
// header; see codec.go.
var (
	// KEYS[1] entry key; ARGV[1] encoded entry; ARGV[2] ttl in ms, "0" for none.
	// Writes iff nothing, a tombstone of version <= new, or an entry of version < new (the
	// flags byte of a tombstone has bit 2 set; bit 4 marks an entry's expiry and cost).
	setIfNewerScript = rueidis.NewLuaScript(`
local cur = redis.call('GET', KEYS[1])
if cur and #cur >= 9 then
  local ch, cl = struct.unpack('>I4I4', cur, 2)
  local nh, nl = struct.unpack('>I4I4', ARGV[1], 2)
  if ch > nh or (ch == nh and cl > nl) then return 0 end
  if ch == nh and cl == nl and string.byte(cur, 1) % 4 < 2 then return 0 end
end
if ARGV[2] == '0' then redis.call('SET', KEYS[1], ARGV[1])
else redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
return 1`)
	// KEYS[1] entry key; ARGV[1] encoded entry or tombstone; ARGV[2] ttl in ms, "0" for none.
	// Writes iff nothing or anything of version <= the new one's (SetIfNotOlder, Invalidate).
	notOlderScript = rueidis.NewLuaScript(`
local cur = redis.call('GET', KEYS[1])
if cur and #cur >= 9 then
  local ch, cl = struct.unpack('>I4I4', cur, 2)
  local nh, nl = struct.unpack('>I4I4', ARGV[1], 2)
  if ch > nh or (ch == nh and cl > nl) then return 0 end
end
if ARGV[2] == '0' then redis.call('SET', KEYS[1], ARGV[1])
else redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
return 1`)
	// KEYS[1] lease key; ARGV[1] token. Deletes the lease only if the token still holds it.
	releaseScript = rueidis.NewLuaScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)
)

// New connects to Redis and returns a Store. It fails (wrapping cache.ErrUnavailable) when
// no address answers, and with cache.ErrConfig when neither Addrs nor Client is set.
func New(cfg Config) (*Store, error) {
	s := &Store{
		client:  cfg.Client,
		prefix:  cfg.Prefix,
		timeout: cfg.Timeout,
		cscTTL:  cfg.ClientCacheTTL,
	}
	if s.prefix == "" {
		s.prefix = "strata:"
	}
	if s.timeout <= 0 {
		s.timeout = 250 * time.Millisecond
	}
	if s.client != nil {
		s.batchGets(cfg)
		return s, nil
	}
	if len(cfg.Addrs) == 0 {
		return nil, fmt.Errorf("redisstore: no Addrs and no Client: %w", cache.ErrConfig)
	}
	opt := rueidis.ClientOption{
		InitAddress:  cfg.Addrs,
		DisableCache: cfg.ClientCacheTTL <= 0,
		// Detect a hung server (or a hung connection) within a few call timeouts; calls
		// themselves return at Timeout.
		ConnWriteTimeout: max(4*s.timeout, time.Second),
		// Fail fast: a read retried on network errors until the timeout would make every
		// call to a dead server cost the whole timeout, slowing each request that meets it
		// and the breaker that should stop the calls. The cache core treats a failed call
		// as a miss and the breaker decides when to try again.
		DisableRetry: true,
		// A cluster client learns of a failover from its calls' errors; a periodic scan finds
		// the promoted replica even while the breaker keeps calls away, so that the breaker's
		// probe succeeds soon after the failover.
		ClusterOption: rueidis.ClusterOption{ShardsRefreshInterval: time.Second},
	}
	opt.Dialer.Timeout = max(4*s.timeout, time.Second)
	switch {
	case cfg.MaxFlushDelay > 0:
		opt.MaxFlushDelay = cfg.MaxFlushDelay
	case cfg.MaxFlushDelay == 0:
		opt.MaxFlushDelay = 20 * time.Microsecond
	}
	if fn := cfg.OnInvalidate; fn != nil && cfg.ClientCacheTTL > 0 {
		prefix := s.prefix + "e:"
		opt.OnInvalidations = func(msgs []rueidis.RedisMessage) {
			if msgs == nil {
				fn(nil)
				return
			}
			keys := make([]string, 0, len(msgs))
			for _, m := range msgs {
				if k, err := m.ToString(); err == nil && strings.HasPrefix(k, prefix) {
					keys = append(keys, k[len(prefix):])
				}
			}
			if len(keys) > 0 {
				fn(keys)
			}
		}
	}
	c, err := rueidis.NewClient(opt)
	if err != nil {
		return nil, fmt.Errorf("redisstore: connect: %w: %w", cache.ErrUnavailable, err)
	}
	s.client, s.own = c, true
	s.batchGets(cfg)
	return s, nil
}

// batchGets turns on the gathering of concurrent Gets into MGETs where cfg and the client
// allow it (see Config.MaxGetBatch).
func (s *Store) batchGets(cfg Config) {
	n := cfg.MaxGetBatch
	if n == 0 {
		n = 64
	}
	if n < 2 || s.cscTTL > 0 || s.client.Mode() == rueidis.ClientModeCluster {
		return
	}
	s.batch = newGetBatcher(mget(s.client), s.prefix+"e:", n, getFlights, &s.deadline, s.timeout)
}

// getFlights is how many MGETs of gathered Gets may be under way at once: one being
// answered while the next is sent keeps both the client and Redis busy.
const getFlights = 2

// Client returns the underlying rueidis client (for publishing, pub/sub, administration).
func (s *Store) Client() rueidis.Client { return s.client }

func (s *Store) entryKey(key string) string { return s.prefix + "e:" + key }
func (s *Store) leaseKey(key string) string { return s.prefix + "l:" + key }

// bound returns ctx limited by the store's timeout. A ctx that can never be cancelled is
// replaced by a context shared with the other calls of the same instant (see sharedDeadline).
func (s *Store) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if ctx.Done() == nil {
		if _, ok := ctx.Deadline(); !ok {
			return s.deadline.get(s.timeout), noCancel
		}
	}
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= s.timeout {
		return ctx, noCancel
	}
	return context.WithTimeout(ctx, s.timeout)
}

func noCancel() {}

// Redis error replies that mean "not now" rather than "wrong request".
var transient = []string{"LOADING", "CLUSTERDOWN", "TRYAGAIN", "MASTERDOWN", "BUSY", "READONLY", "OOM", "MOVED", "ASK"}

// wrap classifies err: transport errors, timeouts, a closed client and transient server
// states wrap cache.ErrUnavailable; other error replies do not.
func wrap(op string, err error) error {
	if re, ok := rueidis.IsRedisErr(err); ok {
		msg := re.Error()
		for _, p := range transient {
			if strings.HasPrefix(msg, p) {
				return fmt.Errorf("redisstore: %s: %w: %w", op, cache.ErrUnavailable, err)
			}
		}
		return fmt.Errorf("redisstore: %s: %w", op, err)
	}
	return fmt.Errorf("redisstore: %s: %w: %w", op, cache.ErrUnavailable, err)
}

func ttlArg(ttl time.Duration) string {
	if ttl <= 0 {
		return "0"
	}
	return strconv.FormatInt(max(ttl.Milliseconds(), 1), 10)
}

// Get returns the entry under key. A tombstone is a miss. With ClientCacheTTL set, the
// answer may come from process memory (see the package doc).
func (s *Store) Get(ctx context.Context, key string) (cache.Entry, bool, error) {
	var b []byte
	var err error
	if s.batch != nil {
		deadline := time.Now().Add(s.timeout)
		if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
			deadline = dl
		}
		b, err = s.batch.get(ctx, key, deadline)
		if err != nil {
			return cache.Entry{}, false, err
		}
		if b == nil {
			return cache.Entry{}, false, nil
		}
	} else {
		ctx, cancel := s.bound(ctx)
		var res rueidis.RedisResult
		if s.cscTTL > 0 && !s.fences.active(key, time.Now()) {
			res = s.client.DoCache(ctx, s.client.B().Get().Key(s.entryKey(key)).Cache(), s.cscTTL)
		} else {
			res = s.client.Do(ctx, s.client.B().Get().Key(s.entryKey(key)).Build())
		}
		cancel()
		b, err = res.AsBytes()
		if err != nil {
			if rueidis.IsRedisNil(err) {
				return cache.Entry{}, false, nil
			}
			return cache.Entry{}, false, wrap("get", err)
		}
	}
	e, tomb, err := entrycodec.Decode(b)
	if err != nil {
		// Not ours: treat as a miss, a later SetIfNewer overwrites it.
		return cache.Entry{}, false, nil
	}
	if tomb {
		return cache.Entry{}, false, nil
	}
	return e, true, nil
}

// SetIfNewer stores e under key for ttl (ttl <= 0: no expiry) unless Redis holds a newer
// entry or tombstone, atomically in one script.
func (s *Store) SetIfNewer(ctx context.Context, key string, e cache.Entry, ttl time.Duration) (cache.SetResult, error) {
	return s.set(ctx, setIfNewerScript, "set", key, e, ttl)
}

// SetIfNotOlder stores e under key for ttl unless Redis holds a newer entry or tombstone;
// an entry of the same version is replaced. Atomic in one script.
func (s *Store) SetIfNotOlder(ctx context.Context, key string, e cache.Entry, ttl time.Duration) (cache.SetResult, error) {
	return s.set(ctx, notOlderScript, "set if not older", key, e, ttl)
}

func (s *Store) set(ctx context.Context, script *rueidis.Lua, op, key string, e cache.Entry, ttl time.Duration) (cache.SetResult, error) {
	if e.Negative {
		e.Value = nil
	}
	e.Expires = time.Time{}
	if ttl > 0 {
		e.Expires = time.Now().Add(ttl)
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	n, err := script.Exec(ctx, s.client, []string{s.entryKey(key)},
		[]string{string(entrycodec.Encode(e, false)), ttlArg(ttl)}).AsInt64()
	if err != nil {
		return 0, wrap(op, err)
	}
	if n == 1 {
		s.wrote(key)
		return cache.Stored, nil
	}
	return cache.Refused, nil
}

// Invalidate leaves a tombstone at version for ttl unless Redis holds something newer,
// atomically in one script.
func (s *Store) Invalidate(ctx context.Context, key string, version int64, ttl time.Duration) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	err := notOlderScript.Exec(ctx, s.client, []string{s.entryKey(key)},
		[]string{string(entrycodec.Encode(cache.Entry{Version: version, Negative: true}, true)), ttlArg(ttl)}).Error()
	if err != nil {
		return wrap("invalidate", err)
	}
	s.wrote(key)
	return nil
}

// Delete removes the entry (or tombstone) under key.
func (s *Store) Delete(ctx context.Context, key string) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	if err := s.client.Do(ctx, s.client.B().Del().Key(s.entryKey(key)).Build()).Error(); err != nil {
		return wrap("delete", err)
	}
	s.wrote(key)
	return nil
}

// Lease takes the fill lease of key for ttl with SET NX PX and a random token.
func (s *Store) Lease(ctx context.Context, key string, ttl time.Duration) (cache.Lease, bool, error) {
	var raw [16]byte
	_, _ = rand.Read(raw[:]) // crypto/rand.Read never fails
	token := hex.EncodeToString(raw[:])
	ctx, cancel := s.bound(ctx)
	defer cancel()
	lk := s.leaseKey(key)
	set := s.client.B().Set().Key(lk).Value(token).Nx()
	var cmd rueidis.Completed
	if ttl > 0 {
		cmd = set.PxMilliseconds(max(ttl.Milliseconds(), 1)).Build()
	} else {
		cmd = set.Build()
	}
	err := s.client.Do(ctx, cmd).Error()
	if rueidis.IsRedisNil(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, wrap("lease", err)
	}
	return &lease{s: s, key: lk, token: token}, true, nil
}

type lease struct {
	s     *Store
	key   string
	token string
}

// Release deletes the lease if this holder's token still holds it.
func (l *lease) Release(ctx context.Context) error {
	ctx, cancel := l.s.bound(ctx)
	defer cancel()
	if err := releaseScript.Exec(ctx, l.s.client, []string{l.key}, []string{l.token}).Error(); err != nil {
		return wrap("release", err)
	}
	return nil
}

// wrote records a completed write of key through this store: with client-side caching, Get
// reads key from Redis, not from process memory, until every copy cached before the write
// has expired (one ClientCacheTTL), so that this store reads its own writes without waiting
// for Redis's invalidation message.
func (s *Store) wrote(key string) {
	if s.cscTTL > 0 {
		s.fences.add(key, time.Now().Add(s.cscTTL))
	}
}

// Close closes the client if the Store built it.
func (s *Store) Close() error {
	if s.own {
		s.client.Close()
	}
	return nil
}
