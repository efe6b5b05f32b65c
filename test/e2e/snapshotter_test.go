package e2e

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containerd/containerd/mount"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cocoon-cc/cocoon/agent/policy"
	"github.com/cocoon-cc/cocoon/image/imagetest"
	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/cocoon-cc/cocoon/internal/testutil/containerdtest"
	"github.com/cocoon-cc/cocoon/snapshotter"
)

// startSnapshotter runs cocoon-snapshotter for a containerd whose root is
// a directory of its own, returned with the snapshotter's socket; the
// snapshots live where containerd's CRI plugin looks for them, and
// containerd's directory is to be ctrdDir (its socket there).
func startSnapshotter(t *testing.T, args ...string) (sock, containerdRoot, ctrdDir string) {
	t.Helper()
	dir, err := os.MkdirTemp("/run", "snap-")
	if err != nil {
		t.Fatal(err)
	}
	sock, containerdRoot, ctrdDir = filepath.Join(dir, "s.sock"), filepath.Join(dir, "containerd"), filepath.Join(dir, "ctrd")
	cmd := exec.Command(bin(t, "cocoon-snapshotter"), append([]string{"--containerd-root", containerdRoot, "--address", sock,
		"--containerd-address", filepath.Join(ctrdDir, "c.sock")}, args...)...)
	var log strings.Builder
	cmd.Stderr = &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		cmd.Wait()
		containerdtest.UnmountUnder(dir)
		os.RemoveAll(dir)
		if t.Failed() {
			t.Logf("cocoon-snapshotter log:\n%s", log.String())
		}
	})
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(sock); err == nil {
			return sock, containerdRoot, ctrdDir
		}
	}
	t.Fatalf("cocoon-snapshotter did not listen:\n%s", log.String())
	return "", "", ""
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

	sock, root, dir := startSnapshotter(t)
	ctrd := containerdtest.Start(t, containerdtest.Options{ShimDir: shimDir, ShimConfig: cfg, Registry: reg.Host,
		Snapshotter: sock, Root: root, Dir: dir})
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
		Annotations:  map[string]string{"io.katacontainers.config.hypervisor.cc_init_data": testutil.InitdataAnnotation(t, policy.AllowAll())},
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

// TestSnapshotterSharedLayers: cocoon-snapshotter with --images, next to
// images unpacked on the host. containerd names a layer snapshot by its
// chain ID alone, so an image unpacked on the host after an image pulled in
// the guest that shares its lower layers finds the guest image's empty
// placeholders: the snapshotter fetches their content from the registry
// when the host image's unpack builds on them, or, for an image made only
// of such layers (which containerd does not unpack at all), when a root
// filesystem of it is prepared. Unpacked first on the host, the layers are
// real and the guest image reuses them. containerd's CRI finds the image
// filesystem where the kubelet's eviction manager looks.
func TestSnapshotterSharedLayers(t *testing.T) {
	reg := imagetest.StartRegistry(t)
	busybox := imagetest.BusyboxLayer(t)
	app := imagetest.GzipLayer(t, imagetest.File("app", "#!/bin/sh\necho app\n", 0o755))
	base := imagetest.GzipLayer(t, imagetest.File("bin/tool", "#!/bin/sh\necho tool\n", 0o755))
	extra := imagetest.GzipLayer(t, imagetest.File("etc/tool.conf", "x = 1\n", 0o644))
	lib := imagetest.GzipLayer(t, imagetest.File("lib/tool.so", "lib\n", 0o644))
	reg.Push(t, imagetest.New(t, ocispec.ImageConfig{Cmd: []string{"/app"}}, busybox, app), "host/app:1", nil)
	reg.Push(t, imagetest.New(t, ocispec.ImageConfig{Cmd: []string{"/bin/sh"}}, busybox), "guest/busybox:1", nil)
	reg.Push(t, imagetest.New(t, ocispec.ImageConfig{Cmd: []string{"/bin/tool"}}, base), "guest/tool:1", nil)
	reg.Push(t, imagetest.New(t, ocispec.ImageConfig{Cmd: []string{"/bin/tool"}}, base, extra), "host/tool:1", nil)
	reg.Push(t, imagetest.New(t, ocispec.ImageConfig{Cmd: []string{"/bin/tool"}}, lib), "guest/lib:1", nil)
	reg.Push(t, imagetest.New(t, ocispec.ImageConfig{Cmd: []string{"/bin/tool", "-v"}}, lib), "host/lib:1", nil)

	sock, root, dir := startSnapshotter(t, "--images", "/guest/")
	ctrd := containerdtest.Start(t, containerdtest.Options{Registry: reg.Host, Snapshotter: sock, Root: root, Dir: dir})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	is := ctrd.ImageService(t)

	fsInfo, err := is.ImageFsInfo(ctx)
	if err != nil || len(fsInfo.GetImageFilesystems()) == 0 {
		t.Fatalf("ImageFsInfo = %v, %v", fsInfo, err)
	}
	mp := fsInfo.ImageFilesystems[0].GetFsId().GetMountpoint()
	var st unix.Statfs_t
	if mp != snapshotter.ImageFSPath(root) || unix.Statfs(mp, &st) != nil {
		t.Fatalf("CRI's image filesystem %q (want %q) cannot be measured", mp, snapshotter.ImageFSPath(root))
	}

	pull := func(img string) {
		t.Helper()
		if _, err := is.PullImage(ctx, &cri.ImageSpec{Image: reg.Host + img}, nil, nil); err != nil {
			t.Fatalf("pull %s: %v", img, err)
		}
	}
	// Unpacked on the host first: real layers, which the guest image reuses.
	pull("/host/app:1")
	pull("/guest/busybox:1")
	for _, f := range []string{"bin/sh", "app"} {
		if !rootfsHas(t, ctrd, f, busybox, app) {
			t.Errorf("host/app's root filesystem lacks /%s", f)
		}
	}
	// Left to the guest first: the guest image's root filesystem stays
	// empty; a host image unpacked over it gets the shared layer fetched.
	pull("/guest/tool:1")
	if rootfsHas(t, ctrd, "bin/tool", base) {
		t.Fatal("guest/tool's layer was unpacked on the host")
	}
	pull("/host/tool:1")
	for _, f := range []string{"bin/tool", "etc/tool.conf"} {
		if !rootfsHas(t, ctrd, f, base, extra) {
			t.Errorf("host/tool's root filesystem lacks /%s", f)
		}
	}
	// An image made only of layers a guest image left empty: its root
	// filesystem gets them once prepared.
	pull("/guest/lib:1")
	pull("/host/lib:1")
	if !rootfsHas(t, ctrd, "lib/tool.so", lib) {
		t.Error("host/lib's root filesystem lacks /lib/tool.so")
	}
}

// rootfsHas mounts a view of the image made of layers, as a container's
// root filesystem, and reports whether it holds path.
func rootfsHas(t *testing.T, ctrd *containerdtest.Containerd, path string, layers ...imagetest.Layer) bool {
	t.Helper()
	var diffIDs []digest.Digest
	for _, l := range layers {
		diffIDs = append(diffIDs, l.DiffID)
	}
	key := fmt.Sprintf("view-%d", time.Now().UnixNano())
	out, err := ctrd.Ctr("snapshots", "--snapshotter", "cocoon", "view", "--mounts", key, identity.ChainID(diffIDs).String())
	if err != nil {
		t.Fatalf("view: %v %s", err, out)
	}
	defer ctrd.Ctr("snapshots", "--snapshotter", "cocoon", "rm", key)
	var mounts []mount.Mount
	if err := json.Unmarshal([]byte(out), &mounts); err != nil {
		t.Fatalf("view mounts %q: %v", out, err)
	}
	dir := t.TempDir()
	if err := mount.All(mounts, dir); err != nil {
		t.Fatal(err)
	}
	defer mount.UnmountAll(dir, 0)
	_, err = os.Stat(filepath.Join(dir, path))
	return err == nil
}
