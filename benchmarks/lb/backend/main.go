// Command backend is the tiny HTTP server the load balancer comparison puts
// behind each proxy: it answers every request with a short fixed body, and
// /readyz with 200.
package main

import (
	"flag"
	"log"
	"net/http"
	"strings"
	"sync"
)

func main() {
	addrs := flag.String("listen", "127.0.0.1:18001", "comma-separated addresses to listen on (loopback)")
	flag.Parse()
	body := []byte("hello from strata benchmark backend\n")
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
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
