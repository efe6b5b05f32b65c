package e2e

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cocoon-cc/cocoon/internal/testutil/containerdtest"
)

// BenchmarkPodStart measures, through CRI as the kubelet drives it, the
// latency from RunPodSandbox to the first container running with the coco
// runtime on the local backend (the pod pulls its image in the sandbox
// every time), and the host memory a pod's machinery costs: the RSS of its
// shim and agent. (runc pod sandboxes fail to start through Debian's
// containerd 1.6 and runc 1.1.5 on this machine's kernel, "can't get final
// child's PID from pipe"; BenchmarkContainerStart compares with runc
// through the task API instead.)
func BenchmarkPodStart(b *testing.B) {
	e := newPodEnv(b)
	rs, is := e.ctrd.RuntimeService(b), e.ctrd.ImageService(b)
	ctx := context.Background()
	if _, err := is.PullImage(ctx, &cri.ImageSpec{Image: e.image}, nil, nil); err != nil {
		b.Fatal(err)
	}
	for _, handler := range []string{"coco"} {
		b.Run("runtime="+handler, func(b *testing.B) {
			var total time.Duration
			var rss int64
			for i := 0; i < b.N; i++ {
				sandbox := &cri.PodSandboxConfig{
					Metadata: &cri.PodSandboxMetadata{Name: fmt.Sprintf("bench-%s-%d", handler, i), Uid: fmt.Sprintf("u-%s-%d", handler, i), Namespace: "default"},
					Linux: &cri.LinuxPodSandboxConfig{SecurityContext: &cri.LinuxSandboxSecurityContext{
						NamespaceOptions: &cri.NamespaceOption{Network: cri.NamespaceMode_POD}}},
				}
				cfg := &cri.ContainerConfig{Metadata: &cri.ContainerMetadata{Name: "c"}, Image: &cri.ImageSpec{Image: e.image},
					Command: []string{"/bin/sleep", "1000"}}
				start := time.Now()
				podID, err := rs.RunPodSandbox(ctx, sandbox, handler)
				if err != nil {
					b.Fatal(err)
				}
				cid, err := rs.CreateContainer(ctx, podID, cfg, sandbox)
				if err != nil {
					b.Fatal(err)
				}
				if err := rs.StartContainer(ctx, cid); err != nil {
					b.Fatal(err)
				}
				total += time.Since(start)
				rss = podRSS(e.ctrd.Address)
				if err := rs.StopPodSandbox(ctx, podID); err != nil {
					b.Fatal(err)
				}
				if err := rs.RemovePodSandbox(ctx, podID); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/pod")
			b.ReportMetric(float64(rss)/(1<<20), "MiB-rss/pod")
		})
	}
}

// podRSS sums the resident memory of the processes a pod adds on the
// host: its shim and the shim's children (agent, VM).
func podRSS(address string) int64 {
	var total int64
	for _, p := range containerdtest.SandboxProcesses(address) {
		b, err := os.ReadFile("/proc/" + strings.Split(p, ":")[0] + "/status")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
				total += kb << 10
			}
		}
	}
	return total
}

// BenchmarkContainerStart measures `ctr run -d` (create and start a task,
// ctr's own start-up included) with runc and with the coco runtime on the
// local backend in the same run: the price of a sandbox per container and
// of pulling the image inside it.
func BenchmarkContainerStart(b *testing.B) {
	e := newPodEnv(b)
	if out, err := e.ctrd.Ctr("images", "pull", "--plain-http", e.image); err != nil {
		b.Fatalf("pull: %v\n%s", err, out)
	}
	for _, runtime := range []string{"io.containerd.runc.v2", "io.containerd.coco.v2"} {
		b.Run("runtime="+runtime, func(b *testing.B) {
			var total time.Duration
			for i := 0; i < b.N; i++ {
				id := fmt.Sprintf("bench-%d", i)
				start := time.Now()
				out, err := e.ctrd.Ctr("run", "-d", "--runtime", runtime, "--runtime-config-path", e.cfg, e.image, id, "/bin/sleep", "1000")
				if err != nil {
					b.Fatalf("run: %v\n%s", err, out)
				}
				total += time.Since(start)
				e.ctrd.Ctr("task", "kill", "-s", "9", id)
				for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
					if _, err := e.ctrd.Ctr("task", "rm", id); err == nil {
						break
					}
				}
				if out, err := e.ctrd.Ctr("containers", "rm", id); err != nil {
					b.Fatalf("rm: %v\n%s", err, out)
				}
			}
			b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/container")
		})
	}
}
