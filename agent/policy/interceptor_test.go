package policy

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containerd/ttrpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/cocoon-cc/cocoon/agent"
	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
)

// requestMethods lists the full names of the agent's methods.
func requestMethods(t testing.TB) []string {
	var out []string
	for _, svc := range []string{"grpc.AgentService", "grpc.Image"} {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc))
		if err != nil {
			t.Fatal(err)
		}
		ms := d.(protoreflect.ServiceDescriptor).Methods()
		for i := range ms.Len() {
			out = append(out, "/"+svc+"/"+string(ms.Get(i).Name()))
		}
	}
	return out
}

// serve runs the real agent's services behind e's interceptor on a unix
// socket and returns a client.
func serve(t *testing.T, e *Engine) *ttrpc.Client {
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
	t.Cleanup(func() { c.Close() })
	return c
}

// TestInterceptor: a denied call answers PermissionDenied and never
// reaches its handler; an allowed one reaches it with the checked request.
func TestInterceptor(t *testing.T) {
	ctx := context.Background()
	e := mustNew(t, `package agent_policy
import rego.v1
default CreateSandboxRequest := false
CreateSandboxRequest if input.hostname == "web"
default GuestDetailsRequest := true
default SetPolicyRequest := false
SetPolicyRequest if contains(input.policy, "# reviewed")`)
	client := pb.NewAgentServiceClient(serve(t, e))
	sandbox := func(id, hostname string) error {
		_, err := client.CreateSandbox(ctx, &pb.CreateSandboxRequest{SandboxId: id, Hostname: hostname})
		return err
	}
	err := sandbox("pod", "evil")
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "CreateSandboxRequest (CreateSandbox) denied by the agent policy") {
		t.Fatalf("denied call: %v", err)
	}
	// Had the denied call run, the sandbox would exist now.
	if err := sandbox("bad id!", "web"); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("the handler did not get the checked request: %v", err)
	}
	if err := sandbox("pod", "web"); err != nil {
		t.Fatalf("allowed call: %v", err)
	}
	if err := sandbox("pod2", "web"); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("second sandbox: %v, want the handler's AlreadyExists", err)
	}
	if _, err := client.StartContainer(ctx, &pb.StartContainerRequest{ContainerId: "c"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("undefined rule: %v", err)
	}
	if _, err := client.GetGuestDetails(ctx, &pb.GuestDetailsRequest{}); err != nil {
		t.Fatal(err)
	}
	// A denied ReadStream reaches its handler, which withholds the data
	// (here it finds no such container).
	if _, err := client.ReadStdout(ctx, &pb.ReadStreamRequest{ContainerId: "c"}); status.Code(err) != codes.NotFound {
		t.Fatalf("denied ReadStdout: %v, want the handler's NotFound", err)
	}

	// SetPolicy goes through the policy too, then replaces it.
	if _, err := client.SetPolicy(ctx, &pb.SetPolicyRequest{Policy: AllowAll()}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("unreviewed SetPolicy: %v", err)
	}
	if _, err := client.StartContainer(ctx, &pb.StartContainerRequest{ContainerId: "c"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a denied SetPolicy replaced the policy: %v", err)
	}
	if _, err := client.SetPolicy(ctx, &pb.SetPolicyRequest{Policy: "# reviewed\n" + AllowAll()}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.StartContainer(ctx, &pb.StartContainerRequest{ContainerId: "c"}); status.Code(err) != codes.NotFound {
		t.Fatalf("after SetPolicy: %v, want the handler's NotFound", err)
	}
}

func TestRequestFor(t *testing.T) {
	for _, m := range requestMethods(t) {
		req, err := requestFor(m)
		if err != nil {
			t.Fatal(err)
		}
		if name := req.ProtoReflect().Descriptor().Name(); !strings.HasSuffix(string(name), "Request") {
			t.Errorf("%s: %s", m, name)
		}
	}
	for _, m := range []string{"/grpc.AgentService/Nope", "/grpc.Nope/Do", "nonsense", "/grpc.Spec/Version", ""} {
		if _, err := requestFor(m); !errors.Is(err, ErrDenied) {
			t.Errorf("requestFor(%q): %v, want ErrDenied", m, err)
		}
	}
}
