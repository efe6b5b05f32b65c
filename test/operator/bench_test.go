package operator

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cocoon-cc/cocoon/internal/testutil/dbtest"
	"github.com/cocoon-cc/cocoon/internal/testutil/k8stest"
)

// BenchmarkCocoonRuntimeReady: from creating a CocoonRuntime to the node
// labelled and the CocoonRuntime Ready (pulling the guest, installing,
// restarting containerd); each round removes it again, untimed.
func BenchmarkCocoonRuntimeReady(b *testing.B) {
	c := k8stest.Get(b)
	installOperator(b, c)
	refs := pushImages(b, c)
	for b.Loop() {
		c.Apply(b, cocoonRuntime(c, refs["guest-a"], "qemu"))
		waitRuntimeReady(b, c, refs["guest-a"])
		b.StopTimer()
		if _, err := c.TryKubectl("", "delete", "cocoonruntime", "node", "--timeout=4m"); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}

// BenchmarkKeyBrokerReady: from creating a KeyBroker on PostgreSQL (a new
// database each round) to it Ready: certificate and keys generated, the
// KBS pod started, two resources, a policy and four reference values
// registered; each round deletes it again, untimed.
func BenchmarkKeyBrokerReady(b *testing.B) {
	c := k8stest.Get(b)
	installOperator(b, c)
	pg := dbtest.StartPostgresOn(b, c.HostIP)
	c.Apply(b, keyBrokerObjects("a secret", pg.Password))
	defer c.TryKubectl("", "delete", "secret/demo", "secret/team-db", "secret/pg", "configmap/kbs-policy")
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		db := fmt.Sprintf("kbs_bench_%d", i)
		pg.CreateDB(b, db)
		b.StartTimer()
		c.Apply(b, postgresKeyBroker(pg, db, 1))
		waitKB(b, c, "kbs", `{.status.conditions[?(@.type=="Ready")].status}`, "True")
		b.StopTimer()
		c.Kubectl(b, "delete", "keybroker", "kbs", "--timeout=2m")
		c.WaitGone(b, "the KBS pods", func() []string {
			out, _ := c.TryKubectl("", "get", "pods", "-l", "app.kubernetes.io/instance=kbs", "-o", "name")
			return strings.Fields(out)
		})
		b.StartTimer()
	}
}

// BenchmarkContainerdRestart: with N Cocoon pods running, the installer
// restarts containerd (a flavour added, then removed); every VM survives.
// pause-ms is the longest time CRI did not answer, as the kubelet sees it.
func BenchmarkContainerdRestart(b *testing.B) {
	const pods = 3
	c := k8stest.Get(b)
	installOperator(b, c)
	refs := pushImages(b, c)
	c.Apply(b, cocoonRuntime(c, refs["guest-a"], "qemu"))
	waitRuntimeReady(b, c, refs["guest-a"])
	defer c.TryKubectl("", "delete", "cocoonruntime", "node", "--timeout=4m")
	c.Apply(b, cocoonDeployment(b, c, pods))
	defer c.Delete(b, cocoonDeployment(b, c, pods))
	c.Kubectl(b, "rollout", "status", "deployment/coco", "--timeout=6m")
	running := vms(c)
	rs := c.Containerd.RuntimeService(b)
	var worst time.Duration
	flavours := [][]string{{"qemu", "local"}, {"qemu"}}
	i := 0
	for b.Loop() {
		starts := c.Containerd.Starts()
		stop := make(chan time.Duration)
		go func() { stop <- longestGap(rs, func() bool { return c.Containerd.Starts() > starts }) }()
		c.Apply(b, cocoonRuntime(c, refs["guest-a"], flavours[i%2]...))
		i++
		gap := <-stop
		waitRuntimeReady(b, c, refs["guest-a"])
		worst = max(worst, gap)
	}
	for pid := range running {
		if syscall.Kill(pid, 0) != nil {
			b.Errorf("VM %d did not survive", pid)
		}
	}
	b.ReportMetric(float64(worst.Milliseconds()), "pause-ms")
	b.ReportMetric(pods, "pods")
}

// longestGap polls CRI's Version every 10 ms until restarted says
// containerd was started again and CRI answers, and returns the longest
// time without an answer.
func longestGap(rs interface {
	Version(context.Context, string) (*cri.VersionResponse, error)
}, restarted func() bool) time.Duration {
	last, worst := time.Now(), time.Duration(0)
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := rs.Version(ctx, "")
		cancel()
		if err == nil {
			worst = max(worst, time.Since(last))
			last = time.Now()
			if restarted() {
				return worst
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	return worst
}
