package e2e

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cocoon-cc/cocoon/agent/policy"
	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/cocoon-cc/cocoon/runtime/shim"
	"golang.org/x/sys/unix"
)

// kubeletPod lays out a pod's volumes on the host as the kubelet does:
// ConfigMap and Secret directories whose files are symlinks through a
// "..data" symlink to a timestamped directory, emptyDir directories (a
// tmpfs for medium: Memory), a subPath and a termination-message file.
type kubeletPod struct {
	dir string // .../pods/<uid>
}

func newKubeletPod(t *testing.T) *kubeletPod {
	p := &kubeletPod{dir: filepath.Join(t.TempDir(), "pods", "0f1e2d3c-uid")}
	mem := p.volume("empty-dir", "mem")
	disk := p.volume("empty-dir", "disk")
	for _, d := range []string{mem, disk, filepath.Join(p.dir, "containers", "c")} {
		if err := os.MkdirAll(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mount("tmpfs", mem, "tmpfs", 0, "size=2m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(mem, unix.MNT_DETACH) })
	return p
}

func (p *kubeletPod) volume(kind, name string) string {
	return filepath.Join(p.dir, "volumes", "kubernetes.io~"+kind, name)
}

// write updates a ConfigMap- or Secret-like volume as the kubelet's atomic
// writer does: a new timestamped directory, "..data" swapped to it, the
// old directory removed.
func (p *kubeletPod) write(t *testing.T, dir, stamp string, files map[string][]byte, mode os.FileMode, gid int) {
	t.Helper()
	ts := filepath.Join(dir, "..2026_01_01_00_00_0"+stamp)
	if err := os.MkdirAll(ts, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		f := filepath.Join(ts, name)
		if err := os.WriteFile(f, data, mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(f, mode)
		os.Chown(f, 0, gid)
		os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name))
	}
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	if err := os.Symlink(filepath.Base(ts), filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if old != "" {
		os.RemoveAll(filepath.Join(dir, old))
	}
}

// TestPodVolumes: the kubelet's volumes reach containers of a coco pod
// (local backend) through CRI, as copies and guest storages.
func TestPodVolumes(t *testing.T) {
	testPodVolumes(t, newPodEnv(t))
}

// TestPodVolumesVM: the same in a QEMU VM (TCG), where nothing but CopyFile
// crosses from the host, and the disk emptyDir is a scratch disk the guest
// encrypts: its backing file holds no byte the container wrote in clear.
func TestPodVolumesVM(t *testing.T) {
	testPodVolumes(t, newVMPodEnv(t))
}

// plainMarker is what a container writes to an encrypted volume; the host
// must never find it in the volume's backing store.
const plainMarker = "COCOON-PLAINTEXT-MARKER-5f0c1e"

func testPodVolumes(t *testing.T, e *podEnv) {
	rs := e.ctrd.RuntimeService(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	kp := newKubeletPod(t)
	cm, sec := kp.volume("configmap", "cfg"), kp.volume("secret", "sec")
	big := bytes.Repeat([]byte("0123456789abcdef"), 160*1024+7) // 2.5 MiB: three CopyFile chunks
	kp.write(t, cm, "1", map[string][]byte{"app.conf": []byte("v1\n"), "big.bin": big}, 0o644, 0)
	kp.write(t, sec, "1", map[string][]byte{"token": []byte("s3cret\n")}, 0o440, 1234)
	// The kubelet's subPath: a bind mount of the file, here a copy.
	sub := filepath.Join(kp.dir, "volume-subpaths", "cfg", "c", "0")
	os.MkdirAll(filepath.Dir(sub), 0o755)
	os.WriteFile(sub, []byte("v1\n"), 0o644)
	term := filepath.Join(kp.dir, "containers", "c", "f00dbeef")
	os.WriteFile(term, nil, 0o666)
	hostData := filepath.Join(t.TempDir(), "hostdata")
	os.MkdirAll(hostData, 0o755)
	os.WriteFile(filepath.Join(hostData, "host-file"), []byte("host"), 0o644)

	logDir := t.TempDir()
	podID, sandbox := e.startPod(ctx, t, rs, "vols", logDir)
	defer rs.RemovePodSandbox(ctx, podID)
	defer rs.StopPodSandbox(ctx, podID)
	mounts := []*cri.Mount{
		{ContainerPath: "/etc/cfg", HostPath: cm, Readonly: true},
		{ContainerPath: "/etc/sec", HostPath: sec, Readonly: true},
		{ContainerPath: "/etc/app.conf", HostPath: sub, Readonly: true},
		{ContainerPath: "/mem", HostPath: kp.volume("empty-dir", "mem")},
		{ContainerPath: "/disk", HostPath: kp.volume("empty-dir", "disk")},
		{ContainerPath: "/dev/termination-log", HostPath: term},
		{ContainerPath: "/hostdata", HostPath: hostData},
	}
	bb := "/bin/busybox "
	script := strings.Join([]string{
		"echo cfg=$(cat /etc/cfg/app.conf) sub=$(cat /etc/app.conf) sec=$(cat /etc/sec/token)",
		"echo secmode=$(" + bb + "stat -L -c %a:%u:%g /etc/sec/token)",
		"echo big=$(" + bb + "md5sum /etc/cfg/big.bin)",
		"echo mounts; " + bb + "grep -E ' /(mem|disk|dev/shm|etc/cfg) ' /proc/mounts",
		"echo hosts=$(" + bb + "wc -c < /etc/hosts) hostname=$(cat /etc/hostname) resolv=$(test -f /etc/resolv.conf && echo yes)",
		"echo hostdata=[$(ls /hostdata)]",
		"for i in 1 2 3 4 5 6 7 8; do echo " + plainMarker + " >> /disk/marker; done; sync",
		"echo shared > /disk/f; echo shared > /mem/f; echo bye > /dev/termination-log && echo term=ok",
		"echo ready",
		"while ! " + bb + "grep -q v2 /etc/cfg/app.conf; do sleep 0.2; done; echo cfg2=$(cat /etc/cfg/app.conf) sub2=$(cat /etc/app.conf)",
	}, "; ")
	c1 := createStarted(ctx, t, e, rs, podID, sandbox, &cri.ContainerConfig{Metadata: &cri.ContainerMetadata{Name: "c"},
		Image: &cri.ImageSpec{Image: e.image}, Command: []string{"/bin/sh", "-c", script}, LogPath: "c.log", Mounts: mounts})
	log := waitLog(t, filepath.Join(logDir, "c.log"), "ready")
	sum := md5.Sum(big)
	for _, want := range []string{"cfg=v1 sub=v1 sec=s3cret", "secmode=440:0:1234", "big=" + hex.EncodeToString(sum[:]),
		"tmpfs /mem tmpfs rw,relatime,size=2048k", " /disk ", "tmpfs /dev/shm tmpfs", "hostname=vols resolv=yes",
		"hostdata=[]", "term=ok"} {
		if !strings.Contains(log, want) {
			t.Errorf("container output lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, "hosts=0 ") {
		t.Errorf("empty /etc/hosts:\n%s", log)
	}
	// The ConfigMap changes: the container sees it, not in its subPath.
	kp.write(t, cm, "2", map[string][]byte{"app.conf": []byte("v2\n"), "big.bin": big}, 0o644, 0)
	if st := waitExited(ctx, t, rs, c1); st.ExitCode != 0 {
		t.Fatalf("container exit %d\n%s", st.ExitCode, e.ctrd.Logs())
	}
	if log := waitLog(t, filepath.Join(logDir, "c.log"), "cfg2="); !strings.Contains(log, "cfg2=v2 sub2=v1") {
		t.Errorf("after the update:\n%s", log)
	}
	// emptyDir volumes are the pod's: another container finds the files.
	c2 := createStarted(ctx, t, e, rs, podID, sandbox, &cri.ContainerConfig{Metadata: &cri.ContainerMetadata{Name: "c2"},
		Image: &cri.ImageSpec{Image: e.image}, LogPath: "c2.log", Mounts: mounts[3:5],
		Command: []string{"/bin/sh", "-c", "echo disk=$(cat /disk/f) mem=$(cat /mem/f)"}})
	waitExited(ctx, t, rs, c2)
	if log := waitLog(t, filepath.Join(logDir, "c2.log"), "disk="); !strings.Contains(log, "disk=shared mem=shared") {
		t.Errorf("second container:\n%s", log)
	}
	// Nothing reached the host's emptyDir directory.
	if f, _ := os.ReadDir(kp.volume("empty-dir", "disk")); len(f) != 0 {
		t.Errorf("host emptyDir has %v", f)
	}
	if e.vm {
		checkScratchDisk(t, log, podID)
	}
}

// checkScratchDisk: a VM pod's disk emptyDir was an ext4 on dm-crypt in the
// guest, and its backing file on the host is LUKS2 with no plaintext.
func checkScratchDisk(t *testing.T, log, podID string) {
	t.Helper()
	if !strings.Contains(log, "/dev/mapper/") || !strings.Contains(log, " /disk ext4 ") {
		t.Errorf("the disk emptyDir is no ext4 on dm-crypt:\n%s", log)
	}
	sum := sha256.Sum256([]byte("k8s.io/" + podID))
	img, err := os.ReadFile(filepath.Join(shim.StateRoot, hex.EncodeToString(sum[:8]), "emptydir-disk.img"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(img, []byte("LUKS\xba\xbe")) {
		t.Errorf("the scratch disk has no LUKS header: % x", img[:min(16, len(img))])
	}
	if bytes.Contains(img, []byte(plainMarker)) || bytes.Contains(img, []byte("shared\n")) {
		t.Error("the host reads what the container wrote in the scratch disk's backing file")
	}
}

// TestPodVolumesRefused: under the default policy, a hostPath volume fails
// the container's creation with an error naming the mount, while the
// kubelet's other volumes are fine.
func TestPodVolumesRefused(t *testing.T) {
	e := newPodEnv(t)
	rs := e.ctrd.RuntimeService(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	kp := newKubeletPod(t)
	cm := kp.volume("configmap", "cfg")
	kp.write(t, cm, "1", map[string][]byte{"app.conf": []byte("v1\n")}, 0o644, 0)
	sandbox := &cri.PodSandboxConfig{Metadata: &cri.PodSandboxMetadata{Name: "refuse", Uid: "uid-refuse", Namespace: "default"},
		Hostname: "refuse", Annotations: map[string]string{"io.katacontainers.config.hypervisor.cc_init_data": testutil.InitdataAnnotation(t, policy.Default())},
		Linux: &cri.LinuxPodSandboxConfig{SecurityContext: &cri.LinuxSandboxSecurityContext{
			NamespaceOptions: &cri.NamespaceOption{Network: cri.NamespaceMode_NODE}}}}
	podID, err := rs.RunPodSandbox(ctx, sandbox, "coco")
	if err != nil {
		t.Fatalf("RunPodSandbox: %v\n%s", err, e.ctrd.Logs())
	}
	defer rs.RemovePodSandbox(ctx, podID)
	defer rs.StopPodSandbox(ctx, podID)
	if _, err := e.ctrd.ImageService(t).PullImage(ctx, &cri.ImageSpec{Image: e.image}, nil, sandbox); err != nil {
		t.Fatal(err)
	}
	cfg := func(name string, m ...*cri.Mount) *cri.ContainerConfig {
		return &cri.ContainerConfig{Metadata: &cri.ContainerMetadata{Name: name}, Image: &cri.ImageSpec{Image: e.image},
			Command: []string{"/bin/sleep", "1"}, Mounts: append(m, &cri.Mount{ContainerPath: "/etc/cfg", HostPath: cm},
				&cri.Mount{ContainerPath: "/mem", HostPath: kp.volume("empty-dir", "mem")})}
	}
	createStarted(ctx, t, e, rs, podID, sandbox, cfg("ok"))
	host := t.TempDir()
	// CRI creates the task when it starts the container.
	cid, err := rs.CreateContainer(ctx, podID, cfg("hostpath", &cri.Mount{ContainerPath: "/data", HostPath: host}), sandbox)
	if err != nil {
		t.Fatal(err)
	}
	err = rs.StartContainer(ctx, cid)
	if err == nil || !strings.Contains(err.Error(), "mount /data: host path "+host+" is not shared") {
		t.Fatalf("hostPath container: %v", err)
	}
}

// createStarted creates and starts a CRI container.
func createStarted(ctx context.Context, t *testing.T, e *podEnv, rs interface {
	CreateContainer(context.Context, string, *cri.ContainerConfig, *cri.PodSandboxConfig) (string, error)
	StartContainer(context.Context, string) error
}, podID string, sandbox *cri.PodSandboxConfig, cfg *cri.ContainerConfig) string {
	t.Helper()
	cid, err := rs.CreateContainer(ctx, podID, cfg, sandbox)
	if err != nil {
		t.Fatalf("CreateContainer %s: %v\n%s", cfg.Metadata.Name, err, e.ctrd.Logs())
	}
	if err := rs.StartContainer(ctx, cid); err != nil {
		t.Fatal(err)
	}
	return cid
}

// waitLog waits up to 60 s for a CRI log file to contain want.
func waitLog(t *testing.T, path, want string) string {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), want) || time.Now().After(deadline) {
			return string(b)
		}
	}
}

// TestPodEncryptedBlockVolume: a raw block volume (a loop device, as a
// local block PersistentVolume) handed to a VM pod is formatted with LUKS2
// under a key the guest fetches from a real KBS after attestation, its URI
// named by the pod's policy in initdata; the host's device holds only
// ciphertext, and a second pod opens it again with the same key and reads
// what the first wrote. Nothing of the pods is left on the host.
func TestPodEncryptedBlockVolume(t *testing.T) {
	e := newVMPodEnv(t)
	// The KBS, where the guests reach it: the pods' bridge.
	data := t.TempDir()
	port := freePort(t)
	addr := net.JoinHostPort(e.gateway.String(), strconv.Itoa(port))
	cfg := filepath.Join(t.TempDir(), "kbs.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("[http_server]\nsockets = [%q]\ninsecure_http = true\n[storage_backend]\n"+
		"storage_type = \"Embedded\"\n[storage_backend.backends.embedded]\npath = %q\n", addr, data)), 0o600)
	url := "http://" + addr
	k := startKBS(t, cfg, url, data, nil)
	provisionSample(t, url, k.adminKey())
	key := make([]byte, 64)
	rand.Read(key)
	setResource(t, []string{"--url", url}, k.adminKey(), "default/pv/key", key)

	loop, backing := testutil.LoopDevice(t, 64<<20)
	mappers, _ := os.ReadDir("/dev/mapper")
	rs := e.ctrd.RuntimeService(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()

	rego := strings.Replace(policy.Default(), "default ReadStreamRequest := false", "default ReadStreamRequest := true", 1)
	rego = strings.Replace(rego, "encrypted_volumes := {}",
		`encrypted_volumes := {"/dev/xvda": {"key": "kbs:///default/pv/key", "mount_point": "/data", "format": true}}`, 1)
	kbc := fmt.Sprintf("[kbc]\nname = \"cc_kbc\"\nurl = %q\n", url)
	init := testutil.InitdataDocAnnotation(t, fmt.Sprintf("version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n"+
		"\"aa.toml\" = '''\n[token_configs.kbs]\nurl = %q\n'''\n\"cdh.toml\" = '''\n%s'''\n\"policy.rego\" = '''\n%s\n'''\n", url, kbc, rego))
	run := func(name, script string) string {
		logDir := t.TempDir()
		podID, sandbox := e.startPodInit(ctx, t, rs, "coco", name, logDir, init)
		defer rs.RemovePodSandbox(ctx, podID)
		defer rs.StopPodSandbox(ctx, podID)
		cid := createStarted(ctx, t, e, rs, podID, sandbox, &cri.ContainerConfig{Metadata: &cri.ContainerMetadata{Name: "c"},
			Image: &cri.ImageSpec{Image: e.image}, LogPath: "c.log", Command: []string{"/bin/sh", "-c", script},
			Devices: []*cri.Device{{ContainerPath: "/dev/xvda", HostPath: loop, Permissions: "rwm"}}})
		if st := waitExited(ctx, t, rs, cid); st.ExitCode != 0 {
			b, _ := os.ReadFile(filepath.Join(logDir, "c.log"))
			t.Fatalf("%s: exit %d\n%s\n%s", name, st.ExitCode, b, e.ctrd.Logs())
		}
		return waitLog(t, filepath.Join(logDir, "c.log"), "done")
	}
	log := run("pv1", "grep ' /data ' /proc/mounts; for i in 1 2 3 4 5 6 7 8; do echo "+plainMarker+" >> /data/m; done; sync; echo done")
	if !strings.Contains(log, "/dev/mapper/") || !strings.Contains(log, " /data ext4 ") {
		t.Errorf("/data is no ext4 on dm-crypt:\n%s", log)
	}
	img, err := os.ReadFile(backing)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(img, []byte("LUKS\xba\xbe")) || bytes.Contains(img, []byte(plainMarker)) {
		t.Errorf("the host's device is not LUKS2 ciphertext only (header % x)", img[:16])
	}
	// Reopened under the KBS's key, not formatted again.
	if log := run("pv2", "echo read=$(/bin/busybox head -n 1 /data/m); echo done"); !strings.Contains(log, "read="+plainMarker) {
		t.Errorf("second pod:\n%s", log)
	}
	assertNoLeftovers(t, e.ctrd)
	if now, _ := os.ReadDir("/dev/mapper"); len(now) != len(mappers) {
		t.Errorf("device-mapper entries on the host: %v, before %v", now, mappers)
	}
}
