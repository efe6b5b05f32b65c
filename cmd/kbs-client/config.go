package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cocoon-cc/cocoon/kbs/client"
	"github.com/cocoon-cc/cocoon/kbs/respolicy"
	"github.com/cocoon-cc/cocoon/protocol"
)

type adminFlags struct {
	tokenFile, privateKey string
	claims                client.TokenClaims
}

func (f *adminFlags) admin(g *globals) (*client.Admin, error) {
	hc, err := g.http()
	if err != nil {
		return nil, err
	}
	switch {
	case f.tokenFile != "" && f.privateKey != "":
		return nil, errors.New("give --admin-token-file or --auth-private-key, not both")
	case f.privateKey != "":
		k, err := client.LoadSigningKey(f.privateKey)
		if err != nil {
			return nil, err
		}
		return client.NewAdminSigning(g.url, hc, k, f.claims), nil
	case f.claims != client.TokenClaims{Role: protocol.AdminRole}:
		return nil, errors.New("--role, --issuer and --audience go with --auth-private-key; a token file is sent as it is")
	case f.tokenFile != "":
		b, err := os.ReadFile(f.tokenFile)
		if err != nil {
			return nil, err
		}
		return client.NewAdmin(g.url, hc, strings.TrimSpace(string(b))), nil
	}
	return nil, errors.New("admin calls need --admin-token-file or --auth-private-key")
}

func configCmd(g *globals) *cobra.Command {
	f := &adminFlags{}
	c := &cobra.Command{Use: "config", Short: "Configure the KBS (admin API)"}
	c.PersistentFlags().StringVar(&f.tokenFile, "admin-token-file", "", "admin bearer token (JWT) file")
	c.PersistentFlags().StringVar(&f.privateKey, "auth-private-key", "", "admin private key (PEM: Ed25519, ECDSA P-256 or P-384) to sign short-lived admin tokens with")
	c.PersistentFlags().StringVar(&f.claims.Role, "role", protocol.AdminRole, "role claim of the signed tokens (the KBS's ACLs name it)")
	c.PersistentFlags().StringVar(&f.claims.Issuer, "issuer", "", "iss claim of the signed tokens: the issuer of the KBS's identity provider entry")
	c.PersistentFlags().StringVar(&f.claims.Audience, "audience", "", "aud claim of the signed tokens: the audience of the KBS's identity provider entry")
	run := func(fn func(*cobra.Command, *client.Admin, []string) error) func(*cobra.Command, []string) error {
		return func(c *cobra.Command, args []string) error {
			a, err := f.admin(g)
			if err != nil {
				return err
			}
			return fn(c, a, args)
		}
	}
	c.AddCommand(setResourceCmd(run), deleteResourceCmd(run), setResourcePolicyCmd(run),
		setSPIFFEPolicyCmd(run), setAttestationPolicyCmd(run), setSampleRVCmd(run), setRVCmd(run), getRVCmd(run), signAdminTokenCmd(f))
	return c
}

// signAdminTokenCmd prints an admin token, for what kbs-client does not
// call itself: the KBS dashboard, curl.
func signAdminTokenCmd(f *adminFlags) *cobra.Command {
	var ttl time.Duration
	c := &cobra.Command{Use: "sign-admin-token", Short: "Print an admin token (JWT) signed with --auth-private-key, for --role",
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if f.privateKey == "" {
				return errors.New("sign-admin-token needs --auth-private-key")
			}
			if ttl <= 0 {
				return errors.New("--ttl must be positive")
			}
			k, err := client.LoadSigningKey(f.privateKey)
			if err != nil {
				return err
			}
			tok, err := client.SignToken(k, f.claims, ttl)
			if err != nil {
				return err
			}
			fmt.Fprintln(c.OutOrStdout(), tok)
			return nil
		}}
	c.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token is valid")
	return c
}

type runner func(func(*cobra.Command, *client.Admin, []string) error) func(*cobra.Command, []string) error

func setResourceCmd(run runner) *cobra.Command {
	var path, file string
	c := &cobra.Command{Use: "set-resource", Short: "Store a confidential resource", Args: cobra.NoArgs,
		RunE: run(func(c *cobra.Command, a *client.Admin, _ []string) error {
			data, err := os.ReadFile(file)
			if err != nil {
				return err
			}
			return a.SetResource(c.Context(), path, data)
		})}
	c.Flags().StringVar(&path, "path", "", "resource path, e.g. default/key/1")
	c.Flags().StringVar(&file, "resource-file", "", "file holding the resource")
	c.MarkFlagRequired("path")
	c.MarkFlagRequired("resource-file")
	return c
}

func deleteResourceCmd(run runner) *cobra.Command {
	var path string
	c := &cobra.Command{Use: "delete-resource", Short: "Delete a confidential resource", Args: cobra.NoArgs,
		RunE: run(func(c *cobra.Command, a *client.Admin, _ []string) error {
			return a.DeleteResource(c.Context(), path)
		})}
	c.Flags().StringVar(&path, "path", "", "resource path")
	c.MarkFlagRequired("path")
	return c
}

func setResourcePolicyCmd(run runner) *cobra.Command {
	var file, repo string
	var allowAll, denyAll, affirming, def bool
	c := &cobra.Command{Use: "set-resource-policy", Short: "Set the resource policy", Args: cobra.NoArgs,
		RunE: run(func(c *cobra.Command, a *client.Admin, _ []string) error {
			var text string
			switch {
			case file != "":
				b, err := os.ReadFile(file)
				if err != nil {
					return err
				}
				text = string(b)
			case allowAll:
				text = respolicy.AllowAll
			case denyAll:
				text = respolicy.DenyAll
			case affirming:
				text = respolicy.Affirming
			case def:
				text = respolicy.Default
			default:
				return errors.New("give --policy-file, --allow-all, --deny-all, --affirming or --default")
			}
			if repo != "" {
				return a.SetRepositoryPolicy(c.Context(), repo, text)
			}
			return a.SetResourcePolicy(c.Context(), text)
		})}
	c.Flags().StringVar(&file, "policy-file", "", "Rego policy file")
	c.Flags().StringVar(&repo, "repository", "", "set this repository's (tenant's) own policy, which applies beside the global one")
	c.Flags().BoolVar(&allowAll, "allow-all", false, "release every resource to any verified token")
	c.Flags().BoolVar(&denyAll, "deny-all", false, "release nothing")
	c.Flags().BoolVar(&affirming, "affirming", false, "release only to tokens whose appraisal is affirming")
	c.Flags().BoolVar(&def, "default", false, "restore the default policy (affirming, never the sample TEE)")
	c.MarkFlagsMutuallyExclusive("policy-file", "allow-all", "deny-all", "affirming", "default")
	return c
}

func setSPIFFEPolicyCmd(run runner) *cobra.Command {
	var file string
	c := &cobra.Command{Use: "set-spiffe-policy", Short: "Set the policy deciding which SPIFFE IDs an appraisal may receive", Args: cobra.NoArgs,
		RunE: run(func(c *cobra.Command, a *client.Admin, _ []string) error {
			b, err := os.ReadFile(file)
			if err != nil {
				return err
			}
			return a.SetSPIFFEPolicy(c.Context(), string(b))
		})}
	c.Flags().StringVar(&file, "policy-file", "", "Rego policy file (package policy, rule allow)")
	c.MarkFlagRequired("policy-file")
	return c
}

func setAttestationPolicyCmd(run runner) *cobra.Command {
	var file, typ, id string
	c := &cobra.Command{Use: "set-attestation-policy", Short: "Set an attestation policy", Args: cobra.NoArgs,
		RunE: run(func(c *cobra.Command, a *client.Admin, _ []string) error {
			b, err := os.ReadFile(file)
			if err != nil {
				return err
			}
			return a.SetAttestationPolicy(c.Context(), id, typ, string(b))
		})}
	c.Flags().StringVar(&file, "policy-file", "", "Rego policy file")
	c.Flags().StringVar(&typ, "type", "rego", "policy type")
	c.Flags().StringVar(&id, "id", "default_cpu", "policy id")
	c.MarkFlagRequired("policy-file")
	return c
}

func setSampleRVCmd(run runner) *cobra.Command {
	var asInt, asBool, single bool
	c := &cobra.Command{Use: "set-sample-reference-value NAME VALUE", Short: "Register a reference value (sample provenance)",
		Args: cobra.ExactArgs(2),
		RunE: run(func(c *cobra.Command, a *client.Admin, args []string) error {
			var v any = args[1]
			switch {
			case asInt:
				n, err := strconv.ParseInt(args[1], 10, 64)
				if err != nil {
					return fmt.Errorf("value %q is not an integer", args[1])
				}
				v = n
			case asBool:
				b, err := strconv.ParseBool(args[1])
				if err != nil {
					return fmt.Errorf("value %q is not a bool", args[1])
				}
				v = b
			}
			if !single {
				v = []any{v}
			}
			return a.RegisterSampleReferenceValue(c.Context(), args[0], v)
		})}
	c.Flags().BoolVar(&asInt, "as-integer", false, "the value is an integer")
	c.Flags().BoolVar(&asBool, "as-bool", false, "the value is a bool")
	c.Flags().BoolVar(&single, "as-single-value", false, "register the value alone, not in a list")
	c.MarkFlagsMutuallyExclusive("as-integer", "as-bool")
	return c
}

func setRVCmd(run runner) *cobra.Command {
	var file string
	c := &cobra.Command{Use: "set-reference-value --message-file FILE", Short: "Register the reference values of an RVPS message (e.g. from cocoon-measure --message)",
		Args: cobra.NoArgs,
		RunE: run(func(c *cobra.Command, a *client.Admin, _ []string) error {
			msg, err := os.ReadFile(file)
			if err != nil {
				return err
			}
			return a.RegisterReferenceValues(c.Context(), msg)
		})}
	c.Flags().StringVar(&file, "message-file", "", "RVPS message (JSON: version, type, payload)")
	c.MarkFlagRequired("message-file")
	return c
}

func getRVCmd(run runner) *cobra.Command {
	var id string
	c := &cobra.Command{Use: "get-reference-value", Short: "Print a reference value", Args: cobra.NoArgs,
		RunE: run(func(c *cobra.Command, a *client.Admin, _ []string) error {
			v, err := a.GetReferenceValue(c.Context(), id)
			if err != nil {
				return err
			}
			fmt.Fprintln(c.OutOrStdout(), string(v))
			return nil
		})}
	c.Flags().StringVar(&id, "id", "", "reference value name")
	c.MarkFlagRequired("id")
	return c
}
