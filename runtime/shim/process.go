package shim

import (
	"context"
	"fmt"
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
	termination *copied // a container's termination-message file, if any

	mu         sync.Mutex
	status     task.Status
	exitStatus uint32
	exitedAt   time.Time
	exited     chan struct{}
	output     sync.WaitGroup // copies of stdout and stderr
	// ending is closed once the exit is known, before the output copies
	// are waited for: they keep their fifos open until then (copyOut).
	ending     chan struct{}
	endingOnce sync.Once

	// The shim holds a writer of its own on the stdin fifo, as runc's shim
	// does, so that the copy reads the fifo's end only once CloseIO
	// dropped it and the client closed its side: every byte written before
	// reaches the process before its stdin is closed.
	stdinMu     sync.Mutex
	stdinHold   io.Closer     // nil once CloseIO or the exit dropped it
	stdinIn     io.ReadCloser // the copy's reader, closed at the exit
	stdinClosed bool          // CloseIO came (maybe before the copy started)
	stdinCopy   bool          // the copy started: stdinDone will be closed
	stdinDone   chan struct{}
}

func newProc(ctx context.Context, cid, execID string, io stdio) (*proc, error) {
	p := &proc{cid: cid, execID: execID, stdio: io, status: task.Status_CREATED, exited: make(chan struct{}),
		ending: make(chan struct{}), stdinDone: make(chan struct{})}
	if io.stdin == "" {
		return p, nil
	}
	// The stdin reader is opened at create, as runc's shim does: CRI
	// attaches a client's stdin before Start, and a client with nothing to
	// send closes its writer at once; a reader opened only at Start would
	// wait for a writer that never comes. Its open outlives the request.
	in, err := fifo.OpenFifo(context.WithoutCancel(ctx), io.stdin, syscall.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("stdin of %s: %w", p.agentExecID(), err)
	}
	p.stdinIn = in
	return p, nil
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
// copy with a notice in stdout: the agent then discards the output itself.
func (p *proc) copyIO(ctx context.Context, agent pb.AgentServiceService) {
	id := p.agentExecID()
	p.stdinMu.Lock()
	p.stdinCopy = true
	p.stdinMu.Unlock()
	if p.stdio.stdin != "" {
		go p.copyStdin(ctx, agent, id)
	} else {
		agent.CloseStdin(ctx, &pb.CloseStdinRequest{ContainerId: p.cid, ExecId: id})
		close(p.stdinDone)
	}
	streams := []stream{{p.stdio.stdout, agent.ReadStdout, true}}
	if !p.stdio.terminal {
		streams = append(streams, stream{p.stdio.stderr, agent.ReadStderr, false})
	}
	for _, s := range streams {
		if s.path == "" {
			continue
		}
		p.output.Add(1)
		go func() {
			defer p.output.Done()
			p.copyOut(ctx, s, id)
		}()
	}
}

// stream is an output fifo and the agent call that reads its data.
type stream struct {
	path   string
	read   readFunc
	notice bool // gets WithheldNotice (stdout: every process has one)
}

type readFunc func(context.Context, *pb.ReadStreamRequest) (*pb.ReadStreamResponse, error)

// copyStdin writes the stdin fifo to the agent until its end, then
// closes the process's stdin there.
func (p *proc) copyStdin(ctx context.Context, agent pb.AgentServiceService, id string) {
	defer close(p.stdinDone)
	defer agent.CloseStdin(context.WithoutCancel(ctx), &pb.CloseStdinRequest{ContainerId: p.cid, ExecId: id})
	in, err := p.openStdin(ctx)
	if err != nil {
		log.G(ctx).WithError(err).Warn("open stdin")
		return
	}
	defer in.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := in.Read(buf)
		if n > 0 {
			if werr := writeStdin(ctx, agent, &pb.WriteStreamRequest{ContainerId: p.cid, ExecId: id, Data: buf[:n]}); werr != nil {
				log.G(ctx).WithError(werr).WithField("id", id).Warn("write stdin")
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// openStdin returns the stdin reader for the copy and, unless CloseIO came
// already, opens the shim's own writer.
func (p *proc) openStdin(ctx context.Context) (io.ReadCloser, error) {
	p.stdinMu.Lock()
	defer p.stdinMu.Unlock()
	if p.stdinIn == nil { // stopStdin ran already
		return nil, fmt.Errorf("process %s exited", p.agentExecID())
	}
	if !p.stdinClosed {
		hold, err := fifo.OpenFifo(context.WithoutCancel(ctx), p.stdio.stdin, syscall.O_WRONLY|syscall.O_NONBLOCK, 0)
		if err != nil {
			return nil, err
		}
		p.stdinHold = hold
	}
	return p.stdinIn, nil
}

// writeStdin writes all of r.Data, in as many calls as the agent needs.
func writeStdin(ctx context.Context, agent pb.AgentServiceService, r *pb.WriteStreamRequest) error {
	data := r.Data
	for len(data) > 0 {
		w, err := agent.WriteStdin(ctx, &pb.WriteStreamRequest{ContainerId: r.ContainerId, ExecId: r.ExecId, Data: data})
		if err != nil {
			return err
		}
		if w.Len == 0 || int(w.Len) > len(data) {
			return fmt.Errorf("the agent wrote %d of %d bytes", w.Len, len(data))
		}
		data = data[w.Len:]
	}
	return nil
}

// closeStdin is CloseIO: it drops the shim's writer and waits, at most as
// long as ctx, for the copy to write what the fifo still holds and close
// the process's stdin. The client closes its side first (CRI does).
func (p *proc) closeStdin(ctx context.Context) error {
	p.stdinMu.Lock()
	p.stdinClosed = true
	if p.stdinHold != nil {
		p.stdinHold.Close()
		p.stdinHold = nil
	}
	copying := p.stdinCopy
	p.stdinMu.Unlock()
	if !copying {
		return nil // the copy, once started, holds no writer
	}
	select {
	case <-p.stdinDone:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stopStdin ends the stdin copy of an exited process: nothing reads its
// input any more.
func (p *proc) stopStdin() {
	p.stdinMu.Lock()
	defer p.stdinMu.Unlock()
	p.stdinClosed = true
	for _, c := range []io.Closer{p.stdinHold, p.stdinIn} {
		if c != nil {
			c.Close()
		}
	}
	p.stdinHold, p.stdinIn = nil, nil
}

// WithheldNotice is written once in a process's output (its log) when the
// agent policy does not let the host read it, so that kubectl logs says why
// it shows nothing else.
const WithheldNotice = "cocoon: output withheld by the pod's agent policy (ReadStreamRequest denied)\n"

// copyOut copies one output stream of the process into its fifo until the
// stream ends, or writes WithheldNotice when the policy withholds it. The
// fifo is closed only once the process exited: containerd 1.6 and 1.7 end
// an exec's stdin stream as soon as its stdout fifo ends
// (containerd#13934), which would cut the input of a process that closed
// its stdout early (sh -c 'cat > f').
func (p *proc) copyOut(ctx context.Context, s stream, id string) {
	var w io.WriteCloser
	w, err := fifo.OpenFifo(ctx, s.path, syscall.O_WRONLY, 0)
	if err != nil {
		log.G(ctx).WithError(err).Warn("open output fifo")
		return
	}
	defer w.Close()
	defer func() { <-p.ending }()
	for {
		r, err := s.read(ctx, &pb.ReadStreamRequest{ContainerId: p.cid, ExecId: id, Len: 32 << 10})
		if r.GetWithheld() || status.Code(err) == codes.PermissionDenied {
			log.G(ctx).WithField("id", id).Info("the agent policy does not let the host read this process's output")
			if s.notice {
				p.withheldNotice(ctx, s, id, w, r.GetWithheldTo())
			}
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

// ShippedNotice is WithheldNotice when the guest ships the output to the
// pod owner's OpenTelemetry endpoint (initdata's telemetry.toml), named.
const ShippedNotice = "cocoon: output withheld from the host by the pod's agent policy (ReadStreamRequest denied); the guest ships it to the owner's OpenTelemetry endpoint %s\n"

// DroppedNotice follows the output's end when the guest could not ship
// some of its lines.
const DroppedNotice = "cocoon: %d lines of this output were dropped in the guest (its buffer was full) and never reached %s\n"

// withheldNotice writes why the log holds no output and, when the guest
// ships it to the owner, waits for the output's end to report the lines
// it dropped.
func (p *proc) withheldNotice(ctx context.Context, s stream, id string, w io.Writer, to string) {
	if to == "" {
		w.Write([]byte(WithheldNotice))
		return
	}
	fmt.Fprintf(w, ShippedNotice, to)
	r, err := s.read(ctx, &pb.ReadStreamRequest{ContainerId: p.cid, ExecId: id})
	if err == nil && r.GetWithheldDropped() > 0 {
		fmt.Fprintf(w, DroppedNotice, r.GetWithheldDropped(), to)
	}
}

type nopWriter struct{}

func (nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (nopWriter) Close() error                { return nil }

// waitOutput lets the output copies end and waits for them, at most d:
// the agent's streams end when the process's last writer is gone.
func (p *proc) waitOutput(d time.Duration) {
	p.endingOnce.Do(func() { close(p.ending) })
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
