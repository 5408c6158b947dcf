package redisstore

import (
	"context"
	"strconv"
	"sync"

	"github.com/redis/rueidis"
)

// pingSpread is the number of keys Ping reads on a Redis Cluster: one in each of as many
// equal ranges of the 16384 slots, so that every master owning at least a range's worth of
// contiguous slots (any cluster of up to 16 masters with even ranges) is reached.
const pingSpread = 16

var _ interface{ Ping(context.Context) error } = (*Store)(nil)

// Ping checks that the server answers: a PING on a single server; on a Redis Cluster, a
// read (of keys nobody writes) on each of pingSpread slot ranges in one round trip, so that
// a master that is down, or whose slots have no master yet, fails it. The cache's breaker
// probes use it (cache.Pinger): reading one key would only check the one master that owns
// it.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	if s.client.Mode() != rueidis.ClientModeCluster {
		if err := s.client.Do(ctx, s.client.B().Ping().Build()).Error(); err != nil {
			return wrap("ping", err)
		}
		return nil
	}
	keys := s.pingKeys()
	cmds := make(rueidis.Commands, len(keys))
	for i, k := range keys {
		cmds[i] = s.client.B().Exists().Key(k).Build()
	}
	for _, r := range s.client.DoMulti(ctx, cmds...) {
		if err := r.Error(); err != nil {
			return wrap("ping", err)
		}
	}
	return nil
}

// pingKeys returns the keys Ping reads on a cluster, found once: for each slot range, the
// first of prefix+"p:N" (N = 0, 1, ...) that hashes into it.
func (s *Store) pingKeys() []string {
	s.pingOnce.Do(func() {
		keys := make([]string, pingSpread)
		left := pingSpread
		for n := 0; left > 0; n++ {
			k := s.prefix + "p:" + strconv.Itoa(n)
			cmd := s.client.B().Exists().Key(k).Build()
			r := int(cmd.Slot()) * pingSpread / 16384
			if keys[r] == "" {
				keys[r] = k
				left--
			}
		}
		s.pingKeysV = keys
	})
	return s.pingKeysV
}

// pingState is Store's memo of pingKeys.
type pingState struct {
	pingOnce  sync.Once
	pingKeysV []string
}
