// Package wire is the binary protocol between a cache node (package cachenode) and its client
// (package cache/nodestore).
//
// Every message is a frame:
//
//	u32 length     bytes that follow (id, code and body), big-endian
//	u32 id         chosen by the client; the response carries the request's id
//	u8  code       an Op in a request, a Status in a response
//	body           see Request and Response
//
// A client may send any number of requests without waiting (pipelining); the node answers
// each with a frame of the same id, in order on one connection. The first request on a
// connection must be OpAuth with the shared token; the node closes a connection whose first
// frame is anything else or whose token is wrong.
//
// Bodies have one fixed layout per direction, whatever the operation, so that a parser has
// a single path to get right (it is fuzzed):
//
//	request:  u8 flags, i64 version, i64 ttl (ns), u64 token, i64 cost (ns), u16 key length,
//	          key, value
//	response: u8 flags, i64 version, u64 token, i64 expires (Unix ns), i64 cost (ns),
//	          value (or the error message)
//
// The package imports the standard library only.
package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// Op is the operation of a request.
type Op = byte

// The operations.
const (
	OpAuth       Op = 1 // Value: the token
	OpGet        Op = 2 // Key
	OpSetIfNewer Op = 3 // Key, Version, Negative, Value, TTL, Cost
	OpInvalidate Op = 4 // Key, Version, TTL
	OpDelete     Op = 5 // Key
	OpLease      Op = 6 // Key, TTL
	OpRelease    Op = 7 // Key, Token
	OpPing       Op = 8 // nothing
	// OpSetIfNotOlder is SetIfNewer that also replaces an entry of the same version (an
	// early refresh): Key, Version, Negative, Value, TTL, Cost.
	OpSetIfNotOlder Op = 9
)

// Status is the outcome carried by a response.
type Status = byte

// The statuses.
const (
	StatusOK      Status = 1 // done (auth, invalidate, delete, release, ping)
	StatusHit     Status = 2 // Get found an entry: Version, Negative, Value, Expires, Cost
	StatusMiss    Status = 3 // Get found nothing
	StatusStored  Status = 4 // SetIfNewer or SetIfNotOlder wrote
	StatusRefused Status = 5 // SetIfNewer or SetIfNotOlder refused
	StatusLeased  Status = 6 // Lease granted: Token
	StatusBusy    Status = 7 // Lease held by another caller
	StatusError   Status = 8 // the operation failed: Value is the message
)

// Sizes of the fixed parts.
const (
	headerLen      = 4 + 4 + 1
	requestFixed   = 1 + 8 + 8 + 8 + 8 + 2
	responseFixed  = 1 + 8 + 8 + 8 + 8
	flagNegative   = 1
	MaxKeyLen      = 1<<16 - 1 // longest key a request can carry
	DefaultMaxBody = 64 << 20  // default bound on a frame's length (64 MiB)
)

// Errors of the parsers.
var (
	// ErrMalformed reports a frame that does not follow the protocol.
	ErrMalformed = errors.New("wire: malformed frame")
	// ErrTooLarge reports a frame longer than the reader's bound.
	ErrTooLarge = errors.New("wire: frame too large")
)

// Frame is one message: the id, the code (Op or Status) and the body.
type Frame struct {
	ID   uint32
	Code byte
	Body []byte
}

// ReadFrame reads one frame of at most max bytes (length field). The body is a new slice
// that the caller owns.
func ReadFrame(r *bufio.Reader, max int) (Frame, error) {
	var h [headerLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return Frame{}, err
	}
	n := binary.BigEndian.Uint32(h[0:4])
	if n < headerLen-4 {
		return Frame{}, fmt.Errorf("%w: length %d", ErrMalformed, n)
	}
	if uint64(n) > uint64(max) {
		return Frame{}, fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, n, max)
	}
	f := Frame{ID: binary.BigEndian.Uint32(h[4:8]), Code: h[8]}
	f.Body = make([]byte, n-(headerLen-4))
	if _, err := io.ReadFull(r, f.Body); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return Frame{}, err
	}
	return f, nil
}

// Request is a decoded request.
type Request struct {
	Op      Op
	Key     string
	Version int64
	TTL     time.Duration
	Token   uint64
	// Cost is the entry's load cost (OpSetIfNewer, OpSetIfNotOlder).
	Cost     time.Duration
	Negative bool
	// Value is the entry's value (OpSetIfNewer, OpSetIfNotOlder) or the token (OpAuth). A non-negative
	// entry's value is never nil after parsing: an empty value stays a hit.
	Value []byte
}

// AppendRequest appends r as a frame with the given id.
func AppendRequest(dst []byte, id uint32, r *Request) []byte {
	n := headerLen - 4 + requestFixed + len(r.Key) + len(r.Value)
	dst = binary.BigEndian.AppendUint32(dst, uint32(n))
	dst = binary.BigEndian.AppendUint32(dst, id)
	dst = append(dst, r.Op)
	var flags byte
	if r.Negative {
		flags |= flagNegative
	}
	dst = append(dst, flags)
	dst = binary.BigEndian.AppendUint64(dst, uint64(r.Version))
	dst = binary.BigEndian.AppendUint64(dst, uint64(r.TTL))
	dst = binary.BigEndian.AppendUint64(dst, r.Token)
	dst = binary.BigEndian.AppendUint64(dst, uint64(r.Cost))
	dst = binary.BigEndian.AppendUint16(dst, uint16(len(r.Key)))
	dst = append(dst, r.Key...)
	return append(dst, r.Value...)
}

// ParseRequest decodes a request frame. Value aliases f.Body.
func ParseRequest(f Frame) (Request, error) {
	b := f.Body
	if f.Code < OpAuth || f.Code > OpSetIfNotOlder {
		return Request{}, fmt.Errorf("%w: unknown op %d", ErrMalformed, f.Code)
	}
	if len(b) < requestFixed {
		return Request{}, fmt.Errorf("%w: request body of %d bytes", ErrMalformed, len(b))
	}
	r := Request{
		Op:       f.Code,
		Negative: b[0]&flagNegative != 0,
		Version:  int64(binary.BigEndian.Uint64(b[1:9])),
		TTL:      time.Duration(binary.BigEndian.Uint64(b[9:17])),
		Token:    binary.BigEndian.Uint64(b[17:25]),
		Cost:     time.Duration(binary.BigEndian.Uint64(b[25:33])),
	}
	if b[0]&^flagNegative != 0 {
		return Request{}, fmt.Errorf("%w: unknown flags %#x", ErrMalformed, b[0])
	}
	kl := int(binary.BigEndian.Uint16(b[33:35]))
	if len(b) < requestFixed+kl {
		return Request{}, fmt.Errorf("%w: key of %d bytes in a body of %d", ErrMalformed, kl, len(b))
	}
	r.Key = string(b[requestFixed : requestFixed+kl])
	r.Value = b[requestFixed+kl:]
	if r.Negative {
		if len(r.Value) > 0 {
			return Request{}, fmt.Errorf("%w: negative entry with a value", ErrMalformed)
		}
		r.Value = nil
	}
	return r, nil
}

// Response is a decoded response.
type Response struct {
	Status  Status
	Version int64
	Token   uint64
	// Expires is when the entry expires, in Unix nanoseconds; 0 for none (StatusHit).
	Expires int64
	// Cost is the entry's load cost (StatusHit).
	Cost     time.Duration
	Negative bool
	// Value is the entry's value (StatusHit) or the error message (StatusError).
	Value []byte
}

// AppendResponse appends r as a frame with the given id.
func AppendResponse(dst []byte, id uint32, r *Response) []byte {
	n := headerLen - 4 + responseFixed + len(r.Value)
	dst = binary.BigEndian.AppendUint32(dst, uint32(n))
	dst = binary.BigEndian.AppendUint32(dst, id)
	dst = append(dst, r.Status)
	var flags byte
	if r.Negative {
		flags |= flagNegative
	}
	dst = append(dst, flags)
	dst = binary.BigEndian.AppendUint64(dst, uint64(r.Version))
	dst = binary.BigEndian.AppendUint64(dst, r.Token)
	dst = binary.BigEndian.AppendUint64(dst, uint64(r.Expires))
	dst = binary.BigEndian.AppendUint64(dst, uint64(r.Cost))
	return append(dst, r.Value...)
}

// ParseResponse decodes a response frame. Value aliases f.Body.
func ParseResponse(f Frame) (Response, error) {
	b := f.Body
	if f.Code < StatusOK || f.Code > StatusError {
		return Response{}, fmt.Errorf("%w: unknown status %d", ErrMalformed, f.Code)
	}
	if len(b) < responseFixed {
		return Response{}, fmt.Errorf("%w: response body of %d bytes", ErrMalformed, len(b))
	}
	if b[0]&^flagNegative != 0 {
		return Response{}, fmt.Errorf("%w: unknown flags %#x", ErrMalformed, b[0])
	}
	r := Response{
		Status:   f.Code,
		Negative: b[0]&flagNegative != 0,
		Version:  int64(binary.BigEndian.Uint64(b[1:9])),
		Token:    binary.BigEndian.Uint64(b[9:17]),
		Expires:  int64(binary.BigEndian.Uint64(b[17:25])),
		Cost:     time.Duration(binary.BigEndian.Uint64(b[25:33])),
		Value:    b[responseFixed:],
	}
	if r.Negative {
		if len(r.Value) > 0 {
			return Response{}, fmt.Errorf("%w: negative entry with a value", ErrMalformed)
		}
		r.Value = nil
	}
	return r, nil
}
