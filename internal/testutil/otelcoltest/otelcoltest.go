// Package otelcoltest runs a workload owner's OpenTelemetry endpoint for
// the telemetry tests: otelcol-owner (scripts/otelcol, the OpenTelemetry
// Collector's OTLP receiver writing what it receives to a file), built by
// `make otelcol-bins` (scripts/build-otelcol.sh) into
// /var/cache/cocoon/otelcol, serving OTLP/gRPC in TLS and requiring client
// certificates from the given CA.
package otelcoltest

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/ptrace"

	"github.com/cocoon-cc/cocoon/internal/testutil"
)

// Owner is a running endpoint.
type Owner struct {
	// Endpoint is its OTLP/gRPC address, host:port.
	Endpoint string
	// CA is the PEM of the CA its server certificate chains to: what
	// telemetry.toml pins.
	CA       string
	dir, out string
}

// Bin is otelcol-owner's path; the tests fail without it (make
// otelcol-bins builds it; make test does).
func Bin(t testing.TB) string {
	t.Helper()
	h := sha256.New()
	for _, f := range []string{"go.mod", "go.sum", "main.go"} {
		b, err := os.ReadFile(filepath.Join(testutil.RepoRoot(t), "scripts", "otelcol", f))
		if err != nil {
			t.Fatal(err)
		}
		h.Write(b)
	}
	bin := filepath.Join(testutil.ToolDir("COCOON_OTELCOL_BIN", "otelcol", hex.EncodeToString(h.Sum(nil))[:12]), "otelcol-owner")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("otelcol-owner not built (make otelcol-bins): %v", err)
	}
	return bin
}

// Start runs the endpoint on ip (a free port) until the test ends; it
// accepts clients whose certificate chains to clientCA (PEM).
func Start(t testing.TB, ip net.IP, clientCA []byte) *Owner {
	t.Helper()
	o := New(t, ip, clientCA)
	o.Start(t)
	return o
}

// New prepares the endpoint on ip without starting it: its address and
// CA are known before it listens.
func New(t testing.TB, ip net.IP, clientCA []byte) *Owner {
	t.Helper()
	dir := t.TempDir()
	ca, cert, key := testutil.ServerPKI(t, []net.IP{ip}, "otel.owner.test")
	files := map[string][]byte{"ca.pem": ca, "cert.pem": cert, "key.pem": key, "client-ca.pem": clientCA}
	for name, b := range files {
		testutil.WriteFile(t, filepath.Join(dir, name), b)
	}
	endpoint := net.JoinHostPort(ip.String(), strconv.Itoa(freePort(t, ip)))
	cfg := fmt.Sprintf("protocols:\n  grpc:\n    endpoint: %q\n    tls:\n      cert_file: %q\n      key_file: %q\n      client_ca_file: %q\n",
		endpoint, filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem"), filepath.Join(dir, "client-ca.pem"))
	testutil.WriteFile(t, filepath.Join(dir, "receiver.yaml"), []byte(cfg))
	return &Owner{Endpoint: endpoint, CA: string(ca), dir: dir, out: filepath.Join(dir, "received.jsonl")}
}

// Start runs the endpoint until the test ends.
func (o *Owner) Start(t testing.TB) {
	t.Helper()
	cmd := exec.Command(Bin(t), "-config", filepath.Join(o.dir, "receiver.yaml"), "-out", o.out)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		if t.Failed() {
			t.Logf("otelcol-owner:\n%s", stderr.String())
		}
	})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		c, err := net.Dial("tcp", o.Endpoint)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("otelcol-owner does not listen on %s: %v\n%s", o.Endpoint, err, stderr.String())
		}
	}
}

// freePort is a port on ip nothing listens on now.
func freePort(t testing.TB, ip net.IP) int {
	l, err := net.Listen("tcp", net.JoinHostPort(ip.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Received is everything the endpoint got so far.
type Received struct {
	Logs    []plog.Logs
	Traces  []ptrace.Traces
	Metrics []pmetric.Metrics
}

// Received reads what the endpoint got so far.
func (o *Owner) Received(t testing.TB) *Received {
	t.Helper()
	var r Received
	f, err := os.Open(o.out)
	if os.IsNotExist(err) {
		return &r
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		var line map[string]json.RawMessage
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			continue // being written
		}
		r.add(t, line)
	}
	return &r
}

func (r *Received) add(t testing.TB, line map[string]json.RawMessage) {
	var err error
	if b, ok := line["logs"]; ok {
		var ld plog.Logs
		ld, err = (&plog.JSONUnmarshaler{}).UnmarshalLogs(b)
		r.Logs = append(r.Logs, ld)
	}
	if b, ok := line["traces"]; ok {
		var td ptrace.Traces
		td, err = (&ptrace.JSONUnmarshaler{}).UnmarshalTraces(b)
		r.Traces = append(r.Traces, td)
	}
	if b, ok := line["metrics"]; ok {
		var md pmetric.Metrics
		md, err = (&pmetric.JSONUnmarshaler{}).UnmarshalMetrics(b)
		r.Metrics = append(r.Metrics, md)
	}
	if err != nil {
		t.Fatalf("otelcol-owner wrote bad OTLP JSON: %v", err)
	}
}

// LogBodies are the bodies of every log record received, in order.
func (r *Received) LogBodies() []string {
	var out []string
	for _, ld := range r.Logs {
		for i := range ld.ResourceLogs().Len() {
			sls := ld.ResourceLogs().At(i).ScopeLogs()
			for j := range sls.Len() {
				recs := sls.At(j).LogRecords()
				for k := range recs.Len() {
					out = append(out, recs.At(k).Body().AsString())
				}
			}
		}
	}
	return out
}

// SpanNames are the names of every span received, in order.
func (r *Received) SpanNames() []string {
	var out []string
	for _, td := range r.Traces {
		for i := range td.ResourceSpans().Len() {
			sss := td.ResourceSpans().At(i).ScopeSpans()
			for j := range sss.Len() {
				spans := sss.At(j).Spans()
				for k := range spans.Len() {
					out = append(out, spans.At(k).Name())
				}
			}
		}
	}
	return out
}

// MetricNames are the names of the metrics received (each once).
func (r *Received) MetricNames() map[string]bool {
	out := map[string]bool{}
	for _, md := range r.Metrics {
		for i := range md.ResourceMetrics().Len() {
			sms := md.ResourceMetrics().At(i).ScopeMetrics()
			for j := range sms.Len() {
				ms := sms.At(j).Metrics()
				for k := range ms.Len() {
					out[ms.At(k).Name()] = true
				}
			}
		}
	}
	return out
}
