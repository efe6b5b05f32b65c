package policy

import (
	"context"
	"encoding/json"
	"os"
	"testing"

	pb "github.com/cocoon-cc/cocoon/protocol/ttrpc/agent"
)

// genpolicyStyle is testdata/genpolicy-style.rego with policy_data
// appended, as genpolicy appends it to its rules.
func genpolicyStyle(t testing.TB, data any) string {
	t.Helper()
	rules, err := os.ReadFile("testdata/genpolicy-style.rego")
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.MarshalIndent(data, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return string(rules) + "\npolicy_data := " + string(b) + "\n"
}

// TestGenpolicyStyle: a policy reading the request as genpolicy's rules
// do (the null OCI fields, shared_mounts, the guest-pull storage's
// fs_group, shared, fstype and mount point) allows the shim's request and
// refuses any change the host could make to it.
func TestGenpolicyStyle(t *testing.T) {
	ctx := context.Background()
	text := genpolicyStyle(t, map[string]any{
		"sandbox_name": "web", "namespace": "default",
		"common": map[string]any{"root_path": "/run/kata-containers/$(bundle-id)/rootfs",
			"sfprefix": "^/run/kata-containers/shared/containers/"},
		"request_defaults": map[string]any{"CopyFileRequest": []string{"$(sfprefix)[a-zA-Z0-9._-]+(/[a-zA-Z0-9._-]+)*$"}},
		"containers": []any{map[string]any{"name": "app", "image": "registry.example/app:1",
			"args": []string{"/app", "--serve"}, "readonly": true, "sandbox_pidns": false}},
	})
	start := &pb.StartContainerRequest{ContainerId: "c"}
	e := mustNew(t, text)
	for path, allowed := range map[string]bool{
		"/run/kata-containers/shared/containers/c-1a2b-hosts":             true,
		"/run/kata-containers/shared/containers/c-1a2b-config/..data/key": true,
		"/run/kata-containers/shared/containers/../../../etc/passwd":      false,
		"/etc/passwd": false,
		"/run/kata-containers/shared/containers/c-1a2b-hosts\n/etc/shadow": false,
	} {
		err := e.Check(ctx, "CopyFile", &pb.CopyFileRequest{Path: path, FileSize: 1, FileMode: 0o100644, Data: []byte("x")})
		if (err == nil) != allowed {
			t.Errorf("CopyFile %s: %v, want allowed=%v", path, err, allowed)
		}
	}
	if err := e.Check(ctx, "StartContainer", start); err == nil {
		t.Fatal("a container the policy did not see created may start")
	}
	if err := e.Check(ctx, "CreateContainer", createRequest()); err != nil {
		t.Fatalf("the shim's request: %v", err)
	}
	if err := e.Check(ctx, "StartContainer", start); err != nil {
		t.Fatalf("start after create: %v", err)
	}

	// Container d, unchanged, is allowed (tried on another engine: this
	// one must not remember d).
	otherContainer := func() *pb.CreateContainerRequest {
		r := createRequest()
		r.ContainerId, r.ExecId = "d", "d"
		r.OCI.Root.Path, r.Storages[0].MountPoint = pb.GuestRootfs("d"), pb.GuestRootfs("d")
		return r
	}
	if err := mustNew(t, text).Check(ctx, "CreateContainer", otherContainer()); err != nil {
		t.Fatalf("container d: %v", err)
	}
	for name, change := range map[string]func(r *pb.CreateContainerRequest){
		"command": func(r *pb.CreateContainerRequest) { r.OCI.Process.Args = []string{"/bin/sh"} },
		"image":   func(r *pb.CreateContainerRequest) { r.Storages[0].Source = "evil.example/app:1" },
		"image annotation": func(r *pb.CreateContainerRequest) {
			r.OCI.Annotations["io.kubernetes.cri.image-name"] = "evil.example/app:1"
		},
		"hooks":              func(r *pb.CreateContainerRequest) { r.OCI.Hooks = &pb.Hooks{} },
		"solaris":            func(r *pb.CreateContainerRequest) { r.OCI.Solaris = &pb.Solaris{} },
		"intel rdt":          func(r *pb.CreateContainerRequest) { r.OCI.Linux.IntelRdt = &pb.LinuxIntelRdt{} },
		"block io":           func(r *pb.CreateContainerRequest) { r.OCI.Linux.Resources.BlockIO = &pb.LinuxBlockIO{} },
		"network class":      func(r *pb.CreateContainerRequest) { r.OCI.Linux.Resources.Network = &pb.LinuxNetwork{} },
		"no resources":       func(r *pb.CreateContainerRequest) { r.OCI.Linux.Resources = nil },
		"shared mounts":      func(r *pb.CreateContainerRequest) { r.SharedMounts = []*pb.SharedMount{{Name: "m"}} },
		"string user":        func(r *pb.CreateContainerRequest) { r.StringUser = &pb.StringUser{Uid: "0"} },
		"fs_group":           func(r *pb.CreateContainerRequest) { r.Storages[0].FsGroup = &pb.FSGroup{GroupId: 0} },
		"shared storage":     func(r *pb.CreateContainerRequest) { r.Storages[0].Shared = true },
		"fstype":             func(r *pb.CreateContainerRequest) { r.Storages[0].Fstype = "ext4" },
		"mount point":        func(r *pb.CreateContainerRequest) { r.Storages[0].MountPoint = pb.GuestRootfs("c") },
		"root path":          func(r *pb.CreateContainerRequest) { r.OCI.Root.Path = "/run/cocoon/containers/c/rootfs" },
		"second storage":     func(r *pb.CreateContainerRequest) { r.Storages = append(r.Storages, r.Storages[0]) },
		"sandbox pidns":      func(r *pb.CreateContainerRequest) { r.SandboxPidns = true },
		"other sandbox name": func(r *pb.CreateContainerRequest) { r.OCI.Annotations["io.kubernetes.cri.sandbox-name"] = "db" },
	} {
		r := otherContainer()
		change(r)
		if err := e.Check(ctx, "CreateContainer", r); err == nil {
			t.Errorf("%s: allowed", name)
		}
	}
	if err := e.Check(ctx, "StartContainer", &pb.StartContainerRequest{ContainerId: "d"}); err == nil {
		t.Error("a refused container may start")
	}
}
