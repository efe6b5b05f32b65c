package shim

import (
	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"

	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
)

// metrics converts a container's cgroup statistics from the sandbox to the
// metrics containerd's CRI plugin reads from a shim, of the cgroup version
// the container runs under, as containerd's runc shim reports its host's:
// cgroup v2 in a VM guest (its memory.stat keys: anon, file, ...), and the
// host's version for the local backend. CRI's working set is usage less
// inactive file pages.
func metrics(s *pb.CgroupStats) any {
	if _, unified := s.GetMemoryStats().GetStats()["anon"]; unified {
		return metricsV2(s)
	}
	return metricsV1(s)
}

func metricsV2(s *pb.CgroupStats) *v2.Metrics {
	m := &v2.Metrics{}
	if u := s.GetCpuStats().GetCpuUsage(); u != nil {
		m.CPU = &v2.CPUStat{UsageUsec: u.TotalUsage / 1000, UserUsec: u.UsageInUsermode / 1000,
			SystemUsec: u.UsageInKernelmode / 1000}
	}
	if ms := s.GetMemoryStats(); ms != nil {
		st := ms.Stats
		m.Memory = &v2.MemoryStat{Anon: st["anon"], File: st["file"], KernelStack: st["kernel_stack"], Slab: st["slab"],
			Sock: st["sock"], Shmem: st["shmem"], FileMapped: st["file_mapped"], FileDirty: st["file_dirty"],
			FileWriteback: st["file_writeback"], AnonThp: st["anon_thp"], InactiveAnon: st["inactive_anon"],
			ActiveAnon: st["active_anon"], InactiveFile: st["inactive_file"], ActiveFile: st["active_file"],
			Unevictable: st["unevictable"], SlabReclaimable: st["slab_reclaimable"],
			SlabUnreclaimable: st["slab_unreclaimable"], Pgfault: st["pgfault"], Pgmajfault: st["pgmajfault"],
			WorkingsetRefault: st["workingset_refault"], WorkingsetActivate: st["workingset_activate"],
			WorkingsetNodereclaim: st["workingset_nodereclaim"], Pgrefill: st["pgrefill"], Pgscan: st["pgscan"],
			Pgsteal: st["pgsteal"], Pgactivate: st["pgactivate"], Pgdeactivate: st["pgdeactivate"],
			Pglazyfree: st["pglazyfree"], Pglazyfreed: st["pglazyfreed"], ThpFaultAlloc: st["thp_fault_alloc"],
			ThpCollapseAlloc: st["thp_collapse_alloc"],
			Usage:            ms.GetUsage().GetUsage(), UsageLimit: ms.GetUsage().GetLimit(), MaxUsage: ms.GetUsage().GetMaxUsage(),
			SwapUsage: ms.GetSwapUsage().GetUsage(), SwapLimit: ms.GetSwapUsage().GetLimit()}
	}
	if p := s.GetPidsStats(); p != nil {
		m.Pids = &v2.PidsStat{Current: p.Current, Limit: p.Limit}
	}
	return m
}

func metricsV1(s *pb.CgroupStats) *v1.Metrics {
	m := &v1.Metrics{}
	if u := s.GetCpuStats().GetCpuUsage(); u != nil {
		m.CPU = &v1.CPUStat{Usage: &v1.CPUUsage{Total: u.TotalUsage, Kernel: u.UsageInKernelmode, User: u.UsageInUsermode,
			PerCPU: u.PercpuUsage}}
	}
	if ms := s.GetMemoryStats(); ms != nil {
		entry := func(d *pb.MemoryData) *v1.MemoryEntry {
			if d == nil {
				return nil
			}
			return &v1.MemoryEntry{Limit: d.Limit, Usage: d.Usage, Max: d.MaxUsage, Failcnt: d.Failcnt}
		}
		st := ms.Stats
		m.Memory = &v1.MemoryStat{Cache: ms.Cache, RSS: st["rss"], TotalRSS: st["total_rss"], TotalCache: st["total_cache"],
			InactiveFile: st["inactive_file"], TotalInactiveFile: st["total_inactive_file"], PgFault: st["pgfault"],
			TotalPgFault: st["total_pgfault"], PgMajFault: st["pgmajfault"], TotalPgMajFault: st["total_pgmajfault"],
			Usage: entry(ms.Usage), Swap: entry(ms.SwapUsage), Kernel: entry(ms.KernelUsage)}
	}
	if p := s.GetPidsStats(); p != nil {
		m.Pids = &v1.PidsStat{Current: p.Current, Limit: p.Limit}
	}
	return m
}
