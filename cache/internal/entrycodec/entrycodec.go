// Package entrycodec is the byte form of a cache entry shared by the stores that keep entries
// as opaque values in another server (Redis, Memcached): a flags byte, the version as eight
// big-endian bytes biased by 1<<63 (so that unsigned byte order is signed version order, which
// lets a server-side script compare versions on the raw bytes), then the value. A tombstone
// is stored the same way, so that a compare-and-set sees it.
package entrycodec

import (
	"encoding/binary"
	"errors"

	"github.com/strata-project/strata/cache"
)

// Flags and sizes of the encoding.
const (
	FlagNegative  = 1
	FlagTombstone = 2
	HeaderLen     = 9
)

// ErrCorrupt reports a stored value that is not an entry (written by something else).
var ErrCorrupt = errors.New("cache: stored value is not an entry")

// Encode returns the stored form of e, or of a tombstone at e.Version when tombstone is set.
func Encode(e cache.Entry, tombstone bool) []byte {
	b := make([]byte, HeaderLen+len(e.Value))
	if e.Negative || tombstone {
		b[0] |= FlagNegative
	}
	if tombstone {
		b[0] |= FlagTombstone
	}
	binary.BigEndian.PutUint64(b[1:HeaderLen], uint64(e.Version)^1<<63)
	if !e.Negative && !tombstone {
		copy(b[HeaderLen:], e.Value)
	} else {
		b = b[:HeaderLen]
	}
	return b
}

// Decode parses a stored value. tombstone reports a tombstone (a miss for Get). The value
// aliases b.
func Decode(b []byte) (e cache.Entry, tombstone bool, err error) {
	if len(b) < HeaderLen || b[0]&^(FlagNegative|FlagTombstone) != 0 {
		return cache.Entry{}, false, ErrCorrupt
	}
	e.Version = int64(binary.BigEndian.Uint64(b[1:HeaderLen]) ^ 1<<63)
	e.Negative = b[0]&FlagNegative != 0
	tombstone = b[0]&FlagTombstone != 0
	if tombstone && !e.Negative {
		return cache.Entry{}, false, ErrCorrupt
	}
	if !e.Negative {
		e.Value = b[HeaderLen:len(b):len(b)]
	} else if len(b) != HeaderLen {
		return cache.Entry{}, false, ErrCorrupt
	}
	return e, tombstone, nil
}
