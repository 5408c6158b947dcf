package replica

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// ErrBadToken is returned for a token that is malformed, tampered with or signed with another
// key.
var ErrBadToken = errors.New("replica: invalid consistency token")

// MaxTokenShards bounds how many shards one token remembers; MaxTokenLen bounds its text.
const (
	MaxTokenShards = 64
	MaxTokenLen    = 1024
)

const (
	tokenVersion = 1
	macLen       = 16 // truncated HMAC-SHA256: 128 bits is plenty against forgery
	minKeyLen    = 16
)

// Position is a commit position on one shard.
type Position struct {
	Shard uint32
	LSN   LSN
}

// Token is a session's read-your-writes state: for each shard written to, the WAL position of
// its latest write. A read on a shard presenting a token is served only by a node that has
// replayed at least that position. The zero Token asks for nothing.
type Token struct {
	positions []Position // sorted by shard, one per shard
}

// Add returns a token that also requires lsn on shard (keeping the larger of the two positions
// if the shard is present). A token holds at most MaxTokenShards shards: past that, the shard
// with the smallest position is dropped, and reads there lose the guarantee.
func (t Token) Add(shard uint32, lsn LSN) Token {
	ps := slices.Clone(t.positions)
	i, found := slices.BinarySearchFunc(ps, shard, func(p Position, s uint32) int { return cmpU32(p.Shard, s) })
	if found {
		ps[i].LSN = max(ps[i].LSN, lsn)
		return Token{ps}
	}
	ps = slices.Insert(ps, i, Position{shard, lsn})
	if len(ps) > MaxTokenShards {
		drop := 0
		for j := range ps {
			if ps[j].LSN < ps[drop].LSN {
				drop = j
			}
		}
		ps = slices.Delete(ps, drop, drop+1)
	}
	return Token{ps}
}

// Merge returns a token requiring everything either token requires.
func (t Token) Merge(o Token) Token {
	for _, p := range o.positions {
		t = t.Add(p.Shard, p.LSN)
	}
	return t
}

// For returns the position the token requires on shard, or 0.
func (t Token) For(shard uint32) LSN {
	i, found := slices.BinarySearchFunc(t.positions, shard, func(p Position, s uint32) int { return cmpU32(p.Shard, s) })
	if !found {
		return 0
	}
	return t.positions[i].LSN
}

// Positions returns the token's positions, ordered by shard.
func (t Token) Positions() []Position { return slices.Clone(t.positions) }

// IsZero reports whether the token requires nothing.
func (t Token) IsZero() bool { return len(t.positions) == 0 }

func cmpU32(a, b uint32) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Signer encodes tokens as compact, URL-safe strings authenticated with a secret key, so that
// they can be handed to clients (in an HTTP header, say) and trusted when they come back.
type Signer struct {
	key []byte
}

// NewSigner returns a Signer for key, which must be at least 16 bytes of secret.
func NewSigner(key []byte) (*Signer, error) {
	if len(key) < minKeyLen {
		return nil, fmt.Errorf("replica: token key must be at least %d bytes", minKeyLen)
	}
	return &Signer{key: slices.Clone(key)}, nil
}

// Encode returns the token's text form: base64url(version, count, (shard, lsn)..., mac).
func (s *Signer) Encode(t Token) string {
	b := make([]byte, 0, 2+len(t.positions)*12+macLen)
	b = append(b, tokenVersion)
	b = binary.AppendUvarint(b, uint64(len(t.positions)))
	for _, p := range t.positions {
		b = binary.AppendUvarint(b, uint64(p.Shard))
		b = binary.AppendUvarint(b, uint64(p.LSN))
	}
	b = append(b, s.mac(b)...)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (s *Signer) mac(b []byte) []byte {
	h := hmac.New(sha256.New, s.key)
	h.Write(b)
	return h.Sum(nil)[:macLen]
}

// Decode parses and authenticates a token. An empty string is the zero token.
func (s *Signer) Decode(text string) (Token, error) {
	if text == "" {
		return Token{}, nil
	}
	if len(text) > MaxTokenLen {
		return Token{}, fmt.Errorf("%w: too long", ErrBadToken)
	}
	b, err := base64.RawURLEncoding.DecodeString(text)
	if err != nil || len(b) < 2+macLen {
		return Token{}, fmt.Errorf("%w: malformed", ErrBadToken)
	}
	body, mac := b[:len(b)-macLen], b[len(b)-macLen:]
	if !hmac.Equal(mac, s.mac(body)) {
		return Token{}, fmt.Errorf("%w: signature does not match", ErrBadToken)
	}
	if body[0] != tokenVersion {
		return Token{}, fmt.Errorf("%w: unknown version %d", ErrBadToken, body[0])
	}
	rest := body[1:]
	n, k := binary.Uvarint(rest)
	if k <= 0 || n > MaxTokenShards {
		return Token{}, fmt.Errorf("%w: bad count", ErrBadToken)
	}
	rest = rest[k:]
	ps := make([]Position, 0, n)
	for range n {
		shard, k1 := binary.Uvarint(rest)
		if k1 <= 0 || shard > uint64(^uint32(0)) {
			return Token{}, fmt.Errorf("%w: bad shard", ErrBadToken)
		}
		rest = rest[k1:]
		lsn, k2 := binary.Uvarint(rest)
		if k2 <= 0 {
			return Token{}, fmt.Errorf("%w: bad position", ErrBadToken)
		}
		rest = rest[k2:]
		if len(ps) > 0 && uint32(shard) <= ps[len(ps)-1].Shard {
			return Token{}, fmt.Errorf("%w: shards out of order", ErrBadToken)
		}
		ps = append(ps, Position{uint32(shard), LSN(lsn)})
	}
	if len(rest) != 0 {
		return Token{}, fmt.Errorf("%w: trailing bytes", ErrBadToken)
	}
	return Token{ps}, nil
}
