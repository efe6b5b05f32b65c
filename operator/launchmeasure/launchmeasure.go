// Package launchmeasure computes the launch measurements of the VMs a
// CocoonRuntime's nodes boot, from its guest image, as cocoon-measure
// computes them from files: the SEV-SNP launch digest of qemu-snp VMs
// (the firmware, the kernel, initrd and command line the shim passes, the
// vCPU model the installer configures) and the MRTD of qemu-tdx VMs.
package launchmeasure

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	"github.com/cocoon-cc/cocoon/operator/nodeinstall"
	"github.com/cocoon-cc/cocoon/runtime/measure/snp"
	"github.com/cocoon-cc/cocoon/runtime/measure/tdx"
	"github.com/cocoon-cc/cocoon/runtime/sandbox/qemu"
)

// maxFirmware bounds a firmware image held in memory (OVMF is 2-8 MiB).
const maxFirmware = 64 << 20

// ErrFirmware is a firmware the guest image carries but that cannot be
// measured.
var ErrFirmware = errors.New("launch measurement")

// Launch is how the shim starts a runtime's VMs.
type Launch struct {
	// KernelParams are the shim's kernel_params (CocoonRuntime
	// spec.shim.kernelParams).
	KernelParams string
	// VCPUs are the vCPU counts to measure SEV-SNP guests for.
	VCPUs []int
}

// Result is one flavour's reference value.
type Result struct {
	Flavour string
	Name    string   // snp.ReferenceValue or tdx.ReferenceValue
	Values  []string // hex
}

// guest is what the measurements need of a guest image.
type guest struct {
	kernel, initrd [sha256.Size]byte
	snpFW, tdxFW   []byte
}

// Measure pulls the guest image ref and returns its digest and the
// measurements of the flavours asked for that have one: qemu-snp when the
// image has OVMF.amdsev.fd, qemu-tdx when it has TDVF.fd.
func Measure(ctx context.Context, ref string, plainHTTP bool, flavours []string, l Launch) (string, []Result, error) {
	var g guest
	digest, err := nodeinstall.WalkGuestImage(ctx, ref, plainHTTP, g.add)
	if err != nil {
		return "", nil, err
	}
	var out []Result
	for _, f := range flavours {
		var r *Result
		switch {
		case f == "qemu-snp" && g.snpFW != nil:
			r, err = g.snp(l)
		case f == "qemu-tdx" && g.tdxFW != nil:
			r, err = g.tdx()
		}
		if err != nil {
			return "", nil, fmt.Errorf("%w: %s: %v", ErrFirmware, f, err)
		}
		if r != nil {
			r.Flavour = f
			out = append(out, *r)
		}
	}
	return digest, out, nil
}

func (g *guest) add(name string, r io.Reader) error {
	switch name {
	case nodeinstall.GuestKernel:
		return sum(&g.kernel, r)
	case nodeinstall.GuestInitrd:
		return sum(&g.initrd, r)
	case nodeinstall.GuestSNPFirm:
		return readFirmware(&g.snpFW, r)
	case nodeinstall.GuestTDXFirm:
		return readFirmware(&g.tdxFW, r)
	}
	return nil
}

func sum(dst *[sha256.Size]byte, r io.Reader) error {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return err
	}
	h.Sum(dst[:0])
	return nil
}

func readFirmware(dst *[]byte, r io.Reader) error {
	var b bytes.Buffer
	n, err := io.Copy(&b, io.LimitReader(r, maxFirmware+1))
	if err != nil {
		return err
	}
	if n > maxFirmware {
		return fmt.Errorf("%w: firmware over %d bytes", ErrFirmware, maxFirmware)
	}
	*dst = b.Bytes()
	return nil
}

// snp is the launch digest for each vCPU count, as cocoon-measure snp
// --ovmf --kernel --initrd --append --vcpus --vcpu-type gives it: the
// command line is the shim's (virtio-serial channel; SNP VMs do not
// hot-plug, so nothing else is added).
func (g *guest) snp(l Launch) (*Result, error) {
	opts := snp.Options{OVMF: g.snpFW, VCPUType: nodeinstall.SNPCPUModel, Hashes: &snp.Hashes{
		Kernel: g.kernel, Initrd: g.initrd, Cmdline: snp.CmdlineHash(qemu.Cmdline("serial", l.KernelParams))}}
	r := &Result{Name: snp.ReferenceValue}
	for _, n := range l.VCPUs {
		opts.VCPUs = n
		d, err := snp.LaunchDigest(opts)
		if err != nil {
			return nil, err
		}
		r.Values = append(r.Values, hex.EncodeToString(d[:]))
	}
	return r, nil
}

func (g *guest) tdx() (*Result, error) {
	d, err := tdx.MRTD(tdx.Options{OVMF: g.tdxFW})
	if err != nil {
		return nil, err
	}
	return &Result{Name: tdx.ReferenceValue, Values: []string{hex.EncodeToString(d[:])}}, nil
}
