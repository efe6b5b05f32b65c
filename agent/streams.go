package agent

import (
	"context"
	"os"

	"github.com/opencontainers/cgroups"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/cocoon-cc/cocoon/guest/telemetry/feed"
	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
)

func empty() *emptypb.Empty { return &emptypb.Empty{} }

// WriteStdin writes to a process's input.
func (a *Agent) WriteStdin(ctx context.Context, r *pb.WriteStreamRequest) (*pb.WriteStreamResponse, error) {
	_, p, err := a.lookupProcess(r.ContainerId, r.ExecId)
	if err != nil {
		return nil, toStatus(err)
	}
	n, err := p.writeStdin(r.Data)
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.WriteStreamResponse{Len: uint32(n)}, nil
}

// ReadStdout blocks until the process wrote at least a byte, or returns
// empty data once its output ended. When the policy denies the read, or
// denied one before, the answer is empty and withheld at once, and the
// process's output is drained in the guest.
func (a *Agent) ReadStdout(ctx context.Context, r *pb.ReadStreamRequest) (*pb.ReadStreamResponse, error) {
	return a.readStream(ctx, r, func(p *process) *os.File { return p.stdout })
}

// ReadStderr is ReadStdout for the error stream (empty with a terminal).
func (a *Agent) ReadStderr(ctx context.Context, r *pb.ReadStreamRequest) (*pb.ReadStreamResponse, error) {
	return a.readStream(ctx, r, func(p *process) *os.File {
		if p.console != nil {
			return nil
		}
		return p.stderr
	})
}

func (a *Agent) readStream(ctx context.Context, r *pb.ReadStreamRequest, stream func(*process) *os.File) (*pb.ReadStreamResponse, error) {
	_, p, err := a.lookupProcess(r.ContainerId, r.ExecId)
	if err != nil {
		return nil, toStatus(err)
	}
	if denied := a.cfg.Policy.Denied(ctx); denied != nil || p.isWithheld() {
		return a.withheld(ctx, r, p, stream(p), denied), nil
	}
	b, err := p.read(stream(p), r.Len)
	return &pb.ReadStreamResponse{Data: b}, toStatus(err)
}

// withheld answers a read of output the host may not see. With telemetry
// the answer names the owner's endpoint the output goes to; a read of the
// stream after the first waits for the output's end and counts the lines
// the guest could not ship.
func (a *Agent) withheld(ctx context.Context, r *pb.ReadStreamRequest, p *process, stream *os.File, denied error) *pb.ReadStreamResponse {
	if p.withhold(a.cfg.Telemetry) {
		a.log.Info("output withheld from the host", "container", r.ContainerId, "exec", r.ExecId, "reason", denied)
	}
	first := p.answer(stream)
	resp := &pb.ReadStreamResponse{Withheld: true}
	if a.cfg.Telemetry == nil {
		return resp
	}
	resp.WithheldTo = a.cfg.Telemetry.Endpoint()
	if !first {
		select {
		case <-p.drained:
			resp.WithheldDropped = uint64(p.dropped.Load())
		case <-ctx.Done():
		}
	}
	return resp
}

// CloseStdin ends a process's input.
func (a *Agent) CloseStdin(ctx context.Context, r *pb.CloseStdinRequest) (*emptypb.Empty, error) {
	_, p, err := a.lookupProcess(r.ContainerId, r.ExecId)
	if err != nil {
		return nil, toStatus(err)
	}
	p.closeStdin()
	return empty(), nil
}

// TtyWinResize resizes a process's terminal.
func (a *Agent) TtyWinResize(ctx context.Context, r *pb.TtyWinResizeRequest) (*emptypb.Empty, error) {
	_, p, err := a.lookupProcess(r.ContainerId, r.ExecId)
	if err != nil {
		return nil, toStatus(err)
	}
	return empty(), toStatus(p.resize(r.Row, r.Column))
}

// StatsContainer reports the container's cgroup statistics.
func (a *Agent) StatsContainer(ctx context.Context, r *pb.StatsContainerRequest) (*pb.StatsContainerResponse, error) {
	c, err := a.lookup(r.ContainerId)
	if err != nil {
		return nil, toStatus(err)
	}
	st, err := c.lc.Stats()
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.StatsContainerResponse{CgroupStats: cgroupStats(st.CgroupStats)}, nil
}

func cgroupStats(s *cgroups.Stats) *pb.CgroupStats {
	if s == nil {
		return nil
	}
	cpu := s.CpuStats.CpuUsage
	mem := func(d cgroups.MemoryData) *pb.MemoryData {
		return &pb.MemoryData{Usage: d.Usage, MaxUsage: d.MaxUsage, Failcnt: d.Failcnt, Limit: d.Limit}
	}
	return &pb.CgroupStats{
		CpuStats: &pb.CpuStats{CpuUsage: &pb.CpuUsage{TotalUsage: cpu.TotalUsage, PercpuUsage: cpu.PercpuUsage,
			UsageInKernelmode: cpu.UsageInKernelmode, UsageInUsermode: cpu.UsageInUsermode}},
		MemoryStats: &pb.MemoryStats{Cache: s.MemoryStats.Cache, Usage: mem(s.MemoryStats.Usage),
			SwapUsage: mem(s.MemoryStats.SwapUsage), KernelUsage: mem(s.MemoryStats.KernelUsage),
			UseHierarchy: s.MemoryStats.UseHierarchy, Stats: s.MemoryStats.Stats},
		PidsStats: &pb.PidsStats{Current: s.PidsStats.Current, Limit: s.PidsStats.Limit},
	}
}

// ContainerStats are the containers' CPU time and memory, for the owner's
// metrics (feed.RunMetrics).
func (a *Agent) ContainerStats() []feed.ContainerStats {
	a.mu.Lock()
	cs := make([]*container, 0, len(a.containers))
	for _, c := range a.containers {
		if c != nil { // nil: being created
			cs = append(cs, c)
		}
	}
	a.mu.Unlock()
	var out []feed.ContainerStats
	for _, c := range cs {
		st, err := c.lc.Stats()
		if err != nil || st.CgroupStats == nil {
			continue // gone meanwhile
		}
		out = append(out, feed.ContainerStats{ID: c.id, Name: c.name,
			CPUNanos: st.CgroupStats.CpuStats.CpuUsage.TotalUsage, MemoryBytes: st.CgroupStats.MemoryStats.Usage.Usage})
	}
	return out
}
