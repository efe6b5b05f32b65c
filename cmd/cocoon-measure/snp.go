package main

import (
	"encoding/hex"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/cocoon-cc/cocoon/runtime/measure/ovmf"
	"github.com/cocoon-cc/cocoon/runtime/measure/snp"
)

func snpCmd() *cobra.Command {
	var (
		opts                 snp.Options
		vcpus                []int
		ovmfDigest, features string
		firmwareOnly         bool
		out                  output
	)
	c := &cobra.Command{
		Use:   "snp --ovmf FILE --vcpus N --vcpu-type TYPE [--kernel K [--initrd I] [--append CMDLINE]]",
		Short: "Compute the SEV-SNP launch digest of a QEMU direct-boot guest",
		Long: `Compute the launch digest (the attestation report's MEASUREMENT) of an SEV-SNP guest
that QEMU starts with -bios OVMF, -kernel/-initrd/-append (kernel-hashes=on), -smp N and
-cpu TYPE, as virtee's sev-snp-measure does for --mode snp. Pods started with different
vCPU counts have different digests: --vcpus 1,2,4 lists one for each. The firmware must be an OVMF
build with SEV metadata; measuring a kernel needs the OvmfPkg/AmdSev build, whose
metadata has an SNP_KERNEL_HASHES page.

--firmware-only prints the digest over the firmware pages alone, which --ovmf-digest
takes back later (the firmware is then read only for its metadata).`,
		Args: cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if firmwareOnly {
				return printFirmwareDigest(c, opts.OVMFPath, &out)
			}
			var err error
			if opts.GuestFeatures, err = strconv.ParseUint(features, 0, 64); err != nil {
				return fmt.Errorf("--guest-features: %w", err)
			}
			if ovmfDigest != "" {
				if opts.OVMFDigest, err = hex.DecodeString(ovmfDigest); err != nil {
					return fmt.Errorf("--ovmf-digest: %w", err)
				}
			}
			digests, err := launchDigests(opts, vcpus)
			if err != nil {
				return err
			}
			return out.print(c.OutOrStdout(), map[string]any{snp.ReferenceValue: digests})
		},
	}
	f := c.Flags()
	f.StringVar(&opts.OVMFPath, "ovmf", "", "OVMF firmware image (QEMU -bios)")
	f.StringVar(&ovmfDigest, "ovmf-digest", "", "precomputed firmware digest (hex, from --firmware-only)")
	f.BoolVar(&firmwareOnly, "firmware-only", false, "print the digest over the firmware pages alone")
	f.StringVar(&opts.Kernel, "kernel", "", "kernel (QEMU -kernel)")
	f.StringVar(&opts.Initrd, "initrd", "", "initrd (QEMU -initrd)")
	f.StringVar(&opts.Cmdline, "append", "", "kernel command line (QEMU -append)")
	f.IntSliceVar(&vcpus, "vcpus", nil, "number of vCPUs (QEMU -smp); several (2,4) give one digest each")
	f.StringVar(&opts.VCPUType, "vcpu-type", "", "QEMU CPU model (QEMU -cpu): one of "+fmt.Sprint(snp.CPUTypes()))
	f.Uint32Var(&opts.VCPUSig, "vcpu-sig", 0, "CPUID signature instead of --vcpu-type (e.g. 0xa00f11)")
	f.StringVar(&features, "guest-features", "0x1", "SEV_FEATURES of the vCPUs (0x1 SNPActive; 0x21 adds DebugSwap)")
	out.add(c)
	_ = c.MarkFlagRequired("ovmf")
	return c
}

func printFirmwareDigest(c *cobra.Command, path string, out *output) error {
	fw, err := ovmf.ReadFile(path)
	if err != nil {
		return err
	}
	d, err := snp.OVMFDigest(fw)
	if err != nil {
		return err
	}
	return out.print(c.OutOrStdout(), map[string]any{"snp_ovmf_digest": hex.EncodeToString(d[:])})
}

// launchDigests are the digests of opts for each vCPU count, in hex.
func launchDigests(opts snp.Options, vcpus []int) ([]string, error) {
	if len(vcpus) == 0 {
		return nil, fmt.Errorf("%w: give --vcpus", snp.ErrInvalidOptions)
	}
	digests := make([]string, 0, len(vcpus))
	for _, n := range vcpus {
		opts.VCPUs = n
		ld, err := snp.LaunchDigest(opts)
		if err != nil {
			return nil, err
		}
		digests = append(digests, hex.EncodeToString(ld[:]))
	}
	return digests, nil
}
