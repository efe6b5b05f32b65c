package shim

import (
	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"

	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
)

// metrics converts the guest's cgroup statistics to the cgroup v1 metrics
// containerd's CRI plugin reads from a shim.
func metrics(s *pb.CgroupStats) *v1.Metrics {
	m := &v1.Metrics{}
	if s == nil {
		return m
	}
	if u := s.CpuStats.GetCpuUsage(); u != nil {
		m.CPU = &v1.CPUStat{Usage: &v1.CPUUsage{Total: u.TotalUsage, Kernel: u.UsageInKernelmode, User: u.UsageInUsermode,
			PerCPU: u.PercpuUsage}}
	}
	if ms := s.MemoryStats; ms != nil {
		entry := func(d *pb.MemoryData) *v1.MemoryEntry {
			if d == nil {
				return nil
			}
			return &v1.MemoryEntry{Limit: d.Limit, Usage: d.Usage, Max: d.MaxUsage, Failcnt: d.Failcnt}
		}
		m.Memory = &v1.MemoryStat{Cache: ms.Cache, RSS: ms.Stats["rss"], TotalInactiveFile: ms.Stats["total_inactive_file"],
			Usage: entry(ms.Usage), Swap: entry(ms.SwapUsage), Kernel: entry(ms.KernelUsage)}
	}
	if p := s.PidsStats; p != nil {
		m.Pids = &v1.PidsStat{Current: p.Current, Limit: p.Limit}
	}
	return m
}
