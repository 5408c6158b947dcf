package engines

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// MemcachedOptions configures one memcached.
type MemcachedOptions struct {
	// Dir holds the node's log. Required.
	Dir string
	// Port to listen on, on 127.0.0.1. Zero picks a free port.
	Port int
	// MemoryMB is the cache size in megabytes. Default 64.
	MemoryMB int
	// Args are extra memcached arguments.
	Args []string
}

// Memcached is one memcached child process. It keeps nothing on disk: a restart is empty.
type Memcached struct {
	*process
	addr string
}

// StartMemcached starts memcached (TCP only, UDP off) and waits until it answers "version".
// Without MemcachedOptions.Port it runs on a free port, moving to another if that one is
// taken before the server binds it (see onFreePort).
func StartMemcached(ctx context.Context, opts MemcachedOptions) (*Memcached, error) {
	return startMemcached(ctx, opts, FreePort)
}

func startMemcached(ctx context.Context, opts MemcachedOptions, pick func() (int, error)) (*Memcached, error) {
	bin, err := LookBinary("memcached")
	if err != nil {
		return nil, err
	}
	if opts.Dir == "" {
		return nil, errors.New("engines: MemcachedOptions.Dir is required")
	}
	if err := makeDir(opts.Dir, runAs{}); err != nil {
		return nil, err
	}
	if opts.MemoryMB == 0 {
		opts.MemoryMB = 64
	}
	acct, err := serviceAccount()
	if err != nil {
		return nil, err
	}
	var m *Memcached
	err = onFreePort(opts.Port, pick, func(port int) error {
		args := []string{"-l", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "0", "-m", strconv.Itoa(opts.MemoryMB)}
		if acct.cred != nil {
			// memcached refuses to run as root unless told which user to become.
			name := "nobody"
			if u, err := lookupName(acct.uid); err == nil {
				name = u
			}
			args = append(args, "-u", name)
		}
		args = append(args, opts.Args...)
		m = &Memcached{
			process: &process{
				name:    "memcached:" + strconv.Itoa(port),
				bin:     bin,
				args:    args,
				logPath: filepath.Join(opts.Dir, "memcached.log"),
				stopSig: syscall.SIGTERM,
			},
			addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		}
		err := m.Restart(ctx)
		if err != nil {
			m.close()
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

// Addr returns the node's host:port.
func (m *Memcached) Addr() string { return m.addr }

// Restart starts memcached again on the same port (empty) and waits until it answers.
func (m *Memcached) Restart(ctx context.Context) error {
	if err := m.start(); err != nil {
		return err
	}
	return waitFor(ctx, m.process, "version", func(ctx context.Context) error {
		_, err := MemcachedCmd(ctx, m.addr, "version")
		return err
	})
}

// Close kills memcached if it runs.
func (m *Memcached) Close() error {
	m.close()
	return nil
}

// MemcachedCmd sends one line of the memcached text protocol and returns the reply up to and
// including its terminating line (END, STORED, VERSION ..., an error, and so on). It is meant
// for administration and tests of the test bed itself.
func MemcachedCmd(ctx context.Context, addr, line string) (string, error) {
	d := net.Dialer{Timeout: 2 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", fmt.Errorf("engines: memcached %s: %w", addr, err)
	}
	defer conn.Close()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(5 * time.Second)
	}
	_ = conn.SetDeadline(deadline)
	if _, err := conn.Write([]byte(line + "\r\n")); err != nil {
		return "", fmt.Errorf("engines: memcached %s: %w", addr, err)
	}
	r := bufio.NewReader(conn)
	var out strings.Builder
	data := false // the next line is the data block of a VALUE line
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			return "", fmt.Errorf("engines: memcached %s: %w", addr, err)
		}
		out.WriteString(l)
		t := strings.TrimSpace(l)
		switch {
		case data:
			data = false
		case strings.HasPrefix(t, "VALUE "):
			data = true
		case strings.HasPrefix(t, "STAT "):
		default:
			return out.String(), nil
		}
	}
}

func lookupName(uid int) (string, error) {
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		return "", err
	}
	return u.Username, nil
}
