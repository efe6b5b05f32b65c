package operator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cocoon-cc/cocoon/agent/policy"
	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/cocoon-cc/cocoon/internal/testutil/k8stest"
)

// cocoonRuntime is the test's CocoonRuntime: the node's containerd (the
// test's, restarted by signal: its supervisor starts it again) and an
// install directory in the cluster's.
func cocoonRuntime(c *k8stest.Cluster, guest string, flavours ...string) string {
	return fmt.Sprintf(`apiVersion: cocoon.io/v1alpha1
kind: CocoonRuntime
metadata: {name: node}
spec:
  flavours: [%s]
  guest: {image: %q, plainHTTP: true}
  shim: {startTimeout: 90s}
  installDir: %q
  containerd:
    configPath: %q
    dropInDir: %q
    address: %q
    restart: signal
`, strings.Join(flavours, ", "), guest, c.HostDir("cocoon"), c.Containerd.ConfigPath(),
		filepath.Join(filepath.Dir(c.Containerd.ConfigPath()), "conf.d"), c.Containerd.Address)
}

// cocoonDeployment is a Deployment of sleeping busybox pods in
// cocoon-qemu VMs, as JSON for kubectl.
func cocoonDeployment(t testing.TB, c *k8stest.Cluster, replicas int32) string {
	labels := map[string]string{"app": "coco"}
	no, grace := false, int64(1)
	d := appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Name: "coco", Namespace: "default"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{
					"io.katacontainers.config.hypervisor.cc_init_data": testutil.InitdataAnnotation(t, policy.AllowAll())}},
				Spec: corev1.PodSpec{
					RuntimeClassName:              ptr("cocoon-qemu"),
					AutomountServiceAccountToken:  &no,
					TerminationGracePeriodSeconds: &grace,
					Containers:                    []corev1.Container{{Name: "c", Image: c.Busybox(t), Command: []string{"/bin/sleep", "1000"}}},
				},
			},
		},
	}
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func ptr[T any](v T) *T { return &v }

// waitRuntimeReady waits for the CocoonRuntime's Ready condition with
// guest installed on the node.
func waitRuntimeReady(t testing.TB, c *k8stest.Cluster, guest string) {
	t.Helper()
	digest := guest[strings.Index(guest, "@")+1:]
	for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(time.Second) {
		out, _ := c.TryKubectl("", "get", "cocoonruntime", "node", "-o",
			`jsonpath={.status.conditions[?(@.type=="Ready")].status} {.status.nodes[0].guest}`)
		if out == "True "+digest {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("CocoonRuntime not Ready with %s after 3 minutes\n%s", digest, diagnostics(c))
		}
	}
}

// diagnostics are the CocoonRuntime, the operator's namespace and logs.
func diagnostics(c *k8stest.Cluster) string {
	var b strings.Builder
	for _, args := range [][]string{
		{"get", "cocoonruntime", "-o", "yaml"},
		{"-n", "cocoon-system", "describe", "pods"},
		{"-n", "cocoon-system", "logs", "deployment/cocoon-operator", "--tail=40"},
		{"-n", "cocoon-system", "logs", "-l", "app.kubernetes.io/name=cocoon-node-installer", "--tail=40", "--prefix"},
	} {
		out, err := c.TryKubectl("", args...)
		fmt.Fprintf(&b, "--- kubectl %s: %v\n%s\n", strings.Join(args, " "), err, out)
	}
	return b.String()
}

// vms lists the node's QEMU processes as pid -> command line.
func vms(c *k8stest.Cluster) map[int]string {
	out := map[int]string{}
	for _, p := range c.SandboxProcesses() {
		pid, name, _ := strings.Cut(p, ":")
		if !strings.HasPrefix(name, "qemu") {
			continue
		}
		n, _ := strconv.Atoi(pid)
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", n))
		out[n] = string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
	}
	return out
}

// TestCocoonRuntime: the operator installs Cocoon on a node whose
// containerd lacks it; a Cocoon Deployment runs; a containerd restart
// (a new flavour) leaves its shim and VM running; a new guest rolls out
// while the running pod keeps its VM and new pods boot the new guest;
// deleting the CocoonRuntime restores containerd's configuration and
// leaves no Cocoon file.
func TestCocoonRuntime(t *testing.T) {
	c := k8stest.Get(t)
	installOperator(t, c)
	refs := pushImages(t, c)
	cfgPath := c.Containerd.ConfigPath()
	original, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	c.Apply(t, cocoonRuntime(c, refs["guest-a"], "qemu"))
	waitRuntimeReady(t, c, refs["guest-a"])
	if out := c.Kubectl(t, "get", "node", k8stest.NodeName, "-o", `jsonpath={.metadata.labels.cocoon\.io/runtime-qemu}`); out != "true" {
		t.Fatalf("node label cocoon.io/runtime-qemu = %q", out)
	}
	if out := c.Kubectl(t, "get", "runtimeclass", "cocoon-qemu", "-o", "jsonpath={.handler} {.overhead.podFixed.memory}"); out != "cocoon-qemu 576Mi" {
		t.Errorf("RuntimeClass cocoon-qemu: %q", out)
	}
	if cfg, _ := os.ReadFile(cfgPath); !bytes.Contains(cfg, []byte("imports")) {
		t.Errorf("containerd's configuration imports no drop-in:\n%s", cfg)
	}

	c.Apply(t, cocoonDeployment(t, c, 1))
	pods := c.WaitSelector(t, "default", "app=coco")
	before := vms(c)
	if len(before) != 1 {
		t.Fatalf("VMs: %v", before)
	}
	guestA := "/guest/" + strings.TrimPrefix(refs["guest-a"][strings.Index(refs["guest-a"], "@")+1:], "sha256:") + "/"
	for _, cmd := range before {
		if !strings.Contains(cmd, guestA) {
			t.Errorf("the VM does not boot guest a (%s): %s", guestA, cmd)
		}
	}

	// A new flavour changes containerd's drop-in: the installer restarts
	// containerd, and the running pod's shim and VM survive it.
	starts := c.Containerd.Starts()
	c.Apply(t, cocoonRuntime(c, refs["guest-a"], "qemu", "local"))
	c.Eventually(t, "the local flavour's label", func() bool {
		out, _ := c.TryKubectl("", "get", "node", k8stest.NodeName, "-o", `jsonpath={.metadata.labels.cocoon\.io/runtime-local}`)
		return out == "true"
	})
	waitRuntimeReady(t, c, refs["guest-a"])
	if c.Containerd.Starts() == starts {
		t.Error("containerd was not restarted for the new runtime")
	}
	for pid := range before {
		if syscall.Kill(pid, 0) != nil {
			t.Errorf("VM %d did not survive containerd's restart", pid)
		}
	}
	c.WaitReady(t, "default", pods[0])
	if out := c.Kubectl(t, "exec", pods[0], "--", "cat", "/proc/1/cmdline"); out != "/bin/sleep\x001000\x00" {
		t.Errorf("kubectl exec after containerd's restart: %q", out)
	}

	// A new guest: the node is reinstalled; the running VM stays, the new
	// pod boots guest b.
	c.Apply(t, cocoonRuntime(c, refs["guest-b"], "qemu", "local"))
	waitRuntimeReady(t, c, refs["guest-b"])
	for pid := range before {
		if syscall.Kill(pid, 0) != nil {
			t.Errorf("VM %d did not survive the guest's upgrade", pid)
		}
	}
	c.Kubectl(t, "scale", "deployment/coco", "--replicas=2")
	c.Kubectl(t, "rollout", "status", "deployment/coco", "--timeout=4m")
	guestB := "/guest/" + strings.TrimPrefix(refs["guest-b"][strings.Index(refs["guest-b"], "@")+1:], "sha256:") + "/"
	var newVM bool
	for pid, cmd := range vms(c) {
		if _, old := before[pid]; !old {
			newVM = strings.Contains(cmd, guestB)
		}
	}
	if !newVM {
		t.Errorf("no new VM boots guest b (%s): %v", guestB, vms(c))
	}

	c.Delete(t, cocoonDeployment(t, c, 2))
	// SandboxProcesses also lists the installer's and the operator's runc
	// shims here (their command lines name the cluster's cocoon-k8s paths).
	c.WaitGone(t, "Cocoon's VMs", func() []string {
		var left []string
		for pid := range vms(c) {
			left = append(left, strconv.Itoa(pid))
		}
		return left
	})

	// Deleting the CocoonRuntime removes everything it added.
	starts = c.Containerd.Starts()
	if _, err := c.TryKubectl("", "delete", "cocoonruntime", "node", "--timeout=4m"); err != nil {
		logs, _ := c.TryKubectl("", "-n", "cocoon-system", "logs", "deployment/cocoon-operator")
		t.Fatalf("%v\n%s", err, logs)
	}
	if cfg, _ := os.ReadFile(cfgPath); !bytes.Equal(cfg, original) {
		t.Errorf("containerd's configuration not restored:\n%s\nwant:\n%s", cfg, original)
	}
	if c.Containerd.Starts() == starts {
		t.Error("containerd was not restarted without Cocoon")
	}
	for _, p := range []string{c.HostDir("cocoon"), filepath.Join(filepath.Dir(cfgPath), "conf.d")} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("%s left", p)
		}
	}
	if out := c.Kubectl(t, "get", "node", k8stest.NodeName, "-o", "jsonpath={.metadata.labels}"); strings.Contains(out, "cocoon.io/") {
		t.Errorf("Cocoon's node labels left: %s", out)
	}
	if out := c.Kubectl(t, "get", "runtimeclass", "-o", "name"); strings.TrimSpace(out) != "" {
		t.Errorf("RuntimeClasses left: %s", out)
	}
	// The garbage collector removes what the CocoonRuntime owned.
	c.Eventually(t, "no DaemonSet left", func() bool {
		out, err := c.TryKubectl("", "get", "daemonset", "-A", "-o", "name")
		return err == nil && strings.TrimSpace(out) == ""
	})
}
