package kbs

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"golang.org/x/sync/errgroup"
)

// Serve listens on every configured socket, over TLS unless insecure_http
// is set, until ctx ends; then it shuts down gracefully. ready, if not nil,
// receives the bound addresses once listening.
func (s *Server) Serve(ctx context.Context, ready func([]net.Addr)) error {
	hs := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: 60 * time.Second, WriteTimeout: 60 * time.Second, IdleTimeout: 120 * time.Second,
		MaxHeaderBytes: 64 << 10}
	var tlsCfg *tls.Config
	if !s.cfg.HTTPServer.InsecureHTTP {
		cert, err := tls.LoadX509KeyPair(s.cfg.HTTPServer.Certificate, s.cfg.HTTPServer.PrivateKey)
		if err != nil {
			return fmt.Errorf("kbs: TLS: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	} else {
		s.log.Warn("serving plain HTTP (insecure_http = true): use only behind a TLS-terminating proxy or for tests")
	}
	var lns []net.Listener
	var addrs []net.Addr
	for _, sock := range s.cfg.HTTPServer.Sockets {
		ln, err := net.Listen("tcp", sock)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return fmt.Errorf("kbs: listen %s: %w", sock, err)
		}
		if tlsCfg != nil {
			ln = tls.NewListener(ln, tlsCfg)
		}
		lns = append(lns, ln)
		addrs = append(addrs, ln.Addr())
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, ln := range lns {
		s.log.Info("KBS listening", "addr", ln.Addr().String(), "tls", tlsCfg != nil)
		g.Go(func() error {
			if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
	g.Go(func() error {
		s.SweepSessions(gctx, time.Minute)
		return nil
	})
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
