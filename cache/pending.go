package cache

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
)

// pendingSet holds the invalidations that could not be applied to the store: key -> the
// newest version to invalidate at. While a key is pending, reads of it bypass the cache.
// With a path, every addition is appended to a file and synced before add returns, and the
// file is replayed on open, so a crash does not forget an invalidation.
//
// File format, one record per line: "inv <version> <Go-quoted key>\n". A torn last line
// (no newline) is ignored; any other malformed line is an error.
type pendingSet struct {
	n    atomic.Int64     // len(m), read without the lock on the hot path
	mu   sync.Mutex       // protects m, f and dirty
	m    map[string]int64 // pending invalidations
	path string           // "" keeps the set in memory only
	f    *os.File         // the log, open for appending
	// dirty counts records in the file that no longer match m; compaction rewrites it.
	dirty int
}

func openPending(path string) (*pendingSet, error) {
	p := &pendingSet{m: make(map[string]int64), path: path}
	if path == "" {
		return p, nil
	}
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("cache: read pending invalidations: %w", err)
	}
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			break // torn tail
		}
		key, v, err := parsePendingRecord(data[:i])
		if err != nil {
			return nil, fmt.Errorf("cache: pending invalidations %s: %w", filepath.Base(path), err)
		}
		p.m[key] = max(p.m[key], v)
		data = data[i+1:]
	}
	p.n.Store(int64(len(p.m)))
	if err := p.rewriteLocked(); err != nil {
		return nil, err
	}
	return p, nil
}

// appendPendingRecord appends the record of (key, v) to b.
func appendPendingRecord(b []byte, key string, v int64) []byte {
	b = append(b, "inv "...)
	b = strconv.AppendInt(b, v, 10)
	b = append(b, ' ')
	b = strconv.AppendQuote(b, key)
	return append(b, '\n')
}

// parsePendingRecord parses one line (without its newline).
func parsePendingRecord(line []byte) (key string, v int64, err error) {
	rest, ok := bytes.CutPrefix(line, []byte("inv "))
	if !ok {
		return "", 0, fmt.Errorf("malformed record %q", line)
	}
	num, q, ok := bytes.Cut(rest, []byte(" "))
	if !ok {
		return "", 0, fmt.Errorf("malformed record %q", line)
	}
	v, err = strconv.ParseInt(string(num), 10, 64)
	if err != nil {
		return "", 0, fmt.Errorf("malformed version in %q", line)
	}
	key, err = strconv.Unquote(string(q))
	if err != nil || q[0] != '"' {
		return "", 0, fmt.Errorf("malformed key in %q", line)
	}
	return key, v, nil
}

// has reports whether key has a pending invalidation.
func (p *pendingSet) has(key string) bool {
	if p.n.Load() == 0 {
		return false
	}
	p.mu.Lock()
	_, ok := p.m[key]
	p.mu.Unlock()
	return ok
}

// version returns the version of key's pending invalidation.
func (p *pendingSet) version(key string) (int64, bool) {
	if p.n.Load() == 0 {
		return 0, false
	}
	p.mu.Lock()
	v, ok := p.m[key]
	p.mu.Unlock()
	return v, ok
}

// add records an invalidation of key at v; with a file, it is synced before add returns.
// The key is pending (in memory) even when the file write fails.
func (p *pendingSet) add(key string, v int64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if old, ok := p.m[key]; !ok || v > old {
		p.m[key] = v
	}
	p.n.Store(int64(len(p.m)))
	if p.f == nil {
		return nil
	}
	if _, err := p.f.Write(appendPendingRecord(nil, key, v)); err != nil {
		return fmt.Errorf("cache: append pending invalidation: %w", err)
	}
	if err := p.f.Sync(); err != nil {
		return fmt.Errorf("cache: sync pending invalidations: %w", err)
	}
	return nil
}

// snapshot returns a copy of the pending invalidations.
func (p *pendingSet) snapshot() map[string]int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]int64, len(p.m))
	for k, v := range p.m {
		out[k] = v
	}
	return out
}

// done forgets key's invalidation if it is still the one at v (a newer one stays pending).
func (p *pendingSet) done(key string, v int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cur, ok := p.m[key]; ok && cur == v {
		delete(p.m, key)
		p.n.Store(int64(len(p.m)))
		p.dirty++
	}
}

// compact rewrites the file to hold only what is still pending.
func (p *pendingSet) compact() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.path == "" || p.dirty == 0 {
		return nil
	}
	return p.rewriteLocked()
}

// rewriteLocked replaces the file by one holding exactly m (write, sync, rename) and reopens
// it for appending.
func (p *pendingSet) rewriteLocked() error {
	var b []byte
	for k, v := range p.m {
		b = appendPendingRecord(b, k, v)
	}
	tmp := p.path + ".tmp"
	if err := writeFileSync(tmp, b); err != nil {
		return fmt.Errorf("cache: rewrite pending invalidations: %w", err)
	}
	if err := os.Rename(tmp, p.path); err != nil {
		return fmt.Errorf("cache: rewrite pending invalidations: %w", err)
	}
	if p.f != nil {
		p.f.Close()
	}
	f, err := os.OpenFile(p.path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		p.f = nil
		return fmt.Errorf("cache: open pending invalidations: %w", err)
	}
	p.f, p.dirty = f, 0
	return nil
}

func writeFileSync(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func (p *pendingSet) close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.f == nil {
		return nil
	}
	err := p.f.Close()
	p.f = nil
	return err
}
