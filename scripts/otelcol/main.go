// Command otelcol-owner is the workload owner's OpenTelemetry endpoint in
// Cocoon's tests: the OpenTelemetry Collector's own OTLP receiver
// (otlpreceiver, gRPC and HTTP), configured as in a collector's
// `receivers: otlp:` section, whose consumers append what it receives to a
// file, one OTLP JSON document a line ({"traces"|"metrics"|"logs": ...}).
//
//	otelcol-owner -config receiver.yaml -out received.jsonl
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/plog"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/otlpreceiver"
	"go.uber.org/zap"
	"go.yaml.in/yaml/v3"
)

func main() {
	cfgPath := flag.String("config", "", "the OTLP receiver's configuration (YAML, the collector's receivers.otlp section)")
	out := flag.String("out", "", "file the received data is appended to")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *cfgPath, *out); err != nil {
		fmt.Fprintln(os.Stderr, "otelcol-owner:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, cfgPath, outPath string) error {
	raw, err := os.ReadFile(cfgPath)
	if err != nil {
		return err
	}
	var m map[string]any
	if err := yaml.Unmarshal(raw, &m); err != nil {
		return err
	}
	f := otlpreceiver.NewFactory()
	cfg := f.CreateDefaultConfig()
	// Unmarshal validates too, as the collector's config resolution does.
	if err := confmap.NewFromStringMap(m).Unmarshal(cfg); err != nil {
		return err
	}
	out, err := os.OpenFile(outPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	s := &sink{out: out}
	logger, err := zap.NewDevelopment()
	if err != nil {
		return err
	}
	tel := componenttest.NewNopTelemetrySettings()
	tel.Logger = logger
	set := receiver.Settings{ID: component.NewID(f.Type()), TelemetrySettings: tel, BuildInfo: component.NewDefaultBuildInfo()}
	tc, _ := consumer.NewTraces(func(_ context.Context, td ptrace.Traces) error {
		b, err := (&ptrace.JSONMarshaler{}).MarshalTraces(td)
		return s.write("traces", b, err)
	})
	mc, _ := consumer.NewMetrics(func(_ context.Context, md pmetric.Metrics) error {
		b, err := (&pmetric.JSONMarshaler{}).MarshalMetrics(md)
		return s.write("metrics", b, err)
	})
	lc, _ := consumer.NewLogs(func(_ context.Context, ld plog.Logs) error {
		b, err := (&plog.JSONMarshaler{}).MarshalLogs(ld)
		return s.write("logs", b, err)
	})
	// One receiver serves the three signals (the factory shares it).
	tr, err := f.CreateTraces(ctx, set, cfg, tc)
	if err != nil {
		return err
	}
	mr, err := f.CreateMetrics(ctx, set, cfg, mc)
	if err != nil {
		return err
	}
	lr, err := f.CreateLogs(ctx, set, cfg, lc)
	if err != nil {
		return err
	}
	comps := []component.Component{tr, mr, lr}
	for _, c := range comps {
		if err := c.Start(ctx, componenttest.NewNopHost()); err != nil {
			return err
		}
	}
	fmt.Fprintln(os.Stderr, "otelcol-owner: receiving")
	<-ctx.Done()
	for _, c := range comps {
		c.Shutdown(context.Background())
	}
	return nil
}

// sink appends one JSON line per request.
type sink struct {
	mu  sync.Mutex
	out *os.File
}

func (s *sink) write(kind string, b []byte, err error) error {
	if err != nil {
		return err
	}
	line, err := json.Marshal(map[string]json.RawMessage{kind: b})
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err = s.out.Write(append(line, '\n'))
	return err
}
