package server

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/strata-project/strata/ratelimit/httplimit"
)

// Key is an API key as the server keeps it: never the key itself, only its SHA-256.
//
// Why a plain SHA-256 and not bcrypt or argon2: slow hashes protect low-entropy secrets
// (passwords) against guessing. API keys are generated (GenerateKey: 256 random bits), so
// no dictionary helps and a fast hash is as safe; a slow hash would add milliseconds of CPU
// to every request. Presented keys shorter than MinKeyLen are refused before hashing.
type Key struct {
	// ID names the key in logs, metrics, rate limits and idempotency records. Required; it
	// is not secret.
	ID string
	// Hash is the SHA-256 of the key. Required.
	Hash [sha256.Size]byte
	// Scopes are what the key may do (see Scope).
	Scopes []Scope
	// RateLimit limits the key's requests across all collections. Zero: no key limit.
	RateLimit RateLimit
}

// MinKeyLen is the shortest API key accepted, in bytes.
const MinKeyLen = 16

// HashKey returns the SHA-256 of an API key, as Key.Hash wants it.
func HashKey(key string) [sha256.Size]byte { return sha256.Sum256([]byte(key)) }

// ParseKeyHash parses a key hash written as 64 hex digits, optionally prefixed "sha256:".
func ParseKeyHash(s string) ([sha256.Size]byte, error) {
	var h [sha256.Size]byte
	s = strings.TrimPrefix(strings.TrimSpace(s), "sha256:")
	if len(s) != 2*sha256.Size {
		return h, fmt.Errorf("%w: key hash: want 64 hex digits", ErrConfig)
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil {
		return h, fmt.Errorf("%w: key hash: not hex", ErrConfig)
	}
	return h, nil
}

// Scope is one permission: Action on Collection ("*" for all), or admin.
type Scope struct {
	// Action is "read", "write" or "admin".
	Action string
	// Collection is a collection name or "*". Empty for admin.
	Collection string
}

// ParseScope parses "read:users", "write:*", "admin".
func ParseScope(s string) (Scope, error) {
	if s == "admin" {
		return Scope{Action: "admin"}, nil
	}
	a, c, ok := strings.Cut(s, ":")
	if !ok || (a != "read" && a != "write") || c == "" {
		return Scope{}, fmt.Errorf("%w: scope %q: want read:COLLECTION, write:COLLECTION (or :*) or admin", ErrConfig, s)
	}
	return Scope{Action: a, Collection: c}, nil
}

// String returns the scope's text form.
func (s Scope) String() string {
	if s.Action == "admin" {
		return "admin"
	}
	return s.Action + ":" + s.Collection
}

// Principal is who made a request: a key, or the anonymous client.
type Principal struct {
	// ID is the key's ID, or "anonymous".
	ID     string
	scopes []Scope
	limit  *httplimit.Middleware // the key's rate limit; nil: none
}

// Allowed reports whether the principal holds action on collection (action "admin" ignores
// collection).
func (p *Principal) Allowed(action, collection string) bool {
	for _, s := range p.scopes {
		if s.Action == "admin" && action == "admin" {
			return true
		}
		if s.Action == action && (s.Collection == "*" || s.Collection == collection) {
			return true
		}
	}
	return false
}

type principalKey struct{}

// PrincipalFrom returns the principal of an authenticated request, or nil.
func PrincipalFrom(ctx context.Context) *Principal {
	p, _ := ctx.Value(principalKey{}).(*Principal)
	return p
}

// keyring holds the keys of a server; it is replaced whole on reload.
type keyring struct {
	keys       []Key
	principals []*Principal // principals[i] is keys[i]'s
	anonymous  *Principal   // nil: anonymous access off
}

var (
	errNoKey  = errors.New("server: no API key")
	errBadKey = errors.New("server: unknown API key")
)

// presentedKey returns the key of a request: "Authorization: Bearer KEY" or "X-API-Key: KEY".
func presentedKey(r *http.Request) string {
	if a := r.Header.Get("Authorization"); a != "" {
		scheme, v, _ := strings.Cut(a, " ")
		if strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(v)
		}
		return ""
	}
	return r.Header.Get("X-API-Key")
}

// authenticate returns the request's principal. The presented key's hash is compared with
// every configured hash in constant time, without stopping at a match, so the time taken
// says nothing about which key (or how much of a hash) matched.
func (k *keyring) authenticate(r *http.Request) (*Principal, error) {
	presented := presentedKey(r)
	if presented == "" {
		if r.Header.Get("Authorization") == "" && k.anonymous != nil {
			return k.anonymous, nil
		}
		return nil, errNoKey
	}
	if len(presented) < MinKeyLen {
		return nil, errBadKey
	}
	h := HashKey(presented)
	found := -1
	for i := range k.keys {
		if subtle.ConstantTimeCompare(h[:], k.keys[i].Hash[:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return nil, errBadKey
	}
	return k.principals[found], nil
}
