package memcachestore

import (
	"encoding/binary"
	"errors"

	"github.com/strata-project/strata/cache"
)

// An entry is stored as one memcached item: a flags byte, the version as eight big-endian
// bytes biased by 1<<63 (so that unsigned byte order is signed version order), then the
// value. A tombstone is an item too, so gets/cas sees it.
const (
	flagNegative  = 1
	flagTombstone = 2
	headerLen     = 9
)

// errCorrupt reports a stored value that is not an entry (written by something else).
var errCorrupt = errors.New("memcachestore: stored value is not an entry")

func encode(e cache.Entry, tombstone bool) []byte {
	b := make([]byte, headerLen+len(e.Value))
	if e.Negative || tombstone {
		b[0] |= flagNegative
	}
	if tombstone {
		b[0] |= flagTombstone
	}
	binary.BigEndian.PutUint64(b[1:headerLen], uint64(e.Version)^1<<63)
	if !e.Negative && !tombstone {
		copy(b[headerLen:], e.Value)
	}
	return b
}

// decode parses a stored value. tombstone reports a tombstone (a miss for Get).
func decode(b []byte) (e cache.Entry, tombstone bool, err error) {
	if len(b) < headerLen || b[0]&^(flagNegative|flagTombstone) != 0 {
		return cache.Entry{}, false, errCorrupt
	}
	e.Version = int64(binary.BigEndian.Uint64(b[1:headerLen]) ^ 1<<63)
	e.Negative = b[0]&flagNegative != 0
	tombstone = b[0]&flagTombstone != 0
	if tombstone && !e.Negative {
		return cache.Entry{}, false, errCorrupt
	}
	if !e.Negative {
		e.Value = b[headerLen:len(b):len(b)]
	} else if len(b) != headerLen {
		return cache.Entry{}, false, errCorrupt
	}
	return e, tombstone, nil
}
