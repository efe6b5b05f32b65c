// Package feed is the agent's side of the pod's telemetry: it reads the
// container output the agent policy withholds from the host, line by
// line, and reports guest and container metrics, and hands both to the
// shipper (package ship, in spiffe-workload-api) over OTLP/gRPC on a unix
// socket only root in the guest reaches.
package feed

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cocoon-cc/cocoon/guest/telemetry"
)

const (
	// maxLine: a longer line is shipped in pieces of this size.
	maxLine = 64 << 10
	// maxBatch bounds the lines of one request.
	maxBatch = 1024
	// sendTimeout bounds one hand-over to the shipper.
	sendTimeout = 10 * time.Second
)

// Source names a process's output stream: the attributes of its lines.
type Source struct {
	ContainerID   string
	ContainerName string // the Kubernetes container's, "" outside Kubernetes
	ExecID        string // "" for the container's own process
	Stream        string // "stdout" or "stderr"
}

// Feed hands telemetry to the shipper.
type Feed struct {
	endpoint string
	cc       *grpc.ClientConn
	log      *slog.Logger
}

// Dial connects to the shipper's unix socket; endpoint is the owner's,
// which the shipper exports to (what the host's notice names).
func Dial(socket, endpoint string, log *slog.Logger) (*Feed, error) {
	cc, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("telemetry shipper at %s: %w", socket, err)
	}
	return &Feed{endpoint: endpoint, cc: cc, log: log}, nil
}

// Close drops the connection.
func (f *Feed) Close() error { return f.cc.Close() }

// Endpoint is the owner's OpenTelemetry endpoint.
func (f *Feed) Endpoint() string { return f.endpoint }

// Ship reads r to its end and ships each line as a log record, in
// batches of what was read at once; it returns the lines that could not
// be shipped (the shipper's buffer was full, or it was unreachable).
func (f *Feed) Ship(r io.Reader, src Source) (dropped int64) {
	br := bufio.NewReaderSize(r, maxLine)
	ld, recs := newBatch(src)
	var now pcommon.Timestamp // when the batch's first line was read
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			if recs.Len() == 0 {
				now = pcommon.NewTimestampFromTime(time.Now())
			}
			rec := recs.AppendEmpty()
			rec.SetTimestamp(now)
			rec.SetObservedTimestamp(now)
			rec.Body().SetStr(string(bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))))
			rec.Attributes().PutStr("log.iostream", src.Stream)
		}
		end := err != nil && err != bufio.ErrBufferFull
		if recs.Len() > 0 && (end || recs.Len() >= maxBatch || br.Buffered() == 0) {
			dropped += f.send(ld)
			ld, recs = newBatch(src)
		}
		if end {
			return dropped
		}
	}
}

// newBatch starts the log records of one source.
func newBatch(src Source) (plog.Logs, plog.LogRecordSlice) {
	ld := plog.NewLogs()
	rl := ld.ResourceLogs().AppendEmpty()
	attrs := rl.Resource().Attributes()
	attrs.PutStr("service.name", telemetry.ServiceName)
	attrs.PutStr("container.id", src.ContainerID)
	if src.ContainerName != "" {
		attrs.PutStr("k8s.container.name", src.ContainerName)
	}
	if src.ExecID != "" {
		attrs.PutStr("cocoon.exec.id", src.ExecID)
	}
	sl := rl.ScopeLogs().AppendEmpty()
	sl.Scope().SetName("github.com/cocoon-cc/cocoon/guest/telemetry/feed")
	return ld, sl.LogRecords()
}

// send hands ld over; it returns the records the shipper did not take.
func (f *Feed) send(ld plog.Logs) int64 {
	n := int64(ld.LogRecordCount())
	ctx, cancel := context.WithTimeout(context.Background(), sendTimeout)
	defer cancel()
	resp, err := plogotlp.NewGRPCClient(f.cc).Export(ctx, plogotlp.NewExportRequestFromLogs(ld))
	if err != nil {
		f.log.Warn("telemetry: output lines not shipped", "lines", n, "err", err)
		return n
	}
	return resp.PartialSuccess().RejectedLogRecords()
}
