// Command coco-mesh is the pod's mTLS mesh proxy in the guest: it reads
// the rules from initdata's mesh.toml, installs the netfilter redirects
// (iptables-restore) and proxies the redirected connections in mutual TLS
// with the pod's X.509-SVID, taken from the SPIFFE Workload API.
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

	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/cocoon-cc/cocoon/guest/mesh"
	"github.com/cocoon-cc/cocoon/guest/spiffe"
)

func main() {
	var initdataPath, socket string
	var noRules bool
	flag.StringVar(&initdataPath, "initdata", "", "the initdata TOML the TEE was launched with (its mesh.toml has the rules)")
	flag.StringVar(&socket, "socket", filepath.Join(spiffe.ContainerSocketDir, spiffe.SocketName), "the SPIFFE Workload API's unix socket")
	flag.BoolVar(&noRules, "no-rules", false, "do not install the netfilter redirects (they are installed already)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, log, initdataPath, socket, !noRules); err != nil {
		log.Error("coco-mesh", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, initdataPath, socket string, rules bool) error {
	body, err := os.ReadFile(initdataPath)
	if err != nil {
		return err
	}
	cfg, err := mesh.Setup(ctx, body, rules)
	if err != nil {
		return err
	}
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr("unix://"+socket)))
	if err != nil {
		return fmt.Errorf("workload API: %w", err)
	}
	defer src.Close()
	log.Info("meshing", "inbound_ports", cfg.InboundPorts, "outbound", len(cfg.Outbound), "allow", cfg.Allow)
	return mesh.NewProxy(cfg, src, src, log).Serve(ctx)
}
