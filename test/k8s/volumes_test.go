package k8s

import (
	"strings"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/agent/policy"
	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/cocoon-cc/cocoon/internal/testutil/k8stest"
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
