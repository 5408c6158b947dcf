package redisstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/rueidis"
)

// ErrNotReplicated reports an invalidation that the key's master applied but that fewer of
// its replicas than required acknowledged in time: a failover now could promote a replica
// without the tombstone. The master answered, so it does not wrap cache.ErrUnavailable; a
// breaker in front of the store need not count it as the store being down.
var ErrNotReplicated = errors.New("redisstore: invalidation not acknowledged by enough replicas")

// Replicated is a Store with one more call, InvalidateDurable: an invalidation that returns
// only once replicas of the key's master hold the tombstone. Every other call, Invalidate
// included, is the Store's.
//
// Redis replicates asynchronously: a master acknowledges a write before its replicas have
// it, and a replica promoted after the master died has lost the master's last writes. A lost
// tombstone lets the promoted replica serve the entry it replaced, older than a write the
// source already holds. InvalidateDurable closes that hole for the invalidations that need
// it (those made before a write of a strong collection reaches the source): it sends the
// invalidation script and WAIT together on one connection to the key's master, so that
// WAIT counts the replicas that acknowledged the master's replication stream up to the
// tombstone (or later), and it fails with ErrNotReplicated when fewer than Replicas did.
//
// Limits: WAIT makes the tombstone reach the replicas' memory, not their disks, which is
// what a Redis Cluster failover promotes from. With a master that has fewer connected
// replicas than required (after a failover, until the old master rejoins as a replica),
// every durable invalidation of its slots fails.
type Replicated struct {
	*Store
	replicas int
}

// Replicated returns s with InvalidateDurable waiting for n replicas (n >= 1; a smaller n
// is taken as 1). The returned store shares s's client: close one of them, not both.
func (s *Store) Replicated(n int) *Replicated {
	return &Replicated{Store: s, replicas: max(n, 1)}
}

// Replicas returns how many replicas InvalidateDurable waits for.
func (r *Replicated) Replicas() int { return r.replicas }

// InvalidateDurable is Invalidate followed, on the same connection to the key's master, by
// WAIT for Replicas replicas, bounded by four times the store's timeout. It returns nil only when the
// tombstone (or something newer) is on the master and that many replicas acknowledged it.
// An error wrapping ErrNotReplicated means the master holds the tombstone but too few
// replicas do; other errors are Invalidate's.
func (r *Replicated) InvalidateDurable(ctx context.Context, key string, version int64, ttl time.Duration) error {
	// Each WAIT gets at most the store's timeout, the call four times that: WAIT must answer
	// before the context ends (Redis checks blocked clients' timeouts on its own clock, not
	// to the millisecond; a dedicated connection whose caller gave up is closed), and the
	// script may need two round trips (EVALSHA, then EVAL), each followed by WAIT.
	if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > 4*r.timeout {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 4*r.timeout)
		defer cancel()
	}
	wc := &waitingClient{Client: r.client, replicas: int64(r.replicas), max: r.timeout}
	// The Store's own Invalidate, its commands sent through wc.
	via := &Store{client: wc, prefix: r.prefix, timeout: 4 * r.timeout}
	if err := via.Invalidate(ctx, key, version, ttl); err != nil {
		return err
	}
	r.wrote(key)
	if wc.err != nil {
		return wrap("wait", wc.err)
	}
	if wc.acks < wc.replicas {
		return fmt.Errorf("redisstore: invalidate %q: %d of %d replicas acknowledged: %w", key, wc.acks, wc.replicas, ErrNotReplicated)
	}
	return nil
}

// waitingClient sends WAIT after every command it is given, in one DoMulti: rueidis sends
// the commands of a DoMulti in order on one connection, to the master of the keyed
// command's slot (a keyless command joins the keyed one's node), and a DoMulti holding a
// blocking command such as WAIT takes a dedicated connection, so no other caller's commands
// come between them and WAIT counts the replicas that have this connection's last write.
// Invalidate's script runs through Do (EVALSHA, then EVAL if the script was not loaded):
// acks and err are WAIT's answer to the last command. Not safe for concurrent
// use (one per call).
type waitingClient struct {
	rueidis.Client
	replicas int64
	max      time.Duration // the longest WAIT
	acks     int64
	err      error
}

func (w *waitingClient) Do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult {
	// At most half of what is left: a NOSCRIPT answer costs one WAIT before the EVAL's.
	wait := w.max
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(dl)/2)
	}
	waitMS := max(int64(wait/time.Millisecond), 1)
	res := w.Client.DoMulti(ctx, cmd, w.Client.B().Wait().Numreplicas(w.replicas).Timeout(waitMS).Build())
	w.acks, w.err = res[1].AsInt64()
	return res[0]
}
