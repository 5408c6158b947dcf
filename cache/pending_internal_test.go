package cache

import "testing"

func FuzzPendingRecord(f *testing.F) {
	f.Add([]byte("inv 3 \"user:1\""))
	f.Add([]byte("inv -1 \"\\x00\""))
	f.Add([]byte("inv 3"))
	f.Add([]byte("garbage"))
	f.Fuzz(func(t *testing.T, line []byte) {
		key, v, err := parsePendingRecord(line)
		if err != nil {
			return
		}
		rec := appendPendingRecord(nil, key, v)
		k2, v2, err := parsePendingRecord(rec[:len(rec)-1])
		if err != nil || k2 != key || v2 != v {
			t.Fatalf("round trip of %q: %q %d %v", line, k2, v2, err)
		}
	})
}
