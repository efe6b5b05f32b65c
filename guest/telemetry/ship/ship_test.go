package ship_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cocoon-cc/cocoon/guest/spiffe"
	"github.com/cocoon-cc/cocoon/guest/telemetry"
	"github.com/cocoon-cc/cocoon/guest/telemetry/feed"
	"github.com/cocoon-cc/cocoon/guest/telemetry/otlpin"
	"github.com/cocoon-cc/cocoon/guest/telemetry/ship"
	"github.com/cocoon-cc/cocoon/internal/testutil/kbstest"
	"github.com/cocoon-cc/cocoon/internal/testutil/otelcoltest"
)

var loopback = net.IPv4(127, 0, 0, 1)

// shipper runs a shipper with the telemetry.toml lines extra for a pod
// whose owner's endpoint is prepared, not started.
func shipper(t *testing.T, extra string) (context.Context, *ship.Shipper, *otelcoltest.Owner, *spiffe.Source) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	src, spiffeCA := kbstest.SPIFFESource(t, ctx, "/ns/shop/web")
	o := otelcoltest.New(t, loopback, spiffeCA)
	cfg, err := telemetry.ParseConfig(fmt.Sprintf("endpoint = %q\nca = '''%s'''\nmetrics_interval = \"1s\"\n%s", o.Endpoint, o.CA, extra))
	if err != nil {
		t.Fatal(err)
	}
	sh := ship.New(cfg, src, discard)
	go sh.Run(ctx)
	return ctx, sh, o, src
}

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

func logLines(prefix string, n int) plog.Logs {
	ld := plog.NewLogs()
	recs := ld.ResourceLogs().AppendEmpty().ScopeLogs().AppendEmpty().LogRecords()
	for i := range n {
		r := recs.AppendEmpty()
		r.SetTimestamp(pcommon.NewTimestampFromTime(time.Now()))
		r.Body().SetStr(fmt.Sprintf("%s %d", prefix, i))
	}
	return ld
}

func spans(n int) ptrace.Traces {
	td := ptrace.NewTraces()
	ss := td.ResourceSpans().AppendEmpty().ScopeSpans().AppendEmpty().Spans()
	for i := range n {
		s := ss.AppendEmpty()
		s.SetName(fmt.Sprintf("span %d", i))
		s.SetTraceID(pcommon.TraceID{1, byte(i)})
		s.SetSpanID(pcommon.SpanID{2, byte(i)})
	}
	return td
}

// waitFor polls the owner until done says it has everything.
func waitFor(t *testing.T, ctx context.Context, o *otelcoltest.Owner, done func(*otelcoltest.Received) bool) *otelcoltest.Received {
	t.Helper()
	for {
		r := o.Received(t)
		if done(r) {
			return r
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the owner got %d log records, %d spans, metrics %v", len(r.LogBodies()), len(r.SpanNames()), r.MetricNames())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestShipToOwner: the real OpenTelemetry Collector's OTLP receiver as
// the owner's endpoint, requiring client certificates of the KBS's SPIFFE
// CA, gets every log line the guest queues, the output and metrics the
// agent's feed hands over on the unix socket, every span, metric and log
// record a workload sends to the loopback receiver (OTLP/gRPC, OTLP/HTTP
// protobuf and JSON), and the shipper's own counters; a client without
// the pod's SVID is refused.
func TestShipToOwner(t *testing.T) {
	ctx, sh, owner, src := shipper(t, "")
	owner.Start(t)
	rcv := otlpin.New(sh, discard)
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "telemetry.sock")
	ul, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	go rcv.ServeGRPC(ctx, gl, ul)
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go rcv.ServeHTTP(ctx, hl)

	// Container output as the agent queues it, the SVID renewed halfway.
	for i := range 10 {
		if i == 5 {
			if err := src.Renew(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if n := sh.Logs(logLines(fmt.Sprintf("line %d", i), 100)); n != 0 {
			t.Fatalf("%d lines dropped", n)
		}
	}
	// Withheld output and metrics as the agent hands them over.
	fd, err := feed.Dial(sock, owner.Endpoint, discard)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	long := strings.Repeat("y", 70<<10)
	if n := fd.Ship(strings.NewReader("agent line 1\nagent line 2\r\n"+long+"\nno newline at the end"), feed.Source{ContainerID: "c1", Stream: "stdout"}); n != 0 {
		t.Fatalf("%d lines dropped", n)
	}
	go fd.RunMetrics(ctx, 500*time.Millisecond, func() []feed.ContainerStats {
		return []feed.ContainerStats{{ID: "c1", Name: "app", CPUNanos: 1e9, MemoryBytes: 1 << 20}}
	})
	// The workload's spans over OTLP/gRPC, as an SDK sends them.
	cc, err := grpc.NewClient(gl.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	resp, err := ptraceotlp.NewGRPCClient(cc).Export(ctx, ptraceotlp.NewExportRequestFromTraces(spans(50)))
	if err != nil || resp.PartialSuccess().RejectedSpans() != 0 {
		t.Fatalf("export spans: %v %v", resp, err)
	}
	// Its metrics in OTLP/HTTP JSON, its logs in OTLP/HTTP protobuf.
	md := pmetric.NewMetrics()
	m := md.ResourceMetrics().AppendEmpty().ScopeMetrics().AppendEmpty().Metrics().AppendEmpty()
	m.SetName("workload.requests")
	m.SetEmptyGauge().DataPoints().AppendEmpty().SetIntValue(7)
	body, err := pmetricotlp.NewExportRequestFromMetrics(md).MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	post(t, "http://"+hl.Addr().String()+"/v1/metrics", "application/json", body)
	body, err = plogotlp.NewExportRequestFromLogs(logLines("workload log", 20)).MarshalProto()
	if err != nil {
		t.Fatal(err)
	}
	post(t, "http://"+hl.Addr().String()+"/v1/logs", "application/x-protobuf", body)

	r := waitFor(t, ctx, owner, func(r *otelcoltest.Received) bool {
		return len(r.LogBodies()) >= 1025 && len(r.SpanNames()) >= 50 && r.MetricNames()["workload.requests"] &&
			r.MetricNames()["cocoon.telemetry.exported"] && r.MetricNames()["container.memory.usage"]
	})
	bodies := r.LogBodies()
	for i := range 10 {
		for j := range 100 {
			if !slices.Contains(bodies, fmt.Sprintf("line %d %d", i, j)) {
				t.Fatalf("line %d %d missing", i, j)
			}
		}
	}
	// A line longer than 64 KiB comes in pieces.
	for _, l := range []string{"agent line 1", "agent line 2", long[:64<<10], long[64<<10:], "no newline at the end"} {
		if !slices.Contains(bodies, l) {
			t.Errorf("line %.20q... (%d bytes) missing", l, len(l))
		}
	}
	if !r.MetricNames()["system.memory.usage"] {
		t.Error("no guest memory metric")
	}
	if len(bodies) != 1025 || len(r.SpanNames()) != 50 {
		t.Errorf("got %d records and %d spans, want 1025 and 50 (each once)", len(bodies), len(r.SpanNames()))
	}
	if c := sh.Counts(telemetry.Logs); c.Exported.Load() != 1025 || c.Dropped.Load() != 0 {
		t.Errorf("log counts: exported %d, dropped %d", c.Exported.Load(), c.Dropped.Load())
	}

	// Without the pod's SVID the owner's endpoint refuses the client.
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM([]byte(owner.CA))
	bare, err := grpc.NewClient(owner.Endpoint, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: roots})))
	if err != nil {
		t.Fatal(err)
	}
	defer bare.Close()
	if _, err := plogotlp.NewGRPCClient(bare).Export(ctx, plogotlp.NewExportRequestFromLogs(logLines("intruder", 1))); err == nil {
		t.Error("the owner's endpoint took logs from a client without an SVID")
	}
}

func post(t *testing.T, url, ct string, body []byte) {
	t.Helper()
	resp, err := http.Post(url, ct, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != ct {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("POST %s: %s %s", url, resp.Status, b)
	}
}

// TestShipBufferBound: while the owner's endpoint is down the buffer
// holds at most buffer_mib; what does not fit is dropped and counted (and
// the loopback receiver answers it as rejected); once the endpoint is up,
// the retries deliver everything that was kept.
func TestShipBufferBound(t *testing.T) {
	ctx, sh, owner, _ := shipper(t, "buffer_mib = 1\nship = [\"logs\"]\n")

	long := strings.Repeat("x", 1000)
	var dropped, kept int
	for i := range 30 { // 30 batches of about 100 KiB into 1 MiB
		n := sh.Logs(logLines(fmt.Sprintf("batch %d %s", i, long), 100))
		dropped += n
		kept += 100 - n
	}
	if dropped == 0 || kept == 0 {
		t.Fatalf("kept %d, dropped %d: the bound did not act", kept, dropped)
	}
	if got := sh.Counts(telemetry.Logs).Dropped.Load(); got != int64(dropped) {
		t.Errorf("dropped counter %d, want %d", got, dropped)
	}
	rcv := otlpin.New(sh, discard)
	rec := postRejected(t, rcv, logLines("one more "+long, 100))
	if rec != 100 {
		t.Errorf("the receiver reported %d records rejected while the buffer is full, want 100", rec)
	}
	if n := sh.Traces(spans(1)); n != 1 {
		t.Errorf("a signal telemetry.toml does not ship: %d dropped, want 1", n)
	}

	owner.Start(t)
	waitFor(t, ctx, owner, func(r *otelcoltest.Received) bool { return len(r.LogBodies()) >= kept })
	for sh.Counts(telemetry.Logs).Exported.Load() < int64(kept) && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond) // the counter follows the answer
	}
	if got := len(owner.Received(t).LogBodies()); got != kept {
		t.Errorf("the owner got %d records, want the %d kept", got, kept)
	}
}

// postRejected posts ld to the receiver's handler and returns the
// records its partial success says were rejected.
func postRejected(t *testing.T, rcv *otlpin.Receiver, ld plog.Logs) int64 {
	t.Helper()
	body, err := plogotlp.NewExportRequestFromLogs(ld).MarshalProto()
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, "/v1/logs", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/x-protobuf")
	w := httptest.NewRecorder()
	rcv.Handler().ServeHTTP(w, req)
	resp := plogotlp.NewExportResponse()
	if err := resp.UnmarshalProto(w.Body.Bytes()); err != nil {
		t.Fatalf("%d %s: %v", w.Code, w.Body.String(), err)
	}
	return resp.PartialSuccess().RejectedLogRecords()
}
