package agent

import (
	"fmt"
	"slices"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// ownNamespaces are the namespaces every container gets of its own, asked
// for or not: Kata's runtime sends no PID or cgroup namespace (its agent
// adds them), containerd's may. The network, UTS and IPC namespaces are
// the sandbox's (the VM's, or the local agent's), shared by the pod's
// containers as a pause container's are; a user namespace is kept when the
// spec asks for one.
var ownNamespaces = []specs.LinuxNamespaceType{specs.PIDNamespace, specs.MountNamespace, specs.CgroupNamespace}

// guestMountTypes are the kernel filesystems a container may mount; any
// other mount but a bind mount names a host device the guest does not have.
var guestMountTypes = []string{"proc", "sysfs", "tmpfs", "devpts", "mqueue", "cgroup", "cgroup2"}

// guestSpec adapts the host's spec to the sandbox: the rootfs is the one
// the agent pulled, namespaces lose their host paths, the cgroup sits under
// cgroupParent, bind mounts name the guest paths bind maps their sources
// to, devices are dropped and the image's process fills in what the host
// left out. It returns what it dropped, for the log.
func guestSpec(s *specs.Spec, id, rootfs, cgroupParent string, image *specs.Spec, bind func(specs.Mount) (string, error)) (dropped []string, err error) {
	if s.Process == nil && (image == nil || image.Process == nil) {
		return nil, fmt.Errorf("%w: container %s has no process", ErrInvalidArgument, id)
	}
	if s.Process == nil {
		s.Process = image.Process
	} else if len(s.Process.Args) == 0 && image != nil && image.Process != nil {
		s.Process.Args = image.Process.Args
		if len(s.Process.Env) == 0 {
			s.Process.Env = image.Process.Env
		}
		if s.Process.Cwd == "" {
			s.Process.Cwd = image.Process.Cwd
		}
	}
	if len(s.Process.Args) == 0 {
		return nil, fmt.Errorf("%w: container %s has no command", ErrInvalidArgument, id)
	}
	if s.Process.Cwd == "" {
		s.Process.Cwd = "/"
	}
	readonly := s.Root != nil && s.Root.Readonly
	s.Root = &specs.Root{Path: rootfs, Readonly: readonly}
	s.Hooks = nil
	if s.Linux == nil {
		s.Linux = &specs.Linux{}
	}
	l := s.Linux
	var ns []specs.LinuxNamespace
	for _, t := range ownNamespaces {
		ns = append(ns, specs.LinuxNamespace{Type: t})
	}
	for _, n := range l.Namespaces {
		if n.Path != "" {
			dropped = append(dropped, fmt.Sprintf("%s namespace %s", n.Type, n.Path))
		}
		if n.Type == specs.UserNamespace {
			ns = append(ns, specs.LinuxNamespace{Type: n.Type})
		}
	}
	l.Namespaces = ns
	// The pod's hostname is the sandbox's (CreateSandbox).
	s.Hostname = ""
	l.CgroupsPath = cgroupParent + "/" + id
	if l.Seccomp != nil {
		dropped = append(dropped, "seccomp profile (agent built without libseccomp)")
		l.Seccomp = nil
	}
	if len(l.Devices) > 0 {
		dropped = append(dropped, fmt.Sprintf("%d host devices", len(l.Devices)))
		l.Devices = nil
	}
	var mounts []specs.Mount
	shm := false
	for _, m := range s.Mounts {
		switch {
		case isBind(m):
			if m.Source, err = bind(m); err != nil {
				return nil, err
			}
		case !slices.Contains(guestMountTypes, m.Type):
			return nil, fmt.Errorf("%w: mount %s: type %q is no guest filesystem", ErrInvalidArgument, m.Destination, m.Type)
		}
		shm = shm || m.Destination == "/dev/shm"
		mounts = append(mounts, m)
	}
	if !shm {
		mounts = append(mounts, specs.Mount{Destination: "/dev/shm", Type: "tmpfs", Source: "shm",
			Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}})
	}
	s.Mounts = mounts
	return dropped, nil
}

// addGuestParts adds the guest's own mounts and environment to a
// container's spec, after the policy judged the host's: a variable the
// container already sets keeps its value.
func addGuestParts(s *specs.Spec, mounts []specs.Mount, env []string) {
	s.Mounts = append(s.Mounts, mounts...)
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if !slices.ContainsFunc(s.Process.Env, func(e string) bool { return strings.HasPrefix(e, name+"=") }) {
			s.Process.Env = append(s.Process.Env, kv)
		}
	}
}
