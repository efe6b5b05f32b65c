package agent

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/cocoon-cc/cocoon/guest/telemetry/feed"
)

// maxRead bounds one ReadStdout/ReadStderr answer.
const maxRead = 1 << 20

// process is a container's init or exec process with its stdio.
type process struct {
	id string
	lp *libcontainer.Process

	stdin          *os.File // write end; nil once closed
	stdout, stderr *os.File // read ends; with a terminal both are the pty master
	console        *os.File // the pty master, nil without a terminal
	childEnds      []*os.File

	exited chan struct{}
	status int32
	mu     sync.Mutex

	// ended: streams read to their end; drained is closed once all are.
	ended   map[*os.File]bool
	drained chan struct{}
	// withheld: the host may not read the output; the guest drains it,
	// or ships it to the pod's owner.
	withheld bool
	// src names the output's lines when they are shipped.
	src feed.Source
	// dropped counts the lines that could not be shipped.
	dropped atomic.Int64
	// answered: streams whose withheld state the host was told; told is
	// closed once it was told of every stream.
	answered map[*os.File]bool
	told     chan struct{}
}

// newProcess prepares a libcontainer process for p. Its stdio are pipes,
// or a pty when p asks for a terminal; start must follow.
func newProcess(id string, p *specs.Process, init bool) (*process, error) {
	lp := &libcontainer.Process{Args: p.Args, Env: p.Env, UID: int(p.User.UID), GID: int(p.User.GID), Cwd: p.Cwd,
		Label: p.SelinuxLabel, AppArmorProfile: p.ApparmorProfile, NoNewPrivileges: &p.NoNewPrivileges, Init: init}
	for _, g := range p.User.AdditionalGids {
		lp.AdditionalGroups = append(lp.AdditionalGroups, int(g))
	}
	if c := p.Capabilities; c != nil {
		lp.Capabilities = &configs.Capabilities{Bounding: c.Bounding, Effective: c.Effective,
			Inheritable: c.Inheritable, Permitted: c.Permitted, Ambient: c.Ambient}
	}
	for _, r := range p.Rlimits {
		rl, ok := rlimits[r.Type]
		if !ok {
			return nil, fmt.Errorf("%w: rlimit %q", ErrInvalidArgument, r.Type)
		}
		lp.Rlimits = append(lp.Rlimits, configs.Rlimit{Type: rl, Hard: r.Hard, Soft: r.Soft})
	}
	pr := &process{id: id, lp: lp, exited: make(chan struct{}), ended: map[*os.File]bool{}, drained: make(chan struct{}),
		answered: map[*os.File]bool{}, told: make(chan struct{})}
	var err error
	if p.Terminal {
		if p.ConsoleSize != nil {
			lp.ConsoleWidth, lp.ConsoleHeight = uint16(p.ConsoleSize.Width), uint16(p.ConsoleSize.Height)
		}
		err = pr.consoleSocket()
	} else {
		err = pr.pipes()
	}
	if err != nil {
		pr.closeAll()
		return nil, err
	}
	return pr, nil
}

func (p *process) pipes() error {
	var ends [3][2]*os.File
	for i := range ends {
		r, w, err := os.Pipe()
		if err != nil {
			return err
		}
		ends[i] = [2]*os.File{r, w}
	}
	p.lp.Stdin, p.stdin = ends[0][0], ends[0][1]
	p.stdout, p.lp.Stdout = ends[1][0], ends[1][1]
	p.stderr, p.lp.Stderr = ends[2][0], ends[2][1]
	p.childEnds = []*os.File{ends[0][0], ends[1][1], ends[2][1]}
	return nil
}

// consoleSocket gives libcontainer a socket to send the pty master over.
func (p *process) consoleSocket() error {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	parent, child := os.NewFile(uintptr(fds[0]), "console-parent"), os.NewFile(uintptr(fds[1]), "console-child")
	p.lp.ConsoleSocket = child
	p.console = parent // replaced by the master in started
	p.childEnds = []*os.File{child}
	return nil
}

// started closes the child's ends in the agent, receives the pty master
// and waits for the exit in the background.
func (p *process) started() error {
	for _, f := range p.childEnds {
		f.Close()
	}
	p.childEnds = nil
	if p.console != nil {
		sock := p.console
		master, err := recvFile(sock)
		sock.Close()
		if err != nil {
			p.console = nil
			return fmt.Errorf("receive the console: %w", err)
		}
		p.console, p.stdout, p.stdin = master, master, master
	}
	go p.wait()
	return nil
}

func (p *process) wait() {
	ps, err := p.lp.Wait()
	status := int32(255)
	if ps != nil {
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok {
			status = int32(ws.ExitStatus())
			if ws.Signaled() {
				status = 128 + int32(ws.Signal())
			}
		}
	} else if err != nil {
		status = 255
	}
	p.mu.Lock()
	p.status = status
	p.mu.Unlock()
	close(p.exited)
}

// exitStatus is valid once exited is closed.
func (p *process) exitStatus() int32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status
}

// read blocks until the stream has data or ends; the end is empty data.
func (p *process) read(stream *os.File, n uint32) ([]byte, error) {
	if stream == nil {
		return nil, nil
	}
	if n == 0 || n > maxRead {
		n = maxRead
	}
	buf := make([]byte, n)
	got, err := stream.Read(buf)
	if err != nil && got == 0 {
		// A pty master reads EIO once the last slave fd is closed.
		if errors.Is(err, io.EOF) || errors.Is(err, os.ErrClosed) || errors.Is(err, syscall.EIO) {
			p.streamEnded(stream)
			return nil, nil
		}
		return nil, err
	}
	return buf[:got], nil
}

// withhold drains the output the host may not read, so that the process
// never blocks on a full pipe: ship, when not nil, sends it to the pod's
// owner, else it is discarded. True the first time.
func (p *process) withhold(ship Telemetry) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.withheld {
		return false
	}
	p.withheld = true
	streams := []*os.File{p.stdout}
	if p.stderr != p.stdout {
		streams = append(streams, p.stderr)
	}
	for i, s := range streams {
		if s == nil {
			continue
		}
		src := p.src
		src.Stream = []string{"stdout", "stderr"}[i]
		go func() {
			if ship != nil {
				p.dropped.Add(ship.Ship(s, src))
			} else {
				io.Copy(io.Discard, s)
			}
			p.streamEnded(s)
		}()
	}
	return true
}

// answer notes that the host was told stream is withheld, and reports
// whether this is the first time.
func (p *process) answer(stream *os.File) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return stream == nil || p.add(p.answered, stream, p.told)
}

// add puts stream in set and closes done once every output stream is in
// it (p.mu held); false if stream was there already.
func (p *process) add(set map[*os.File]bool, stream *os.File, done chan struct{}) bool {
	if set[stream] {
		return false
	}
	set[stream] = true
	for _, s := range []*os.File{p.stdout, p.stderr} {
		if s != nil && !set[s] {
			return true
		}
	}
	close(done)
	return true
}

func (p *process) isWithheld() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.withheld
}

// streamEnded notes that an output stream was read to its end; once all
// are, drained is closed.
func (p *process) streamEnded(stream *os.File) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.add(p.ended, stream, p.drained)
}

// closeStdin ends the process's input (not with a terminal: the pty stays).
func (p *process) closeStdin() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stdin != nil && p.console == nil {
		p.stdin.Close()
		p.stdin = nil
	}
}

func (p *process) writeStdin(b []byte) (int, error) {
	p.mu.Lock()
	in := p.stdin
	p.mu.Unlock()
	if in == nil {
		return 0, fmt.Errorf("%w: stdin of %s is closed", ErrState, p.id)
	}
	return in.Write(b)
}

func (p *process) resize(rows, cols uint32) error {
	if p.console == nil {
		return fmt.Errorf("%w: %s has no terminal", ErrState, p.id)
	}
	return unix.IoctlSetWinsize(int(p.console.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: uint16(rows), Col: uint16(cols)})
}

func (p *process) closeAll() {
	for _, f := range append(p.childEnds, p.stdin, p.stdout, p.stderr, p.console) {
		if f != nil {
			f.Close()
		}
	}
}

// recvFile reads one file descriptor sent over a unix socket.
func recvFile(sock *os.File) (*os.File, error) {
	name := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, _, _, err := unix.Recvmsg(int(sock.Fd()), name, oob, 0)
	if err != nil {
		return nil, err
	}
	msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
	if err != nil || len(msgs) != 1 {
		return nil, fmt.Errorf("no file descriptor received (%v)", err)
	}
	fds, err := unix.ParseUnixRights(&msgs[0])
	if err != nil || len(fds) != 1 {
		return nil, fmt.Errorf("no file descriptor received (%v)", err)
	}
	return os.NewFile(uintptr(fds[0]), string(name[:n])), nil
}

// rlimits maps the OCI names to the kernel's resources.
var rlimits = map[string]int{
	"RLIMIT_AS": unix.RLIMIT_AS, "RLIMIT_CORE": unix.RLIMIT_CORE, "RLIMIT_CPU": unix.RLIMIT_CPU,
	"RLIMIT_DATA": unix.RLIMIT_DATA, "RLIMIT_FSIZE": unix.RLIMIT_FSIZE, "RLIMIT_LOCKS": unix.RLIMIT_LOCKS,
	"RLIMIT_MEMLOCK": unix.RLIMIT_MEMLOCK, "RLIMIT_MSGQUEUE": unix.RLIMIT_MSGQUEUE, "RLIMIT_NICE": unix.RLIMIT_NICE,
	"RLIMIT_NOFILE": unix.RLIMIT_NOFILE, "RLIMIT_NPROC": unix.RLIMIT_NPROC, "RLIMIT_RSS": unix.RLIMIT_RSS,
	"RLIMIT_RTPRIO": unix.RLIMIT_RTPRIO, "RLIMIT_RTTIME": unix.RLIMIT_RTTIME, "RLIMIT_SIGPENDING": unix.RLIMIT_SIGPENDING,
	"RLIMIT_STACK": unix.RLIMIT_STACK,
}
