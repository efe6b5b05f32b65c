package shim

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v2"
	"github.com/containerd/containerd/errdefs"
	ptypes "github.com/containerd/containerd/protobuf/types"
	"github.com/containerd/containerd/runtime"
	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"github.com/containerd/typeurl/v2"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
	"github.com/cocoon-cc/cocoon/runtime/sandbox"
)

// A pod's VM is the configured default size ([sandbox] vcpus, memory_mib:
// the guest's own needs) plus its containers' limits, as in Kata: the sum
// is known at boot when the kubelet gives the sandbox's resources (CRI's
// io.kubernetes.cri.sandbox-* annotations), and otherwise the VM grows by
// hotplug as containers with limits are created or updated. The limits
// themselves are enforced by the container's cgroup in the guest.

// CRI's sandbox sizing annotations: the sum of the pod's container limits.
const (
	annotationSandboxCPUPeriod = "io.kubernetes.cri.sandbox-cpu-period"
	annotationSandboxCPUQuota  = "io.kubernetes.cri.sandbox-cpu-quota"
	annotationSandboxMemory    = "io.kubernetes.cri.sandbox-memory"
)

// podResources are what the pod's VM is sized for.
type podResources struct {
	mu             sync.Mutex
	baseVCPUs      int              // the guest's own, before any container
	baseMiB        int              //
	milliCPUs, mem map[string]int64 // each container's CPU (millicpus) and memory (bytes) limits
}

func newPodResources(c *Config) *podResources {
	return &podResources{baseVCPUs: c.Sandbox.VCPUs, baseMiB: c.Sandbox.MemoryMiB,
		milliCPUs: map[string]int64{}, mem: map[string]int64{}}
}

// milliCPUs is a CPU limit (CFS quota over period) in thousandths of a CPU.
func milliCPUs(quota int64, period uint64) int64 {
	if quota <= 0 || period == 0 {
		return 0
	}
	return (quota*1000 + int64(period) - 1) / int64(period)
}

// size is the VM a pod needs: the base plus millicpus and bytes, each
// rounded up to a whole vCPU and MiB.
func (r *podResources) size(milli, bytes int64) (vcpus, mib int) {
	return r.baseVCPUs + int((milli+999)/1000), r.baseMiB + int((bytes+1<<20-1)>>20)
}

// bootSize is the VM's size at boot: the base plus the sandbox's
// resources when CRI gives them (the kubelet's sum of the containers'
// limits).
func (r *podResources) bootSize(annotations map[string]string) (vcpus, mib int, err error) {
	num := func(key string) (int64, error) {
		v, ok := annotations[key]
		if !ok {
			return 0, nil
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < -1 {
			return 0, fmt.Errorf("%w: annotation %s=%q: not a size", ErrConfig, key, v)
		}
		return max(n, 0), nil
	}
	quota, err := num(annotationSandboxCPUQuota)
	if err != nil {
		return 0, 0, err
	}
	period, err := num(annotationSandboxCPUPeriod)
	if err != nil {
		return 0, 0, err
	}
	mem, err := num(annotationSandboxMemory)
	if err != nil {
		return 0, 0, err
	}
	if mem > 1<<50 || quota > 1<<40 {
		return 0, 0, fmt.Errorf("%w: sandbox resources out of range", ErrConfig)
	}
	vcpus, mib = r.size(milliCPUs(quota, uint64(period)), mem)
	return vcpus, mib, nil
}

// set records a container's limits and returns the size the pod needs.
func (r *podResources) set(id string, res *specs.LinuxResources) (vcpus, mib int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.milliCPUs, id)
	delete(r.mem, id)
	if c := res.CPU; c != nil && c.Quota != nil && c.Period != nil {
		r.milliCPUs[id] = milliCPUs(*c.Quota, *c.Period)
	}
	if m := res.Memory; m != nil && m.Limit != nil && *m.Limit > 0 {
		r.mem[id] = *m.Limit
	}
	var milli, bytes int64
	for _, v := range r.milliCPUs {
		milli += v
	}
	for _, v := range r.mem {
		bytes += v
	}
	return r.size(milli, bytes)
}

// forget drops a removed container's limits (the VM does not shrink).
func (r *podResources) forget(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.milliCPUs, id)
	delete(r.mem, id)
}

// resizer is a sandbox that can grow after boot (the qemu backend).
type resizer interface {
	Size() (vcpus, memoryMiB int)
	Resize(ctx context.Context, vcpus, memoryMiB int) (int, int, error)
}

// fit grows the pod's VM for a container's limits before the container is
// created or updated, and has the guest bring what was added online. A
// VM that cannot grow (a confidential guest) keeps its boot size: the
// container's cgroup still enforces its limits.
func (s *Service) fit(ctx context.Context, p *pod, id string, l *specs.Linux) error {
	if l == nil || l.Resources == nil {
		return nil
	}
	vcpus, mib := p.res.set(id, l.Resources)
	r, ok := p.sb.(resizer)
	if !ok {
		return nil
	}
	cpus0, mib0 := r.Size()
	cpus1, mib1, err := r.Resize(ctx, vcpus, mib)
	if errors.Is(err, sandbox.ErrNoHotplug) {
		log.G(ctx).WithError(err).WithField("container", id).Warn("the pod's VM cannot grow for this container's limits")
		err = nil
	}
	if err != nil {
		return status.Errorf(codes.ResourceExhausted, "grow the pod's VM to %d vCPUs and %d MiB: %v", vcpus, mib, err)
	}
	if cpus1 == cpus0 && mib1 == mib0 {
		return nil
	}
	log.G(ctx).WithField("vcpus", cpus1).WithField("memory_mib", mib1).Info("the pod's VM grew")
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err = p.agent.OnlineCPUMem(octx, &pb.OnlineCPUMemRequest{Wait: true, NbCpus: uint32(cpus1 - cpus0), CpuOnly: mib1 == mib0})
	if err != nil {
		return agentError("bring hot-plugged vCPUs and memory online", err)
	}
	return nil
}

// guestResources is what of a container's resources the guest applies:
// its CPU and memory limits (constrain drops the host's device rules, CPU
// and memory nodes, pids, block I/O and network limits, as at creation).
func guestResources(res *specs.LinuxResources) *pb.LinuxResources {
	spec := pb.SpecFromOCI(&specs.Spec{Linux: &specs.Linux{Resources: res}})
	constrain(spec)
	return spec.Linux.Resources
}

// Update applies a container's new resources (CRI's
// UpdateContainerResources, the kubelet's in-place resize): the VM grows
// if it must, then the agent changes the container's cgroup in the guest.
func (s *Service) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (*ptypes.Empty, error) {
	t, err := s.task(r.ID)
	if err != nil {
		return nil, err
	}
	if t.sandbox {
		// The sandbox task stands for the VM: nothing in it to limit.
		return empty(), nil
	}
	v, err := typeurl.UnmarshalAny(r.Resources)
	if err != nil {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "update %s: resources: %v", r.ID, err)
	}
	res, ok := v.(*specs.LinuxResources)
	if !ok {
		return nil, errdefs.ToGRPCf(errdefs.ErrInvalidArgument, "update %s: resources of type %T, want Linux resources", r.ID, v)
	}
	s.mu.Lock()
	p := s.pod
	s.mu.Unlock()
	if err := s.fit(ctx, p, r.ID, &specs.Linux{Resources: res}); err != nil {
		return nil, err
	}
	return s.onAgent("update "+r.ID, func(a pb.AgentServiceService) error {
		_, err := a.UpdateContainer(ctx, &pb.UpdateContainerRequest{ContainerId: r.ID, Resources: guestResources(res)})
		return err
	})
}

// watchOOM publishes the guest's OOM kills as containerd's TaskOOM events,
// from which CRI reports a container's exit as OOMKilled, until the
// pod's agent connection ends.
func (s *Service) watchOOM(ctx context.Context, p *pod) {
	ctx = context.WithoutCancel(ctx)
	for {
		ev, err := p.agent.GetOOMEvent(ctx, &pb.GetOOMEventRequest{})
		if err == nil {
			log.G(ctx).WithField("container", ev.ContainerId).Info("OOM kill in the guest")
			s.publish(ctx, runtime.TaskOOMEventTopic, &eventstypes.TaskOOM{ContainerID: ev.ContainerId})
			continue
		}
		switch status.Code(err) {
		case codes.PermissionDenied, codes.Unimplemented:
			log.G(ctx).WithError(err).Warn("no OOM events from the guest: containers killed for memory are not reported as OOMKilled")
			return
		}
		if errors.Is(err, ttrpc.ErrClosed) {
			return
		}
		select {
		case <-p.sb.Done():
			return
		case <-time.After(time.Second):
		}
	}
}
