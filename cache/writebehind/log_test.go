package writebehind

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func TestLogTornTailTruncated(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l, err := OpenLog(LogConfig{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Append(ctx, []Record{{Key: "a", Value: []byte("1")}, {Key: "b", Deleted: true}}); err != nil {
		t.Fatal(err)
	}
	l.Close()
	// A crash in the middle of an append: half a frame at the end.
	seg := filepath.Join(dir, fmt.Sprintf("%020d.seg", 0))
	half := appendRecord(nil, Record{Offset: 2, Key: "c", Value: []byte("3")})
	f, _ := os.OpenFile(seg, os.O_WRONLY|os.O_APPEND, 0)
	f.Write(half[:len(half)-2])
	f.Close()
	l, err = OpenLog(LogConfig{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	recs, _ := l.Replay(ctx)
	if len(recs) != 2 || recs[0].Key != "a" || string(recs[0].Value) != "1" || !recs[1].Deleted || recs[1].Offset != 1 {
		t.Fatalf("replay = %+v, want a=1 and delete b", recs)
	}
	// The next append lands after the truncated tail and is readable.
	if err := l.Append(ctx, []Record{{Key: "d", Value: []byte("4")}}); err != nil {
		t.Fatal(err)
	}
	if err := l.Ack(ctx, 1); err != nil {
		t.Fatal(err)
	}
	l.Close()
	l, err = OpenLog(LogConfig{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	recs, _ = l.Replay(ctx)
	if len(recs) != 1 || recs[0].Key != "d" || recs[0].Offset != 2 {
		t.Fatalf("replay after ack = %+v, want only d at offset 2", recs)
	}
}

func TestLogSegmentsRollAndAreRemoved(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	for _, policy := range []SyncPolicy{SyncAlways, SyncInterval, SyncNever} {
		d := filepath.Join(dir, fmt.Sprint(policy))
		l, err := OpenLog(LogConfig{Dir: d, Sync: policy, SegmentBytes: 100})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 20 {
			if err := l.Append(ctx, []Record{{Key: fmt.Sprint("k", i), Value: make([]byte, 40)}}); err != nil {
				t.Fatal(err)
			}
		}
		segs, _ := filepath.Glob(filepath.Join(d, "*.seg"))
		if len(segs) < 5 {
			t.Fatalf("%d segments for 20 records of ~60 bytes with 100-byte segments", len(segs))
		}
		if err := l.Ack(ctx, 19); err != nil {
			t.Fatal(err)
		}
		if segs, _ := filepath.Glob(filepath.Join(d, "*.seg")); len(segs) != 1 {
			t.Fatalf("%d segments left after acknowledging everything, want 1", len(segs))
		}
		l.Close()
		l, err = OpenLog(LogConfig{Dir: d, Sync: policy, SegmentBytes: 100})
		if err != nil {
			t.Fatal(err)
		}
		if recs, _ := l.Replay(ctx); len(recs) != 0 {
			t.Fatalf("replayed %d acknowledged records", len(recs))
		}
		l.Close()
	}
}

func FuzzDecodeRecords(f *testing.F) {
	f.Add(appendRecord(appendRecord(nil, Record{Key: "a", Value: []byte("x")}), Record{Offset: 1, Key: "b", Deleted: true}))
	f.Add([]byte{0, 0, 0, 9, 1, 2, 3, 4, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		recs, good := decodeRecords(data)
		if good > len(data) {
			t.Fatalf("good %d > len %d", good, len(data))
		}
		// Re-encoding the decoded records gives back exactly the valid prefix.
		var b []byte
		for _, r := range recs {
			b = appendRecord(b, r)
		}
		if string(b) != string(data[:good]) {
			t.Fatalf("re-encoded %x, valid prefix %x", b, data[:good])
		}
	})
}

// TestRecordStampRoundTrip: a record's stamp survives the log; records without one (as
// written before stamps existed) decode with stamp 0.
func TestRecordStampRoundTrip(t *testing.T) {
	in := []Record{
		{Offset: 0, Key: "a", Value: []byte("1"), Stamp: 1_764_000_000_123_456_789},
		{Offset: 1, Key: "b", Deleted: true, Stamp: 42},
		{Offset: 2, Key: "c", Value: []byte{}},
		{Offset: 3, Key: "d", Deleted: true},
	}
	var b []byte
	for _, r := range in {
		b = appendRecord(b, r)
	}
	out, good := decodeRecords(b)
	if good != len(b) || len(out) != len(in) {
		t.Fatalf("decoded %d of %d records (%d of %d bytes)", len(out), len(in), good, len(b))
	}
	for i := range in {
		if out[i].Key != in[i].Key || out[i].Stamp != in[i].Stamp || out[i].Deleted != in[i].Deleted || string(out[i].Value) != string(in[i].Value) {
			t.Errorf("record %d: %+v, want %+v", i, out[i], in[i])
		}
	}
	// An unknown flag bit is a corrupt frame, not a record.
	payload := appendRecord(nil, Record{Key: "x"})[frameHeader:]
	if _, ok := decodePayload(payload); !ok {
		t.Fatal("a plain record does not decode")
	}
	payload[8] = 1 << 5
	if r, ok := decodePayload(payload); ok {
		t.Fatalf("a record with an unknown flag decoded as %+v", r)
	}
}

// TestWritesAreStampedInOrder: stamps grow with every write of a WriteBehind.
func TestWritesAreStampedInOrder(t *testing.T) {
	var w WriteBehind
	last := int64(0)
	for range 1000 {
		s := w.stamp()
		if s <= last {
			t.Fatalf("stamp %d after %d", s, last)
		}
		last = s
	}
}
