// Command backend is the tiny HTTP server the load balancer comparison puts
// behind each proxy: it answers every request with a short fixed body, and
// /readyz with 200. With -json it plays a static document API for the end-to-end
// comparison: every request (GET or PUT) gets the same small JSON document, the
// request body is read and dropped.
package main

import (
	"flag"
	"io"
	"log"
	"net/http"
	"strings"
	"sync"
)

func main() {
	addrs := flag.String("listen", "127.0.0.1:18001", "comma-separated addresses to listen on (loopback)")
	asJSON := flag.Bool("json", false, "answer a fixed JSON document, as a static document API")
	flag.Parse()
	body, ctype := []byte("hello from strata benchmark backend\n"), "text/plain"
	if *asJSON {
		body, ctype = []byte(`{"id":"k1","greeting":"hello from a static backend","n":1}`), "application/json"
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil {
			io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
		}
		w.Header().Set("Content-Type", ctype)
		if *asJSON {
			w.Header().Set("ETag", `"1"`)
		}
		w.Write(body)
	})
	var wg sync.WaitGroup
	for _, a := range strings.Split(*addrs, ",") {
		wg.Add(1)
		go func() {
			defer wg.Done()
			log.Fatal(http.ListenAndServe(a, h))
		}()
	}
	wg.Wait()
}
