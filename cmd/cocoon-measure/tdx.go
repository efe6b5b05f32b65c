package main

import (
	"encoding/hex"

	"github.com/spf13/cobra"

	"github.com/cocoon-cc/cocoon/runtime/measure/tdx"
)

func tdxCmd() *cobra.Command {
	var (
		opts tdx.Options
		out  output
	)
	c := &cobra.Command{
		Use:   "tdx --ovmf FILE",
		Short: "Compute the MRTD of a TDX guest built from a TDVF (OVMF) firmware",
		Long: `Compute MRTD, the build-time measurement of an Intel TDX guest that QEMU starts with
-bios OVMF.fd (a TDVF build: a combined image, not OVMF_CODE.fd alone). It depends on
the firmware only; the kernel, initrd and command line are measured into RTMRs.
--two-pass selects host stacks that add all pages of a section before measuring it.`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			mrtd, err := tdx.MRTD(opts)
			if err != nil {
				return err
			}
			return out.print(c.OutOrStdout(), map[string]any{tdx.ReferenceValue: []string{hex.EncodeToString(mrtd[:])}})
		},
	}
	c.Flags().StringVar(&opts.OVMFPath, "ovmf", "", "TDVF firmware image (QEMU -bios)")
	c.Flags().BoolVar(&opts.TwoPass, "two-pass", false, "add every page of a section before extending its contents")
	out.add(c)
	_ = c.MarkFlagRequired("ovmf")
	return c
}
