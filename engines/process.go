package engines

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrNotRunning is returned by fault handles that need a running process.
var ErrNotRunning = errors.New("engines: process is not running")

// stopTimeout bounds a graceful stop; after it the process group is killed.
const stopTimeout = 10 * time.Second

// process is one child process with a fixed command line, restartable any number of times.
// It is safe for concurrent use.
type process struct {
	name    string
	bin     string
	args    []string
	logPath string
	cred    *syscall.Credential
	stopSig syscall.Signal
	env     []string
	mu      sync.Mutex // protects cmd and done
	cmd     *exec.Cmd
	done    chan struct{} // closed when the current child has exited
	paused  bool
}

// start runs the command once. It returns after the child has been forked; readiness is the
// caller's concern.
func (p *process) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		select {
		case <-p.done:
		default:
			return fmt.Errorf("engines: %s already running (pid %d)", p.name, p.cmd.Process.Pid)
		}
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("engines: %s log: %w", p.name, err)
	}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.Env = append(os.Environ(), p.env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:    true,
		Pdeathsig:  syscall.SIGKILL,
		Credential: p.cred,
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("engines: start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done, p.paused = cmd, done, false
	go func() { // owned by p: ends when the child exits, which Kill/Stop/Close guarantee
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	return nil
}

// current returns the running command and its done channel, or ErrNotRunning.
func (p *process) current() (*exec.Cmd, chan struct{}, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return nil, nil, ErrNotRunning
	}
	select {
	case <-p.done:
		return nil, nil, ErrNotRunning
	default:
	}
	return p.cmd, p.done, nil
}

// PID returns the process id of the running child, or 0.
func (p *process) PID() int {
	cmd, _, err := p.current()
	if err != nil {
		return 0
	}
	return cmd.Process.Pid
}

// Running reports whether the child is alive (possibly paused).
func (p *process) Running() bool {
	_, _, err := p.current()
	return err == nil
}

// exited returns a channel closed when the current child exits (closed already if none runs).
func (p *process) exited() <-chan struct{} {
	_, done, err := p.current()
	if err != nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return done
}

func (p *process) signalGroup(sig syscall.Signal) error {
	_, err := p.signalTree(sig)
	return err
}

// signalTree signals the group and every descendant, and returns the descendants' pids.
func (p *process) signalTree(sig syscall.Signal) ([]int, error) {
	cmd, _, err := p.current()
	if err != nil {
		return nil, err
	}
	pid := cmd.Process.Pid
	// Signal the child's process group and every descendant: some servers (PostgreSQL) put
	// each backend in a session of its own, out of the group's reach, and a machine failure
	// takes them all. Freeze the leader first so that it forks nothing while we look.
	if sig == syscall.SIGKILL || sig == syscall.SIGSTOP {
		_ = syscall.Kill(pid, syscall.SIGSTOP)
	}
	desc := descendants(pid)
	for _, d := range desc {
		_ = syscall.Kill(d, sig)
	}
	if err := syscall.Kill(-pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return desc, fmt.Errorf("engines: signal %s: %w", p.name, err)
	}
	return desc, nil
}

// waitGone waits (up to 5s) until none of pids is alive: gone, or a zombie that holds no
// resources any more.
func waitGone(pids []int) {
	deadline := time.Now().Add(5 * time.Second)
	for _, pid := range pids {
		for time.Now().Before(deadline) {
			b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
			if err != nil {
				break // gone
			}
			if i := bytes.LastIndexByte(b, ')'); i >= 0 && len(b) > i+2 && b[i+2] == 'Z' {
				break // a zombie: its memory and sockets are released
			}
			time.Sleep(2 * time.Millisecond) // a killed process takes a moment to exit
		}
	}
}

// descendants returns the pids of every process below pid, read from /proc.
func descendants(pid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	children := map[int][]int{}
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// The command name is in parentheses and may hold spaces: the ppid follows the last ')'.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		if ppid, err := strconv.Atoi(f[1]); err == nil {
			children[ppid] = append(children[ppid], child)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// Kill sends SIGKILL to the whole process group and waits until the child is gone.
func (p *process) Kill() error {
	_, done, err := p.current()
	if err != nil {
		return err
	}
	desc, err := p.signalTree(syscall.SIGKILL)
	if err != nil {
		return err
	}
	<-done
	p.reapGroup()
	waitGone(desc)
	return nil
}

// reapGroup kills any process left in the group after its leader exited (a forked backend that
// outlived its parent), so that a restart finds ports and shared memory free.
func (p *process) reapGroup() {
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	if cmd != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
}

// Stop asks the child to shut down gracefully and waits for it; after stopTimeout, or when ctx
// ends, the group is killed.
func (p *process) Stop(ctx context.Context) error {
	_, done, err := p.current()
	if err != nil {
		return err
	}
	_ = p.signalGroup(syscall.SIGCONT) // a paused process cannot act on SIGTERM
	if err := p.signalGroup(p.stopSig); err != nil {
		return err
	}
	t := time.NewTimer(stopTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		_ = p.signalGroup(syscall.SIGKILL)
		<-done
	case <-ctx.Done():
		_ = p.signalGroup(syscall.SIGKILL)
		<-done
	}
	p.reapGroup()
	return nil
}

// Pause stops the whole process group with SIGSTOP: the node keeps its sockets open but
// answers nothing, like a hung machine.
func (p *process) Pause() error {
	if err := p.signalGroup(syscall.SIGSTOP); err != nil {
		return err
	}
	p.mu.Lock()
	p.paused = true
	p.mu.Unlock()
	return nil
}

// Resume continues a paused process group with SIGCONT.
func (p *process) Resume() error {
	if err := p.signalGroup(syscall.SIGCONT); err != nil {
		return err
	}
	p.mu.Lock()
	p.paused = false
	p.mu.Unlock()
	return nil
}

// Paused reports whether Pause was called without a Resume since.
func (p *process) Paused() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.paused
}

// LogPath returns the file that receives the child's standard output and error.
func (p *process) LogPath() string { return p.logPath }

// close kills the child if it runs. It is safe to call on a process that never started.
func (p *process) close() {
	if p.Running() {
		_ = p.Kill()
	}
}

// tailLog returns the last few lines of the process log, for error messages.
func (p *process) tailLog() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	const max = 2000
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return string(b)
}

// onFreePort calls start with port when it is set (the caller's choice, tried once), else
// with a port pick chose (FreePort). Such a port can be taken by another process of the
// machine before the server binds it (test packages start engines at the same time): when
// start fails with "Address already in use", it is called again on another port, three
// times in all.
func onFreePort(port int, pick func() (int, error), start func(port int) error) error {
	fixed := port != 0
	for attempt := 1; ; attempt++ {
		if !fixed {
			p, err := pick()
			if err != nil {
				return err
			}
			port = p
		}
		err := start(port)
		if err == nil || fixed || attempt == 3 || !portTaken(err) {
			return err
		}
	}
}

// portTaken reports whether a server failed to start because its port was in use.
func portTaken(err error) bool { return strings.Contains(err.Error(), "Address already in use") }

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("engines: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// waitFor calls check until it returns nil, ctx ends, or the process exits.
func waitFor(ctx context.Context, p *process, what string, check func(context.Context) error) error {
	exited := p.exited()
	var last error
	for delay := 5 * time.Millisecond; ; delay = min(delay*2, 100*time.Millisecond) {
		attemptCtx, cancel := context.WithTimeout(ctx, time.Second)
		last = check(attemptCtx)
		cancel()
		if last == nil {
			return nil
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("engines: %s: waiting for %s: %w (last: %v)\n%s", p.name, what, ctx.Err(), last, p.tailLog())
		case <-exited:
			t.Stop()
			return fmt.Errorf("engines: %s exited while waiting for %s (last: %v)\n%s", p.name, what, last, p.tailLog())
		case <-t.C:
		}
	}
}

// runAs describes the unprivileged account that servers refusing root run under.
type runAs struct {
	cred *syscall.Credential // nil when no switch is needed
	uid  int
	gid  int
}

var (
	runAsOnce sync.Once
	runAsVal  runAs
	runAsErr  error
)

// serviceAccount returns the account to run PostgreSQL and Memcached as: nil credentials when
// this process is not root; otherwise "postgres", falling back to "nobody".
func serviceAccount() (runAs, error) {
	runAsOnce.Do(func() {
		if os.Geteuid() != 0 {
			runAsVal = runAs{uid: os.Geteuid(), gid: os.Getegid()}
			return
		}
		for _, name := range []string{"postgres", "nobody"} {
			u, err := user.Lookup(name)
			if err != nil {
				continue
			}
			uid, err1 := strconv.Atoi(u.Uid)
			gid, err2 := strconv.Atoi(u.Gid)
			if err1 != nil || err2 != nil {
				continue
			}
			runAsVal = runAs{cred: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, uid: uid, gid: gid}
			return
		}
		runAsErr = errors.New("engines: running as root and found neither a postgres nor a nobody user to run servers as")
	})
	return runAsVal, runAsErr
}

// makeDir creates dir (and parents) and, when servers run under another account, hands it to
// that account and makes every parent traversable.
func makeDir(dir string, acct runAs) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("engines: %w", err)
	}
	if acct.cred == nil {
		return nil
	}
	if err := os.Chown(dir, acct.uid, acct.gid); err != nil {
		return fmt.Errorf("engines: %w", err)
	}
	// The account must be able to reach dir: give parents the search bit only.
	for d := filepath.Dir(dir); d != "/" && d != "."; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("engines: %w", err)
		}
		if fi.Mode().Perm()&0o001 == 0 {
			if err := os.Chmod(d, fi.Mode().Perm()|0o011); err != nil {
				return fmt.Errorf("engines: %w", err)
			}
		}
	}
	return nil
}
