package azvtpm

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/tpm"
)

// Hardware verifies the hardware report of one kind of Azure VM.
type Hardware interface {
	// Type is the kind of hardware report the HCL report must carry.
	Type() ReportType
	// VerifyHardware checks the evidence's hardware report and returns its
	// claims and the report data field that must bind the HCL runtime data.
	VerifyHardware(ctx context.Context, ev *Evidence, hcl *HCLReport) (claims verifier.Claims, reportData []byte, err error)
}

// Verifier verifies Azure vTPM evidence of one kind; it is safe for
// concurrent use when its Hardware is.
type Verifier struct {
	hw Hardware
}

var _ verifier.Verifier = (*Verifier)(nil)

// New returns a Verifier of hw's kind of evidence.
func New(hw Hardware) *Verifier {
	return &Verifier{hw: hw}
}

// Evaluate implements verifier.Verifier for Trustee's evidence JSON.
func (v *Verifier) Evaluate(ctx context.Context, raw json.RawMessage, want verifier.Expected) ([]verifier.TeeClaims, error) {
	ev, err := ParseEvidence(raw)
	if err != nil {
		return nil, err
	}
	return verifier.CPU(v.Verify(ctx, ev, want))
}

// Verify checks decoded evidence: the vTPM half (VerifyVTPM), the
// hardware report and its binding of the HCL runtime data. The hardware
// report binds neither the runtime data nor the initdata: the vTPM's
// nonce and PCR 8 do.
func (v *Verifier) Verify(ctx context.Context, ev *Evidence, want verifier.Expected) (verifier.Claims, error) {
	vt, err := VerifyVTPM(ev, v.hw.Type(), want)
	if err != nil {
		return nil, err
	}
	claims, reportData, err := v.hw.VerifyHardware(ctx, ev, vt.HCL)
	if err != nil {
		return nil, err
	}
	if err := vt.HCL.CheckBinding(reportData); err != nil {
		return nil, err
	}
	addClaims(claims, vt.TPM)
	return claims, nil
}

// Verified is what VerifyVTPM established about the vTPM half of evidence.
type Verified struct {
	HCL *HCLReport
	TPM *tpm.Report
}

// VerifyVTPM checks the vTPM half of evidence, in Trustee's order: the HCL
// report (of type typ) and its attestation key, the quote's signature by
// that key, the PCR digest, the nonce (the expected report data itself),
// in version 2 the HCL user data (starting with the report data), and PCR
// 8 (the initdata digest). The hardware report and its binding of the HCL
// runtime data (HCLReport.CheckBinding) are Verify's.
func VerifyVTPM(ev *Evidence, typ ReportType, want verifier.Expected) (*Verified, error) {
	hcl, err := ParseHCLReport(ev.HCLReport)
	if err != nil {
		return nil, err
	}
	if hcl.Type != typ {
		return nil, fmt.Errorf("%w: report type %d, want %d", ErrHCLFormat, hcl.Type, typ)
	}
	ak, err := hcl.AKPub()
	if err != nil {
		return nil, err
	}
	q := &ev.TPMQuote
	rep, err := tpm.NewReport(ak, q.Message, tpm.RSASSASHA256(q.Signature), q.PCRs)
	if err != nil {
		return nil, err
	}
	if err := tpm.VerifyQuote(rep); err != nil {
		return nil, err
	}
	if want.ReportData != nil && !bytes.Equal(rep.Attest.ExtraData, want.ReportData) {
		return nil, fmt.Errorf("%w: quote has %x", ErrNonce, rep.Attest.ExtraData)
	}
	if ev.Version >= 2 && want.ReportData != nil {
		user, err := hcl.UserData()
		if err != nil {
			return nil, err
		}
		if !bytes.HasPrefix(user, want.ReportData) {
			return nil, fmt.Errorf("%w: %x", ErrUserData, user)
		}
	}
	if err := tpm.CheckInitData(rep, want.InitDataDigest); err != nil {
		return nil, err
	}
	return &Verified{HCL: hcl, TPM: rep}, nil
}

// addClaims adds the vTPM's claims as Trustee names them: "tpm" with the
// quoted PCRs ("pcr00".."pcr23"), "report_data" the quote's nonce and
// "init_data" PCR 8, replacing the hardware report's.
func addClaims(c verifier.Claims, rep *tpm.Report) {
	pcrs := map[string]any{}
	for _, i := range rep.Quoted() {
		pcrs[fmt.Sprintf("pcr%02d", i)] = hex.EncodeToString(rep.PCRs[i])
	}
	c["tpm"] = pcrs
	c["report_data"] = hex.EncodeToString(rep.Attest.ExtraData)
	if pcr, ok := rep.QuotedPCR(tpm.InitDataPCR); ok {
		c["init_data"] = hex.EncodeToString(pcr)
	} else {
		delete(c, "init_data")
	}
}
