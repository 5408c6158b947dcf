package docstore

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/strata-project/strata/shard"
)

// CheckCollection validates a collection name: [a-z][a-z0-9_-]{0,62}.
func CheckCollection(c string) error {
	if len(c) == 0 || len(c) > MaxCollectionBytes {
		return fmt.Errorf("%w: collection name of %d bytes (1..%d)", ErrInvalid, len(c), MaxCollectionBytes)
	}
	for i := 0; i < len(c); i++ {
		b := c[i]
		switch {
		case b >= 'a' && b <= 'z':
		case i > 0 && (b >= '0' && b <= '9' || b == '_' || b == '-'):
		default:
			return fmt.Errorf("%w: collection name %q: want [a-z][a-z0-9_-]*", ErrInvalid, c)
		}
	}
	return nil
}

// CheckID validates a document id: 1 to MaxIDBytes bytes of valid UTF-8 with only printable
// characters (letters, marks, numbers, punctuation, symbols and the ASCII space; no control,
// format or other invisible characters). Anything else, SQL-looking text included, is
// stored verbatim.
func CheckID(id string) error {
	if len(id) == 0 || len(id) > MaxIDBytes {
		return fmt.Errorf("%w: id of %d bytes (1..%d)", ErrInvalid, len(id), MaxIDBytes)
	}
	for i := 0; i < len(id); {
		b := id[i]
		if b < utf8.RuneSelf {
			if b < 0x20 || b == 0x7f {
				return fmt.Errorf("%w: id %q has a control character", ErrInvalid, id)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(id[i:])
		if r == utf8.RuneError && n == 1 {
			return fmt.Errorf("%w: id %q is not valid UTF-8", ErrInvalid, id)
		}
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%w: id %q has a non-printable character %U", ErrInvalid, id, r)
		}
		i += n
	}
	return nil
}

// CheckKey validates a collection name and an id.
func CheckKey(collection, id string) error {
	if err := CheckCollection(collection); err != nil {
		return err
	}
	return CheckID(id)
}

// CheckBody validates a body: a JSON object of at most maxBytes bytes (maxBytes <= 0 means
// DefaultMaxBodyBytes).
func CheckBody(body []byte, maxBytes int) error {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBodyBytes
	}
	if len(body) > maxBytes {
		return fmt.Errorf("%w: body of %d bytes, limit %d", ErrInvalid, len(body), maxBytes)
	}
	t := bytes.TrimLeft(body, " \t\r\n")
	if len(t) == 0 || t[0] != '{' {
		return fmt.Errorf("%w: body is not a JSON object", ErrInvalid)
	}
	if !json.Valid(body) {
		return fmt.Errorf("%w: body is not valid JSON", ErrInvalid)
	}
	if !utf8.Valid(body) {
		return fmt.Errorf("%w: body is not valid UTF-8", ErrInvalid)
	}
	return checkEscapes(body)
}

// checkEscapes refuses the \u escapes that not every store can hold: U+0000 and unpaired
// UTF-16 surrogates (PostgreSQL's jsonb refuses both), so that a document is accepted or
// refused alike whatever the store. body is valid JSON, so a backslash is always an escape
// inside a string.
func checkEscapes(body []byte) error {
	hex4 := func(i int) (rune, bool) {
		if i+6 > len(body) || body[i] != '\\' || body[i+1] != 'u' {
			return 0, false
		}
		v, err := strconv.ParseUint(string(body[i+2:i+6]), 16, 16)
		return rune(v), err == nil
	}
	for i := 0; i < len(body); i++ {
		if body[i] != '\\' {
			continue
		}
		r, ok := hex4(i)
		if !ok {
			i++ // a two-character escape
			continue
		}
		switch {
		case r == 0:
			return fmt.Errorf("%w: body holds the escape \\u0000, which is not stored", ErrInvalid)
		case utf16.IsSurrogate(r) && r < 0xdc00:
			if lo, ok := hex4(i + 6); ok && lo >= 0xdc00 && lo <= 0xdfff {
				i += 11
				continue
			}
			return fmt.Errorf("%w: body holds an unpaired UTF-16 surrogate escape", ErrInvalid)
		case utf16.IsSurrogate(r):
			return fmt.Errorf("%w: body holds an unpaired UTF-16 surrogate escape", ErrInvalid)
		}
		i += 5
	}
	return nil
}

// CheckBatch validates the ids of a GetMany call.
func CheckBatch(collection string, ids []string) error {
	if err := CheckCollection(collection); err != nil {
		return err
	}
	if len(ids) > MaxBatch {
		return fmt.Errorf("%w: %d ids in one batch, at most %d", ErrInvalid, len(ids), MaxBatch)
	}
	for _, id := range ids {
		if err := CheckID(id); err != nil {
			return err
		}
	}
	return nil
}

// PartitionOf returns the virtual partition of a document among partitions: the jump hash
// (shard.JumpHash) of the placement hash (shard.HashString) of collection + "/" + id.
// Collection names contain no "/", so distinct keys never collide before hashing.
func PartitionOf(collection, id string, partitions int) int {
	if h, ok := companionHash(id); ok {
		return shard.JumpHash(h, partitions)
	}
	return shard.JumpHash(routingHash(collection, id), partitions)
}

func routingHash(collection, id string) uint64 {
	var buf [MaxCollectionBytes + 1 + MaxIDBytes]byte
	return shard.Hash(append(append(append(buf[:0], collection...), '/'), id...))
}

// CompanionID returns the id of a companion of the document (collection, id): a document,
// in a collection of its own, that every store places on the same partition as that
// document, so that it is reachable exactly when the document is (an idempotency record
// beside the document it guards, for one). name (at most MaxIDBytes-18 bytes) tells a
// document's companions apart. The id has the form "~" + 16 hex digits + "~" + name; any id
// of that form is placed by its digits, whoever wrote it.
func CompanionID(collection, id, name string) string {
	return fmt.Sprintf("~%016x~%s", routingHash(collection, id), name)
}

func companionHash(id string) (uint64, bool) {
	if len(id) < 18 || id[0] != '~' || id[17] != '~' {
		return 0, false
	}
	h, err := strconv.ParseUint(id[1:17], 16, 64)
	return h, err == nil
}

// RoutingKey returns the key the sharded store places a document by: collection + "/" + id.
func RoutingKey(collection, id string) string { return collection + "/" + id }
