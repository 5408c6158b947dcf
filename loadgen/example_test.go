package loadgen_test

import (
	"fmt"

	"github.com/strata-project/strata/loadgen"
)

func ExampleParseChaos() {
	events, err := loadgen.ParseChaos("20s:stop-cache, 10s:kill-app:2")
	if err != nil {
		panic(err)
	}
	for _, e := range events {
		fmt.Println(e.At, e.Action, e.Target)
	}
	// Output:
	// 10s kill-app 2
	// 20s stop-cache
}

func ExampleZipf() {
	z, err := loadgen.NewZipf(1000, 1.0)
	if err != nil {
		panic(err)
	}
	fmt.Printf("rank 1: %.4f, rank 10: %.4f\n", z.Prob(0), z.Prob(9))
	// Output:
	// rank 1: 0.1336, rank 10: 0.0134
}
