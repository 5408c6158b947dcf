package cache

import "sync"

// flight is one in-process load shared by every caller that missed the same key.
type flight struct {
	done  chan struct{} // closed when value and err are set
	value []byte
	err   error
}

// flights collapses concurrent loads of a key (singleflight). Unlike the classic group, the
// load runs on a goroutine of its own, owned by the Cache, so that the first caller giving up
// does not cancel the others' load.
type flights struct {
	mu sync.Mutex         // protects m
	m  map[string]*flight // loads in progress
}

// join returns the key's flight and whether the caller leads it (must start the load).
func (g *flights) join(key string) (f *flight, leader bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f = g.m[key]; f != nil {
		return f, false
	}
	if g.m == nil {
		g.m = make(map[string]*flight)
	}
	f = &flight{done: make(chan struct{})}
	g.m[key] = f
	return f, true
}

// finish publishes the flight's result and forgets it.
func (g *flights) finish(key string, f *flight, value []byte, err error) {
	g.mu.Lock()
	delete(g.m, key)
	g.mu.Unlock()
	f.value, f.err = value, err
	close(f.done)
}
