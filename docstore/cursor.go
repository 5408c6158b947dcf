package docstore

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"strings"
)

// Cursors are opaque to callers. Inside, a cursor is the last id of the previous page,
// bound to its collection by a checksum:
//
//	base64url(no padding) of: 0x01 | id bytes | crc32c(collection 0x00 id) big-endian
//
// The checksum catches truncated, corrupted and cross-collection cursors. It is not a
// secret: a cursor forged with a valid checksum can only name a starting id, which is
// validated like any id and is harmless.
const cursorVersion = 1

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func cursorSum(collection, id string) uint32 {
	h := crc32.Update(0, castagnoli, []byte(collection))
	h = crc32.Update(h, castagnoli, []byte{0})
	return crc32.Update(h, castagnoli, []byte(id))
}

// EncodeCursor returns the cursor that continues a listing of collection after id.
func EncodeCursor(collection, id string) string {
	b := make([]byte, 0, 1+len(id)+4)
	b = append(b, cursorVersion)
	b = append(b, id...)
	b = binary.BigEndian.AppendUint32(b, cursorSum(collection, id))
	return base64.RawURLEncoding.EncodeToString(b)
}

// DecodeCursor returns the id a cursor of collection continues after. "" decodes to "" (the
// start). Anything EncodeCursor did not produce for this collection is an error wrapping
// ErrInvalid.
func DecodeCursor(collection, cursor string) (string, error) {
	if cursor == "" {
		return "", nil
	}
	if len(cursor) > base64.RawURLEncoding.EncodedLen(1+MaxIDBytes+4) {
		return "", fmt.Errorf("%w: cursor too long", ErrInvalid)
	}
	// The decoder skips CR and LF; a cursor has one spelling only, so refuse them.
	if strings.ContainsAny(cursor, "\r\n") {
		return "", fmt.Errorf("%w: malformed cursor", ErrInvalid)
	}
	b, err := base64.RawURLEncoding.DecodeString(cursor)
	if err != nil {
		return "", fmt.Errorf("%w: cursor: %v", ErrInvalid, err)
	}
	if len(b) < 1+1+4 || b[0] != cursorVersion {
		return "", fmt.Errorf("%w: malformed cursor", ErrInvalid)
	}
	id := string(b[1 : len(b)-4])
	if binary.BigEndian.Uint32(b[len(b)-4:]) != cursorSum(collection, id) {
		return "", fmt.Errorf("%w: cursor checksum mismatch (tampered, or from another collection)", ErrInvalid)
	}
	if err := CheckID(id); err != nil {
		return "", fmt.Errorf("%w: cursor names a bad id", ErrInvalid)
	}
	return id, nil
}
