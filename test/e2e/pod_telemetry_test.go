package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	internalapi "k8s.io/cri-api/pkg/apis"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/cocoon-cc/cocoon/agent/policy"
	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/cocoon-cc/cocoon/internal/testutil/containerdtest"
	"github.com/cocoon-cc/cocoon/internal/testutil/kbstest"
	"github.com/cocoon-cc/cocoon/internal/testutil/otelcoltest"
	"github.com/cocoon-cc/cocoon/runtime/shim"
)

// newTelemetryEnv is newSPIFFEEnv with the owner's endpoint on the pod
// network's gateway, trusting the KBS's SPIFFE CA for clients.
func newTelemetryEnv(t testing.TB) (*spiffeEnv, internalapi.RuntimeService, *otelcoltest.Owner) {
	e := newSPIFFEEnv(t)
	return e, e.ctrd.RuntimeService(t), otelcoltest.Start(t, e.gateway, kbstest.BundleCA(t, e.kbs, "e2e.example"))
}

// startTelemetryPod runs a coco pod under the default agent policy (the
// host may not read its output) whose initdata names the KBS and a SPIFFE
// ID and holds files (initdata entries: telemetry.toml, see ownerToml, and
// any other); it returns the pod, its sandbox config and its log
// directory.
func (e *spiffeEnv) startTelemetryPod(ctx context.Context, t testing.TB, rs internalapi.RuntimeService, name, files string) (string, *cri.PodSandboxConfig, string) {
	t.Helper()
	doc := testutil.SPIFFEInitdata(e.guest, "/ns/e2e/allowed/telemetry", files, policy.Default())
	logDir := t.TempDir()
	podID, sandbox := e.startPodInit(ctx, t, rs, "coco", name, logDir, testutil.InitdataDocAnnotation(t, doc))
	t.Cleanup(func() {
		rs.StopPodSandbox(context.Background(), podID)
		rs.RemovePodSandbox(context.Background(), podID)
	})
	return podID, sandbox, logDir
}

// ownerToml is the initdata entry telemetry.toml naming endpoint, pinning
// ca, with extra settings.
func ownerToml(endpoint, ca, extra string) string {
	return fmt.Sprintf("\"telemetry.toml\" = '''\nendpoint = %q\nca = \"\"\"\n%s\"\"\"\nmetrics_interval = \"2s\"\n%s'''\n", endpoint, ca, extra)
}

// spanJSON is an OTLP/HTTP JSON export of one span named name, as an
// OpenTelemetry SDK in the workload sends it.
func spanJSON(name string, i int) string {
	return fmt.Sprintf(`{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"e2e-app"}}]},`+
		`"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc6%02x","spanId":"eee19b7ec3c1b1%02x","name":%q,"kind":1,`+
		`"startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000100000000"}]}]}]}`, i, i, name)
}

// TestPodTelemetry runs a coco pod (QEMU TCG) under the default policy,
// which withholds its output from the host, with telemetry.toml naming
// the owner's endpoint: the real OpenTelemetry Collector's OTLP receiver
// requiring client certificates of the KBS's SPIFFE CA. The workload
// prints lines on stdout and stderr and sends spans to the OTLP receiver
// on the guest's loopback: the owner gets every line and span and the
// guest's metrics, the pod's host-side interface carries none of it in
// plaintext, and the container's CRI log says where the output went.
func TestPodTelemetry(t *testing.T) {
	e, rs, owner := newTelemetryEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	podID, sandbox, logDir := e.startTelemetryPod(ctx, t, rs, "telemetry", ownerToml(owner.Endpoint, owner.CA, ""))
	stopCapture := captureBridge(t, e.bridge)

	const marker = "owner-only-5d2a"
	const lines, spans = 300, 3
	script := telemetryScript(marker, lines, spans) + "; sleep 5" // through a metrics interval or two: the container's metrics
	cid := e.runContainer(ctx, t, rs, podID, sandbox, &cri.ContainerConfig{Metadata: &cri.ContainerMetadata{Name: "app"},
		Image: &cri.ImageSpec{Image: e.image}, LogPath: "app.log", Command: []string{"/bin/sh", "-c", script}})
	if st := waitExited(ctx, t, rs, cid); st.ExitCode != 0 {
		t.Fatalf("the workload exited with %d (its spans were refused?)", st.ExitCode)
	}
	awaitTelemetry(ctx, t, owner, marker, lines, spans)

	seen := stopCapture()
	if bytes.Contains(seen, []byte(marker)) {
		t.Fatal("the pod's telemetry in plaintext on its host-side interface")
	}
	if len(seen) == 0 {
		t.Fatal("the capture saw nothing")
	}
	want := fmt.Sprintf(shim.ShippedNotice, owner.Endpoint)
	if log := readLog(t, filepath.Join(logDir, "app.log")); log != want {
		t.Errorf("the CRI log %q, want %q", log, want)
	}
}

// TestPodMeshTelemetry runs one coco pod (QEMU TCG) with both the mesh
// and telemetry: a mesh outbound rule covers the owner's endpoint, whose
// connection must still go out as the shipper's own mTLS (its sockets
// carry the mesh's mark), not be wrapped a second time; the pod's server
// port is the mesh's, refusing the host's plain request, while the
// workload reaches it on its loopback and its output, shipped, says so.
func TestPodMeshTelemetry(t *testing.T) {
	e, rs, owner := newTelemetryEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	host, port, err := net.SplitHostPort(owner.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	mesh := fmt.Sprintf("\"mesh.toml\" = '''\nallow = [\"spiffe://e2e.example/ns/e2e/allowed/client\"]\ninbound_ports = [8080]\n"+
		"[[outbound]]\ncidr = \"%s/32\"\nports = [%s]\nallow = [\"spiffe://e2e.example/ns/e2e/allowed/web\"]\n'''\n", host, port)
	podID, sandbox, _ := e.startTelemetryPod(ctx, t, rs, "mesh-telemetry", ownerToml(owner.Endpoint, owner.CA, "")+mesh)
	stopCapture := captureBridge(t, e.bridge)

	const marker = "mesh-owner-only-71b3"
	const lines, spans = 50, 2
	script := "mkdir -p /www && echo page-" + marker + " > /www/index.html && /bin/busybox httpd -p 8080 -h /www; " +
		telemetryScript(marker, lines, spans) + "; /bin/busybox wget -q -O - http://127.0.0.1:8080/index.html; exec sleep 1000"
	e.runContainer(ctx, t, rs, podID, sandbox, &cri.ContainerConfig{Metadata: &cri.ContainerMetadata{Name: "app"},
		Image: &cri.ImageSpec{Image: e.image}, LogPath: "app.log", Command: []string{"/bin/sh", "-c", script}})
	got := awaitTelemetry(ctx, t, owner, marker, lines, spans)
	for !slices.Contains(got.LogBodies(), "page-"+marker) {
		select {
		case <-ctx.Done():
			t.Fatal("the workload's local request to its server never reached the owner")
		case <-time.After(time.Second):
		}
		got = owner.Received(t)
	}
	seen := stopCapture()
	if bytes.Contains(seen, []byte(marker)) {
		t.Fatal("the pod's telemetry or page in plaintext on its host-side interface")
	}

	// The host's plain request meets the mesh, not the server.
	st, err := rs.PodSandboxStatus(ctx, podID, false)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialTimeout("tcp", net.JoinHostPort(st.Status.GetNetwork().GetIp(), "8080"), 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	conn.Write([]byte("GET /index.html HTTP/1.0\r\n\r\n"))
	if answer, _ := io.ReadAll(conn); bytes.Contains(answer, []byte(marker)) {
		t.Fatalf("the host's plain request got the page past the mesh: %q", answer)
	}
}

// TestPodTelemetryDropped: with the owner's endpoint down and a 1 MiB
// buffer, a container writing 3 MB of lines runs to its end, and its CRI
// log names the endpoint and then the number of lines the guest dropped,
// as many as the buffer could not hold.
func TestPodTelemetryDropped(t *testing.T) {
	e, rs, owner := newTelemetryEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	host, _, err := net.SplitHostPort(owner.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	down := net.JoinHostPort(host, "1")
	podID, sandbox, logDir := e.startTelemetryPod(ctx, t, rs, "telemetry-dropped", ownerToml(down, owner.CA, "buffer_mib = 1\n"))
	const lines = 30000 // of 100 bytes: 3 MB
	script := fmt.Sprintf(`line=$(printf '%%099d' 0); i=0; while [ $i -lt %d ]; do echo "$line"; i=$((i+1)); done`, lines)
	cid := e.runContainer(ctx, t, rs, podID, sandbox, &cri.ContainerConfig{Metadata: &cri.ContainerMetadata{Name: "app"},
		Image: &cri.ImageSpec{Image: e.image}, LogPath: "app.log", Command: []string{"/bin/sh", "-c", script}})
	if st := waitExited(ctx, t, rs, cid); st.ExitCode != 0 {
		t.Fatalf("the workload exited with %d", st.ExitCode)
	}
	log := readLog(t, filepath.Join(logDir, "app.log"))
	head := fmt.Sprintf(shim.ShippedNotice, down)
	var dropped int
	if !strings.HasPrefix(log, head) {
		t.Fatalf("the CRI log %q, want it to start with %q", log, head)
	}
	if _, err := fmt.Sscanf(strings.TrimPrefix(log, head), shim.DroppedNotice, &dropped, new(string)); err != nil ||
		log != head+fmt.Sprintf(shim.DroppedNotice, dropped, down) {
		t.Fatalf("the CRI log %q: no dropped-lines notice (%v)", log, err)
	}
	// 1 MiB holds at most 10486 lines of 100 bytes; all others are dropped.
	if dropped < lines-10486 || dropped > lines {
		t.Errorf("%d of %d lines dropped with a 1 MiB buffer", dropped, lines)
	}
	t.Logf("%d of %d lines dropped", dropped, lines)
}

// telemetryScript prints lines lines marked marker on stdout and one on
// stderr, and sends spans spans to the guest's OTLP/HTTP receiver.
func telemetryScript(marker string, lines, spans int) string {
	script := fmt.Sprintf(`i=0; while [ $i -lt %d ]; do echo "%s line $i"; i=$((i+1)); done; echo "%s on stderr" >&2`, lines, marker, marker)
	for i := range spans {
		script += fmt.Sprintf("; /bin/busybox wget -q -O /dev/null --header 'Content-Type: application/json' --post-data '%s' http://127.0.0.1:4318/v1/traces",
			spanJSON(fmt.Sprintf("%s span %d", marker, i), i))
	}
	return script
}

// awaitTelemetry waits until the owner got every line and span of
// telemetryScript(marker, lines, spans) and the guest's and container's
// metrics; what it got.
func awaitTelemetry(ctx context.Context, t testing.TB, owner *otelcoltest.Owner, marker string, lines, spans int) *otelcoltest.Received {
	t.Helper()
	var got *otelcoltest.Received
	for {
		got = owner.Received(t)
		metrics := got.MetricNames()
		if len(got.LogBodies()) >= lines+1 && len(got.SpanNames()) >= spans && metrics["system.memory.usage"] && metrics["container.memory.usage"] {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the owner got %d lines, spans %q, metrics %v", len(got.LogBodies()), got.SpanNames(), metrics)
		case <-time.After(time.Second):
		}
	}
	bodies := got.LogBodies()
	for i := range lines {
		if !slices.Contains(bodies, fmt.Sprintf("%s line %d", marker, i)) {
			t.Fatalf("line %d never reached the owner", i)
		}
	}
	if !slices.Contains(bodies, marker+" on stderr") {
		t.Error("the stderr line never reached the owner")
	}
	for i := range spans {
		if !slices.Contains(got.SpanNames(), fmt.Sprintf("%s span %d", marker, i)) {
			t.Errorf("span %d never reached the owner", i)
		}
	}
	return got
}

// BenchmarkPodLogs: the log lines per second one coco pod (QEMU TCG)
// delivers and the guest CPU they cost (its QEMU process's CPU time), in
// one run: shipped to the owner's collector under the default policy
// (telemetry.toml), and read by the host into the CRI log under a policy
// that allows it (the peer). Each iteration runs a container that writes
// benchLines lines and ends once all are delivered.
func BenchmarkPodLogs(b *testing.B) {
	e, rs, owner := newTelemetryEnv(b)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	const benchLines = 20000
	for _, mode := range []string{"shipped", "host"} {
		b.Run("logs="+mode, func(b *testing.B) {
			var podID, logDir string
			var sandbox *cri.PodSandboxConfig
			if mode == "shipped" {
				podID, sandbox, logDir = e.startTelemetryPod(ctx, b, rs, "logs-shipped", ownerToml(owner.Endpoint, owner.CA, ""))
			} else {
				logDir = b.TempDir()
				podID, sandbox = e.startPodWith(ctx, b, rs, "logs-host", logDir, policy.AllowAll())
				b.Cleanup(func() {
					rs.StopPodSandbox(context.Background(), podID)
					rs.RemovePodSandbox(context.Background(), podID)
				})
			}
			var elapsed, cpu time.Duration
			for i := range b.N {
				tag := fmt.Sprintf("bench-%s-%d", mode, i)
				cpu0, start := sandboxCPU(e.ctrd.Address), time.Now()
				e.runContainer(ctx, b, rs, podID, sandbox, &cri.ContainerConfig{Metadata: &cri.ContainerMetadata{Name: tag},
					Image: &cri.ImageSpec{Image: e.image}, LogPath: tag + ".log", Command: []string{"/bin/sh", "-c",
						fmt.Sprintf("/bin/busybox yes '%s: a log line of some sixty bytes, as services write' | /bin/busybox head -n %d", tag, benchLines)}})
				for delivered(b, mode, owner, filepath.Join(logDir, tag+".log"), tag) < benchLines {
					select {
					case <-ctx.Done():
						b.Fatalf("%s: %d of %d lines delivered", tag, delivered(b, mode, owner, filepath.Join(logDir, tag+".log"), tag), benchLines)
					case <-time.After(200 * time.Millisecond):
					}
				}
				elapsed += time.Since(start)
				cpu += sandboxCPU(e.ctrd.Address) - cpu0
			}
			b.ReportMetric(float64(benchLines*b.N)/elapsed.Seconds(), "lines/s")
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(benchLines*b.N), "guest-cpu-ns/line")
		})
	}
}

// delivered counts the lines tagged tag that reached the owner (shipped)
// or the CRI log at path (host).
func delivered(t testing.TB, mode string, owner *otelcoltest.Owner, path, tag string) int {
	var lines []string
	if mode == "shipped" {
		lines = owner.Received(t).LogBodies()
	} else {
		b, _ := os.ReadFile(path)
		lines = strings.Split(string(b), "\n")
	}
	n := 0
	for _, l := range lines {
		if strings.Contains(l, tag+":") {
			n++
		}
	}
	return n
}

// sandboxCPU is the CPU time of the QEMU processes of the coco pods
// serving the containerd at address: the guests' CPU under TCG.
func sandboxCPU(address string) time.Duration {
	var cpu time.Duration
	for _, p := range containerdtest.SandboxProcesses(address) {
		pid, name, _ := strings.Cut(p, ":")
		if n, err := strconv.Atoi(pid); err == nil && strings.Contains(name, "qemu") {
			cpu += procCPU(n)
		}
	}
	return cpu
}
