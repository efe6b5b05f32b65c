package main

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cocoon-cc/cocoon/guest/attester/sample"
	"github.com/cocoon-cc/cocoon/jose"
	"github.com/cocoon-cc/cocoon/kbs/client"
)

type globals struct {
	url, certFile string
}

func (g *globals) http() (*http.Client, error) { return client.HTTPClient(g.certFile) }

func newRoot() (*cobra.Command, *globals) {
	g := &globals{}
	root := &cobra.Command{
		Use:           "kbs-client",
		Short:         "A command line client for KBS APIs",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.url, "url", "http://127.0.0.1:8080", "the KBS server root URL")
	root.PersistentFlags().StringVar(&g.certFile, "cert-file", "", "the KBS HTTPS server's root certificate (PEM)")
	root.AddCommand(attestCmd(g), getResourceCmd(g), configCmd(g), sealCmd())
	return root, g
}

// guestFlags are the attestation flags of attest and get-resource.
type guestFlags struct {
	teeKeyFile string
}

func (f *guestFlags) add(c *cobra.Command) {
	c.Flags().StringVar(&f.teeKeyFile, "tee-key-file", "", "TEE private key (PEM); a new key when not set")
}

// client builds an RCAR client; initData is the optional positional
// init-data plaintext, as Trustee's client takes it.
func (f *guestFlags) client(g *globals, initData []string, token string) (*client.Client, error) {
	hc, err := g.http()
	if err != nil {
		return nil, err
	}
	o := client.Options{HTTP: hc, Token: token}
	if f.teeKeyFile != "" {
		b, err := os.ReadFile(f.teeKeyFile)
		if err != nil {
			return nil, err
		}
		if o.Key, err = jose.LoadTEEKeyPEM(b); err != nil {
			return nil, err
		}
	}
	if len(initData) > 0 {
		o.InitData = []byte(initData[0])
	}
	return client.New(g.url, sample.Attester{}, o)
}

func attestCmd(g *globals) *cobra.Command {
	f := &guestFlags{}
	c := &cobra.Command{
		Use:   "attest [INIT_DATA]",
		Short: "Attest and print the attestation token",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			cl, err := f.client(g, args, "")
			if err != nil {
				return err
			}
			tok, err := cl.Attest(c.Context())
			if err != nil {
				return err
			}
			fmt.Fprintln(c.OutOrStdout(), tok)
			return nil
		},
	}
	f.add(c)
	return c
}

func getResourceCmd(g *globals) *cobra.Command {
	f := &guestFlags{}
	var path, tokenFile string
	c := &cobra.Command{
		Use:   "get-resource --path REPO/TYPE/TAG [INIT_DATA]",
		Short: "Get a confidential resource; prints it base64-encoded",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			var token string
			if tokenFile != "" {
				if f.teeKeyFile == "" {
					return errors.New("--attestation-token needs --tee-key-file: the key the token vouches for")
				}
				b, err := os.ReadFile(tokenFile)
				if err != nil {
					return err
				}
				token = strings.TrimSpace(string(b))
			}
			cl, err := f.client(g, args, token)
			if err != nil {
				return err
			}
			data, err := cl.GetResource(c.Context(), path)
			if err != nil {
				return err
			}
			fmt.Fprintln(c.OutOrStdout(), base64.StdEncoding.EncodeToString(data))
			return nil
		},
	}
	f.add(c)
	c.Flags().StringVar(&path, "path", "", "resource path, e.g. default/key/1")
	c.Flags().StringVar(&tokenFile, "attestation-token", "", "use this attestation token instead of attesting")
	c.MarkFlagRequired("path")
	return c
}
