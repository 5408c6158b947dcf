package engines

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clusterSlots is the number of hash slots in a Redis Cluster.
const clusterSlots = 16384

// RedisClusterOptions configures a Redis Cluster.
type RedisClusterOptions struct {
	// Dir holds one subdirectory per node. Required.
	Dir string
	// Masters is the number of masters. Default 3.
	Masters int
	// ReplicasPerMaster is the number of replicas of each master. Default 1.
	ReplicasPerMaster int
	// NodeTimeout is cluster-node-timeout: how long a node may be unreachable before it is
	// failed over. Default 1s (Redis's own default of 15s suits wide-area networks, not one
	// machine).
	NodeTimeout time.Duration
	// AOF persistence of every node. Default AOFOff.
	AOF AOF
}

// RedisCluster is a Redis Cluster of child processes. Nodes lists every node in start order:
// first the masters, then the replicas (replica j of master i is Nodes[Masters+i*ReplicasPerMaster+j]).
// Roles change on failover; Role reports the current one.
type RedisCluster struct {
	Nodes []*Redis
	opts  RedisClusterOptions
}

// StartRedisCluster starts the nodes, assigns the slots evenly to the masters, attaches the
// replicas and waits until every node reports cluster_state:ok with all 16384 slots covered and
// every replica's link to its master is up.
func StartRedisCluster(ctx context.Context, opts RedisClusterOptions) (*RedisCluster, error) {
	if opts.Dir == "" {
		return nil, errors.New("engines: RedisClusterOptions.Dir is required")
	}
	if opts.Masters == 0 {
		opts.Masters = 3
	}
	if opts.ReplicasPerMaster == 0 {
		opts.ReplicasPerMaster = 1
	}
	if opts.NodeTimeout == 0 {
		opts.NodeTimeout = time.Second
	}
	if opts.Masters < 1 || opts.ReplicasPerMaster < 0 || opts.Masters > 100 {
		return nil, fmt.Errorf("engines: bad cluster shape: %d masters, %d replicas each", opts.Masters, opts.ReplicasPerMaster)
	}
	total := opts.Masters * (1 + opts.ReplicasPerMaster)
	c := &RedisCluster{Nodes: make([]*Redis, total), opts: opts}
	errs := make([]error, total)
	var wg sync.WaitGroup
	for i := range total {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Nodes[i], errs[i] = StartRedis(ctx, RedisOptions{
				Dir:         filepath.Join(opts.Dir, fmt.Sprintf("node%d", i)),
				AOF:         opts.AOF,
				cluster:     true,
				nodeTimeout: opts.NodeTimeout,
			})
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.Close()
		return nil, err
	}
	if err := c.form(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

func (c *RedisCluster) form(ctx context.Context) error {
	ids := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		id, err := redisString(ctx, n.Addr(), "CLUSTER", "MYID")
		if err != nil {
			return err
		}
		ids[i] = id
	}
	m := c.opts.Masters
	for i := range m {
		lo, hi := i*clusterSlots/m, (i+1)*clusterSlots/m-1
		if _, err := c.Nodes[i].Do(ctx, "CLUSTER", "ADDSLOTSRANGE", strconv.Itoa(lo), strconv.Itoa(hi)); err != nil {
			return err
		}
	}
	for _, n := range c.Nodes[1:] {
		host, port, _ := strings.Cut(n.Addr(), ":")
		if _, err := c.Nodes[0].Do(ctx, "CLUSTER", "MEET", host, port); err != nil {
			return err
		}
	}
	// A replica can only follow a master it knows: wait for the gossip to spread.
	for _, n := range c.Nodes {
		err := waitFor(ctx, n.process, "every node to be known", func(ctx context.Context) error {
			s, err := redisString(ctx, n.Addr(), "CLUSTER", "INFO")
			if err != nil {
				return err
			}
			if got := infoField(s, "cluster_known_nodes"); got != strconv.Itoa(len(c.Nodes)) {
				return fmt.Errorf("knows %s of %d nodes", got, len(c.Nodes))
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	for i := m; i < len(c.Nodes); i++ {
		master := (i - m) / c.opts.ReplicasPerMaster
		n := c.Nodes[i]
		err := waitFor(ctx, n.process, "CLUSTER REPLICATE", func(ctx context.Context) error {
			_, err := n.Do(ctx, "CLUSTER", "REPLICATE", ids[master])
			return err
		})
		if err != nil {
			return err
		}
	}
	return c.WaitHealthy(ctx)
}

// WaitHealthy waits until every running, unpaused node reports cluster_state:ok with all slots
// assigned and ok, and every running replica's link to its master is up.
func (c *RedisCluster) WaitHealthy(ctx context.Context) error {
	for _, n := range c.Nodes {
		if !n.Running() || n.Paused() {
			continue
		}
		err := waitFor(ctx, n.process, "cluster_state:ok", func(ctx context.Context) error {
			s, err := redisString(ctx, n.Addr(), "CLUSTER", "INFO")
			if err != nil {
				return err
			}
			if infoField(s, "cluster_state") != "ok" ||
				infoField(s, "cluster_slots_assigned") != strconv.Itoa(clusterSlots) ||
				infoField(s, "cluster_slots_ok") != strconv.Itoa(clusterSlots) {
				return fmt.Errorf("cluster not ok: state=%s assigned=%s ok=%s", infoField(s, "cluster_state"),
					infoField(s, "cluster_slots_assigned"), infoField(s, "cluster_slots_ok"))
			}
			info, err := redisString(ctx, n.Addr(), "INFO", "replication")
			if err != nil {
				return err
			}
			if infoField(info, "role") == "slave" && infoField(info, "master_link_status") != "up" {
				return errors.New("replica link to master is not up")
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// Addrs returns every node's address, in Nodes order.
func (c *RedisCluster) Addrs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.Addr()
	}
	return out
}

// Role returns "master" or "slave" for node i, as the node itself reports it.
func (c *RedisCluster) Role(ctx context.Context, i int) (string, error) {
	v, err := c.Nodes[i].Do(ctx, "ROLE")
	if err != nil {
		return "", err
	}
	arr, ok := v.([]any)
	if !ok || len(arr) == 0 {
		return "", fmt.Errorf("engines: unexpected ROLE reply %v", v)
	}
	role, _ := arr[0].(string)
	return role, nil
}

// ReplicaOf returns the index in Nodes of the first replica started for master i.
func (c *RedisCluster) ReplicaOf(i int) int {
	return c.opts.Masters + i*c.opts.ReplicasPerMaster
}

// FlushAll empties every master (replicas follow). Nodes that are down are skipped.
func (c *RedisCluster) FlushAll(ctx context.Context) error {
	var errs []error
	for i, n := range c.Nodes {
		if !n.Running() || n.Paused() {
			continue
		}
		role, err := c.Role(ctx, i)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if role == "master" {
			if _, err := n.Do(ctx, "FLUSHALL"); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Close kills every node. It is safe after a partial start.
func (c *RedisCluster) Close() error {
	var wg sync.WaitGroup
	for _, n := range c.Nodes {
		if n != nil {
			wg.Add(1)
			go func() { defer wg.Done(); n.close() }()
		}
	}
	wg.Wait()
	return nil
}

// MasterOf returns the index in Nodes of the master that currently serves key's slot, as node
// ask reports it (CLUSTER KEYSLOT and CLUSTER SLOTS).
func (c *RedisCluster) MasterOf(ctx context.Context, ask int, key string) (int, error) {
	v, err := c.Nodes[ask].Do(ctx, "CLUSTER", "KEYSLOT", key)
	if err != nil {
		return -1, err
	}
	slot, _ := v.(int64)
	v, err = c.Nodes[ask].Do(ctx, "CLUSTER", "SLOTS")
	if err != nil {
		return -1, err
	}
	ranges, _ := v.([]any)
	for _, r := range ranges {
		rr, _ := r.([]any)
		if len(rr) < 3 {
			continue
		}
		lo, _ := rr[0].(int64)
		hi, _ := rr[1].(int64)
		m, _ := rr[2].([]any)
		if slot < lo || slot > hi || len(m) < 2 {
			continue
		}
		port, _ := m[1].(int64)
		for i, n := range c.Nodes {
			if strings.HasSuffix(n.Addr(), ":"+strconv.FormatInt(port, 10)) {
				return i, nil
			}
		}
	}
	return -1, fmt.Errorf("engines: no master serves slot %d of %q", slot, key)
}
