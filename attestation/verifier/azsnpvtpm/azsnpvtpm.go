// Package azsnpvtpm verifies the evidence of Azure SEV-SNP confidential VMs
// (az-snp-vtpm) as Trustee's verifier does: the vTPM half (HCL report,
// attestation key, quote, nonce, PCRs: the azvtpm package), the SNP report
// inside the HCL report with the snp verifier (VCEK from the evidence to
// AMD's root, signature, TCB and chip binding, VMPL 0) and its report data
// binding the HCL runtime data. Claims carry Trustee's names and encodings.
package azsnpvtpm

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/azvtpm"
	"github.com/cocoon-cc/cocoon/attestation/verifier/snp"
)

// New returns the az-snp-vtpm verifier, which checks SNP reports and their
// VCEK chain with s (AMD's roots, KDS, cache, clock).
func New(s *snp.Verifier) *azvtpm.Verifier {
	return azvtpm.New(hardware{s})
}

// hardware verifies the SNP report of the HCL report.
type hardware struct {
	snp *snp.Verifier
}

func (hardware) Type() azvtpm.ReportType { return azvtpm.ReportSNP }

func (h hardware) VerifyHardware(ctx context.Context, ev *azvtpm.Evidence, hcl *azvtpm.HCLReport) (verifier.Claims, []byte, error) {
	r, err := snp.ParseReport(hcl.HWReport)
	if err != nil {
		return nil, nil, err
	}
	claims, err := h.snp.Verify(ctx, r, snp.CertChain{VCEK: ev.VCEK}, verifier.Expected{})
	if err != nil {
		return nil, nil, err
	}
	return trusteeClaims(claims), r.Proto().ReportData, nil
}

// trusteeClaims renders the SNP report's claims as Trustee's az-snp-vtpm
// verifier does: numbers and booleans as strings, the measurement in
// standard base64.
func trusteeClaims(s verifier.Claims) verifier.Claims {
	c := verifier.Claims{}
	for _, k := range []string{"policy_abi_major", "policy_abi_minor", "policy_smt_allowed", "policy_migrate_ma",
		"policy_debug_allowed", "policy_single_socket", "reported_tcb_bootloader", "reported_tcb_tee",
		"reported_tcb_snp", "reported_tcb_microcode", "platform_tsme_enabled", "platform_smt_enabled"} {
		c[k] = fmt.Sprint(s[k])
	}
	m, _ := hex.DecodeString(s["measurement"].(string))
	c["measurement"] = base64.StdEncoding.EncodeToString(m)
	return c
}
