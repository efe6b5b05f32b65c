package kbs

import (
	"context"
	"net"
	"time"

	"github.com/cocoon-cc/cocoon/internal/httpserve"
)

// Serve runs the KBS on its configured sockets until ctx ends, sweeping
// expired sessions and keeping its replica record meanwhile. ready, if not
// nil, gets the bound addresses.
func (s *Server) Serve(ctx context.Context, ready func([]net.Addr)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go s.SweepSessions(ctx, time.Minute)
	left := make(chan struct{})
	go func() {
		defer close(left)
		s.replicas.run(ctx, replicaBeat, s.log)
	}()
	err := httpserve.Serve(ctx, s.cfg.HTTPServer.ServeConfig(), s.Handler(), s.log, ready)
	cancel()
	<-left // the record is deleted before the caller closes the store
	return err
}

// ServeConfig is the listening part of [http_server].
func (c HTTPServerConfig) ServeConfig() httpserve.Config {
	return httpserve.Config{Sockets: c.Sockets, CertFile: c.Certificate, KeyFile: c.PrivateKey, Insecure: c.InsecureHTTP}
}
