// Command strata runs the tiers of Strata's scalable web architecture: see the README for the
// subcommands that exist today.
package main

import (
	"fmt"
	"io"
	"os"
	"runtime/debug"
)

// version is set at build time with -ldflags "-X main.version=..."; otherwise the module
// version recorded by the Go toolchain is used.
var version = ""

const usage = `strata: a scalable web architecture in one binary

Usage:
  strata up          run the whole diagram on this machine (strata up -h for flags)
  strata chaos ACTION [TARGET] --url URL --key KEY   inject a fault into a running up
  strata cachenode   run the embedded shared cache tier
  strata lb          run the load balancer (strata lb -h for flags)
  strata app --config FILE      run an app server (the document API)
  strata config check FILE      validate a configuration file
  strata reshard --config FILE --to A,B,...   move partitions onto the listed shards
  strata bench       drive load and report latency, errors, cache hits (strata bench -h)
  strata version     print the version
  strata help        print this help
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "up":
		return cmdUp(args[1:], stdout, stderr)
	case "chaos":
		return cmdChaos(args[1:], stdout, stderr)
	case "cachenode":
		return cmdCacheNode(args[1:], stdout, stderr)
	case "lb":
		return cmdLB(args[1:], stdout, stderr)
	case "bench":
		return cmdBench(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "strata", buildVersion())
		return 0
	case "app":
		return cmdApp(args[1:], stdout, stderr)
	case "config":
		return cmdConfig(args[1:], stdout, stderr)
	case "reshard":
		return cmdReshard(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "strata: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}
