// Command kbs is the Key Broker Service with its built-in attestation
// service. It reads a Trustee-style TOML configuration.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/cocoon-cc/cocoon/attestation/verifiers"
	"github.com/cocoon-cc/cocoon/internal/logging"
	"github.com/cocoon-cc/cocoon/kbs"
)

func main() {
	var path string
	for _, name := range []string{"c", "config", "config-file"} {
		flag.StringVar(&path, name, "", "configuration file (TOML, Trustee's keys)")
	}
	flag.Parse()
	if err := run(path); err != nil {
		fmt.Fprintln(os.Stderr, "kbs:", err)
		os.Exit(1)
	}
}

func run(path string) error {
	if path == "" {
		return fmt.Errorf("--config FILE is required")
	}
	boot := logging.New(os.Stderr, "info", "text")
	cfg, err := kbs.LoadConfig(path, boot)
	if err != nil {
		return err
	}
	tuneGC(cfg.SessionStorageType == kbs.SessionsInCookie)
	log := logging.New(os.Stderr, cfg.Logging.Level, cfg.Logging.Format)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	reg, err := verifiers.New(cfg.AttestationService.Verifiers)
	if err != nil {
		return err
	}
	srv, err := kbs.New(ctx, cfg, reg, log)
	if err != nil {
		return err
	}
	defer srv.Close()
	return srv.Serve(ctx, nil)
}
