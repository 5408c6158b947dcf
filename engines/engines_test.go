package engines_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/strata-project/strata/engines"
	"github.com/strata-project/strata/internal/testenv"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// gone asserts that no process with this pid exists and dir does not exist.
func gone(t *testing.T, what string, pids []int, dirs []string) {
	t.Helper()
	for _, pid := range pids {
		if pid == 0 {
			t.Errorf("%s: pid 0 recorded", what)
			continue
		}
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("%s: process %d still exists after the test (kill -0: %v)", what, pid, err)
		}
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: directory %s still exists after the test (%v)", what, d, err)
		}
	}
}

func redisGet(t *testing.T, ctx context.Context, r *engines.Redis, key string) any {
	t.Helper()
	v, err := r.Do(ctx, "GET", key)
	if err != nil {
		t.Fatalf("GET %s: %v", key, err)
	}
	return v
}

func TestRedisPersistsAcrossKillWithAOF(t *testing.T) {
	for _, tc := range []struct {
		name    string
		aof     engines.AOF
		survive bool
	}{
		{"aof-always", engines.AOFAlways, true},
		{"aof-everysec", engines.AOFEverySec, false}, // up to a second may be lost: not asserted
		{"no-persistence", engines.AOFOff, false},
	} {
		var pid int
		var dir string
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxT(t, time.Minute)
			r := testenv.Redis(t, engines.RedisOptions{AOF: tc.aof})
			pid, dir = r.PID(), r.Dir()
			if _, err := r.Do(ctx, "SET", "k", "v1"); err != nil {
				t.Fatal(err)
			}
			if got := redisGet(t, ctx, r, "k"); got != "v1" {
				t.Fatalf("GET k = %v, want v1", got)
			}
			addr := r.Addr()
			if err := r.Kill(); err != nil {
				t.Fatal(err)
			}
			if r.Running() {
				t.Fatal("still running after Kill")
			}
			if _, err := r.Do(ctx, "PING"); err == nil {
				t.Fatal("PING answered after Kill")
			}
			if err := r.Restart(ctx); err != nil {
				t.Fatal(err)
			}
			if r.Addr() != addr {
				t.Fatalf("restarted on %s, want %s", r.Addr(), addr)
			}
			got := redisGet(t, ctx, r, "k")
			switch {
			case tc.survive && got != "v1":
				t.Fatalf("after kill and restart GET k = %v, want v1 (AOF fsync always)", got)
			case tc.aof == engines.AOFOff && got != nil:
				t.Fatalf("after kill and restart without persistence GET k = %v, want nil", got)
			}
		})
		gone(t, tc.name, []int{pid}, []string{dir})
	}
}

func TestRedisPauseResume(t *testing.T) {
	r := testenv.Redis(t, engines.RedisOptions{})
	if err := r.Pause(); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := r.Do(short, "PING"); err == nil {
		t.Fatal("a paused redis answered PING")
	}
	if err := r.Resume(); err != nil {
		t.Fatal(err)
	}
	if v, err := r.Do(ctxT(t, 5*time.Second), "PING"); err != nil || v != "PONG" {
		t.Fatalf("after resume PING = %v, %v", v, err)
	}
}

func TestMemcached(t *testing.T) {
	var pid int
	t.Run("run", func(t *testing.T) {
		ctx := ctxT(t, time.Minute)
		m := testenv.Memcached(t)
		pid = m.PID()
		if reply, err := engines.MemcachedCmd(ctx, m.Addr(), "set k 0 0 2\r\nv1"); err != nil || strings.TrimSpace(reply) != "STORED" {
			t.Fatalf("set: %q %v", reply, err)
		}
		reply, err := engines.MemcachedCmd(ctx, m.Addr(), "get k")
		if err != nil || !strings.Contains(reply, "\r\nv1\r\nEND") {
			t.Fatalf("get: %q %v", reply, err)
		}
		if err := m.Kill(); err != nil {
			t.Fatal(err)
		}
		if err := m.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		reply, err = engines.MemcachedCmd(ctx, m.Addr(), "get k")
		if err != nil || strings.TrimSpace(reply) != "END" {
			t.Fatalf("get after restart (memcached keeps nothing): %q %v", reply, err)
		}
	})
	gone(t, "memcached", []int{pid}, nil)
}

func TestPostgresPrimaryWithReplicas(t *testing.T) {
	var pids []int
	var dir string
	t.Run("run", func(t *testing.T) {
		ctx := ctxT(t, 3*time.Minute)
		start := time.Now()
		c := testenv.Postgres(t, 2)
		t.Logf("primary + 2 streaming replicas ready in %v", time.Since(start))
		for _, n := range c.Nodes() {
			pids = append(pids, n.PID())
		}
		dir = c.Primary.DataDir()
		p := c.Primary
		if err := p.Exec(ctx, "postgres", "CREATE TABLE kv (k text PRIMARY KEY, v text)"); err != nil {
			t.Fatal(err)
		}
		if err := p.Exec(ctx, "postgres", "INSERT INTO kv VALUES ($1, $2)", "a", "1"); err != nil {
			t.Fatal(err)
		}

		t.Run("replicas receive writes", func(t *testing.T) {
			for _, r := range c.Replicas {
				waitRow(t, ctx, r, "a", "1")
			}
		})

		t.Run("lag on demand", func(t *testing.T) {
			r := c.Replicas[0]
			if err := r.PauseReplay(ctx); err != nil {
				t.Fatal(err)
			}
			if err := p.Exec(ctx, "postgres", "INSERT INTO kv VALUES ($1, $2)", "lag", "x"); err != nil {
				t.Fatal(err)
			}
			primaryLSN, err := p.CurrentLSN(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// The other replica catches up, so the WAL has certainly reached the replicas.
			waitRow(t, ctx, c.Replicas[1], "lag", "x")
			var n int
			if err := r.QueryRow(ctx, "postgres", "SELECT count(*) FROM kv WHERE k = 'lag'", nil, &n); err != nil {
				t.Fatal(err)
			}
			if n != 0 {
				t.Fatal("replica with paused replay sees the new row")
			}
			replay, err := r.ReplayLSN(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if replay >= primaryLSN {
				t.Fatalf("paused replica's replay LSN %X is not behind the primary's %X", replay, primaryLSN)
			}
			if err := r.ResumeReplay(ctx); err != nil {
				t.Fatal(err)
			}
			waitRow(t, ctx, r, "lag", "x")
		})

		t.Run("primary killed and restarted keeps its data", func(t *testing.T) {
			addr := p.Addr()
			if err := p.Kill(); err != nil {
				t.Fatal(err)
			}
			var one int
			if err := p.QueryRow(ctx, "postgres", "SELECT 1", nil, &one); err == nil {
				t.Fatal("killed primary answered")
			}
			if err := p.Restart(ctx); err != nil {
				t.Fatal(err)
			}
			if p.Addr() != addr {
				t.Fatalf("restarted on %s, want %s", p.Addr(), addr)
			}
			waitRow(t, ctx, p, "lag", "x")
			if err := c.WaitStreaming(ctx); err != nil {
				t.Fatalf("replicas did not reconnect: %v", err)
			}
			pids[0] = p.PID()
		})

		t.Run("promote a replica", func(t *testing.T) {
			r := c.Replicas[1]
			if err := r.Exec(ctx, "postgres", "INSERT INTO kv VALUES ('no', 'no')"); err == nil {
				t.Fatal("a replica accepted a write before promotion")
			}
			if err := r.Promote(ctx); err != nil {
				t.Fatal(err)
			}
			inRec, err := r.InRecovery(ctx)
			if err != nil || inRec {
				t.Fatalf("after promotion pg_is_in_recovery = %v, %v", inRec, err)
			}
			if err := r.Exec(ctx, "postgres", "INSERT INTO kv VALUES ('promoted', 'yes')"); err != nil {
				t.Fatalf("promoted replica refused a write: %v", err)
			}
		})
	})
	gone(t, "postgres", pids, []string{dir})
}

func waitRow(t *testing.T, ctx context.Context, n *engines.PGNode, k, want string) {
	t.Helper()
	for {
		var v string
		err := n.QueryRow(ctx, "postgres", "SELECT v FROM kv WHERE k = $1", []any{k}, &v)
		if err == nil && v == want {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s never showed row %s=%s (last: %q, %v)", n.Name, k, want, v, err)
		case <-time.After(20 * time.Millisecond): // polling interval, not synchronisation
		}
	}
}

func clusterClient(t *testing.T, addr string) rueidis.Client {
	t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{
		InitAddress:           []string{addr},
		DisableCache:          true,
		ConnWriteTimeout:      2 * time.Second,
		ShuffleInit:           false,
		SendToReplicas:        func(rueidis.Completed) bool { return false },
		DisableAutoPipelining: false,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func TestRedisCluster(t *testing.T) {
	var pids []int
	var dir string
	t.Run("run", func(t *testing.T) {
		ctx := ctxT(t, 2*time.Minute)
		start := time.Now()
		c := testenv.RedisCluster(t, engines.RedisClusterOptions{})
		t.Logf("redis cluster (3 masters, 3 replicas) ready in %v", time.Since(start))
		for _, n := range c.Nodes {
			pids = append(pids, n.PID())
		}
		dir = c.Nodes[0].Dir()
		if len(c.Nodes) != 6 {
			t.Fatalf("%d nodes, want 6", len(c.Nodes))
		}
		// A raw SET on a node that does not own the slot is redirected: the cluster is real.
		var moved bool
		for i := range 3 {
			if _, err := c.Nodes[i].Do(ctx, "SET", "{user:1}", "x"); err != nil && strings.Contains(err.Error(), "MOVED") {
				moved = true
			}
		}
		if !moved {
			t.Fatal("no node answered MOVED: slots are not spread over the masters")
		}
		a := clusterClient(t, c.Nodes[0].Addr())
		b := clusterClient(t, c.Nodes[4].Addr())
		keys := []string{"alpha", "beta", "gamma", "delta", "epsilon", "zeta"}
		for _, k := range keys {
			if err := a.Do(ctx, a.B().Set().Key(k).Value("v-"+k).Build()).Error(); err != nil {
				t.Fatalf("SET %s through node 0: %v", k, err)
			}
		}
		for _, k := range keys {
			got, err := b.Do(ctx, b.B().Get().Key(k).Build()).ToString()
			if err != nil || got != "v-"+k {
				t.Fatalf("GET %s through node 4 = %q, %v", k, got, err)
			}
		}

		// Kill the master that owns "alpha" and time the failover to its replica.
		master, err := c.MasterOf(ctx, 0, "alpha")
		if err != nil {
			t.Fatal(err)
		}
		replica := c.ReplicaOf(master)
		killed := time.Now()
		if err := c.Nodes[master].Kill(); err != nil {
			t.Fatal(err)
		}
		for {
			role, err := c.Role(ctx, replica)
			if err == nil && role == "master" {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatalf("replica %d never took over (role %q, %v)", replica, role, err)
			case <-time.After(50 * time.Millisecond): // polling interval
			}
		}
		t.Logf("failover of master %d to replica %d took %v", master, replica, time.Since(killed))
		if err := c.WaitHealthy(ctx); err != nil {
			t.Fatal(err)
		}
		got, err := b.Do(ctx, b.B().Get().Key("alpha").Build()).ToString()
		if err != nil || got != "v-alpha" {
			t.Fatalf("GET alpha after failover = %q, %v", got, err)
		}
	})
	gone(t, "redis cluster", pids, []string{dir})
}

func TestStartTimes(t *testing.T) {
	var wg sync.WaitGroup
	var clusterTook, pgTook time.Duration
	start := time.Now()
	wg.Add(2)
	go func() {
		defer wg.Done()
		testenv.RedisCluster(t, engines.RedisClusterOptions{})
		clusterTook = time.Since(start)
	}()
	go func() {
		defer wg.Done()
		testenv.Postgres(t, 2)
		pgTook = time.Since(start)
	}()
	wg.Wait()
	total := time.Since(start)
	t.Logf("started together: redis cluster ready after %v, postgres primary + 2 replicas after %v, both in %v", clusterTook, pgTook, total)
	if total > 45*time.Second {
		t.Errorf("the test bed took %v to start (goal 15s)", total)
	}
}

func TestMissingBinaryNamesPackage(t *testing.T) {
	err := &engines.MissingBinaryError{Binary: "memcached", Package: "memcached"}
	if !engines.IsMissingBinary(err) || !strings.Contains(err.Error(), "apt-get install -y memcached") {
		t.Fatalf("error %q does not name the package", err)
	}
	if _, err := engines.LookBinary("no-such-engine-binary"); !engines.IsMissingBinary(err) {
		t.Fatalf("LookBinary of a missing binary: %v", err)
	}
}

func TestParseLSN(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"0/0", 0, true},
		{"16/B374D848", 0x16_B374D848, true},
		{"FFFFFFFF/FFFFFFFF", ^uint64(0), true},
		{"", 0, false},
		{"1", 0, false},
		{"x/1", 0, false},
		{"1/100000000", 0, false},
	} {
		got, err := engines.ParseLSN(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseLSN(%q) = %X, %v; want %X ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

// A cluster started with Reuse on the directory of an earlier one finds its data on the primary
// and on the replica, and the replica streams again from the primary on its new port.
func TestPostgresReuse(t *testing.T) {
	ctx := ctxT(t, 3*time.Minute)
	dir := testenv.Dir(t)
	start := func() *engines.PostgresCluster {
		t.Helper()
		c, err := engines.StartPostgres(ctx, engines.PostgresOptions{Dir: dir, Replicas: 1, Reuse: true})
		if err != nil {
			if engines.IsMissingBinary(err) && !testenv.RequireServices() {
				t.Skip(err)
			}
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	c := start()
	if err := c.Primary.Exec(ctx, "postgres", "CREATE TABLE kv (k text PRIMARY KEY, v text)"); err != nil {
		t.Fatal(err)
	}
	if err := c.Primary.Exec(ctx, "postgres", "INSERT INTO kv VALUES ('kept', 'yes')"); err != nil {
		t.Fatal(err)
	}
	waitRow(t, ctx, c.Replicas[0], "kept", "yes")
	oldPort := c.Primary.Addr()
	c.Close() // SIGKILL: what a crash leaves behind

	c = start()
	if c.Primary.Addr() == oldPort {
		t.Logf("the primary happens to listen on its old port %s", oldPort)
	}
	waitRow(t, ctx, c.Primary, "kept", "yes")
	waitRow(t, ctx, c.Replicas[0], "kept", "yes")
	if err := c.Primary.Exec(ctx, "postgres", "INSERT INTO kv VALUES ('after', 'restart')"); err != nil {
		t.Fatal(err)
	}
	waitRow(t, ctx, c.Replicas[0], "after", "restart")
	if err := c.WaitStreaming(ctx); err != nil {
		t.Fatalf("the replica does not stream from the restarted primary: %v", err)
	}

	// Without Reuse, a directory that holds a cluster is refused, as before.
	c.Close()
	if c2, err := engines.StartPostgres(ctx, engines.PostgresOptions{Dir: dir}); err == nil {
		c2.Close()
		t.Fatal("StartPostgres without Reuse started on a directory that holds a cluster")
	}
}
