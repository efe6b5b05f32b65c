package shim

import (
	"reflect"
	"testing"

	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// criSpec is a container's spec as containerd's CRI plugin writes it.
func criSpec() *specs.Spec {
	s := specconv.Example()
	pids, shares := int64(100), uint64(2)
	s.Linux.Resources = &specs.LinuxResources{
		Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
		Pids:    &specs.LinuxPids{Limit: &pids},
		CPU:     &specs.LinuxCPU{Shares: &shares, Cpus: "0-3", Mems: "0"},
		BlockIO: &specs.LinuxBlockIO{}}
	s.Linux.Namespaces = []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace, Path: "/proc/7/ns/ipc"},
		{Type: specs.UTSNamespace, Path: "/proc/7/ns/uts"}, {Type: specs.MountNamespace},
		{Type: specs.NetworkNamespace, Path: "/var/run/netns/cni-1"}, {Type: specs.CgroupNamespace}}
	s.Linux.Seccomp = &specs.LinuxSeccomp{DefaultAction: specs.ActErrno}
	s.Hooks = &specs.Hooks{CreateRuntime: []specs.Hook{{Path: "/usr/bin/hook"}}}
	s.Annotations = map[string]string{"io.kubernetes.cri.container-type": "container",
		"io.kubernetes.cri.image-name": "registry.example/app:1", "io.kubernetes.cri.sandbox-id": "p1"}
	return s
}

// TestCreateRequest: the shim sends what Kata's runtime sends for a
// container pulled in the guest.
func TestCreateRequest(t *testing.T) {
	spec := criSpec()
	r, err := createRequest("c1", "/run/containerd/io.containerd.runtime.v2.task/k8s.io/c1", "registry.example/app:1", spec)
	if err != nil {
		t.Fatal(err)
	}
	wantAnn := map[string]string{"io.kubernetes.cri.container-type": "container",
		"io.kubernetes.cri.image-name": "registry.example/app:1", "io.kubernetes.cri.sandbox-id": "p1",
		"io.katacontainers.pkg.oci.bundle_path":    "/run/containerd/io.containerd.runtime.v2.task/k8s.io/c1",
		"io.katacontainers.pkg.oci.container_type": "pod_container"}
	if !reflect.DeepEqual(r.OCI.Annotations, wantAnn) {
		t.Errorf("annotations %v", r.OCI.Annotations)
	}
	if r.ContainerId != "c1" || r.ExecId != "c1" || r.SandboxPidns || r.OCI.Root.Path != "/run/kata-containers/c1/rootfs" {
		t.Errorf("request %v", r)
	}
	l := r.OCI.Linux
	if r.OCI.Hooks != nil || l.Seccomp != nil || l.Resources.Devices != nil || l.Resources.Pids != nil ||
		l.Resources.BlockIO != nil || l.Resources.CPU.Cpus != "" || l.Resources.CPU.Mems != "" || l.Resources.CPU.Shares != 2 {
		t.Errorf("not constrained as Kata's runtime does: %v", l)
	}
	var ns []string
	for _, n := range l.Namespaces {
		ns = append(ns, n.Type+n.Path)
	}
	if want := []string{"ipc", "uts", "mount"}; !reflect.DeepEqual(ns, want) {
		t.Errorf("namespaces %v, want %v", ns, want)
	}
	if len(r.Storages) != 1 {
		t.Fatalf("storages %v", r.Storages)
	}
	pull, err := r.Storages[0].GuestPull("c1")
	if err != nil || r.Storages[0].Source != "registry.example/app:1" || !reflect.DeepEqual(pull.Metadata, wantAnn) {
		t.Errorf("storage %v: %v %v", r.Storages[0], pull, err)
	}

	// A container joining the pod's PID namespace (shareProcessNamespace)
	// and one started by ctr.
	spec = criSpec()
	spec.Linux.Namespaces[0].Path = "/proc/7/ns/pid"
	delete(spec.Annotations, "io.kubernetes.cri.container-type")
	if r, _ := createRequest("c2", "/b", "img", spec); !r.SandboxPidns || r.OCI.Annotations[annotationKataType] != "single_container" {
		t.Errorf("sandbox_pidns %v, type %q", r.SandboxPidns, r.OCI.Annotations[annotationKataType])
	}
}
