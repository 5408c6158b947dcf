package entrycodec

import (
	"bytes"
	"testing"
	"time"

	"github.com/strata-project/strata/cache"
)

// FuzzDecode: Decode accepts exactly what Encode produces, and round-trips it.
func FuzzDecode(f *testing.F) {
	f.Add(Encode(cache.Entry{Value: []byte("v"), Version: 1}, false))
	f.Add(Encode(cache.Entry{Value: []byte{}, Version: -1}, false))
	f.Add(Encode(cache.Entry{Version: 5, Negative: true}, false))
	f.Add(Encode(cache.Entry{Version: 9}, true))
	f.Add(Encode(cache.Entry{Value: []byte("m"), Version: 2, Expires: time.Unix(1700000000, 5), Cost: time.Millisecond}, false))
	f.Add(Encode(cache.Entry{Version: 4, Negative: true, Cost: 3}, false))
	f.Add([]byte{})
	f.Add([]byte{2, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{7, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, tomb, err := Decode(b)
		if err != nil {
			return
		}
		if !e.Negative && e.Value == nil {
			t.Fatalf("Decode(%x): a positive entry with a nil value", b)
		}
		if e.Cost < 0 {
			t.Fatalf("Decode(%x): negative cost %v", b, e.Cost)
		}
		if got := Encode(e, tomb); !bytes.Equal(got, b) {
			t.Fatalf("Decode(%x) = %+v, %v; encodes back to %x", b, e, tomb, got)
		}
	})
}

func TestVersionOrderIsByteOrder(t *testing.T) {
	vs := []int64{-1 << 63, -1 << 32, -1, 0, 1, 1<<32 - 1, 1 << 32, 1<<63 - 1}
	for i := 1; i < len(vs); i++ {
		a := Encode(cache.Entry{Version: vs[i-1]}, false)[1:HeaderLen]
		b := Encode(cache.Entry{Version: vs[i]}, false)[1:HeaderLen]
		if bytes.Compare(a, b) >= 0 {
			t.Errorf("version %d encodes at or above %d", vs[i-1], vs[i])
		}
	}
}

// TestMetaRoundTrip: expiry and cost survive, entries without them keep the short form that
// older stores wrote, and the version stays at the same offset for the scripts.
func TestMetaRoundTrip(t *testing.T) {
	exp := time.Unix(1700000000, 123456789)
	for _, e := range []cache.Entry{
		{Value: []byte("v"), Version: 7, Expires: exp, Cost: 1500 * time.Microsecond},
		{Value: []byte{}, Version: 7, Cost: time.Nanosecond},
		{Value: []byte("v"), Version: 7, Expires: exp},
		{Version: 7, Negative: true, Expires: exp, Cost: time.Second},
	} {
		b := Encode(e, false)
		if b[0]&FlagMeta == 0 || len(b) < HeaderLen+MetaLen {
			t.Fatalf("Encode(%+v) = %x: no meta", e, b)
		}
		if !bytes.Equal(b[1:HeaderLen], Encode(cache.Entry{Version: 7}, false)[1:HeaderLen]) {
			t.Fatalf("Encode(%+v): the version moved", e)
		}
		got, tomb, err := Decode(b)
		if err != nil || tomb || got.Version != e.Version || got.Negative != e.Negative ||
			!got.Expires.Equal(e.Expires) || got.Cost != e.Cost || string(got.Value) != string(e.Value) {
			t.Fatalf("Decode(Encode(%+v)) = %+v, %v, %v", e, got, tomb, err)
		}
	}
	if b := Encode(cache.Entry{Value: []byte("v"), Version: 1}, false); len(b) != HeaderLen+1 || b[0] != 0 {
		t.Fatalf("an entry without expiry and cost encodes as %x, want the short form", b)
	}
	if b := Encode(cache.Entry{Version: 1, Expires: exp, Cost: 1}, true); len(b) != HeaderLen {
		t.Fatalf("a tombstone encodes as %x, want no meta", b)
	}
}
