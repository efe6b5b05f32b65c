package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/remotecommand"
	internalapi "k8s.io/cri-api/pkg/apis"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cocoon-cc/cocoon/agent/policy"
	"github.com/cocoon-cc/cocoon/runtime/shim"
)

// stream runs a CRI streaming request (Exec or Attach URL) the way the
// kubelet forwards kubectl's: SPDY, remotecommand protocol v4/v5. A
// terminal's size is 40x100 as kubectl sends it first.
func stream(ctx context.Context, rawURL string, stdin io.Reader, tty bool) (stdout, stderr []byte, err error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, nil, err
	}
	ex, err := remotecommand.NewSPDYExecutor(&rest.Config{}, "POST", u)
	if err != nil {
		return nil, nil, err
	}
	var out, errb bytes.Buffer
	opts := remotecommand.StreamOptions{Stdin: stdin, Stdout: &out, Tty: tty}
	if tty {
		opts.TerminalSizeQueue = &oneSize{size: &remotecommand.TerminalSize{Width: 100, Height: 40}}
	} else {
		opts.Stderr = &errb
	}
	err = ex.StreamWithContext(ctx, opts)
	return out.Bytes(), errb.Bytes(), err
}

// oneSize is a terminal that never changes size.
type oneSize struct{ size *remotecommand.TerminalSize }

func (q *oneSize) Next() *remotecommand.TerminalSize {
	s := q.size
	q.size = nil
	return s
}

// execStream is kubectl exec [-i] [-t] through CRI's streaming server.
func execStream(ctx context.Context, rs internalapi.RuntimeService, cid string, cmd []string, stdin io.Reader, tty bool) ([]byte, []byte, error) {
	r, err := rs.Exec(ctx, &cri.ExecRequest{ContainerId: cid, Cmd: cmd, Stdin: stdin != nil, Stdout: true, Stderr: !tty, Tty: tty})
	if err != nil {
		return nil, nil, err
	}
	return stream(ctx, r.Url, stdin, tty)
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestPodStreams drives kubectl's stream features through CRI on one pod:
// binary-exact stdin and stdout of any size (kubectl cp), a terminal
// (kubectl exec -it), attach, logs and a restarted container's logs.
func TestPodStreams(t *testing.T) { testStreams(t, newPodEnv(t), 0, 1, 10<<10, 10<<20) }

// TestPodStreamsVM is TestPodStreams in a QEMU VM (TCG): the streams cross
// the virtio-serial channel (at about 1 MB/s in TCG: 2 MiB at most).
func TestPodStreamsVM(t *testing.T) {
	testStreams(t, newVMPodEnv(t), 1, 2<<20)
}

// testStreams runs the stream tests on one pod, copying files of sizes.
func testStreams(t *testing.T, e *podEnv, sizes ...int) {
	rs := e.ctrd.RuntimeService(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	logDir := t.TempDir()
	podID, sandbox := e.startPod(ctx, t, rs, "streams", logDir)
	defer rs.RemovePodSandbox(ctx, podID)
	defer rs.StopPodSandbox(ctx, podID)
	cid := e.runContainer(ctx, t, rs, podID, sandbox, &cri.ContainerConfig{Metadata: &cri.ContainerMetadata{Name: "sleeper"},
		Image: &cri.ImageSpec{Image: e.image}, Command: []string{"/bin/sleep", "1000"}})
	testCopy(ctx, t, rs, cid, sizes)
	t.Run("exec-it", func(t *testing.T) { testTerminal(ctx, t, rs, cid) })
	t.Run("attach", func(t *testing.T) { e.testAttach(ctx, t, rs, podID, sandbox, logDir) })
	t.Run("logs", func(t *testing.T) { e.testLogs(ctx, t, rs, podID, sandbox, logDir) })
}

// testAttach is kubectl attach -i to a container started with stdin open
// once (kubectl run -i): what it reads comes back, its exit status too.
func (e *podEnv) testAttach(ctx context.Context, t *testing.T, rs internalapi.RuntimeService, podID string, sandbox *cri.PodSandboxConfig, logDir string) {
	cid := e.runContainer(ctx, t, rs, podID, sandbox, &cri.ContainerConfig{Metadata: &cri.ContainerMetadata{Name: "attached"},
		Image: &cri.ImageSpec{Image: e.image}, LogPath: "attached.log", Stdin: true, StdinOnce: true,
		Command: []string{"/bin/sh", "-c", "read line; echo got-$line; exit 6"}})
	r, err := rs.Attach(ctx, &cri.AttachRequest{ContainerId: cid, Stdin: true, Stdout: true, Stderr: true})
	if err != nil {
		t.Fatal(err)
	}
	out, _, err := stream(ctx, r.Url, strings.NewReader("hello\n"), false)
	if err != nil || string(out) != "got-hello\n" {
		t.Errorf("attach: %v %q", err, out)
	}
	if st := waitExited(ctx, t, rs, cid); st.ExitCode != 6 {
		t.Errorf("attached container exited with %d, want 6", st.ExitCode)
	}
	if log := readLog(t, filepath.Join(logDir, "attached.log")); log != "got-hello\n" {
		t.Errorf("attached container's log %q", log)
	}
}

// testLogs is kubectl logs -f (the log grows while the container runs) and,
// after a restart (the kubelet's next attempt of the container, with a log
// of its own), kubectl logs --previous; exit statuses are the containers'.
func (e *podEnv) testLogs(ctx context.Context, t *testing.T, rs internalapi.RuntimeService, podID string, sandbox *cri.PodSandboxConfig, logDir string) {
	os.MkdirAll(filepath.Join(logDir, "ticker"), 0o755)
	var prev string
	for attempt := range uint32(2) {
		log := filepath.Join(logDir, "ticker", fmt.Sprintf("%d.log", attempt))
		cid := e.runContainer(ctx, t, rs, podID, sandbox, &cri.ContainerConfig{
			Metadata: &cri.ContainerMetadata{Name: "ticker", Attempt: attempt},
			Image:    &cri.ImageSpec{Image: e.image}, LogPath: fmt.Sprintf("ticker/%d.log", attempt),
			Command: []string{"/bin/sh", "-c", fmt.Sprintf("echo run-%d; echo err-%d >&2; while [ ! -f /tmp/stop%d ]; do sleep 0.1; done; exit %d",
				attempt, attempt, attempt, 10+attempt)}})
		// -f: the lines are in the log while the container still runs.
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			if got := readLog(t, log); strings.Contains(got, fmt.Sprintf("run-%d\n", attempt)) && strings.Contains(got, fmt.Sprintf("err-%d\n", attempt)) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("attempt %d: log %q while running", attempt, readLog(t, log))
			}
		}
		if st, err := rs.ContainerStatus(ctx, cid, false); err != nil || st.Status.State != cri.ContainerState_CONTAINER_RUNNING {
			t.Fatalf("attempt %d: %v %v, want running", attempt, st, err)
		}
		if _, _, err := rs.ExecSync(ctx, cid, []string{"/bin/touch", fmt.Sprintf("/tmp/stop%d", attempt)}, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if st := waitExited(ctx, t, rs, cid); st.ExitCode != int32(10+attempt) {
			t.Errorf("attempt %d exited with %d, want %d", attempt, st.ExitCode, 10+attempt)
		}
		if prev != "" && readLog(t, prev) != "run-0\nerr-0\n" && readLog(t, prev) != "err-0\nrun-0\n" {
			t.Errorf("the previous attempt's log %q", readLog(t, prev))
		}
		prev = log
	}
}

// TestPodDefaultPolicy: under the default policy, extended by the pod's
// initdata with its probe's command, the exec probe runs and no other
// command does; the containers' logs say in one line that their output is
// withheld, and containers writing much more than a pipe holds still run
// to their end.
func TestPodDefaultPolicy(t *testing.T) {
	e := newPodEnv(t)
	rs := e.ctrd.RuntimeService(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	logDir := t.TempDir()
	probe := []string{"/bin/cat", "/tmp/ready"}
	rego := strings.Replace(policy.Default(), `"allowed_commands": []`, `"allowed_commands": [["/bin/cat", "/tmp/ready"]]`, 1)
	podID, sandbox := e.startPodWith(ctx, t, rs, "default-policy", logDir, rego)
	defer rs.RemovePodSandbox(ctx, podID)
	defer rs.StopPodSandbox(ctx, podID)
	app := e.runContainer(ctx, t, rs, podID, sandbox, &cri.ContainerConfig{Metadata: &cri.ContainerMetadata{Name: "app"},
		Image: &cri.ImageSpec{Image: e.image}, LogPath: "app.log", Command: []string{"/bin/sh", "-c",
			"echo secret; head -c 1000000 /dev/zero; echo secret >&2; echo ok > /tmp/ready; exec sleep 1000"}})
	quitter := e.runContainer(ctx, t, rs, podID, sandbox, &cri.ContainerConfig{Metadata: &cri.ContainerMetadata{Name: "quitter"},
		Image: &cri.ImageSpec{Image: e.image}, LogPath: "quitter.log", Command: []string{"/bin/sh", "-c", "head -c 1000000 /dev/zero; exit 7"}})
	if st := waitExited(ctx, t, rs, quitter); st.State != cri.ContainerState_CONTAINER_EXITED || st.ExitCode != 7 {
		t.Fatalf("quitter: %v exit %d, want exited with 7", st.State, st.ExitCode)
	}
	if log := readLog(t, filepath.Join(logDir, "quitter.log")); log != shim.WithheldNotice {
		t.Errorf("quitter's log %q, want the notice alone", log)
	}
	// The probe: allowed, its exit status reaches the kubelet, its output
	// is withheld too.
	var out, errOut []byte
	var err error
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if out, errOut, err = rs.ExecSync(ctx, app, probe, 10*time.Second); err == nil {
			break
		}
	}
	if err != nil || string(out) != shim.WithheldNotice || len(errOut) != 0 {
		t.Fatalf("probe %q: %v, stdout %q, stderr %q", probe, err, out, errOut)
	}
	if _, _, err := rs.ExecSync(ctx, app, []string{"/bin/cat", "/tmp/ready", "/etc/passwd"}, 10*time.Second); err == nil ||
		!strings.Contains(err.Error(), "ExecProcessRequest") {
		t.Errorf("exec of another command: %v, want the policy's refusal", err)
	}
	if _, _, err := execStream(ctx, rs, app, []string{"/bin/sh"}, strings.NewReader("id\n"), false); err == nil ||
		!strings.Contains(err.Error(), "ExecProcessRequest") {
		t.Errorf("exec -i of a shell: %v, want the policy's refusal", err)
	}
	if log := readLog(t, filepath.Join(logDir, "app.log")); log != shim.WithheldNotice {
		t.Errorf("app's log %q, want the notice alone", log)
	}
}

// testTerminal is kubectl exec -it: the terminal's size and output, and
// nothing before it.
func testTerminal(ctx context.Context, t *testing.T, rs internalapi.RuntimeService, cid string) {
	// CRI ends a terminal's output when its input ends (a detach): the
	// input stays open until the shell exits, as a user's terminal does.
	in, keyboard := io.Pipe()
	defer keyboard.Close()
	go keyboard.Write([]byte("42\n"))
	// The client sends the terminal's size once the stream is up, as
	// kubectl does, so it may come after the input: wait for it.
	script := `read x; i=0; s=$(stty size 2>/dev/null)
while [ -z "$s" -o "$s" = "0 0" ] && [ $i -lt 100 ]; do i=$((i+1)); sleep 0.1; s=$(stty size 2>/dev/null); done
echo $s; echo tty-$x; exit 3`
	out, _, err := execStream(ctx, rs, cid, []string{"/bin/sh", "-c", script}, in, true)
	if err == nil || !strings.Contains(err.Error(), "exit code 3") {
		t.Errorf("exec -it: %v, want exit code 3", err)
	}
	// The terminal echoes the input, then the shell answers.
	if string(out) != "42\r\n40 100\r\ntty-42\r\n" {
		t.Errorf("exec -it output %q", out)
	}
}

// testCopy copies random files into the container and back as kubectl cp
// does (tar through exec's stdin and stdout), and with cat, checking every
// byte. "sh -c 'cat > f'" execs cat with its stdout on the file: with runc,
// containerd 1.6 and 1.7 then end the exec's stdin stream early
// (containerd#13934); the coco shim keeps the stdout fifo open until the
// exit.
func testCopy(ctx context.Context, t *testing.T, rs internalapi.RuntimeService, cid string, sizes []int) {
	for _, size := range sizes {
		t.Run(fmt.Sprintf("cp-%d", size), func(t *testing.T) {
			data := make([]byte, size)
			rand.Read(data)
			name := fmt.Sprintf("f%d", size)
			var archive bytes.Buffer
			tw := tar.NewWriter(&archive)
			tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(size), Typeflag: tar.TypeReg})
			tw.Write(data)
			tw.Close()
			if _, errb, err := execStream(ctx, rs, cid, []string{"/bin/busybox", "tar", "-xf", "-", "-C", "/tmp"}, &archive, false); err != nil {
				t.Fatalf("kubectl cp into the container (tar -x): %v %s", err, errb)
			}
			checkFile(ctx, t, rs, cid, "/tmp/"+name, data)
			out, errb, err := execStream(ctx, rs, cid, []string{"/bin/busybox", "tar", "-cf", "-", "-C", "/tmp", name}, nil, false)
			if err != nil {
				t.Fatalf("kubectl cp from the container (tar -c): %v %s", err, errb)
			}
			tr := tar.NewReader(bytes.NewReader(out))
			if h, err := tr.Next(); err != nil || h.Name != name {
				t.Fatalf("tar from the container: %v %v", h, err)
			}
			if back, err := io.ReadAll(tr); err != nil || !bytes.Equal(back, data) {
				t.Fatalf("tar from the container: %v, %d bytes back, want %d, equal %v", err, len(back), size, bytes.Equal(back, data))
			}
			f := "/tmp/cat" + name
			if out, errb, err := execStream(ctx, rs, cid, []string{"/bin/sh", "-c", "cat > " + f}, bytes.NewReader(data), false); err != nil || len(out) != 0 {
				t.Fatalf("exec -i cat > %s: %v %q %s", f, err, out, errb)
			}
			checkFile(ctx, t, rs, cid, f, data)
			back, errb, err := execStream(ctx, rs, cid, []string{"/bin/cat", f}, nil, false)
			if err != nil || !bytes.Equal(back, data) {
				t.Fatalf("exec cat %s: %v, %d bytes back (want %d), equal %v, stderr %q", f, err, len(back), size, bytes.Equal(back, data), errb)
			}
		})
	}
}

// checkFile checks a file's size and SHA-256 in the container.
func checkFile(ctx context.Context, t *testing.T, rs internalapi.RuntimeService, cid, path string, data []byte) {
	t.Helper()
	out, _, err := rs.ExecSync(ctx, cid, []string{"/bin/sh", "-c", "wc -c < " + path + "; sha256sum < " + path}, 30*time.Second)
	if want := fmt.Sprintf("%d\n%s  -\n", len(data), sha(data)); err != nil || string(out) != want {
		t.Fatalf("%s in the container: %v %q, want %q", path, err, out, want)
	}
}

// runContainer creates and starts a container in the pod.
func (e *podEnv) runContainer(ctx context.Context, t testing.TB, rs internalapi.RuntimeService, podID string, sandbox *cri.PodSandboxConfig, cfg *cri.ContainerConfig) string {
	t.Helper()
	cid, err := rs.CreateContainer(ctx, podID, cfg, sandbox)
	if err != nil {
		t.Fatalf("CreateContainer: %v", err)
	}
	if err := rs.StartContainer(ctx, cid); err != nil {
		t.Fatalf("StartContainer: %v", err)
	}
	return cid
}

// readLog reads a container's CRI log, keeping the messages only.
func readLog(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var msgs strings.Builder
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		// <time> <stream> <P|F> <message>
		if f := strings.SplitN(line, " ", 4); len(f) == 4 {
			msgs.WriteString(f[3])
			if f[2] == "F" {
				msgs.WriteString("\n")
			}
		}
	}
	return msgs.String()
}
