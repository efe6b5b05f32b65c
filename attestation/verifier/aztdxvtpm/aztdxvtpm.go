// Package aztdxvtpm verifies the evidence of Azure TDX confidential VMs
// (az-tdx-vtpm) as Trustee's verifier does: the vTPM half (HCL report,
// attestation key, quote, nonce, PCRs: the azvtpm package), the TD quote
// with the tdx verifier (DCAP: PCK chain, collateral, TCB status) and its
// report data binding the HCL runtime data. Claims are the TD quote's
// (Trustee's tdx names, without an event log) and the vTPM's.
package aztdxvtpm

import (
	"context"
	"encoding/json"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/azvtpm"
	"github.com/cocoon-cc/cocoon/attestation/verifier/tdx"
)

// Verifier verifies az-tdx-vtpm evidence; it is safe for concurrent use.
type Verifier struct {
	tdx *tdx.Verifier
}

var _ verifier.Verifier = (*Verifier)(nil)

// New returns a Verifier that checks TD quotes with t (roots, collateral,
// clock).
func New(t *tdx.Verifier) *Verifier {
	return &Verifier{tdx: t}
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
	vt, err := azvtpm.Verify(ev, azvtpm.ReportTDX, want)
	if err != nil {
		return nil, err
	}
	q, err := tdx.ParseQuote(ev.TDQuote)
	if err != nil {
		return nil, err
	}
	// The TD quote binds the HCL runtime data, not the runtime data or
	// initdata (the vTPM's nonce and PCR 8 do).
	claims, err := v.tdx.VerifyParsedQuote(ctx, q, nil, verifier.Expected{})
	if err != nil {
		return nil, err
	}
	if err := vt.HCL.CheckBinding(q.Body.ReportData[:]); err != nil {
		return nil, err
	}
	azvtpm.AddClaims(claims, vt.TPM)
	return claims, nil
}
