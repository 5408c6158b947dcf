package nodestore_test

import (
	"context"
	"fmt"
	"net"

	"github.com/strata-project/strata/cache"
	"github.com/strata-project/strata/cache/memstore"
	"github.com/strata-project/strata/cache/nodestore"
	"github.com/strata-project/strata/cachenode"
)

func Example() {
	secret := []byte("a shared secret of 16+ bytes")
	// The node: in `strata up`, a process of its own (`strata cachenode`).
	mem, _ := memstore.New(memstore.Config{MaxBytes: 64 << 20})
	defer mem.Close()
	srv, _ := cachenode.New(cachenode.Config{Store: mem, Token: secret})
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln)
	defer srv.Close()

	// The client, in every app server.
	s, _ := nodestore.New(nodestore.Config{Addr: ln.Addr().String(), Token: secret})
	defer s.Close()
	ctx := context.Background()
	s.SetIfNewer(ctx, "doc/1", cache.Entry{Value: []byte(`{"n":1}`), Version: 1}, 0)
	s.Invalidate(ctx, "doc/1", 2, 0) // a writer moved the document to version 2
	r, _ := s.SetIfNewer(ctx, "doc/1", cache.Entry{Value: []byte(`{"n":1}`), Version: 1}, 0)
	fmt.Println("stale set refused:", r == cache.Refused)
	// Output: stale set refused: true
}
