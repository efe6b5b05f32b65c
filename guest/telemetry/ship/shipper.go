// Package ship exports a pod's telemetry to its owner's OpenTelemetry
// endpoint: OTLP over gRPC in mutual TLS, the pod's X.509-SVID as client
// certificate (following its renewals) and only telemetry.toml's pinned
// CA trusted for the endpoint. Data waits in a bounded in-memory buffer;
// what does not fit is dropped and counted, and the counts are shipped
// as metrics too. Failed exports are retried with backoff.
package ship

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/cocoon-cc/cocoon/guest/mesh"
	"github.com/cocoon-cc/cocoon/guest/telemetry"
)

const (
	// maxRequest bounds one export (the collector's gRPC receiver takes
	// 4 MiB by default).
	maxRequest     = 2 << 20
	exportTimeout  = 30 * time.Second
	minBackoff     = 100 * time.Millisecond
	maxBackoff     = 30 * time.Second
	signalsShipped = 3
)

var signals = [signalsShipped]string{telemetry.Logs, telemetry.Metrics, telemetry.Traces}

// Shipper buffers and exports. Logs, Traces and Metrics may be called
// from any goroutine; Run exports until its context ends.
type Shipper struct {
	cfg   *telemetry.Config
	svids x509svid.Source
	log   *slog.Logger
	buf   *buffer
	count map[string]*Counts
}

// Counts are one signal's items (log records, spans, data points).
type Counts struct {
	// Exported: accepted by the endpoint.
	Exported atomic.Int64
	// Dropped: the buffer was full, the endpoint refused them for good,
	// or telemetry.toml does not ship the signal.
	Dropped atomic.Int64
}

// New prepares a shipper for cfg whose client certificate is svids'.
func New(cfg *telemetry.Config, svids x509svid.Source, log *slog.Logger) *Shipper {
	s := &Shipper{cfg: cfg, svids: svids, log: log, buf: newBuffer(cfg.BufferBytes()), count: map[string]*Counts{}}
	for _, sig := range signals {
		s.count[sig] = &Counts{}
	}
	return s
}

// Counts are signal's counters (telemetry.Logs, Metrics or Traces).
func (s *Shipper) Counts(signal string) *Counts { return s.count[signal] }

// Logs queues log records; it returns how many were dropped.
func (s *Shipper) Logs(ld plog.Logs) int { return s.queue(logs{ld}) }

// Traces queues spans; it returns how many were dropped.
func (s *Shipper) Traces(td ptrace.Traces) int { return s.queue(traces{td}) }

// Metrics queues data points; it returns how many were dropped.
func (s *Shipper) Metrics(md pmetric.Metrics) int { return s.queue(metrics{md}) }

func (s *Shipper) queue(b batch) int {
	n := b.items()
	if n == 0 {
		return 0
	}
	if size := b.size(); !s.cfg.Ships(b.signal()) || size > maxRequest || !s.buf.push(b, size) {
		s.count[b.signal()].Dropped.Add(int64(n))
		return n
	}
	return 0
}

// Run exports until ctx ends, and queues the shipper's own counters as
// metrics every metrics interval.
func (s *Shipper) Run(ctx context.Context) error {
	cc, renewed, err := s.connect()
	if err != nil {
		return err
	}
	defer func() { cc.Close() }()
	if s.cfg.Ships(telemetry.Metrics) {
		go s.selfMetrics(ctx)
	}
	for {
		b, n, err := s.buf.take(ctx, maxRequest)
		if err != nil {
			return nil
		}
		select {
		case <-renewed:
			// A new connection, so that the endpoint sees the new SVID
			// (a live one keeps the certificate of its handshake).
			cc.Close()
			if cc, renewed, err = s.connect(); err != nil {
				return err
			}
		default:
		}
		s.export(ctx, cc, b)
		s.buf.release(n)
	}
}

// renewals is a source that tells of its renewals (guest/spiffe.Source).
type renewals interface{ Updated() <-chan struct{} }

// connect makes the connection to the endpoint; renewed is closed when
// the SVID changes (nil: never, for a source that does not tell).
func (s *Shipper) connect() (cc *grpc.ClientConn, renewed <-chan struct{}, err error) {
	if r, ok := s.svids.(renewals); ok {
		renewed = r.Updated()
	}
	cc, err = grpc.NewClient(s.cfg.Endpoint, grpc.WithTransportCredentials(credentials.NewTLS(s.tlsConfig())),
		grpc.WithContextDialer(dial))
	if err != nil {
		return nil, nil, fmt.Errorf("telemetry endpoint %s: %w", s.cfg.Endpoint, err)
	}
	return cc, renewed, nil
}

// dial connects with the mesh's mark (guest/mesh), so that a mesh.toml
// whose outbound rules cover the endpoint does not redirect the
// shipper's own mTLS into the mesh proxy. Without CAP_NET_ADMIN (no mesh
// could be installed either) the socket stays unmarked.
func dial(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{Control: func(network, address string, rc syscall.RawConn) error {
		if err := mesh.MarkSocket(network, address, rc); !errors.Is(err, unix.EPERM) {
			return err
		}
		return nil
	}}
	return d.DialContext(ctx, "tcp", addr)
}

// tlsConfig trusts only the pinned CA for the endpoint and presents the
// pod's current SVID.
func (s *Shipper) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS12,
		RootCAs:              s.cfg.Roots(),
		ServerName:           s.cfg.ServerName,
		GetClientCertificate: tlsconfig.GetClientCertificate(s.svids),
	}
}

// export sends b, retrying with backoff while the failure may pass; it
// gives up only when ctx ends or the endpoint refuses b for good.
func (s *Shipper) export(ctx context.Context, cc *grpc.ClientConn, b batch) {
	c := s.count[b.signal()]
	for wait := minBackoff; ; wait = min(2*wait, maxBackoff) {
		ectx, cancel := context.WithTimeout(ctx, exportTimeout)
		rejected, err := b.export(ectx, cc)
		cancel()
		if err == nil {
			c.Exported.Add(int64(b.items()) - rejected)
			c.Dropped.Add(rejected)
			return
		}
		if !retryable(err) || ctx.Err() != nil {
			s.log.Warn("telemetry export refused: dropped", "signal", b.signal(), "items", b.items(), "err", err)
			c.Dropped.Add(int64(b.items()))
			return
		}
		lvl := slog.LevelDebug
		if wait == minBackoff {
			lvl = slog.LevelWarn // once a batch: the endpoint may stay down
		}
		s.log.Log(ctx, lvl, "telemetry export failed, retrying", "signal", b.signal(), "in", wait, "err", err)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
		}
	}
}

// retryable: the OTLP specification's retryable gRPC codes.
func retryable(err error) bool {
	switch status.Code(err) {
	case codes.Canceled, codes.DeadlineExceeded, codes.Aborted, codes.OutOfRange, codes.Unavailable,
		codes.DataLoss, codes.ResourceExhausted:
		return true
	}
	return false
}

// selfMetrics queues the shipper's counters and buffer use.
func (s *Shipper) selfMetrics(ctx context.Context) {
	t := time.NewTicker(s.cfg.MetricsInterval)
	defer t.Stop()
	start := pcommonNow()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		s.Metrics(s.counters(start))
	}
}
