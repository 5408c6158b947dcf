package entrycodec

import (
	"bytes"
	"testing"

	"github.com/strata-project/strata/cache"
)

// FuzzDecode: Decode accepts exactly what Encode produces, and round-trips it.
func FuzzDecode(f *testing.F) {
	f.Add(Encode(cache.Entry{Value: []byte("v"), Version: 1}, false))
	f.Add(Encode(cache.Entry{Value: []byte{}, Version: -1}, false))
	f.Add(Encode(cache.Entry{Version: 5, Negative: true}, false))
	f.Add(Encode(cache.Entry{Version: 9}, true))
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
