package wire

import (
	"bufio"
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"
)

func TestRequestRoundTrip(t *testing.T) {
	for _, r := range []Request{
		{Op: OpAuth, Value: []byte("token")},
		{Op: OpGet, Key: "users/1"},
		{Op: OpSetIfNewer, Key: "k", Version: 9, TTL: time.Minute, Value: []byte{}},
		{Op: OpSetIfNewer, Key: "k", Version: -1, Negative: true},
		{Op: OpSetIfNotOlder, Key: "k", Version: 4, TTL: time.Second, Cost: 3 * time.Millisecond, Value: []byte("v")},
		{Op: OpInvalidate, Key: "k", Version: 1 << 62, TTL: time.Hour},
		{Op: OpRelease, Key: "", Token: 1<<64 - 1},
		{Op: OpPing},
	} {
		buf := AppendRequest(nil, 42, &r)
		f, err := ReadFrame(bufio.NewReader(bytes.NewReader(buf)), 1<<20)
		if err != nil || f.ID != 42 {
			t.Fatalf("ReadFrame(%+v) = %+v, %v", r, f, err)
		}
		got, err := ParseRequest(f)
		if err != nil {
			t.Fatalf("ParseRequest(%+v): %v", r, err)
		}
		if r.Value == nil && !r.Negative {
			r.Value = []byte{}
		}
		if !reflect.DeepEqual(got, r) {
			t.Errorf("round trip: got %+v, want %+v", got, r)
		}
	}
}

func TestResponseRoundTrip(t *testing.T) {
	for _, r := range []Response{
		{Status: StatusHit, Version: 3, Value: []byte("abc")},
		{Status: StatusHit, Version: 3, Negative: true},
		{Status: StatusHit, Version: 3, Expires: 1700000000123456789, Cost: time.Millisecond, Value: []byte("e")},
		{Status: StatusLeased, Token: 77, Value: []byte{}},
		{Status: StatusError, Value: []byte("boom")},
	} {
		buf := AppendResponse(nil, 7, &r)
		f, err := ReadFrame(bufio.NewReader(bytes.NewReader(buf)), 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseResponse(f)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Errorf("round trip: got %+v, want %+v", got, r)
		}
	}
}

func TestReadFrameBounds(t *testing.T) {
	buf := AppendRequest(nil, 1, &Request{Op: OpGet, Key: "k", Value: make([]byte, 100)})
	if _, err := ReadFrame(bufio.NewReader(bytes.NewReader(buf)), 50); !errors.Is(err, ErrTooLarge) {
		t.Errorf("frame over the bound: %v, want ErrTooLarge", err)
	}
	if _, err := ReadFrame(bufio.NewReader(bytes.NewReader([]byte{0, 0, 0, 1, 0, 0, 0, 0, 0})), 50); !errors.Is(err, ErrMalformed) {
		t.Errorf("length shorter than the header: %v, want ErrMalformed", err)
	}
	if _, err := ReadFrame(bufio.NewReader(bytes.NewReader(buf[:len(buf)-1])), 1<<20); err == nil {
		t.Error("truncated frame read without error")
	}
	bad := AppendRequest(nil, 1, &Request{Op: OpGet, Key: "key"})
	bad[len(bad)-4]++ // key length 4 with 3 bytes left
	f, _ := ReadFrame(bufio.NewReader(bytes.NewReader(bad)), 1<<20)
	if _, err := ParseRequest(f); !errors.Is(err, ErrMalformed) {
		t.Errorf("key longer than the body: %v, want ErrMalformed", err)
	}
}

// FuzzParseRequest: any bytes either fail to parse or parse into a request that encodes
// back to a frame parsing to the same request.
func FuzzParseRequest(f *testing.F) {
	f.Add(AppendRequest(nil, 1, &Request{Op: OpSetIfNewer, Key: "k", Version: 2, Value: []byte("v")}))
	f.Add(AppendRequest(nil, 2, &Request{Op: OpInvalidate, Key: "a/b", Version: 5, TTL: time.Second}))
	f.Add(AppendRequest(nil, 3, &Request{Op: OpSetIfNewer, Negative: true}))
	f.Add(AppendRequest(nil, 4, &Request{Op: OpSetIfNotOlder, Key: "k", Version: 2, Cost: time.Second, Value: []byte("v")}))
	f.Add([]byte{0, 0, 0, 5, 0, 0, 0, 1, 2})
	f.Add([]byte{255, 255, 255, 255})
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := ReadFrame(bufio.NewReader(bytes.NewReader(data)), 1<<16)
		if err != nil {
			return
		}
		r, err := ParseRequest(fr)
		if err != nil {
			return
		}
		again, err := ReadFrame(bufio.NewReader(bytes.NewReader(AppendRequest(nil, fr.ID, &r))), 1<<20)
		if err != nil {
			t.Fatalf("re-encoded frame: %v", err)
		}
		r2, err := ParseRequest(again)
		if err != nil {
			t.Fatalf("re-encoded request: %v", err)
		}
		if !reflect.DeepEqual(r, r2) {
			t.Fatalf("round trip: %+v became %+v", r, r2)
		}
	})
}

// FuzzParseResponse: the client's parser never panics and round-trips what it accepts.
func FuzzParseResponse(f *testing.F) {
	f.Add(AppendResponse(nil, 1, &Response{Status: StatusHit, Version: 4, Value: []byte("x")}))
	f.Add(AppendResponse(nil, 1, &Response{Status: StatusError, Value: []byte("e")}))
	f.Add(AppendResponse(nil, 1, &Response{Status: StatusHit, Version: 4, Expires: 1 << 60, Cost: 5, Value: []byte("x")}))
	f.Fuzz(func(t *testing.T, data []byte) {
		fr, err := ReadFrame(bufio.NewReader(bytes.NewReader(data)), 1<<16)
		if err != nil {
			return
		}
		r, err := ParseResponse(fr)
		if err != nil {
			return
		}
		again, _ := ReadFrame(bufio.NewReader(bytes.NewReader(AppendResponse(nil, fr.ID, &r))), 1<<20)
		r2, err := ParseResponse(again)
		if err != nil || !reflect.DeepEqual(r, r2) {
			t.Fatalf("round trip: %+v became %+v (%v)", r, r2, err)
		}
	})
}
