package ship

import (
	"context"

	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"

	"github.com/cocoon-cc/cocoon/guest/telemetry"
)

// batch is data of one signal, queued and exported as one OTLP request.
type batch interface {
	signal() string
	// items counts log records, spans or metric data points.
	items() int
	// size is the OTLP protobuf encoding's length.
	size() int
	// absorb moves another batch of the same signal into this one.
	absorb(batch)
	// export sends the batch; rejected counts the items the endpoint
	// refused in an otherwise accepted request.
	export(ctx context.Context, cc *grpc.ClientConn) (rejected int64, err error)
}

type logs struct{ plog.Logs }

func (l logs) signal() string { return telemetry.Logs }
func (l logs) items() int     { return l.LogRecordCount() }
func (l logs) size() int      { return (&plog.ProtoMarshaler{}).LogsSize(l.Logs) }
func (l logs) absorb(o batch) { o.(logs).ResourceLogs().MoveAndAppendTo(l.ResourceLogs()) }

func (l logs) export(ctx context.Context, cc *grpc.ClientConn) (int64, error) {
	r, err := plogotlp.NewGRPCClient(cc).Export(ctx, plogotlp.NewExportRequestFromLogs(l.Logs))
	if err != nil {
		return 0, err
	}
	return r.PartialSuccess().RejectedLogRecords(), nil
}

type traces struct{ ptrace.Traces }

func (t traces) signal() string { return telemetry.Traces }
func (t traces) items() int     { return t.SpanCount() }
func (t traces) size() int      { return (&ptrace.ProtoMarshaler{}).TracesSize(t.Traces) }
func (t traces) absorb(o batch) { o.(traces).ResourceSpans().MoveAndAppendTo(t.ResourceSpans()) }

func (t traces) export(ctx context.Context, cc *grpc.ClientConn) (int64, error) {
	r, err := ptraceotlp.NewGRPCClient(cc).Export(ctx, ptraceotlp.NewExportRequestFromTraces(t.Traces))
	if err != nil {
		return 0, err
	}
	return r.PartialSuccess().RejectedSpans(), nil
}

type metrics struct{ pmetric.Metrics }

func (m metrics) signal() string { return telemetry.Metrics }
func (m metrics) items() int     { return m.DataPointCount() }
func (m metrics) size() int      { return (&pmetric.ProtoMarshaler{}).MetricsSize(m.Metrics) }
func (m metrics) absorb(o batch) { o.(metrics).ResourceMetrics().MoveAndAppendTo(m.ResourceMetrics()) }

func (m metrics) export(ctx context.Context, cc *grpc.ClientConn) (int64, error) {
	r, err := pmetricotlp.NewGRPCClient(cc).Export(ctx, pmetricotlp.NewExportRequestFromMetrics(m.Metrics))
	if err != nil {
		return 0, err
	}
	return r.PartialSuccess().RejectedDataPoints(), nil
}
