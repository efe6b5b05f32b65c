package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cocoon-cc/cocoon/image/imagetest"
)

// TestPodGenpolicyStyle: a CRI pod in a QEMU VM (TCG) under an agent
// policy written as Kata's genpolicy writes them (rules reading the keys
// Kata's agent gives, policy_data naming the pod's one container) runs the
// container the policy names, and the agent refuses the host's attempts to
// run another command or another image in the pod.
func TestPodGenpolicyStyle(t *testing.T) {
	e := newVMPodEnv(t)
	// Another image with the same command (containerd names an image by
	// its first name: it must differ in content).
	other := e.reg.Host + "/other:1"
	e.reg.Push(t, imagetest.New(t, ocispec.ImageConfig{Cmd: []string{"/bin/sh"}, Env: []string{"PATH=/bin", "OTHER=1"}},
		imagetest.BusyboxLayer(t)), "other:1", nil)
	args := []string{"/bin/sh", "-c", "echo allowed-by-policy"}
	rules, err := os.ReadFile("../../agent/policy/testdata/genpolicy-style.rego")
	if err != nil {
		t.Fatal(err)
	}
	data, err := json.Marshal(map[string]any{
		"sandbox_name": "gpod", "namespace": "default",
		"common": map[string]any{"root_path": "/run/kata-containers/$(bundle-id)/rootfs",
			"sfprefix": "^/run/kata-containers/shared/containers/"},
		"request_defaults": map[string]any{"CopyFileRequest": []string{"$(sfprefix)[a-zA-Z0-9._-]+(/[a-zA-Z0-9._-]+)*$"}},
		"containers": []any{map[string]any{"name": "app", "image": e.image, "args": args, "readonly": false,
			"sandbox_pidns": false}},
	})
	if err != nil {
		t.Fatal(err)
	}
	rs := e.ctrd.RuntimeService(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	logDir := t.TempDir()
	podID, sandbox := e.startPodWith(ctx, t, rs, "gpod", logDir, string(rules)+"\npolicy_data := "+string(data)+"\n")
	t.Cleanup(func() {
		rs.StopPodSandbox(context.Background(), podID)
		rs.RemovePodSandbox(context.Background(), podID)
	})
	if _, err := e.ctrd.ImageService(t).PullImage(ctx, &cri.ImageSpec{Image: other}, nil, sandbox); err != nil {
		t.Fatal(err)
	}
	// containerd's CRI plugin creates the task, and so the agent's
	// container, on StartContainer.
	run := func(image string, args []string) (string, error) {
		cid, err := rs.CreateContainer(ctx, podID, &cri.ContainerConfig{Metadata: &cri.ContainerMetadata{Name: "app"},
			Image: &cri.ImageSpec{Image: image}, Command: args, LogPath: "app.log",
			// The kubelet's default: a PID namespace of its own.
			Linux: &cri.LinuxContainerConfig{SecurityContext: &cri.LinuxContainerSecurityContext{
				NamespaceOptions: &cri.NamespaceOption{Network: cri.NamespaceMode_NODE, Pid: cri.NamespaceMode_CONTAINER}}}}, sandbox)
		if err != nil {
			t.Fatalf("CreateContainer: %v", err)
		}
		return cid, rs.StartContainer(ctx, cid)
	}

	cid, err := run(e.image, args)
	if err != nil {
		t.Fatalf("the container the policy names: %v\n%s", err, e.ctrd.Logs())
	}
	if st := waitExited(ctx, t, rs, cid); st.ExitCode != 0 {
		t.Fatalf("container exited with %d", st.ExitCode)
	}
	if log, err := os.ReadFile(filepath.Join(logDir, "app.log")); err != nil || !strings.Contains(string(log), "allowed-by-policy") {
		t.Fatalf("container log %q %v", log, err)
	}
	for name, tc := range map[string]struct {
		image string
		args  []string
	}{
		"another command": {e.image, []string{"/bin/sh", "-c", "cat /proc/self/environ"}},
		"another image":   {other, args},
	} {
		// Under the name the policy knows, freed by removing the last.
		if err := rs.RemoveContainer(ctx, cid); err != nil {
			t.Fatal(err)
		}
		cid, err = run(tc.image, tc.args)
		if err == nil || !strings.Contains(err.Error(), "CreateContainerRequest (CreateContainer) denied by the agent policy") {
			t.Errorf("%s: %v, want the policy's denial", name, err)
		}
	}
	if err := rs.StopPodSandbox(ctx, podID); err != nil {
		t.Fatal(err)
	}
	if err := rs.RemovePodSandbox(ctx, podID); err != nil {
		t.Fatal(err)
	}
	assertNoLeftovers(t, e.ctrd)
}
