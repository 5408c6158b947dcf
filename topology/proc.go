package topology

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// proc is one child process of `strata up`: an app server or the cache node, a process of the
// same binary. It can be started again after it exited. It is safe for concurrent use.
type proc struct {
	name    string
	bin     string
	args    []string
	env     []string // added to the parent's environment
	logPath string

	mu   sync.Mutex // protects cmd and done
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// start runs the process. Its output goes to logPath.
func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && !closed(p.done) {
		return fmt.Errorf("topology: %s is running already (pid %d)", p.name, p.cmd.Process.Pid)
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("topology: %s: %w", p.name, err)
	}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), p.env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own process group: a Ctrl-C in the terminal reaches `up` alone, which then
		// stops the tiers in order.
		Setpgid: true,
		// If `up` dies, however it dies, the kernel kills the child.
		Pdeathsig: syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("topology: start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	p.cmd, p.done = cmd, done
	go func() { // owned by p: ends when the child exits, which kill and stop guarantee
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	return nil
}

func closed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// running returns the live child's pid and done channel, or ok false.
func (p *proc) running() (pid int, done chan struct{}, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || closed(p.done) {
		return 0, nil, false
	}
	return p.cmd.Process.Pid, p.done, true
}

// PID returns the running child's process id, or 0.
func (p *proc) PID() int {
	pid, _, _ := p.running()
	return pid
}

// errNotRunning is returned by kill and stop when the process has exited already.
var errNotRunning = errors.New("topology: not running")

// kill sends SIGKILL to the child's process group and waits until it is gone.
func (p *proc) kill() error {
	pid, done, ok := p.running()
	if !ok {
		return errNotRunning
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	<-done
	return nil
}

// stop sends SIGTERM and waits up to timeout (or ctx), then SIGKILL.
func (p *proc) stop(ctx context.Context, timeout time.Duration) error {
	pid, done, ok := p.running()
	if !ok {
		return errNotRunning
	}
	_ = syscall.Kill(-pid, syscall.SIGCONT) // a paused process cannot act on SIGTERM
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-t.C:
	case <-ctx.Done():
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	<-done
	return fmt.Errorf("topology: %s did not stop within %v: killed", p.name, timeout)
}

// tail returns the end of the child's log, for error messages.
func (p *proc) tail() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return ""
	}
	if len(b) > 1500 {
		b = b[len(b)-1500:]
	}
	return string(b)
}
