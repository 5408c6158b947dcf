package replica

import (
	"context"
	"sync"
)

// Consistency is what a read asks of the data it gets.
type Consistency int

const (
	// Eventual reads may be served by any usable replica within the lag bounds.
	Eventual Consistency = iota
	// Session reads see at least the session's own writes (read-your-writes): they are served
	// by a node that has replayed the session token's position on the shard.
	Session
	// Strong reads are served by the primary.
	Strong
)

func (c Consistency) String() string {
	switch c {
	case Session:
		return "session"
	case Strong:
		return "strong"
	}
	return "eventual"
}

// SessionState carries one request's consistency across the layers below it: the token the
// client presented (what its reads must see) and the positions of the writes the request makes
// (what its next token must carry). Layers that route reads consult it; layers that write
// record their commit positions in it. It is safe for concurrent use (a request may fan out
// over shards in parallel).
type SessionState struct {
	mu    sync.Mutex // protects token
	token Token
	mode  Consistency
}

// NewSession returns the state of a request with consistency mode, starting from the token the
// client presented (the zero Token if none).
func NewSession(mode Consistency, presented Token) *SessionState {
	return &SessionState{token: presented, mode: mode}
}

// Mode returns the request's consistency.
func (s *SessionState) Mode() Consistency { return s.mode }

// MinLSN returns the position a read on shard must have replayed: the token's position for
// Session reads, 0 otherwise.
func (s *SessionState) MinLSN(shard uint32) LSN {
	if s.mode != Session {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.token.For(shard)
}

// Wrote records that the request committed a write on shard at lsn.
func (s *SessionState) Wrote(shard uint32, lsn LSN) {
	s.mu.Lock()
	s.token = s.token.Add(shard, lsn)
	s.mu.Unlock()
}

// Token returns the token to hand back to the client: the presented one advanced by the
// request's writes.
func (s *SessionState) Token() Token {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.token
}

type sessionKey struct{}

// WithSession returns a context carrying s.
func WithSession(ctx context.Context, s *SessionState) context.Context {
	return context.WithValue(ctx, sessionKey{}, s)
}

// SessionFrom returns the session carried by ctx, or nil (eventual reads, nothing recorded).
func SessionFrom(ctx context.Context) *SessionState {
	s, _ := ctx.Value(sessionKey{}).(*SessionState)
	return s
}
