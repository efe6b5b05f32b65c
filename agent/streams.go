package agent

import (
	"context"
	"os"

	"github.com/opencontainers/cgroups"
	"google.golang.org/protobuf/types/known/emptypb"

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
		if p.withhold() {
			a.log.Info("output withheld from the host", "container", r.ContainerId, "exec", r.ExecId, "reason", denied)
		}
		return &pb.ReadStreamResponse{Withheld: true}, nil
	}
	b, err := p.read(stream(p), r.Len)
	return &pb.ReadStreamResponse{Data: b}, toStatus(err)
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
