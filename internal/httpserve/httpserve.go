// Package httpserve runs an HTTP API on its configured sockets, over TLS
// unless told otherwise, until its context ends.
package httpserve

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"golang.org/x/sync/errgroup"
)

// Config says where and how to listen.
type Config struct {
	Sockets []string
	// CertFile and KeyFile enable TLS (read again when they change);
	// Insecure allows plain HTTP instead.
	CertFile, KeyFile string
	Insecure          bool
}

// Serve listens on every socket and serves h until ctx ends, then shuts
// down gracefully. ready, if not nil, gets the bound addresses.
func Serve(ctx context.Context, c Config, h http.Handler, log *slog.Logger, ready func([]net.Addr)) error {
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: 60 * time.Second, WriteTimeout: 60 * time.Second, IdleTimeout: 120 * time.Second,
		MaxHeaderBytes: 64 << 10}
	var tlsCfg *tls.Config
	if !c.Insecure {
		certs, err := newCertReloader(c.CertFile, c.KeyFile, log)
		if err != nil {
			return fmt.Errorf("TLS: %w", err)
		}
		tlsCfg = &tls.Config{GetCertificate: certs.GetCertificate, MinVersion: tls.VersionTLS12}
	} else {
		log.Warn("serving plain HTTP (insecure_http = true): use only behind a TLS-terminating proxy or for tests")
	}
	lns, err := listen(c.Sockets, tlsCfg)
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	var addrs []net.Addr
	for _, ln := range lns {
		log.Info("listening", "addr", ln.Addr().String(), "tls", tlsCfg != nil)
		addrs = append(addrs, ln.Addr())
		g.Go(func() error {
			if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return hs.Shutdown(sctx)
	})
	if ready != nil {
		ready(addrs)
	}
	return g.Wait()
}

func listen(sockets []string, tlsCfg *tls.Config) ([]net.Listener, error) {
	var lns []net.Listener
	for _, sock := range sockets {
		ln, err := net.Listen("tcp", sock)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, fmt.Errorf("listen %s: %w", sock, err)
		}
		if tlsCfg != nil {
			ln = tls.NewListener(ln, tlsCfg)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}
