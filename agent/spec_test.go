package agent

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"

	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
)

// hostSpec is what a shim forwards for a CRI container: host namespace
// paths, host bind mounts and devices, a seccomp profile and hooks.
func hostSpec() *specs.Spec {
	s := specconv.Example()
	s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.NetworkNamespace, Path: "/var/run/netns/cni-1"})
	s.Linux.Namespaces[0].Path = "/proc/42/ns/pid"
	s.Mounts = append(s.Mounts, specs.Mount{Destination: "/etc/hosts", Type: "bind", Source: "/var/lib/containerd/hosts", Options: []string{"rbind"}},
		specs.Mount{Destination: "/dev/shm", Type: "bind", Source: "/run/containerd/shm"},
		specs.Mount{Destination: "/sneaky", Type: "tmpfs", Source: "/", Options: []string{"rbind"}})
	s.Linux.Devices = []specs.LinuxDevice{{Path: "/dev/sda", Type: "b", Major: 8}}
	s.Linux.Seccomp = &specs.LinuxSeccomp{DefaultAction: specs.ActErrno}
	s.Linux.CgroupsPath = "/kubepods/besteffort/pod1/c1"
	s.Hooks = &specs.Hooks{Poststart: []specs.Hook{{Path: "/host/hook"}}}
	s.Root.Path = "/host/rootfs"
	return s
}

// inGuest stands for the agent's bindSource: every source has a guest path.
func inGuest(m specs.Mount) (string, error) {
	if !path.IsAbs(m.Source) {
		return "", fmt.Errorf("%w: relative source", ErrInvalidArgument)
	}
	return "/guest" + path.Clean(m.Source), nil
}

func TestGuestSpec(t *testing.T) {
	s := hostSpec()
	dropped, err := guestSpec(s, "c1", "/run/cocoon/containers/c1/rootfs", "/cocoon/pod", nil, inGuest)
	if err != nil {
		t.Fatal(err)
	}
	if s.Root.Path != "/run/cocoon/containers/c1/rootfs" || s.Hooks != nil || s.Linux.Seccomp != nil ||
		s.Linux.Devices != nil || s.Linux.CgroupsPath != "/cocoon/pod/c1" {
		t.Errorf("host parts kept: root %q hooks %v seccomp %v devices %v cgroup %q", s.Root.Path, s.Hooks,
			s.Linux.Seccomp, s.Linux.Devices, s.Linux.CgroupsPath)
	}
	for _, n := range s.Linux.Namespaces {
		if n.Path != "" || n.Type == specs.NetworkNamespace {
			t.Errorf("namespace %+v kept", n)
		}
	}
	for _, m := range s.Mounts {
		if isBind(m) && !strings.HasPrefix(m.Source, "/guest/") {
			t.Errorf("bind mount %+v not mapped into the guest", m)
		}
	}
	if len(dropped) != 4 {
		t.Errorf("dropped %q", dropped)
	}
	// Kata's runtime sends no PID or cgroup namespace: each container
	// still gets its own, and a user namespace asked for is kept.
	s = hostSpec()
	s.Linux.Namespaces = []specs.LinuxNamespace{{Type: specs.IPCNamespace}, {Type: specs.UTSNamespace},
		{Type: specs.MountNamespace}, {Type: specs.UserNamespace}}
	if _, err := guestSpec(s, "c1", "/r", "/cocoon/pod", nil, inGuest); err != nil {
		t.Fatal(err)
	}
	var types []specs.LinuxNamespaceType
	for _, n := range s.Linux.Namespaces {
		types = append(types, n.Type)
	}
	if want := []specs.LinuxNamespaceType{specs.PIDNamespace, specs.MountNamespace, specs.CgroupNamespace,
		specs.UserNamespace}; !slices.Equal(types, want) {
		t.Errorf("namespaces %v, want %v", types, want)
	}
}

func TestGuestSpecImageProcess(t *testing.T) {
	image := &specs.Spec{Process: &specs.Process{Args: []string{"/app"}, Env: []string{"A=1"}, Cwd: "/work"}}
	s := hostSpec()
	s.Process.Args, s.Process.Env, s.Process.Cwd = nil, nil, ""
	if _, err := guestSpec(s, "c1", "/r", "/cocoon/p", image, inGuest); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s.Process.Args, image.Process.Args) || s.Process.Cwd != "/work" || !slices.Equal(s.Process.Env, image.Process.Env) {
		t.Errorf("process %+v: want the image's", s.Process)
	}
	s = hostSpec()
	s.Process = nil
	if _, err := guestSpec(s, "c1", "/r", "/cocoon/p", nil, inGuest); !errors.Is(err, ErrInvalidArgument) {
		t.Errorf("no process: %v", err)
	}
}

// FuzzGuestSpec: any spec the host can send is adapted or refused with
// ErrInvalidArgument, and what is adapted has no host path left.
func FuzzGuestSpec(f *testing.F) {
	b, _ := proto.Marshal(pb.SpecFromOCI(hostSpec()))
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		var wire pb.Spec
		if proto.Unmarshal(b, &wire) != nil {
			return
		}
		s := wire.OCI()
		if s == nil {
			s = &specs.Spec{}
		}
		if _, err := guestSpec(s, "c", "/run/cocoon/containers/c/rootfs", "/cocoon/p", nil, inGuest); err != nil {
			if !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("error %v", err)
			}
			return
		}
		if s.Root.Path != "/run/cocoon/containers/c/rootfs" || s.Hooks != nil {
			t.Fatal("host root or hooks kept")
		}
		for _, n := range s.Linux.Namespaces {
			if n.Path != "" {
				t.Fatalf("namespace path %q kept", n.Path)
			}
		}
		for _, m := range s.Mounts {
			if isBind(m) && !strings.HasPrefix(m.Source, "/guest/") || !isBind(m) && !slices.Contains(guestMountTypes, m.Type) {
				t.Fatalf("mount %+v kept", m)
			}
		}
	})
}

// TestAddGuestParts: the guest's mounts are added, and its variables only
// where the container does not set them itself.
func TestAddGuestParts(t *testing.T) {
	s := &specs.Spec{Process: &specs.Process{Env: []string{"PATH=/bin", "SPIFFE_ENDPOINT_SOCKET=unix:///own"}}}
	m := specs.Mount{Destination: "/run/spiffe/workload", Type: "bind", Source: "/run/x", Options: []string{"rbind", "ro"}}
	addGuestParts(s, []specs.Mount{m}, []string{"SPIFFE_ENDPOINT_SOCKET=unix:///run/spiffe/workload/socket", "OTHER=1"})
	if len(s.Mounts) != 1 || s.Mounts[0].Destination != m.Destination {
		t.Errorf("mounts %v", s.Mounts)
	}
	if want := []string{"PATH=/bin", "SPIFFE_ENDPOINT_SOCKET=unix:///own", "OTHER=1"}; !slices.Equal(s.Process.Env, want) {
		t.Errorf("env %v, want %v", s.Process.Env, want)
	}
}
