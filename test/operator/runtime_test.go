package operator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/cocoon-cc/cocoon/agent/policy"
	"github.com/cocoon-cc/cocoon/image/imagetest"
	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/cocoon-cc/cocoon/internal/testutil/k8stest"
)

// cocoonRuntime is the test's CocoonRuntime: the node's containerd (the
// test's, restarted by signal: its supervisor starts it again), an
// install directory in the cluster's, and cocoon-snapshotter pulling
// Cocoon's pods' images (coco/, matched by each name CRI records: by tag
// and by digest) only in the guest.
func cocoonRuntime(c *k8stest.Cluster, guest string, flavours ...string) string {
	return fmt.Sprintf(`apiVersion: cocoon.io/v1alpha1
kind: CocoonRuntime
metadata: {name: node}
spec:
  flavours: [%s]
  guest: {image: %q, plainHTTP: true}
  shim: {startTimeout: 90s}
  installDir: %q
  snapshotter: {images: %q, address: %q}
  containerd:
    configPath: %q
    dropInDir: %q
    address: %q
    restart: signal
`, strings.Join(flavours, ", "), guest, c.HostDir("cocoon"), "^"+regexp.QuoteMeta(c.Registry+"/coco/"), c.HostDir("snap.sock"),
		c.Containerd.ConfigPath(),
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
					Containers:                    []corev1.Container{{Name: "c", Image: cocoImage(t, c), Command: []string{"/bin/sleep", "1000"}}},
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

// guestPullMarker is a file only cocoImage has.
const guestPullMarker = "cocoon-guest-pull-marker"

var (
	cocoOnce sync.Once
	coco     string
)

// cocoImage is the image of Cocoon's pods: busybox (whose layer the
// node's pause image shares, so it is on the host anyway) and a layer of
// its own, which only the guest pulls.
func cocoImage(t testing.TB, c *k8stest.Cluster) string {
	t.Helper()
	cocoOnce.Do(func() {
		img := imagetest.New(t, ocispec.ImageConfig{Env: []string{"PATH=/bin"}}, imagetest.BusyboxLayer(t),
			imagetest.GzipLayer(t, imagetest.File(guestPullMarker, "pulled in the guest\n", 0o644)))
		coco = c.PushImage(t, img, "coco/app:1")
	})
	if coco == "" {
		t.Fatal("the coco image was not pushed")
	}
	return coco
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

// snapshotterRoot is where cocoon-snapshotter keeps its snapshots.
func snapshotterRoot(c *k8stest.Cluster) string {
	return filepath.Join(c.Containerd.Root, "io.containerd.snapshotter.v1.cocoon")
}

// snapshotters lists the node's cocoon-snapshotter processes (serving, or
// removing its snapshots) as pid: command line.
func snapshotters(c *k8stest.Cluster) []string {
	var out []string
	files, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range files {
		b, _ := os.ReadFile(f)
		cmd := string(bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		if strings.Contains(cmd, "cocoon-snapshotter") && strings.Contains(cmd, "--containerd-root="+c.Containerd.Root+" ") {
			out = append(out, filepath.Base(filepath.Dir(f))+": "+cmd)
		}
	}
	return out
}

// checkGuestPull checks that the pod's container was made by
// cocoon-snapshotter and that no file of its image is on the host.
func checkGuestPull(t *testing.T, c *k8stest.Cluster, pod string) {
	t.Helper()
	if out := c.Kubectl(t, "get", "cocoonruntime", "node", "-o", "jsonpath={.status.nodes[0].snapshotter}"); !strings.HasPrefix(out, "host process ") {
		t.Errorf("the node's snapshotter status: %q", out)
	}
	id := strings.TrimPrefix(c.Kubectl(t, "get", "pod", pod, "-o", "jsonpath={.status.containerStatuses[0].containerID}"), "containerd://")
	if out, err := c.Containerd.Ctr("containers", "info", id); err != nil || !strings.Contains(out, `"Snapshotter": "cocoon"`) {
		t.Errorf("container %s not made by cocoon-snapshotter: %v\n%s", id, err, out)
	}
	var files int
	filepath.WalkDir(snapshotterRoot(c), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files++
		}
		if err == nil && d.Name() == guestPullMarker {
			t.Errorf("the guest's image was unpacked on the host: %s", p)
		}
		return nil
	})
	if files == 0 {
		t.Errorf("no snapshot in %s", snapshotterRoot(c))
	}
}

// TestCocoonRuntime: the operator installs Cocoon on a node whose
// containerd lacks it; a Cocoon Deployment runs, its image pulled in the
// guest through cocoon-snapshotter; a containerd restart
// (a new flavour) leaves its shim and VM running; a new guest rolls out
// while the running pod keeps its VM and new pods boot the new guest;
// deleting the CocoonRuntime restores containerd's configuration and
// leaves no Cocoon file or process.
func TestCocoonRuntime(t *testing.T) {
	c := k8stest.Get(t)
	t.Cleanup(func() { // after a failure: what the installer left running
		for _, p := range snapshotters(c) {
			pid, _, _ := strings.Cut(p, ":")
			n, _ := strconv.Atoi(pid)
			syscall.Kill(n, syscall.SIGKILL)
		}
	})
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
	checkGuestPull(t, c, pods[0])
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
	// cocoon-snapshotter stopped; its snapshots go once the pods made from
	// them (the uninstall's own) are gone.
	c.WaitGone(t, "cocoon-snapshotter", func() []string { return snapshotters(c) })
	c.Eventually(t, "cocoon-snapshotter's snapshots removed", func() bool {
		_, err := os.Stat(snapshotterRoot(c))
		return errors.Is(err, os.ErrNotExist)
	})
	if _, err := os.Stat(c.HostDir("snap.sock")); err == nil {
		t.Error("cocoon-snapshotter's socket left")
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
