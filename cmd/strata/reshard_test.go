package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/strata-project/strata/config"
	"github.com/strata-project/strata/docstore"
	"github.com/strata-project/strata/shard"
)

func shardsConfig(dir string, names ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "app:\n  store:\n    kind: sqlite\n    map_file: %s\n    shards:\n", filepath.Join(dir, "map.json"))
	for _, n := range names {
		fmt.Fprintf(&b, "      - {name: %s, path: %s}\n", n, filepath.Join(dir, n+".db"))
	}
	b.WriteString("  collections: {users: {}}\n")
	return b.String()
}

func openFromConfig(t *testing.T, path string) docstore.Store {
	t.Helper()
	f, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := openStore(context.Background(), f.App, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return s.Store
}

func TestReshardCommandTwoToThreeShards(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	two := writeConfig(t, shardsConfig(dir, "a", "b"))

	// Two shards: write 300 documents (and delete a few, so tombstones move too).
	s := openFromConfig(t, two)
	const n = 300
	for i := range n {
		if _, err := s.Put(ctx, "users", fmt.Sprintf("u%03d", i), []byte(fmt.Sprintf(`{"i":%d}`, i))); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n; i += 50 {
		if _, err := s.Delete(ctx, "users", fmt.Sprintf("u%03d", i)); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	before, err := os.ReadFile(filepath.Join(dir, "map.json"))
	if err != nil {
		t.Fatalf("the map file was not written at first start: %v", err)
	}

	// Add shard c to the configuration and reshard onto a, b, c.
	three := writeConfig(t, shardsConfig(dir, "a", "b", "c"))
	var out, errb bytes.Buffer
	if code := run([]string{"reshard", "--config", three, "--to", "a,b,c"}, &out, &errb); code != 0 {
		t.Fatalf("reshard exit %d: %s %s", code, out.String(), errb.String())
	}
	after, err := os.ReadFile(filepath.Join(dir, "map.json"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := shard.DecodeMap(after)
	if err != nil {
		t.Fatal(err)
	}
	old, _ := shard.DecodeMap(before)
	counts := m.Counts()
	moved := 0
	for p := range m.Partitions() {
		o1, _ := old.Owner(p)
		o2, _ := m.Owner(p)
		if o1 != o2 {
			moved++
			if o2 != "c" {
				t.Fatalf("partition %d moved from %s to %s, not to the new shard", p, o1, o2)
			}
		}
	}
	if want := m.Partitions() / 3; counts["c"] < want || counts["c"] > want+1 || moved != counts["c"] {
		t.Fatalf("after reshard: counts %v, %d partitions moved; want about a third on c, and only those moved", counts, moved)
	}
	if !strings.Contains(out.String(), fmt.Sprintf("%d partitions moved", moved)) {
		t.Fatalf("report does not say how many moved: %s", out.String())
	}

	// Every document reads back at its version through a store that follows the new map;
	// deleted ones stay deleted and keep their tombstone version.
	s = openFromConfig(t, three)
	for i := range n {
		id := fmt.Sprintf("u%03d", i)
		d, err := s.Get(ctx, "users", id)
		if i%50 == 0 {
			if !errors.Is(err, docstore.ErrNotFound) {
				t.Fatalf("%s was deleted but reads %+v, %v", id, d, err)
			}
			if d, err := s.Put(ctx, "users", id, []byte(`{}`)); err != nil || d.Version != 3 {
				t.Fatalf("re-create of %s after reshard = version %d, %v; want 3 (tombstone moved)", id, d.Version, err)
			}
			continue
		}
		if err != nil || d.Version != 1 || string(d.Body) != fmt.Sprintf(`{"i":%d}`, i) {
			t.Fatalf("%s after reshard = %+v, %v", id, d, err)
		}
	}
	page, err := s.List(ctx, "users", "", 1000)
	if err != nil || len(page.Docs) != n {
		t.Fatalf("list after reshard: %d docs, %v; want %d (no duplicates from old copies)", len(page.Docs), err, n)
	}
	s.Close()

	// Cleanup removes the old copies from a and b, and only those.
	out.Reset()
	if code := run([]string{"reshard", "--config", three, "--to", "a,b,c", "--cleanup"}, &out, &errb); code != 0 {
		t.Fatalf("cleanup exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "0 partitions moved") || strings.Contains(out.String(), "deleted: 0 rows") {
		t.Fatalf("cleanup report: %s", out.String())
	}
	s = openFromConfig(t, three)
	defer s.Close()
	if page, err := s.List(ctx, "users", "", 1000); err != nil || len(page.Docs) != n {
		t.Fatalf("list after cleanup: %d docs, %v", len(page.Docs), err)
	}
}

func TestReshardCommandRefusesBadInput(t *testing.T) {
	dir := t.TempDir()
	noMap := writeConfig(t, "app:\n  store:\n    kind: sqlite\n    shards:\n      - {name: a, path: "+filepath.Join(dir, "a.db")+"}\n  collections: {users: {}}\n")
	good := writeConfig(t, shardsConfig(dir, "a", "b"))
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"reshard"}, 2, "usage"},
		{[]string{"reshard", "--config", good}, 2, "usage"},
		{[]string{"reshard", "--config", noMap, "--to", "a"}, 1, "map_file"},
		{[]string{"reshard", "--config", good, "--to", "a,zz"}, 1, `shard "zz" is not in the configuration`},
	} {
		var out, errb bytes.Buffer
		if code := run(tc.args, &out, &errb); code != tc.code || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want %d and %q", tc.args, code, errb.String(), tc.code, tc.want)
		}
	}
}
