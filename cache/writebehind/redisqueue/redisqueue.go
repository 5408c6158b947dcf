// Package redisqueue is a write-behind Queue on a Redis Stream with a consumer group: the
// queue to use when the app server's disk is not durable enough, or when the queue must
// outlive the machine.
//
// Append adds one stream entry per record (XADD, pipelined) and returns once Redis has
// them: they are as durable as Redis is configured to be (appendfsync always for the
// guarantee of the local log's SyncAlways; replicas for a machine loss). Ack acknowledges
// and deletes the applied entries (XACK, XDEL). Replay, after a restart, reads the
// consumer's pending entries (delivered before the crash, not acknowledged) and then every
// entry never delivered, through the consumer group (XREADGROUP): at-least-once delivery,
// which write-behind's idempotent apply absorbs.
//
// Give each writing process its own stream (or its own consumer name and stream): a
// process replays the whole stream it opens.
package redisqueue

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/redis/rueidis"

	"github.com/strata-project/strata/cache/writebehind"
)

// Config configures a Queue. Client and Stream are required.
type Config struct {
	// Client is the Redis client; the Queue does not close it.
	Client rueidis.Client
	// Stream is the stream's key. Required.
	Stream string
	// Group is the consumer group. Default "writebehind".
	Group string
	// Consumer is this process's consumer name in the group. Default "writer".
	Consumer string
}

// Queue is a writebehind.Queue on a Redis Stream. Safe for concurrent use.
type Queue struct {
	cfg Config

	mu   sync.Mutex        // protects next and ids
	next uint64            // offset of the next record
	ids  map[uint64]string // stream entry ids of the records not yet acknowledged
}

var _ writebehind.Queue = (*Queue)(nil)

// New creates the stream and its group if needed.
func New(ctx context.Context, cfg Config) (*Queue, error) {
	if cfg.Client == nil || cfg.Stream == "" {
		return nil, errors.New("redisqueue: Client and Stream are required")
	}
	if cfg.Group == "" {
		cfg.Group = "writebehind"
	}
	if cfg.Consumer == "" {
		cfg.Consumer = "writer"
	}
	c := cfg.Client
	err := c.Do(ctx, c.B().XgroupCreate().Key(cfg.Stream).Group(cfg.Group).Id("0").Mkstream().Build()).Error()
	if err != nil && !rueidis.IsRedisBusyGroup(err) {
		return nil, fmt.Errorf("redisqueue: create group: %w", err)
	}
	return &Queue{cfg: cfg, ids: make(map[uint64]string)}, nil
}

// Append adds recs to the stream in order and assigns their offsets.
func (q *Queue) Append(ctx context.Context, recs []writebehind.Record) error {
	c := q.cfg.Client
	cmds := make(rueidis.Commands, len(recs))
	for i, r := range recs {
		del := "0"
		if r.Deleted {
			del = "1"
		}
		cmds[i] = c.B().Xadd().Key(q.cfg.Stream).Id("*").FieldValue().
			FieldValue("k", r.Key).FieldValue("v", string(r.Value)).FieldValue("d", del).
			FieldValue("s", strconv.FormatInt(r.Stamp, 10)).Build()
	}
	res := c.DoMulti(ctx, cmds...)
	ids := make([]string, len(recs))
	for i, r := range res {
		id, err := r.ToString()
		if err != nil {
			return fmt.Errorf("redisqueue: append: %w", err)
		}
		ids[i] = id
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for i := range recs {
		recs[i].Offset = q.next
		q.ids[q.next] = ids[i]
		q.next++
	}
	return nil
}

// Ack acknowledges and deletes the entries of every record through offset.
func (q *Queue) Ack(ctx context.Context, offset uint64) error {
	q.mu.Lock()
	var ids []string
	var offs []uint64
	for o, id := range q.ids {
		if o <= offset {
			ids = append(ids, id)
			offs = append(offs, o)
		}
	}
	q.mu.Unlock()
	if len(ids) == 0 {
		return nil
	}
	c := q.cfg.Client
	res := c.DoMulti(ctx,
		c.B().Xack().Key(q.cfg.Stream).Group(q.cfg.Group).Id(ids...).Build(),
		c.B().Xdel().Key(q.cfg.Stream).Id(ids...).Build())
	for _, r := range res {
		if err := r.Error(); err != nil {
			return fmt.Errorf("redisqueue: ack: %w", err)
		}
	}
	q.mu.Lock()
	for _, o := range offs {
		delete(q.ids, o)
	}
	q.mu.Unlock()
	return nil
}

// Replay returns the records left in the stream: this consumer's pending entries, then the
// entries never delivered, in stream order.
func (q *Queue) Replay(ctx context.Context) ([]writebehind.Record, error) {
	var out []writebehind.Record
	for _, start := range []string{"0", ">"} {
		after := start
		for {
			c := q.cfg.Client
			m, err := c.Do(ctx, c.B().Xreadgroup().Group(q.cfg.Group, q.cfg.Consumer).Count(1000).
				Streams().Key(q.cfg.Stream).Id(after).Build()).AsXRead()
			if rueidis.IsRedisNil(err) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("redisqueue: replay: %w", err)
			}
			entries := m[q.cfg.Stream]
			if len(entries) == 0 {
				break
			}
			q.mu.Lock()
			for _, e := range entries {
				if e.FieldValues == nil {
					continue // deleted while pending
				}
				r := writebehind.Record{Offset: q.next, Key: e.FieldValues["k"], Deleted: e.FieldValues["d"] == "1"}
				r.Stamp, _ = strconv.ParseInt(e.FieldValues["s"], 10, 64) // absent in older entries: 0
				if !r.Deleted {
					r.Value = []byte(e.FieldValues["v"])
				}
				q.ids[q.next] = e.ID
				q.next++
				out = append(out, r)
			}
			q.mu.Unlock()
			if start == "0" {
				after = entries[len(entries)-1].ID
			}
		}
	}
	return out, nil
}

// Close does nothing: the client belongs to the caller.
func (q *Queue) Close() error { return nil }
