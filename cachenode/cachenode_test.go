package cachenode_test

import (
	"bufio"
	"errors"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/strata-project/strata/cache/memstore"
	"github.com/strata-project/strata/cachenode"
	"github.com/strata-project/strata/cachenode/wire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var token = []byte("0123456789abcdef-node")

func start(t *testing.T, cfg cachenode.Config) (string, *cachenode.Server) {
	t.Helper()
	mem, err := memstore.New(memstore.Config{})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Store, cfg.Token = mem, token
	srv, err := cachenode.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, cachenode.ErrClosed) {
			t.Errorf("Serve: %v", err)
		}
		mem.Close()
	})
	return ln.Addr().String(), srv
}

func TestNewValidates(t *testing.T) {
	mem, _ := memstore.New(memstore.Config{})
	defer mem.Close()
	for _, cfg := range []cachenode.Config{
		{Token: token},
		{Store: mem},
		{Store: mem, Token: []byte("short")},
	} {
		if _, err := cachenode.New(cfg); !errors.Is(err, cachenode.ErrConfig) {
			t.Errorf("New(store %v, token %q) = %v, want ErrConfig", cfg.Store != nil, cfg.Token, err)
		}
	}
}

// roundTrip sends frames on a raw connection and reads one answer per frame.
func roundTrip(t *testing.T, c net.Conn, r *bufio.Reader, reqs ...wire.Request) []wire.Response {
	t.Helper()
	var out []byte
	for i := range reqs {
		out = wire.AppendRequest(out, uint32(i+1), &reqs[i])
	}
	if _, err := c.Write(out); err != nil {
		t.Fatal(err)
	}
	var resps []wire.Response
	for i := range reqs {
		f, err := wire.ReadFrame(r, 1<<20)
		if err != nil {
			t.Fatalf("answer %d: %v", i+1, err)
		}
		if f.ID != uint32(i+1) {
			t.Fatalf("answer %d has id %d", i+1, f.ID)
		}
		resp, err := wire.ParseResponse(f)
		if err != nil {
			t.Fatal(err)
		}
		resps = append(resps, resp)
	}
	return resps
}

// TestPipelinedAnswersInOrder: a batch of requests written at once is answered in order, with
// the outcomes of the ordering rule.
func TestPipelinedAnswersInOrder(t *testing.T) {
	addr, srv := start(t, cachenode.Config{})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	got := roundTrip(t, c, r,
		wire.Request{Op: wire.OpAuth, Value: token},
		wire.Request{Op: wire.OpSetIfNewer, Key: "k", Version: 2, Value: []byte("v2")},
		wire.Request{Op: wire.OpSetIfNewer, Key: "k", Version: 1, Value: []byte("v1")},
		wire.Request{Op: wire.OpGet, Key: "k"},
		wire.Request{Op: wire.OpLease, Key: "k", TTL: time.Minute},
		wire.Request{Op: wire.OpLease, Key: "k", TTL: time.Minute},
		wire.Request{Op: wire.OpGet, Key: "absent"},
	)
	want := []wire.Status{wire.StatusOK, wire.StatusStored, wire.StatusRefused, wire.StatusHit, wire.StatusLeased, wire.StatusBusy, wire.StatusMiss}
	for i, s := range want {
		if got[i].Status != s {
			t.Errorf("answer %d: status %d, want %d", i+1, got[i].Status, s)
		}
	}
	if string(got[3].Value) != "v2" || got[3].Version != 2 {
		t.Errorf("Get = %q v%d, want v2 at 2", got[3].Value, got[3].Version)
	}
	if n := srv.Stats().Leases; n != 1 {
		t.Errorf("Stats().Leases = %d, want 1", n)
	}
	rel := roundTrip(t, c, r,
		wire.Request{Op: wire.OpRelease, Key: "k", Token: got[4].Token + 1}, // not the holder's
		wire.Request{Op: wire.OpLease, Key: "k", TTL: time.Minute},
		wire.Request{Op: wire.OpRelease, Key: "k", Token: got[4].Token},
		wire.Request{Op: wire.OpLease, Key: "k", TTL: time.Minute},
	)
	if rel[1].Status != wire.StatusBusy || rel[3].Status != wire.StatusLeased {
		t.Errorf("lease after a foreign release: %d, after the holder's: %d", rel[1].Status, rel[3].Status)
	}
}

// TestRequiresToken: a connection that does not authenticate first is closed unanswered.
func TestRequiresToken(t *testing.T) {
	for name, first := range map[string]wire.Request{
		"wrong token": {Op: wire.OpAuth, Value: []byte("0123456789abcdef-nope")},
		"no auth":     {Op: wire.OpGet, Key: "k"},
	} {
		t.Run(name, func(t *testing.T) {
			addr, srv := start(t, cachenode.Config{})
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			out := wire.AppendRequest(nil, 1, &first)
			out = wire.AppendRequest(out, 2, &wire.Request{Op: wire.OpGet, Key: "k"})
			c.Write(out)
			r := bufio.NewReader(c)
			f, err := wire.ReadFrame(r, 1<<20)
			if err != nil || f.Code != wire.StatusError {
				t.Fatalf("first answer: %+v, %v; want an error status", f, err)
			}
			if _, err := wire.ReadFrame(r, 1<<20); err == nil {
				t.Fatal("the node answered a request after a failed authentication")
			}
			if n := srv.Stats().AuthFailures; n != 1 {
				t.Fatalf("AuthFailures = %d", n)
			}
		})
	}
}

// TestSilentClientTimesOut: a connection that never sends its token is closed after
// AuthTimeout.
func TestSilentClientTimesOut(t *testing.T) {
	addr, _ := start(t, cachenode.Config{AuthTimeout: 50 * time.Millisecond})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [1]byte
	if _, err := c.Read(b[:]); err == nil {
		t.Fatal("read a byte from a node that should have closed")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the node kept a silent connection open for 5s")
	}
}
