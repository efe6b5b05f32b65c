package local_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/opencontainers/runc/libcontainer/specconv"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cocoon-cc/cocoon/agent/policy"
	"github.com/cocoon-cc/cocoon/image/imagetest"
	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/cocoon-cc/cocoon/internal/testutil/nettest"
	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
	"github.com/cocoon-cc/cocoon/runtime/sandbox"
	"github.com/cocoon-cc/cocoon/runtime/sandbox/local"
)

func needRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIP: the local sandbox needs root (namespaces, cgroups); CI runs as root")
	}
}

// initdataWithPolicy is an initdata document carrying an agent policy.
func initdataWithPolicy(rego string) []byte {
	return []byte("version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"policy.rego\" = '''\n" + rego + "\n'''\n")
}

// pod starts a local sandbox and returns an agent client.
func pod(t *testing.T, id string, initdata []byte) (*local.Sandbox, pb.AgentServiceService) {
	t.Helper()
	return podIn(t, id, initdata, "")
}

// podIn is pod in the pod network namespace at netns (CNI's).
func podIn(t *testing.T, id string, initdata []byte, netns string) (*local.Sandbox, pb.AgentServiceService) {
	t.Helper()
	needRoot(t)
	sb, err := local.New(sandbox.Config{ID: id, StateDir: t.TempDir(), Initdata: initdata, NetNS: netns},
		local.Options{AgentPath: testutil.Bin(t, "coco-agent")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sb.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := sb.Stop(ctx); err != nil {
			t.Errorf("stop: %v", err)
		}
		if dirs, _ := filepath.Glob("/sys/fs/cgroup/*/cocoon/" + id); len(dirs) > 0 {
			t.Errorf("cgroups left after Stop: %v", dirs)
		}
	})
	conn, err := sb.Dial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := ttrpc.NewClient(conn)
	t.Cleanup(func() { c.Close() })
	return sb, pb.NewAgentServiceClient(c)
}

// busybox pushes a busybox image to a fresh registry and returns its ref.
func busybox(t *testing.T) string {
	reg := imagetest.StartRegistry(t)
	img := imagetest.New(t, ocispec.ImageConfig{Cmd: []string{"/bin/sh"}, Env: []string{"PATH=/bin"}}, imagetest.BusyboxLayer(t))
	reg.Push(t, img, "busybox:1", nil)
	return reg.Host + "/busybox:1"
}

// spec is runc's example spec running args, as a shim would send it.
func spec(args ...string) *pb.Spec {
	s := specconv.Example()
	s.Process.Terminal = false
	s.Process.Args = args
	s.Process.Env = []string{"PATH=/bin"}
	return pb.SpecFromOCI(s)
}

// pullStorage is Kata's storage pulling ref in the guest for container id.
func pullStorage(t testing.TB, id, ref string) []*pb.Storage {
	s, err := pb.GuestPullStorage(id, ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	return []*pb.Storage{s}
}

func create(ctx context.Context, t *testing.T, a pb.AgentServiceService, id, ref string, args ...string) {
	t.Helper()
	_, err := a.CreateContainer(ctx, &pb.CreateContainerRequest{ContainerId: id, ExecId: id, OCI: spec(args...),
		Storages: pullStorage(t, id, ref)})
	if err != nil {
		t.Fatalf("create %s: %v", id, err)
	}
}

// readAll reads a stream until its end.
func readAll(ctx context.Context, t *testing.T, read func(context.Context, *pb.ReadStreamRequest) (*pb.ReadStreamResponse, error), cid, eid string) string {
	var out strings.Builder
	for {
		r, err := read(ctx, &pb.ReadStreamRequest{ContainerId: cid, ExecId: eid, Len: 4096})
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if len(r.Data) == 0 {
			return out.String()
		}
		out.Write(r.Data)
	}
}

// TestContainerLifecycle runs a container through the agent in a local
// sandbox: the image is pulled by the agent, stdout and stderr reach the
// host, the exit status is the process's, and exec runs in the container.
func TestContainerLifecycle(t *testing.T) {
	ref := busybox(t)
	sb, a := pod(t, "lifecycle", initdataWithPolicy(policy.AllowAll()))
	if info := sb.Info(); info.Confidential || info.Backend != "local" || info.Pid == 0 {
		t.Fatalf("info %+v", info)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := a.CreateSandbox(ctx, &pb.CreateSandboxRequest{SandboxId: "lifecycle", Hostname: "podhost"}); err != nil {
		t.Fatal(err)
	}
	create(ctx, t, a, "c1", ref, "/bin/sh", "-c", "read line; echo out:$line:$(hostname); echo err >&2; exit 7")
	if _, err := a.StartContainer(ctx, &pb.StartContainerRequest{ContainerId: "c1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.WriteStdin(ctx, &pb.WriteStreamRequest{ContainerId: "c1", ExecId: "c1", Data: []byte("hi\n")}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.CloseStdin(ctx, &pb.CloseStdinRequest{ContainerId: "c1", ExecId: "c1"}); err != nil {
		t.Fatal(err)
	}
	if out := readAll(ctx, t, a.ReadStdout, "c1", "c1"); out != "out:hi:podhost\n" {
		t.Errorf("stdout %q", out)
	}
	if out := readAll(ctx, t, a.ReadStderr, "c1", "c1"); out != "err\n" {
		t.Errorf("stderr %q", out)
	}
	w, err := a.WaitProcess(ctx, &pb.WaitProcessRequest{ContainerId: "c1", ExecId: "c1"})
	if err != nil || w.Status != 7 {
		t.Fatalf("wait: %v %v, want status 7", w, err)
	}
	if _, err := a.RemoveContainer(ctx, &pb.RemoveContainerRequest{ContainerId: "c1"}); err != nil {
		t.Fatal(err)
	}

	create(ctx, t, a, "c2", ref, "/bin/sleep", "1000")
	if _, err := a.StartContainer(ctx, &pb.StartContainerRequest{ContainerId: "c2"}); err != nil {
		t.Fatal(err)
	}
	proc := &pb.Process{Args: []string{"/bin/cat", "/proc/1/cmdline"}, Env: []string{"PATH=/bin"}, Cwd: "/", User: &pb.User{}}
	if _, err := a.ExecProcess(ctx, &pb.ExecProcessRequest{ContainerId: "c2", ExecId: "e1", Process: proc}); err != nil {
		t.Fatal(err)
	}
	if out := readAll(ctx, t, a.ReadStdout, "c2", "e1"); out != "/bin/sleep\x001000\x00" {
		t.Errorf("exec stdout %q: the exec did not see the container's PID 1", out)
	}
	if w, err := a.WaitProcess(ctx, &pb.WaitProcessRequest{ContainerId: "c2", ExecId: "e1"}); err != nil || w.Status != 0 {
		t.Fatalf("exec wait: %v %v", w, err)
	}
	if st, err := a.StatsContainer(ctx, &pb.StatsContainerRequest{ContainerId: "c2"}); err != nil || st.CgroupStats == nil {
		t.Errorf("stats: %v %v", st, err)
	}
	if _, err := a.SignalProcess(ctx, &pb.SignalProcessRequest{ContainerId: "c2", Signal: 9}); err != nil {
		t.Fatal(err)
	}
	if w, err := a.WaitProcess(ctx, &pb.WaitProcessRequest{ContainerId: "c2"}); err != nil || w.Status != 137 {
		t.Fatalf("killed wait: %v %v, want 137", w, err)
	}
	if _, err := a.DestroySandbox(ctx, &pb.DestroySandboxRequest{}); err != nil {
		t.Fatal(err)
	}
	if dirs, _ := filepath.Glob("/sys/fs/cgroup/*/cocoon/lifecycle/c[0-9]"); len(dirs) > 0 {
		t.Errorf("cgroups left: %v", dirs)
	}
}

// TestDefaultPolicy: with the default policy a pod runs, but the host may
// neither exec into it nor read its output (the read answers no data).
func TestDefaultPolicy(t *testing.T) {
	ref := busybox(t)
	_, a := pod(t, "policy", nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := a.CreateSandbox(ctx, &pb.CreateSandboxRequest{SandboxId: "policy"}); err != nil {
		t.Fatal(err)
	}
	create(ctx, t, a, "c1", ref, "/bin/sh", "-c", "echo secret; sleep 1000")
	if _, err := a.StartContainer(ctx, &pb.StartContainerRequest{ContainerId: "c1"}); err != nil {
		t.Fatal(err)
	}
	// As Kata's agent: a denied read succeeds with its data withheld.
	out, err := a.ReadStdout(ctx, &pb.ReadStreamRequest{ContainerId: "c1", ExecId: "c1", Len: 10})
	if err != nil || len(out.GetData()) != 0 || !out.GetWithheld() {
		t.Errorf("ReadStdout: %q withheld=%v %v, want no data, withheld", out.GetData(), out.GetWithheld(), err)
	}
	proc := &pb.Process{Args: []string{"/bin/true"}, Cwd: "/", User: &pb.User{}}
	_, err = a.ExecProcess(ctx, &pb.ExecProcessRequest{ContainerId: "c1", ExecId: "e1", Process: proc})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("ExecProcess: %v, want PermissionDenied", err)
	}
	if _, err := a.SetPolicy(ctx, &pb.SetPolicyRequest{Policy: policy.AllowAll()}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("SetPolicy: %v, want PermissionDenied", err)
	}
}

// TestBadRequests: bad requests get typed errors and leave nothing behind.
func TestBadRequests(t *testing.T) {
	ref := busybox(t)
	_, a := pod(t, "bad", initdataWithPolicy(policy.AllowAll()))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for name, tc := range map[string]struct {
		req  *pb.CreateContainerRequest
		code codes.Code
	}{
		"path in id":     {&pb.CreateContainerRequest{ContainerId: "../etc", OCI: spec("/bin/true")}, codes.InvalidArgument},
		"no spec":        {&pb.CreateContainerRequest{ContainerId: "c"}, codes.InvalidArgument},
		"no image":       {&pb.CreateContainerRequest{ContainerId: "c", OCI: spec("/bin/true")}, codes.InvalidArgument},
		"unknown driver": {&pb.CreateContainerRequest{ContainerId: "c", OCI: spec("/bin/true"), Storages: []*pb.Storage{{Driver: "virtio-fs"}}}, codes.Unimplemented},
		"missing image": {&pb.CreateContainerRequest{ContainerId: "c", OCI: spec("/bin/true"),
			Storages: pullStorage(t, "c", strings.Replace(ref, "busybox:1", "nothere:1", 1))}, codes.Unavailable},
		"other container's rootfs": {&pb.CreateContainerRequest{ContainerId: "c", OCI: spec("/bin/true"),
			Storages: pullStorage(t, "d", ref)}, codes.InvalidArgument},
		"two storages": {&pb.CreateContainerRequest{ContainerId: "c", OCI: spec("/bin/true"),
			Storages: append(pullStorage(t, "c", ref), pullStorage(t, "c", ref)...)}, codes.Unimplemented},
		"shared mounts": {&pb.CreateContainerRequest{ContainerId: "c", OCI: spec("/bin/true"), Storages: pullStorage(t, "c", ref),
			SharedMounts: []*pb.SharedMount{{Name: "m", SrcCtr: "d", SrcPath: "/", DstCtr: "c", DstPath: "/d"}}}, codes.Unimplemented},
	} {
		if _, err := a.CreateContainer(ctx, tc.req); status.Code(err) != tc.code {
			t.Errorf("%s: %v, want %s", name, err, tc.code)
		}
	}
	for name, err := range map[string]error{
		"start unknown":  errOf(a.StartContainer(ctx, &pb.StartContainerRequest{ContainerId: "nope"})),
		"wait unknown":   errOf(a.WaitProcess(ctx, &pb.WaitProcessRequest{ContainerId: "nope"})),
		"remove unknown": errOf(a.RemoveContainer(ctx, &pb.RemoveContainerRequest{ContainerId: "nope"})),
	} {
		if status.Code(err) != codes.NotFound {
			t.Errorf("%s: %v, want NotFound", name, err)
		}
	}
	// The failed creates left the id free.
	create(ctx, t, a, "c", ref, "/bin/true")
	if _, err := a.CreateContainer(ctx, &pb.CreateContainerRequest{ContainerId: "c", OCI: spec("/bin/true"),
		Storages: pullStorage(t, "c", ref)}); status.Code(err) != codes.AlreadyExists {
		t.Errorf("duplicate: %v, want AlreadyExists", err)
	}
}

func errOf[T any](_ T, err error) error { return err }

// TestAgentCrash: a sandbox whose agent dies reports it on Done and Err.
func TestAgentCrash(t *testing.T) {
	sb, _ := pod(t, "crash", nil)
	if err := syscallKill(sb.Info().Pid); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sb.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed after the agent died")
	}
	if err := sb.Err(); err == nil || !strings.Contains(err.Error(), "agent exited") {
		t.Fatalf("Err %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := sb.Dial(ctx); !errors.Is(err, sandbox.ErrAgentUnreachable) {
		t.Fatalf("dial a dead sandbox: %v", err)
	}
}

func syscallKill(pid int) error { return syscall.Kill(pid, syscall.SIGKILL) }

// TestTerminal: a container asking for a terminal gets a pty: it sees a
// tty, its output comes through the terminal and it can be resized.
func TestTerminal(t *testing.T) {
	ref := busybox(t)
	_, a := pod(t, "tty", initdataWithPolicy(policy.AllowAll()))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := a.CreateSandbox(ctx, &pb.CreateSandboxRequest{SandboxId: "tty"}); err != nil {
		t.Fatal(err)
	}
	s := spec("/bin/sh", "-c", "test -t 0 && test -t 1 && echo on-a-tty")
	s.Process.Terminal = true
	s.Process.ConsoleSize = &pb.Box{Height: 24, Width: 80}
	_, err := a.CreateContainer(ctx, &pb.CreateContainerRequest{ContainerId: "t1", ExecId: "t1", OCI: s,
		Storages: pullStorage(t, "t1", ref)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.TtyWinResize(ctx, &pb.TtyWinResizeRequest{ContainerId: "t1", ExecId: "t1", Row: 40, Column: 120}); err != nil {
		t.Fatalf("resize: %v", err)
	}
	if _, err := a.StartContainer(ctx, &pb.StartContainerRequest{ContainerId: "t1"}); err != nil {
		t.Fatal(err)
	}
	if out := readAll(ctx, t, a.ReadStdout, "t1", "t1"); !strings.Contains(out, "on-a-tty") {
		t.Errorf("terminal output %q", out)
	}
	if w, err := a.WaitProcess(ctx, &pb.WaitProcessRequest{ContainerId: "t1", ExecId: "t1"}); err != nil || w.Status != 0 {
		t.Fatalf("wait: %v %v", w, err)
	}
	if _, err := a.TtyWinResize(ctx, &pb.TtyWinResizeRequest{ContainerId: "nope", Row: 1, Column: 1}); status.Code(err) != codes.NotFound {
		t.Errorf("resize of an unknown container: %v", err)
	}
}

// TestPodNetwork: a sandbox given the pod's network namespace (CNI's) runs
// its agent, and so its containers, there: it has the pod's address.
func TestPodNetwork(t *testing.T) {
	nsPath, _, podIP := nettest.Pod(t)
	_, a := podIn(t, "netpod", nil, nsPath)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ifaces, err := a.ListInterfaces(ctx, &pb.ListInterfacesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for _, i := range ifaces.Interfaces {
		for _, ip := range i.IPAddresses {
			addrs = append(addrs, i.Name+"="+ip.Address)
		}
	}
	if !slices.Contains(addrs, "eth0="+podIP.String()) {
		t.Errorf("the agent's interfaces %v lack the pod's eth0 %s", addrs, podIP)
	}
	// A namespace that is gone: Start fails, saying so.
	sb, err := local.New(sandbox.Config{ID: "nonet", StateDir: t.TempDir(), NetNS: "/run/netns/cocoon-gone"},
		local.Options{AgentPath: testutil.Bin(t, "coco-agent")})
	if err != nil {
		t.Fatal(err)
	}
	if err := sb.Start(ctx); err == nil || !strings.Contains(err.Error(), "network namespace /run/netns/cocoon-gone") {
		sb.Stop(ctx)
		t.Errorf("start in a missing namespace: %v", err)
	}
}
