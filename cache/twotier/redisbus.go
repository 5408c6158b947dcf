package twotier

import (
	"context"
	"sync"
	"time"

	"github.com/redis/rueidis"
)

// RedisBus is a Bus over Redis pub/sub (standalone or Cluster: PUBLISH reaches every node).
// Each Subscribe holds one dedicated connection and resubscribes after a failure.
type RedisBus struct {
	client  rueidis.Client
	channel string
	timeout time.Duration
}

var _ Bus = (*RedisBus)(nil)

// NewRedisBus returns a bus on channel (default "strata:invalidate") of client. timeout
// bounds Publish and each subscribe attempt (default 250ms). The caller owns client.
func NewRedisBus(client rueidis.Client, channel string, timeout time.Duration) *RedisBus {
	if channel == "" {
		channel = "strata:invalidate"
	}
	if timeout <= 0 {
		timeout = 250 * time.Millisecond
	}
	return &RedisBus{client: client, channel: channel, timeout: timeout}
}

// Publish publishes key on the channel.
func (b *RedisBus) Publish(ctx context.Context, key string) error {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	return b.client.Do(ctx, b.client.B().Publish().Channel(b.channel).Message(key).Build()).Error()
}

// Subscribe starts a goroutine that keeps a subscription to the channel and delivers keys to
// onKey; the returned function stops it and waits for it.
func (b *RedisBus) Subscribe(onKey func(key string), onState func(up bool)) func() {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		b.run(ctx, onKey, onState)
	}()
	return func() { cancel(); wg.Wait() }
}

func (b *RedisBus) run(ctx context.Context, onKey func(string), onState func(bool)) {
	backoff := 10 * time.Millisecond
	for ctx.Err() == nil {
		dc, release := b.client.Dedicate()
		lost := dc.SetPubSubHooks(rueidis.PubSubHooks{
			OnMessage: func(m rueidis.PubSubMessage) { onKey(m.Message) },
			OnSubscription: func(s rueidis.PubSubSubscription) {
				if s.Kind == "subscribe" && s.Channel == b.channel {
					onState(true)
				}
			},
		})
		sctx, scancel := context.WithTimeout(ctx, b.timeout)
		err := dc.Do(sctx, dc.B().Subscribe().Channel(b.channel).Build()).Error()
		scancel()
		if err == nil {
			backoff = 10 * time.Millisecond
			select {
			case <-lost:
			case <-ctx.Done():
			}
		}
		onState(false)
		dc.Close() // a connection that held hooks is not reused
		release()
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
		backoff = min(2*backoff, time.Second)
	}
}
