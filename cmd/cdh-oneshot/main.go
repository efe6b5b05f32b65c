// Command cdh-oneshot runs one CDH call from the command line, for scripts
// and debugging, without a running CDH daemon.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/cocoon-cc/cocoon/guest/cdh"
	"github.com/cocoon-cc/cocoon/guest/cdh/attest"
	"github.com/cocoon-cc/cocoon/guest/cdh/config"
	"github.com/cocoon-cc/cocoon/guest/cdh/securemount"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRoot().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "cdh-oneshot:", err)
		os.Exit(1)
	}
}

type globals struct{ cfgPath, attester string }

// hub builds a Hub for one call.
func (g *globals) hub(ctx context.Context, fn func(*cdh.Hub) error) error {
	cfg, err := config.Resolve(g.cfgPath)
	if err != nil {
		return err
	}
	a, closeAttester, err := attest.Open(ctx, g.attester, cfg.AA.Socket)
	if err != nil {
		return err
	}
	defer closeAttester()
	h, err := cdh.New(cfg, a, nil)
	if err != nil {
		return err
	}
	return fn(h)
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{Use: "cdh-oneshot", Short: "Run one confidential data hub call",
		SilenceUsage: true, SilenceErrors: true}
	root.PersistentFlags().StringVarP(&g.cfgPath, "config", "c", "", "cdh.toml (default: AA_KBC_PARAMS or agent.aa_kbc_params)")
	root.PersistentFlags().StringVar(&g.attester, "attester", attest.AA, "evidence source: aa, sample or tpm")
	root.AddCommand(getResourceCmd(g), unsealCmd(g), secureMountCmd(g), pullImageCmd(g))
	return root
}

func getResourceCmd(g *globals) *cobra.Command {
	var uri string
	c := &cobra.Command{Use: "get-resource --resource-path kbs:///REPO/TYPE/TAG",
		Short: "Print a KBS resource's raw bytes", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return g.hub(c.Context(), func(h *cdh.Hub) error {
				data, err := h.GetResource(c.Context(), uri)
				if err != nil {
					return err
				}
				_, err = c.OutOrStdout().Write(data)
				return err
			})
		}}
	c.Flags().StringVar(&uri, "resource-path", "", "resource URI, kbs:///repo/type/tag")
	c.MarkFlagRequired("resource-path")
	return c
}

func unsealCmd(g *globals) *cobra.Command {
	var path string
	c := &cobra.Command{Use: "unseal-secret --secret-path FILE", Short: "Unseal a sealed secret", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			secret, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			return g.hub(c.Context(), func(h *cdh.Hub) error {
				data, err := h.UnsealSecret(c.Context(), secret)
				if err != nil {
					return err
				}
				_, err = c.OutOrStdout().Write(data)
				return err
			})
		}}
	c.Flags().StringVar(&path, "secret-path", "", "file holding the sealed.… secret")
	c.MarkFlagRequired("secret-path")
	return c
}

func secureMountCmd(g *globals) *cobra.Command {
	var path string
	c := &cobra.Command{Use: "secure-mount --storage-path FILE", Short: "Mount an encrypted volume", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			var r securemount.Request
			if err := json.Unmarshal(b, &r); err != nil {
				return fmt.Errorf("%w: storage file: %w", securemount.ErrInvalid, err)
			}
			return g.hub(c.Context(), func(h *cdh.Hub) error { return h.SecureMount(c.Context(), &r) })
		}}
	c.Flags().StringVar(&path, "storage-path", "", "JSON of the SecureMount request (volume_type, options, flags, mount_point)")
	c.MarkFlagRequired("storage-path")
	return c
}

func pullImageCmd(g *globals) *cobra.Command {
	var image, bundle string
	var quiet bool
	c := &cobra.Command{Use: "pull-image --image-url REF --bundle-path DIR",
		Short: "Pull, verify, decrypt and unpack an image into an OCI bundle", Args: cobra.NoArgs,
		Long: "Pull, verify, decrypt and unpack an image into an OCI bundle whose rootfs is an overlay mount " +
			"of the layers kept under [image] work_dir; umount BUNDLE/rootfs to release it.",
		RunE: func(c *cobra.Command, _ []string) error {
			abs, err := filepath.Abs(bundle)
			if err != nil {
				return err
			}
			return g.hub(c.Context(), func(h *cdh.Hub) error {
				// Warnings (an image accepted without a signature policy) go
				// to stderr.
				opts := []cdh.PullOption{cdh.WithLog(slog.New(slog.NewTextHandler(os.Stderr, nil)))}
				if !quiet {
					opts = append(opts, cdh.WithProgress(newProgressPrinter(os.Stderr).report))
				}
				digest, err := h.PullImage(c.Context(), image, abs, opts...)
				if err == nil {
					fmt.Fprintln(c.OutOrStdout(), digest)
				}
				return err
			})
		}}
	c.Flags().StringVar(&image, "image-url", "", "image reference")
	c.Flags().StringVar(&bundle, "bundle-path", "", "bundle directory")
	c.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress on stderr")
	c.MarkFlagRequired("image-url")
	c.MarkFlagRequired("bundle-path")
	return c
}
