package docstoretest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/strata-project/strata/docstore"
)

// Run runs the conformance suite. newStore returns a fresh, empty store for each subtest and
// arranges its closing (t.Cleanup); it may call t.Skip.
func Run(t *testing.T, newStore func(t *testing.T) docstore.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s docstore.Store)
	}{
		{"PutGet", testPutGet},
		{"VersionsGrow", testVersionsGrow},
		{"PutIfVersion", testPutIfVersion},
		{"DeleteTombstone", testDeleteTombstone},
		{"DeleteIfVersion", testDeleteIfVersion},
		{"GetMany", testGetMany},
		{"List", testList},
		{"Cursor", testCursor},
		{"Invalid", testInvalid},
		{"SQLLookingIDs", testSQLLookingIDs},
		{"ConcurrentPutIfVersion", testConcurrentPutIfVersion},
		{"ListUnderConcurrentWrites", testListUnderWrites},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newStore(t))
		})
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

func body(format string, args ...any) json.RawMessage {
	return json.RawMessage(fmt.Sprintf(format, args...))
}

// sameJSON reports whether two JSON documents are equal as values (PostgreSQL normalises
// jsonb, so bytes may differ).
func sameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("bad JSON %q: %v", a, err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("bad JSON %q: %v", b, err)
	}
	return reflect.DeepEqual(x, y)
}

func mustPut(t *testing.T, s docstore.Store, c, id string, b json.RawMessage) docstore.Doc {
	t.Helper()
	d, err := s.Put(ctx(t), c, id, b)
	if err != nil {
		t.Fatalf("Put(%s, %q): %v", c, id, err)
	}
	return d
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: err = %v, want %v", what, err, target)
	}
}

func wantConflict(t *testing.T, what string, err error, current int64) {
	t.Helper()
	var vc *docstore.VersionConflictError
	if !errors.As(err, &vc) || !errors.Is(err, docstore.ErrVersionConflict) {
		t.Fatalf("%s: err = %v, want a version conflict", what, err)
	}
	if vc.Current != current {
		t.Fatalf("%s: conflict reports current version %d, want %d", what, vc.Current, current)
	}
}

func testPutGet(t *testing.T, s docstore.Store) {
	before := time.Now().Add(-time.Second)
	b := body(`{"name": "ada", "n": 1, "nested": {"a": [1, 2, 3]}}`)
	d := mustPut(t, s, "users", "u1", b)
	if d.Version != 1 || d.Collection != "users" || d.ID != "u1" || !sameJSON(t, d.Body, b) {
		t.Fatalf("Put returned %+v", d)
	}
	got, err := s.Get(ctx(t), "users", "u1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != 1 || got.ID != "u1" || got.Collection != "users" || !sameJSON(t, got.Body, b) {
		t.Fatalf("Get = %+v", got)
	}
	if got.Updated.Before(before) || got.Updated.After(time.Now().Add(time.Second)) || !got.Updated.Equal(d.Updated) {
		t.Fatalf("Updated = %v (Put said %v), want about now", got.Updated, d.Updated)
	}
	_, err = s.Get(ctx(t), "users", "nobody")
	wantErr(t, "Get missing", err, docstore.ErrNotFound)
	_, err = s.Get(ctx(t), "other", "u1")
	wantErr(t, "Get in another collection", err, docstore.ErrNotFound)
}

func testVersionsGrow(t *testing.T, s docstore.Store) {
	for i := 1; i <= 5; i++ {
		d := mustPut(t, s, "c", "x", body(`{"i": %d}`, i))
		if d.Version != int64(i) {
			t.Fatalf("write %d: version %d", i, d.Version)
		}
	}
	got, err := s.Get(ctx(t), "c", "x")
	if err != nil || got.Version != 5 || !sameJSON(t, got.Body, body(`{"i": 5}`)) {
		t.Fatalf("Get = %+v, %v; want version 5, i 5", got, err)
	}
}

func testPutIfVersion(t *testing.T, s docstore.Store) {
	c := ctx(t)
	d, err := s.PutIfVersion(c, "c", "a", body(`{"v": 1}`), 0)
	if err != nil || d.Version != 1 {
		t.Fatalf("create: %+v, %v", d, err)
	}
	_, err = s.PutIfVersion(c, "c", "a", body(`{"v": 2}`), 0)
	wantConflict(t, "create existing", err, 1)
	_, err = s.PutIfVersion(c, "c", "a", body(`{"v": 2}`), 7)
	wantConflict(t, "wrong version", err, 1)
	d, err = s.PutIfVersion(c, "c", "a", body(`{"v": 2}`), 1)
	if err != nil || d.Version != 2 {
		t.Fatalf("update: %+v, %v", d, err)
	}
	_, err = s.PutIfVersion(c, "c", "missing", body(`{}`), 3)
	wantConflict(t, "update missing", err, 0)
	got, err := s.Get(c, "c", "a")
	if err != nil || got.Version != 2 || !sameJSON(t, got.Body, body(`{"v": 2}`)) {
		t.Fatalf("Get = %+v, %v", got, err)
	}
	_, err = s.PutIfVersion(c, "c", "a", body(`{}`), -1)
	wantErr(t, "negative version", err, docstore.ErrInvalid)
}

func testDeleteTombstone(t *testing.T, s docstore.Store) {
	c := ctx(t)
	mustPut(t, s, "c", "d", body(`{"v": 1}`))
	mustPut(t, s, "c", "d", body(`{"v": 2}`))
	v, err := s.Delete(c, "c", "d")
	if err != nil || v != 3 {
		t.Fatalf("Delete = %d, %v; want tombstone version 3", v, err)
	}
	_, err = s.Get(c, "c", "d")
	wantErr(t, "Get deleted", err, docstore.ErrNotFound)
	_, err = s.Delete(c, "c", "d")
	wantErr(t, "Delete deleted", err, docstore.ErrNotFound)
	_, err = s.Delete(c, "c", "never")
	wantErr(t, "Delete missing", err, docstore.ErrNotFound)
	_, err = s.PutIfVersion(c, "c", "d", body(`{}`), 3)
	wantConflict(t, "update tombstone", err, 0)
	// Re-create continues from the tombstone's version.
	d := mustPut(t, s, "c", "d", body(`{"v": 4}`))
	if d.Version != 4 {
		t.Fatalf("re-create after delete: version %d, want 4", d.Version)
	}
	v, err = s.Delete(c, "c", "d")
	if err != nil || v != 5 {
		t.Fatalf("second Delete = %d, %v; want 5", v, err)
	}
	d, err = s.PutIfVersion(c, "c", "d", body(`{"v": 6}`), 0)
	if err != nil || d.Version != 6 {
		t.Fatalf("create-if-absent over tombstone = %+v, %v; want version 6", d, err)
	}
	got, err := s.Get(c, "c", "d")
	if err != nil || got.Version != 6 {
		t.Fatalf("Get = %+v, %v", got, err)
	}
}

func testDeleteIfVersion(t *testing.T, s docstore.Store) {
	c := ctx(t)
	mustPut(t, s, "c", "e", body(`{}`))
	_, err := s.DeleteIfVersion(c, "c", "e", 2)
	wantConflict(t, "delete wrong version", err, 1)
	_, err = s.DeleteIfVersion(c, "c", "e", 0)
	wantErr(t, "delete version 0", err, docstore.ErrInvalid)
	v, err := s.DeleteIfVersion(c, "c", "e", 1)
	if err != nil || v != 2 {
		t.Fatalf("DeleteIfVersion = %d, %v; want 2", v, err)
	}
	_, err = s.DeleteIfVersion(c, "c", "e", 2)
	wantConflict(t, "delete tombstone", err, 0)
	_, err = s.DeleteIfVersion(c, "c", "nothing", 1)
	wantConflict(t, "delete missing", err, 0)
}

func testGetMany(t *testing.T, s docstore.Store) {
	c := ctx(t)
	var ids []string
	for i := range 40 {
		id := fmt.Sprintf("k%02d", i)
		mustPut(t, s, "m", id, body(`{"i": %d}`, i))
		ids = append(ids, id)
	}
	mustPut(t, s, "other", "k00", body(`{"other": true}`))
	if _, err := s.Delete(c, "m", "k03"); err != nil {
		t.Fatal(err)
	}
	ask := append(slices.Clone(ids), "k00", "missing", "k01")
	got, err := s.GetMany(c, "m", ask)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 39 {
		t.Fatalf("GetMany returned %d docs, want 39", len(got))
	}
	for i, id := range ids {
		d, ok := got[id]
		if id == "k03" {
			if ok {
				t.Fatalf("deleted doc returned: %+v", d)
			}
			continue
		}
		if !ok || d.ID != id || d.Collection != "m" || d.Version != 1 || !sameJSON(t, d.Body, body(`{"i": %d}`, i)) {
			t.Fatalf("GetMany[%s] = %+v, %v", id, d, ok)
		}
	}
	empty, err := s.GetMany(c, "m", nil)
	if err != nil || len(empty) != 0 {
		t.Fatalf("GetMany(nil) = %v, %v", empty, err)
	}
	_, err = s.GetMany(c, "m", make([]string, docstore.MaxBatch+1))
	wantErr(t, "oversized batch", err, docstore.ErrInvalid)
	_, err = s.GetMany(c, "m", []string{"ok", "bad\x00"})
	wantErr(t, "bad id in batch", err, docstore.ErrInvalid)
}

// listAll pages through a collection and returns the ids in order.
func listAll(t *testing.T, s docstore.Store, c string, limit int) []docstore.Doc {
	t.Helper()
	var all []docstore.Doc
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 100000 {
			t.Fatal("listing does not end")
		}
		p, err := s.List(ctx(t), c, cursor, limit)
		if err != nil {
			t.Fatalf("List(%s, %q, %d): %v", c, cursor, limit, err)
		}
		if len(p.Docs) > docstore.ClampLimit(limit) {
			t.Fatalf("page of %d docs, limit %d", len(p.Docs), limit)
		}
		all = append(all, p.Docs...)
		if p.Next == "" {
			return all
		}
		if len(p.Docs) == 0 {
			t.Fatal("empty page with a next cursor")
		}
		cursor = p.Next
	}
}

func ids(docs []docstore.Doc) []string {
	out := make([]string, len(docs))
	for i, d := range docs {
		out[i] = d.ID
	}
	return out
}

func testList(t *testing.T, s docstore.Store) {
	c := ctx(t)
	var want []string
	for i := range 57 {
		id := fmt.Sprintf("id-%03d", (i*37)%57) // written out of order
		mustPut(t, s, "l", id, body(`{"i": %d}`, i))
	}
	for i := range 57 {
		want = append(want, fmt.Sprintf("id-%03d", i))
	}
	mustPut(t, s, "l2", "id-000", body(`{}`))
	for _, id := range []string{"id-010", "id-011", "id-056"} {
		if _, err := s.Delete(c, "l", id); err != nil {
			t.Fatal(err)
		}
	}
	want = slices.DeleteFunc(want, func(id string) bool { return id == "id-010" || id == "id-011" || id == "id-056" })
	for _, limit := range []int{1, 5, 54, 0, 1000} {
		got := ids(listAll(t, s, "l", limit))
		if !slices.Equal(got, want) {
			t.Fatalf("limit %d: listed %v\nwant %v", limit, got, want)
		}
	}
	p, err := s.List(c, "l", "", 54)
	if err != nil || len(p.Docs) != 54 || p.Next != "" {
		t.Fatalf("exact page: %d docs, next %q, %v; want 54 and no next", len(p.Docs), p.Next, err)
	}
	p, err = s.List(c, "empty", "", 10)
	if err != nil || len(p.Docs) != 0 || p.Next != "" {
		t.Fatalf("empty collection: %+v, %v", p, err)
	}
	// Unicode ids sort bytewise.
	for _, id := range []string{"b", "a", "é", "Z", "日本", "a b"} {
		mustPut(t, s, "u", id, body(`{}`))
	}
	got := ids(listAll(t, s, "u", 2))
	want = []string{"Z", "a", "a b", "b", "é", "日本"}
	if !slices.Equal(got, want) {
		t.Fatalf("unicode order %q, want %q", got, want)
	}
}

func testCursor(t *testing.T, s docstore.Store) {
	c := ctx(t)
	for i := range 6 {
		mustPut(t, s, "cur", fmt.Sprintf("%d", i), body(`{}`))
	}
	p, err := s.List(c, "cur", "", 2)
	if err != nil || p.Next == "" {
		t.Fatalf("List: %+v, %v", p, err)
	}
	_, err = s.List(c, "other", p.Next, 2)
	wantErr(t, "cursor of another collection", err, docstore.ErrInvalid)
	for _, bad := range []string{"x", "!!!!", p.Next[:len(p.Next)-1], p.Next + "A", "AAAAAAAA",
		strings.Repeat("A", 5000), flip(p.Next)} {
		_, err = s.List(c, "cur", bad, 2)
		wantErr(t, fmt.Sprintf("tampered cursor %q", bad), err, docstore.ErrInvalid)
	}
	// A cursor survives the deletion of the id it names.
	if _, err := s.Delete(c, "cur", "1"); err != nil {
		t.Fatal(err)
	}
	p2, err := s.List(c, "cur", p.Next, 10)
	if err != nil || !slices.Equal(ids(p2.Docs), []string{"2", "3", "4", "5"}) {
		t.Fatalf("continue after deleted id: %v, %v", ids(p2.Docs), err)
	}
}

// flip changes one character in the middle of s.
func flip(s string) string {
	b := []byte(s)
	i := len(b) / 2
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
}

func testInvalid(t *testing.T, s docstore.Store) {
	c := ctx(t)
	good := body(`{}`)
	badCollections := []string{"", "Users", "1abc", "a b", "a/b", "a.b", strings.Repeat("a", 64), "é"}
	for _, col := range badCollections {
		_, err := s.Put(c, col, "x", good)
		wantErr(t, fmt.Sprintf("Put collection %q", col), err, docstore.ErrInvalid)
		_, err = s.Get(c, col, "x")
		wantErr(t, fmt.Sprintf("Get collection %q", col), err, docstore.ErrInvalid)
		_, err = s.List(c, col, "", 1)
		wantErr(t, fmt.Sprintf("List collection %q", col), err, docstore.ErrInvalid)
	}
	badIDs := []string{"", "a\x00b", "tab\there", "new\nline", "\x7f", strings.Repeat("x", 257), "\xff\xfe", "zero\u200bwidth"}
	for _, id := range badIDs {
		_, err := s.Put(c, "c", id, good)
		wantErr(t, fmt.Sprintf("Put id %q", id), err, docstore.ErrInvalid)
		_, err = s.Get(c, "c", id)
		wantErr(t, fmt.Sprintf("Get id %q", id), err, docstore.ErrInvalid)
		_, err = s.Delete(c, "c", id)
		wantErr(t, fmt.Sprintf("Delete id %q", id), err, docstore.ErrInvalid)
	}
	badBodies := []string{"", "null", "[]", "1", `"s"`, `{"a":`, `{"a":1}x`, "{'a':1}"}
	for _, b := range badBodies {
		_, err := s.Put(c, "c", "x", json.RawMessage(b))
		wantErr(t, fmt.Sprintf("Put body %q", b), err, docstore.ErrInvalid)
		_, err = s.PutIfVersion(c, "c", "x", json.RawMessage(b), 0)
		wantErr(t, fmt.Sprintf("PutIfVersion body %q", b), err, docstore.ErrInvalid)
	}
	big := json.RawMessage(`{"a":"` + strings.Repeat("x", docstore.DefaultMaxBodyBytes) + `"}`)
	_, err := s.Put(c, "c", "x", big)
	wantErr(t, "oversized body", err, docstore.ErrInvalid)
	// Nothing was written by any of the above.
	if _, err := s.Get(c, "c", "x"); !errors.Is(err, docstore.ErrNotFound) {
		t.Fatalf("an invalid write left a document: %v", err)
	}
	// Limits: the longest id and collection name are accepted.
	mustPut(t, s, strings.Repeat("a", 63), strings.Repeat("é", 128), good)
}

func testSQLLookingIDs(t *testing.T, s docstore.Store) {
	c := ctx(t)
	evil := []string{
		`'; DROP TABLE docs; --`,
		`Robert'); DROP TABLE students;--`,
		`" OR "1"="1`,
		`' OR 1=1 --`,
		`%`, `_`, `\`, `\\'`, `$1`, `?`, `*/ SELECT 1 /*`,
		`x' UNION SELECT collection, id FROM docs --`,
	}
	for i, id := range evil {
		mustPut(t, s, "sql", id, body(`{"i": %d}`, i))
	}
	for i, id := range evil {
		d, err := s.Get(c, "sql", id)
		if err != nil || d.ID != id || !sameJSON(t, d.Body, body(`{"i": %d}`, i)) {
			t.Fatalf("Get(%q) = %+v, %v", id, d, err)
		}
	}
	got := ids(listAll(t, s, "sql", 3))
	want := slices.Clone(evil)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("listed %q, want %q", got, want)
	}
	// LIKE wildcards must not match other ids.
	if _, err := s.Get(c, "sql", "R%"); !errors.Is(err, docstore.ErrNotFound) {
		t.Fatalf("Get(R%%) = %v, want not found", err)
	}
	many, err := s.GetMany(c, "sql", evil)
	if err != nil || len(many) != len(evil) {
		t.Fatalf("GetMany = %d docs, %v", len(many), err)
	}
	// The store still works: the table was not dropped.
	mustPut(t, s, "sql", "after", body(`{}`))
}

func testConcurrentPutIfVersion(t *testing.T, s docstore.Store) {
	const workers, rounds = 6, 15
	c := ctx(t)
	var mu sync.Mutex
	winners := make(map[int64][]int) // expected version -> worker ids that won
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				cur, err := s.Get(c, "race", "counter")
				var v int64
				switch {
				case errors.Is(err, docstore.ErrNotFound):
				case err != nil:
					t.Errorf("Get: %v", err)
					return
				default:
					v = cur.Version
				}
				if v >= rounds {
					return
				}
				d, err := s.PutIfVersion(c, "race", "counter", body(`{"by": %d, "v": %d}`, w, v+1), v)
				if errors.Is(err, docstore.ErrVersionConflict) {
					continue
				}
				if err != nil {
					t.Errorf("PutIfVersion: %v", err)
					return
				}
				if d.Version != v+1 {
					t.Errorf("won version %d from %d", d.Version, v)
				}
				mu.Lock()
				winners[v] = append(winners[v], w)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for v := range int64(rounds) {
		if len(winners[v]) != 1 {
			t.Errorf("version %d: %d winners %v, want exactly 1", v, len(winners[v]), winners[v])
		}
	}
	if len(winners) != rounds {
		t.Errorf("%d versions won, want %d", len(winners), rounds)
	}
	d, err := s.Get(c, "race", "counter")
	if err != nil || d.Version != rounds {
		t.Fatalf("final = %+v, %v", d, err)
	}
	var final struct{ By, V int64 }
	if err := json.Unmarshal(d.Body, &final); err != nil || final.V != rounds || winners[rounds-1][0] != int(final.By) {
		t.Fatalf("final body %s does not come from the last winner %v", d.Body, winners[rounds-1])
	}
}

func testListUnderWrites(t *testing.T, s docstore.Store) {
	c := ctx(t)
	const stable = 120
	// Even ids live throughout; odd ids are created and deleted concurrently.
	for i := range stable {
		mustPut(t, s, "lw", fmt.Sprintf("k%04d", 2*i), body(`{"i": %d}`, i))
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				i := (n*7 + w*3) % stable
				if _, err := s.Put(c, "lw", fmt.Sprintf("k%04d", 2*i), body(`{"i": %d, "n": %d}`, i, n)); err != nil {
					t.Errorf("Put: %v", err)
					return
				}
				odd := fmt.Sprintf("k%04d", 2*i+1)
				if n%2 == 0 {
					_, err := s.Put(c, "lw", odd, body(`{}`))
					if err != nil {
						t.Errorf("Put: %v", err)
						return
					}
				} else if _, err := s.Delete(c, "lw", odd); err != nil && !errors.Is(err, docstore.ErrNotFound) {
					t.Errorf("Delete: %v", err)
					return
				}
			}
		}()
	}
	for round := range 3 {
		got := listAll(t, s, "lw", 7)
		var even []string
		for i, d := range got {
			if i > 0 && got[i-1].ID >= d.ID {
				t.Fatalf("round %d: ids out of order or repeated: %q then %q", round, got[i-1].ID, d.ID)
			}
			var n int
			if _, err := fmt.Sscanf(d.ID, "k%04d", &n); err != nil {
				t.Fatalf("unexpected id %q", d.ID)
			}
			if n%2 == 0 {
				even = append(even, d.ID)
			}
		}
		if len(even) != stable {
			t.Fatalf("round %d: listed %d of the %d documents that lived throughout", round, len(even), stable)
		}
	}
	close(stop)
	wg.Wait()
}
