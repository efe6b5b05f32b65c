// Package otlpin is the OTLP receiver on the guest's loopback
// (127.0.0.1:4317 gRPC, 127.0.0.1:4318 HTTP, OpenTelemetry SDKs'
// defaults): the pod's containers share the guest's network namespace, so
// the workload's own traces, metrics and logs reach it unchanged and go
// on to the owner's endpoint instead of leaving the TEE in plaintext.
package otlpin

import (
	"compress/gzip"
	"context"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"time"

	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/plog/plogotlp"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/pmetric/pmetricotlp"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
	"google.golang.org/grpc"
)

// The loopback addresses OpenTelemetry SDKs export to by default.
const (
	GRPCAddr = "127.0.0.1:4317"
	HTTPAddr = "127.0.0.1:4318"
)

// maxBody bounds one request, as the collector's receiver does by default.
const maxBody = 4 << 20

// dropped is the partial-success message for items the sink dropped.
const dropped = "dropped in the guest: buffer full, or telemetry.toml does not ship this signal"

// Sink takes what the receiver gets; each call returns how many items
// it dropped.
type Sink interface {
	Logs(plog.Logs) int
	Traces(ptrace.Traces) int
	Metrics(pmetric.Metrics) int
}

// Receiver serves OTLP into a Sink.
type Receiver struct {
	sink Sink
	log  *slog.Logger
}

// New returns a receiver feeding sink.
func New(sink Sink, log *slog.Logger) *Receiver { return &Receiver{sink: sink, log: log} }

func (r *Receiver) logs(req plogotlp.ExportRequest) plogotlp.ExportResponse {
	resp := plogotlp.NewExportResponse()
	if n := r.sink.Logs(req.Logs()); n > 0 {
		resp.PartialSuccess().SetRejectedLogRecords(int64(n))
		resp.PartialSuccess().SetErrorMessage(dropped)
	}
	return resp
}

func (r *Receiver) traces(req ptraceotlp.ExportRequest) ptraceotlp.ExportResponse {
	resp := ptraceotlp.NewExportResponse()
	if n := r.sink.Traces(req.Traces()); n > 0 {
		resp.PartialSuccess().SetRejectedSpans(int64(n))
		resp.PartialSuccess().SetErrorMessage(dropped)
	}
	return resp
}

func (r *Receiver) metrics(req pmetricotlp.ExportRequest) pmetricotlp.ExportResponse {
	resp := pmetricotlp.NewExportResponse()
	if n := r.sink.Metrics(req.Metrics()); n > 0 {
		resp.PartialSuccess().SetRejectedDataPoints(int64(n))
		resp.PartialSuccess().SetErrorMessage(dropped)
	}
	return resp
}

// grpcServer is the receiver's OTLP/gRPC services on a gRPC server.
func (r *Receiver) grpcServer() *grpc.Server {
	s := grpc.NewServer(grpc.MaxRecvMsgSize(maxBody))
	plogotlp.RegisterGRPCServer(s, &logsServer{r: r})
	ptraceotlp.RegisterGRPCServer(s, &tracesServer{r: r})
	pmetricotlp.RegisterGRPCServer(s, &metricsServer{r: r})
	return s
}

type logsServer struct {
	plogotlp.UnimplementedGRPCServer
	r *Receiver
}

func (s logsServer) Export(_ context.Context, req plogotlp.ExportRequest) (plogotlp.ExportResponse, error) {
	return s.r.logs(req), nil
}

type tracesServer struct {
	ptraceotlp.UnimplementedGRPCServer
	r *Receiver
}

func (s tracesServer) Export(_ context.Context, req ptraceotlp.ExportRequest) (ptraceotlp.ExportResponse, error) {
	return s.r.traces(req), nil
}

type metricsServer struct {
	pmetricotlp.UnimplementedGRPCServer
	r *Receiver
}

func (s metricsServer) Export(_ context.Context, req pmetricotlp.ExportRequest) (pmetricotlp.ExportResponse, error) {
	return s.r.metrics(req), nil
}

// ServeGRPC serves OTLP/gRPC on the listeners until ctx ends.
func (r *Receiver) ServeGRPC(ctx context.Context, ls ...net.Listener) error {
	s := r.grpcServer()
	go func() {
		<-ctx.Done()
		s.Stop()
	}()
	errs := make(chan error, len(ls))
	for _, l := range ls {
		go func() { errs <- s.Serve(l) }()
	}
	return <-errs
}

// ServeHTTP serves OTLP/HTTP (protobuf or JSON) on l until ctx ends.
func (r *Receiver) ServeHTTP(ctx context.Context, l net.Listener) error {
	s := &http.Server{Handler: r.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		s.Close()
	}()
	if err := s.Serve(l); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// message is an OTLP request or response in pdata.
type message interface {
	MarshalProto() ([]byte, error)
	UnmarshalProto([]byte) error
	MarshalJSON() ([]byte, error)
	UnmarshalJSON([]byte) error
}

// Handler is OTLP/HTTP: POST /v1/logs, /v1/traces, /v1/metrics.
func (r *Receiver) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/logs", func(w http.ResponseWriter, req *http.Request) {
		er := plogotlp.NewExportRequest()
		serve(w, req, er, func() message { return r.logs(er) })
	})
	mux.HandleFunc("POST /v1/traces", func(w http.ResponseWriter, req *http.Request) {
		er := ptraceotlp.NewExportRequest()
		serve(w, req, er, func() message { return r.traces(er) })
	})
	mux.HandleFunc("POST /v1/metrics", func(w http.ResponseWriter, req *http.Request) {
		er := pmetricotlp.NewExportRequest()
		serve(w, req, er, func() message { return r.metrics(er) })
	})
	return mux
}

// serve decodes an OTLP/HTTP request into er, runs consume and writes its
// answer in the request's encoding.
func serve(w http.ResponseWriter, req *http.Request, er message, consume func() message) {
	ct, _, _ := mime.ParseMediaType(req.Header.Get("Content-Type"))
	if ct != "application/x-protobuf" && ct != "application/json" {
		http.Error(w, "Content-Type must be application/x-protobuf or application/json", http.StatusUnsupportedMediaType)
		return
	}
	body, err := readBody(w, req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if ct == "application/json" {
		err = er.UnmarshalJSON(body)
	} else {
		err = er.UnmarshalProto(body)
	}
	if err != nil {
		http.Error(w, "not an OTLP export request: "+err.Error(), http.StatusBadRequest)
		return
	}
	resp := consume()
	var out []byte
	if ct == "application/json" {
		out, err = resp.MarshalJSON()
	} else {
		out, err = resp.MarshalProto()
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", ct)
	w.Write(out)
}

// readBody reads at most maxBody bytes, gunzipped when so encoded.
func readBody(w http.ResponseWriter, req *http.Request) ([]byte, error) {
	var body io.Reader = http.MaxBytesReader(w, req.Body, maxBody)
	switch req.Header.Get("Content-Encoding") {
	case "", "identity":
	case "gzip":
		zr, err := gzip.NewReader(body)
		if err != nil {
			return nil, err
		}
		defer zr.Close()
		body = zr
	default:
		return nil, errors.New("Content-Encoding must be gzip or none")
	}
	b, err := io.ReadAll(io.LimitReader(body, maxBody+1))
	if err == nil && len(b) > maxBody {
		err = errors.New("request over 4 MiB")
	}
	return b, err
}
