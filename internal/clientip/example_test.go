package clientip_test

import (
	"fmt"
	"net/http"
	"net/netip"

	"github.com/strata-project/strata/internal/clientip"
)

func ExampleResolver_Resolve() {
	r, _ := clientip.New([]netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, clientip.XForwardedFor)
	h := http.Header{"X-Forwarded-For": {"1.2.3.4, 198.51.100.7, 10.0.0.9"}}
	fmt.Println(r.Resolve("10.0.0.1:443", h))    // behind two trusted hops
	fmt.Println(r.Resolve("203.0.113.5:443", h)) // not a proxy: the header is ignored
	// Output:
	// 198.51.100.7
	// 203.0.113.5
}
