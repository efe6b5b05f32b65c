package e2e

import (
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cocoon-cc/cocoon/agent/policy"
	"github.com/cocoon-cc/cocoon/image/imagetest"
	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/cocoon-cc/cocoon/internal/testutil/containerdtest"
)

// startSnapshotter runs cocoon-snapshotter and returns its socket.
func startSnapshotter(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "s.sock")
	cmd := exec.Command(bin(t, "cocoon-snapshotter"), "--root", filepath.Join(dir, "root"), "--address", sock)
	var log strings.Builder
	cmd.Stderr = &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		containerdtest.UnmountUnder(dir)
	})
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			return sock
		}
	}
	t.Fatalf("cocoon-snapshotter did not listen:\n%s", log.String())
	return ""
}

// TestSnapshotterGuestPull: with cocoon-snapshotter, CRI's image pull
// downloads no layer to the host — an encrypted image the host cannot
// decrypt pulls fine, where a stock containerd fails — and a coco pod
// still runs the image, pulled in its sandbox.
func TestSnapshotterGuestPull(t *testing.T) {
	reg := imagetest.StartRegistry(t)
	busybox := imagetest.BusyboxLayer(t)
	reg.Push(t, imagetest.New(t, ocispec.ImageConfig{Cmd: []string{"/bin/sh"}, Env: []string{"PATH=/bin"}}, busybox), "busybox:1", nil)
	sealed := make([]byte, 4096)
	rand.Read(sealed)
	enc := imagetest.Layer{MediaType: ocispec.MediaTypeImageLayerGzip + "+encrypted", Blob: sealed, DiffID: digest.FromBytes(sealed),
		Annotations: map[string]string{"org.opencontainers.image.enc.keys.provider.attestation-agent": "e30="}}
	reg.Push(t, imagetest.New(t, ocispec.ImageConfig{Cmd: []string{"/app"}}, enc), "secret-app:1", nil)

	cfg := filepath.Join(t.TempDir(), "coco.toml")
	if err := os.WriteFile(cfg, []byte("[sandbox]\nbackend = \"local\"\n[local]\nagent_path = \""+testutil.Bin(t, "coco-agent")+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	shimDir := filepath.Dir(testutil.Bin(t, "containerd-shim-coco-v2"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	stock := containerdtest.Start(t, containerdtest.Options{ShimDir: shimDir, ShimConfig: cfg, Registry: reg.Host})
	_, err := stock.ImageService(t).PullImage(ctx, &cri.ImageSpec{Image: reg.Host + "/secret-app:1"}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "encrypted") {
		t.Fatalf("stock containerd pulled an encrypted image it cannot decrypt: %v", err)
	}

	ctrd := containerdtest.Start(t, containerdtest.Options{ShimDir: shimDir, ShimConfig: cfg, Registry: reg.Host,
		Snapshotter: startSnapshotter(t)})
	is, rs := ctrd.ImageService(t), ctrd.RuntimeService(t)
	for _, img := range []string{"/secret-app:1", "/busybox:1"} {
		if _, err := is.PullImage(ctx, &cri.ImageSpec{Image: reg.Host + img}, nil, nil); err != nil {
			t.Fatalf("pull %s through cocoon-snapshotter: %v", img, err)
		}
	}
	content, err := ctrd.Ctr("content", "ls", "-q")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []digest.Digest{digest.FromBytes(sealed), digest.FromBytes(busybox.Blob)} {
		if strings.Contains(content, l.String()) {
			t.Errorf("layer %s was downloaded to the host", l)
		}
	}

	sandbox := &cri.PodSandboxConfig{
		Metadata:     &cri.PodSandboxMetadata{Name: "snap", Uid: "uid-snap", Namespace: "default"},
		LogDirectory: t.TempDir(),
		Annotations:  map[string]string{"io.katacontainers.config.hypervisor.cc_init_data": initdataAnnotation(t, policy.AllowAll())},
		Linux: &cri.LinuxPodSandboxConfig{SecurityContext: &cri.LinuxSandboxSecurityContext{
			NamespaceOptions: &cri.NamespaceOption{Network: cri.NamespaceMode_NODE}}},
	}
	podID, err := rs.RunPodSandbox(ctx, sandbox, "coco")
	if err != nil {
		t.Fatalf("RunPodSandbox: %v\n%s", err, ctrd.Logs())
	}
	defer rs.RemovePodSandbox(ctx, podID)
	defer rs.StopPodSandbox(ctx, podID)
	cid, err := rs.CreateContainer(ctx, podID, &cri.ContainerConfig{Metadata: &cri.ContainerMetadata{Name: "c"},
		Image: &cri.ImageSpec{Image: reg.Host + "/busybox:1"}, LogPath: "c.log",
		Command: []string{"/bin/sh", "-c", "echo pulled in the sandbox"}}, sandbox)
	if err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	if err := rs.StartContainer(ctx, cid); err != nil {
		t.Fatal(err)
	}
	waitExited(ctx, t, rs, cid)
	log, err := os.ReadFile(filepath.Join(sandbox.LogDirectory, "c.log"))
	if err != nil || !strings.Contains(string(log), "pulled in the sandbox") {
		t.Fatalf("container log %q %v", log, err)
	}
}
