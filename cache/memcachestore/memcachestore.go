package memcachestore

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"syscall"
	"time"

	"github.com/bradfitz/gomemcache/memcache"

	"github.com/strata-project/strata/cache"
	"github.com/strata-project/strata/cache/internal/entrycodec"
)

// Config configures a Store.
type Config struct {
	// Addrs are the memcached servers (host:port); keys are spread over them by the client's
	// server selector. Required.
	Addrs []string
	// Prefix is put before every key. Default "strata:".
	Prefix string
	// Timeout bounds every network operation (connect, read, write). Default 250ms.
	Timeout time.Duration
	// MaxIdleConns is the number of idle connections kept per server. Default 64.
	MaxIdleConns int
	// MaxCASAttempts bounds the gets/cas retries of one SetIfNewer or Invalidate under
	// contention; when they run out the call fails with ErrContended. Default 64.
	MaxCASAttempts int
}

// ErrContended reports a SetIfNewer or Invalidate that lost its compare-and-swap race
// MaxCASAttempts times in a row.
var ErrContended = errors.New("memcachestore: too much contention on key")

// Store is a cache.Store over memcached. It is safe for concurrent use.
//
// memcached counts TTLs in whole seconds: a ttl is rounded up to the next second.
type Store struct {
	mc       *memcache.Client
	prefix   string
	attempts int
}

var _ cache.Store = (*Store)(nil)

// New returns a Store for the servers in cfg.Addrs. It does not connect until the first call.
func New(cfg Config) (*Store, error) {
	if len(cfg.Addrs) == 0 {
		return nil, fmt.Errorf("memcachestore: no Addrs: %w", cache.ErrConfig)
	}
	mc := memcache.New(cfg.Addrs...)
	mc.Timeout = cfg.Timeout
	if mc.Timeout <= 0 {
		mc.Timeout = 250 * time.Millisecond
	}
	mc.MaxIdleConns = cfg.MaxIdleConns
	if mc.MaxIdleConns <= 0 {
		mc.MaxIdleConns = 64
	}
	s := &Store{mc: mc, prefix: cfg.Prefix, attempts: cfg.MaxCASAttempts}
	if s.prefix == "" {
		s.prefix = "strata:"
	}
	if s.attempts <= 0 {
		s.attempts = 64
	}
	return s, nil
}

// itemKey maps any key to a legal memcached key: at most 250 bytes, no spaces or control
// characters. Legal keys are kept readable ("e:" or "l:" + key); others are replaced by
// their SHA-256 ("h" + kind + hex), which cannot collide with a readable one.
func (s *Store) itemKey(kind byte, key string) string {
	k := s.prefix + string(kind) + ":" + key
	if legal(k) {
		return k
	}
	sum := sha256.Sum256([]byte(key))
	return s.prefix + "h" + string(kind) + ":" + hex.EncodeToString(sum[:])
}

func legal(k string) bool {
	if len(k) > 250 {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] <= ' ' || k[i] == 0x7f {
			return false
		}
	}
	return true
}

// expiration converts a TTL to memcached's: whole seconds, rounded up; beyond 30 days an
// absolute Unix time; 0 for no expiry.
func expiration(ttl time.Duration, now time.Time) int32 {
	if ttl <= 0 {
		return 0
	}
	secs := int64((ttl + time.Second - 1) / time.Second)
	if secs > 30*24*3600 {
		return int32(now.Unix() + secs)
	}
	return int32(secs)
}

// wrap marks err as cache.ErrUnavailable: every error the client returns besides the
// protocol answers handled by the caller (miss, not stored, cas conflict) means memcached
// cannot answer now: refused or broken connection, timeout, server error.
func wrap(op string, err error) error {
	return fmt.Errorf("memcachestore: %s: %w: %w", op, cache.ErrUnavailable, err)
}

// staleConn reports an error of a connection the server closed (it restarted, or timed the
// idle connection out): the connection is dropped, and a read may be sent again.
func staleConn(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// Get returns the entry under key. A tombstone is a miss.
func (s *Store) Get(ctx context.Context, key string) (cache.Entry, bool, error) {
	if err := ctx.Err(); err != nil {
		return cache.Entry{}, false, wrap("get", err)
	}
	k := s.itemKey('e', key)
	it, err := s.mc.Get(k)
	if staleConn(err) {
		// A pooled connection to a server that restarted since: a read is safe to send
		// again, on a fresh connection.
		it, err = s.mc.Get(k)
	}
	if errors.Is(err, memcache.ErrCacheMiss) {
		return cache.Entry{}, false, nil
	}
	if err != nil {
		return cache.Entry{}, false, wrap("get", err)
	}
	e, tomb, err := entrycodec.Decode(it.Value)
	if err != nil || tomb {
		return cache.Entry{}, false, nil
	}
	return e, true, nil
}

// apply runs one versioned write as a gets/cas loop: add when the key is absent, cas when
// newer, and nothing when refuse says the current item wins.
func (s *Store) apply(ctx context.Context, op, key string, val []byte, ttl time.Duration,
	refuse func(cur cache.Entry, tomb bool) bool) (cache.SetResult, error) {
	k := s.itemKey('e', key)
	for range s.attempts {
		if err := ctx.Err(); err != nil {
			return 0, wrap(op, err)
		}
		exp := expiration(ttl, time.Now())
		it, err := s.mc.Get(k)
		if errors.Is(err, memcache.ErrCacheMiss) {
			err = s.mc.Add(&memcache.Item{Key: k, Value: val, Expiration: exp})
			if errors.Is(err, memcache.ErrNotStored) {
				continue // someone added first: look again
			}
			if err != nil {
				return 0, wrap(op, err)
			}
			return cache.Stored, nil
		}
		if err != nil {
			return 0, wrap(op, err)
		}
		if cur, tomb, derr := entrycodec.Decode(it.Value); derr == nil && refuse(cur, tomb) {
			return cache.Refused, nil
		}
		it.Value, it.Expiration = val, exp
		err = s.mc.CompareAndSwap(it)
		if errors.Is(err, memcache.ErrCASConflict) || errors.Is(err, memcache.ErrCacheMiss) ||
			errors.Is(err, memcache.ErrNotStored) {
			continue // changed or gone since our gets: look again
		}
		if err != nil {
			return 0, wrap(op, err)
		}
		return cache.Stored, nil
	}
	return 0, fmt.Errorf("memcachestore: %s: %w", op, ErrContended)
}

// SetIfNewer stores e under key for ttl unless memcached holds a newer entry or tombstone,
// with a gets/cas loop.
func (s *Store) SetIfNewer(ctx context.Context, key string, e cache.Entry, ttl time.Duration) (cache.SetResult, error) {
	return s.apply(ctx, "set", key, encode(e, ttl), ttl, func(cur cache.Entry, tomb bool) bool {
		return cur.Version > e.Version || (cur.Version == e.Version && !tomb)
	})
}

// SetIfNotOlder stores e under key for ttl unless memcached holds a newer entry or
// tombstone; an entry of the same version is replaced. A gets/cas loop.
func (s *Store) SetIfNotOlder(ctx context.Context, key string, e cache.Entry, ttl time.Duration) (cache.SetResult, error) {
	return s.apply(ctx, "set if not older", key, encode(e, ttl), ttl, func(cur cache.Entry, _ bool) bool {
		return cur.Version > e.Version
	})
}

// encode returns the stored form of e with its expiry, now plus ttl (memcached itself may
// keep the item up to a second longer: it counts whole seconds).
func encode(e cache.Entry, ttl time.Duration) []byte {
	e.Expires = time.Time{}
	if ttl > 0 {
		e.Expires = time.Now().Add(ttl)
	}
	return entrycodec.Encode(e, false)
}

// Invalidate leaves a tombstone at version for ttl unless memcached holds something newer.
func (s *Store) Invalidate(ctx context.Context, key string, version int64, ttl time.Duration) error {
	_, err := s.apply(ctx, "invalidate", key, entrycodec.Encode(cache.Entry{Version: version, Negative: true}, true), ttl,
		func(cur cache.Entry, _ bool) bool { return cur.Version > version })
	return err
}

// Delete removes the entry or tombstone under key.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return wrap("delete", err)
	}
	if err := s.mc.Delete(s.itemKey('e', key)); err != nil && !errors.Is(err, memcache.ErrCacheMiss) {
		return wrap("delete", err)
	}
	return nil
}

// Lease takes the fill lease of key with add (atomic create-if-absent) and a random token.
// memcached rounds ttl up to whole seconds.
func (s *Store) Lease(ctx context.Context, key string, ttl time.Duration) (cache.Lease, bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, false, wrap("lease", err)
	}
	var raw [16]byte
	_, _ = rand.Read(raw[:]) // crypto/rand.Read never fails
	token := hex.EncodeToString(raw[:])
	k := s.itemKey('l', key)
	err := s.mc.Add(&memcache.Item{Key: k, Value: []byte(token), Expiration: expiration(ttl, time.Now())})
	if errors.Is(err, memcache.ErrNotStored) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, wrap("lease", err)
	}
	return &lease{s: s, key: k, token: token}, true, nil
}

type lease struct {
	s     *Store
	key   string
	token string
}

// Release frees the lease if this holder's token still holds it: gets, compare the token,
// then cas the item to one that is already expired (memcached has no delete-if-cas in its
// text protocol), so a successor's lease taken in between is never freed.
func (l *lease) Release(ctx context.Context) error {
	for range l.s.attempts {
		if err := ctx.Err(); err != nil {
			return wrap("release", err)
		}
		it, err := l.s.mc.Get(l.key)
		if errors.Is(err, memcache.ErrCacheMiss) {
			return nil
		}
		if err != nil {
			return wrap("release", err)
		}
		if string(it.Value) != l.token {
			return nil // expired and taken by someone else
		}
		it.Expiration = -1 // a negative expiration makes the item expire at once
		err = l.s.mc.CompareAndSwap(it)
		if errors.Is(err, memcache.ErrCASConflict) || errors.Is(err, memcache.ErrNotStored) {
			continue
		}
		if err != nil && !errors.Is(err, memcache.ErrCacheMiss) {
			return wrap("release", err)
		}
		return nil
	}
	return fmt.Errorf("memcachestore: release: %w", ErrContended)
}

// Close closes idle connections.
func (s *Store) Close() error { return s.mc.Close() }
