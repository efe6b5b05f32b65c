package shim

import (
	"errors"
	"strings"
	"testing"

	v1 "github.com/containerd/cgroups/v3/cgroup1/stats"
	v2 "github.com/containerd/cgroups/v3/cgroup2/stats"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
)

func TestPodSize(t *testing.T) {
	c, err := ParseConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	r := newPodResources(c)
	if v, m, err := r.bootSize(nil); err != nil || v != 1 || m != 384 {
		t.Fatalf("default boot size %d %d %v, want 1 vCPU, 384 MiB", v, m, err)
	}
	// The kubelet's sum of limits: 1.5 CPUs and 300 MiB.
	v, m, err := r.bootSize(map[string]string{annotationSandboxCPUQuota: "150000", annotationSandboxCPUPeriod: "100000",
		annotationSandboxMemory: "314572800"})
	if err != nil || v != 3 || m != 684 {
		t.Fatalf("boot size %d %d %v, want 3 vCPUs, 684 MiB", v, m, err)
	}
	for _, bad := range []string{"x", "-5", "1e9", "99999999999999999999"} {
		if _, _, err := r.bootSize(map[string]string{annotationSandboxMemory: bad}); !errors.Is(err, ErrConfig) {
			t.Errorf("memory %q: %v", bad, err)
		}
	}
	quota, period, limit := int64(200000), uint64(100000), int64(300<<20)
	if v, m := r.set("a", &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: &quota, Period: &period},
		Memory: &specs.LinuxMemory{Limit: &limit}}); v != 3 || m != 684 {
		t.Fatalf("size with a: %d %d", v, m)
	}
	half := int64(50000)
	if v, m := r.set("b", &specs.LinuxResources{CPU: &specs.LinuxCPU{Quota: &half, Period: &period}}); v != 4 || m != 684 {
		t.Fatalf("size with a and b: %d %d", v, m)
	}
	r.forget("a")
	if v, m := r.set("b", &specs.LinuxResources{}); v != 1 || m != 384 {
		t.Fatalf("size without limits: %d %d", v, m)
	}
}

func TestParseCgroupsPath(t *testing.T) {
	for in, want := range map[string]string{
		"/kubepods/besteffort/pod1/abc": "/kubepods/besteffort/pod1/abc",
		"kubepods-besteffort-pod1.slice:cri-containerd:abc": "/kubepods.slice/kubepods-besteffort.slice/" +
			"kubepods-besteffort-pod1.slice/cri-containerd-abc.scope",
	} {
		cg, inner, err := parseCgroupsPath(in)
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if inner != want || !cg.Systemd && cg.Path != want {
			t.Errorf("%s: path %q %q, want %q", in, cg.Path, inner, want)
		}
	}
	for _, bad := range []string{"relative/x", "/a/../b", "/", "/a/", "a.slice:p:", "a.slice:p/x:n", "x:p:n", "/a\x00b"} {
		if _, _, err := parseCgroupsPath(bad); !errors.Is(err, ErrCgroupsPath) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func FuzzParseCgroupsPath(f *testing.F) {
	f.Add("/kubepods/pod1/abc")
	f.Add("kubepods-pod1.slice:cri-containerd:abc")
	f.Fuzz(func(t *testing.T, p string) {
		cg, inner, err := parseCgroupsPath(p)
		if err != nil {
			return
		}
		if inner == "" || inner[0] != '/' || strings.Contains(inner, "/../") || !cg.Systemd && cg.Path != inner {
			t.Fatalf("%q: path %q %q", p, cg.Path, inner)
		}
	})
}

func TestMetrics(t *testing.T) {
	cpu := &pb.CpuStats{CpuUsage: &pb.CpuUsage{TotalUsage: 5000, UsageInUsermode: 3000, UsageInKernelmode: 2000}}
	guest := &pb.CgroupStats{CpuStats: cpu, MemoryStats: &pb.MemoryStats{Usage: &pb.MemoryData{Usage: 100, Limit: 300},
		Stats: map[string]uint64{"anon": 60, "inactive_file": 30}}}
	m2, ok := metrics(guest).(*v2.Metrics)
	if !ok || m2.CPU.UsageUsec != 5 || m2.Memory.Usage != 100 || m2.Memory.UsageLimit != 300 ||
		m2.Memory.InactiveFile != 30 || m2.Memory.Anon != 60 {
		t.Fatalf("cgroup v2 metrics %+v", metrics(guest))
	}
	host := &pb.CgroupStats{CpuStats: cpu, MemoryStats: &pb.MemoryStats{Usage: &pb.MemoryData{Usage: 100},
		Stats: map[string]uint64{"total_inactive_file": 30, "rss": 50}}}
	m1, ok := metrics(host).(*v1.Metrics)
	if !ok || m1.CPU.Usage.Total != 5000 || m1.Memory.Usage.Usage != 100 || m1.Memory.TotalInactiveFile != 30 {
		t.Fatalf("cgroup v1 metrics %+v", metrics(host))
	}
	if _, ok := metrics(nil).(*v1.Metrics); !ok {
		t.Fatal("metrics of nothing")
	}
}
