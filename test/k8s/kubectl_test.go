package k8s

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/cocoon-cc/cocoon/agent"
	"github.com/cocoon-cc/cocoon/agent/policy"
	"github.com/cocoon-cc/cocoon/image/imagetest"
	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/cocoon-cc/cocoon/internal/testutil/k8stest"
	"github.com/cocoon-cc/cocoon/runtime/shim"
)

// toolsImage is busybox with tar (kubectl cp runs it in the container) and
// sha256sum.
func toolsImage(t *testing.T, c *k8stest.Cluster) string {
	img := imagetest.New(t, ocispec.ImageConfig{Cmd: []string{"/bin/sh"}, Env: []string{"PATH=/bin"}}, imagetest.BusyboxLayer(t),
		imagetest.GzipLayer(t, imagetest.Symlink("bin/tar", "busybox"), imagetest.Symlink("bin/sha256sum", "busybox")))
	return c.PushImage(t, img, "busybox-tools:1")
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestKubectlStreams: kubectl's stream commands on a cocoon-qemu pod whose
// policy allows exec and reads: cp both ways and exec -i, byte for byte;
// attach, also -i; logs, logs -f, and logs --previous with the exit status
// and the termination message after the container ended and the kubelet
// restarted it.
func TestKubectlStreams(t *testing.T) {
	c := k8stest.Get(t)
	// Each run of the container prints its number and ticks until told to
	// exit (a file in the pod's emptyDir), with a 5000-byte termination
	// message and status 3. Container "in" answers each line of its input.
	pod := `apiVersion: v1
kind: Pod
metadata:
  name: streams
  namespace: default
  annotations:
    kubectl.kubernetes.io/default-container: c
    io.katacontainers.config.hypervisor.cc_init_data: "` + testutil.InitdataAnnotation(t, policy.AllowAll()) + `"
spec:
  runtimeClassName: cocoon-qemu
  automountServiceAccountToken: false
  containers:
  - name: c
    image: ` + toolsImage(t, c) + `
    command: ["/bin/sh", "-c", "n=$(cat /data/n 2>/dev/null || echo 0); echo $((n+1)) > /data/n; echo run-$n; i=0; while [ ! -f /data/stop-$n ]; do echo tick-$i; i=$((i+1)); sleep 0.5; done; i=0; while [ $i -lt 500 ]; do printf 'line-%04d\\n' $i; i=$((i+1)); done > /dev/termination-log; exit 3"]
    volumeMounts: [{name: data, mountPath: /data}]
  - name: in
    image: ` + c.Busybox(t) + `
    command: ["/bin/sh", "-c", "while read l; do echo got-$l; done"]
    stdin: true
  volumes: [{name: data, emptyDir: {}}]
`
	c.Apply(t, pod)
	defer c.Delete(t, pod)
	c.WaitReady(t, "default", "streams")

	for _, size := range []int{0, 1, 1 << 20} {
		data := make([]byte, size)
		rand.Read(data)
		local := filepath.Join(t.TempDir(), "f")
		if err := os.WriteFile(local, data, 0o600); err != nil {
			t.Fatal(err)
		}
		want := fmt.Sprintf("%s  /tmp/f%d\n", sum(data), size)
		c.Kubectl(t, "cp", local, fmt.Sprintf("default/streams:/tmp/f%d", size))
		if out := c.Kubectl(t, "exec", "streams", "--", "sha256sum", fmt.Sprintf("/tmp/f%d", size)); out != want {
			t.Errorf("kubectl cp of %d bytes into the pod: %q, want %q", size, out, want)
		}
		back := filepath.Join(t.TempDir(), "back")
		c.Kubectl(t, "cp", fmt.Sprintf("default/streams:/tmp/f%d", size), back)
		if got, err := os.ReadFile(back); err != nil || !bytes.Equal(got, data) {
			t.Errorf("kubectl cp of %d bytes from the pod: %v, %d bytes, equal %v", size, err, len(got), bytes.Equal(got, data))
		}
		if out, err := c.TryKubectl(string(data), "exec", "-i", "streams", "--", "sh", "-c", fmt.Sprintf("cat > /tmp/i%d", size)); err != nil {
			t.Errorf("kubectl exec -i: %v %s", err, out)
		}
		if out := c.Kubectl(t, "exec", "streams", "--", "cat", fmt.Sprintf("/tmp/i%d", size)); out != string(data) {
			t.Errorf("kubectl exec -i of %d bytes: %d bytes back", size, len(out))
		}
	}

	// exec -it, from a terminal (script's) whose input stays open: the
	// process has a terminal, and nothing precedes its output.
	term := exec.Command("script", "-qec", filepath.Join(k8stest.BinDir(), "kubectl")+" --kubeconfig "+c.Kubeconfig+
		" exec -it streams -- sh -c 'tty; echo hi'", "/dev/null")
	keyboard, keys, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	term.Stdin = keyboard
	got, err := term.CombinedOutput()
	keys.Close()
	keyboard.Close()
	if err != nil || string(got) != "/dev/pts/0\r\nhi\r\n" {
		t.Errorf("kubectl exec -it: %v %q", err, got)
	}

	// logs -f: ticks arrive while the container runs.
	if seen := follow(t, c, "", 4, "logs", "-f", "streams"); len(seen) < 4 || seen[0] != "run-0" || !strings.HasPrefix(seen[3], "tick-") {
		t.Errorf("kubectl logs -f: %q", seen)
	}
	// attach: the running container's output from now on; attach -i: the
	// input reaches the container's stdin.
	if seen := follow(t, c, "", 1, "attach", "streams", "-c", "c"); len(seen) != 1 || !strings.HasPrefix(seen[0], "tick-") {
		t.Errorf("kubectl attach: %q", seen)
	}
	if seen := follow(t, c, "hello\nworld\n", 2, "attach", "-i", "streams", "-c", "in"); strings.Join(seen, " ") != "got-hello got-world" {
		t.Errorf("kubectl attach -i: %q", seen)
	}

	// The container exits with 3; the kubelet restarts it.
	c.Kubectl(t, "exec", "streams", "--", "touch", "/data/stop-0")
	c.Kubectl(t, "wait", "--for=jsonpath={.status.containerStatuses[0].restartCount}=1", "pod/streams", "--timeout=2m")
	c.WaitReady(t, "default", "streams")
	if code := c.Kubectl(t, "get", "pod", "streams", "-o", "jsonpath={.status.containerStatuses[0].lastState.terminated.exitCode}"); code != "3" {
		t.Errorf("the ended container's exit code %q, want 3", code)
	}
	// The termination message the container wrote in the guest, its last
	// 4096 bytes as the kubelet reads them.
	var message strings.Builder
	for i := range 500 {
		fmt.Fprintf(&message, "line-%04d\n", i)
	}
	want := message.String()[message.Len()-agent.TerminationMessageMax:]
	if got := c.Kubectl(t, "get", "pod", "streams", "-o", "jsonpath={.status.containerStatuses[0].lastState.terminated.message}"); got != want {
		t.Errorf("termination message: %d bytes %.40q..., want the file's last %d", len(got), got, len(want))
	}
	if prev := c.Kubectl(t, "logs", "--previous", "streams"); !strings.HasPrefix(prev, "run-0\ntick-0\n") {
		t.Errorf("kubectl logs --previous: %q", prev)
	}
	if cur := c.Kubectl(t, "logs", "streams"); !strings.HasPrefix(cur, "run-1\n") {
		t.Errorf("kubectl logs after the restart: %q", cur)
	}
}

// follow runs a kubectl command that streams (logs -f, attach), input on its
// standard input (which stays open: containerd ends an attach, stdout too,
// when its input ends), until it printed n lines or a minute passed, and
// returns the lines (with its standard error when fewer).
func follow(t *testing.T, c *k8stest.Cluster, input string, n int, args ...string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(k8stest.BinDir(), "kubectl"), append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	in, keys, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer keys.Close()
	cmd.Stdin = in
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	err = cmd.Start()
	in.Close()
	if err != nil {
		t.Fatal(err)
	}
	keys.WriteString(input)
	lines := bufio.NewScanner(out)
	var seen []string
	for len(seen) < n && lines.Scan() {
		seen = append(seen, lines.Text())
	}
	cancel()
	cmd.Wait()
	if len(seen) < n {
		seen = append(seen, "stderr: "+stderr.String())
	}
	return seen
}

// TestKubectlDefaultPolicy: a Cocoon pod under the default policy with its
// exec readiness probe allowed in its initdata becomes Ready; kubectl exec
// of anything else is refused, naming the rule; kubectl logs says in one
// line that the output is withheld.
func TestKubectlDefaultPolicy(t *testing.T) {
	c := k8stest.Get(t)
	rego := strings.Replace(policy.Default(), `"allowed_commands": []`, `"allowed_commands": [["cat", "/tmp/ready"]]`, 1)
	pod := `apiVersion: v1
kind: Pod
metadata:
  name: probed
  namespace: default
  annotations:
    io.katacontainers.config.hypervisor.cc_init_data: "` + testutil.InitdataAnnotation(t, rego) + `"
spec:
  runtimeClassName: cocoon-local
  automountServiceAccountToken: false
  containers:
  - name: c
    image: ` + c.Busybox(t) + `
    command: ["/bin/sh", "-c", "echo secret; touch /tmp/ready; exec sleep 1000"]
    readinessProbe:
      exec: {command: ["cat", "/tmp/ready"]}
      periodSeconds: 1
`
	c.Apply(t, pod)
	defer c.Delete(t, pod)
	c.WaitReady(t, "default", "probed")
	if out, err := c.TryKubectl("", "exec", "probed", "--", "cat", "/etc/passwd"); err == nil || !strings.Contains(out, "ExecProcessRequest") {
		t.Errorf("kubectl exec of another command: %v %q", err, out)
	}
	if out := c.Kubectl(t, "logs", "probed"); out != shim.WithheldNotice {
		t.Errorf("kubectl logs: %q, want the withheld notice", out)
	}
}

// TestTerminationMessages: cocoon-local pods whose containers end: under
// the default policy a message written in the sandbox is reported as
// withheld, and FallbackToLogsOnError falls back to the log's withheld
// notice; under a policy allowing TerminationMessageRequest (and reads) a
// message at a terminationMessagePath of the pod's choosing is reported,
// and FallbackToLogsOnError gives the failed container's output.
func TestTerminationMessages(t *testing.T) {
	c := k8stest.Get(t)
	pod := func(name, rego string) string {
		initdata := testutil.InitdataAnnotation(t, rego)
		return `apiVersion: v1
kind: Pod
metadata: {name: ` + name + `, namespace: default, annotations: {io.katacontainers.config.hypervisor.cc_init_data: "` + initdata + `"}}
spec:
  runtimeClassName: cocoon-local
  restartPolicy: Never
  automountServiceAccountToken: false
  containers:
  - name: told
    image: ` + c.Busybox(t) + `
    command: ["/bin/sh", "-c", "echo the reason > /tmp/why"]
    terminationMessagePath: /tmp/why
  - name: fallback
    image: ` + c.Busybox(t) + `
    command: ["/bin/sh", "-c", "echo crashed; exit 1"]
    terminationMessagePolicy: FallbackToLogsOnError
`
	}
	pods := pod("ended-default", policy.Default()) + "---\n" + pod("ended-allowed", policy.AllowAll())
	c.Apply(t, pods)
	defer c.Delete(t, pods)
	message := func(pod, container string) string {
		return c.Kubectl(t, "get", "pod", pod, "-o", `jsonpath={.status.containerStatuses[?(@.name=="`+container+`")].state.terminated.message}`)
	}
	for pod, want := range map[string][2]string{
		"ended-default": {shim.WithheldTerminationMessage, shim.WithheldNotice},
		"ended-allowed": {"the reason\n", "crashed\n"},
	} {
		c.Kubectl(t, "wait", "--for=jsonpath={.status.phase}=Failed", "pod/"+pod, "--timeout=2m")
		if got := message(pod, "told"); got != want[0] {
			t.Errorf("%s: termination message %q, want %q", pod, got, want[0])
		}
		if got := message(pod, "fallback"); got != want[1] {
			t.Errorf("%s: FallbackToLogsOnError message %q, want %q", pod, got, want[1])
		}
	}
}
