// Package containerdtest runs a private Debian containerd for tests: its
// own root, state and sockets in a temporary directory, the CRI plugin
// with the runc and coco runtimes, and a pause image built offline.
package containerdtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	internalapi "k8s.io/cri-api/pkg/apis"
	remote "k8s.io/cri-client/pkg"

	"github.com/cocoon-cc/cocoon/image/imagetest"
)

// PauseImage is the sandbox image the CRI plugin is configured with.
const PauseImage = "registry.k8s.io/pause:3.6"

// Options configure a containerd.
type Options struct {
	// ShimDir is put first on containerd's PATH: containerd-shim-coco-v2.
	ShimDir string
	// ShimConfig is the coco runtime's ConfigPath.
	ShimConfig string
	// Registry is a plain-HTTP registry host (127.0.0.1:port) to mirror.
	Registry string
	// Snapshotter is a proxy snapshotter's socket, used by the CRI plugin.
	Snapshotter string
	// Root is containerd's root directory (default: root under its
	// directory).
	Root string
	// Runtimes are more coco runtime handlers, each with its shim's
	// ConfigPath (as Kubernetes RuntimeClasses name them).
	Runtimes map[string]string
	// Dir holds containerd's root, state and sockets (default: a new
	// directory under /run); it is removed when containerd stops.
	Dir string
	// Netns is a network namespace (a path, /run/netns/NAME) containerd
	// runs in, and with it the CNI plugins and the pods' network setup.
	Netns string
	// CNIConfDir enables CRI's pod networking with the CNI configuration
	// in this directory and Debian's plugins (containernetworking-plugins).
	CNIConfDir string
	// Supervise starts containerd again whenever it exits before the test
	// ends, as systemd's Restart= does: for tests restarting it (a node
	// installer changing its configuration).
	Supervise bool
}

// Containerd is a running containerd.
type Containerd struct {
	Dir     string
	Root    string
	Address string
	pods    bool // pods have a CNI network: removed before containerd stops
	log     *bytes.Buffer

	mu       sync.Mutex
	cmd      *exec.Cmd
	exited   chan struct{} // closed when cmd has exited
	stopping bool
	starts   int
}

// Start runs containerd as root, skipping the test loudly when that is
// impossible.
func Start(t testing.TB, o Options) *Containerd {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIP: containerd needs root; CI runs as root")
	}
	bin, err := exec.LookPath("containerd")
	if err != nil {
		t.Skip("SKIP: containerd not installed (scripts/install-deps.sh installs it)")
	}
	// Unix socket paths are short: keep the directory near the root.
	dir := o.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("/run", "ctrd-"); err != nil {
			t.Fatal(err)
		}
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	c := &Containerd{Dir: dir, Root: o.Root, Address: filepath.Join(dir, "c.sock"), pods: o.CNIConfDir != "", log: &bytes.Buffer{}}
	if c.Root == "" {
		c.Root = filepath.Join(dir, "root")
	}
	cfg := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(c.config(o)), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{bin, "--config", cfg}
	if o.Netns != "" {
		args = append([]string{"nsenter", "--net=" + o.Netns, "--"}, args...)
	}
	if err := c.start(args, o); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.stop(t) })
	if err := c.waitReady(); err != nil {
		t.Fatalf("containerd: %v\n%s", err, c.log)
	}
	c.importPause(t)
	return c
}

// start runs containerd; with o.Supervise, again each time it exits until
// stop.
func (c *Containerd) start(args []string, o Options) error {
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = c.log, c.log
	cmd.Env = append(os.Environ(), "PATH="+o.ShimDir+":"+os.Getenv("PATH"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	c.mu.Lock()
	if c.stopping { // stop ran while this restart started
		cmd.Process.Kill()
	}
	c.cmd, c.exited = cmd, exited
	c.starts++
	c.mu.Unlock()
	go func() {
		cmd.Wait()
		close(exited)
		c.mu.Lock()
		again := o.Supervise && !c.stopping
		c.mu.Unlock()
		if again {
			fmt.Fprintf(c.log, "containerdtest: containerd exited (%v); starting it again\n", cmd.ProcessState)
			if err := c.start(args, o); err != nil {
				fmt.Fprintf(c.log, "containerdtest: restart: %v\n", err)
			}
		}
	}()
	return nil
}

// Starts counts how often containerd was started (Supervise restarts it).
func (c *Containerd) Starts() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.starts
}

// ConfigPath is containerd's configuration file.
func (c *Containerd) ConfigPath() string { return filepath.Join(c.Dir, "config.toml") }

func (c *Containerd) config(o Options) string {
	var b strings.Builder
	fmt.Fprintf(&b, `version = 2
root = %q
state = %q
[grpc]
  address = %q
[ttrpc]
  address = %q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  # root without CAP_SYS_RESOURCE (as in containers) cannot lower runc's
  # oom_score_adj: runc pods would fail to start.
  restrict_oom_score_adj = true
`, c.Root, filepath.Join(c.Dir, "state"), c.Address, c.Address+".ttrpc", PauseImage)
	if o.CNIConfDir != "" {
		fmt.Fprintf(&b, "  [plugins.\"io.containerd.grpc.v1.cri\".cni]\n    bin_dir = \"/usr/lib/cni\"\n    conf_dir = %q\n", o.CNIConfDir)
	}
	b.WriteString("  [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n    default_runtime_name = \"runc\"\n")
	if o.Snapshotter != "" {
		b.WriteString("    snapshotter = \"cocoon\"\n    disable_snapshot_annotations = false\n")
	}
	b.WriteString("    [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n      runtime_type = \"io.containerd.runc.v2\"\n")
	runtimes := map[string]string{}
	if o.ShimConfig != "" {
		runtimes["coco"] = o.ShimConfig
	}
	for name, cfg := range o.Runtimes {
		runtimes[name] = cfg
	}
	for _, name := range slices.Sorted(maps.Keys(runtimes)) {
		fmt.Fprintf(&b, `    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.%[1]q]
      runtime_type = "io.containerd.coco.v2"
      pod_annotations = ["io.katacontainers.*"]
      container_annotations = ["io.katacontainers.*"]
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.%[1]q.options]
        ConfigPath = %[2]q
`, name, runtimes[name])
	}
	if o.Registry != "" {
		fmt.Fprintf(&b, "  [plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.%q]\n    endpoint = [\"http://%s\"]\n", o.Registry, o.Registry)
	}
	if o.Snapshotter != "" {
		fmt.Fprintf(&b, "[proxy_plugins.cocoon]\n  type = \"snapshot\"\n  address = %q\n", o.Snapshotter)
	}
	return b.String()
}

func (c *Containerd) waitReady() error {
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if conn, err := net.Dial("unix", c.Address); err == nil {
			conn.Close()
			if _, err := c.Ctr("version"); err == nil {
				return nil
			}
		}
		c.mu.Lock()
		exited := c.exited
		c.mu.Unlock()
		select {
		case <-exited:
			return fmt.Errorf("exited")
		default:
		}
	}
	return fmt.Errorf("not ready in 20 s")
}

// Ctr runs ctr against this containerd in namespace k8s.io.
func (c *Containerd) Ctr(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ctr", append([]string{"-a", c.Address, "-n", "k8s.io"}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Logs is containerd's output so far, for failure messages.
func (c *Containerd) Logs() string { return c.log.String() }

// RuntimeService and ImageService are CRI clients, as the kubelet uses.
func (c *Containerd) RuntimeService(t testing.TB) internalapi.RuntimeService {
	t.Helper()
	rs, err := remote.NewRemoteRuntimeServiceBuilder().WithEndpoint("unix://" + c.Address).WithConnectionTimeout(2 * time.Minute).Build(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

// ImageService is the CRI image client.
func (c *Containerd) ImageService(t testing.TB) internalapi.ImageManagerService {
	t.Helper()
	is, err := remote.NewRemoteImageServiceBuilder().WithEndpoint("unix://" + c.Address).WithConnectionTimeout(2 * time.Minute).Build(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return is
}

// importPause builds the pause image (busybox sleeping; CRI needs one in
// its store even when the runtime never runs it) and imports it.
func (c *Containerd) importPause(t testing.TB) {
	t.Helper()
	img := imagetest.New(t, ocispec.ImageConfig{Entrypoint: []string{"/bin/sleep", "2147483647"}}, imagetest.BusyboxLayer(t))
	layout := t.TempDir()
	img.WriteLayout(t, layout, "3.6")
	archive := filepath.Join(t.TempDir(), "pause.tar")
	if out, err := exec.Command("skopeo", "copy", "oci:"+layout+":3.6", "docker-archive:"+archive+":"+PauseImage).CombinedOutput(); err != nil {
		t.Fatalf("skopeo: %v\n%s", err, out)
	}
	if out, err := c.Ctr("images", "import", archive); err != nil {
		t.Fatalf("ctr import: %v\n%s", err, out)
	}
}

// stop ends containerd and everything it started: shims (and through them
// sandboxes), mounts under its root, its directory.
func (c *Containerd) stop(t testing.TB) {
	if c.pods {
		c.removePods(t)
	}
	c.mu.Lock()
	c.stopping = true
	cmd, done := c.cmd, c.exited
	c.mu.Unlock()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
	}
	killShims(c.Address)
	UnmountUnder(c.Root)
	UnmountUnder(c.Dir)
	if err := os.RemoveAll(c.Dir); err != nil {
		t.Errorf("remove containerd's directory: %v", err)
	}
	if t.Failed() {
		t.Logf("containerd log:\n%s", c.log)
	}
}

// removePods removes the pods a failed test left, so that CNI tears their
// networks down (veths, addresses, namespaces) before containerd goes.
func (c *Containerd) removePods(t testing.TB) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rs := c.RuntimeService(t)
	pods, err := rs.ListPodSandbox(ctx, nil)
	if err != nil {
		t.Errorf("list the pods left: %v", err)
		return
	}
	for _, p := range pods {
		rs.StopPodSandbox(ctx, p.Id)
		rs.RemovePodSandbox(ctx, p.Id)
	}
}

// BridgeCNI writes a CNI configuration (for Options.CNIConfDir) giving
// pods addresses of subnet on bridge, a bridge the test made with the
// subnet's first address (the gateway): host-local addresses, no
// masquerading and no default route, so that pods reach the gateway and
// each other and nothing off the machine.
func BridgeCNI(t testing.TB, bridge string, subnet *net.IPNet) string {
	t.Helper()
	if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
		t.Skip("SKIP: containernetworking-plugins not installed (scripts/install-deps.sh installs them)")
	}
	dir := t.TempDir()
	ip := subnet.IP.To4()
	gw := net.IPv4(ip[0], ip[1], ip[2], ip[3]+1)
	conf, err := json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": "cocoon-test", "plugins": []any{map[string]any{
		"type": "bridge", "bridge": bridge, "isGateway": true, "ipMasq": false,
		"ipam": map[string]any{"type": "host-local", "dataDir": filepath.Join(dir, "ipam"),
			"ranges": [][]map[string]string{{{"subnet": subnet.String(), "gateway": gw.String()}}}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "10-cocoon-test.conflist"), conf, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// killShims kills shims started for this containerd (their command line
// names its address).
func killShims(address string) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(b, []byte("containerd-shim")) || !bytes.Contains(b, []byte(address)) {
			continue
		}
		var pid int
		fmt.Sscanf(filepath.Base(filepath.Dir(p)), "%d", &pid)
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// UnmountUnder unmounts every mount below dir, deepest first.
func UnmountUnder(dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var targets []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			targets = append(targets, f[4])
		}
	}
	for i := len(targets) - 1; i >= 0; i-- {
		syscall.Unmount(targets[i], syscall.MNT_DETACH)
	}
}

// SandboxProcesses lists the coco shims serving the containerd at address and
// their children (agents, VMs), as pid:name; tests of other packages may
// run pods at the same time.
func SandboxProcesses(address string) []string {
	type proc struct {
		ppid int
		name string
	}
	procs := map[int]proc{}
	shims := map[int]bool{}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		pid, _ := strconv.Atoi(filepath.Base(d))
		status, err := os.ReadFile(d + "/status")
		if err != nil {
			continue
		}
		var p proc
		for _, line := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(line, "Name:"); ok {
				p.name = strings.TrimSpace(v)
			}
			if v, ok := strings.CutPrefix(line, "PPid:"); ok {
				p.ppid, _ = strconv.Atoi(strings.TrimSpace(v))
			}
		}
		procs[pid] = p
		if cmdline, _ := os.ReadFile(d + "/cmdline"); strings.Contains(p.name, "containerd-shim") &&
			strings.Contains(string(cmdline), "coco") && strings.Contains(string(cmdline), address) {
			shims[pid] = true
		}
	}
	var found []string
	for pid, p := range procs {
		if shims[pid] || shims[p.ppid] {
			found = append(found, strconv.Itoa(pid)+":"+p.name)
		}
	}
	return found
}
