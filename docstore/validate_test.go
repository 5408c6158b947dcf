package docstore_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/strata-project/strata/docstore"
)

func TestCheckCollection(t *testing.T) {
	for _, c := range []string{"a", "users", "a1", "a_b-c", strings.Repeat("z", 63)} {
		if err := docstore.CheckCollection(c); err != nil {
			t.Errorf("%q: %v", c, err)
		}
	}
	for _, c := range []string{"", "A", "1a", "_a", "-a", "a b", "a/b", "a.b", "é", strings.Repeat("z", 64)} {
		if err := docstore.CheckCollection(c); !errors.Is(err, docstore.ErrInvalid) {
			t.Errorf("%q: %v, want ErrInvalid", c, err)
		}
	}
}

func TestCheckID(t *testing.T) {
	for _, id := range []string{"a", " ", "a b", "'; DROP TABLE docs; --", "日本語", "emoji 🎉", strings.Repeat("x", 256)} {
		if err := docstore.CheckID(id); err != nil {
			t.Errorf("%q: %v", id, err)
		}
	}
	for _, id := range []string{"", "\x00", "a\nb", "\t", "\x7f", "\xc3", "\u200b", "\u0085", strings.Repeat("x", 257)} {
		if err := docstore.CheckID(id); !errors.Is(err, docstore.ErrInvalid) {
			t.Errorf("%q: %v, want ErrInvalid", id, err)
		}
	}
}

func TestCheckBody(t *testing.T) {
	for _, b := range []string{`{}`, ` {"a":[1,{"b":null}]} `, "\n{}\n",
		`{"s":"\u00e9\ud83d\ude00 \\u0000 \\ud800 \"\u0001"}`, `{"\\":"\\\\"}`, `{"x":"\ufffd"}`} {
		if err := docstore.CheckBody([]byte(b), 0); err != nil {
			t.Errorf("%q: %v", b, err)
		}
	}
	for _, b := range []string{``, ` `, `[]`, `null`, `{`, `{}{}`, `{"a":1,}`, `"{}"`,
		`{"nul":"a\u0000b"}`, `{"\u0000":1}`, `{"s":"\ud800"}`, `{"s":"\ud800x"}`, `{"s":"\udc00\ud800"}`,
		`{"s":"\ud800\u0041"}`, "{\"s\":\"\xff\"}"} {
		if err := docstore.CheckBody([]byte(b), 0); !errors.Is(err, docstore.ErrInvalid) {
			t.Errorf("%q: %v, want ErrInvalid", b, err)
		}
	}
	if err := docstore.CheckBody([]byte(`{"a":1}`), 6); !errors.Is(err, docstore.ErrInvalid) {
		t.Errorf("over the limit: %v", err)
	}
}

func TestCursorRoundTrip(t *testing.T) {
	for _, id := range []string{"a", "'; DROP TABLE docs; --", "日本", strings.Repeat("é", 128)} {
		c := docstore.EncodeCursor("coll", id)
		got, err := docstore.DecodeCursor("coll", c)
		if err != nil || got != id {
			t.Errorf("%q: decoded %q, %v", id, got, err)
		}
		if _, err := docstore.DecodeCursor("other", c); !errors.Is(err, docstore.ErrInvalid) {
			t.Errorf("%q: cursor accepted for another collection: %v", id, err)
		}
	}
	if got, err := docstore.DecodeCursor("c", ""); got != "" || err != nil {
		t.Errorf("empty cursor: %q, %v", got, err)
	}
}

// idRule is the id rule written independently of CheckID, for the fuzz target.
func idRule(id string) bool {
	if len(id) == 0 || len(id) > 256 || !utf8.ValidString(id) {
		return false
	}
	for _, r := range id {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

func FuzzCheckID(f *testing.F) {
	for _, s := range []string{"a", "", "\x00", "'; DROP TABLE docs; --", "日本", "\xff", "a\u200bb", " "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		err := docstore.CheckID(id)
		if (err == nil) != idRule(id) {
			t.Fatalf("CheckID(%q) = %v, rule says valid=%v", id, err, idRule(id))
		}
		if err != nil && !errors.Is(err, docstore.ErrInvalid) {
			t.Fatalf("CheckID(%q) = %v, not ErrInvalid", id, err)
		}
	})
}

func FuzzCheckCollection(f *testing.F) {
	for _, s := range []string{"a", "", "A", "a-b_c9", "9a", "a/b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, c string) {
		err := docstore.CheckCollection(c)
		valid := len(c) >= 1 && len(c) <= 63 && c[0] >= 'a' && c[0] <= 'z' &&
			strings.Trim(c, "abcdefghijklmnopqrstuvwxyz0123456789_-") == ""
		if (err == nil) != valid {
			t.Fatalf("CheckCollection(%q) = %v, want valid=%v", c, err, valid)
		}
	})
}

func FuzzDecodeCursor(f *testing.F) {
	f.Add("c", docstore.EncodeCursor("c", "id-1"))
	f.Add("users", docstore.EncodeCursor("users", "'; DROP TABLE docs; --"))
	f.Add("c", "AQ")
	f.Add("c", "!!!!")
	f.Add("c", "")
	f.Fuzz(func(t *testing.T, collection, cursor string) {
		id, err := docstore.DecodeCursor(collection, cursor)
		if err != nil {
			if !errors.Is(err, docstore.ErrInvalid) {
				t.Fatalf("DecodeCursor(%q) = %v, not ErrInvalid", cursor, err)
			}
			return
		}
		if cursor == "" {
			return
		}
		if docstore.CheckID(id) != nil {
			t.Fatalf("DecodeCursor(%q) returned the invalid id %q", cursor, id)
		}
		if again := docstore.EncodeCursor(collection, id); again != cursor {
			t.Fatalf("DecodeCursor(%q) = %q, which encodes to %q", cursor, id, again)
		}
	})
}

func TestCompanionIDPlacedWithItsDocument(t *testing.T) {
	for _, parts := range []int{1, 7, 64, 1024} {
		for i := range 200 {
			id := fmt.Sprintf("doc-%d", i)
			c := docstore.CompanionID("orders", id, "idem-abc")
			if err := docstore.CheckID(c); err != nil {
				t.Fatal(err)
			}
			if got, want := docstore.PartitionOf("strata-idempotency", c, parts), docstore.PartitionOf("orders", id, parts); got != want {
				t.Fatalf("%d partitions: companion of %s on partition %d, the document on %d", parts, id, got, want)
			}
		}
	}
	if docstore.CompanionID("a", "x", "n") == docstore.CompanionID("b", "x", "n") {
		t.Fatal("companions of documents of different collections share an id")
	}
}
