// Command spiffe-workload-api serves the SPIFFE Workload API to the pod's
// containers: it attests to the KBS named in cdh.toml, gets the X.509-SVID
// of the SPIFFE ID the pod's initdata names for a key it makes itself,
// renews it at half-life and hands out JWT-SVIDs and the trust bundle.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/cocoon-cc/cocoon/guest/cdh/attest"
	"github.com/cocoon-cc/cocoon/guest/cdh/config"
	"github.com/cocoon-cc/cocoon/guest/cdh/kbc"
	"github.com/cocoon-cc/cocoon/guest/mesh"
	"github.com/cocoon-cc/cocoon/guest/spiffe"
)

func main() {
	var cfgPath, attesterKind, initdataPath, socket string
	var meshOn bool
	var telemetrySocket string
	flag.StringVar(&cfgPath, "c", "", "cdh.toml: the KBS ([kbc] url, kbs_cert) and the attestation agent ([aa] aa_socket)")
	flag.StringVar(&attesterKind, "attester", attest.AA, "evidence source: aa (the attestation agent), sample or tpm")
	flag.StringVar(&initdataPath, "initdata", "", "the initdata TOML the TEE was launched with (its spiffe.toml names the ID)")
	flag.StringVar(&socket, "socket", filepath.Join(spiffe.ContainerSocketDir, spiffe.SocketName), "the Workload API's unix socket")
	flag.BoolVar(&meshOn, "mesh", false, "also run the pod's mTLS mesh (initdata's mesh.toml): netfilter redirects and the proxy")
	flag.StringVar(&telemetrySocket, "telemetry", "", "also ship the pod's telemetry (initdata's telemetry.toml); the agent hands its part over on this unix socket")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, log, cfgPath, attesterKind, initdataPath, socket, meshOn, telemetrySocket); err != nil {
		log.Error("spiffe-workload-api", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, cfgPath, attesterKind, initdataPath, socket string, meshOn bool, telemetrySocket string) error {
	cfg, err := config.Resolve(cfgPath)
	if err != nil {
		return err
	}
	var initdata []byte
	if initdataPath != "" {
		if initdata, err = os.ReadFile(initdataPath); err != nil {
			return err
		}
	}
	a, closeAttester, err := attest.Open(ctx, attesterKind, cfg.AA.Socket)
	if err != nil {
		return err
	}
	defer closeAttester()
	k, err := kbc.New(kbc.Config{URL: cfg.KBC.URL, CertPEM: cfg.KBC.KBSCert, InitData: initdata}, a)
	if err != nil {
		return err
	}
	src := spiffe.NewSource(k.Client(), log)
	go src.Run(ctx)
	if meshOn {
		// In-process: the guest's initramfs holds no second copy of
		// go-spiffe and gRPC for a separate coco-mesh.
		cfg, err := mesh.Setup(ctx, initdata, true)
		if err != nil {
			return fmt.Errorf("--mesh: %w", err)
		}
		go func() {
			if err := mesh.NewProxy(cfg, src, src, log).Serve(ctx); err != nil {
				log.Error("mesh", "err", err)
			}
		}()
	}
	if telemetrySocket != "" {
		if err := runTelemetry(ctx, log, initdata, src, telemetrySocket); err != nil {
			return fmt.Errorf("--telemetry: %w", err)
		}
	}
	log.Info("serving", "socket", socket, "kbs", cfg.KBC.URL, "tee", a.Tee())
	return spiffe.NewServer(src).Serve(ctx, socket)
}
