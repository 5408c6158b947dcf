package redisqueue_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/redis/rueidis"

	"github.com/strata-project/strata/cache/writebehind"
	"github.com/strata-project/strata/cache/writebehind/redisqueue"
	"github.com/strata-project/strata/internal/testenv"
)

func TestMain(m *testing.M) { testenv.Main(m) }

func client(t *testing.T) rueidis.Client {
	r := testenv.SharedRedis(t)
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{r.Addr()}, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

type memTarget struct {
	mu   sync.Mutex
	rows map[string]string
}

func (m *memTarget) Apply(_ context.Context, key string, value []byte, deleted bool, _ int64) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if deleted {
		delete(m.rows, key)
	} else {
		m.rows[key] = string(value)
	}
	return 1, nil
}

func TestReplayUnacknowledged(t *testing.T) {
	ctx := context.Background()
	c := client(t)
	q, err := redisqueue.New(ctx, redisqueue.Config{Client: c, Stream: "wb"})
	if err != nil {
		t.Fatal(err)
	}
	recs := []writebehind.Record{{Key: "a", Value: []byte("1")}, {Key: "b", Value: []byte{0, 255}, Stamp: 1_764_000_000_000_000_001}, {Key: "c", Deleted: true, Stamp: 7}}
	if err := q.Append(ctx, recs); err != nil {
		t.Fatal(err)
	}
	if err := q.Ack(ctx, recs[0].Offset); err != nil {
		t.Fatal(err)
	}
	// A restart: a new queue over the same stream replays b and c.
	q2, err := redisqueue.New(ctx, redisqueue.Config{Client: c, Stream: "wb"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := q2.Replay(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Key != "b" || string(got[0].Value) != "\x00\xff" || got[0].Stamp != recs[1].Stamp ||
		got[1].Key != "c" || !got[1].Deleted || got[1].Stamp != 7 {
		t.Fatalf("replay = %+v, want b and the delete of c", got)
	}
	// Delivered but not acknowledged: a second restart replays them again (at least once).
	q3, _ := redisqueue.New(ctx, redisqueue.Config{Client: c, Stream: "wb"})
	again, err := q3.Replay(ctx)
	if err != nil || len(again) != 2 {
		t.Fatalf("second replay = %+v, %v; want the same 2 records", again, err)
	}
	if err := q3.Ack(ctx, again[1].Offset); err != nil {
		t.Fatal(err)
	}
	q4, _ := redisqueue.New(ctx, redisqueue.Config{Client: c, Stream: "wb"})
	if rest, err := q4.Replay(ctx); err != nil || len(rest) != 0 {
		t.Fatalf("replay after ack = %+v, %v; want nothing", rest, err)
	}
}

func TestWriteBehindOverStream(t *testing.T) {
	ctx := context.Background()
	c := client(t)
	q, err := redisqueue.New(ctx, redisqueue.Config{Client: c, Stream: "wb2"})
	if err != nil {
		t.Fatal(err)
	}
	tg := &memTarget{rows: map[string]string{}}
	w, err := writebehind.New(writebehind.Config{Queue: q, Target: tg})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 100 {
		if err := w.Write(ctx, fmt.Sprint("k", i%10), []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	w.Close()
	for i := 90; i < 100; i++ {
		if v := tg.rows[fmt.Sprint("k", i%10)]; v != fmt.Sprint(i) {
			t.Fatalf("k%d = %q, want %d", i%10, v, i)
		}
	}
	n, err := c.Do(ctx, c.B().Xlen().Key("wb2").Build()).AsInt64()
	if err != nil || n != 0 {
		t.Fatalf("XLEN after flush = %d, %v; want 0", n, err)
	}
}
