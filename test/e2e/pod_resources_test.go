package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	internalapi "k8s.io/cri-api/pkg/apis"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cocoon-cc/cocoon/agent/policy"
	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/cocoon-cc/cocoon/internal/testutil/containerdtest"
)

// podCgroupParent is a pod cgroup as the kubelet's cgroupfs driver names
// it, under a parent this test owns and removes.
func podCgroupParent(t *testing.T) string {
	t.Helper()
	top := fmt.Sprintf("/cocoon-e2e-%d", time.Now().UnixNano())
	t.Cleanup(func() {
		// What the shim made below it must be gone already; the parents
		// are the test's own (the kubelet's, in a cluster).
		dirs, _ := filepath.Glob("/sys/fs/cgroup/*" + top)
		dirs2, _ := filepath.Glob("/sys/fs/cgroup" + top)
		for _, d := range append(dirs, dirs2...) {
			os.Remove(filepath.Join(d, "besteffort", "pod-"+t.Name()))
			os.Remove(filepath.Join(d, "besteffort"))
			os.Remove(d)
		}
	})
	return top + "/besteffort/pod-" + t.Name()
}

// resourcePod runs a coco pod through CRI with its sandbox in the cgroup
// parent (CRI's linux.cgroup_parent), initdata allowing every agent call,
// and res as the sandbox's resources (the kubelet's sum of the limits).
func (e *podEnv) resourcePod(ctx context.Context, t *testing.T, rs internalapi.RuntimeService, name, parent string,
	res *cri.LinuxContainerResources) (string, *cri.PodSandboxConfig) {
	t.Helper()
	sandbox := &cri.PodSandboxConfig{
		Metadata:    &cri.PodSandboxMetadata{Name: name, Uid: "uid-" + name, Namespace: "default"},
		Hostname:    name,
		Annotations: map[string]string{"io.katacontainers.config.hypervisor.cc_init_data": testutil.InitdataAnnotation(t, policy.AllowAll())},
		Linux: &cri.LinuxPodSandboxConfig{CgroupParent: parent, Resources: res,
			SecurityContext: &cri.LinuxSandboxSecurityContext{NamespaceOptions: &cri.NamespaceOption{Network: cri.NamespaceMode_POD}}},
	}
	podID, err := rs.RunPodSandbox(ctx, sandbox, "coco")
	if err != nil {
		t.Fatalf("RunPodSandbox: %v\n%s", err, e.ctrd.Logs())
	}
	t.Cleanup(func() {
		rs.StopPodSandbox(context.Background(), podID)
		rs.RemovePodSandbox(context.Background(), podID)
	})
	if _, err := e.ctrd.ImageService(t).PullImage(ctx, &cri.ImageSpec{Image: e.image}, nil, sandbox); err != nil {
		t.Fatal(err)
	}
	return podID, sandbox
}

// runLimited creates and starts a container running cmd with a memory
// limit (MiB) and a CPU limit (millicpus).
func runLimited(ctx context.Context, t *testing.T, rs internalapi.RuntimeService, e *podEnv, podID string,
	sandbox *cri.PodSandboxConfig, name string, memMiB, milliCPUs int64, cmd ...string) string {
	t.Helper()
	cid, err := rs.CreateContainer(ctx, podID, &cri.ContainerConfig{Metadata: &cri.ContainerMetadata{Name: name},
		Image: &cri.ImageSpec{Image: e.image}, Command: cmd,
		Linux: &cri.LinuxContainerConfig{Resources: &cri.LinuxContainerResources{MemoryLimitInBytes: memMiB << 20,
			CpuPeriod: 100000, CpuQuota: milliCPUs * 100}}}, sandbox)
	if err != nil {
		t.Fatalf("CreateContainer %s: %v\n%s", name, err, e.ctrd.Logs())
	}
	if err := rs.StartContainer(ctx, cid); err != nil {
		t.Fatal(err)
	}
	return cid
}

// inCgroup says whether process pid is in the cgroup whose path ends with
// path in its memory hierarchy (cgroup v1) or the unified one.
func inCgroup(t *testing.T, pid int, path string) bool {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) == 3 && (f[1] == "memory" || f[1] == "") && f[2] == path {
			return true
		}
	}
	return false
}

// sandboxPid is the pid of a process whose name starts with name among
// the coco shims serving the containerd at address and their children
// (containerd-shim, qemu-system), 0 if none.
func sandboxPid(address, name string) int {
	for _, p := range containerdtest.SandboxProcesses(address) {
		pid, comm, _ := strings.Cut(p, ":")
		if strings.HasPrefix(comm, name) {
			n, _ := strconv.Atoi(pid)
			return n
		}
	}
	return 0
}

// checkStats: CRI's ContainerStats, which containerd builds from the
// shim's Stats, show the container's CPU time and memory.
func checkStats(ctx context.Context, t *testing.T, rs internalapi.RuntimeService, cid string) {
	t.Helper()
	st, err := rs.ContainerStats(ctx, cid)
	if err != nil {
		t.Fatal(err)
	}
	if st.GetCpu().GetUsageCoreNanoSeconds().GetValue() == 0 || st.GetMemory().GetWorkingSetBytes().GetValue() == 0 ||
		st.GetMemory().GetUsageBytes().GetValue() == 0 {
		t.Errorf("ContainerStats: %v", st)
	}
}

// TestPodResourcesLocal: on the local backend a pod's shim and agent run
// in the pod's cgroup, which is gone after the pod; a container's stats
// are real.
func TestPodResourcesLocal(t *testing.T) {
	e := newPodEnv(t)
	rs := e.ctrd.RuntimeService(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	parent := podCgroupParent(t)
	podID, sandbox := e.resourcePod(ctx, t, rs, "res-local", parent, nil)
	cid := runLimited(ctx, t, rs, e, podID, sandbox, "c", 64, 500, "/bin/sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 1000")
	cgroup := parent + "/" + podID
	for _, p := range containerdtest.SandboxProcesses(e.ctrd.Address) {
		pid, _ := strconv.Atoi(strings.Split(p, ":")[0])
		if (strings.HasSuffix(p, ":containerd-shim") || strings.HasSuffix(p, ":coco-agent")) && !inCgroup(t, pid, cgroup) {
			t.Errorf("%s is not in the pod's cgroup %s", p, cgroup)
		}
	}
	time.Sleep(500 * time.Millisecond)
	checkStats(ctx, t, rs, cid)
	removeResourcePod(ctx, t, rs, e, podID, cgroup)
}

// guestSize is what a container sees of its VM: vCPUs and MemTotal (KiB),
// and its cgroup's memory.max and cpu.max.
func guestSize(ctx context.Context, t *testing.T, rs internalapi.RuntimeService, cid string) (cpus, memKiB int, limits string) {
	t.Helper()
	out, _, err := rs.ExecSync(ctx, cid, []string{"/bin/sh", "-c",
		"grep -c ^processor /proc/cpuinfo; grep MemTotal /proc/meminfo; cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/cpu.max"}, time.Minute)
	if err != nil {
		t.Fatalf("exec: %v", err)
	}
	lines := strings.SplitN(string(out), "\n", 3)
	if len(lines) < 3 {
		t.Fatalf("exec output %q", out)
	}
	cpus, _ = strconv.Atoi(lines[0])
	fmt.Sscanf(lines[1], "MemTotal: %d kB", &memKiB)
	return cpus, memKiB, lines[2]
}

// TestPodResourcesVM: a pod's VM is the default size (1 vCPU, 384 MiB)
// plus its containers' limits, at boot from the sandbox's resources (as
// the kubelet gives them) and by memory hotplug when a container asks for
// more; QEMU runs in the pod's cgroup; the guest enforces the limits (an
// update changes them, a container over its memory limit is OOMKilled);
// CRI's stats are the guest's.
func TestPodResourcesVM(t *testing.T) {
	kernel, initrd := testutil.Guest(t)
	e := newPodEnvWith(t, "[sandbox]\nbackend = \"qemu\"\nstart_timeout = \"120s\"\n[qemu]\naccel = \"tcg\"\nkernel = \""+
		kernel+"\"\ninitrd = \""+initrd+"\"\n")
	rs := e.ctrd.RuntimeService(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	parent := podCgroupParent(t)
	// The kubelet's sum of the pod's limits: 2 CPUs, 300 MiB.
	podID, sandbox := e.resourcePod(ctx, t, rs, "res-vm", parent, &cri.LinuxContainerResources{CpuPeriod: 100000,
		CpuQuota: 200000, MemoryLimitInBytes: 300 << 20})
	cgroup := parent + "/" + podID
	qemu, shim := sandboxPid(e.ctrd.Address, "qemu-system"), sandboxPid(e.ctrd.Address, "containerd-shim")
	if qemu == 0 || shim == 0 || !inCgroup(t, qemu, cgroup) || !inCgroup(t, shim, cgroup) {
		t.Errorf("QEMU (%d) and the shim (%d) are not in the pod's cgroup %s", qemu, shim, cgroup)
	}

	// 3 vCPUs and 684 MiB (MemTotal is less: the guest kernel keeps some).
	cid := runLimited(ctx, t, rs, e, podID, sandbox, "big", 300, 2000, "/bin/sleep", "1000")
	cpus, mem0, limits := guestSize(ctx, t, rs, cid)
	if want := fmt.Sprintf("%d\n200000 100000\n", 300<<20); cpus != 3 || mem0 < 528<<10 || mem0 > 684<<10 || limits != want {
		t.Errorf("guest: %d vCPUs, MemTotal %d KiB, cgroup limits %q; want 3 vCPUs, 528-684 MiB, %q", cpus, mem0, limits, want)
	}
	checkStats(ctx, t, rs, cid)

	// A container beyond the pod's announced limits: the VM grows by a
	// 128 MiB memory block. Over its own limit, the container is killed by
	// the guest's OOM killer, and CRI says so.
	hog := runLimited(ctx, t, rs, e, podID, sandbox, "hog", 32, 0, "/bin/busybox", "dd", "if=/dev/zero", "of=/dev/null", "bs=100M", "count=1")
	if st := waitExited(ctx, t, rs, hog); st.Reason != "OOMKilled" {
		t.Errorf("the memory hog exited with %d, reason %q; want OOMKilled", st.ExitCode, st.Reason)
	}
	if _, mem1, _ := guestSize(ctx, t, rs, cid); mem1 != mem0+128<<10 {
		t.Errorf("MemTotal %d KiB after growing, want %d", mem1, mem0+128<<10)
	}

	// The kubelet's in-place resize changes the container's cgroup in the
	// guest.
	if err := rs.UpdateContainerResources(ctx, cid, &cri.ContainerResources{Linux: &cri.LinuxContainerResources{
		MemoryLimitInBytes: 200 << 20, CpuPeriod: 100000, CpuQuota: 100000}}); err != nil {
		t.Fatalf("UpdateContainerResources: %v", err)
	}
	if _, _, limits := guestSize(ctx, t, rs, cid); limits != fmt.Sprintf("%d\n100000 100000\n", 200<<20) {
		t.Errorf("limits after the update: %q", limits)
	}

	removeResourcePod(ctx, t, rs, e, podID, cgroup)
}

// BenchmarkPodOverhead measures what an idle coco pod costs the host (a
// RuntimeClass's overhead.podFixed): a CRI pod in a TCG VM with the
// default guest memory and one sleeping container, a few seconds after
// its start; the RSS of its shim and QEMU, and the memory its host cgroup
// is charged (what the kubelet and the scheduler account).
func BenchmarkPodOverhead(b *testing.B) {
	kernel, initrd := testutil.Guest(b)
	e := newPodEnvWith(b, "[sandbox]\nbackend = \"qemu\"\nstart_timeout = \"120s\"\n[qemu]\naccel = \"tcg\"\nkernel = \""+
		kernel+"\"\ninitrd = \""+initrd+"\"\n")
	rs := e.ctrd.RuntimeService(b)
	ctx := context.Background()
	top := fmt.Sprintf("/cocoon-bench-%d", time.Now().UnixNano())
	b.Cleanup(func() {
		dirs, _ := filepath.Glob("/sys/fs/cgroup/*" + top)
		for _, d := range dirs {
			os.Remove(d)
		}
	})
	var rss, charged int64
	for i := 0; i < b.N; i++ {
		sandbox := &cri.PodSandboxConfig{
			Metadata: &cri.PodSandboxMetadata{Name: fmt.Sprintf("idle-%d", i), Uid: fmt.Sprintf("idle-%d", i), Namespace: "default"},
			Linux: &cri.LinuxPodSandboxConfig{CgroupParent: top, SecurityContext: &cri.LinuxSandboxSecurityContext{
				NamespaceOptions: &cri.NamespaceOption{Network: cri.NamespaceMode_POD}}},
		}
		podID, err := rs.RunPodSandbox(ctx, sandbox, "coco")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := e.ctrd.ImageService(b).PullImage(ctx, &cri.ImageSpec{Image: e.image}, nil, sandbox); err != nil {
			b.Fatal(err)
		}
		cid, err := rs.CreateContainer(ctx, podID, &cri.ContainerConfig{Metadata: &cri.ContainerMetadata{Name: "c"},
			Image: &cri.ImageSpec{Image: e.image}, Command: []string{"/bin/sleep", "1000"}}, sandbox)
		if err != nil {
			b.Fatal(err)
		}
		if err := rs.StartContainer(ctx, cid); err != nil {
			b.Fatal(err)
		}
		time.Sleep(5 * time.Second)
		rss = podRSS(e.ctrd.Address)
		charged = cgroupMemory(top + "/" + podID)
		if err := rs.StopPodSandbox(ctx, podID); err != nil {
			b.Fatal(err)
		}
		if err := rs.RemovePodSandbox(ctx, podID); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(rss)/(1<<20), "MiB-rss/pod")
	b.ReportMetric(float64(charged)/(1<<20), "MiB-cgroup/pod")
}

// cgroupMemory is the memory a host cgroup is charged (cgroup v1 or v2).
func cgroupMemory(path string) int64 {
	for _, f := range []string{"/sys/fs/cgroup/memory" + path + "/memory.usage_in_bytes", "/sys/fs/cgroup" + path + "/memory.current"} {
		if b, err := os.ReadFile(f); err == nil {
			n, _ := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
			return n
		}
	}
	return 0
}

// removeResourcePod removes a pod and checks that nothing of it is left,
// its host cgroup included.
func removeResourcePod(ctx context.Context, t *testing.T, rs internalapi.RuntimeService, e *podEnv, podID, cgroup string) {
	t.Helper()
	if err := rs.StopPodSandbox(ctx, podID); err != nil {
		t.Fatal(err)
	}
	if err := rs.RemovePodSandbox(ctx, podID); err != nil {
		t.Fatal(err)
	}
	assertNoLeftovers(t, e.ctrd)
	if dirs, _ := filepath.Glob("/sys/fs/cgroup/*" + cgroup); len(dirs) > 0 {
		t.Errorf("the pod's cgroup is left: %v", dirs)
	}
}
