package policy

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

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

// podSpec is a container's OCI spec as the shim sends it for containerd's
// CRI plugin, constrained as Kata's runtime does.
func podSpec() *pb.Spec {
	return &pb.Spec{Version: "1.1.0", Hostname: "pod",
		Process: &pb.Process{Args: []string{"/app", "--serve"}, Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/"},
			Cwd: "/", User: &pb.User{UID: 65532, GID: 65532}, OOMScoreAdj: -998, NoNewPrivileges: true,
			Capabilities: &pb.LinuxCapabilities{Bounding: []string{"CAP_CHOWN", "CAP_NET_BIND_SERVICE"}, Effective: []string{"CAP_CHOWN"}},
			Rlimits:      []*pb.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1 << 20, Soft: 1 << 20}}},
		Root: &pb.Root{Path: pb.GuestRootfs("c"), Readonly: true},
		Annotations: map[string]string{"io.kubernetes.cri.container-type": "container", "io.kubernetes.cri.image-name": "registry.example/app:1",
			"io.kubernetes.cri.sandbox-name": "web", "io.kubernetes.cri.sandbox-namespace": "default", "io.kubernetes.cri.container-name": "app",
			"io.katacontainers.pkg.oci.container_type": "pod_container", "io.katacontainers.pkg.oci.bundle_path": "/run/containerd/io.containerd.runtime.v2.task/k8s.io/c"},
		Mounts: []*pb.Mount{{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/etc/hosts", Type: "bind", Source: "/run/kata-containers/shared/containers/c-0123456789abcdef-hosts", Options: []string{"rbind", "ro"}}},
		Linux: &pb.Linux{Namespaces: []*pb.LinuxNamespace{{Type: "ipc"}, {Type: "uts"}, {Type: "mount"}},
			MaskedPaths:   []string{"/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list", "/sys/firmware"},
			ReadonlyPaths: []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
			Resources: &pb.LinuxResources{Memory: &pb.LinuxMemory{Limit: 256 << 20}, CPU: &pb.LinuxCPU{Shares: 102, Quota: 50000, Period: 100000},
				HugepageLimits: []*pb.LinuxHugepageLimit{{Pagesize: "2MB"}}}}}
}

// createRequest is the CreateContainerRequest of container "c" as the
// shim sends it.
func createRequest() *pb.CreateContainerRequest {
	oci := podSpec()
	s, err := pb.GuestPullStorage("c", "registry.example/app:1", oci.Annotations)
	if err != nil {
		panic(err)
	}
	return &pb.CreateContainerRequest{ContainerId: "c", ExecId: "c", OCI: oci, Storages: []*pb.Storage{s}}
}

// requests has one real request of every kind the agent serves.
func requests() map[string]proto.Message {
	return map[string]proto.Message{
		"CreateSandboxRequest":   &pb.CreateSandboxRequest{SandboxId: "p", Hostname: "web"},
		"DestroySandboxRequest":  &pb.DestroySandboxRequest{},
		"GuestDetailsRequest":    &pb.GuestDetailsRequest{},
		"PullImageRequest":       &pb.PullImageRequest{Image: "registry.example/app:1", ContainerId: "c"},
		"CreateContainerRequest": createRequest(),
		"StartContainerRequest":  &pb.StartContainerRequest{ContainerId: "c"},
		"RemoveContainerRequest": &pb.RemoveContainerRequest{ContainerId: "c"},
		"WaitProcessRequest":     &pb.WaitProcessRequest{ContainerId: "c"},
		"SignalProcessRequest":   &pb.SignalProcessRequest{ContainerId: "c", Signal: 15},
		"StatsContainerRequest":  &pb.StatsContainerRequest{ContainerId: "c"},
		"PauseContainerRequest":  &pb.PauseContainerRequest{ContainerId: "c"},
		"ResumeContainerRequest": &pb.ResumeContainerRequest{ContainerId: "c"},
		"WriteStreamRequest":     &pb.WriteStreamRequest{ContainerId: "c", Data: []byte("x")},
		"CloseStdinRequest":      &pb.CloseStdinRequest{ContainerId: "c"},
		"TtyWinResizeRequest":    &pb.TtyWinResizeRequest{ContainerId: "c", Row: 24, Column: 80},
		"ExecProcessRequest":     &pb.ExecProcessRequest{ContainerId: "c", ExecId: "e", Process: &pb.Process{Args: []string{"sh"}}},
		"ReadStreamRequest":      &pb.ReadStreamRequest{ContainerId: "c", Len: 1024},
		"SetPolicyRequest":       &pb.SetPolicyRequest{Policy: "package agent_policy\n\ndefault CreateContainerRequest := true\n"},
		"UpdateContainerRequest": &pb.UpdateContainerRequest{ContainerId: "c", Resources: &pb.LinuxResources{Memory: &pb.LinuxMemory{Limit: 128 << 20}}},
		"UpdateInterfaceRequest": &pb.UpdateInterfaceRequest{Interface: &pb.Interface{Name: "eth0", HwAddr: "02:00:00:00:00:01", Mtu: 1500,
			IPAddresses: []*pb.IPAddress{{Address: "10.88.0.5", Mask: "16"}}}},
		"UpdateRoutesRequest":   &pb.UpdateRoutesRequest{Routes: &pb.Routes{Routes: []*pb.Route{{Dest: "default", Gateway: "10.88.0.1", Device: "eth0"}}}},
		"ListInterfacesRequest": &pb.ListInterfacesRequest{},
		"ListRoutesRequest":     &pb.ListRoutesRequest{},
		"AddARPNeighborsRequest": &pb.AddARPNeighborsRequest{Neighbors: &pb.ARPNeighbors{ARPNeighbors: []*pb.ARPNeighbor{{
			ToIPAddress: &pb.IPAddress{Address: "10.88.0.1"}, Device: "eth0", Lladdr: "02:00:00:00:00:02"}}}},
		"OnlineCPUMemRequest":       &pb.OnlineCPUMemRequest{NbCpus: 2},
		"CopyFileRequest":           &pb.CopyFileRequest{Path: "/run/kata-containers/shared/containers/c-hosts", FileSize: 1, FileMode: 0o100644, Data: []byte("x")},
		"GetOOMEventRequest":        &pb.GetOOMEventRequest{},
		"TerminationMessageRequest": &pb.TerminationMessageRequest{ContainerId: "c", Path: "/dev/termination-log", Len: 3},
	}
}

func TestDefaultPolicy(t *testing.T) {
	ctx := context.Background()
	e := mustNew(t, Default())
	denied := map[string]bool{"ExecProcessRequest": true, "ReadStreamRequest": true, "SetPolicyRequest": true, "TerminationMessageRequest": true}
	for rule, req := range requests() {
		err := e.Check(ctx, "M", req)
		if denied[rule] != (err != nil) {
			t.Errorf("%s: %v, want denied=%v", rule, err, denied[rule])
		}
		if err != nil && (!errors.Is(err, ErrDenied) || !strings.HasPrefix(err.Error(), rule+" (M) denied")) {
			t.Errorf("%s: error %q does not name the rule", rule, err)
		}
	}
	all := mustNew(t, AllowAll())
	for rule, req := range requests() {
		if err := all.Check(ctx, "M", req); err != nil {
			t.Errorf("allow-all %s: %v", rule, err)
		}
	}
	// Every request of the agent's services has a rule in allow-all, and
	// the default policy decides each explicitly.
	for _, m := range requestMethods(t) {
		req, err := requestFor(m)
		if err != nil {
			t.Fatal(err)
		}
		rule := string(req.ProtoReflect().Descriptor().Name())
		if !all.cur.rules[rule] || !e.cur.rules[rule] {
			t.Errorf("%s: no %s rule in the default or allow-all policy", m, rule)
		}
	}
}

// TestExecCommands: a copy of the default policy listing commands allows
// exactly those argument vectors, run as the container's process runs, and
// nothing else.
func TestExecCommands(t *testing.T) {
	ctx := context.Background()
	text := strings.Replace(Default(), `"allowed_commands": []`,
		`"allowed_commands": [["/bin/cat", "/tmp/ready"], ["sh", "-c", "test -f /tmp/ready"]]`, 1)
	if text == Default() {
		t.Fatal("the default policy has no allowed_commands list")
	}
	e := mustNew(t, text)
	spec := podSpec()
	if err := e.Check(ctx, "CreateContainer", &pb.CreateContainerRequest{ContainerId: "c", ExecId: "c", OCI: spec}); err != nil {
		t.Fatal(err)
	}
	// containerd's exec: the container's process with other arguments.
	process := func(args ...string) *pb.Process {
		p := proto.Clone(spec.Process).(*pb.Process)
		p.Args = args
		return p
	}
	exec := func(cid string, p *pb.Process) error {
		return e.Check(ctx, "ExecProcess", &pb.ExecProcessRequest{ContainerId: cid, ExecId: "e", Process: p})
	}
	for _, args := range [][]string{{"/bin/cat", "/tmp/ready"}, {"sh", "-c", "test -f /tmp/ready"}} {
		if err := exec("c", process(args...)); err != nil {
			t.Errorf("%q: %v", args, err)
		}
	}
	tty := process("/bin/cat", "/tmp/ready")
	tty.Terminal, tty.Env = true, append(tty.Env, "TERM=xterm")
	if err := exec("c", tty); err != nil {
		t.Errorf("with a terminal: %v", err)
	}
	for _, args := range [][]string{nil, {"/bin/cat"}, {"/bin/cat", "/tmp/ready", "/etc/shadow"}, {"cat", "/tmp/ready"},
		{"sh", "-c", "test -f /tmp/ready; id"}, {"sh", "-c test -f /tmp/ready"}, {"/bin/sh"}} {
		if err := exec("c", process(args...)); !errors.Is(err, ErrDenied) {
			t.Errorf("%q: %v, want denied", args, err)
		}
	}
	root, preload, cwd, caps := process("/bin/cat", "/tmp/ready"), process("/bin/cat", "/tmp/ready"), process("/bin/cat", "/tmp/ready"), process("/bin/cat", "/tmp/ready")
	root.User = &pb.User{}
	preload.Env = append(preload.Env, "LD_PRELOAD=/run/kata-containers/shared/containers/x.so")
	cwd.Cwd = "/tmp"
	caps.Capabilities = &pb.LinuxCapabilities{Bounding: []string{"CAP_SYS_ADMIN"}, Effective: []string{"CAP_SYS_ADMIN"}}
	for name, p := range map[string]*pb.Process{"another user": root, "another environment": preload, "another directory": cwd, "other capabilities": caps} {
		if err := exec("c", p); !errors.Is(err, ErrDenied) {
			t.Errorf("%s: %v, want denied", name, err)
		}
	}
	if err := exec("other", process("/bin/cat", "/tmp/ready")); !errors.Is(err, ErrDenied) {
		t.Errorf("in a container the policy never saw created: %v", err)
	}
	if err := e.Check(ctx, "ExecProcess", &pb.ExecProcessRequest{ContainerId: "c"}); !errors.Is(err, ErrDenied) {
		t.Errorf("no process: %v", err)
	}
}

// TestResults: rules may answer with objects, as genpolicy's rules do, and
// read the request under Kata's field names.
func TestResults(t *testing.T) {
	ctx := context.Background()
	e := mustNew(t, `package agent_policy
import rego.v1
default ExecProcessRequest := {"allowed": false}
ExecProcessRequest := {"allowed": true, "ops": []} if {
	input.container_id == "c"
	input.process.Args == ["/bin/ls", "/"]
}
default CreateContainerRequest := false
CreateContainerRequest if {
	every s in input.storages { s.source == "registry.example/app:1" }
	input.OCI.Process.Args[0] == "/app"
	some m in input.OCI.Mounts
	m.type_ == "bind"
	input.OCI.Linux.Resources.Memory.Limit <= 512 * 1024 * 1024
}
StartContainerRequest := {"allowed": "yes"}
PauseContainerRequest := {"allowed": true, "ops": "none"}
ResumeContainerRequest := 1
SignalProcessRequest := true if input.signal == 15
SignalProcessRequest := false if input.signal == 9
`)
	exec := func(args ...string) *pb.ExecProcessRequest {
		return &pb.ExecProcessRequest{ContainerId: "c", ExecId: "e", Process: &pb.Process{Args: args}}
	}
	create := func(image string, limit int64) *pb.CreateContainerRequest {
		r := requests()["CreateContainerRequest"].(*pb.CreateContainerRequest)
		r.Storages[0].Source = image
		r.OCI.Linux.Resources.Memory.Limit = limit
		return r
	}
	for _, tc := range []struct {
		name   string
		req    proto.Message
		denied string // "" when allowed, else a part of the error
	}{
		{"exec ls", exec("/bin/ls", "/"), ""},
		{"exec ls -l", exec("/bin/ls", "-l", "/"), "ExecProcessRequest (M) denied by the agent policy"},
		{"exec sh", exec("/bin/sh"), "ExecProcessRequest (M) denied by the agent policy"},
		{"create", create("registry.example/app:1", 256<<20), ""},
		{"create other image", create("evil/app:1", 256<<20), "denied"},
		{"create too much memory", create("registry.example/app:1", 1<<30), "denied"},
		{"non-boolean allowed", &pb.StartContainerRequest{}, `no boolean "allowed"`},
		{"non-array ops", &pb.PauseContainerRequest{}, `"ops" is not an array`},
		{"number", &pb.ResumeContainerRequest{}, "neither a boolean nor an object"},
		{"true", &pb.SignalProcessRequest{Signal: 15}, ""},
		{"false", &pb.SignalProcessRequest{Signal: 9}, "denied"},
		{"undefined value", &pb.SignalProcessRequest{Signal: 1}, "denied"},
		{"undefined rule", &pb.WaitProcessRequest{ContainerId: "c"}, "WaitProcessRequest (M) denied"},
	} {
		err := e.Check(ctx, "M", tc.req)
		if tc.denied == "" && err != nil || tc.denied != "" && (!errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), tc.denied)) {
			t.Errorf("%s: %v, want denied=%q", tc.name, err, tc.denied)
		}
	}
}

func TestEvalErrorDenies(t *testing.T) {
	// Two values for one complete rule is an evaluation error: deny.
	e := mustNew(t, `package agent_policy
import rego.v1
WaitProcessRequest := true if input.container_id != ""
WaitProcessRequest := false if input.exec_id == ""`)
	err := e.Check(context.Background(), "WaitProcess", &pb.WaitProcessRequest{ContainerId: "c"})
	if !errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), "conflict") {
		t.Fatalf("%v, want a denial for the conflict", err)
	}
}

// TestFailOpen: Kata's AllowRequestsFailingPolicy lets denied and
// undefined requests through, not evaluation errors.
func TestFailOpen(t *testing.T) {
	ctx := context.Background()
	e := mustNew(t, `package agent_policy
default AllowRequestsFailingPolicy := true
default ExecProcessRequest := false
StartContainerRequest := {"allowed": 1}`)
	if err := e.Check(ctx, "ExecProcess", requests()["ExecProcessRequest"]); err != nil {
		t.Errorf("denied request: %v", err)
	}
	if err := e.Check(ctx, "WaitProcess", requests()["WaitProcessRequest"]); err != nil {
		t.Errorf("undefined rule: %v", err)
	}
	if err := e.Check(ctx, "StartContainer", requests()["StartContainerRequest"]); !errors.Is(err, ErrDenied) {
		t.Errorf("bad result: %v, want denied", err)
	}
	for _, sw := range []string{"AllowRequestsFailingPolicy := 1/0", `AllowRequestsFailingPolicy := {"allowed": 1}`} {
		e := mustNew(t, "package agent_policy\n"+sw)
		if err := e.Check(ctx, "WaitProcess", requests()["WaitProcessRequest"]); !errors.Is(err, ErrDenied) {
			t.Errorf("%s: %v, want the switch off", sw, err)
		}
	}
}

// TestExecOnlyCommand: a custom policy that lets the host run one command
// in one container, written as a pod author would, in Kata's v0 syntax.
func TestExecOnlyCommand(t *testing.T) {
	ctx := context.Background()
	e := mustNew(t, `package agent_policy
import future.keywords.if
default ExecProcessRequest := false
ExecProcessRequest if {
	input.container_id == "web"
	input.process.Args == ["/usr/bin/curl", "-fsS", "http://localhost:8080/healthz"]
	input.process.User.UID == 65532
	input.string_user == null
}`)
	exec := func(cid string, uid uint32, args ...string) *pb.ExecProcessRequest {
		return &pb.ExecProcessRequest{ContainerId: cid, ExecId: "probe", Process: &pb.Process{Args: args, User: &pb.User{UID: uid}, Cwd: "/"}}
	}
	probe := []string{"/usr/bin/curl", "-fsS", "http://localhost:8080/healthz"}
	if err := e.Check(ctx, "ExecProcess", exec("web", 65532, probe...)); err != nil {
		t.Errorf("the probe: %v", err)
	}
	for name, req := range map[string]*pb.ExecProcessRequest{
		"other container": exec("db", 65532, probe...),
		"root":            exec("web", 0, probe...),
		"other command":   exec("web", 65532, "/bin/sh", "-c", "cat /secrets/key"),
		"extra argument":  exec("web", 65532, append(probe, "-o/tmp/x")...),
		"string user":     {ContainerId: "web", ExecId: "p", StringUser: &pb.StringUser{Uid: "0"}, Process: exec("web", 65532, probe...).Process},
	} {
		if err := e.Check(ctx, "ExecProcess", req); !errors.Is(err, ErrDenied) {
			t.Errorf("%s: %v, want denied", name, err)
		}
	}
}

func TestInvalidPolicies(t *testing.T) {
	for name, text := range map[string]string{
		"syntax":        "package agent_policy\nallow if {",
		"other package": "package policy\ndefault allow := true",
		"empty":         "",
		"too large":     "package agent_policy\n#" + strings.Repeat("x", MaxSize),
		"network":       "package agent_policy\nimport rego.v1\nCreateSandboxRequest if http.send({\"method\": \"get\", \"url\": \"http://x\"})",
		"unsafe var":    "package agent_policy\nimport rego.v1\nExecProcessRequest if { x == 1 }",
		"recursion":     "package agent_policy\nimport rego.v1\nExecProcessRequest if ReadStreamRequest\nReadStreamRequest if ExecProcessRequest",
	} {
		if _, err := New(context.Background(), text); !errors.Is(err, ErrInvalidPolicy) {
			t.Errorf("%s: %v, want ErrInvalidPolicy", name, err)
		}
	}
}

// TestLenient: like Kata's regorus, no type checking: genpolicy rules
// naming policy_data keys a trimmed policy_data lacks load, and deny what
// needs them.
func TestLenient(t *testing.T) {
	ctx := context.Background()
	e := mustNew(t, `package agent_policy
import rego.v1
policy_data := {"request_defaults": {"WriteStreamRequest": true}}
WriteStreamRequest if policy_data.request_defaults.WriteStreamRequest == true
ReadStreamRequest if policy_data.request_defaults.ReadStreamRequest == true
ExecProcessRequest if count(1) == 1`)
	if err := e.Check(ctx, "WriteStdin", requests()["WriteStreamRequest"]); err != nil {
		t.Errorf("write: %v", err)
	}
	for _, r := range []string{"ReadStreamRequest", "ExecProcessRequest"} {
		if err := e.Check(ctx, "M", requests()[r]); !errors.Is(err, ErrDenied) {
			t.Errorf("%s: %v, want denied", r, err)
		}
	}
}

// TestSetUnderLoad: Set replaces the policy atomically while checks run;
// a refused Set leaves the policy in force.
func TestSetUnderLoad(t *testing.T) {
	ctx := context.Background()
	e := mustNew(t, Default())
	reqs := requests()
	var wg sync.WaitGroup
	var bad atomic.Int32
	var stop atomic.Bool
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				// Both policies allow this; each either allows exec
				// or not, never fails otherwise.
				if e.Check(ctx, "StartContainer", reqs["StartContainerRequest"]) != nil {
					bad.Add(1)
				}
				if err := e.Check(ctx, "ExecProcess", reqs["ExecProcessRequest"]); err != nil && !strings.HasSuffix(err.Error(), "denied by the agent policy") {
					bad.Add(1)
				}
			}
		})
	}
	for i := range 40 {
		text := Default()
		if i%2 == 0 {
			text = AllowAll()
		}
		if err := e.Set(ctx, text); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d checks failed during Set", bad.Load())
	}
	if err := e.Check(ctx, "ExecProcess", reqs["ExecProcessRequest"]); !errors.Is(err, ErrDenied) {
		t.Fatalf("last policy (default) not in force: %v", err)
	}
	if err := e.Set(ctx, "package agent_policy\nExecProcessRequest if {"); !errors.Is(err, ErrInvalidPolicy) {
		t.Fatalf("bad Set: %v", err)
	}
	if err := e.Check(ctx, "ExecProcess", reqs["ExecProcessRequest"]); !errors.Is(err, ErrDenied) {
		t.Fatalf("a refused Set changed the policy: %v", err)
	}
}

func FuzzNew(f *testing.F) {
	f.Add(Default())
	f.Add(AllowAll())
	f.Add("package agent_policy\nExecProcessRequest := input.x")
	f.Add("package agent_policy\nimport rego.v1\nExecProcessRequest := {\"allowed\": true, \"ops\": [{\"op\": \"add\", \"path\": \"/pstate/x\", \"value\": input}]}")
	f.Add("package agent_policy\nAllowRequestsFailingPolicy { true }\np[x] { x := 1 }")
	reqs := requests()
	f.Fuzz(func(t *testing.T, text string) {
		e, err := New(context.Background(), text)
		if err != nil {
			if !errors.Is(err, ErrInvalidPolicy) {
				t.Fatalf("error %v", err)
			}
			return
		}
		for _, r := range []string{"ExecProcessRequest", "CreateContainerRequest"} {
			if err := e.Check(context.Background(), "M", reqs[r]); err != nil && !errors.Is(err, ErrDenied) {
				t.Fatalf("%s: %v", r, err)
			}
		}
	})
}

// BenchmarkCheck decides a realistic CreateContainerRequest under the
// default policy and under one that reads the spec; the floor is the
// protojson encoding of the same request alone.
func BenchmarkCheck(b *testing.B) {
	ctx := context.Background()
	req := requests()["CreateContainerRequest"]
	reading := mustNew(b, `package agent_policy
import rego.v1
default CreateContainerRequest := false
CreateContainerRequest if {
	input.OCI.Annotations["io.kubernetes.cri.image-name"] == "registry.example/app:1"
	input.OCI.Process.Args == ["/app", "--serve"]
	every m in input.OCI.Mounts { m.type_ in {"proc", "tmpfs", "bind"} }
	not "CAP_SYS_ADMIN" in input.OCI.Process.Capabilities.Bounding
}`)
	for name, e := range map[string]*Engine{"default": mustNew(b, Default()), "reading-spec": reading} {
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				if err := e.Check(ctx, "CreateContainer", req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("floor-protojson", func(b *testing.B) {
		opts := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}
		for b.Loop() {
			if _, err := opts.Marshal(req); err != nil {
				b.Fatal(err)
			}
		}
	})
}
