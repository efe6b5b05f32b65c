// Command attestation-service is the standalone attestation service:
// `serve` runs Trustee's restful-as API, `verify` checks evidence offline,
// `reference-values` computes reference values to register.
package main

import (
	"fmt"
	"os"
	"strings"

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
		fmt.Fprintln(os.Stderr, "attestation-service:", oneLine(err.Error()))
		os.Exit(1)
	}
}

// oneLine joins the lines of an error message, so that every error is
// one line of output (and one log line for whoever collects it).
func oneLine(msg string) string {
	var parts []string
	for _, l := range strings.Split(msg, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, l)
		}
	}
	return strings.Join(parts, "; ")
}
