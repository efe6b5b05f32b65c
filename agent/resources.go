package agent

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/protobuf/types/known/emptypb"

	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
)

// UpdateContainer applies new cgroup limits to a running container
// (kubelet's in-place resize, CRI UpdateContainerResources).
func (a *Agent) UpdateContainer(ctx context.Context, r *pb.UpdateContainerRequest) (*emptypb.Empty, error) {
	c, err := a.lookup(r.ContainerId)
	if err != nil {
		return nil, toStatus(err)
	}
	res := r.GetResources().OCI()
	if res == nil {
		return empty(), nil
	}
	cfg := c.lc.Config()
	cg := cfg.Cgroups.Resources
	if m := res.Memory; m != nil {
		setInt(&cg.Memory, m.Limit)
		setInt(&cg.MemoryReservation, m.Reservation)
		setInt(&cg.MemorySwap, m.Swap)
	}
	if cpu := res.CPU; cpu != nil {
		setInt(&cg.CpuShares, cpu.Shares)
		setInt(&cg.CpuQuota, cpu.Quota)
		setInt(&cg.CpuPeriod, cpu.Period)
		if cpu.Cpus != "" {
			cg.CpusetCpus = cpu.Cpus
		}
		if cpu.Mems != "" {
			cg.CpusetMems = cpu.Mems
		}
	}
	if res.Pids != nil {
		cg.PidsLimit = res.Pids.Limit
	}
	if err := c.lc.Set(cfg); err != nil {
		return nil, toStatus(fmt.Errorf("%w: update container %s: %v", ErrInvalidArgument, r.ContainerId, err))
	}
	return empty(), nil
}

func setInt[T int64 | uint64](dst *T, v *T) {
	if v != nil {
		*dst = *v
	}
}

// OnlineCPUMem brings hot-plugged vCPUs and memory blocks online: the shim
// grows the VM when a pod's containers ask for more than it booted with.
func (a *Agent) OnlineCPUMem(ctx context.Context, r *pb.OnlineCPUMemRequest) (*emptypb.Empty, error) {
	if err := online("/sys/devices/system/cpu/cpu*/online"); err != nil {
		return nil, toStatus(err)
	}
	if !r.CpuOnly {
		if err := online("/sys/devices/system/memory/memory*/online"); err != nil {
			return nil, toStatus(err)
		}
	}
	return empty(), nil
}

func online(glob string) error {
	files, err := filepath.Glob(glob)
	if err != nil {
		return err
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil || strings.TrimSpace(string(b)) != "0" {
			continue
		}
		if err := os.WriteFile(f, []byte("1"), 0); err != nil {
			return fmt.Errorf("online %s: %w", filepath.Dir(f), err)
		}
	}
	return nil
}

// GetOOMEvent waits for a container to meet the OOM killer and names it, so
// the shim can report OOMKilled to the kubelet.
func (a *Agent) GetOOMEvent(ctx context.Context, _ *pb.GetOOMEventRequest) (*pb.OOMEvent, error) {
	select {
	case id := <-a.oom:
		return &pb.OOMEvent{ContainerId: id}, nil
	case <-ctx.Done():
		return nil, toStatus(ctx.Err())
	}
}

// watchOOM forwards a container's OOM kills to GetOOMEvent. An event nobody
// collects does not block the container: the oldest are dropped.
func (a *Agent) watchOOM(c *container) {
	ch, err := c.lc.NotifyOOM()
	if err != nil {
		a.log.Warn("no OOM notifications", "container", c.id, "err", err)
		return
	}
	go func() {
		for range ch {
			select {
			case a.oom <- c.id:
			default:
				a.log.Warn("OOM event dropped: nobody collects them", "container", c.id)
			}
		}
	}()
}
