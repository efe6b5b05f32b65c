package azvtpm

import (
	"errors"
	"testing"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/internal/testutil"
)

func FuzzParseEvidence(f *testing.F) {
	for _, name := range []string{"az-snp-vtpm/evidence-v1.json", "az-snp-vtpm/evidence-v2.json"} {
		f.Add(testutil.TrusteeVerifierData(f, name))
	}
	f.Add([]byte(`{"tpm_quote":{"signature":[1],"message":[2],"pcrs":[[3]]},"hcl_report":[4],"td_quote":[5]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := ParseEvidence(b)
		if err != nil {
			if !errors.Is(err, verifier.ErrMalformedEvidence) {
				t.Fatalf("error %v is not a malformed evidence error", err)
			}
			return
		}
		VerifyVTPM(ev, ReportSNP, verifier.Expected{ReportData: []byte("challenge"), InitDataDigest: make([]byte, 32)})
	})
}

func FuzzParseHCLReport(f *testing.F) {
	f.Add(testutil.TrusteeVerifierData(f, "az-snp-vtpm/hcl-report.bin"))
	f.Add(testutil.TrusteeVerifierData(f, "az-tdx-vtpm/hcl-report.bin"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseHCLReport(b)
		if err != nil {
			if !errors.Is(err, ErrHCLFormat) {
				t.Fatalf("error %v is not ErrHCLFormat", err)
			}
			return
		}
		r.AKPub()
		r.UserData()
		r.CheckBinding(r.HWReport)
	})
}
