package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

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
// Memory blocks the kernel adds later (ACPI hotplug is asynchronous) come
// online by themselves from the first call on; vCPUs do not, so with Wait
// the call retries until NbCpus of them came online or ctx ends.
func (a *Agent) OnlineCPUMem(ctx context.Context, r *pb.OnlineCPUMemRequest) (*emptypb.Empty, error) {
	if !r.CpuOnly {
		if err := os.WriteFile("/sys/devices/system/memory/auto_online_blocks", []byte("online"), 0); err != nil &&
			!errors.Is(err, os.ErrNotExist) {
			return nil, toStatus(fmt.Errorf("memory auto-online: %w", err))
		}
		if _, err := online("/sys/devices/system/memory/memory*/online"); err != nil {
			return nil, toStatus(err)
		}
	}
	for n := 0; ; {
		done, err := online("/sys/devices/system/cpu/cpu*/online")
		if err != nil {
			return nil, toStatus(err)
		}
		if n += done; !r.Wait || n >= int(r.NbCpus) {
			return empty(), nil
		}
		select {
		case <-ctx.Done():
			return nil, toStatus(fmt.Errorf("%d of %d vCPUs came online: %w", n, r.NbCpus, ctx.Err()))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// online writes 1 to every online file of glob that reads 0 and says how
// many it changed.
func online(glob string) (int, error) {
	files, err := filepath.Glob(glob)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil || strings.TrimSpace(string(b)) != "0" {
			continue
		}
		if err := os.WriteFile(f, []byte("1"), 0); err != nil {
			return n, fmt.Errorf("online %s: %w", filepath.Dir(f), err)
		}
		n++
	}
	return n, nil
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
