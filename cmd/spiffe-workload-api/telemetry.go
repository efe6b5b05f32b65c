package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"

	"github.com/cocoon-cc/cocoon/guest/spiffe"
	"github.com/cocoon-cc/cocoon/guest/telemetry"
	"github.com/cocoon-cc/cocoon/guest/telemetry/otlpin"
	"github.com/cocoon-cc/cocoon/guest/telemetry/ship"
)

// runTelemetry ships the pod's telemetry to the owner's endpoint that
// initdata's telemetry.toml names, with the pod's SVID: what the agent
// hands over on socket and what the workload sends to the OTLP receiver
// on the guest's loopback. In-process for the same reason as the mesh.
func runTelemetry(ctx context.Context, log *slog.Logger, initdata []byte, src *spiffe.Source, socket string) error {
	cfg, ok, err := telemetry.FromInitdata(initdata)
	if err != nil {
		return fmt.Errorf("initdata's %s: %w", telemetry.InitdataKey, err)
	}
	if !ok {
		return fmt.Errorf("initdata has no %s", telemetry.InitdataKey)
	}
	sh := ship.New(cfg, src, log)
	rcv := otlpin.New(sh, log)
	os.Remove(socket)
	ul, err := net.Listen("unix", socket)
	if err != nil {
		return err
	}
	if err := os.Chmod(socket, 0o600); err != nil {
		return err
	}
	gl, err := net.Listen("tcp4", otlpin.GRPCAddr)
	if err != nil {
		return err
	}
	hl, err := net.Listen("tcp4", otlpin.HTTPAddr)
	if err != nil {
		return err
	}
	go sh.Run(ctx)
	go func() {
		if err := rcv.ServeGRPC(ctx, gl, ul); err != nil {
			log.Error("telemetry: OTLP/gRPC receiver", "err", err)
		}
	}()
	go func() {
		if err := rcv.ServeHTTP(ctx, hl); err != nil {
			log.Error("telemetry: OTLP/HTTP receiver", "err", err)
		}
	}()
	log.Info("telemetry: shipping to the owner", "endpoint", cfg.Endpoint, "ship", cfg.Ship)
	return nil
}
