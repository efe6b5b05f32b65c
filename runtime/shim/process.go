package shim

import (
	"context"
	"io"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/fifo"
	"github.com/containerd/log"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
)

// stdio are the fifos containerd gives a process.
type stdio struct {
	stdin, stdout, stderr string
	terminal              bool
}

// proc is a container's init or exec process, or the sandbox task, as
// containerd sees it.
type proc struct {
	cid, execID string // execID is empty for a container's init
	stdio       stdio

	mu         sync.Mutex
	status     task.Status
	exitStatus uint32
	exitedAt   time.Time
	exited     chan struct{}
	output     sync.WaitGroup // copies of stdout and stderr
}

func newProc(cid, execID string, io stdio) *proc {
	return &proc{cid: cid, execID: execID, stdio: io, status: task.Status_CREATED, exited: make(chan struct{})}
}

// agentExecID is the process's id on the agent: the container's for init.
func (p *proc) agentExecID() string {
	if p.execID == "" {
		return p.cid
	}
	return p.execID
}

func (p *proc) setRunning() {
	p.mu.Lock()
	p.status = task.Status_RUNNING
	p.mu.Unlock()
}

// setExited records the exit once; later calls change nothing.
func (p *proc) setExited(code uint32) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.status == task.Status_STOPPED {
		return false
	}
	p.status, p.exitStatus, p.exitedAt = task.Status_STOPPED, code, time.Now()
	close(p.exited)
	return true
}

func (p *proc) state() (task.Status, uint32, time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status, p.exitStatus, p.exitedAt
}

// copyIO connects the fifos to the agent's streams: stdin is written with
// WriteStdin and closed with CloseStdin at its end; stdout and stderr are
// read until their end. A policy that forbids reading output ends the
// copy quietly: the agent then discards the output itself.
func (p *proc) copyIO(ctx context.Context, agent pb.AgentServiceService) {
	id := p.agentExecID()
	if p.stdio.stdin != "" {
		go p.copyStdin(ctx, agent, id)
	} else {
		agent.CloseStdin(ctx, &pb.CloseStdinRequest{ContainerId: p.cid, ExecId: id})
	}
	streams := []stream{{p.stdio.stdout, agent.ReadStdout}}
	if !p.stdio.terminal {
		streams = append(streams, stream{p.stdio.stderr, agent.ReadStderr})
	}
	for _, s := range streams {
		if s.path == "" {
			continue
		}
		p.output.Add(1)
		go func() {
			defer p.output.Done()
			p.copyOut(ctx, s.path, id, s.read)
		}()
	}
}

// stream is an output fifo and the agent call that reads its data.
type stream struct {
	path string
	read readFunc
}

type readFunc func(context.Context, *pb.ReadStreamRequest) (*pb.ReadStreamResponse, error)

func (p *proc) copyStdin(ctx context.Context, agent pb.AgentServiceService, id string) {
	defer agent.CloseStdin(context.WithoutCancel(ctx), &pb.CloseStdinRequest{ContainerId: p.cid, ExecId: id})
	f, err := fifo.OpenFifo(ctx, p.stdio.stdin, syscall.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		log.G(ctx).WithError(err).Warn("open stdin")
		return
	}
	defer f.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			if _, werr := agent.WriteStdin(ctx, &pb.WriteStreamRequest{ContainerId: p.cid, ExecId: id, Data: buf[:n]}); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *proc) copyOut(ctx context.Context, path, id string, read readFunc) {
	var w io.WriteCloser
	w, err := fifo.OpenFifo(ctx, path, syscall.O_WRONLY, 0)
	if err != nil {
		log.G(ctx).WithError(err).Warn("open output fifo")
		return
	}
	defer w.Close()
	for {
		r, err := read(ctx, &pb.ReadStreamRequest{ContainerId: p.cid, ExecId: id, Len: 32 << 10})
		if status.Code(err) == codes.PermissionDenied {
			log.G(ctx).WithField("id", id).Info("the agent policy does not let the host read this process's output")
			return
		}
		if err != nil || len(r.Data) == 0 {
			return
		}
		if _, err := w.Write(r.Data); err != nil {
			// Nobody reads any more (ctr detached): keep draining.
			w = nopWriter{}
		}
	}
}

type nopWriter struct{}

func (nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (nopWriter) Close() error                { return nil }

// waitOutput waits for the output copies to finish, at most d: the
// agent's streams end when the process's last writer is gone.
func (p *proc) waitOutput(d time.Duration) {
	done := make(chan struct{})
	go func() {
		p.output.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(d):
	}
}
