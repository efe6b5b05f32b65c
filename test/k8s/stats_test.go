package k8s

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/cocoon-cc/cocoon/internal/testutil/k8stest"
)

// summary is the part of the kubelet's /stats/summary (stats/v1alpha1)
// that kubectl top and the metrics server read.
type summary struct {
	Pods []struct {
		PodRef struct {
			Name, Namespace string
		} `json:"podRef"`
		usage
		Containers []struct {
			Name string `json:"name"`
			usage
		} `json:"containers"`
	} `json:"pods"`
}

type usage struct {
	CPU *struct {
		UsageNanoCores       *uint64 `json:"usageNanoCores"`
		UsageCoreNanoSeconds *uint64 `json:"usageCoreNanoSeconds"`
	} `json:"cpu"`
	Memory *struct {
		WorkingSetBytes *uint64 `json:"workingSetBytes"`
	} `json:"memory"`
}

// cpu is the CPU time used so far and the memory working set, 0 where
// the kubelet reports none.
func (u usage) values() (cpu, mem uint64) {
	if u.CPU != nil && u.CPU.UsageCoreNanoSeconds != nil {
		cpu = *u.CPU.UsageCoreNanoSeconds
	}
	if u.Memory != nil && u.Memory.WorkingSetBytes != nil {
		mem = *u.Memory.WorkingSetBytes
	}
	return cpu, mem
}

// podUsage reads the kubelet's summary for pod ns/name: the pod's CPU time
// and working set (its host cgroup: QEMU and the shim for a Cocoon pod) and
// those of its container (the guest's cgroup, through CRI's container
// stats). An error says what is missing.
func podUsage(c *k8stest.Cluster, ns, name, container string) (podCPU, podMem, ctrCPU, ctrMem uint64, err error) {
	out, err := c.TryKubectl("", "get", "--raw", "/api/v1/nodes/"+k8stest.NodeName+"/proxy/stats/summary")
	if err != nil {
		return 0, 0, 0, 0, err
	}
	var s summary
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		return 0, 0, 0, 0, fmt.Errorf("stats/summary: %w", err)
	}
	for _, p := range s.Pods {
		if p.PodRef.Namespace != ns || p.PodRef.Name != name {
			continue
		}
		podCPU, podMem = p.values()
		for _, ctr := range p.Containers {
			if ctr.Name == container {
				ctrCPU, ctrMem = ctr.values()
				return podCPU, podMem, ctrCPU, ctrMem, nil
			}
		}
		return podCPU, podMem, 0, 0, fmt.Errorf("stats/summary: no container %s in pod %s/%s", container, ns, name)
	}
	return 0, 0, 0, 0, fmt.Errorf("stats/summary: no pod %s/%s", ns, name)
}

// TestCocoonPodStats: what kubectl top and the metrics server read, the
// kubelet's /stats/summary, has a cocoon-qemu pod's CPU and memory: the
// pod's from its host cgroup, where the shim runs QEMU (so its memory is at
// least the guest's order of magnitude), and its container's from the
// guest's cgroup, through the shim's Stats and CRI's container stats
// (under the default policy, which allows StatsContainerRequest).
func TestCocoonPodStats(t *testing.T) {
	c := k8stest.Get(t)
	pod := `apiVersion: v1
kind: Pod
metadata: {name: stats, namespace: default}
spec:
  runtimeClassName: cocoon-qemu
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: ` + c.Busybox(t) + `
    command: ["/bin/sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; exec sleep 1000"]
`
	c.Apply(t, pod)
	defer c.Delete(t, pod)
	c.WaitReady(t, "default", "stats")
	var podCPU, podMem, ctrCPU, ctrMem uint64
	var err error
	defer func() {
		if t.Failed() {
			t.Logf("last stats/summary: pod %d ns CPU, %d B; container %d ns CPU, %d B; %v", podCPU, podMem, ctrCPU, ctrMem, err)
		}
	}()
	// The kubelet's cadvisor finds the pod's cgroup at its next housekeeping.
	c.Eventually(t, "the pod's and its container's CPU and memory in stats/summary", func() bool {
		podCPU, podMem, ctrCPU, ctrMem, err = podUsage(c, "default", "stats", "c")
		return err == nil && podCPU > 0 && podMem >= 64<<20 && ctrCPU > 0 && ctrMem > 0
	})
	t.Logf("pod: %d ns CPU, %d MiB working set; container: %d ns CPU, %d KiB working set", podCPU, podMem>>20, ctrCPU, ctrMem>>10)
}
