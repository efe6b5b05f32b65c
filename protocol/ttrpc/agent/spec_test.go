package agent

import (
	"os"
	"reflect"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/protobuf/proto"
)

// fullSpec sets every field the protobuf subset models.
func fullSpec() *specs.Spec {
	adj, mode, id := 100, os.FileMode(0o620), uint32(5)
	limit, swap, shares, quota, period, pids := int64(64<<20), int64(128<<20), uint64(512), int64(50000), uint64(100000), int64(42)
	major, errno := int64(1), uint(1)
	return &specs.Spec{
		Version:  "1.1.0",
		Hostname: "pod",
		Root:     &specs.Root{Path: "/run/cocoon/c1/rootfs", Readonly: true},
		Process: &specs.Process{Terminal: true, ConsoleSize: &specs.Box{Height: 24, Width: 80},
			User: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{10, 20}, Username: "app"},
			Args: []string{"/bin/sh", "-c", "echo hi"}, Env: []string{"PATH=/bin"}, Cwd: "/",
			Capabilities: &specs.LinuxCapabilities{Bounding: []string{"CAP_KILL"}, Effective: []string{"CAP_KILL"},
				Inheritable: []string{"CAP_CHOWN"}, Permitted: []string{"CAP_KILL"}, Ambient: []string{"CAP_NET_RAW"}},
			Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 512}},
			NoNewPrivileges: true, ApparmorProfile: "p", OOMScoreAdj: &adj, SelinuxLabel: "l"},
		Mounts:      []specs.Mount{{Destination: "/proc", Source: "proc", Type: "proc", Options: []string{"nosuid"}}},
		Annotations: map[string]string{"io.kubernetes.cri.container-type": "container"},
		Linux: &specs.Linux{
			UIDMappings: []specs.LinuxIDMapping{{ContainerID: 0, HostID: 1000, Size: 1}},
			GIDMappings: []specs.LinuxIDMapping{{ContainerID: 0, HostID: 1000, Size: 1}},
			Sysctl:      map[string]string{"net.ipv4.ip_forward": "1"},
			Resources: &specs.LinuxResources{
				Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}, {Allow: true, Type: "c", Major: &major, Access: "rw"}},
				Memory:  &specs.LinuxMemory{Limit: &limit, Swap: &swap},
				CPU:     &specs.LinuxCPU{Shares: &shares, Quota: &quota, Period: &period, Cpus: "0-1"},
				Pids:    &specs.LinuxPids{Limit: &pids}, HugepageLimits: []specs.LinuxHugepageLimit{{Pagesize: "2MB", Limit: 1 << 30}}},
			CgroupsPath: "/kubepods/pod1/c1",
			Namespaces:  []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.NetworkNamespace, Path: "/proc/1/ns/net"}},
			Devices:     []specs.LinuxDevice{{Path: "/dev/fuse", Type: "c", Major: 10, Minor: 229, FileMode: &mode, UID: &id, GID: &id}},
			Seccomp: &specs.LinuxSeccomp{DefaultAction: specs.ActErrno, Architectures: []specs.Arch{specs.ArchX86_64},
				Flags: []specs.LinuxSeccompFlag{specs.LinuxSeccompFlagLog},
				Syscalls: []specs.LinuxSyscall{{Names: []string{"read"}, Action: specs.ActAllow, ErrnoRet: &errno,
					Args: []specs.LinuxSeccompArg{{Index: 1, Value: 2, ValueTwo: 3, Op: specs.OpEqualTo}}}}},
			RootfsPropagation: "rslave", MaskedPaths: []string{"/proc/kcore"}, ReadonlyPaths: []string{"/proc/sys"},
			MountLabel: "m"},
	}
}

// TestSpecRoundTrip: an OCI spec survives the trip through the wire.
func TestSpecRoundTrip(t *testing.T) {
	in := fullSpec()
	b, err := proto.Marshal(SpecFromOCI(in))
	if err != nil {
		t.Fatal(err)
	}
	var wire Spec
	if err := proto.Unmarshal(b, &wire); err != nil {
		t.Fatal(err)
	}
	if out := wire.OCI(); !reflect.DeepEqual(out, in) {
		t.Fatalf("round trip changed the spec:\n got %+v\nwant %+v", out, in)
	}
}

// TestSpecDropsHooks: hooks never reach the guest.
func TestSpecDropsHooks(t *testing.T) {
	in := fullSpec()
	in.Hooks = &specs.Hooks{CreateRuntime: []specs.Hook{{Path: "/bin/evil"}}}
	if out := SpecFromOCI(in).OCI(); out.Hooks != nil {
		t.Fatalf("hooks crossed: %+v", out.Hooks)
	}
	if SpecFromOCI(nil) != nil || (*Spec)(nil).OCI() != nil {
		t.Fatal("nil spec converted to something")
	}
}
