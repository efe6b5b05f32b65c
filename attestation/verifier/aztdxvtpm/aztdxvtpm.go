// Package aztdxvtpm verifies the evidence of Azure TDX confidential VMs
// (az-tdx-vtpm) as Trustee's verifier does: the vTPM half (HCL report,
// attestation key, quote, nonce, PCRs: the azvtpm package), the TD quote
// with the tdx verifier (DCAP: PCK chain, collateral, TCB status) and its
// report data binding the HCL runtime data. Claims are the TD quote's
// (Trustee's tdx names, without an event log) and the vTPM's.
package aztdxvtpm

import (
	"context"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/azvtpm"
	"github.com/cocoon-cc/cocoon/attestation/verifier/tdx"
)

// New returns the az-tdx-vtpm verifier, which checks TD quotes with t
// (roots, collateral, clock).
func New(t *tdx.Verifier) *azvtpm.Verifier {
	return azvtpm.New(hardware{t})
}

// hardware verifies the TD quote that goes with the HCL report.
type hardware struct {
	tdx *tdx.Verifier
}

func (hardware) Type() azvtpm.ReportType { return azvtpm.ReportTDX }

func (h hardware) VerifyHardware(ctx context.Context, ev *azvtpm.Evidence, _ *azvtpm.HCLReport) (verifier.Claims, []byte, error) {
	q, err := tdx.ParseQuote(ev.TDQuote)
	if err != nil {
		return nil, nil, err
	}
	claims, err := h.tdx.VerifyParsedQuote(ctx, q, nil, verifier.Expected{})
	if err != nil {
		return nil, nil, err
	}
	return claims, q.Body.ReportData[:], nil
}
