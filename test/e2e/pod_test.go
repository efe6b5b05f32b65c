package e2e

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	internalapi "k8s.io/cri-api/pkg/apis"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cocoon-cc/cocoon/agent/policy"
	"github.com/cocoon-cc/cocoon/image/imagetest"
	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/cocoon-cc/cocoon/internal/testutil/containerdtest"
	"github.com/cocoon-cc/cocoon/internal/testutil/nettest"
)

// podEnv is containerd with the coco runtime, a CNI pod network on a
// bridge of the test's own, and a registry holding a busybox image on the
// bridge's gateway address, which the host and the pods (VMs included)
// reach.
type podEnv struct {
	ctrd    *containerdtest.Containerd
	reg     *imagetest.Registry
	image   string // registry/busybox:1
	cfg     string // the shim's configuration
	bridge  string
	gateway net.IP
	vm      bool // the qemu backend
}

func newPodEnv(t testing.TB) *podEnv {
	return newPodEnvWith(t, "[sandbox]\nbackend = \"local\"\nstart_timeout = \"30s\"\n[local]\nagent_path = \""+
		testutil.Bin(t, "coco-agent")+"\"\n")
}

// newPodEnvWith uses conf as the shim's configuration.
func newPodEnvWith(t testing.TB, conf string) *podEnv {
	t.Helper()
	shim := testutil.Bin(t, "containerd-shim-coco-v2")
	sub := nettest.Subnet(t)
	bridge, gw := nettest.Bridge(t, sub)
	reg := imagetest.StartRegistryOn(t, net.JoinHostPort(gw.String(), "0"))
	img := imagetest.New(t, ocispec.ImageConfig{Cmd: []string{"/bin/sh"}, Env: []string{"PATH=/bin"}}, imagetest.BusyboxLayer(t))
	reg.Push(t, img, "busybox:1", nil)
	cfg := filepath.Join(t.TempDir(), "coco.toml")
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	ctrd := containerdtest.Start(t, containerdtest.Options{ShimDir: filepath.Dir(shim), ShimConfig: cfg, Registry: reg.Host,
		CNIConfDir: containerdtest.BridgeCNI(t, bridge, sub)})
	return &podEnv{ctrd: ctrd, reg: reg, image: reg.Host + "/busybox:1", cfg: cfg, bridge: bridge, gateway: gw}
}

// newVMPodEnv is a podEnv whose pods are QEMU VMs (TCG).
func newVMPodEnv(t testing.TB) *podEnv {
	kernel, initrd := testutil.Guest(t)
	e := newPodEnvWith(t, "[sandbox]\nbackend = \"qemu\"\nstart_timeout = \"90s\"\n[qemu]\naccel = \"tcg\"\nkernel = \""+
		kernel+"\"\ninitrd = \""+initrd+"\"\n")
	e.vm = true
	return e
}

// TestPodCtr runs containers through ctr with the coco runtime: the output
// reaches ctr, the exit status is the container's, and nothing is left.
func TestPodCtr(t *testing.T) {
	e := newPodEnv(t)
	if out, err := e.ctrd.Ctr("images", "pull", "--plain-http", e.image); err != nil {
		t.Fatalf("pull: %v\n%s", err, out)
	}
	ann := "io.katacontainers.config.hypervisor.cc_init_data=" + testutil.InitdataAnnotation(t, policy.AllowAll())
	out, err := e.ctrd.Ctr("run", "--rm", "--runtime", "io.containerd.coco.v2", "--runtime-config-path", e.cfg,
		"--annotation", ann, e.image, "ctr1", "/bin/sh", "-c", "echo hello from $(cat /proc/1/cmdline | head -c 7); exit 3")
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 3 {
		t.Fatalf("ctr run: %v, want exit status 3\n%s\n%s", err, out, e.ctrd.Logs())
	}
	if !strings.Contains(out, "hello from /bin/sh") {
		t.Fatalf("ctr run output %q", out)
	}
	// The default policy: the container runs, the host reads nothing.
	out, err = e.ctrd.Ctr("run", "--rm", "--runtime", "io.containerd.coco.v2", "--runtime-config-path", e.cfg,
		e.image, "ctr2", "/bin/sh", "-c", "echo secret")
	if err != nil || strings.Contains(out, "secret") {
		t.Fatalf("default policy: %v, output %q", err, out)
	}
	// A bad initdata annotation fails the task's creation, clearly.
	out, err = e.ctrd.Ctr("run", "--rm", "--runtime", "io.containerd.coco.v2", "--runtime-config-path", e.cfg,
		"--annotation", "io.katacontainers.config.hypervisor.cc_init_data=!!", e.image, "ctr3", "/bin/true")
	if err == nil || !strings.Contains(out, "cc_init_data") {
		t.Fatalf("bad annotation: %v\n%s", err, out)
	}
	// Exec runs in the container when the policy allows it, and is refused
	// with the policy's reason when it does not.
	for _, tc := range []struct {
		policy, id string
		allowed    bool
	}{{policy.AllowAll(), "ctr5", true}, {policy.Default(), "ctr6", false}} {
		out, err := e.ctrd.Ctr("run", "-d", "--runtime", "io.containerd.coco.v2", "--runtime-config-path", e.cfg,
			"--annotation", "io.katacontainers.config.hypervisor.cc_init_data="+testutil.InitdataAnnotation(t, tc.policy), e.image, tc.id,
			"/bin/sleep", "1000")
		if err != nil {
			t.Fatalf("run -d: %v\n%s", err, out)
		}
		out, err = e.ctrd.Ctr("task", "exec", "--exec-id", "e1", tc.id, "/bin/cat", "/proc/1/cmdline")
		if tc.allowed && (err != nil || out != "/bin/sleep\x001000\x00") {
			t.Errorf("exec: %v %q", err, out)
		}
		if !tc.allowed && (err == nil || !strings.Contains(out, "ExecProcessRequest")) {
			t.Errorf("exec under the default policy: %v %q", err, out)
		}
		e.ctrd.Ctr("task", "kill", "-s", "9", tc.id)
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if _, err := e.ctrd.Ctr("task", "rm", tc.id); err == nil {
				break
			}
		}
		if out, err := e.ctrd.Ctr("containers", "rm", tc.id); err != nil {
			t.Fatalf("containers rm: %v\n%s", err, out)
		}
	}
	// An image the sandbox cannot pull fails the creation, saying so.
	out, err = e.ctrd.Ctr("run", "--rm", "--runtime", "io.containerd.coco.v2", "--runtime-config-path", e.cfg,
		"--annotation", "io.kubernetes.cri.image-name="+strings.Replace(e.image, "busybox", "missing", 1), e.image, "ctr4", "/bin/true")
	if err == nil || !strings.Contains(out, "image pull failed") {
		t.Fatalf("missing image: %v\n%s", err, out)
	}
	assertNoLeftovers(t, e.ctrd)
}

// TestPodCRI drives the coco runtime as the kubelet does, through CRI.
func TestPodCRI(t *testing.T) {
	e := newPodEnv(t)
	rs := e.ctrd.RuntimeService(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	logDir := t.TempDir()
	podID, sandbox := e.startPod(ctx, t, rs, "pod1", logDir)
	cfg := &cri.ContainerConfig{
		Metadata: &cri.ContainerMetadata{Name: "c1"},
		Image:    &cri.ImageSpec{Image: e.image},
		Command:  []string{"/bin/sh", "-c", "echo hello-cri from $(hostname); exit 4"},
		LogPath:  "c1.log",
	}
	cid, err := rs.CreateContainer(ctx, podID, cfg, sandbox)
	if err != nil {
		t.Fatalf("CreateContainer: %v\n%s", err, e.ctrd.Logs())
	}
	if err := rs.StartContainer(ctx, cid); err != nil {
		t.Fatal(err)
	}
	st := waitExited(ctx, t, rs, cid)
	if st.State != cri.ContainerState_CONTAINER_EXITED || st.ExitCode != 4 {
		t.Fatalf("container status %v exit %d, want exited with 4", st.State, st.ExitCode)
	}
	log, err := os.ReadFile(filepath.Join(logDir, "c1.log"))
	if err != nil || !strings.Contains(string(log), "hello-cri from pod1") {
		t.Fatalf("container log %q %v", log, err)
	}
	if err := rs.RemoveContainer(ctx, cid); err != nil {
		t.Fatal(err)
	}
	if err := rs.StopPodSandbox(ctx, podID); err != nil {
		t.Fatal(err)
	}
	if err := rs.RemovePodSandbox(ctx, podID); err != nil {
		t.Fatal(err)
	}
	assertNoLeftovers(t, e.ctrd)
}

// startPod runs a pod sandbox named name on the coco runtime through CRI
// (on CNI's pod network, initdata allowing every agent call, container
// logs in logDir if set) and pulls the test image for it.
func (e *podEnv) startPod(ctx context.Context, t *testing.T, rs internalapi.RuntimeService, name, logDir string) (string, *cri.PodSandboxConfig) {
	t.Helper()
	return e.startPodWith(ctx, t, rs, name, logDir, policy.AllowAll())
}

// startPodWith is startPod with an agent policy in the pod's initdata;
// none ("") leaves the default policy.
func (e *podEnv) startPodWith(ctx context.Context, t testing.TB, rs internalapi.RuntimeService, name, logDir, rego string) (string, *cri.PodSandboxConfig) {
	t.Helper()
	return e.startPodOn(ctx, t, rs, "coco", name, logDir, rego)
}

// startPodOn is startPodWith on the runtime handler (coco, runc).
func (e *podEnv) startPodOn(ctx context.Context, t testing.TB, rs internalapi.RuntimeService, handler, name, logDir, rego string) (string, *cri.PodSandboxConfig) {
	t.Helper()
	init := ""
	if rego != "" {
		init = testutil.InitdataAnnotation(t, rego)
	}
	return e.startPodInit(ctx, t, rs, handler, name, logDir, init)
}

// startPodInit is startPodOn with an initdata annotation ("": none).
func (e *podEnv) startPodInit(ctx context.Context, t testing.TB, rs internalapi.RuntimeService, handler, name, logDir, init string) (string, *cri.PodSandboxConfig) {
	t.Helper()
	sandbox := &cri.PodSandboxConfig{
		Metadata:     &cri.PodSandboxMetadata{Name: name, Uid: "uid-" + name, Namespace: "default"},
		Hostname:     name,
		LogDirectory: logDir,
		Linux: &cri.LinuxPodSandboxConfig{SecurityContext: &cri.LinuxSandboxSecurityContext{
			NamespaceOptions: &cri.NamespaceOption{Network: cri.NamespaceMode_POD}}},
	}
	if init != "" {
		sandbox.Annotations = map[string]string{"io.katacontainers.config.hypervisor.cc_init_data": init}
	}
	podID, err := rs.RunPodSandbox(ctx, sandbox, handler)
	if err != nil {
		t.Fatalf("RunPodSandbox: %v\n%s", err, e.ctrd.Logs())
	}
	if _, err := e.ctrd.ImageService(t).PullImage(ctx, &cri.ImageSpec{Image: e.image}, nil, sandbox); err != nil {
		rs.StopPodSandbox(ctx, podID)
		rs.RemovePodSandbox(ctx, podID)
		t.Fatal(err)
	}
	return podID, sandbox
}

// assertNoLeftovers checks that no coco shim of this containerd remains,
// nor any process of its (agent, VM).
func assertNoLeftovers(t *testing.T, c *containerdtest.Containerd) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		left := containerdtest.SandboxProcesses(c.Address)
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes left: %v", left)
		}
	}
}

// TestPodVM runs a CRI pod in a QEMU VM (TCG): the image is pulled inside
// the guest, the container's output reaches the log, the pod outlives a
// VM the host did not run for a while (an overloaded host, a pause), and
// QEMU is gone once the pod is removed.
func TestPodVM(t *testing.T) {
	e := newVMPodEnv(t)
	rs := e.ctrd.RuntimeService(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	logDir := t.TempDir()
	podID, sandbox := e.startPod(ctx, t, rs, "vmpod", logDir)
	run := func(name string) {
		t.Helper()
		cid, err := rs.CreateContainer(ctx, podID, &cri.ContainerConfig{Metadata: &cri.ContainerMetadata{Name: name},
			Image: &cri.ImageSpec{Image: e.image}, LogPath: name + ".log",
			Command: []string{"/bin/sh", "-c", "echo in-vm $(hostname) kernel $(cat /proc/sys/kernel/osrelease)"}}, sandbox)
		if err != nil {
			t.Fatalf("CreateContainer %s: %v", name, err)
		}
		if err := rs.StartContainer(ctx, cid); err != nil {
			t.Fatalf("StartContainer %s: %v", name, err)
		}
		waitExited(ctx, t, rs, cid)
		log, err := os.ReadFile(filepath.Join(logDir, name+".log"))
		if err != nil || !strings.Contains(string(log), "in-vm vmpod kernel 6.") {
			t.Fatalf("container %s log %q %v", name, log, err)
		}
	}
	run("c")
	// 20 s without a vCPU running: longer than any keepalive of the
	// host-guest channel could wait.
	qemu := sandboxPid(e.ctrd.Address, "qemu-system")
	if qemu == 0 {
		t.Fatal("no QEMU running")
	}
	if err := syscall.Kill(qemu, syscall.SIGSTOP); err != nil {
		t.Fatalf("pause QEMU (%d): %v", qemu, err)
	}
	time.Sleep(20 * time.Second)
	syscall.Kill(qemu, syscall.SIGCONT)
	run("after-pause")
	if err := rs.StopPodSandbox(ctx, podID); err != nil {
		t.Fatal(err)
	}
	if err := rs.RemovePodSandbox(ctx, podID); err != nil {
		t.Fatal(err)
	}
	assertNoLeftovers(t, e.ctrd)
}

// TestPodAgentDies: when the sandbox's agent dies under a running
// container, the task exits with status 255 and ctr hears of it.
func TestPodAgentDies(t *testing.T) {
	e := newPodEnv(t)
	if out, err := e.ctrd.Ctr("images", "pull", "--plain-http", e.image); err != nil {
		t.Fatalf("pull: %v\n%s", err, out)
	}
	run := exec.Command("ctr", "-a", e.ctrd.Address, "-n", "k8s.io", "run", "--rm", "--runtime", "io.containerd.coco.v2",
		"--runtime-config-path", e.cfg, e.image, "doomed", "/bin/sleep", "1000")
	var out bytes.Buffer
	run.Stdout, run.Stderr = &out, &out
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	var agents []string
	for deadline := time.Now().Add(20 * time.Second); len(agents) == 0 && time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if out, _ := e.ctrd.Ctr("task", "ls"); strings.Contains(out, "RUNNING") {
			for _, p := range containerdtest.SandboxProcesses(e.ctrd.Address) {
				if strings.HasSuffix(p, ":coco-agent") {
					agents = append(agents, p)
				}
			}
		}
	}
	if len(agents) != 1 {
		t.Fatalf("agents %v", agents)
	}
	pid, _ := strconv.Atoi(strings.Split(agents[0], ":")[0])
	syscall.Kill(pid, syscall.SIGKILL)
	done := make(chan error, 1)
	go func() { done <- run.Wait() }()
	select {
	case err := <-done:
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 255 {
			t.Fatalf("ctr run: %v, want exit status 255\n%s", err, out.String())
		}
	case <-time.After(20 * time.Second):
		run.Process.Kill()
		t.Fatal("the task did not exit after its agent died")
	}
	assertNoLeftovers(t, e.ctrd)
}

// waitExited waits up to 30 s for a CRI container to exit.
func waitExited(ctx context.Context, t *testing.T, rs internalapi.RuntimeService, cid string) *cri.ContainerStatus {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		r, err := rs.ContainerStatus(ctx, cid, false)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status.State == cri.ContainerState_CONTAINER_EXITED || time.Now().After(deadline) {
			return r.Status
		}
	}
}

// TestPodCRIExecStats: kubectl exec (ExecSync) and the kubelet's stats
// reach a running container in the sandbox when the policy allows exec.
func TestPodCRIExecStats(t *testing.T) {
	e := newPodEnv(t)
	rs := e.ctrd.RuntimeService(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	podID, sandbox := e.startPod(ctx, t, rs, "exec", "")
	defer rs.RemovePodSandbox(ctx, podID)
	defer rs.StopPodSandbox(ctx, podID)
	cid, err := rs.CreateContainer(ctx, podID, &cri.ContainerConfig{Metadata: &cri.ContainerMetadata{Name: "c"},
		Image: &cri.ImageSpec{Image: e.image}, Command: []string{"/bin/sleep", "1000"}}, sandbox)
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.StartContainer(ctx, cid); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, err := rs.ExecSync(ctx, cid, []string{"/bin/sh", "-c", "echo out; echo err >&2; cat /proc/1/cmdline"}, 20*time.Second)
	if err != nil || string(stdout) != "out\n/bin/sleep\x001000\x00" || string(stderr) != "err\n" {
		t.Fatalf("ExecSync: %v %q %q", err, stdout, stderr)
	}
	if _, _, err := rs.ExecSync(ctx, cid, []string{"/bin/false"}, 20*time.Second); err == nil {
		t.Error("ExecSync of /bin/false succeeded")
	}
	st, err := rs.ContainerStats(ctx, cid)
	if err != nil || st.GetMemory().GetWorkingSetBytes() == nil || st.GetCpu().GetUsageCoreNanoSeconds() == nil {
		t.Fatalf("ContainerStats: %v %v", st, err)
	}
}
