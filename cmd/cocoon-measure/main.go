// Command cocoon-measure computes, before any guest runs, the reference
// values a TEE launched with given inputs must show: the SEV-SNP launch
// digest of a QEMU direct-boot guest, the MRTD of a TDX guest, and the
// initdata digest as SNP HOST_DATA, TDX MRCONFIGID and TPM PCR 8 carry it.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "cocoon-measure:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "cocoon-measure",
		Short:         "Compute TEE reference values from launch inputs",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(snpCmd(), tdxCmd(), initDataCmd())
	return root
}
