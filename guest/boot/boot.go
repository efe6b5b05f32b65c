// Package boot is the guest's PID 1 (coco-init): it mounts the kernel
// filesystems, loads the modules the initramfs carries, brings up the
// loopback interface (the runtime configures the NICs through the agent),
// reads the pod's initdata from its disk and
// runs coco-agent, reaping orphans, until the agent exits; then it powers
// the VM off so that the host sees the sandbox end.
package boot

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Params are the cocoon.* kernel command line parameters.
type Params struct {
	// Channel is the agent's listen URI (cocoon.channel=serial|vsock).
	Channel string
	// LogLevel is the agent's log level (cocoon.log=debug...).
	LogLevel string
	// UserNetwork says the VM has QEMU's user network (cocoon.net=user),
	// a development setup where images on the host's loopback registry
	// are pulled from UserHost.
	UserNetwork bool
}

// ParseCmdline reads the parameters from a kernel command line.
func ParseCmdline(cmdline string) Params {
	p := Params{Channel: "serial://agent.0", LogLevel: "info"}
	for _, f := range strings.Fields(cmdline) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "cocoon.channel":
			switch v {
			case "vsock":
				p.Channel = "vsock://-1:1024"
			case "serial":
				p.Channel = "serial://agent.0"
			}
		case "cocoon.log":
			p.LogLevel = v
		case "cocoon.net":
			p.UserNetwork = v == "user"
		}
	}
	return p
}

type mount struct {
	source, target, fstype string
	flags                  uintptr
	data                   string
}

var mounts = []mount{
	{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
	{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620"},
	{"tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
	{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	{"cgroup2", "/sys/fs/cgroup", "cgroup2", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
}

// MountAll mounts the kernel filesystems and enables the cgroup
// controllers the agent's containers use.
func MountAll() error {
	for _, m := range mounts {
		if err := os.MkdirAll(m.target, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(m.source, m.target, m.fstype, m.flags, m.data); err != nil && !errors.Is(err, unix.EBUSY) {
			return fmt.Errorf("mount %s: %w", m.target, err)
		}
	}
	b, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers")
	if err != nil {
		return err
	}
	var enable []string
	for _, c := range strings.Fields(string(b)) {
		enable = append(enable, "+"+c)
	}
	return os.WriteFile("/sys/fs/cgroup/cgroup.subtree_control", []byte(strings.Join(enable, " ")), 0o644)
}

// LoadModules loads the kernel modules listed, in order, in
// dir/modules.order (made by make guest from modprobe's dependency order).
func LoadModules(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "modules.order"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, name := range strings.Fields(string(b)) {
		if err := loadModule(filepath.Join(dir, filepath.Base(name))); err != nil {
			return err
		}
	}
	return nil
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	err = unix.FinitModule(int(f.Fd()), "", 0)
	if errors.Is(err, unix.ENODEV) {
		// A driver for hardware the VM lacks (aesni_intel on a CPU
		// without AES-NI): the generic code serves.
		fmt.Fprintf(Console(), "coco-init: %s: no such hardware, skipped\n", filepath.Base(path))
		return nil
	}
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("load %s: %w", filepath.Base(path), err)
	}
	return nil
}

// Console writes to the kernel's console, whatever stdout is.
func Console() io.Writer {
	if f, err := os.OpenFile("/dev/console", os.O_WRONLY, 0); err == nil {
		return f
	}
	return os.Stderr
}
