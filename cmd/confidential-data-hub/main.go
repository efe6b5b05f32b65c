// Command confidential-data-hub serves the CDH's ttrpc APIs on a unix
// socket inside the guest.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/containerd/ttrpc"

	"github.com/cocoon-cc/cocoon/guest/cdh"
	"github.com/cocoon-cc/cocoon/guest/cdh/attest"
	"github.com/cocoon-cc/cocoon/guest/cdh/config"
	"github.com/cocoon-cc/cocoon/guest/cdh/server"
)

func main() {
	var cfgPath, attesterKind string
	flag.StringVar(&cfgPath, "c", "", "cdh.toml (default: AA_KBC_PARAMS or the kernel's agent.aa_kbc_params)")
	flag.StringVar(&cfgPath, "config", "", "alias of -c")
	flag.StringVar(&attesterKind, "attester", attest.AA, "evidence source: aa (the attestation agent), sample or tpm")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, log, cfgPath, attesterKind); err != nil {
		log.Error("confidential-data-hub", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, cfgPath, attesterKind string) error {
	cfg, err := config.Resolve(cfgPath)
	if err != nil {
		return err
	}
	a, closeAttester, err := attest.Open(ctx, attesterKind, cfg.AA.Socket)
	if err != nil {
		return err
	}
	defer closeAttester()
	hub, err := cdh.New(cfg, a, nil)
	if err != nil {
		return err
	}
	// Set by coco-agent in a VM on QEMU's user network.
	hub.SetHostLoopback(os.Getenv("COCOON_HOST_LOOPBACK"))
	if err := hub.WriteCredentials(ctx); err != nil {
		return err
	}
	l, err := listen(config.SocketPath(cfg.Socket))
	if err != nil {
		return err
	}
	srv, err := ttrpc.NewServer()
	if err != nil {
		return err
	}
	server.Register(srv, hub, log)
	log.Info("serving", "socket", cfg.Socket, "kbs", cfg.KBC.URL, "tee", a.Tee())
	go func() {
		<-ctx.Done()
		srv.Shutdown(context.WithoutCancel(ctx))
	}()
	if err := srv.Serve(ctx, l); err != nil && !errors.Is(err, ttrpc.ErrServerClosed) {
		return err
	}
	return nil
}

// listen binds the socket, replacing a stale one, readable by root only.
func listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("socket permissions: %w", err)
	}
	return l, nil
}
