// Package snp computes the launch digest (the MEASUREMENT of the
// attestation report) of an AMD SEV-SNP guest that QEMU direct-boots with
// OVMF, before it runs, so that it can be registered as a reference value.
//
// It replays what QEMU asks the SNP firmware to measure, in QEMU's order:
// the OVMF image as normal pages; the pages the OVMF SEV metadata lists
// (zero, secrets, CPUID pages and the page holding the kernel, initrd and
// command-line hashes); then one VMSA page per vCPU. Each step chains
// SHA-384 over a PAGE_INFO structure (SNP ABI, SNP_LAUNCH_UPDATE). This is
// the algorithm of virtee's sev-snp-measure in its "snp" mode for the QEMU
// VMM.
package snp

import (
	"errors"
	"fmt"

	"github.com/cocoon-cc/cocoon/runtime/measure/ovmf"
)

// DefaultGuestFeatures is SEV_FEATURES with only SNPActive set: what
// upstream KVM (KVM_SEV_INIT2) gives a QEMU guest unless asked for more.
// Some older AMD host kernels also set DebugSwap by default (0x21).
const DefaultGuestFeatures = 0x1

// ReferenceValue is the reference value Trustee's default policy compares
// the SNP report's MEASUREMENT with.
const ReferenceValue = "snp_launch_measurement"

// MaxVCPUs bounds the vCPU count at the most QEMU gives an x86 guest.
const MaxVCPUs = 4096

// featureSNPActive is SEV_FEATURES bit 0, set in every SNP guest's VMSAs.
const featureSNPActive = 1

// Errors of LaunchDigest. A malformed firmware image yields an error
// wrapping ovmf.ErrInvalid, a missing one ovmf.ErrNoImage.
var (
	ErrInvalidOptions = errors.New("invalid SNP measurement options")
	ErrUnknownCPUType = errors.New("unknown vCPU type")
	// ErrNotSNPFirmware is returned for an image that cannot start an SNP
	// guest: no SEV metadata or no SEV-ES reset block.
	ErrNotSNPFirmware = errors.New("firmware does not support SEV-SNP")
	// ErrNoKernelHashes is returned when a kernel is given but the firmware
	// has no SNP_KERNEL_HASHES page to check it against (only the
	// OvmfPkg/AmdSev build has one).
	ErrNoKernelHashes = errors.New("firmware has no SNP_KERNEL_HASHES section for measured direct boot")
)

// Options are the launch inputs the digest depends on.
type Options struct {
	// OVMF is the firmware image QEMU loads with -bios; OVMFPath is read
	// when OVMF is nil.
	OVMF     []byte
	OVMFPath string
	// OVMFDigest, when set, is the launch digest over the firmware pages
	// alone (see OVMFDigest), used instead of hashing OVMF's pages: the
	// image is then read only for its metadata.
	OVMFDigest []byte

	// Kernel, Initrd and Cmdline are QEMU's -kernel, -initrd and -append.
	// Without a kernel the kernel-hashes page is measured as a zero page.
	// Hashes, when set, replaces all three with precomputed digests.
	Kernel, Initrd string
	Cmdline        string
	Hashes         *Hashes

	// VCPUs is the number of vCPUs (-smp).
	VCPUs int
	// VCPUType is QEMU's -cpu model (EPYC-v4, EPYC-Milan, ...); VCPUSig,
	// when non-zero, is the CPUID signature instead.
	VCPUType string
	VCPUSig  uint32
	// GuestFeatures is the SEV_FEATURES of the VMSAs; zero means
	// DefaultGuestFeatures.
	GuestFeatures uint64
}

// LaunchDigest computes the SNP launch digest of a QEMU direct-boot guest.
func LaunchDigest(opts Options) ([DigestSize]byte, error) {
	var ld [DigestSize]byte
	in, err := opts.resolve()
	if err != nil {
		return ld, err
	}
	if !in.seeded {
		if in.seed, err = OVMFDigest(in.fw); err != nil {
			return ld, err
		}
	}
	chain := NewChain(in.seed)
	if err := measureMetadata(chain, in.fw, in.hashes); err != nil {
		return ld, err
	}
	ap := qemuVMSA(in.resetEIP, in.sig, in.features)
	chain.VMSA(qemuVMSA(bspEIP, in.sig, in.features))
	for i := 1; i < opts.VCPUs; i++ {
		chain.VMSA(ap)
	}
	return chain.Digest(), nil
}

// OVMFDigest is the launch digest after the firmware pages alone, which
// LaunchDigest can take as Options.OVMFDigest.
func OVMFDigest(fw *ovmf.Firmware) ([DigestSize]byte, error) {
	chain := NewChain([DigestSize]byte{})
	err := chain.Normal(fw.GPA(), fw.Data())
	return chain.Digest(), err
}

// inputs are Options checked and read.
type inputs struct {
	fw       *ovmf.Firmware
	seed     [DigestSize]byte
	seeded   bool // seed is the firmware pages' digest
	hashes   *Hashes
	resetEIP uint32
	sig      uint32
	features uint64
}

func (o *Options) resolve() (*inputs, error) {
	if o.VCPUs < 1 || o.VCPUs > MaxVCPUs {
		return nil, fmt.Errorf("%w: %d vCPUs, want 1 to %d", ErrInvalidOptions, o.VCPUs, MaxVCPUs)
	}
	if o.Kernel == "" && o.Hashes == nil && (o.Initrd != "" || o.Cmdline != "") {
		return nil, fmt.Errorf("%w: an initrd or command line needs a kernel", ErrInvalidOptions)
	}
	in := &inputs{sig: o.VCPUSig, features: o.GuestFeatures}
	if in.features == 0 {
		in.features = DefaultGuestFeatures
	}
	if in.features&featureSNPActive == 0 {
		return nil, fmt.Errorf("%w: guest features %#x without SNPActive (bit 0)", ErrInvalidOptions, in.features)
	}
	if in.sig == 0 {
		if o.VCPUType == "" {
			return nil, fmt.Errorf("%w: no vCPU type or signature", ErrInvalidOptions)
		}
		sig, err := CPUTypeSignature(o.VCPUType)
		if err != nil {
			return nil, err
		}
		in.sig = sig
	}
	if o.OVMFDigest != nil {
		if len(o.OVMFDigest) != DigestSize {
			return nil, fmt.Errorf("%w: OVMF digest of %d bytes, want %d", ErrInvalidOptions, len(o.OVMFDigest), DigestSize)
		}
		copy(in.seed[:], o.OVMFDigest)
		in.seeded = true
	}
	var err error
	if in.fw, err = ovmf.Load(o.OVMF, o.OVMFPath); err != nil {
		return nil, err
	}
	if len(in.fw.Sections()) == 0 {
		return nil, fmt.Errorf("%w: no SEV metadata", ErrNotSNPFirmware)
	}
	var ok bool
	if in.resetEIP, ok = in.fw.ResetEIP(); !ok {
		return nil, fmt.Errorf("%w: no SEV-ES reset block", ErrNotSNPFirmware)
	}
	if in.hashes, err = o.hashes(); err != nil {
		return nil, err
	}
	if in.hashes != nil && !in.fw.HasSection(ovmf.SectionSNPKernelHashes) {
		return nil, ErrNoKernelHashes
	}
	return in, nil
}

func (o *Options) hashes() (*Hashes, error) {
	if o.Hashes != nil {
		return o.Hashes, nil
	}
	if o.Kernel == "" {
		return nil, nil
	}
	h := &Hashes{Cmdline: CmdlineHash(o.Cmdline)}
	var err error
	if h.Kernel, err = FileHash(o.Kernel); err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	if h.Initrd, err = FileHash(o.Initrd); err != nil {
		return nil, fmt.Errorf("initrd: %w", err)
	}
	return h, nil
}

// measureMetadata adds the pages the SEV metadata lists, in its order.
func measureMetadata(c *Chain, fw *ovmf.Firmware, h *Hashes) error {
	for _, s := range fw.Sections() {
		gpa := uint64(s.GPA)
		switch s.Type {
		case ovmf.SectionSNPSecMem, ovmf.SectionSVSMCAA:
			c.Zero(gpa, s.Size)
		case ovmf.SectionSNPSecrets:
			c.Secrets(gpa)
		case ovmf.SectionCPUID:
			c.CPUID(gpa)
		case ovmf.SectionSNPKernelHashes:
			if h == nil {
				c.Zero(gpa, s.Size)
				continue
			}
			page, err := hashesPages(fw, s, h)
			if err != nil {
				return err
			}
			if err := c.Normal(gpa, page); err != nil {
				return err
			}
		}
	}
	return nil
}

// hashesPages are the kernel-hashes section's pages with QEMU's table
// written where the firmware's footer table says, the rest zero.
func hashesPages(fw *ovmf.Firmware, s ovmf.Section, h *Hashes) ([]byte, error) {
	base, room, ok := fw.HashTable()
	if !ok {
		return nil, fmt.Errorf("%w: no SEV hash table entry for the SNP_KERNEL_HASHES section", ovmf.ErrInvalid)
	}
	table := h.Table()
	off := uint64(base) - uint64(s.GPA)
	if base < s.GPA || off+uint64(len(table)) > uint64(s.Size) || uint64(room) < uint64(len(table)) {
		return nil, fmt.Errorf("%w: SEV hash table at %#x (%#x bytes) outside SNP_KERNEL_HASHES %#x+%#x",
			ovmf.ErrInvalid, base, room, s.GPA, s.Size)
	}
	pages := make([]byte, s.Size)
	copy(pages[off:], table)
	return pages, nil
}
