package reliability

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// Kind is what an operation did.
type Kind string

// The operations a client performs.
const (
	Get      Kind = "get"       // GET of one document
	Put      Kind = "put"       // PUT without Idempotency-Key
	PutKeyed Kind = "put-keyed" // PUT with an Idempotency-Key (retried by the client with the same key)
	Patch    Kind = "patch"     // PATCH without Idempotency-Key: not idempotent, never retried
)

// Op is one operation as a client saw it. Times are offsets from the history's start.
type Op struct {
	Client  int           // client number, from 0
	Kind    Kind          // what was asked
	Key     string        // the document id
	Start   time.Duration // when the request was sent
	End     time.Duration // when its answer (or error) arrived
	Status  int           // HTTP status; 0 for a transport error or timeout
	Err     string        // transport error, "" when an answer arrived
	Version int64         // version of the ETag, 0 when none
	Value   int64         // the value written, or the value read (-1: not found)
	Served  string        // X-Served-By or X-Cache of a read, for the record
	Retry   string        // the Retry-After header of the answer
	// NotApplied marks a failed write the server says it refused before applying
	// (Strata-Write-Applied: false): it did not happen.
	NotApplied bool
}

// OK reports whether the operation succeeded: 2xx, or a 404 read (the document does not
// exist, which is an answer).
func (o Op) OK() bool {
	return o.Status >= 200 && o.Status < 300 || o.Kind == Get && o.Status == 404
}

// Write reports whether the operation is a write.
func (o Op) Write() bool { return o.Kind != Get }

// Overlaps reports whether the operation was in flight at instant t.
func (o Op) Overlaps(t time.Duration) bool { return o.Start <= t && t <= o.End }

// History records the operations of concurrent clients. It is safe for concurrent use.
type History struct {
	start time.Time
	mu    sync.Mutex // protects ops
	ops   []Op
}

// NewHistory starts a history whose offsets count from start.
func NewHistory(start time.Time) *History { return &History{start: start} }

// Since returns the offset of t in the history.
func (h *History) Since(t time.Time) time.Duration { return t.Sub(h.start) }

// Now returns the current offset, on the monotonic clock.
func (h *History) Now() time.Duration { return time.Since(h.start) }

// Add records one operation.
func (h *History) Add(o Op) {
	h.mu.Lock()
	h.ops = append(h.ops, o)
	h.mu.Unlock()
}

// Ops returns a copy of the recorded operations, in order of start.
func (h *History) Ops() []Op {
	h.mu.Lock()
	out := slices.Clone(h.ops)
	h.mu.Unlock()
	slices.SortStableFunc(out, func(a, b Op) int { return int(a.Start - b.Start) })
	return out
}

// Row is one line of the reliability table: what clients saw during one scenario.
type Row struct {
	Scenario  string
	Attempted int
	Succeeded int
	Failed    int
	P99       time.Duration
	// Detect is the time from the fault to its detection (a backend marked down, a breaker
	// open, the first refused write); -1 when not measured.
	Detect time.Duration
	// Recover is the time from the fault's end to normal service; -1 when not measured.
	Recover time.Duration
	// Note says what was asserted, in a few words.
	Note string
}

// Summarize counts ops into a row (Detect and Recover are left to the caller).
func Summarize(scenario string, ops []Op) Row {
	r := Row{Scenario: scenario, Attempted: len(ops), Detect: -1, Recover: -1}
	lat := make([]time.Duration, 0, len(ops))
	for _, o := range ops {
		if o.OK() {
			r.Succeeded++
		} else {
			r.Failed++
		}
		lat = append(lat, o.End-o.Start)
	}
	r.P99 = Percentile(lat, 0.99)
	return r
}

// Percentile returns the q-quantile (0..1) of d by the nearest-rank method; 0 for none.
func Percentile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	i := int(float64(len(s))*q+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// WriteTable prints rows as a Markdown table.
func WriteTable(w io.Writer, rows []Row) {
	fmt.Fprintln(w, "| scenario | attempted | succeeded | failed | p99 | detect | recover | asserted |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---|")
	for _, r := range rows {
		fmt.Fprintf(w, "| %s | %d | %d | %d | %s | %s | %s | %s |\n", r.Scenario, r.Attempted, r.Succeeded, r.Failed,
			ms(r.P99), ms(r.Detect), ms(r.Recover), strings.ReplaceAll(r.Note, "|", "/"))
	}
}

func ms(d time.Duration) string {
	if d < 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
}

// registerInput is a read or a write of one key, for the linearizability model.
type registerInput struct {
	key   string
	write bool
	value int64
}

// registerModel is a map of independent registers, one per key, each starting at -1
// (not found). Partitioning by key keeps the search small.
var registerModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(registerInput).key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return int64(-1) },
	Step: func(state, input, output any) (bool, any) {
		in := input.(registerInput)
		if in.write {
			return true, in.value
		}
		return output.(int64) == state.(int64), state
	},
	Equal: func(a, b any) bool { return a == b },
	DescribeOperation: func(input, output any) string {
		in := input.(registerInput)
		if in.write {
			return fmt.Sprintf("put(%s, %d)", in.key, in.value)
		}
		return fmt.Sprintf("get(%s) -> %d", in.key, output)
	},
}

// Linearizable checks the history as a set of registers (one per key) with porcupine.
// Successful reads and all writes take part; a write without a success answer may have
// taken effect at any time after it was sent, so it is given an open end. Failed reads are
// left out (they returned nothing). It returns porcupine's verdict within timeout
// (porcupine.Unknown when the search ran out of time) and the number of operations
// checked.
func Linearizable(ops []Op, timeout time.Duration) (porcupine.CheckResult, int) {
	var far int64
	for _, o := range ops {
		far = max(far, int64(o.End)+1)
	}
	far += int64(time.Hour)
	var hist []porcupine.Operation
	for _, o := range ops {
		switch {
		case o.Kind == Get && o.OK():
			hist = append(hist, porcupine.Operation{ClientId: o.Client, Input: registerInput{key: o.Key},
				Call: int64(o.Start), Output: o.Value, Return: int64(o.End)})
		case o.Write() && o.NotApplied:
			// Refused before it was applied: it constrains nothing.
		case o.Write():
			end := int64(o.End)
			if !o.OK() {
				end = far
			}
			hist = append(hist, porcupine.Operation{ClientId: o.Client, Input: registerInput{key: o.Key, write: true, value: o.Value},
				Call: int64(o.Start), Output: int64(0), Return: end})
		}
	}
	return porcupine.CheckOperationsTimeout(registerModel, hist, timeout), len(hist)
}

// Explain looks for the two plainest shapes of a stale read in a history that porcupine
// found illegal, and describes up to max of them:
//   - a read returned x although a write of another value started after x's write was
//     acknowledged and was itself acknowledged before the read began;
//   - two reads, one finished before the other began, where the later one returned x and the
//     earlier one returned y, y's write starting only after x's write was acknowledged.
//
// Writes without a success answer count from their start (they may have happened). The
// result is for the test log; a violation of another shape gives no line.
func Explain(ops []Op, max int) []string {
	type kv struct {
		key   string
		value int64
	}
	writes := map[kv]Op{} // each write of a key writes a value of its own
	byKey := map[string][]Op{}
	for _, o := range ops {
		if o.Write() && !o.NotApplied {
			writes[kv{o.Key, o.Value}] = o
			byKey[o.Key] = append(byKey[o.Key], o)
		}
	}
	var out []string
	describe := func(o Op) string {
		return fmt.Sprintf("%s(%s)=%d client %d [%v..%v] status %d served %q", o.Kind, o.Key, o.Value, o.Client,
			o.Start.Round(time.Microsecond), o.End.Round(time.Microsecond), o.Status, o.Served)
	}
	var reads []Op
	for _, o := range ops {
		if o.Kind == Get && o.OK() {
			reads = append(reads, o)
		}
	}
	for _, r := range reads {
		wx, ok := writes[kv{r.Key, r.Value}]
		if !ok || !wx.OK() {
			continue
		}
		for _, wy := range byKey[r.Key] {
			if wy.Value != r.Value && wy.OK() && wy.Start > wx.End && wy.End < r.Start {
				out = append(out, fmt.Sprintf("stale read: %s\n    returned the value of %s\n    overwritten by %s", describe(r), describe(wx), describe(wy)))
				break
			}
		}
		if len(out) >= max {
			return out
		}
	}
	slices.SortFunc(reads, func(a, b Op) int { return int(a.Start - b.Start) })
	for i, r1 := range reads {
		wy, ok := writes[kv{r1.Key, r1.Value}]
		if !ok {
			continue
		}
		for _, r2 := range reads[i+1:] {
			if r2.Key != r1.Key || r2.Start <= r1.End || r2.Value == r1.Value {
				continue
			}
			wx, ok := writes[kv{r2.Key, r2.Value}]
			if ok && wx.OK() && wy.Start > wx.End {
				out = append(out, fmt.Sprintf("read went back: %s\n    after %s\n    (%s, then %s)", describe(r2), describe(r1), describe(wx), describe(wy)))
				if len(out) >= max {
					return out
				}
				break
			}
		}
	}
	return out
}

// FirstViolation finds, for a history porcupine found illegal, the key and the earliest read
// at which its history stops being linearizable (every write kept, reads added in order of
// their start), and returns that read and the operations on the key in the window before it,
// for the test log. ok is false when no single key is illegal on its own.
func FirstViolation(ops []Op, window time.Duration, timeout time.Duration) (lines []string, ok bool) {
	byKey := map[string][]Op{}
	for _, o := range ops {
		byKey[o.Key] = append(byKey[o.Key], o)
	}
	keys := slices.Sorted(maps.Keys(byKey))
	for _, k := range keys {
		kops := byKey[k]
		if res, _ := Linearizable(kops, timeout); res != porcupine.Illegal {
			continue
		}
		var writes, reads []Op
		for _, o := range kops {
			if o.Write() {
				writes = append(writes, o)
			} else {
				reads = append(reads, o)
			}
		}
		slices.SortFunc(reads, func(a, b Op) int { return cmp.Compare(a.Start, b.Start) })
		// The smallest n such that the writes and the first n reads are illegal.
		lo, hi := 0, len(reads)
		for lo < hi {
			mid := (lo + hi) / 2
			if res, _ := Linearizable(append(slices.Clone(writes), reads[:mid+1]...), timeout); res == porcupine.Illegal {
				hi = mid
			} else {
				lo = mid + 1
			}
		}
		if lo >= len(reads) {
			continue
		}
		bad := reads[lo]
		lines = append(lines, fmt.Sprintf("key %s: first read that cannot be linearized: %s", k, describeOp(bad)))
		slices.SortFunc(kops, func(a, b Op) int { return cmp.Compare(a.Start, b.Start) })
		for _, o := range kops {
			if o.End >= bad.Start-window && o.Start <= bad.End {
				lines = append(lines, "    "+describeOp(o))
			}
		}
		return lines, true
	}
	return nil, false
}

func describeOp(o Op) string {
	s := fmt.Sprintf("%-9s %s=%d client %d [%v .. %v] status %d", o.Kind, o.Key, o.Value, o.Client,
		o.Start.Round(10*time.Microsecond), o.End.Round(10*time.Microsecond), o.Status)
	if o.Served != "" {
		s += " served " + o.Served
	}
	if o.NotApplied {
		s += " (not applied)"
	}
	if o.Err != "" {
		s += " err " + o.Err
	}
	return s
}
