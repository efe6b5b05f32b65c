package azvtpm

import (
	"bytes"
	"encoding/hex"
	"fmt"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/tpm"
)

// Verified is what Verify established about the vTPM half of evidence.
type Verified struct {
	HCL *HCLReport
	TPM *tpm.Report
}

// Verify checks the vTPM half of evidence, in Trustee's order: the HCL
// report (of type typ) and its attestation key, the quote's signature by
// that key, the PCR digest, the nonce (the expected report data itself),
// in version 2 the HCL user data (starting with the report data), and PCR
// 8 (the initdata digest). The hardware report and its binding of the HCL
// runtime data (HCLReport.CheckBinding) are the caller's.
func Verify(ev *Evidence, typ ReportType, want verifier.Expected) (*Verified, error) {
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

// AddClaims adds the vTPM's claims as Trustee names them: "tpm" with the
// quoted PCRs ("pcr00".."pcr23"), "report_data" the quote's nonce and
// "init_data" PCR 8, replacing the hardware report's.
func AddClaims(c verifier.Claims, rep *tpm.Report) {
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
