package cachenode_test

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
	token := []byte("sixteen-bytes-or-more")
	mem, _ := memstore.New(memstore.Config{MaxBytes: 32 << 20})
	defer mem.Close()
	srv, _ := cachenode.New(cachenode.Config{Store: mem, Token: token})
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln)
	defer srv.Close()

	// Two app servers, one cache.
	a, _ := nodestore.New(nodestore.Config{Addr: ln.Addr().String(), Token: token})
	b, _ := nodestore.New(nodestore.Config{Addr: ln.Addr().String(), Token: token})
	defer a.Close()
	defer b.Close()
	ctx := context.Background()
	a.SetIfNewer(ctx, "users/7", cache.Entry{Value: []byte(`{"name":"Ada"}`), Version: 3}, 0)
	e, ok, _ := b.Get(ctx, "users/7")
	fmt.Println(ok, e.Version, string(e.Value))
	// Output: true 3 {"name":"Ada"}
}
