// Package detect finds the TEE the guest runs in and opens its attester,
// in guest-components' order: TDX, SNP, CCA, Azure's vTPM-backed SNP and
// TDX, TPM, else the sample TEE.
package detect

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cocoon-cc/cocoon/guest/attester"
	"github.com/cocoon-cc/cocoon/guest/attester/azsnpvtpm"
	"github.com/cocoon-cc/cocoon/guest/attester/aztdxvtpm"
	"github.com/cocoon-cc/cocoon/guest/attester/azvtpm"
	"github.com/cocoon-cc/cocoon/guest/attester/cca"
	"github.com/cocoon-cc/cocoon/guest/attester/sample"
	"github.com/cocoon-cc/cocoon/guest/attester/snp"
	"github.com/cocoon-cc/cocoon/guest/attester/tdx"
	"github.com/cocoon-cc/cocoon/guest/attester/tpm"
	"github.com/cocoon-cc/cocoon/guest/attester/tsm"
	"github.com/cocoon-cc/cocoon/protocol"
)

// ErrUnknownTee is an override naming a TEE Cocoon cannot attest.
var ErrUnknownTee = errors.New("detect: unsupported TEE")

// Options configure Open.
type Options struct {
	// Tee overrides detection: "sample", "snp", "tdx", "cca", "az-snp-vtpm",
	// "az-tdx-vtpm" or "tpm"; empty or "auto" detects.
	Tee string
	// Root prefixes every probed path ("/" when empty), so tests can
	// probe a fake tree.
	Root string
	// TPM is the TPM device or simulator socket (tpm.Options.TPM).
	TPM string
	// AAELPath is the attestation agent's event log the TDX attester
	// appends to its CC event log.
	AAELPath string
}

func (o Options) path(p string) string { return filepath.Join(o.Root, p) }

// tpm is the TPM to open: Options.TPM, else the probed device.
func (o Options) tpm() string {
	if o.TPM != "" {
		return o.TPM
	}
	return o.path(tpm.DefaultTPM)
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// Detect names the TEE the guest runs in.
func Detect(o Options) protocol.Tee {
	providers := tsmProviders(o.path(tsm.DefaultRoot))
	switch {
	case exists(o.path("/sys/firmware/acpi/tables/CCEL")) || exists(o.path("/dev/tdx_guest")) || providers["tdx_guest"]:
		return protocol.TeeTDX
	case exists(o.path(snp.DefaultDevice)) || providers["sev_guest"]:
		return protocol.TeeSNP
	case providers[cca.Provider]:
		return protocol.TeeCCA
	case exists(o.path(tpm.DefaultTPM)):
		// An Azure confidential VM's vTPM holds the HCL report.
		if tee, ok := azvtpm.Probe(o.tpm()); ok {
			return tee
		}
		return protocol.TeeTPM
	}
	return protocol.TeeSample
}

// tsmProviders reads the provider of each existing configfs-tsm report
// entry. An empty report directory says nothing: configfs shows the
// provider only inside an entry, which probing must not create.
func tsmProviders(root string) map[string]bool {
	out := map[string]bool{}
	entries, _ := os.ReadDir(root)
	for _, e := range entries {
		if b, err := os.ReadFile(filepath.Join(root, e.Name(), "provider")); err == nil {
			out[strings.TrimSpace(string(b))] = true
		}
	}
	return out
}

// Open opens the attester of the overridden or detected TEE. close
// releases it.
func Open(ctx context.Context, o Options) (a attester.Attester, close func() error, err error) {
	tee := protocol.Tee(o.Tee)
	if o.Tee == "" || o.Tee == "auto" {
		tee = Detect(o)
	}
	nop := func() error { return nil }
	switch tee {
	case protocol.TeeSample:
		return sample.Attester{}, nop, nil
	case protocol.TeeTPM:
		return closing(tpm.Open(tpm.Options{TPM: o.TPM}))
	case protocol.TeeSNP:
		return snp.New(snp.Options{Root: o.Root}), nop, nil
	case protocol.TeeTDX:
		return tdx.New(tdx.Options{Root: o.Root, AAELPath: o.AAELPath}), nop, nil
	case protocol.TeeCCA:
		return cca.New(cca.Options{Root: o.Root}), nop, nil
	case protocol.TeeAzSNPvTPM:
		return closing(azsnpvtpm.Open(azvtpm.Options{TPM: o.TPM}))
	case protocol.TeeAzTDXvTPM:
		return closing(aztdxvtpm.Open(azvtpm.Options{TPM: o.TPM}))
	}
	return nil, nil, fmt.Errorf("%w %q (want sample, snp, tdx, cca, az-snp-vtpm, az-tdx-vtpm or tpm)", ErrUnknownTee, o.Tee)
}

// closing is Open's answer for an attester holding a device (the TPM)
// until its Close.
func closing[A interface {
	attester.Attester
	Close() error
}](a A, err error) (attester.Attester, func() error, error) {
	if err != nil {
		return nil, nil, err
	}
	return a, a.Close, nil
}
