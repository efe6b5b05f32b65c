package k8s

import (
	"bufio"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/agent/policy"
	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/cocoon-cc/cocoon/internal/testutil/k8stest"
)

// TestCocoonNetwork: a Deployment of the cocoon-qemu RuntimeClass serving
// HTTP behind a ClusterIP Service becomes Ready through the kubelet's TCP
// (startup) and HTTP (readiness) probes; another coco pod reaches it by
// its pod IP and through the Service (kube-proxy's rules on the node);
// kubectl port-forward reaches it too.
func TestCocoonNetwork(t *testing.T) {
	c := k8stest.Get(t)
	initdata := testutil.InitdataAnnotation(t, policy.AllowAll())
	manifests := `apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
      annotations: {io.katacontainers.config.hypervisor.cc_init_data: "` + initdata + `"}
    spec:
      runtimeClassName: cocoon-qemu
      automountServiceAccountToken: false
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: ` + c.Busybox(t) + `
        command: ["/bin/sh", "-c", "mkdir -p /www && echo hello-from-web > /www/index.html && exec /bin/busybox httpd -f -p 8080 -h /www"]
        ports: [{containerPort: 8080}]
        startupProbe: {tcpSocket: {port: 8080}, periodSeconds: 2, failureThreshold: 60}
        readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 2}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata:
  name: client
  namespace: default
  annotations: {io.katacontainers.config.hypervisor.cc_init_data: "` + initdata + `"}
spec:
  runtimeClassName: cocoon-qemu
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: ` + c.Busybox(t) + `, command: ["/bin/sleep", "100000"]}
`
	c.Apply(t, manifests)
	defer c.Delete(t, manifests)
	pods := c.WaitSelector(t, "default", "app=web") // Ready: both probes passed
	c.WaitReady(t, "default", "client")
	web := pods[0]
	podIP := c.Kubectl(t, "get", "pod", web, "-o", "jsonpath={.status.podIP}")
	svcIP := c.Kubectl(t, "get", "service", "web", "-o", "jsonpath={.spec.clusterIP}")
	for _, target := range []string{podIP + " 8080", svcIP + " 80"} {
		out := c.Kubectl(t, "exec", "client", "--", "/bin/sh", "-c", "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 10 "+target)
		if !strings.HasSuffix(out, "\r\n\r\nhello-from-web\n") {
			t.Errorf("GET %s from the client pod: %q", target, out)
		}
	}

	// kubectl port-forward: the kubelet asks containerd, which dials
	// localhost:8080 in the pod's namespace on the node.
	pf := exec.Command(filepath.Join(k8stest.BinDir(), "kubectl"), "--kubeconfig", c.Kubeconfig, "port-forward", "pod/"+web, ":8080")
	stdout, err := pf.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := pf.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { pf.Process.Kill(); pf.Wait() }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	m := regexp.MustCompile(`Forwarding from (127\.0\.0\.1:\d+) -> 8080`).FindStringSubmatch(line)
	if err != nil || m == nil {
		t.Fatalf("kubectl port-forward: %q %v", line, err)
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Get("http://" + m[1] + "/")
	if err != nil {
		t.Fatalf("GET through kubectl port-forward: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "hello-from-web\n" {
		t.Errorf("GET through kubectl port-forward: %q", body)
	}
}

// TestCocoonLocalNetwork: a cocoon-local pod lives in the network
// namespace CNI prepared: its container has the pod IP, and the kubelet's
// HTTP readiness probe reaches it there from the node.
func TestCocoonLocalNetwork(t *testing.T) {
	c := k8stest.Get(t)
	pod := `apiVersion: v1
kind: Pod
metadata:
  name: local-web
  namespace: default
  annotations: {io.katacontainers.config.hypervisor.cc_init_data: "` + testutil.InitdataAnnotation(t, policy.AllowAll()) + `"}
spec:
  runtimeClassName: cocoon-local
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: ` + c.Busybox(t) + `
    command: ["/bin/sh", "-c", "mkdir -p /www && echo hello > /www/index.html && exec /bin/busybox httpd -f -p 8080 -h /www"]
    readinessProbe: {httpGet: {path: /, port: 8080}, periodSeconds: 1}
`
	c.Apply(t, pod)
	defer c.Delete(t, pod)
	c.WaitReady(t, "default", "local-web")
	podIP := c.Kubectl(t, "get", "pod", "local-web", "-o", "jsonpath={.status.podIP}")
	if out := c.Kubectl(t, "exec", "local-web", "--", "/bin/busybox", "ip", "-4", "-o", "addr", "show", "eth0"); !strings.Contains(out, " "+podIP+"/") {
		t.Errorf("the container's eth0 lacks the pod IP %s: %q", podIP, out)
	}
}
