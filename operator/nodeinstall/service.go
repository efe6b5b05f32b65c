package nodeinstall

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"iter"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrService is a host service (cocoon-snapshotter) that did not start or
// stop.
var ErrService = errors.New("host service")

// Service runs a program on the host, outside the installer's pods: the
// snapshotter serves containerd before containerd uses it and outlives
// every install and uninstall pod (their own containers need it).
type Service interface {
	// Ensure runs argv as the service name, started again when restart
	// is set (a new binary) or it runs other arguments; it says how the
	// service runs, for the node's status.
	Ensure(ctx context.Context, name string, argv []string, restart bool) (string, error)
	// Stop stops the service and removes what Ensure added; nothing when
	// it does not run.
	Stop(ctx context.Context, name string) error
	// Detach runs argv once, on its own, in the background.
	Detach(ctx context.Context, name string, argv []string) error
}

// SystemdServices runs services as systemd units of the host's systemd,
// ordered before containerd's unit and wanted by it (so also started
// first at boot).
type SystemdServices struct {
	Systemctl  Systemctl
	UnitDir    string // host path: /etc/systemd/system
	Containerd string // containerd's unit
	Root       string // where the installer sees the host's root
}

func (s SystemdServices) unitPath(name string) string {
	return filepath.Join("/", s.Root, s.UnitDir, name+".service")
}

// Ensure implements Service.
func (s SystemdServices) Ensure(ctx context.Context, name string, argv []string, restart bool) (string, error) {
	quoted := make([]string, len(argv))
	for i, a := range argv {
		quoted[i] = strconv.Quote(a) // systemd unquotes C-style double quotes
	}
	unit := fmt.Sprintf(`# Written by cocoon-node-installer; removed when Cocoon is uninstalled.
[Unit]
Description=%[1]s (Cocoon)
Before=%[2]s.service

[Service]
ExecStart=%[3]s
Restart=always

[Install]
WantedBy=%[2]s.service
`, name, s.Containerd, strings.Join(quoted, " "))
	if err := os.MkdirAll(filepath.Dir(s.unitPath(name)), 0o755); err != nil {
		return "", err
	}
	changed, err := writeIfChanged(s.unitPath(name), []byte(unit), 0o644)
	if err != nil {
		return "", err
	}
	if changed {
		if err := s.Systemctl.Run(ctx, "daemon-reload"); err != nil {
			return "", err
		}
	}
	verb := "start"
	if changed || restart {
		verb = "restart"
	}
	if err := s.Systemctl.Run(ctx, "enable", name+".service"); err != nil {
		return "", err
	}
	if err := s.Systemctl.Run(ctx, verb, name+".service"); err != nil {
		return "", err
	}
	return "systemd unit " + name + ".service", nil
}

// Stop implements Service.
func (s SystemdServices) Stop(ctx context.Context, name string) error {
	if _, err := os.Stat(s.unitPath(name)); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := s.Systemctl.Run(ctx, "disable", "--now", name+".service"); err != nil {
		return err
	}
	if err := os.Remove(s.unitPath(name)); err != nil {
		return err
	}
	return s.Systemctl.Run(ctx, "daemon-reload")
}

// Detach implements Service: a transient unit, collected once it exits;
// it started once systemctl returns (Type=exec), so its binary may go.
func (s SystemdServices) Detach(ctx context.Context, name string, argv []string) error {
	s.Systemctl.Run(ctx, "stop", name+".service") // one left by an earlier uninstall
	return s.Systemctl.Exec(ctx, append([]string{"systemd-run", "--unit=" + name, "--collect", "--property=Type=exec", "--"}, argv...))
}

// Systemctl runs systemctl in the namespaces of the host's init (the
// installer shares the host's PID namespace).
type Systemctl struct {
	// PID is the host's init (0: 1).
	PID int
	// Root is where the installer sees the host's root.
	Root string
}

// Run runs systemctl with args.
func (s Systemctl) Run(ctx context.Context, args ...string) error {
	return s.Exec(ctx, append([]string{"systemctl"}, args...))
}

// Exec runs argv in the host's namespaces.
func (s Systemctl) Exec(ctx context.Context, argv []string) error {
	pid := s.PID
	if pid == 0 {
		pid = 1
	}
	out, err := hostCommand(ctx, s.Root, pid, true, argv).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s: %v: %s", ErrService, strings.Join(argv, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// hostCommand runs argv in the namespaces of the host's process pid (its
// PID namespace too, withPID) through the host's own nsenter: the
// installer's image has none, so it runs chrooted into root (where the
// installer sees the host's root) before it joins pid's mount namespace.
func hostCommand(ctx context.Context, root string, pid int, withPID bool, argv []string) *exec.Cmd {
	args := []string{"--target=" + strconv.Itoa(pid), "--mount", "--uts", "--ipc", "--net"}
	if withPID {
		args = append(args, "--pid")
	}
	cmd := exec.CommandContext(ctx, "/usr/bin/nsenter", append(append(args, "--"), argv...)...)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: filepath.Join("/", root)}
	return cmd
}

// HostProcesses runs services as processes the installer starts in
// containerd's namespaces and cgroups (out of the
// installer pod's, whose end kills what is left in them), for nodes
// without systemd (restart: signal). Nothing starts them again when they
// exit: each install does.
type HostProcesses struct {
	// RunDir (a host path) keeps a pid file per service.
	RunDir string
	// Containerd locates containerd's process and the host.
	Containerd Containerd
}

func (h HostProcesses) pidFile(name string) string {
	return h.Containerd.local(filepath.Join(h.RunDir, name+".pid"))
}

// Ensure implements Service.
func (h HostProcesses) Ensure(ctx context.Context, name string, argv []string, restart bool) (string, error) {
	if pid, ok := h.running(name); ok {
		if !restart && slices.Equal(cmdline(pid), argv) {
			return fmt.Sprintf("host process %d", pid), nil
		}
		if err := h.Stop(ctx, name); err != nil {
			return "", err
		}
	}
	pid, err := h.start(argv)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(h.pidFile(name)), 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(h.pidFile(name), []byte(strconv.Itoa(pid)), 0o644); err != nil {
		return "", err
	}
	return fmt.Sprintf("host process %d", pid), nil
}

// Stop implements Service.
func (h HostProcesses) Stop(ctx context.Context, name string) error {
	pid, ok := h.running(name)
	if ok {
		syscall.Kill(pid, syscall.SIGTERM)
		deadline := time.Now().Add(30 * time.Second)
		for alive(pid) {
			if time.Now().After(deadline) {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	if err := os.Remove(h.pidFile(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Detach implements Service.
func (h HostProcesses) Detach(_ context.Context, _ string, argv []string) error {
	_, err := h.start(argv)
	return err
}

// running is the service's pid when its pid file names a live process of
// its binary.
func (h HostProcesses) running(name string) (int, bool) {
	b, err := os.ReadFile(h.pidFile(name))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || !alive(pid) {
		return 0, false
	}
	args := cmdline(pid)
	return pid, len(args) > 0 && filepath.Base(args[0]) == name
}

// start runs argv (host paths) in containerd's mount, UTS, IPC and
// network namespaces and cgroups, as containerd's own shims run, in a
// session of its own, and returns once argv[0] runs (its file may then
// go).
func (h HostProcesses) start(argv []string) (int, error) {
	ctrd, err := findContainerd(h.Containerd.ConfigPath)
	if err != nil {
		return 0, err
	}
	cmd := hostCommand(context.Background(), h.Containerd.Root, ctrd, false, argv)
	cmd.SysProcAttr.Setsid = true
	logPath := filepath.Join(h.RunDir, filepath.Base(argv[0])+".log")
	if err := os.MkdirAll(h.Containerd.local(h.RunDir), 0o755); err != nil {
		return 0, err
	}
	log, err := os.OpenFile(h.Containerd.local(logPath), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return 0, err
	}
	defer log.Close()
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("%w: %s: %v", ErrService, argv[0], err)
	}
	pid := cmd.Process.Pid
	go cmd.Wait() // reaps it if it ends while the installer runs
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if slices.Equal(cmdline(pid), argv) { // nsenter ran argv
			break
		}
		if time.Now().After(deadline) || !alive(pid) {
			return 0, fmt.Errorf("%w: %s did not start (log: %s)", ErrService, argv[0], logPath)
		}
	}
	return pid, h.joinCgroups(pid, ctrd)
}

// joinCgroups moves pid into the cgroups of the process ctrd.
func (h HostProcesses) joinCgroups(pid, ctrd int) error {
	own, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", ctrd))
	if err != nil {
		return err
	}
	mountinfo, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", ctrd))
	if err != nil {
		return err
	}
	for _, dir := range cgroupDirs(own, mountinfo) {
		if err := os.WriteFile(h.Containerd.local(filepath.Join(dir, "cgroup.procs")), []byte(strconv.Itoa(pid)), 0o644); err != nil {
			return fmt.Errorf("%w: join containerd's cgroup %s: %v", ErrService, dir, err)
		}
	}
	return nil
}

// cgroupDirs are the directories (host paths) of a process's cgroups:
// each line of its /proc/PID/cgroup under the mount point of its
// hierarchy in the host's mountinfo.
func cgroupDirs(cgroup, mountinfo []byte) []string {
	var dirs []string
	for _, line := range strings.Split(strings.TrimSpace(string(cgroup)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		for _, m := range strings.Split(string(mountinfo), "\n") {
			pre, post, ok := strings.Cut(m, " - ")
			f, g := strings.Fields(pre), strings.Fields(post)
			if !ok || len(f) < 5 || len(g) < 3 {
				continue
			}
			if (parts[1] == "" && g[0] == "cgroup2") || (parts[1] != "" && g[0] == "cgroup" && hasAll(g[2], parts[1])) {
				dirs = append(dirs, filepath.Join(f[4], strings.TrimPrefix(parts[2], f[3])))
				break
			}
		}
	}
	return dirs
}

// hasAll says whether the mount options opts list every controller.
func hasAll(opts, controllers string) bool {
	have := strings.Split(opts, ",")
	for _, c := range strings.Split(controllers, ",") {
		if !slices.Contains(have, c) {
			return false
		}
	}
	return true
}

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state follows the command's closing parenthesis; Z: a zombie.
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && len(b) > i+2 && b[i+2] != 'Z'
}

// processes yields the running processes (in /proc's order) that have a
// command line (kernel threads have none), with it.
func processes() iter.Seq2[int, []string] {
	return func(yield func(int, []string) bool) {
		files, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, f := range files {
			pid, err := strconv.Atoi(filepath.Base(filepath.Dir(f)))
			if err != nil {
				continue
			}
			if args := cmdline(pid); len(args) > 0 && !yield(pid, args) {
				return
			}
		}
	}
}

func cmdline(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || len(b) == 0 {
		return nil
	}
	return strings.Split(string(bytes.TrimRight(b, "\x00")), "\x00")
}
