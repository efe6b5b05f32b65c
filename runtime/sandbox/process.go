package sandbox

import (
	"context"
	"net"
	"os/exec"
	"sync"
	"syscall"

	"github.com/containerd/ttrpc"

	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
)

// Process is the host process holding a sandbox (QEMU, or the local
// backend's agent): it records how the process ended, for Done and Err.
type Process struct {
	mu      sync.Mutex
	cmd     *exec.Cmd
	stopped bool
	done    chan struct{}
	err     error
}

// NewProcess returns a Process not started yet.
func NewProcess() *Process { return &Process{done: make(chan struct{})} }

// Start starts cmd and waits for it in the background. When it exits,
// exited is called with its wait error; unless Stop ended it, what exited
// returns becomes Err.
func (p *Process) Start(cmd *exec.Cmd, exited func(error) error) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	p.mu.Lock()
	p.cmd = cmd
	p.mu.Unlock()
	go func() {
		err := exited(cmd.Wait())
		p.mu.Lock()
		if !p.stopped {
			p.err = err
		}
		p.mu.Unlock()
		close(p.done)
	}()
	return nil
}

// Stop sends SIGTERM, then SIGKILL once ctx ends, and waits for the exit.
func (p *Process) Stop(ctx context.Context) {
	p.mu.Lock()
	p.stopped = true
	cmd := p.cmd
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-ctx.Done():
		cmd.Process.Kill()
		<-p.done
	}
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err says why the process ended by itself; nil after Stop.
func (p *Process) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Pid is the process's id, 0 before Start.
func (p *Process) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Ping asks the agent behind dial for its details: the readiness check of
// every backend.
func Ping(ctx context.Context, dial func(context.Context) (net.Conn, error)) error {
	conn, err := dial(ctx)
	if err != nil {
		return err
	}
	c := ttrpc.NewClient(conn)
	defer c.Close()
	_, err = pb.NewAgentServiceClient(c).GetGuestDetails(ctx, &pb.GuestDetailsRequest{})
	return err
}
