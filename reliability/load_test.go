package reliability

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/strata-project/strata/server"
)

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// loadSpec is a bounded load of concurrent clients.
type loadSpec struct {
	base    string // http://host:port of the load balancer
	apiKey  string
	coll    string
	clients int
	// keys per client: client c owns "<prefix>c<c>-<i>", so its writes to a key are
	// sequential and "the last acknowledged value" is well defined. With shared set, every
	// client uses "<prefix>s<i>" instead (for linearizability).
	keys    int
	shared  bool
	prefix  string
	reads   float64 // share of reads, 0..1
	writes  []Kind  // write kinds, cycled through
	session bool    // carry the Strata-Session token
	dur     time.Duration
	maxOps  int           // per client
	timeout time.Duration // per request (the client's deadline)
	seed    uint64
}

// newClient returns an HTTP client for one load client with its own connections.
func newClient(timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			MaxIdleConnsPerHost: 2,
			DialContext:         (&net.Dialer{Timeout: time.Second}).DialContext,
		},
	}
}

// keyName returns the i-th key of client c.
func (s *loadSpec) keyName(c, i int) string {
	if s.shared {
		return fmt.Sprintf("%ss%d", s.prefix, i)
	}
	return fmt.Sprintf("%sc%d-%d", s.prefix, c, i)
}

// client is one load client's state.
type client struct {
	n       int
	spec    *loadSpec
	hc      *http.Client
	h       *History
	token   string // session token
	seq     int64
	rng     *rand.Rand
	idemSeq int
}

// seedKeys writes every key once (recorded in h), so that later reads and patches find
// documents.
// seedValue offsets the values seedKeys writes, so that no value of the load (client
// number times 10^9 plus a sequence number) repeats one of them.
const seedValue = 1_000_000_000_000

func seedKeys(t *testing.T, h *History, spec loadSpec) {
	t.Helper()
	c := &client{n: 0, spec: &spec, hc: newClient(spec.timeout), h: h, rng: rand.New(rand.NewPCG(spec.seed, 99))}
	defer c.hc.CloseIdleConnections()
	n := spec.clients
	if spec.shared {
		n = 1
	}
	for cl := range n {
		for i := range spec.keys {
			c.seq++
			o := c.do(context.Background(), PutKeyed, spec.keyName(cl, i), seedValue+int64(cl)*1_000_000_000+c.seq)
			if !o.OK() {
				t.Fatalf("seed %s: status %d %s", o.Key, o.Status, o.Err)
			}
		}
	}
}

// runLoad runs the clients until spec.dur passes, each has done spec.maxOps, or ctx ends.
// The end is checked between operations: a request is never cut short by the harness, only
// by its own deadline (spec.timeout).
func runLoad(ctx context.Context, h *History, spec loadSpec) {
	end := time.Now().Add(spec.dur)
	var wg sync.WaitGroup
	for cn := range spec.clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &client{n: cn, spec: &spec, hc: newClient(spec.timeout), h: h, rng: rand.New(rand.NewPCG(spec.seed, uint64(cn)))}
			defer c.hc.CloseIdleConnections()
			for i := 0; i < spec.maxOps && ctx.Err() == nil && time.Now().Before(end); i++ {
				key := spec.keyName(cn, c.rng.IntN(spec.keys))
				if c.rng.Float64() < spec.reads {
					c.do(context.Background(), Get, key, 0)
					continue
				}
				c.seq++
				kind := spec.writes[i%len(spec.writes)]
				c.do(context.Background(), kind, key, int64(cn)*1_000_000_000+c.seq)
			}
		}()
	}
	wg.Wait()
}

// do runs one operation and records it. A keyed PUT is retried with the same key on a
// transport error, 5xx or 409 until it succeeds or its deadline passes, as a client of an
// idempotent API does; the record spans every attempt.
func (c *client) do(ctx context.Context, kind Kind, key string, value int64) Op {
	o := Op{Client: c.n, Kind: kind, Key: key, Value: value, Start: c.h.Now()}
	deadline := time.Now().Add(c.spec.timeout)
	idem := ""
	if kind == PutKeyed {
		c.idemSeq++
		idem = fmt.Sprintf("k-%d-%d-%d", c.n, c.idemSeq, rand.Int64())
	}
	notApplied := true // every attempt so far was refused before it was applied
	for attempt := 0; ; attempt++ {
		c.once(ctx, &o, idem)
		notApplied = notApplied && o.NotApplied
		retry := kind == PutKeyed && (o.Status == 0 || o.Status >= 500 || o.Status == 409)
		if !retry || time.Now().Add(200*time.Millisecond).After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(time.Duration(min(50*(attempt+1), 500)) * time.Millisecond) // back off before the retry
	}
	// A retried write is known not to have happened only if no attempt may have applied it.
	o.NotApplied = notApplied
	o.End = c.h.Now()
	c.h.Add(o)
	return o
}

func (c *client) once(ctx context.Context, o *Op, idem string) {
	url := c.spec.base + "/v1/" + c.spec.coll + "/" + o.Key
	var req *http.Request
	switch o.Kind {
	case Get:
		req, _ = http.NewRequest(http.MethodGet, url, nil)
	case Patch:
		req, _ = http.NewRequest(http.MethodPatch, url, strings.NewReader(fmt.Sprintf(`{"n":%d}`, o.Value)))
		req.Header.Set("Content-Type", "application/merge-patch+json")
	default:
		req, _ = http.NewRequest(http.MethodPut, url, strings.NewReader(fmt.Sprintf(`{"c":%d,"n":%d}`, o.Client, o.Value)))
		req.Header.Set("Content-Type", "application/json")
	}
	req = req.WithContext(ctx)
	req.Header.Set("Authorization", "Bearer "+c.spec.apiKey)
	if idem != "" {
		req.Header.Set("Idempotency-Key", idem)
	}
	if c.spec.session && c.token != "" {
		req.Header.Set("Strata-Session", c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		o.Status, o.Err = 0, err.Error()
		return
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	o.Status, o.Err = resp.StatusCode, ""
	if err != nil {
		o.Status, o.Err = 0, "body: "+err.Error()
		return
	}
	if t := resp.Header.Get("Strata-Session"); t != "" {
		c.token = t
	}
	if v, err := strconv.ParseInt(strings.Trim(resp.Header.Get("ETag"), `"W/`), 10, 64); err == nil {
		o.Version = v
	}
	o.Retry = resp.Header.Get("Retry-After")
	o.NotApplied = resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get(server.HeaderWriteApplied) == "false"
	o.Served = resp.Header.Get("X-Served-By") + resp.Header.Get("X-Cache")
	if o.Kind == Get {
		switch {
		case resp.StatusCode == 200:
			o.Value = docValue(body)
		case resp.StatusCode == 404 && bytes.Contains(body, []byte("not-found")):
			o.Value = -1
		}
	}
}

// rywViolations counts reads, by a client in session mode, that returned an older version
// of a key than the client's own last acknowledged write of it.
func rywViolations(ops []Op) (n int, first string) {
	type ck struct {
		c int
		k string
	}
	last := map[ck]int64{}
	for _, o := range ops { // sorted by start; each client is sequential
		k := ck{o.Client, o.Key}
		switch {
		case o.Write() && o.OK() && o.Version > 0:
			last[k] = max(last[k], o.Version)
		case o.Kind == Get && o.OK() && o.Version < last[k]:
			n++
			if first == "" {
				first = fmt.Sprintf("client %d read %s at version %d after writing version %d (served by %q)", o.Client, o.Key, o.Version, last[k], o.Served)
			}
		}
	}
	return n, first
}

// lastAcked returns, per key, the value of the last acknowledged write and the values of the
// writes after it whose outcome is unknown (any of which may be what the store holds).
func lastAcked(ops []Op) map[string][]int64 {
	out := map[string][]int64{}
	for _, o := range ops {
		if !o.Write() {
			continue
		}
		if o.OK() {
			out[o.Key] = []int64{o.Value}
		} else {
			out[o.Key] = append(out[o.Key], o.Value)
		}
	}
	return out
}

// filter returns the ops for which keep is true.
func filter(ops []Op, keep func(Op) bool) []Op {
	var out []Op
	for _, o := range ops {
		if keep(o) {
			out = append(out, o)
		}
	}
	return out
}

// statuses counts ops by status (0: transport error), for failure messages.
func statuses(ops []Op) string {
	m := map[int]int{}
	for _, o := range ops {
		m[o.Status]++
	}
	return fmt.Sprint(m)
}

// firstErrs returns up to n failed ops, for failure messages.
func firstErrs(ops []Op, n int) string {
	var b strings.Builder
	for _, o := range ops {
		if !o.OK() && n > 0 {
			n--
			fmt.Fprintf(&b, "\n  %+v", o)
		}
	}
	return b.String()
}

// waitUntil polls cond every 10ms until it holds or timeout passes, and returns how long
// that took (-1 on timeout).
func waitUntil(timeout time.Duration, cond func() bool) time.Duration {
	start := time.Now()
	for time.Since(start) < timeout {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return -1
}
