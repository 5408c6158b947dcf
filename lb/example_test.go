package lb_test

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/strata-project/strata/lb"
)

func Example() {
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello, %s", r.Header.Get("X-Forwarded-For"))
	}))
	defer app.Close()

	l, err := lb.New(lb.Config{
		Backends: []lb.BackendConfig{{Addr: app.Listener.Addr().String()}},
		Health:   lb.HealthConfig{Disabled: true},
		Logger:   slog.New(slog.DiscardHandler),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer l.Close()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go l.Serve(ln)

	resp, err := http.Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(resp.StatusCode, string(body))
	// Output: 200 hello, 127.0.0.1
}

func ExampleEjector() {
	e := lb.Ejector{ConsecutiveFailures: 2, BaseEjection: 10 * time.Second}
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	for i, now := range []time.Time{t0, t0, t0.Add(11 * time.Second), t0.Add(11 * time.Second)} {
		if eject, until := e.FailureAt(now); eject {
			fmt.Println("failure", i+1, "ejects for", until.Sub(now))
		} else {
			fmt.Println("failure", i+1, "counted")
		}
	}
	// Output:
	// failure 1 counted
	// failure 2 ejects for 10s
	// failure 3 counted
	// failure 4 ejects for 20s
}
