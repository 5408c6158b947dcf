package redisstore

import (
	"sync"
	"sync/atomic"
	"time"
)

// fences remembers, per key, until when Get must bypass the client-side cache. Reads are
// lock-free and cost one atomic load while no fence is set.
type fences struct {
	n      atomic.Int64 // number of entries in m
	m      sync.Map     // key -> time.Time (bypass until)
	writes atomic.Int64 // adds since the last sweep
}

func (f *fences) add(key string, until time.Time) {
	if _, loaded := f.m.Swap(key, until); !loaded {
		f.n.Add(1)
	}
	if f.writes.Add(1)%1024 == 0 {
		f.sweep(time.Now())
	}
}

func (f *fences) active(key string, now time.Time) bool {
	if f.n.Load() == 0 {
		return false
	}
	v, ok := f.m.Load(key)
	if !ok {
		return false
	}
	if now.Before(v.(time.Time)) {
		return true
	}
	if f.m.CompareAndDelete(key, v) {
		f.n.Add(-1)
	}
	return false
}

// sweep drops expired fences (keys written and never read again).
func (f *fences) sweep(now time.Time) {
	f.m.Range(func(k, v any) bool {
		if !now.Before(v.(time.Time)) && f.m.CompareAndDelete(k, v) {
			f.n.Add(-1)
		}
		return true
	})
}
