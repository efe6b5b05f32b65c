// Command cocoon-policy generates a pod's agent policy from its Kubernetes
// YAML and puts it, with the KBS and image signature settings, into the
// pod's initdata annotation (as Kata's genpolicy does); verify explains why
// the agent would refuse a request.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "cocoon-policy:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "cocoon-policy",
		Short:         "Generate and check Cocoon agent policies for Kubernetes pods",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(generateCmd(), verifyCmd())
	return root
}
