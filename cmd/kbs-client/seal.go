package main

import (
	"crypto/ecdsa"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/cocoon-cc/cocoon/guest/cdh/sealed"
	"github.com/cocoon-cc/cocoon/guest/cdh/wrap"
)

// sealCmd creates sealed secrets. The owner keeps the signing key (PEM EC
// P-256); the verification key goes to the KBS at the --signing-kid path:
//
//	kbs-client seal-secret verification-key --signing-key k.pem > vk.json
//	kbs-client config --auth-private-key admin.key set-resource --path default/sealing/vk --resource-file vk.json
//	kbs-client seal-secret --signing-key k.pem --signing-kid kbs:///default/sealing/vk vault --resource-uri kbs:///default/app/password
func sealCmd() *cobra.Command {
	var keyFile, kid string
	c := &cobra.Command{Use: "seal-secret", Short: "Create sealed secrets for the confidential data hub"}
	c.PersistentFlags().StringVar(&keyFile, "signing-key", "", "the owner's signing key (PEM EC P-256)")
	c.PersistentFlags().StringVar(&kid, "signing-kid", "", "resource URI of the verification key in the KBS, kbs:///repo/type/tag")
	c.MarkPersistentFlagRequired("signing-key")
	seal := func(c *cobra.Command, s *sealed.Secret) error {
		key, err := readSigningKey(keyFile)
		if err != nil {
			return err
		}
		out, err := sealed.Seal(s, key, kid)
		if err != nil {
			return err
		}
		fmt.Fprintln(c.OutOrStdout(), out)
		return nil
	}
	c.AddCommand(sealVaultCmd(seal), sealEnvelopeCmd(seal), &cobra.Command{Use: "verification-key",
		Short: "Print the JWK to store in the KBS at --signing-kid", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			key, err := readSigningKey(keyFile)
			if err != nil {
				return err
			}
			jwk, err := sealed.VerificationKey(&key.PublicKey)
			if err != nil {
				return err
			}
			fmt.Fprintln(c.OutOrStdout(), string(jwk))
			return nil
		}})
	return c
}

type sealFunc func(*cobra.Command, *sealed.Secret) error

func sealVaultCmd(seal sealFunc) *cobra.Command {
	var uri string
	c := &cobra.Command{Use: "vault --resource-uri kbs:///repo/type/tag", Short: "Seal a pointer to a KBS resource",
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error { return seal(c, sealed.NewVault(uri)) }}
	c.Flags().StringVar(&uri, "resource-uri", "", "the secret's resource URI")
	c.MarkFlagRequired("resource-uri")
	return c
}

func sealEnvelopeCmd(seal sealFunc) *cobra.Command {
	var keyID, kekFile, secretFile, wrapType string
	c := &cobra.Command{Use: "envelope --key-id kbs:///repo/type/tag --kek-file F --secret-file F",
		Short: "Seal a secret encrypted with a data key wrapped by a KBS-held key", Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			kek, err := os.ReadFile(kekFile)
			if err != nil {
				return err
			}
			defer clear(kek)
			data, err := os.ReadFile(secretFile)
			if err != nil {
				return err
			}
			defer clear(data)
			t, err := wrap.ParseType(wrapType)
			if err != nil {
				return err
			}
			s, err := sealed.NewEnvelope(keyID, kek, data, t)
			if err != nil {
				return err
			}
			return seal(c, s)
		}}
	c.Flags().StringVar(&keyID, "key-id", "", "resource URI of the 32-byte key-wrapping key in the KBS")
	c.Flags().StringVar(&kekFile, "kek-file", "", "file holding that key (the same 32 bytes stored in the KBS)")
	c.Flags().StringVar(&secretFile, "secret-file", "", "file holding the secret value")
	c.Flags().StringVar(&wrapType, "wrap-type", string(wrap.A256GCM), "A256GCM or A256CTR")
	for _, f := range []string{"key-id", "kek-file", "secret-file"} {
		c.MarkFlagRequired(f)
	}
	return c
}

func readSigningKey(path string) (*ecdsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return sealed.ParseSigningKeyPEM(b)
}
