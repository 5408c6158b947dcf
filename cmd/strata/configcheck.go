package main

import (
	"fmt"
	"io"

	"github.com/strata-project/strata/config"
)

// cmdConfig runs `strata config check FILE`: it parses and validates the file and reports
// the first error with its line number.
func cmdConfig(args []string, stdout, stderr io.Writer) int {
	if len(args) != 2 || args[0] != "check" {
		fmt.Fprintln(stderr, "usage: strata config check FILE")
		return 2
	}
	if _, err := config.Load(args[1]); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok\n", args[1])
	return 0
}
