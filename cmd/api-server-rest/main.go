// Command api-server-rest serves the CDH's and the attestation agent's
// APIs to workloads over HTTP on the guest's loopback.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/cocoon-cc/cocoon/guest/cdh/config"
	"github.com/cocoon-cc/cocoon/guest/cdh/restapi"
)

func main() {
	var bind, features, cdhAddr, aaAddr string
	flag.StringVar(&bind, "bind", "127.0.0.1:8006", "address to listen on")
	flag.StringVar(&features, "features", "resource", "resource, attestation or all")
	flag.StringVar(&cdhAddr, "cdh_addr", config.DefaultSocket, "the CDH's ttrpc socket")
	flag.StringVar(&aaAddr, "aa_addr", config.DefaultAASocket, "the attestation agent's ttrpc socket")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, bind, features, cdhAddr, aaAddr); err != nil {
		slog.Error("api-server-rest", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, bind, features, cdhAddr, aaAddr string) error {
	var cdh restapi.CDH
	var aa restapi.AA
	switch features {
	case "resource", "attestation", "all":
	default:
		return fmt.Errorf("unknown features %q: want resource, attestation or all", features)
	}
	if features != "attestation" {
		cdh = restapi.CDHSocket(config.SocketPath(cdhAddr))
	}
	if features != "resource" {
		aa = restapi.AASocket(config.SocketPath(aaAddr))
	}
	srv := &http.Server{Addr: bind, Handler: restapi.Handler(cdh, aa), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Shutdown(context.WithoutCancel(ctx))
	}()
	slog.Info("serving", "bind", bind, "features", features)
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
