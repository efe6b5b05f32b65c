package qemu

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/opencontainers/runc/libcontainer/specconv"

	"github.com/cocoon-cc/cocoon/agent/policy"
	"github.com/cocoon-cc/cocoon/image/imagetest"
	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/cocoon-cc/cocoon/internal/testutil/nettest"
	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
	"github.com/cocoon-cc/cocoon/runtime/network"
	"github.com/cocoon-cc/cocoon/runtime/sandbox"
)

var doc = []byte("version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n\"policy.rego\" = '''\n" + policy.AllowAll() + "\n'''\n")

func argsOf(t *testing.T, o Options) string {
	t.Helper()
	o.Kernel, o.Initrd = "/k", "/i"
	s, err := New(sandbox.Config{ID: "pod", StateDir: "/run/x", Initdata: doc}, o)
	if err != nil {
		t.Fatal(err)
	}
	a, err := s.Args()
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(a, " ")
}

func TestArgs(t *testing.T) {
	none := argsOf(t, Options{})
	for _, want := range []string{"-machine q35,accel=tcg", "-m 256M,slots=10,maxmem=", "-smp 1,maxcpus=",
		"-qmp unix:/run/x/qmp.sock,server=on,wait=off", "virtserialport,chardev=agent,name=agent.0",
		"socket,id=agent,path=/run/x/agent.sock", "serial=initdata", "cocoon.channel=serial", "-no-reboot"} {
		if !strings.Contains(none, want) {
			t.Errorf("tee none: %q missing in %s", want, none)
		}
	}
	// No network unless asked: pods get CNI's, never the host's loopback.
	if strings.Contains(none, "-netdev") || strings.Contains(none, "cocoon.net") {
		t.Errorf("tee none: a network without a pod namespace or user_network: %s", none)
	}
	user := argsOf(t, Options{UserNetwork: true, UserForwards: []uint16{5000}})
	for _, want := range []string{"user,id=user0,restrict=on,guestfwd=tcp:10.0.2.100:5000-cmd:busybox nc 127.0.0.1 5000",
		"virtio-net-pci,netdev=user0,mac=52:54:00:12:34:56", "cocoon.net=user"} {
		if !strings.Contains(user, want) {
			t.Errorf("user network: %q missing in %s", want, user)
		}
	}
	sum256, sum384 := sha256.Sum256(doc), sha512.Sum384(doc)
	snp := argsOf(t, Options{TEE: "snp", Firmware: "/ovmf", CPU: "EPYC-v4"})
	for _, want := range []string{"confidential-guest-support=sev0", "sev-snp-guest", "kernel-hashes=on",
		"host-data=" + base64.StdEncoding.EncodeToString(sum256[:]), "-bios /ovmf", "accel=kvm", "-smp 1 -m 256 "} {
		if !strings.Contains(snp, want) {
			t.Errorf("snp: %q missing in %s", want, snp)
		}
	}
	tdx := argsOf(t, Options{TEE: "tdx", Firmware: "/ovmf", Channel: "vsock"})
	for _, want := range []string{"tdx-guest", "mrconfigid=" + base64.StdEncoding.EncodeToString(sum384[:]),
		"vhost-vsock-pci,guest-cid=", "cocoon.channel=vsock"} {
		if !strings.Contains(tdx, want) {
			t.Errorf("tdx: %q missing in %s", want, tdx)
		}
	}
}

// TestTapArgs: each tap of the pod network is a virtio-net NIC with the
// CNI interface's MAC, its queue passed as a descriptor; vhost-net only
// under KVM.
func TestTapArgs(t *testing.T) {
	mac, _ := net.ParseMAC("02:42:0a:58:00:05")
	for _, accel := range []string{"tcg", "kvm"} {
		s, err := New(sandbox.Config{ID: "pod", StateDir: "/run/x"}, Options{Kernel: "/k", Initrd: "/i", Accel: accel})
		if err != nil {
			t.Fatal(err)
		}
		s.net = &network.Pod{NICs: []network.NIC{{MAC: mac}, {MAC: mac}}}
		a, _ := s.Args()
		args := strings.Join(a, " ")
		vhost := "off"
		if _, err := os.Stat(vhostNode); err == nil && accel == "kvm" {
			vhost = "on"
		}
		for _, want := range []string{"-netdev tap,id=pod0,fd=3,vhost=" + vhost, "-netdev tap,id=pod1,fd=4,vhost=" + vhost,
			"-device virtio-net-pci,netdev=pod0,mac=02:42:0a:58:00:05"} {
			if !strings.Contains(args, want) {
				t.Errorf("%s: %q missing in %s", accel, want, args)
			}
		}
	}
}

// TestMeasuredCmdline: make guest measures the command line the backend
// boots with (SNP hashes it into the launch digest).
func TestMeasuredCmdline(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(testutil.RepoRoot(t), "scripts", "build-guest.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if want := `CMDLINE=${CMDLINE:-"` + Cmdline("serial", "") + `"}`; !strings.Contains(string(b), want) {
		t.Fatalf("build-guest.sh does not measure %q", want)
	}
}

func TestOptionErrors(t *testing.T) {
	for name, o := range map[string]Options{
		"no kernel":     {Initrd: "/i"},
		"tee":           {Kernel: "/k", Initrd: "/i", TEE: "sgx"},
		"snp on tcg":    {Kernel: "/k", Initrd: "/i", TEE: "snp", Accel: "tcg", Firmware: "/f"},
		"snp no ovmf":   {Kernel: "/k", Initrd: "/i", TEE: "snp"},
		"channel":       {Kernel: "/k", Initrd: "/i", Channel: "tcp"},
		"accel":         {Kernel: "/k", Initrd: "/i", Accel: "hvf"},
		"relative path": {Kernel: "/k", Initrd: "/i"},
		"forwards":      {Kernel: "/k", Initrd: "/i", UserForwards: []uint16{80}},
		"port 0":        {Kernel: "/k", Initrd: "/i", UserNetwork: true, UserForwards: []uint16{0}},
	} {
		dir := "/run/x"
		if name == "relative path" {
			dir = "x"
		}
		if _, err := New(sandbox.Config{ID: "p", StateDir: dir}, o); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// guestFor is make guest's output, for benchmarks too.
func guestFor(t testing.TB) (kernel, initrd string) { return testutil.Guest(t) }

// benchConfig is a fresh sandbox configuration.
func benchConfig(t testing.TB) sandbox.Config {
	return sandbox.Config{ID: t.Name(), StateDir: t.TempDir(), MemoryMiB: 512}
}

func boot(t *testing.T, o Options, init []byte, netns string) *Sandbox {
	t.Helper()
	o.Kernel, o.Initrd = testutil.Guest(t)
	o.Accel = "tcg" // this machine's /dev/kvm cannot run vCPUs
	s, err := New(sandbox.Config{ID: t.Name(), StateDir: t.TempDir(), Initdata: init, MaxVCPUs: 4, NetNS: netns}, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Stop(context.Background())
		if t.Failed() {
			t.Logf("console:\n%s", s.consoleTail())
		}
	})
	return s
}

// TestVM boots the real guest in TCG attached to a pod network namespace
// (a veth to the host, as CNI makes), tells the agent its network, runs a
// container pulled inside the VM from a registry on the host's end of the
// veth, and then sees the VM crash and its tap go with it.
func TestVM(t *testing.T) {
	netns, hostIP, podIP := nettest.Pod(t)
	reg := imagetest.StartRegistryOn(t, net.JoinHostPort(hostIP.String(), "0"))
	img := imagetest.New(t, ocispec.ImageConfig{Cmd: []string{"/bin/sh"}, Env: []string{"PATH=/bin"}}, imagetest.BusyboxLayer(t))
	reg.Push(t, img, "busybox:1", nil)
	ref := reg.Host + "/busybox:1"

	s := boot(t, Options{}, doc, netns)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	start := time.Now()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("boot to agent: %v", time.Since(start))
	if info := s.Info(); info.Backend != "qemu" || info.Confidential || info.Pid == 0 {
		t.Errorf("info %+v", info)
	}
	conn, err := s.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := ttrpc.NewClient(conn)
	defer c.Close()
	a := pb.NewAgentServiceClient(c)
	d, err := a.GetGuestDetails(ctx, &pb.GuestDetailsRequest{})
	if err != nil || !d.AgentDetails.InitDaemon && !slices.Contains(d.AgentDetails.StorageHandlers, "image_guest_pull") {
		t.Fatalf("guest details %v %v", d, err)
	}
	g := s.GuestNetwork()
	if len(g.Interfaces) != 1 || g.Interfaces[0].IPAddresses[0].Address != podIP.String() {
		t.Fatalf("guest network %v", g)
	}
	iface, err := a.UpdateInterface(ctx, &pb.UpdateInterfaceRequest{Interface: g.Interfaces[0]})
	if err != nil || iface.Name != "eth0" || iface.HwAddr != g.Interfaces[0].HwAddr {
		t.Fatalf("UpdateInterface: %v %v", iface, err)
	}
	if _, err := a.UpdateRoutes(ctx, &pb.UpdateRoutesRequest{Routes: &pb.Routes{Routes: g.Routes}}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreateSandbox(ctx, &pb.CreateSandboxRequest{SandboxId: "vm", Hostname: "vmpod"}); err != nil {
		t.Fatal(err)
	}
	// The VM grows: a vCPU and 256 MiB hot-plugged, brought online by the
	// agent, seen by the container.
	if v, m := s.Size(); v != 1 || m != 256 {
		t.Fatalf("boot size %d vCPUs %d MiB", v, m)
	}
	if v, m, err := s.Resize(ctx, 2, 400); err != nil || v != 2 || m != 512 {
		t.Fatalf("Resize: %d vCPUs %d MiB, %v; want 2, 512", v, m, err)
	}
	if _, err := a.OnlineCPUMem(ctx, &pb.OnlineCPUMemRequest{Wait: true, NbCpus: 1}); err != nil {
		t.Fatal(err)
	}
	out := runContainer(ctx, t, a, "c1", ref, "echo hello from $(hostname) $(cat /proc/sys/kernel/osrelease); "+
		"grep -c ^processor /proc/cpuinfo; grep MemTotal /proc/meminfo")
	if !strings.HasPrefix(out, "hello from vmpod 6.") {
		t.Errorf("container output %q", out)
	}
	var cpus, memKiB int
	if lines := strings.Split(out, "\n"); len(lines) > 2 {
		cpus, _ = strconv.Atoi(lines[1])
		fmt.Sscanf(lines[2], "MemTotal: %d kB", &memKiB)
	}
	// MemTotal is the RAM less what the kernel keeps for itself.
	if cpus != 2 || memKiB < 400<<10 || memKiB > 512<<10 {
		t.Errorf("the guest has %d vCPUs and %d KiB after growing to 2 and 512 MiB", cpus, memKiB)
	}

	// The VM dies under the pod: Done fires and Err says so.
	syscall.Kill(s.Pid(), syscall.SIGKILL)
	select {
	case <-s.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed after QEMU died")
	}
	if err := s.Err(); err == nil || !strings.Contains(err.Error(), "VM exited") {
		t.Fatalf("Err %v", err)
	}
	out2, _ := exec.Command("ip", "-n", filepath.Base(netns), "link", "show").CombinedOutput()
	if strings.Contains(string(out2), "tap0_coco") {
		t.Errorf("tap left after QEMU died:\n%s", out2)
	}
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	out2, _ = exec.Command("tc", "-n", filepath.Base(netns), "qdisc", "show", "dev", "eth0").CombinedOutput()
	if strings.Contains(string(out2), "ingress") {
		t.Errorf("ingress qdisc left on eth0 after Stop:\n%s", out2)
	}
}

// runContainer runs script in a container of the image ref, pulled in the
// guest, and returns its output once it exited with status 0.
func runContainer(ctx context.Context, t *testing.T, a pb.AgentServiceService, id, ref, script string) string {
	t.Helper()
	spec := specconv.Example()
	spec.Process.Terminal = false
	spec.Process.Args = []string{"/bin/sh", "-c", script}
	storage, err := pb.GuestPullStorage(id, ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.CreateContainer(ctx, &pb.CreateContainerRequest{ContainerId: id, ExecId: id, OCI: pb.SpecFromOCI(spec),
		Storages: []*pb.Storage{storage}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.StartContainer(ctx, &pb.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	for {
		r, err := a.ReadStdout(ctx, &pb.ReadStreamRequest{ContainerId: id, ExecId: id, Len: 4096})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Data) == 0 {
			break
		}
		out.Write(r.Data)
	}
	if w, err := a.WaitProcess(ctx, &pb.WaitProcessRequest{ContainerId: id, ExecId: id}); err != nil || w.Status != 0 {
		t.Fatalf("wait %v %v; output %q", w, err, out.String())
	}
	return out.String()
}

// TestUserNetwork: with user_network (development), the guest is on
// QEMU's restricted user network: it pulls an image from a registry on
// the host's loopback through the one port forwarded to it, and reaches
// no other port of the host's loopback.
func TestUserNetwork(t *testing.T) {
	reg := imagetest.StartRegistry(t)
	reg.Push(t, imagetest.New(t, ocispec.ImageConfig{Env: []string{"PATH=/bin"}}, imagetest.BusyboxLayer(t)), "busybox:1", nil)
	_, port, _ := net.SplitHostPort(reg.Host)
	regPort, _ := strconv.Atoi(port)
	secretPort, reached := nettest.LoopbackService(t)

	s := boot(t, Options{UserNetwork: true, UserForwards: []uint16{uint16(regPort)}}, doc, "")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	conn, err := s.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := ttrpc.NewClient(conn)
	defer c.Close()
	a := pb.NewAgentServiceClient(c)
	for _, iface := range s.GuestNetwork().Interfaces {
		if _, err := a.UpdateInterface(ctx, &pb.UpdateInterfaceRequest{Interface: iface}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.CreateSandbox(ctx, &pb.CreateSandboxRequest{SandboxId: "user", Hostname: "user"}); err != nil {
		t.Fatal(err)
	}
	out := runContainer(ctx, t, a, "c1", reg.Host+"/busybox:1", fmt.Sprintf(
		"for a in 10.0.2.2 10.0.2.100; do echo x | nc -w 3 $a %d && echo reached; done; echo done", secretPort))
	if out != "done\n" || reached() != 0 {
		t.Errorf("a port of the host's loopback not forwarded answered: %q, %d connections", out, reached())
	}
}

// TestAgentUnreachable: a guest that cannot boot (no init: the kernel
// panics) ends its VM; Start fails with ErrAgentUnreachable well before
// its deadline, nothing left running.
func TestAgentUnreachable(t *testing.T) {
	s := boot(t, Options{KernelParams: "rdinit=/no/such/init"}, nil, "")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	err := s.Start(ctx)
	if !errors.Is(err, sandbox.ErrAgentUnreachable) {
		t.Fatalf("Start: %v, want ErrAgentUnreachable", err)
	}
	if ctx.Err() != nil {
		t.Fatal("Start waited for its whole deadline")
	}
	select {
	case <-s.Done():
	default:
		t.Fatal("QEMU still running")
	}
}
