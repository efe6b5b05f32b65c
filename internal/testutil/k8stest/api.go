package k8stest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cocoon-cc/cocoon/image/imagetest"
	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/cocoon-cc/cocoon/internal/testutil/containerdtest"
)

// TryKubectl runs kubectl against the cluster as its admin, stdin (if
// not empty) on its standard input, and returns its standard output (with
// standard error after it when it fails).
func (c *Cluster) TryKubectl(stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(BinDir(), "kubectl"), append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String() + stderr.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// Kubectl runs kubectl and returns its output, failing the test when it
// fails.
func (c *Cluster) Kubectl(t testing.TB, args ...string) string {
	t.Helper()
	out, err := c.TryKubectl("", args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Apply applies manifests (YAML, several documents allowed).
func (c *Cluster) Apply(t testing.TB, manifests string) {
	t.Helper()
	if _, err := c.TryKubectl(manifests, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
}

// Delete deletes what manifests name and waits until it is gone (pods:
// their containers stopped and their sandboxes removed by the kubelet).
func (c *Cluster) Delete(t testing.TB, manifests string) {
	t.Helper()
	if _, err := c.TryKubectl(manifests, "delete", "--ignore-not-found", "--wait", "--timeout=3m", "-f", "-"); err != nil {
		t.Fatal(err)
	}
}

// WaitReady waits until pod ns/name is Ready.
func (c *Cluster) WaitReady(t testing.TB, ns, pod string) {
	t.Helper()
	c.waitPods(t, ns, "pod/"+pod)
}

// WaitSelector waits until the pods of ns matching a label selector exist
// and are Ready (a Deployment's), and returns their names.
func (c *Cluster) WaitSelector(t testing.TB, ns, selector string) []string {
	t.Helper()
	c.waitFor(t, time.Minute, "pods "+selector, func() (bool, error) {
		out, err := c.TryKubectl("", "get", "pods", "-n", ns, "-l", selector, "-o", "name")
		return err == nil && strings.TrimSpace(out) != "", nil
	})
	c.waitPods(t, ns, "pods", "-l", selector)
	out := c.Kubectl(t, "get", "pods", "-n", ns, "-l", selector, "-o", "jsonpath={.items[*].metadata.name}")
	return strings.Fields(out)
}

func (c *Cluster) waitPods(t testing.TB, ns string, which ...string) {
	t.Helper()
	args := append([]string{"wait", "-n", ns, "--for=condition=Ready", "--timeout=3m"}, which...)
	if _, err := c.TryKubectl("", args...); err != nil {
		desc, _ := c.TryKubectl("", append([]string{"describe", "pods", "-n", ns}, which...)...)
		t.Fatalf("%v\n%s\n%s", err, desc, c.Logs("kubelet", 30))
	}
}

// PushImage pushes img to the cluster's registry as repo:tag and returns
// the reference pods name it by. Repositories under guest/ are pulled only
// in Cocoon's sandboxes; an image sharing layers with one of them must be
// unpacked on the host first (see README, cocoon-snapshotter --images).
func (c *Cluster) PushImage(t testing.TB, img *imagetest.Image, repoTag string) string {
	t.Helper()
	c.registry.Push(t, img, repoTag, nil)
	return c.Registry + "/" + repoTag
}

// Busybox is a busybox image (Debian's static busybox; sh, sleep, cat, ...)
// in the registry, pushed once per cluster, for runc and Cocoon pods alike.
func (c *Cluster) Busybox(t testing.TB) string {
	t.Helper()
	c.busyboxOnce.Do(func() {
		img := imagetest.New(t, ocispec.ImageConfig{Cmd: []string{"/bin/sh"}, Env: []string{"PATH=/bin"}}, imagetest.BusyboxLayer(t))
		c.busybox = c.PushImage(t, img, "busybox:1")
	})
	if c.busybox == "" {
		t.Fatal("k8stest: the busybox image was not pushed")
	}
	return c.busybox
}

// CocoPod is a cocoon-qemu pod in namespace default, as YAML, that runs
// the shell command cmd once in busybox, with the initdata document.
func (c *Cluster) CocoPod(t testing.TB, name, initdata, cmd string) string {
	t.Helper()
	command, err := json.Marshal([]string{"/bin/sh", "-c", cmd})
	if err != nil {
		t.Fatal(err)
	}
	return `apiVersion: v1
kind: Pod
metadata:
  name: ` + name + `
  namespace: default
  annotations: {io.katacontainers.config.hypervisor.cc_init_data: "` + testutil.InitdataDocAnnotation(t, initdata) + `"}
spec:
  runtimeClassName: cocoon-qemu
  restartPolicy: Never
  automountServiceAccountToken: false
  containers:
  - name: app
    image: ` + c.Busybox(t) + `
    command: ` + string(command) + `
`
}

// NodeExec runs a command in the node's network namespace (to reach what
// the node reaches: pod IPs, Service IPs through kube-proxy's rules) and
// returns its combined output.
func (c *Cluster) NodeExec(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + c.slot.NetnsPath(), "--"}, args...)...).CombinedOutput()
	return string(out), err
}

// NodeNetns is the node's network namespace, where its pods' bridge and
// their host-side veths are (a capture of what the host sees).
func (c *Cluster) NodeNetns() string { return c.slot.NetnsPath() }

// SandboxProcesses lists the coco shims of the node's containerd and their
// children (QEMU, local agents) as pid:name: empty once every Cocoon pod is
// gone.
func (c *Cluster) SandboxProcesses() []string {
	return containerdtest.SandboxProcesses(c.Containerd.Address)
}

// PodLeftovers lists what remains on the node of the pod with this UID:
// mounts naming it (volumes, the kubelet's pod directory) and its cgroups.
func (c *Cluster) PodLeftovers(uid string) []string {
	var left []string
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(line); len(f) > 4 && strings.Contains(f[4], uid) {
			left = append(left, "mount "+f[4])
		}
	}
	cgroups, _ := filepath.Glob("/sys/fs/cgroup/*" + c.slot.Cgroup + "/kubepods/*pod" + uid)
	more, _ := filepath.Glob("/sys/fs/cgroup/*" + c.slot.Cgroup + "/kubepods/*/pod" + uid)
	for _, cg := range append(cgroups, more...) {
		left = append(left, "cgroup "+cg)
	}
	return left
}

// WaitGone waits until list lists nothing (SandboxProcesses, a pod's
// PodLeftovers), failing the test with what is left after a minute.
func (c *Cluster) WaitGone(t testing.TB, what string, list func() []string) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		left := list()
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s left after a minute: %v", what, left)
		}
	}
}

// Eventually polls cond (every 200 ms, for a minute at most) until it
// holds, failing the test, naming what, when it does not: for what settles
// after a pod is Ready (kube-proxy's rules, an endpoint).
func (c *Cluster) Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	c.waitFor(t, time.Minute, what, func() (bool, error) { return cond(), nil })
}

// HostDir is a path under the cluster's directory (removed at teardown)
// for what a test puts on the node's host.
func (c *Cluster) HostDir(name string) string { return filepath.Join(c.dir, name) }
