package shim

import (
	"maps"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
)

// A container's CreateContainerRequest is what Kata's runtime sends for an
// image pulled in the guest, so that agent policies written for Kata
// (genpolicy's) decide Cocoon's pods as Kata's: the same annotations, root
// path, guest-pull storage and spec constraints.

// Annotations Kata's runtime adds to every container's spec.
const (
	annotationBundlePath = "io.katacontainers.pkg.oci.bundle_path"
	annotationKataType   = "io.katacontainers.pkg.oci.container_type"
)

// kataContainerType is Kata's name of a container's type: CRI's sandbox
// and containers are pod_sandbox and pod_container, anything else (ctr)
// runs as a single_container.
func kataContainerType(annotations map[string]string) string {
	switch annotations[annotationContainerType] {
	case containerTypeSandbox:
		return "pod_sandbox"
	case "container":
		return "pod_container"
	}
	return "single_container"
}

// createRequest is the request creating container id, of the bundle at
// bundle, whose image ref the agent pulls in the guest.
func createRequest(id, bundle, ref string, spec *specs.Spec) (*pb.CreateContainerRequest, error) {
	spec.Annotations = maps.Clone(spec.Annotations)
	if spec.Annotations == nil {
		spec.Annotations = map[string]string{}
	}
	spec.Annotations[annotationBundlePath] = bundle
	spec.Annotations[annotationKataType] = kataContainerType(spec.Annotations)
	storage, err := pb.GuestPullStorage(id, ref, spec.Annotations)
	if err != nil {
		return nil, err
	}
	oci := pb.SpecFromOCI(spec)
	if oci.Root == nil {
		oci.Root = &pb.Root{}
	}
	oci.Root.Path = pb.GuestRootfs(id)
	sandboxPidns := constrain(oci)
	return &pb.CreateContainerRequest{ContainerId: id, ExecId: id, Storages: []*pb.Storage{storage}, OCI: oci,
		SandboxPidns: sandboxPidns}, nil
}

// constrain leaves out of the spec what Kata's runtime does not send to
// its agent: hooks (run on the host, if at all), a seccomp profile (the
// agent is built without libseccomp, and reports so), device cgroup rules,
// the pids, block I/O and network class limits, the host's CPU and memory
// node sets, and the network, cgroup, time and PID namespaces, whose host
// paths mean nothing in the guest; the agent gives each container its own
// PID namespace. It reports whether the spec asked to join another PID
// namespace (the sandbox's, as Kata's runtime reads it).
func constrain(s *pb.Spec) (sandboxPidns bool) {
	s.Hooks = nil
	l := s.Linux
	if l == nil {
		return false
	}
	l.Seccomp = nil
	if r := l.Resources; r != nil {
		r.Devices, r.Pids, r.BlockIO, r.Network = nil, nil, nil, nil
		if r.CPU != nil {
			r.CPU.Cpus, r.CPU.Mems = "", ""
		}
	}
	var ns []*pb.LinuxNamespace
	for _, n := range l.Namespaces {
		switch specs.LinuxNamespaceType(n.Type) {
		case specs.NetworkNamespace, specs.CgroupNamespace, specs.TimeNamespace:
		case specs.PIDNamespace:
			sandboxPidns = n.Path != ""
		default:
			ns = append(ns, &pb.LinuxNamespace{Type: n.Type})
		}
	}
	l.Namespaces = ns
	return sandboxPidns
}
