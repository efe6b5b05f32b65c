package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/cocoon-cc/cocoon/initdata"
	"github.com/cocoon-cc/cocoon/rvps/refvalues"
)

func initDataCmd() *cobra.Command {
	var (
		algorithm string
		out       output
	)
	c := &cobra.Command{
		Use:   "initdata FILE",
		Short: "Compute the initdata digest as SNP HOST_DATA, TDX MRCONFIGID and TPM PCR 8 carry it",
		Long: `Compute the digest of an initdata TOML document with the algorithm it names, and the
values the TEE shows for it: SNP HOST_DATA (32 bytes: a SHA-384 or SHA-512 digest cut,
a SHA-256 one as is), TDX MRCONFIGID (48 bytes, zero-padded) and TPM PCR 8.
--algorithm, when given, must be the document's: the guest hashes with that one.`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			body, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			doc, err := initdata.Parse(body)
			if err != nil {
				return err
			}
			if algorithm != "" && algorithm != doc.Algorithm {
				return fmt.Errorf("%w: the document's algorithm is %s, not %s", initdata.ErrInvalid, doc.Algorithm, algorithm)
			}
			values, err := refvalues.InitData{}.Compute(refvalues.Inputs{InitData: body})
			if err != nil {
				return err
			}
			return out.print(c.OutOrStdout(), values)
		},
	}
	c.Flags().StringVar(&algorithm, "algorithm", "", "sha256, sha384 or sha512: the algorithm the document must name")
	out.add(c)
	return c
}
