// Package local is the sandbox backend without a VM: coco-agent runs on the
// host in namespaces of its own (mount, PID, UTS, IPC) and in the pod's
// network namespace (CNI's, so the pod has its pod IP as with runc; for a
// container without one, the host's or a new empty one), so a pod's
// containers are ordinary processes the host can inspect. It is NOT
// confidential — it exists for development, tests and machines without
// virtualization — and says so in every pod's Info.
package local

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cocoon-cc/cocoon/runtime/network"
	"github.com/cocoon-cc/cocoon/runtime/sandbox"
)

// Options configure the backend ([local] in the shim's TOML).
type Options struct {
	// AgentPath is the coco-agent binary (default: coco-agent beside the
	// running executable, then on PATH).
	AgentPath string `toml:"agent_path"`
	// Netns is, for a sandbox without a pod network namespace (a pod on
	// the host's network, ctr), "host" (default: the host's network) or
	// "new" (a private, empty network namespace). A pod whose namespace
	// CNI prepared always runs in that one.
	Netns string `toml:"netns"`
}

// Sandbox is a local sandbox.
type Sandbox struct {
	cfg  sandbox.Config
	opts Options
	*sandbox.Process
}

var _ sandbox.Sandbox = (*Sandbox)(nil)

// ErrInvalidOptions is returned by New for a bad configuration.
var ErrInvalidOptions = errors.New("local sandbox: invalid options")

// New checks the options; Start runs the agent.
func New(cfg sandbox.Config, opts Options) (*Sandbox, error) {
	switch opts.Netns {
	case "":
		opts.Netns = "host"
	case "host", "new":
	default:
		return nil, fmt.Errorf("%w: netns %q (want host or new)", ErrInvalidOptions, opts.Netns)
	}
	if cfg.ID == "" || !filepath.IsAbs(cfg.StateDir) {
		return nil, fmt.Errorf("%w: an id and an absolute state directory are required", ErrInvalidOptions)
	}
	if opts.AgentPath == "" {
		opts.AgentPath = defaultAgent()
	}
	if _, err := os.Stat(opts.AgentPath); err != nil {
		return nil, fmt.Errorf("%w: agent: %v", ErrInvalidOptions, err)
	}
	return &Sandbox{cfg: cfg, opts: opts, Process: sandbox.NewProcess()}, nil
}

func defaultAgent() string {
	if exe, err := os.Executable(); err == nil {
		if p := filepath.Join(filepath.Dir(exe), "coco-agent"); fileExists(p) {
			return p
		}
	}
	if p, err := exec.LookPath("coco-agent"); err == nil {
		return p
	}
	return "coco-agent"
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func (s *Sandbox) socketPath() string { return filepath.Join(s.cfg.StateDir, "agent.sock") }

// Start launches the agent and waits until it answers.
func (s *Sandbox) Start(ctx context.Context) error {
	if err := s.launch(); err != nil {
		return err
	}
	if err := s.waitReady(ctx); err != nil {
		s.Stop(context.WithoutCancel(ctx))
		return err
	}
	return nil
}

// launch starts the agent with its listening socket as fd 3, so that the
// socket lives on the host while the agent's /run is private.
func (s *Sandbox) launch() error {
	sock := s.socketPath()
	os.Remove(sock)
	l, err := net.Listen("unix", sock)
	if err != nil {
		return err
	}
	// The agent serves the socket; closing the host's copy must not unlink it.
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	defer l.Close()
	if err := os.Chmod(sock, 0o600); err != nil {
		return err
	}
	lf, err := l.(*net.UnixListener).File()
	if err != nil {
		return err
	}
	defer lf.Close()
	args := []string{"--listen", "fd://3", "--state-dir", "/run/cocoon", "--private-mounts", "--cgroup-parent", cgroupRoot + s.cfg.ID}
	if len(s.cfg.Initdata) > 0 {
		path := filepath.Join(s.cfg.StateDir, "initdata.toml")
		if err := os.WriteFile(path, s.cfg.Initdata, 0o600); err != nil {
			return err
		}
		args = append(args, "--initdata", path)
	}
	logf, err := os.OpenFile(filepath.Join(s.cfg.StateDir, "agent.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(s.opts.AgentPath, args...)
	cmd.ExtraFiles = []*os.File{lf}
	cmd.Stdout, cmd.Stderr = logf, logf
	flags := uintptr(syscall.CLONE_NEWNS | syscall.CLONE_NEWPID | syscall.CLONE_NEWUTS | syscall.CLONE_NEWIPC)
	if s.cfg.NetNS == "" && s.opts.Netns == "new" {
		flags |= syscall.CLONE_NEWNET
	}
	// The agent is its PID namespace's init: when it dies, the kernel kills
	// every container process, so nothing outlives the sandbox.
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: flags, Pdeathsig: syscall.SIGKILL, Setpgid: true}
	log := filepath.Join(s.cfg.StateDir, "agent.log")
	err = startIn(s.cfg.NetNS, func() error {
		return s.Process.Start(cmd, func(err error) error {
			return fmt.Errorf("agent exited: %v: %s", err, logTail(log))
		})
	})
	if err != nil {
		return fmt.Errorf("start %s: %w", s.opts.AgentPath, err)
	}
	return nil
}

// startIn runs start, which starts a process, in the network namespace at
// nsPath (none: as it is), so that the process is born there. Its
// parent-death signal is the starting thread's, which InNamespace returns
// to the scheduler (it ends only if it cannot switch back).
func startIn(nsPath string, start func() error) error {
	if nsPath == "" {
		return start()
	}
	if err := network.InNamespace(nsPath, start); err != nil {
		return fmt.Errorf("in the pod's network namespace %s: %w", nsPath, err)
	}
	return nil
}

// waitReady calls GetGuestDetails until the agent answers.
func (s *Sandbox) waitReady(ctx context.Context) error {
	for {
		err := sandbox.Ping(ctx, s.Dial)
		if err == nil {
			return nil
		}
		select {
		case <-s.Done():
			return fmt.Errorf("%w: %v", sandbox.ErrAgentUnreachable, s.Err())
		case <-ctx.Done():
			return fmt.Errorf("%w: %v (last error: %v)", sandbox.ErrAgentUnreachable, ctx.Err(), err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Dial connects to the agent.
func (s *Sandbox) Dial(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", s.socketPath())
	if err != nil {
		return nil, fmt.Errorf("%w: %v", sandbox.ErrAgentUnreachable, err)
	}
	return conn, nil
}

// Stop ends the agent (SIGTERM, then SIGKILL once ctx ends) and removes
// the cgroups its containers leave behind if it died without cleaning up.
func (s *Sandbox) Stop(ctx context.Context) error {
	s.Process.Stop(ctx)
	os.Remove(s.socketPath())
	return removeCgroups(s.cfg.ID)
}

// Info describes the sandbox: never confidential.
func (s *Sandbox) Info() sandbox.Info {
	return sandbox.Info{Backend: "local", TEE: "none", Confidential: false, Pid: s.Pid()}
}

// cgroupRoot holds every local pod's cgroup.
const cgroupRoot = "/cocoon/"

// removeCgroups deletes /sys/fs/cgroup[/<controller>]/cocoon/<id> trees,
// deepest first (a cgroup directory is removed with rmdir, once empty).
func removeCgroups(id string) error {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*" + cgroupRoot + id)
	roots = append(roots, "/sys/fs/cgroup"+cgroupRoot+id)
	var firstErr error
	for _, root := range roots {
		var dirs []string
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, os.ErrNotExist) && firstErr == nil {
				firstErr = err
			}
		}
	}
	return firstErr
}

// logTail is the end of the agent's log, for error messages.
func logTail(path string) string {
	b, _ := os.ReadFile(path)
	const max = 600
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return strings.TrimSpace(string(b))
}
