package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/strata-project/strata/loadgen"
	"github.com/strata-project/strata/topology"
)

// cmdChaos runs `strata chaos ACTION [TARGET] --url URL --key KEY` against a running
// `strata up`, through the same client as `strata bench`'s chaos schedule.
func cmdChaos(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", os.Getenv("STRATA_ADMIN_URL"), "admin URL printed by strata up (default $STRATA_ADMIN_URL)")
	key := fs.String("key", "", "admin key printed by strata up (default $STRATA_ADMIN_KEY)")
	timeout := fs.Duration("timeout", 60*time.Second, "bound on the action")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: strata chaos ACTION [TARGET] --url URL --key KEY\n\nActions: %s\nTARGET is an app server's number (app actions) or a shard's (replica and primary\nactions); default 1.\n\nFlags:\n",
			strings.Join(topology.Actions, ", "))
		fs.PrintDefaults()
	}
	// Flags may come before or after the positional arguments.
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if err == flag.ErrHelp {
				return 0
			}
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if *key == "" {
		*key = os.Getenv("STRATA_ADMIN_KEY")
	}
	if len(pos) < 1 || len(pos) > 2 || *url == "" {
		fs.Usage()
		return 2
	}
	if !strings.Contains(*url, "://") {
		*url = "http://" + *url
	}
	target := ""
	if len(pos) == 2 {
		target = pos[1]
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	start := time.Now()
	c := &loadgen.HTTPChaos{URL: *url, AdminKey: *key}
	if err := c.Run(ctx, pos[0], target); err != nil {
		fmt.Fprintln(stderr, "strata chaos:", err)
		return 1
	}
	fmt.Fprintf(stdout, "strata chaos: %s %s done in %v\n", pos[0], target, time.Since(start).Round(time.Millisecond))
	return 0
}
