package config_test

import (
	"fmt"

	"github.com/strata-project/strata/config"
)

func Example() {
	f, err := config.Parse([]byte(`
lb:
  listen: :8080
  backends:
    - address: 10.0.0.1:8000
    - address: 10.0.0.2:8000
      weight: 2
  health:
    interval: 1s
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(len(f.LB.Backends), f.LB.Backends[1].Weight, f.LB.Health.Interval.D())

	_, err = config.Parse([]byte("lb:\n  backends:\n    - address: 10.0.0.1\n"))
	fmt.Println(err)
	// Output:
	// 2 2 1s
	// config: invalid: line 3: lb.backends[0].address: "10.0.0.1" is not host:port
}
