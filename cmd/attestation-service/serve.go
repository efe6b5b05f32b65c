package main

import (
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/cocoon-cc/cocoon/attestation/restful"
	"github.com/cocoon-cc/cocoon/attestation/verifiers"
	"github.com/cocoon-cc/cocoon/internal/httpserve"
	"github.com/cocoon-cc/cocoon/internal/logging"
	"github.com/cocoon-cc/cocoon/kbs"
)

func serveCmd() *cobra.Command {
	var path string
	c := &cobra.Command{
		Use:   "serve --config FILE",
		Short: "Serve the attestation service's REST API",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			// The configuration uses the KBS's keys: [http_server],
			// [attestation_service.attestation_token_broker], [storage_backend], [admin].
			cfg, err := kbs.LoadConfig(path, logging.New(os.Stderr, "info", "text"))
			if err != nil {
				return err
			}
			log := logging.New(os.Stderr, cfg.Logging.Level, cfg.Logging.Format)
			ctx, stop := signal.NotifyContext(c.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			st, err := kbs.OpenStore(ctx, cfg, log)
			if err != nil {
				return err
			}
			defer st.Close()
			reg, err := verifiers.New(cfg.AttestationService.Verifiers)
			if err != nil {
				return err
			}
			as, rv, err := kbs.NewBuiltinAS(ctx, cfg, st, reg)
			if err != nil {
				return err
			}
			admin, err := kbs.NewAdmin(ctx, cfg.Admin, st, cfg.DataDir, log)
			if err != nil {
				return err
			}
			api := restful.NewServer(as, rv, admin, log)
			return httpserve.Serve(ctx, cfg.HTTPServer.ServeConfig(), api.Handler(), log, nil)
		},
	}
	c.Flags().StringVarP(&path, "config", "c", "", "configuration file (TOML)")
	c.MarkFlagRequired("config")
	return c
}
