// Command api-server-rest serves the CDH's and the attestation agent's
// APIs to workloads over HTTP on the guest's loopback.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/containerd/ttrpc"

	"github.com/cocoon-cc/cocoon/guest/cdh/config"
	"github.com/cocoon-cc/cocoon/guest/cdh/restapi"
	aapb "github.com/cocoon-cc/cocoon/protocol/ttrpc/aa"
	cdhpb "github.com/cocoon-cc/cocoon/protocol/ttrpc/cdh"
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
		c, err := dial(ctx, cdhAddr)
		if err != nil {
			return err
		}
		defer c.Close()
		cdh = cdhpb.NewGetResourceServiceClient(c)
	}
	if features != "resource" {
		c, err := dial(ctx, aaAddr)
		if err != nil {
			return err
		}
		defer c.Close()
		aa = aapb.NewAttestationAgentServiceClient(c)
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

func dial(ctx context.Context, addr string) (*ttrpc.Client, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", config.SocketPath(addr))
	if err != nil {
		return nil, err
	}
	return ttrpc.NewClient(c), nil
}
