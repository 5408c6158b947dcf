package cache

import "sync"

// flight is one in-process load of a key.
type flight struct {
	done    chan struct{} // closed when the fields below are set
	value   []byte
	err     error
	shared  bool // the result may be handed to every joiner (else joiners re-read the store)
	started bool // the source read has begun: later callers must not take this result
}

// flights collapses concurrent loads of a key (singleflight) without breaking
// linearizability: a caller joins a flight only while its source read has not begun, so the
// value it gets was read after its own call began. A caller that finds the read already
// running waits for it to end and then starts over (by then the store usually holds the
// fill, so it hits). The load runs on a goroutine owned by the Cache, so the first caller
// giving up does not cancel the others' load.
type flights struct {
	mu sync.Mutex         // protects m and every flight's started
	m  map[string]*flight // loads in progress
}

// join returns the key's flight, whether the caller leads it (must start the load), and
// whether the caller may take its result (false: wait for it, then start over).
func (g *flights) join(key string) (f *flight, leader, joined bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f = g.m[key]; f != nil {
		return f, false, !f.started
	}
	if g.m == nil {
		g.m = make(map[string]*flight)
	}
	f = &flight{done: make(chan struct{})}
	g.m[key] = f
	return f, true, true
}

// start closes the flight to new joiners; called just before the source read.
func (g *flights) start(f *flight) {
	g.mu.Lock()
	f.started = true
	g.mu.Unlock()
}

// finish publishes the flight's result and forgets it. A result that is not shared goes to
// the leader only.
func (g *flights) finish(key string, f *flight, value []byte, err error, shared bool) {
	g.mu.Lock()
	delete(g.m, key)
	f.started = true
	g.mu.Unlock()
	f.value, f.err, f.shared = value, err, shared
	close(f.done)
}
