package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/strata-project/strata/config"
	"github.com/strata-project/strata/docstore"
	"github.com/strata-project/strata/shard"
)

// cmdReshard runs `strata reshard`: it moves the partitions of a sharded store so that
// exactly the target shards own them, moving only the partitions whose owner changes, and
// persists the placement map after every switch.
func cmdReshard(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("reshard", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "the app configuration file (its store needs shards and map_file)")
	to := fs.String("to", "", "comma-separated shard names that must own the partitions afterwards")
	cleanup := fs.Bool("cleanup", false, "after the moves, delete the moved partitions' old copies (not reversible)")
	timeout := fs.Duration("timeout", time.Hour, "give up after this long")
	fs.Usage = func() {
		fmt.Fprint(stderr, `usage: strata reshard --config FILE --to SHARD,SHARD,... [--cleanup]

Moves partitions so that exactly the listed shards own them, evenly: copy, catch up, verify,
switch (the map file is rewritten after every switch), one partition at a time. Old copies stay
until --cleanup, so a reshard can be reversed by resharding back. Add a new shard to the
configuration before resharding onto it.

Requests through this process keep working during a move, but the fences that make a move
safe are held in this process only: run it while no app server writes to the shards (stop
them, or drain them at the load balancer), then restart the app servers so that they read the
new map.
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	target := splitList(*to)
	if *path == "" || len(target) == 0 || fs.NArg() != 0 {
		fs.Usage()
		return 2
	}
	f, err := config.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if f.App == nil || len(f.App.Store.Shards) == 0 || f.App.Store.MapFile == "" {
		fmt.Fprintln(stderr, "strata reshard: the configuration's app.store needs shards and a map_file")
		return 1
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, *timeout)
	defer cancelT()
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	rep, err := reshard(ctx, f.App, target, *cleanup, log, func(mv shard.Move, st docstore.MoveStats) {
		fmt.Fprintf(stdout, "moved partition %d from %s to %s: %d rows copied, fenced %v\n",
			mv.Partition, mv.From, mv.To, st.Copied, st.Fenced.Round(time.Microsecond))
	})
	if err != nil {
		fmt.Fprintln(stderr, "strata reshard:", err)
		return 1
	}
	fmt.Fprintf(stdout, "%d partitions moved, %d rows copied, longest fence %v; map version %d: %s\n",
		len(rep.Moves), rep.Copied, rep.MaxFenced.Round(time.Microsecond), rep.Map.Version(), countsText(rep.Map))
	if *cleanup {
		fmt.Fprintf(stdout, "old copies deleted: %d rows\n", rep.Deleted)
	}
	return 0
}

// reshardResult is what a reshard did.
type reshardResult struct {
	docstore.ReshardReport
	Deleted int64
}

// reshard opens every configured shard, follows the map file, reshards onto target and, with
// cleanup, deletes the old copies. The map file is rewritten after every switch.
func reshard(ctx context.Context, a *config.App, target []string, cleanup bool, log *slog.Logger, onMove func(shard.Move, docstore.MoveStats)) (reshardResult, error) {
	backends, names, _, err := openBackends(ctx, a, log)
	if err != nil {
		return reshardResult{}, err
	}
	for _, t := range target {
		if !slices.Contains(names, t) {
			closeBackends(backends)
			return reshardResult{}, fmt.Errorf("shard %q is not in the configuration", t)
		}
	}
	m, err := loadMap(a.Store.MapFile, names)
	if err != nil {
		closeBackends(backends)
		return reshardResult{}, err
	}
	var saveErr error
	s, err := docstore.NewSharded(m, backends, docstore.ShardedConfig{
		OnSwitch: func(m *shard.Map) {
			if err := saveMap(a.Store.MapFile, m); err != nil && saveErr == nil {
				saveErr = err
			}
		},
		OnMove: onMove,
	})
	if err != nil {
		closeBackends(backends)
		return reshardResult{}, err
	}
	defer s.Close()
	rep, err := s.Reshard(ctx, target)
	res := reshardResult{ReshardReport: rep}
	if err = errors.Join(err, saveErr); err != nil {
		return res, err
	}
	if cleanup {
		res.Deleted, err = deleteStrays(ctx, rep.Map, backends)
	}
	return res, err
}

// deleteStrays removes, from every shard, the partitions the map gives to another shard: the
// copies left behind by earlier moves, whichever process made them.
func deleteStrays(ctx context.Context, m *shard.Map, backends map[string]docstore.Backend) (int64, error) {
	var n int64
	for p := range m.Partitions() {
		owner, err := m.Owner(p)
		if err != nil {
			return n, err
		}
		for id, b := range backends {
			if id == owner {
				continue
			}
			d, err := b.DeletePartition(ctx, p)
			n += d
			if err != nil {
				return n, fmt.Errorf("deleting partition %d from %s: %w", p, id, err)
			}
		}
	}
	return n, nil
}

func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

func countsText(m *shard.Map) string {
	counts := m.Counts()
	var parts []string
	for _, id := range m.Shards() {
		parts = append(parts, fmt.Sprintf("%s=%d", id, counts[id]))
	}
	return strings.Join(parts, " ")
}
