package k8s

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/agent/policy"
	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/cocoon-cc/cocoon/internal/testutil/k8stest"
	"github.com/cocoon-cc/cocoon/runtime/shim"
)

// TestCocoonVolumes: a cocoon-qemu pod's ConfigMap, Secret, projected
// service-account token, downwardAPI and emptyDir volumes reach its
// container (copied into the VM); a ConfigMap update reaches the running
// container, and a key removed from it disappears there; /etc/hosts and /etc/resolv.conf are there; a hostPath pod
// under the default policy fails to start, saying why.
func TestCocoonVolumes(t *testing.T) {
	c := k8stest.Get(t)
	objects := `apiVersion: v1
kind: ConfigMap
metadata: {name: vols-cfg, namespace: default}
data: {app.conf: v1, old.conf: gone-soon}
---
apiVersion: v1
kind: Secret
metadata: {name: vols-sec, namespace: default}
stringData: {token: s3cret}
---
apiVersion: v1
kind: Pod
metadata:
  name: vols
  namespace: default
  labels: {app: vols}
  annotations:
    io.katacontainers.config.hypervisor.cc_init_data: "` + testutil.InitdataAnnotation(t, policy.AllowAll()) + `"
spec:
  runtimeClassName: cocoon-qemu
  terminationGracePeriodSeconds: 1
  securityContext: {fsGroup: 1234}
  containers:
  - name: c
    image: ` + c.Busybox(t) + `
    command: ["/bin/sleep", "1000"]
    volumeMounts:
    - {name: cfg, mountPath: /etc/cfg}
    - {name: sec, mountPath: /etc/sec}
    - {name: token, mountPath: /var/run/secrets/tokens}
    - {name: info, mountPath: /etc/podinfo}
    - {name: mem, mountPath: /mem}
    - {name: disk, mountPath: /disk}
  volumes:
  - {name: cfg, configMap: {name: vols-cfg}}
  - {name: sec, secret: {secretName: vols-sec, defaultMode: 0440}}
  - name: token
    projected: {sources: [{serviceAccountToken: {path: token, expirationSeconds: 3600}}]}
  - {name: info, downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}}
  - {name: mem, emptyDir: {medium: Memory, sizeLimit: 8Mi}}
  - {name: disk, emptyDir: {}}
`
	c.Apply(t, objects)
	defer c.Delete(t, objects)
	c.WaitReady(t, "default", "vols")
	exec := func(script string) string {
		return c.Kubectl(t, "exec", "vols", "--", "/bin/sh", "-c", script)
	}
	out := exec(`echo cfg=$(cat /etc/cfg/app.conf) sec=$(cat /etc/sec/token) mode=$(/bin/busybox stat -L -c %a:%g /etc/sec/token)
echo labels=$(cat /etc/podinfo/labels)
echo token=$(head -c 3 /var/run/secrets/tokens/token)
/bin/busybox grep -E ' /(mem|disk) ' /proc/mounts
echo hosts=$(/bin/busybox grep -c vols /etc/hosts) resolv=$(/bin/busybox grep -c nameserver /etc/resolv.conf)`)
	for _, want := range []string{"cfg=v1 sec=s3cret mode=440:1234", `labels=app="vols"`, "token=eyJ", "tmpfs /mem tmpfs", "size=8192k",
		" /disk ", "hosts=1 resolv=1"} {
		if !strings.Contains(out, want) {
			t.Errorf("pod lacks %q:\n%s", want, out)
		}
	}
	c.Kubectl(t, "patch", "configmap", "vols-cfg", "--type=json", "-p",
		`[{"op":"replace","path":"/data/app.conf","value":"v2"},{"op":"remove","path":"/data/old.conf"}]`)
	// The kubelet syncs ConfigMap volumes within its sync period (about a
	// minute); the shim then copies the change in and removes what the
	// kubelet removed: the old key and the old data directory.
	for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(2 * time.Second) {
		if out := exec("cat /etc/cfg/app.conf; echo; /bin/busybox ls -A /etc/cfg | /bin/busybox tr '\\n' ' '"); strings.HasPrefix(out, "v2\n..20") &&
			strings.HasSuffix(out, " ..data app.conf ") && strings.Count(out, "..20") == 1 {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("the ConfigMap update did not reach the container: %q", out)
		}
	}

	hostPath := `apiVersion: v1
kind: Pod
metadata: {name: hostpath, namespace: default}
spec:
  runtimeClassName: cocoon-qemu
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: ` + c.Busybox(t) + `
    command: ["/bin/sleep", "1000"]
    volumeMounts: [{name: data, mountPath: /data}]
  volumes: [{name: data, hostPath: {path: /tmp, type: Directory}}]
`
	c.Apply(t, hostPath)
	defer c.Delete(t, hostPath)
	for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(2 * time.Second) {
		out := c.Kubectl(t, "get", "pod", "hostpath", "-o", "jsonpath={.status.containerStatuses[0].state.waiting.message}{.status.containerStatuses[0].lastState.terminated.message}")
		if strings.Contains(out, "mount /data: host path /tmp is not shared with the sandbox") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hostPath pod: %q\n%s", out, c.Kubectl(t, "describe", "pod", "hostpath"))
		}
	}
}

// marker is what the pods write to their encrypted volumes; the host must
// never find it in their backing stores.
const marker = "COCOON-K8S-PLAINTEXT-3b9d27"

// TestCocoonEncryptedVolumes: on a real node, a cocoon-qemu pod's disk
// emptyDir is a scratch disk encrypted in the guest, and a block
// PersistentVolume (a local PV on a loop device) is opened with LUKS2
// under a key the guest fetches from a real KBS after attestation, named
// by the pod's policy in initdata. The host sees ciphertext only; deleting
// the pods leaves no scratch file, device-mapper entry or kubelet loop
// device.
func TestCocoonEncryptedVolumes(t *testing.T) {
	c := k8stest.Get(t)
	key := make([]byte, 64)
	rand.Read(key)
	url := startKBS(t, c, map[string][]byte{"default/pv/key": key})
	loop, backing := testutil.LoopDevice(t, 64<<20)
	mappers, _ := os.ReadDir("/dev/mapper")

	rego := policy.AllowAll() + "\n" +
		`encrypted_volumes := {"/dev/xvda": {"key": "kbs:///default/pv/key", "mount_point": "/data", "format": true}}` + "\n"
	init := testutil.InitdataDocAnnotation(t, testutil.KBSInitdata(url, "", rego))
	objects := `apiVersion: v1
kind: PersistentVolume
metadata: {name: crypt-pv}
spec:
  capacity: {storage: 64Mi}
  volumeMode: Block
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  claimRef: {namespace: default, name: crypt-pvc}
  local: {path: ` + loop + `}
  nodeAffinity:
    required:
      nodeSelectorTerms: [{matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [` + k8stest.NodeName + `]}]}]
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: crypt-pvc, namespace: default}
spec:
  volumeMode: Block
  accessModes: [ReadWriteOnce]
  storageClassName: ""
  volumeName: crypt-pv
  resources: {requests: {storage: 64Mi}}
---
apiVersion: v1
kind: Pod
metadata:
  name: crypt
  namespace: default
  annotations:
    io.katacontainers.config.hypervisor.cc_init_data: "` + init + `"
spec:
  containers: [{name: c, image: "` + c.Busybox(t) + `", command: [/bin/sleep, "1000"],
    volumeMounts: [{name: crypt-scratch, mountPath: /scratch}], volumeDevices: [{name: pv, devicePath: /dev/xvda}]}]
  runtimeClassName: cocoon-qemu
  terminationGracePeriodSeconds: 1
  volumes:
  - {name: crypt-scratch, emptyDir: {}}
  - {name: pv, persistentVolumeClaim: {claimName: crypt-pvc}}
`
	c.Apply(t, objects)
	defer c.Delete(t, objects)
	c.WaitReady(t, "default", "crypt")
	mounts := c.Kubectl(t, "exec", "crypt", "--", "/bin/sh", "-c", "for d in /scratch /data; do for i in 1 2 3 4 5 6 7 8; do "+
		"echo "+marker+" >> $d/m; done; done; sync; /bin/busybox grep -E ' /(scratch|data) ' /proc/mounts")
	for _, want := range []string{" /scratch ext4 ", " /data ext4 "} {
		if !strings.Contains(mounts, want) || strings.Count(mounts, "/dev/mapper/") != 2 {
			t.Errorf("mounts lack %q on dm-crypt:\n%s", want, mounts)
		}
	}
	scratch, _ := filepath.Glob(filepath.Join(shim.StateRoot, "*", "emptydir-crypt-scratch.img"))
	if len(scratch) != 1 {
		t.Fatalf("scratch disks: %v", scratch)
	}
	for _, f := range []string{scratch[0], backing} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, []byte("LUKS\xba\xbe")) || bytes.Contains(b, []byte(marker)) {
			t.Errorf("%s is not LUKS2 ciphertext only (header % x)", f, b[:16])
		}
	}

	uid := c.Kubectl(t, "get", "pod", "crypt", "-o", "jsonpath={.metadata.uid}")
	c.Kubectl(t, "delete", "pod", "crypt", "--wait")
	c.WaitGone(t, "pod crypt", func() []string {
		left := c.PodLeftovers(uid)
		if _, err := os.Stat(scratch[0]); err == nil {
			left = append(left, "scratch disk "+scratch[0])
		}
		if now, _ := os.ReadDir("/dev/mapper"); len(now) != len(mappers) {
			left = append(left, fmt.Sprintf("device-mapper entries %v", now))
		}
		// The kubelet holds a block PV with a loop device of its own
		// while a pod maps it.
		if l, _ := exec.Command("losetup", "-j", loop).Output(); len(l) > 0 {
			left = append(left, "loop "+strings.TrimSpace(string(l)))
		}
		return left
	})
}

// startKBS runs a KBS where the cluster's guests reach the host, for the
// sample TEE the TCG guests attest with, holding resources; it returns its
// URL.
func startKBS(t *testing.T, c *k8stest.Cluster, resources map[string][]byte) string {
	t.Helper()
	return runKBS(t, c, "", nil, resources).url
}

// kbsServer is a KBS the test runs, with its admin client.
type kbsServer struct {
	url   string
	admin func(args ...string) ([]byte, error)
}

// runKBS is startKBS with more configuration (TOML appended to kbs.toml)
// and the KBS's log written to logs when it is not nil.
func runKBS(t testing.TB, c *k8stest.Cluster, extra string, logs io.Writer, resources map[string][]byte) *kbsServer {
	t.Helper()
	l, err := net.Listen("tcp", c.HostIP+":0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	data := t.TempDir()
	cfg := filepath.Join(data, "kbs.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("[http_server]\nsockets = [%q]\ninsecure_http = true\n[storage_backend]\n"+
		"storage_type = \"Embedded\"\n[storage_backend.backends.embedded]\npath = %q\n%s", addr, filepath.Join(data, "db"), extra)), 0o600)
	kbs := exec.Command(testutil.Bin(t, "kbs"), "--config", cfg)
	kbs.Stderr = logs
	if err := kbs.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kbs.Process.Kill(); kbs.Wait() })
	k := &kbsServer{url: "http://" + addr}
	adminArgs := []string{"--url", k.url, "config", "--auth-private-key", filepath.Join(data, "db", "admin", "private.key")}
	k.admin = func(args ...string) ([]byte, error) {
		return exec.Command(testutil.Bin(t, "kbs-client"), append(adminArgs, args...)...).CombinedOutput()
	}
	// The first admin call succeeds once the KBS listens.
	c.Eventually(t, "the KBS", func() bool { _, err := k.admin("set-resource-policy", "--affirming"); return err == nil })
	cmds := [][]string{{"set-sample-reference-value", "launch_digest", "abcde"}, {"set-sample-reference-value", "svn", "1"},
		{"set-sample-reference-value", "major_version", "1", "--as-integer", "--as-single-value"},
		{"set-sample-reference-value", "minimum_minor_version", "1", "--as-integer", "--as-single-value"}}
	for path, b := range resources {
		f := filepath.Join(data, strings.ReplaceAll(path, "/", "_"))
		os.WriteFile(f, b, 0o600)
		cmds = append(cmds, []string{"set-resource", "--path", path, "--resource-file", f})
	}
	for _, args := range cmds {
		if out, err := k.admin(args...); err != nil {
			t.Fatalf("kbs-client %v: %v\n%s", args, err, out)
		}
	}
	return k
}
