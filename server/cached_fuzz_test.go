package server

import (
	"testing"
	"time"

	"github.com/strata-project/strata/docstore"
)

// FuzzDecodeCached: any bytes from the cache decode to a valid document or an error, and
// encoded documents round-trip.
func FuzzDecodeCached(f *testing.F) {
	at := time.Unix(1700000000, 5)
	f.Add(encodeCached(docstore.Doc{Version: 3, Body: []byte(`{"a":1}`), Updated: at.UTC()}, at))
	f.Add(encodeCached(docstore.Doc{Version: 1, Body: []byte(`{}`)}, at))
	f.Add([]byte{})
	f.Add([]byte{1, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		d, when, err := decodeCached("c", "i", b)
		if err != nil {
			return
		}
		if d.Version <= 0 || len(d.Body) < 2 || d.Body[0] != '{' {
			t.Fatalf("decoded an invalid document %+v", d)
		}
		again, when2, err := decodeCached("c", "i", encodeCached(d, when))
		if err != nil || again.Version != d.Version || string(again.Body) != string(d.Body) || !when2.Equal(when) || !again.Updated.Equal(d.Updated) {
			t.Fatalf("round trip: %+v %v, %v", again, when2, err)
		}
	})
}
