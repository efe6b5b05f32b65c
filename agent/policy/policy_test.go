package policy

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/cocoon-cc/cocoon/agent"
	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
)

func mustNew(t testing.TB, text string) *Engine {
	t.Helper()
	e, err := New(context.Background(), text)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// requests has one request of every kind the agent serves.
var requests = map[string]proto.Message{
	"CreateSandboxRequest":   &pb.CreateSandboxRequest{SandboxId: "p"},
	"DestroySandboxRequest":  &pb.DestroySandboxRequest{},
	"GuestDetailsRequest":    &pb.GuestDetailsRequest{},
	"PullImageRequest":       &pb.PullImageRequest{Image: "r/i:1", ContainerId: "c"},
	"CreateContainerRequest": &pb.CreateContainerRequest{ContainerId: "c", OCI: &pb.Spec{Process: &pb.Process{Args: []string{"/app"}}}},
	"StartContainerRequest":  &pb.StartContainerRequest{ContainerId: "c"},
	"RemoveContainerRequest": &pb.RemoveContainerRequest{ContainerId: "c"},
	"WaitProcessRequest":     &pb.WaitProcessRequest{ContainerId: "c"},
	"SignalProcessRequest":   &pb.SignalProcessRequest{ContainerId: "c", Signal: 15},
	"StatsContainerRequest":  &pb.StatsContainerRequest{ContainerId: "c"},
	"PauseContainerRequest":  &pb.PauseContainerRequest{ContainerId: "c"},
	"ResumeContainerRequest": &pb.ResumeContainerRequest{ContainerId: "c"},
	"WriteStreamRequest":     &pb.WriteStreamRequest{ContainerId: "c", Data: []byte("x")},
	"CloseStdinRequest":      &pb.CloseStdinRequest{ContainerId: "c"},
	"TtyWinResizeRequest":    &pb.TtyWinResizeRequest{ContainerId: "c", Row: 1, Column: 1},
	"ExecProcessRequest":     &pb.ExecProcessRequest{ContainerId: "c", ExecId: "e", Process: &pb.Process{Args: []string{"sh"}}},
	"ReadStreamRequest":      &pb.ReadStreamRequest{ContainerId: "c", Len: 10},
	"SetPolicyRequest":       &pb.SetPolicyRequest{Policy: "package agent_policy"},
}

func TestDefaultPolicy(t *testing.T) {
	e := mustNew(t, Default())
	denied := map[string]bool{"ExecProcessRequest": true, "ReadStreamRequest": true, "SetPolicyRequest": true}
	for rule, req := range requests {
		err := e.Check(context.Background(), rule, req)
		if denied[rule] != (err != nil) {
			t.Errorf("%s: %v, want denied=%v", rule, err, denied[rule])
		}
		if err != nil && (!errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), rule)) {
			t.Errorf("%s: error %v does not name the rule", rule, err)
		}
	}
	all := mustNew(t, AllowAll())
	for rule, req := range requests {
		if err := all.Check(context.Background(), rule, req); err != nil {
			t.Errorf("allow-all %s: %v", rule, err)
		}
	}
}

// TestInputFields: rules see the request with its .proto field names, and
// may answer with an object, as Kata's generated policies do.
func TestInputFields(t *testing.T) {
	e := mustNew(t, `package agent_policy
import rego.v1
default ExecProcessRequest := {"allowed": false}
ExecProcessRequest := {"allowed": true, "why": "ls only"} if {
	input.container_id == "c"
	input.process.Args == ["/bin/ls", "/"]
}
default CreateContainerRequest := false
CreateContainerRequest if {
	every s in input.storages { s.source == "registry.example/app:1" }
	input.OCI.Process.Args[0] == "/app"
}`)
	exec := func(args ...string) *pb.ExecProcessRequest {
		return &pb.ExecProcessRequest{ContainerId: "c", ExecId: "e", Process: &pb.Process{Args: args}}
	}
	ctx := context.Background()
	if err := e.Check(ctx, "ExecProcess", exec("/bin/ls", "/")); err != nil {
		t.Errorf("allowed exec: %v", err)
	}
	if err := e.Check(ctx, "ExecProcess", exec("/bin/sh")); !errors.Is(err, ErrDenied) {
		t.Errorf("other exec: %v", err)
	}
	create := func(image string) *pb.CreateContainerRequest {
		return &pb.CreateContainerRequest{ContainerId: "c", OCI: &pb.Spec{Process: &pb.Process{Args: []string{"/app"}}},
			Storages: []*pb.Storage{{Driver: "image_guest_pull", Source: image}}}
	}
	if err := e.Check(ctx, "CreateContainer", create("registry.example/app:1")); err != nil {
		t.Errorf("allowed image: %v", err)
	}
	if err := e.Check(ctx, "CreateContainer", create("evil/app:1")); !errors.Is(err, ErrDenied) {
		t.Errorf("other image: %v", err)
	}
	if err := e.Check(ctx, "StartContainer", &pb.StartContainerRequest{ContainerId: "c"}); !errors.Is(err, ErrDenied) {
		t.Errorf("undefined rule: %v, want denied", err)
	}
}

func TestInvalidPolicies(t *testing.T) {
	for name, text := range map[string]string{
		"syntax":        "package agent_policy\nallow if {",
		"other package": "package policy\ndefault allow := true",
		"empty":         "",
		"too large":     "package agent_policy\n#" + strings.Repeat("x", MaxSize),
		"network":       "package agent_policy\nimport rego.v1\nCreateSandboxRequest if http.send({\"method\": \"get\", \"url\": \"http://x\"})",
	} {
		if _, err := New(context.Background(), text); !errors.Is(err, ErrInvalidPolicy) {
			t.Errorf("%s: %v, want ErrInvalidPolicy", name, err)
		}
	}
	// Kata's policies in Rego v0 syntax load.
	if _, err := New(context.Background(), "package agent_policy\ndefault CreateSandboxRequest = true\nExecProcessRequest { input.exec_id == \"x\" }"); err != nil {
		t.Errorf("Rego v0: %v", err)
	}
}

// TestSetUnderLoad: Set replaces the policy atomically while checks run.
func TestSetUnderLoad(t *testing.T) {
	e := mustNew(t, Default())
	ctx := context.Background()
	var wg sync.WaitGroup
	var bad atomic.Int32
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				// Every policy either version uses allows this.
				if e.Check(ctx, "StartContainer", requests["StartContainerRequest"]) != nil {
					bad.Add(1)
				}
			}
		}()
	}
	for i := range 20 {
		text := Default()
		if i%2 == 1 {
			text = AllowAll()
		}
		if err := e.Set(ctx, text); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d checks failed during Set", bad.Load())
	}
	if err := e.Check(ctx, "ExecProcess", requests["ExecProcessRequest"]); err != nil {
		t.Fatalf("last policy (allow-all) not in force: %v", err)
	}
	if err := e.Set(ctx, "not rego"); !errors.Is(err, ErrInvalidPolicy) {
		t.Fatalf("bad Set: %v", err)
	}
	if err := e.Check(ctx, "ExecProcess", requests["ExecProcessRequest"]); err != nil {
		t.Fatalf("a refused Set changed the policy: %v", err)
	}
}

// TestInterceptor: over real ttrpc to the real agent service, a denied
// call answers PermissionDenied (its handler would have said NotFound) and
// an allowed one reaches the handler.
func TestInterceptor(t *testing.T) {
	e := mustNew(t, Default())
	srv, err := ttrpc.NewServer(ttrpc.WithUnaryServerInterceptor(e.UnaryInterceptor()))
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(agent.Config{StateDir: t.TempDir(), Policy: e})
	if err != nil {
		t.Fatal(err)
	}
	a.Register(srv)
	l, err := net.Listen("unix", filepath.Join(t.TempDir(), "agent.sock"))
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(context.Background(), l)
	t.Cleanup(func() { srv.Close() })
	conn, err := net.Dial("unix", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := ttrpc.NewClient(conn)
	defer c.Close()
	client := pb.NewAgentServiceClient(c)
	ctx := context.Background()
	if _, err := client.StartContainer(ctx, &pb.StartContainerRequest{ContainerId: "c"}); status.Code(err) != codes.NotFound {
		t.Fatalf("allowed call: %v, want the handler's NotFound", err)
	}
	_, err = client.ExecProcess(ctx, &pb.ExecProcessRequest{ContainerId: "c", ExecId: "e", Process: &pb.Process{Args: []string{"sh"}}})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "ExecProcessRequest") {
		t.Fatalf("denied call: %v, want PermissionDenied naming the rule", err)
	}
	for _, m := range []string{"/grpc.AgentService/Nope", "/grpc.Nope/Do", "nonsense", "/grpc.Spec/Version"} {
		if _, err := requestFor(m); !errors.Is(err, ErrDenied) {
			t.Errorf("requestFor(%q): %v, want ErrDenied", m, err)
		}
	}
}

func FuzzNew(f *testing.F) {
	f.Add(Default())
	f.Add("package agent_policy\nExecProcessRequest := input.x")
	f.Fuzz(func(t *testing.T, text string) {
		e, err := New(context.Background(), text)
		if err != nil {
			if !errors.Is(err, ErrInvalidPolicy) {
				t.Fatalf("error %v", err)
			}
			return
		}
		e.Check(context.Background(), "ExecProcess", requests["ExecProcessRequest"])
	})
}

// BenchmarkCheck evaluates a realistic CreateContainerRequest; the floor
// sub-benchmark is the protojson encoding of the same request alone.
func BenchmarkCheck(b *testing.B) {
	req := &pb.CreateContainerRequest{ContainerId: "c", ExecId: "c", OCI: &pb.Spec{Version: "1.1.0", Hostname: "pod",
		Process: &pb.Process{Args: []string{"/app", "--serve"}, Env: []string{"PATH=/bin", "HOME=/"}, Cwd: "/", User: &pb.User{}},
		Root:    &pb.Root{Path: "rootfs"}, Annotations: map[string]string{"io.kubernetes.cri.container-type": "container",
			"io.kubernetes.cri.image-name": "registry.example/app:1"},
		Mounts: []*pb.Mount{{Destination: "/proc", Type: "proc", Source: "proc"}, {Destination: "/dev", Type: "tmpfs", Source: "tmpfs"}},
		Linux:  &pb.Linux{Namespaces: []*pb.LinuxNamespace{{Type: "pid"}, {Type: "mount"}, {Type: "ipc"}}, MaskedPaths: []string{"/proc/kcore"}}},
		Storages: []*pb.Storage{{Driver: "image_guest_pull", Source: "registry.example/app:1"}}}
	e := mustNew(b, Default())
	ctx := context.Background()
	b.Run("check", func(b *testing.B) {
		for b.Loop() {
			if err := e.Check(ctx, "CreateContainer", req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("floor-protojson", func(b *testing.B) {
		for b.Loop() {
			if _, err := inputJSON.Marshal(req); err != nil {
				b.Fatal(err)
			}
		}
	})
}
