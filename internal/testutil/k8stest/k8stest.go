// Package k8stest runs a real single-node Kubernetes cluster for tests:
// etcd, kube-apiserver, kube-controller-manager, kube-scheduler, a kubelet
// and kube-proxy (iptables mode) over a private containerd with the runc
// runtime, Cocoon's runtimes (one per RuntimeClass of
// deploy/runtimeclasses.yaml) and cocoon-snapshotter, and a registry for
// the tests' images.
//
// The node lives in a network namespace of its own, joined to the host by a
// veth pair: its address, the pod and service ranges (routed from the host
// to the node) and its iptables rules are the cluster's alone, so test
// binaries running at the same time each have their own cluster. One
// cluster serves every test of a test binary: it starts with the first
// test that calls Get and stops, leaving nothing behind, when the binary
// ends. A package's tests use it through
//
//	func TestMain(m *testing.M) { os.Exit(k8stest.Main(m)) }
//
// and c := k8stest.Get(t) in each test.
package k8stest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/image/imagetest"
	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/cocoon-cc/cocoon/internal/testutil/containerdtest"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Version is the Kubernetes version of the binaries (scripts/build-k8s.sh).
const Version = "v1.34.3"

// NodeName is the cluster's one node.
const NodeName = "cocoon-node"

// NodeLabels are the node's labels the RuntimeClasses' scheduling selects:
// this node runs QEMU (without a TEE) and local sandboxes.
var NodeLabels = []string{"cocoon.io/runtime-qemu=true", "cocoon.io/runtime-local=true"}

// Cluster is a running cluster.
type Cluster struct {
	// NodeIP is the node's address, reachable from the host: the API server
	// listens on NodeIP:6443, the kubelet on NodeIP:10250.
	NodeIP string
	// HostIP is the host's address as the node sees it; the registry
	// listens on it.
	HostIP string
	// PodCIDR and ServiceCIDR are routed from the host to the node: pods
	// and Services are reachable from the test.
	PodCIDR, ServiceCIDR string
	// Registry is the image registry's host:port. Images under
	// Registry/guest/ are pulled only in Cocoon's sandboxes
	// (cocoon-snapshotter's --images); others also on the host, for runc.
	Registry string
	// Kubeconfig is a cluster-admin kubeconfig.
	Kubeconfig string
	// Containerd is the node's container runtime.
	Containerd *containerdtest.Containerd

	slot     *slot
	dir      string
	pki      *pki
	registry *imagetest.Registry
	procs    []*process

	busyboxOnce sync.Once
	busybox     string
}

// Options change the cluster of a test binary (MainWith).
type Options struct {
	// Bare gives a node whose containerd has runc alone: no Cocoon
	// runtime, snapshotter, RuntimeClass or node label, for tests that
	// install Cocoon themselves (the operator's node installer). That
	// containerd is started again whenever it exits, as systemd's
	// Restart= does, so an installer may restart it.
	Bare bool
}

var (
	opts        Options
	once        sync.Once
	shared      *Cluster
	own         *owner
	mainRunning bool
)

// Main runs the tests, then stops the cluster if one was started; a test
// binary's TestMain exits with its result.
func Main(m *testing.M) int {
	mainRunning = true
	code := m.Run()
	if own != nil {
		own.runCleanups()
		if own.failed && code == 0 {
			code = 1
		}
	}
	return code
}

// MainWith is Main for a cluster made with o.
func MainWith(m *testing.M, o Options) int {
	opts = o
	return Main(m)
}

// Get returns the test binary's cluster, starting it for the first test
// that asks (several minutes the very first time on a machine: the
// binaries are built, see BinDir). It skips loudly when the cluster cannot
// run here (not root).
func Get(t testing.TB) *Cluster {
	t.Helper()
	if !mainRunning {
		t.Fatal("k8stest: the package's TestMain must run k8stest.Main (the cluster is torn down there)")
	}
	once.Do(func() {
		own = &owner{TB: t}
		defer func() { own.TB = nil }()
		shared = start(own)
	})
	if shared == nil {
		if own.skipped != "" {
			t.Skip(own.skipped)
		}
		t.Fatal("k8stest: the cluster did not start (see the first test that used it)")
	}
	return shared
}

// BinDir is where the Kubernetes binaries are: $COCOON_K8S_BIN, else
// ${XDG_CACHE_HOME:-/var/cache}/cocoon/kubernetes/<Version> (make k8s-bins
// builds them there).
func BinDir() string {
	return testutil.ToolDir("COCOON_K8S_BIN", "kubernetes", Version)
}

// binaries builds the Kubernetes binaries when they are missing.
func binaries(t testing.TB) string {
	t.Helper()
	dir := BinDir()
	if exists(filepath.Join(dir, "kubectl")) && exists(filepath.Join(dir, "kube-apiserver")) {
		return dir
	}
	t.Logf("k8stest: building Kubernetes %s into %s (make k8s-bins does it ahead)", Version, dir)
	cmd := exec.Command("bash", "scripts/build-k8s.sh")
	cmd.Dir = testutil.RepoRoot(t)
	cmd.Env = append(os.Environ(), "COCOON_K8S_BIN="+dir, "K8S_VERSION="+Version)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("scripts/build-k8s.sh: %v\n%s", err, out)
	}
	return dir
}

// requirements skips loudly where a cluster cannot run, and fails where
// a package scripts/install-deps.sh installs is missing.
func requirements(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIP: a Kubernetes node needs root; CI runs as root")
	}
	for _, tool := range []string{"etcd", "ip", "nsenter", "iptables", "conntrack", "containerd", "runc", "docker-registry", "skopeo"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("k8stest: %s missing (scripts/install-deps.sh installs it)", tool)
		}
	}
	if !exists("/usr/lib/cni/bridge") {
		t.Fatal("k8stest: CNI plugins missing in /usr/lib/cni (scripts/install-deps.sh installs containernetworking-plugins)")
	}
}

func start(t *owner) *Cluster {
	requirements(t)
	bins := binaries(t)
	kernel, initrd := testutil.Guest(t)
	s, err := acquireSlot()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.release)
	t.Cleanup(func() {
		if err := s.tearDown(); err != nil {
			t.Errorf("%v", err)
		}
	})
	if err := s.setUp(); err != nil {
		t.Fatal(err)
	}
	c := &Cluster{slot: s, dir: s.Dir, NodeIP: s.NodeIP, HostIP: s.HostIP, PodCIDR: s.PodCIDR, ServiceCIDR: s.ServiceCIDR}
	t.root = filepath.Join(c.dir, "tmp")
	if err := os.MkdirAll(t.root, 0o700); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			for _, p := range c.procs {
				t.Log(p.tail(40))
			}
		}
	}()
	if c.pki, err = newPKI(filepath.Join(c.dir, "pki")); err == nil {
		err = c.certificates()
	}
	if err != nil {
		t.Fatal(err)
	}
	c.registry = imagetest.StartRegistryOn(t, c.HostIP+":5000")
	c.Registry = c.registry.Host
	if opts.Bare {
		c.startBareContainerd(t)
	} else {
		c.startContainerd(t, kernel, initrd)
	}
	c.startControlPlane(t, bins)
	c.startNode(t, bins)
	if !opts.Bare {
		c.Apply(t, c.readRepoFile(t, "deploy/runtimeclasses.yaml"))
	}
	return c
}

func (c *Cluster) certificates() error {
	for _, id := range c.identities() {
		if err := c.pki.issue(id); err != nil {
			return err
		}
	}
	return c.pki.keyPair("service-account")
}

// startContainerd runs cocoon-snapshotter and the node's containerd with
// the coco runtime under every handler of deploy/runtimeclasses.yaml (and
// "coco", as README's examples name it, on QEMU).
func (c *Cluster) startContainerd(t testing.TB, kernel, initrd string) {
	t.Helper()
	snapDir := filepath.Join(c.dir, "snapshotter")
	sock := filepath.Join(snapDir, "s.sock")
	ctrdDir := filepath.Join(c.dir, "containerd")
	c.run(t, "cocoon-snapshotter", false, testutil.Bin(t, "cocoon-snapshotter"), "--root", filepath.Join(snapDir, "root"),
		"--containerd-root", filepath.Join(ctrdDir, "root"), "--containerd-address", filepath.Join(ctrdDir, "c.sock"), "--address", sock,
		"--images", "^"+strings.ReplaceAll(c.Registry, ".", `\.`)+"/guest/")
	c.waitFor(t, 20*time.Second, "cocoon-snapshotter's socket", func() (bool, error) { return exists(sock), nil })

	cfgDir := filepath.Join(c.dir, "shim")
	runtimes := map[string]string{}
	for handler, cfg := range shimConfigs(kernel, initrd, testutil.Bin(t, "coco-agent")) {
		runtimes[handler] = filepath.Join(cfgDir, handler+".toml")
		c.writeFile(t, runtimes[handler], cfg)
	}
	cniDir := filepath.Join(c.dir, "cni")
	c.writeFile(t, filepath.Join(cniDir, "10-cocoon.conflist"), c.cniConfig())
	c.Containerd = containerdtest.Start(t, containerdtest.Options{
		ShimDir:     filepath.Dir(testutil.Bin(t, "containerd-shim-coco-v2")),
		ShimConfig:  runtimes["cocoon-qemu"],
		Runtimes:    runtimes,
		Registry:    c.Registry,
		Snapshotter: sock,
		Dir:         ctrdDir,
		Netns:       c.slot.NetnsPath(),
		CNIConfDir:  cniDir,
	})
	// Runs after the kubelet stopped: what it left running is stopped
	// through CRI, as the kubelet would (containers, VMs, pod networks).
	t.Cleanup(func() { c.removeSandboxes(t) })
}

// startBareContainerd runs the node's containerd with runc alone,
// supervised (Options.Bare).
func (c *Cluster) startBareContainerd(t testing.TB) {
	t.Helper()
	cniDir := filepath.Join(c.dir, "cni")
	c.writeFile(t, filepath.Join(cniDir, "10-cocoon.conflist"), c.cniConfig())
	c.Containerd = containerdtest.Start(t, containerdtest.Options{
		Registry:   c.Registry,
		Dir:        filepath.Join(c.dir, "containerd"),
		Netns:      c.slot.NetnsPath(),
		CNIConfDir: cniDir,
		Supervise:  true,
	})
	t.Cleanup(func() { c.removeSandboxes(t) })
}

func (c *Cluster) startControlPlane(t testing.TB, bins string) {
	t.Helper()
	etcdDir := filepath.Join(c.dir, "etcd")
	c.run(t, "etcd", true, "etcd", "--name", "node", "--data-dir", etcdDir,
		"--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "node=http://127.0.0.1:2380")
	p := c.pki.path
	c.run(t, "kube-apiserver", true, filepath.Join(bins, "kube-apiserver"),
		"--etcd-servers=http://127.0.0.1:2379",
		"--bind-address=0.0.0.0", "--advertise-address="+c.NodeIP, "--secure-port=6443",
		"--tls-cert-file="+p("apiserver", ".crt"), "--tls-private-key-file="+p("apiserver", ".key"),
		"--client-ca-file="+p("ca", ".crt"),
		"--kubelet-client-certificate="+p("apiserver-kubelet-client", ".crt"),
		"--kubelet-client-key="+p("apiserver-kubelet-client", ".key"),
		"--service-account-key-file="+p("service-account", ".pub"),
		"--service-account-signing-key-file="+p("service-account", ".key"),
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
		"--kubelet-preferred-address-types=InternalIP",
		"--service-cluster-ip-range="+c.ServiceCIDR, "--allow-privileged=true", "--profiling=false")
	var err error
	if c.Kubeconfig, err = c.kubeconfig("admin"); err != nil {
		t.Fatal(err)
	}
	c.waitAPIServer(t)
	for _, comp := range []struct{ name, user string }{{"kube-controller-manager", "controller-manager"}, {"kube-scheduler", "scheduler"}} {
		kc, err := c.kubeconfig(comp.user)
		if err != nil {
			t.Fatal(err)
		}
		args := []string{"--kubeconfig=" + kc, "--authentication-kubeconfig=" + kc, "--authorization-kubeconfig=" + kc,
			"--leader-elect=false", "--bind-address=127.0.0.1"}
		if comp.name == "kube-controller-manager" {
			args = append(args, "--use-service-account-credentials",
				"--service-account-private-key-file="+p("service-account", ".key"),
				"--root-ca-file="+p("ca", ".crt"),
				"--cluster-signing-cert-file="+p("ca", ".crt"), "--cluster-signing-key-file="+p("ca", ".key"),
				"--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller")
		}
		c.run(t, comp.name, true, filepath.Join(bins, comp.name), args...)
	}
}

// waitAPIServer waits until the API server answers /readyz.
func (c *Cluster) waitAPIServer(t testing.TB) {
	t.Helper()
	ca, err := os.ReadFile(c.pki.path("ca", ".crt"))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(c.pki.path("admin", ".crt"), c.pki.path("admin", ".key"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}}}
	c.waitFor(t, 2*time.Minute, "kube-apiserver /readyz", func() (bool, error) {
		resp, err := client.Get("https://" + c.NodeIP + ":6443/readyz")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
}

func (c *Cluster) startNode(t testing.TB, bins string) {
	t.Helper()
	kubelet, err := c.kubeconfig("kubelet")
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(c.dir, "kubelet.yaml")
	c.writeFile(t, cfg, c.kubeletConfig())
	restoreKernelTunables(t)
	// Two dead instances per container, as README advises for Cocoon
	// nodes: the kubelet's garbage collector counts a container being
	// started as dead, and with one it removes the instance a restart
	// replaces while the VM creates the new one (its lastState lost).
	args := []string{"--config=" + cfg, "--kubeconfig=" + kubelet, "--maximum-dead-containers-per-container=2",
		"--root-dir=" + filepath.Join(c.dir, "kubelet"), "--hostname-override=" + NodeName, "--node-ip=" + c.NodeIP}
	if !opts.Bare {
		args = append(args, "--node-labels="+strings.Join(NodeLabels, ","))
	}
	c.run(t, "kubelet", true, filepath.Join(bins, "kubelet"), args...)
	proxy, err := c.kubeconfig("kube-proxy")
	if err != nil {
		t.Fatal(err)
	}
	pcfg := filepath.Join(c.dir, "kube-proxy.yaml")
	c.writeFile(t, pcfg, c.proxyConfig(proxy))
	c.run(t, "kube-proxy", true, filepath.Join(bins, "kube-proxy"), "--config="+pcfg)
	c.waitFor(t, 3*time.Minute, "node "+NodeName+" Ready", func() (bool, error) {
		out, err := c.TryKubectl("", "get", "node", NodeName, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		return err == nil && out == "True", nil
	})
	// Pods need their namespace's default ServiceAccount.
	c.waitFor(t, time.Minute, "the default ServiceAccount", func() (bool, error) {
		_, err := c.TryKubectl("", "get", "serviceaccount", "default")
		return err == nil, nil
	})
	// Runs first at teardown, while the kubelet still runs.
	t.Cleanup(func() { c.drain(t) })
}

// drain deletes every workload the tests left and waits (a minute at most)
// for the kubelet to stop their pods: a pod still starting (a sandbox being
// created) is stopped once it has started, which containerd alone would
// not do for it.
func (c *Cluster) drain(t testing.TB) {
	if _, err := c.TryKubectl("", "delete", "all", "--all", "--all-namespaces", "--wait=false"); err != nil {
		t.Logf("drain: %v", err)
		return
	}
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(time.Second) {
		// Pods a controller made before it was deleted go too, quickly.
		c.TryKubectl("", "delete", "pods", "--all", "--all-namespaces", "--grace-period=1", "--wait=false")
		if out, err := c.TryKubectl("", "get", "pods", "--all-namespaces", "-o", "name"); err == nil && strings.TrimSpace(out) == "" {
			return
		}
	}
	t.Logf("drain: pods left after a minute")
}

// removeSandboxes stops and removes every pod sandbox left in containerd.
func (c *Cluster) removeSandboxes(t testing.TB) {
	rs := c.Containerd.RuntimeService(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pods, err := rs.ListPodSandbox(ctx, &cri.PodSandboxFilter{})
	if err != nil {
		t.Errorf("list pod sandboxes: %v", err)
		return
	}
	for _, p := range pods {
		if err := rs.StopPodSandbox(ctx, p.Id); err != nil {
			t.Errorf("stop pod sandbox %s: %v", p.Metadata.GetName(), err)
		}
		if err := rs.RemovePodSandbox(ctx, p.Id); err != nil {
			t.Errorf("remove pod sandbox %s: %v", p.Metadata.GetName(), err)
		}
	}
}

// waitFor polls cond until it holds, failing the test after timeout or when
// a daemon of the cluster has exited.
func (c *Cluster) waitFor(t testing.TB, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok {
			return
		}
		for _, p := range c.procs {
			if p.exited() {
				t.Fatalf("waiting for %s: %s exited\n%s", what, p.name, p.tail(40))
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v", what, timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (c *Cluster) writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (c *Cluster) readRepoFile(t testing.TB, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testutil.RepoRoot(t), name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Logs is the end (n lines) of a daemon's log: etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, kubelet, kube-proxy,
// cocoon-snapshotter; containerd's is Containerd.Logs().
func (c *Cluster) Logs(name string, n int) string {
	for _, p := range c.procs {
		if p.name == name {
			return p.tail(n)
		}
	}
	return ""
}

// kubeletTunables are the host's sysctls a kubelet sets at start (it
// expects them of a node); the test machine gets its own values back.
var kubeletTunables = []string{"vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops"}

// restoreKernelTunables puts back, at teardown, the values the kubelet is
// about to change.
func restoreKernelTunables(t testing.TB) {
	saved := map[string][]byte{}
	for _, k := range kubeletTunables {
		if b, err := os.ReadFile("/proc/sys/" + k); err == nil {
			saved[k] = b
		}
	}
	t.Cleanup(func() {
		for k, v := range saved {
			if err := os.WriteFile("/proc/sys/"+k, v, 0o644); err != nil {
				t.Errorf("restore %s: %v", k, err)
			}
		}
	})
}
