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
	"encoding/json"
	"fmt"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/azvtpm"
	"github.com/cocoon-cc/cocoon/attestation/verifier/snp"
)

// Verifier verifies az-snp-vtpm evidence; it is safe for concurrent use.
type Verifier struct {
	snp *snp.Verifier
}

var _ verifier.Verifier = (*Verifier)(nil)

// New returns a Verifier that checks SNP reports and their VCEK chain with
// s (AMD's roots, KDS, cache, clock).
func New(s *snp.Verifier) *Verifier {
	return &Verifier{snp: s}
}

// Evaluate implements verifier.Verifier for Trustee's evidence JSON.
func (v *Verifier) Evaluate(ctx context.Context, raw json.RawMessage, want verifier.Expected) ([]verifier.TeeClaims, error) {
	ev, err := azvtpm.ParseEvidence(raw)
	if err != nil {
		return nil, err
	}
	claims, err := v.Verify(ctx, ev, want)
	if err != nil {
		return nil, err
	}
	return []verifier.TeeClaims{{Class: "cpu", Claims: claims}}, nil
}

// Verify checks decoded evidence and returns its claims.
func (v *Verifier) Verify(ctx context.Context, ev *azvtpm.Evidence, want verifier.Expected) (verifier.Claims, error) {
	vt, err := azvtpm.Verify(ev, azvtpm.ReportSNP, want)
	if err != nil {
		return nil, err
	}
	r, err := snp.ParseReport(vt.HCL.HWReport)
	if err != nil {
		return nil, err
	}
	// The SNP report binds the HCL runtime data, not the runtime data or
	// initdata (the vTPM's nonce and PCR 8 do).
	snpClaims, err := v.snp.Verify(ctx, r, snp.CertChain{VCEK: ev.VCEK}, verifier.Expected{})
	if err != nil {
		return nil, err
	}
	if err := vt.HCL.CheckBinding(r.Proto().ReportData); err != nil {
		return nil, err
	}
	c := trusteeClaims(snpClaims)
	azvtpm.AddClaims(c, vt.TPM)
	return c, nil
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
