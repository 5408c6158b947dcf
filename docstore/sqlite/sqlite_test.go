package sqlite_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/strata-project/strata/docstore"
	"github.com/strata-project/strata/docstore/docstoretest"
	"github.com/strata-project/strata/docstore/sqlite"
)

func open(t *testing.T, cfg sqlite.Config) *sqlite.Store {
	t.Helper()
	if cfg.Path == "" {
		cfg.Path = filepath.Join(t.TempDir(), "docs.db")
	}
	s, err := sqlite.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	docstoretest.Run(t, func(t *testing.T) docstore.Store { return open(t, sqlite.Config{}) })
}

func TestReopenKeepsDataAndSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "docs.db")
	ctx := context.Background()
	s, err := sqlite.Open(ctx, sqlite.Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "c", "a", []byte(`{"x":1}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Delete(ctx, "c", "a"); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := s.Get(ctx, "c", "a"); !errors.Is(err, docstore.ErrClosed) {
		t.Fatalf("Get after Close: %v, want ErrClosed", err)
	}
	s = open(t, sqlite.Config{Path: path})
	d, err := s.Put(ctx, "c", "a", []byte(`{"x":2}`))
	if err != nil || d.Version != 3 {
		t.Fatalf("Put after reopen = %+v, %v; want version 3 (tombstone survived)", d, err)
	}
	// A different partition count on an existing database is refused.
	s2, err := sqlite.Open(ctx, sqlite.Config{Path: path, Partitions: 64})
	if !errors.Is(err, docstore.ErrInvalid) {
		if s2 != nil {
			s2.Close()
		}
		t.Fatalf("open with other partition count: %v, want ErrInvalid", err)
	}
}

func TestBodyLimitConfigurable(t *testing.T) {
	s := open(t, sqlite.Config{MaxBodyBytes: 16})
	ctx := context.Background()
	if _, err := s.Put(ctx, "c", "a", []byte(`{"a":"0123456"}`)); err != nil {
		t.Fatalf("15-byte body: %v", err)
	}
	if _, err := s.Put(ctx, "c", "a", []byte(`{"a":"01234567"}`)); err != nil {
		t.Fatalf("16-byte body: %v", err)
	}
	if _, err := s.Put(ctx, "c", "a", []byte(`{"a":"012345678"}`)); !errors.Is(err, docstore.ErrInvalid) {
		t.Fatalf("17-byte body: %v, want ErrInvalid", err)
	}
}

func TestPartitionScanApplyDelete(t *testing.T) {
	ctx := context.Background()
	src := open(t, sqlite.Config{Partitions: 8})
	dst := open(t, sqlite.Config{Partitions: 8})
	for _, id := range []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"} {
		if _, err := src.Put(ctx, "c", id, []byte(`{}`)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := src.Delete(ctx, "c", "a"); err != nil {
		t.Fatal(err)
	}
	total := 0
	for p := range 8 {
		rows, err := src.ScanPartition(ctx, p, docstore.Key{}, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			if got := docstore.PartitionOf(r.Collection, r.ID, 8); got != p {
				t.Fatalf("row %s in partition %d scanned as %d", r.ID, got, p)
			}
			if r.ID == "a" && (!r.Deleted || r.Version != 2) {
				t.Fatalf("tombstone scanned as %+v", r)
			}
		}
		n, err := dst.ApplyRows(ctx, rows)
		if err != nil || n != len(rows) {
			t.Fatalf("ApplyRows = %d, %v; want %d", n, err, len(rows))
		}
		// Applying again changes nothing: versions are not newer.
		if n, err := dst.ApplyRows(ctx, rows); err != nil || n != 0 {
			t.Fatalf("re-ApplyRows = %d, %v; want 0", n, err)
		}
		total += len(rows)
	}
	if total != 10 {
		t.Fatalf("scanned %d rows, want 10", total)
	}
	if d, err := dst.Put(ctx, "c", "a", []byte(`{}`)); err != nil || d.Version != 3 {
		t.Fatalf("re-create on copy = %+v, %v; want version 3", d, err)
	}
	var removed int64
	for p := range 8 {
		n, err := src.DeletePartition(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		removed += n
	}
	if removed != 10 {
		t.Fatalf("removed %d rows, want 10", removed)
	}
}
