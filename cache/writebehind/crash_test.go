package writebehind_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/strata-project/strata/cache/docsource"
	"github.com/strata-project/strata/cache/writebehind"
	"github.com/strata-project/strata/docstore/sqlite"
)

const (
	crashChildEnv = "STRATA_WRITEBEHIND_CRASH_CHILD" // the child's directory
	crashModeEnv  = "STRATA_WRITEBEHIND_CRASH_MODE"  // "write" or "recover"
	crashStartEnv = "STRATA_WRITEBEHIND_CRASH_START" // first value the child writes
	crashKeys     = 20
)

// crashChild runs in the re-executed test binary: it writes through write-behind to a
// SQLite docstore, printing "ack <key> <n>" after each acknowledged write, until killed; or,
// in recover mode, replays the queue, flushes it and exits.
func crashChild() {
	dir := os.Getenv(crashChildEnv)
	ctx := context.Background()
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	db, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(dir, "db")})
	if err != nil {
		fail(err)
	}
	q, err := writebehind.OpenLog(writebehind.LogConfig{Dir: filepath.Join(dir, "queue")})
	if err != nil {
		fail(err)
	}
	w, err := writebehind.New(writebehind.Config{Queue: q, Target: docsource.New(db, "crash")})
	if err != nil {
		fail(err)
	}
	if os.Getenv(crashModeEnv) == "recover" {
		fctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		if err := w.Flush(fctx); err != nil {
			fail(err)
		}
		w.Close()
		db.Close()
		fmt.Println("flushed")
		os.Exit(0)
	}
	n, _ := strconv.Atoi(os.Getenv(crashStartEnv))
	for ; ; n++ {
		key := fmt.Sprint("k", n%crashKeys)
		if err := w.Write(ctx, key, []byte(fmt.Sprintf(`{"n":%d}`, n))); err != nil {
			fail(err)
		}
		fmt.Fprintf(os.Stdout, "ack %s %d\n", key, n) // unbuffered: one write(2) per line
	}
}

// TestCrashKeepsAcknowledgedWrites kills a writing child with SIGKILL at 20 random moments;
// after a final recovery every acknowledged write is in the database: each key holds its
// newest acknowledged value (or the one write after it that was durable but whose ack the
// kill cut off).
func TestCrashKeepsAcknowledgedWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test re-executes the test binary 21 times")
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	latest := map[string]int{}
	acks := 0
	// The child writes one value at a time, so the only write that can be durable without
	// its ack having been read is the one after the last ack of a round.
	cutOff := map[int]bool{}
	run := func(mode string, start int) *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir, crashModeEnv+"="+mode, crashStartEnv+"="+strconv.Itoa(start))
		cmd.Stderr = os.Stderr
		return cmd
	}
	const rounds = 20
	for round := range rounds {
		cmd := run("write", (round+1)*1_000_000)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		killAfter := 1 + rng.IntN(150)
		sc := bufio.NewScanner(out)
		seen := 0
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) != 3 || f[0] != "ack" {
				continue // a line cut by the kill
			}
			n, err := strconv.Atoi(f[2])
			if err != nil {
				continue
			}
			latest[f[1]] = n
			acks++
			if seen++; seen == killAfter {
				if err := cmd.Process.Kill(); err != nil { // SIGKILL
					t.Fatal(err)
				}
			}
		}
		err = cmd.Wait()
		cutOff[(round+1)*1_000_000+seen] = true
		if seen < killAfter {
			t.Fatalf("round %d: child exited after %d acks (%v), before the kill", round, seen, err)
		}
	}
	rec := run("recover", 0)
	if out, err := rec.Output(); err != nil || !strings.Contains(string(out), "flushed") {
		t.Fatalf("recovery: %v, output %q", err, out)
	}
	ctx := context.Background()
	db, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(dir, "db")})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	exact, later := 0, 0
	for key, want := range latest {
		d, err := db.Get(ctx, "crash", key)
		if err != nil {
			t.Fatalf("%s: acknowledged write %d lost: %v", key, want, err)
		}
		var body struct{ N int }
		if err := json.Unmarshal(d.Body, &body); err != nil {
			t.Fatal(err)
		}
		switch {
		case body.N == want:
			exact++
		case body.N > want && body.N%crashKeys == want%crashKeys && cutOff[body.N]:
			later++ // durable, acknowledgement cut off by the kill
		default:
			t.Errorf("%s holds n=%d (v%d), newest acknowledged n=%d", key, body.N, d.Version, want)
		}
	}
	t.Logf("%d rounds, %d acknowledged writes over %d keys: %d keys at their newest acknowledged value, %d at a later durable one",
		rounds, acks, len(latest), exact, later)
	if acks < rounds {
		t.Fatalf("only %d acknowledged writes", acks)
	}
}
