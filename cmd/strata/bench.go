package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/strata-project/strata/loadgen"
)

const benchUsage = `Usage: strata bench [flags]

Drives load against a Strata app server or load balancer: GETs and PUTs of JSON
documents at {url}/v1/{collection}/k{N}, keys drawn from a Zipf distribution.
A closed loop by default (-c workers); -rate runs an open loop whose latencies
count from each request's scheduled start (no coordinated omission). Progress
goes to stderr every second, the report to stdout (-json for machines).
Ctrl-C stops early and prints the report so far.

-chaos "10s:kill-app:2,20s:stop-cache" posts each action at its time to
{admin-url}/chaos/{action}?target={target} (strata up's admin API) and splits
the report into phases at the events.

Exit status: 0 done, 1 interrupted, 2 bad flags.

Flags:
`

// cmdBench runs `strata bench`.
func cmdBench(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, benchUsage); fs.PrintDefaults() }
	var cfg loadgen.Config
	fs.StringVar(&cfg.URL, "url", "http://127.0.0.1:8080", "base URL of the app server or load balancer")
	fs.StringVar(&cfg.Collection, "collection", "bench", "collection to read and write")
	fs.StringVar(&cfg.APIKey, "key", "", "API key (default: $STRATA_API_KEY)")
	fs.StringVar(&cfg.KeyHeader, "key-header", "Authorization", `header of the API key: Authorization (sent as "Bearer KEY") or X-API-Key`)
	fs.IntVar(&cfg.Keys, "keys", 10000, "number of documents K")
	fs.Float64Var(&cfg.ZipfS, "zipf", 1.0, "Zipf exponent s of key popularity (>= 0; 0 is uniform)")
	fs.Float64Var(&cfg.Writes, "writes", 0.05, "fraction of requests that are writes, in [0, 1]")
	fs.IntVar(&cfg.DocSize, "size", 256, "size of written documents in bytes")
	fs.IntVar(&cfg.Concurrency, "c", 16, "workers (closed loop) or maximum requests in flight (open loop)")
	fs.Float64Var(&cfg.Rate, "rate", 0, "target requests per second: an open loop (0: closed loop)")
	fs.DurationVar(&cfg.Duration, "d", 10*time.Second, "duration of the measured run")
	fs.DurationVar(&cfg.Timeout, "timeout", 5*time.Second, "timeout of each request")
	fs.BoolVar(&cfg.Prepopulate, "prepopulate", false, "write every key once before the run")
	chaos := fs.String("chaos", "", `chaos schedule AT:ACTION[:TARGET],... such as "10s:kill-app:2,20s:stop-cache"`)
	adminURL := fs.String("admin-url", "", "admin base URL of strata up, for -chaos")
	adminKey := fs.String("admin-key", "", "admin API key for -chaos (default: $STRATA_ADMIN_KEY)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	quiet := fs.Bool("quiet", false, "no progress lines")
	seed := fs.Uint64("seed", 1, "seed of the key and mix choices")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "strata bench: "+format+"\n", a...)
		return 2
	}
	if fs.NArg() > 0 {
		return fail("unexpected argument %q (flags only; see strata bench -h)", fs.Arg(0))
	}
	// Zero flag values mean zero here, not loadgen's defaults.
	switch {
	case cfg.Keys < 1:
		return fail("-keys must be at least 1 (got %d)", cfg.Keys)
	case cfg.Concurrency < 1:
		return fail("-c must be at least 1 (got %d)", cfg.Concurrency)
	case cfg.Duration <= 0:
		return fail("-d must be positive (got %v)", cfg.Duration)
	case cfg.Timeout <= 0:
		return fail("-timeout must be positive (got %v)", cfg.Timeout)
	case cfg.DocSize < 1:
		return fail("-size must be at least 1 (got %d)", cfg.DocSize)
	case cfg.ZipfS == 0:
		cfg.Uniform = true
	}
	cfg.Seed = *seed
	if cfg.APIKey == "" {
		cfg.APIKey = os.Getenv("STRATA_API_KEY")
	}
	events, err := loadgen.ParseChaos(*chaos)
	if err != nil {
		return fail("-chaos: %v", trimSentinel(err))
	}
	if len(events) > 0 {
		if *adminURL == "" {
			return fail("-chaos needs -admin-url (the admin listener of strata up)")
		}
		key := *adminKey
		if key == "" {
			key = os.Getenv("STRATA_ADMIN_KEY")
		}
		cfg.Chaos = events
		cfg.ChaosRunner = &loadgen.HTTPChaos{URL: *adminURL, AdminKey: key}
	}
	if !*quiet {
		cfg.Progress = func(p loadgen.Progress) { fmt.Fprintln(stderr, loadgen.FormatProgress(p)) }
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := loadgen.Run(ctx, cfg)
	if err != nil {
		return fail("%v", trimSentinel(err))
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(rep)
	} else {
		err = rep.WriteText(stdout)
	}
	if err != nil {
		fmt.Fprintln(stderr, "strata bench:", err)
		return 1
	}
	if rep.Interrupted {
		return 1
	}
	return 0
}

// trimSentinel drops loadgen's "loadgen: invalid config: " prefix: the command names
// itself already.
func trimSentinel(err error) string {
	s := err.Error()
	if p := loadgen.ErrInvalidConfig.Error() + ": "; len(s) > len(p) && s[:len(p)] == p {
		return s[len(p):]
	}
	return s
}
