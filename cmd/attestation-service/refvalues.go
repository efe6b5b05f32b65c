package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/cocoon-cc/cocoon/rvps/refvalues"
)

func referenceValuesCmd() *cobra.Command {
	var initData string
	var message bool
	c := &cobra.Command{
		Use:   "reference-values --init-data FILE",
		Short: "Compute reference values from launch inputs",
		Long: `Compute the reference values a TEE launched with these inputs must show:
for an initdata document, its digest and how SNP (HOST_DATA), TDX (MRCONFIGID) and
a TPM (PCR 8) carry it. --message prints an RVPS message ready for
POST /kbs/v0/reference-value.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			in := refvalues.Inputs{}
			if initData != "" {
				b, err := os.ReadFile(initData)
				if err != nil {
					return err
				}
				in.InitData = b
			}
			values, err := refvalues.Compute(in)
			if err != nil {
				return err
			}
			if len(values) == 0 {
				return fmt.Errorf("nothing to compute: give --init-data")
			}
			if message {
				msg, err := refvalues.Message(values)
				if err != nil {
					return err
				}
				fmt.Fprintln(c.OutOrStdout(), string(msg))
				return nil
			}
			enc := json.NewEncoder(c.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(values)
		},
	}
	c.Flags().StringVar(&initData, "init-data", "", "initdata TOML")
	c.Flags().BoolVar(&message, "message", false, "print an RVPS sample message")
	return c
}
