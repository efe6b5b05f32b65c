// Command attestation-service is the standalone attestation service:
// `serve` runs Trustee's restful-as API, `verify` checks evidence offline,
// `reference-values` computes reference values to register.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	root := &cobra.Command{
		Use:           "attestation-service",
		Short:         "Verify TEE evidence and issue EAR attestation tokens",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(serveCmd(), verifyCmd(), referenceValuesCmd())
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "attestation-service:", err)
		os.Exit(1)
	}
}
