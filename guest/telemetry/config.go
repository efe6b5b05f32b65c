// Package telemetry ships a pod's logs, metrics and traces to its owner
// from inside the TEE: container output the agent policy withholds from
// the host, guest and container metrics, and what the workload sends to
// the OTLP receiver on the guest's loopback go to the owner's
// OpenTelemetry endpoint in mutual TLS with the pod's X.509-SVID. The
// endpoint and the CA that authenticates it come from initdata's
// telemetry.toml, which the hardware measures, so the host can neither
// redirect the data nor read it. Subpackages: ship (the bounded buffer and
// the exporter), otlpin (the loopback receiver), feed (the agent's side).
package telemetry

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/cocoon-cc/cocoon/initdata"
)

// InitdataKey is the initdata entry that turns telemetry on.
const InitdataKey = "telemetry.toml"

// The signals telemetry.toml's ship selects.
const (
	Logs    = "logs"
	Metrics = "metrics"
	Traces  = "traces"
)

// Defaults and bounds of telemetry.toml.
const (
	DefaultBufferMiB       = 8
	maxBufferMiB           = 256
	DefaultMetricsInterval = 15 * time.Second
	minMetricsInterval     = time.Second
	maxConfig              = 64 << 10
)

// ErrBadConfig: telemetry.toml cannot be used.
var ErrBadConfig = errors.New("telemetry: bad telemetry.toml")

// Config is telemetry.toml.
//
//	endpoint = "otel.example.org:4317"   # the owner's OTLP/gRPC endpoint
//	server_name = "otel.example.org"     # its certificate's name (default: the endpoint's host)
//	ca = """-----BEGIN CERTIFICATE-----...""" # the only roots trusted for it
//	ship = ["logs", "metrics", "traces"] # default: all three
//	buffer_mib = 8                       # in-memory bound; beyond it new data is dropped (counted)
//	metrics_interval = "15s"             # guest and container metrics
type Config struct {
	Endpoint        string        `toml:"endpoint"`
	ServerName      string        `toml:"server_name"`
	CA              string        `toml:"ca"`
	Ship            []string      `toml:"ship"`
	BufferMiB       int           `toml:"buffer_mib"`
	MetricsInterval time.Duration `toml:"metrics_interval"`

	roots *x509.CertPool
}

// ParseConfig reads and checks telemetry.toml.
func ParseConfig(text string) (*Config, error) {
	var c Config
	if err := initdata.DecodeEntry(text, maxConfig, &c); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadConfig, err)
	}
	host, port, err := net.SplitHostPort(c.Endpoint)
	if n, perr := strconv.ParseUint(port, 10, 16); err != nil || host == "" || perr != nil || n == 0 {
		return nil, fmt.Errorf("%w: endpoint %q is not host:port", ErrBadConfig, c.Endpoint)
	}
	if c.ServerName == "" {
		c.ServerName = host
	}
	c.roots = x509.NewCertPool()
	if c.CA == "" || !c.roots.AppendCertsFromPEM([]byte(c.CA)) {
		return nil, fmt.Errorf("%w: ca holds no PEM certificate (the endpoint must be pinned)", ErrBadConfig)
	}
	if c.Ship == nil {
		c.Ship = []string{Logs, Metrics, Traces}
	}
	for _, s := range c.Ship {
		if s != Logs && s != Metrics && s != Traces {
			return nil, fmt.Errorf("%w: ship %q: not logs, metrics or traces", ErrBadConfig, s)
		}
	}
	if c.BufferMiB == 0 {
		c.BufferMiB = DefaultBufferMiB
	}
	if c.BufferMiB < 1 || c.BufferMiB > maxBufferMiB {
		return nil, fmt.Errorf("%w: buffer_mib %d: not within 1..%d", ErrBadConfig, c.BufferMiB, maxBufferMiB)
	}
	if c.MetricsInterval == 0 {
		c.MetricsInterval = DefaultMetricsInterval
	}
	if c.MetricsInterval < minMetricsInterval {
		return nil, fmt.Errorf("%w: metrics_interval %s: under %s", ErrBadConfig, c.MetricsInterval, minMetricsInterval)
	}
	return &c, nil
}

// Roots are the CAs the endpoint's certificate must chain to: ca only.
func (c *Config) Roots() *x509.CertPool { return c.roots }

// Ships reports whether the owner gets signal (Logs, Metrics, Traces).
func (c *Config) Ships(signal string) bool { return slices.Contains(c.Ship, signal) }

// BufferBytes is the buffer's bound.
func (c *Config) BufferBytes() int { return c.BufferMiB << 20 }

// FromInitdata is the telemetry.toml of an initdata document; ok is false
// when it has none.
func FromInitdata(body []byte) (c *Config, ok bool, err error) {
	return initdata.FromEntry(body, InitdataKey, ParseConfig)
}
