// Package k8s tests Cocoon under a real Kubernetes node (k8stest): pods of
// Cocoon's RuntimeClasses next to runc pods, driven by kubectl.
package k8s

import (
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/agent/policy"
	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/cocoon-cc/cocoon/internal/testutil/k8stest"
)

func TestMain(m *testing.M) { os.Exit(k8stest.Main(m)) }

// TestRuncPod: a plain pod (the default runtime, runc) runs beside
// Cocoon's, with its logs and exec.
func TestRuncPod(t *testing.T) {
	c := k8stest.Get(t)
	pod := `apiVersion: v1
kind: Pod
metadata: {name: plain, namespace: default}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: ` + c.Busybox(t) + `
    command: ["/bin/sh", "-c", "echo hello from runc; exec sleep 1000"]
`
	c.Apply(t, pod)
	c.WaitReady(t, "default", "plain")
	c.Eventually(t, "kubectl logs", func() bool { return strings.Contains(c.Kubectl(t, "logs", "plain"), "hello from runc") })
	if out := c.Kubectl(t, "exec", "plain", "--", "cat", "/proc/1/cmdline"); out != "sleep\x001000\x00" {
		t.Errorf("kubectl exec: %q", out)
	}
	uid := c.Kubectl(t, "get", "pod", "plain", "-o", "jsonpath={.metadata.uid}")
	c.Delete(t, pod)
	c.WaitGone(t, "pod plain", func() []string { return c.PodLeftovers(uid) })
}

// TestCocoonDeployment: a Deployment of the cocoon-qemu RuntimeClass runs
// its pod in a QEMU VM; under a policy allowing them, kubectl logs and exec
// reach the container; deleting it leaves no shim, VM, mount or cgroup.
func TestCocoonDeployment(t *testing.T) {
	c := k8stest.Get(t)
	deploy := `apiVersion: apps/v1
kind: Deployment
metadata: {name: coco, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: coco}}
  template:
    metadata:
      labels: {app: coco}
      annotations:
        io.katacontainers.config.hypervisor.cc_init_data: "` + testutil.InitdataAnnotation(t, policy.AllowAll()) + `"
    spec:
      runtimeClassName: cocoon-qemu
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: ` + c.Busybox(t) + `
        command: ["/bin/sh", "-c", "echo hello from $(cat /proc/sys/kernel/osrelease); exec sleep 1000"]
`
	c.Apply(t, deploy)
	pods := c.WaitSelector(t, "default", "app=coco")
	if len(pods) != 1 {
		t.Fatalf("pods %v", pods)
	}
	pod := pods[0]
	// The RuntimeClass's overhead is the pod's.
	if out := c.Kubectl(t, "get", "pod", pod, "-o", "jsonpath={.spec.overhead.memory}"); out != "576Mi" {
		t.Errorf("pod overhead memory %q, want the RuntimeClass's 576Mi", out)
	}
	// The output reaches the log as the shim reads it from the guest.
	c.Eventually(t, "the guest kernel's release in kubectl logs", func() bool {
		return strings.Contains(c.Kubectl(t, "logs", pod), "hello from 6.")
	})
	if out := c.Kubectl(t, "exec", pod, "--", "cat", "/proc/1/cmdline"); out != "sleep\x001000\x00" {
		t.Errorf("kubectl exec: %q", out)
	}
	if len(c.SandboxProcesses()) == 0 {
		t.Error("no coco shim or VM runs the pod")
	}
	uid := c.Kubectl(t, "get", "pod", pod, "-o", "jsonpath={.metadata.uid}")
	c.Delete(t, deploy)
	c.Kubectl(t, "wait", "--for=delete", "pod/"+pod, "--timeout=3m")
	c.WaitGone(t, "coco shims and VMs", c.SandboxProcesses)
	c.WaitGone(t, "pod "+pod, func() []string { return c.PodLeftovers(uid) })
}

// TestRuntimeClasses: the four RuntimeClasses are installed; a pod needing
// SEV-SNP is not scheduled on a node without it.
func TestRuntimeClasses(t *testing.T) {
	c := k8stest.Get(t)
	out := c.Kubectl(t, "get", "runtimeclass", "-o", "jsonpath={range .items[*]}{.metadata.name}={.handler} {end}")
	for _, rc := range []string{"cocoon-qemu", "cocoon-qemu-snp", "cocoon-qemu-tdx", "cocoon-local"} {
		if !strings.Contains(out, rc+"="+rc+" ") {
			t.Errorf("RuntimeClass %s missing: %s", rc, out)
		}
	}
	pod := `apiVersion: v1
kind: Pod
metadata: {name: snp, namespace: default}
spec:
  runtimeClassName: cocoon-qemu-snp
  containers:
  - {name: c, image: ` + c.Busybox(t) + `}
`
	c.Apply(t, pod)
	defer c.Delete(t, pod)
	if out := c.Kubectl(t, "get", "pod", "snp", "-o", "jsonpath={.spec.nodeSelector}"); !strings.Contains(out, "cocoon.io/runtime-qemu-snp") {
		t.Errorf("the RuntimeClass's node selector is not the pod's: %s", out)
	}
	c.Kubectl(t, "wait", "--for=condition=PodScheduled=false", "pod/snp", "--timeout=1m")
}

// TestRuncPodNetwork: the harness's network as the pod networking tests
// need it: a pod's IP and its Service's cluster IP (through kube-proxy's
// rules on the node) answer from the test process.
func TestRuncPodNetwork(t *testing.T) {
	c := k8stest.Get(t)
	manifests := `apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default, labels: {app: web}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: ` + c.Busybox(t) + `
    command: ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/etc"]
    ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
`
	c.Apply(t, manifests)
	defer c.Delete(t, manifests)
	c.WaitReady(t, "default", "web")
	podIP := c.Kubectl(t, "get", "pod", "web", "-o", "jsonpath={.status.podIP}")
	clusterIP := c.Kubectl(t, "get", "service", "web", "-o", "jsonpath={.spec.clusterIP}")
	for _, url := range []string{"http://" + podIP + ":8080/group", "http://" + clusterIP + "/group"} {
		c.Eventually(t, "GET "+url, func() bool { return strings.Contains(httpGet(url), "nogroup") })
	}
}

// httpGet is the body a GET of url answers, or the error.
func httpGet(url string) string {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
