// Package entrycodec is the byte form of a cache entry shared by the stores that keep entries
// as opaque values in another server (Redis, Memcached): a flags byte, the version as eight
// big-endian bytes biased by 1<<63 (so that unsigned byte order is signed version order, which
// lets a server-side script compare versions on the raw bytes), then, for an entry with an
// expiry or a cost (FlagMeta), the expiry in Unix nanoseconds and the cost in nanoseconds as
// eight big-endian bytes each, then the value. A tombstone is stored the same way (without
// meta), so that a compare-and-set sees it. Entries written before FlagMeta existed decode
// with no expiry and no cost.
package entrycodec

import (
	"encoding/binary"
	"errors"
	"time"

	"github.com/strata-project/strata/cache"
)

// Flags and sizes of the encoding.
const (
	FlagNegative  = 1
	FlagTombstone = 2
	FlagMeta      = 4 // expiry and cost follow the version
	HeaderLen     = 9
	MetaLen       = 16
)

// ErrCorrupt reports a stored value that is not an entry (written by something else).
var ErrCorrupt = errors.New("cache: stored value is not an entry")

// Encode returns the stored form of e, or of a tombstone at e.Version when tombstone is set.
// The expiry is e.Expires as given: stores set it from the ttl before encoding.
func Encode(e cache.Entry, tombstone bool) []byte {
	var expires int64
	if !e.Expires.IsZero() {
		expires = e.Expires.UnixNano()
	}
	cost := max(int64(e.Cost), 0)
	meta := !tombstone && (expires != 0 || cost != 0)
	n := HeaderLen
	if meta {
		n += MetaLen
	}
	if !e.Negative && !tombstone {
		n += len(e.Value)
	}
	b := make([]byte, HeaderLen, n)
	if e.Negative || tombstone {
		b[0] |= FlagNegative
	}
	if tombstone {
		b[0] |= FlagTombstone
	}
	binary.BigEndian.PutUint64(b[1:HeaderLen], uint64(e.Version)^1<<63)
	if meta {
		b[0] |= FlagMeta
		b = binary.BigEndian.AppendUint64(b, uint64(expires))
		b = binary.BigEndian.AppendUint64(b, uint64(cost))
	}
	if !e.Negative && !tombstone {
		b = append(b, e.Value...)
	}
	return b
}

// Decode parses a stored value. tombstone reports a tombstone (a miss for Get). The value
// aliases b.
func Decode(b []byte) (e cache.Entry, tombstone bool, err error) {
	if len(b) < HeaderLen || b[0]&^(FlagNegative|FlagTombstone|FlagMeta) != 0 {
		return cache.Entry{}, false, ErrCorrupt
	}
	e.Version = int64(binary.BigEndian.Uint64(b[1:HeaderLen]) ^ 1<<63)
	e.Negative = b[0]&FlagNegative != 0
	tombstone = b[0]&FlagTombstone != 0
	if tombstone && (!e.Negative || b[0]&FlagMeta != 0) {
		return cache.Entry{}, false, ErrCorrupt
	}
	rest := b[HeaderLen:]
	if b[0]&FlagMeta != 0 {
		if len(rest) < MetaLen {
			return cache.Entry{}, false, ErrCorrupt
		}
		expires := int64(binary.BigEndian.Uint64(rest[0:8]))
		cost := int64(binary.BigEndian.Uint64(rest[8:16]))
		if cost < 0 || (expires == 0 && cost == 0) { // Encode writes neither
			return cache.Entry{}, false, ErrCorrupt
		}
		if expires != 0 {
			e.Expires = time.Unix(0, expires)
		}
		e.Cost = time.Duration(cost)
		rest = rest[MetaLen:]
	}
	if !e.Negative {
		e.Value = rest[:len(rest):len(rest)]
	} else if len(rest) != 0 {
		return cache.Entry{}, false, ErrCorrupt
	}
	return e, tombstone, nil
}
