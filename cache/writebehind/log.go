package writebehind

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// SyncPolicy says when the log forces appended records to disk.
type SyncPolicy int

const (
	// SyncAlways syncs before Append returns: an acknowledged write survives a power loss.
	// Concurrent writers share one sync (group commit). The default.
	SyncAlways SyncPolicy = iota
	// SyncInterval syncs every LogConfig.SyncInterval: an acknowledged write survives a
	// process crash, and a power loss loses at most the last interval.
	SyncInterval
	// SyncNever leaves syncing to the operating system: writes survive a process crash only.
	SyncNever
)

// ErrCorrupt reports a log whose records fail their checksum before the last segment's tail.
var ErrCorrupt = errors.New("writebehind: corrupt log")

// LogConfig configures a Log. Dir is required.
type LogConfig struct {
	// Dir holds the segment files and the acknowledgement file. Required; created if absent.
	Dir string
	// Sync is the sync policy. Default SyncAlways.
	Sync SyncPolicy
	// SyncInterval is the period of SyncInterval. Default 100ms.
	SyncInterval time.Duration
	// SegmentBytes is the size beyond which the log starts a new segment file; segments
	// whose records are all acknowledged are deleted. Default 64 MiB.
	SegmentBytes int64
}

// Log is a Queue on local files: segment files of checksummed records, named by the offset
// of their first record, and an acknowledgement file holding the first unacknowledged
// offset. Opening a log truncates a torn tail (a record cut short or failing its checksum
// at the end of the last segment, as a crash mid-append leaves it).
//
// Record frame: 4-byte big-endian payload length, 4-byte CRC-32C of the payload, payload.
// Payload: 8-byte offset, 1 flag byte (1 = delete), uvarint key length, key, value.
type Log struct {
	cfg LogConfig

	mu      sync.Mutex // protects f, size, next, segs, acked, replay
	f       *os.File   // the last segment, open for appending
	size    int64      // its size
	next    uint64     // offset of the next record
	segs    []uint64   // base offsets of the segments, ascending
	acked   uint64     // records below it are acknowledged
	replay  []Record
	syncErr error // last interval sync error, reported by the next Append

	stop chan struct{}
	wg   sync.WaitGroup
}

var _ Queue = (*Log)(nil)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

const frameHeader = 8

// OpenLog opens (creating if needed) the log in cfg.Dir and reads the records to replay.
func OpenLog(cfg LogConfig) (*Log, error) {
	if cfg.Dir == "" {
		return nil, fmt.Errorf("writebehind: LogConfig.Dir is required")
	}
	if cfg.Sync < SyncAlways || cfg.Sync > SyncNever || cfg.SyncInterval < 0 || cfg.SegmentBytes < 0 {
		return nil, fmt.Errorf("writebehind: invalid LogConfig")
	}
	cfg.SyncInterval = cmpOr(cfg.SyncInterval, 100*time.Millisecond)
	cfg.SegmentBytes = cmpOr(cfg.SegmentBytes, 64<<20)
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("writebehind: %w", err)
	}
	l := &Log{cfg: cfg, stop: make(chan struct{})}
	if err := l.load(); err != nil {
		return nil, err
	}
	if cfg.Sync == SyncInterval {
		l.wg.Add(1)
		go l.syncLoop()
	}
	return l, nil
}

func (l *Log) segPath(base uint64) string {
	return filepath.Join(l.cfg.Dir, fmt.Sprintf("%020d.seg", base))
}

func (l *Log) ackPath() string { return filepath.Join(l.cfg.Dir, "acked") }

// load reads the acknowledgement file and the segments, truncates a torn tail and opens
// the last segment for appending.
func (l *Log) load() error {
	if b, err := os.ReadFile(l.ackPath()); err == nil {
		a, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
		if err != nil {
			return fmt.Errorf("%w: acknowledgement file %q", ErrCorrupt, b)
		}
		l.acked = a
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("writebehind: %w", err)
	}
	names, err := filepath.Glob(filepath.Join(l.cfg.Dir, "*.seg"))
	if err != nil {
		return fmt.Errorf("writebehind: %w", err)
	}
	for _, n := range names {
		base, err := strconv.ParseUint(strings.TrimSuffix(filepath.Base(n), ".seg"), 10, 64)
		if err != nil {
			continue
		}
		l.segs = append(l.segs, base)
	}
	sort.Slice(l.segs, func(i, j int) bool { return l.segs[i] < l.segs[j] })
	l.next = l.acked
	for i, base := range l.segs {
		last := i == len(l.segs)-1
		data, err := os.ReadFile(l.segPath(base))
		if err != nil {
			return fmt.Errorf("writebehind: %w", err)
		}
		recs, good := decodeRecords(data)
		if good < len(data) {
			if !last {
				return fmt.Errorf("%w: segment %d damaged at byte %d", ErrCorrupt, base, good)
			}
			if err := os.Truncate(l.segPath(base), int64(good)); err != nil {
				return fmt.Errorf("writebehind: truncate torn tail: %w", err)
			}
		}
		for _, r := range recs {
			if r.Offset >= l.acked {
				l.replay = append(l.replay, r)
			}
			l.next = max(l.next, r.Offset+1)
		}
		if last {
			l.size = int64(good)
		}
	}
	if len(l.segs) == 0 {
		return l.roll()
	}
	f, err := os.OpenFile(l.segPath(l.segs[len(l.segs)-1]), os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("writebehind: %w", err)
	}
	l.f = f
	return nil
}

// roll starts a new segment at l.next, syncing and closing the current one. Called with
// l.mu held (or during load).
func (l *Log) roll() error {
	if l.f != nil {
		if err := l.f.Sync(); err != nil {
			return fmt.Errorf("writebehind: sync segment: %w", err)
		}
		l.f.Close()
		l.f = nil
	}
	f, err := os.OpenFile(l.segPath(l.next), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("writebehind: new segment: %w", err)
	}
	if err := syncDir(l.cfg.Dir); err != nil {
		f.Close()
		return err
	}
	l.f, l.size = f, 0
	if n := len(l.segs); n == 0 || l.segs[n-1] != l.next {
		l.segs = append(l.segs, l.next)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("writebehind: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("writebehind: sync dir: %w", err)
	}
	return nil
}

// appendRecord appends r's frame to b.
func appendRecord(b []byte, r Record) []byte {
	start := len(b)
	b = append(b, make([]byte, frameHeader)...)
	b = binary.BigEndian.AppendUint64(b, r.Offset)
	flag := byte(0)
	if r.Deleted {
		flag |= flagDeleted
	}
	if r.Stamp != 0 {
		flag |= flagStamped
	}
	b = append(b, flag)
	if r.Stamp != 0 {
		b = binary.BigEndian.AppendUint64(b, uint64(r.Stamp))
	}
	b = binary.AppendUvarint(b, uint64(len(r.Key)))
	b = append(b, r.Key...)
	b = append(b, r.Value...)
	payload := b[start+frameHeader:]
	binary.BigEndian.PutUint32(b[start:], uint32(len(payload)))
	binary.BigEndian.PutUint32(b[start+4:], crc32.Checksum(payload, crcTable))
	return b
}

// decodeRecords decodes the frames of data and returns them with the length of the valid
// prefix: decoding stops at the first frame cut short or failing its checksum.
func decodeRecords(data []byte) (recs []Record, good int) {
	for good < len(data) {
		rest := data[good:]
		if len(rest) < frameHeader {
			return recs, good
		}
		n := binary.BigEndian.Uint32(rest)
		if uint64(n) > uint64(len(rest)-frameHeader) {
			return recs, good
		}
		payload := rest[frameHeader : frameHeader+int(n)]
		if crc32.Checksum(payload, crcTable) != binary.BigEndian.Uint32(rest[4:]) {
			return recs, good
		}
		r, ok := decodePayload(payload)
		if !ok {
			return recs, good
		}
		recs = append(recs, r)
		good += frameHeader + int(n)
	}
	return recs, good
}

// The flag byte of a record: a delete, and a stamp (8 bytes, big-endian) after the flag.
// Records written before stamps existed have neither bit 1 set.
const (
	flagDeleted = 1 << 0
	flagStamped = 1 << 1
)

func decodePayload(p []byte) (Record, bool) {
	if len(p) < 9 || p[8]&^(flagDeleted|flagStamped) != 0 {
		return Record{}, false
	}
	r := Record{Offset: binary.BigEndian.Uint64(p), Deleted: p[8]&flagDeleted != 0}
	head := 9
	if p[8]&flagStamped != 0 {
		if len(p) < 17 {
			return Record{}, false
		}
		r.Stamp = int64(binary.BigEndian.Uint64(p[9:]))
		head = 17
	}
	klen, k := binary.Uvarint(p[head:])
	if k <= 0 || klen > uint64(len(p)-head-k) {
		return Record{}, false
	}
	p = p[head+k:]
	r.Key = string(p[:klen])
	if !r.Deleted {
		r.Value = append([]byte{}, p[klen:]...)
	} else if len(p) != int(klen) {
		return Record{}, false
	}
	return r, true
}

// Replay returns the records to apply again, once.
func (l *Log) Replay(context.Context) ([]Record, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.replay
	l.replay = nil
	return r, nil
}

// Append writes recs, assigning their offsets, and syncs them under SyncAlways.
func (l *Log) Append(_ context.Context, recs []Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return ErrClosed
	}
	if err := l.syncErr; err != nil {
		l.syncErr = nil
		return fmt.Errorf("writebehind: earlier sync: %w", err)
	}
	if l.size >= l.cfg.SegmentBytes {
		if err := l.roll(); err != nil {
			return err
		}
	}
	var b []byte
	for i := range recs {
		recs[i].Offset = l.next + uint64(i)
		b = appendRecord(b, recs[i])
	}
	if _, err := l.f.Write(b); err != nil {
		// A partial write leaves a torn frame: cut it off so the next append is readable.
		_ = l.f.Truncate(l.size)
		return fmt.Errorf("writebehind: append: %w", err)
	}
	if l.cfg.Sync == SyncAlways {
		if err := l.f.Sync(); err != nil {
			_ = l.f.Truncate(l.size)
			return fmt.Errorf("writebehind: sync: %w", err)
		}
	}
	l.size += int64(len(b))
	l.next += uint64(len(recs))
	return nil
}

// Ack records that the records through offset are applied (durably: write, sync, rename)
// and deletes segments holding only acknowledged records.
func (l *Log) Ack(_ context.Context, offset uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if offset+1 <= l.acked {
		return nil
	}
	tmp := l.ackPath() + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("writebehind: ack: %w", err)
	}
	_, err = io.WriteString(f, strconv.FormatUint(offset+1, 10)+"\n")
	if err == nil && l.cfg.Sync != SyncNever {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, l.ackPath())
	}
	if err != nil {
		return fmt.Errorf("writebehind: ack: %w", err)
	}
	l.acked = offset + 1
	// A segment is done when the next one starts at or below acked.
	for len(l.segs) > 1 && l.segs[1] <= l.acked {
		if err := os.Remove(l.segPath(l.segs[0])); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("writebehind: remove segment: %w", err)
		}
		l.segs = l.segs[1:]
	}
	return nil
}

func (l *Log) syncLoop() {
	defer l.wg.Done()
	t := time.NewTicker(l.cfg.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			l.mu.Lock()
			if l.f != nil {
				if err := l.f.Sync(); err != nil {
					l.syncErr = err
				}
			}
			l.mu.Unlock()
		case <-l.stop:
			return
		}
	}
}

// Close syncs and closes the log. It is idempotent.
func (l *Log) Close() error {
	l.mu.Lock()
	f := l.f
	l.f = nil
	l.mu.Unlock()
	if f == nil {
		return nil
	}
	close(l.stop)
	l.wg.Wait()
	err := f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
