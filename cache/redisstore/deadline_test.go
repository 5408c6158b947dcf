package redisstore

import (
	"context"
	"testing"
	"time"
)

func TestSharedDeadline(t *testing.T) {
	const timeout = 800 * time.Millisecond
	var d sharedDeadline
	before := time.Now()
	a := d.get(timeout)
	b := d.get(timeout)
	after := time.Now()
	dl, ok := a.Deadline()
	if !ok {
		t.Fatal("shared context has no deadline")
	}
	if dl.Before(before.Add(timeout)) || dl.After(after.Add(timeout)) {
		t.Fatalf("deadline %v after the call, want %v", dl.Sub(before), timeout)
	}
	if a != b && after.Sub(before) < timeout/8 {
		t.Fatal("two calls within an eighth of the timeout got different contexts")
	}
	time.Sleep(timeout/8 + 10*time.Millisecond) // the slice in which a is handed out ends
	c := d.get(timeout)
	if c == a {
		t.Fatal("the same context was handed out after its slice ended")
	}
	if dl, _ := c.Deadline(); time.Until(dl) < timeout*7/8-50*time.Millisecond {
		t.Fatalf("renewed context ends in %v, want about %v", time.Until(dl), timeout)
	}
	<-a.Done() // the first context ends at its deadline
	if a.Err() != context.DeadlineExceeded {
		t.Fatalf("first context ended with %v", a.Err())
	}
}

func TestBoundKeepsCallerCancellation(t *testing.T) {
	s := &Store{timeout: time.Minute}
	ctx, cancel := context.WithCancel(context.Background())
	bctx, done := s.bound(ctx)
	defer done()
	cancel()
	select {
	case <-bctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a cancelled caller's call was not cancelled")
	}
	if _, ok := bctx.Deadline(); !ok {
		t.Fatal("bound context has no deadline")
	}
	plain, _ := s.bound(context.Background())
	if dl, ok := plain.Deadline(); !ok || time.Until(dl) > time.Minute {
		t.Fatalf("Background call bounded by %v (%v), want at most the timeout", time.Until(dl), ok)
	}
}
