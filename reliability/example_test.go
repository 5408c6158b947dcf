package reliability_test

import (
	"fmt"
	"os"
	"time"

	"github.com/strata-project/strata/reliability"
)

// A history of two clients on one key is summarized into a table row and checked for
// linearizability: the read saw the write that finished before it started.
func Example() {
	h := reliability.NewHistory(time.Now())
	h.Add(reliability.Op{Client: 0, Kind: reliability.Put, Key: "k", Value: 7, Start: 0, End: 10 * time.Millisecond, Status: 200})
	h.Add(reliability.Op{Client: 1, Kind: reliability.Get, Key: "k", Value: 7, Start: 20 * time.Millisecond, End: 25 * time.Millisecond, Status: 200})
	row := reliability.Summarize("example", h.Ops())
	row.Note = "none"
	reliability.WriteTable(os.Stdout, []reliability.Row{row})
	res, n := reliability.Linearizable(h.Ops(), time.Second)
	fmt.Println(res, n)
	// Output:
	// | scenario | attempted | succeeded | failed | p99 | detect | recover | asserted |
	// |---|---:|---:|---:|---:|---:|---:|---|
	// | example | 2 | 2 | 0 | 10 ms | - | - | none |
	// Ok 2
}

// A read of an older value after a newer write finished is caught.
func ExampleLinearizable() {
	ops := []reliability.Op{
		{Client: 0, Kind: reliability.Put, Key: "k", Value: 1, Start: 0, End: 1, Status: 200},
		{Client: 0, Kind: reliability.Put, Key: "k", Value: 2, Start: 2, End: 3, Status: 200},
		{Client: 1, Kind: reliability.Get, Key: "k", Value: 1, Start: 4, End: 5, Status: 200},
	}
	res, _ := reliability.Linearizable(ops, time.Second)
	fmt.Println(res)
	// Output: Illegal
}
