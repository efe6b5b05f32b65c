package azsnpvtpm

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/azvtpm"
	"github.com/cocoon-cc/cocoon/attestation/verifier/snp"
	"github.com/cocoon-cc/cocoon/attestation/verifier/tpm"
	"github.com/cocoon-cc/cocoon/internal/testutil"
)

// fixture reads Trustee's Azure SNP test data.
func fixture(t testing.TB, name string) []byte {
	return testutil.TrusteeVerifierData(t, "az-snp-vtpm/"+name)
}

func newVerifier(t testing.TB) *azvtpm.Verifier {
	s, err := snp.New(snp.Options{DisableKDS: true})
	if err != nil {
		t.Fatal(err)
	}
	return New(s)
}

// v2ReportData is the report data Trustee's test of evidence-v2.json gives.
const v2ReportData = "982f5c6e45df0ed3f10b6f60b02f0c8390e281300f3805e2279c16168cd6ae9aa398f647caa2338748cd0fd9f5f819ef"

func mustHex(t testing.TB, s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// expectedV2 is what evidence-v2.json binds.
func expectedV2(t testing.TB) verifier.Expected {
	return verifier.Expected{ReportData: mustHex(t, v2ReportData)}
}

// TestRealEvidence verifies Trustee's captured evidence of every version
// with the claims Trustee's own tests expect.
func TestRealEvidence(t *testing.T) {
	v := newVerifier(t)
	for _, tc := range []struct {
		file, reportData, pcr0 string
	}{
		{"evidence-v0.json", hex.EncodeToString([]byte("challenge")), "e15c44796beabf46abcec7c57e590942041e47497e4ec27571c8b7664f48dced"},
		{"evidence-v1.json", hex.EncodeToString([]byte("challenge")), "e15c44796beabf46abcec7c57e590942041e47497e4ec27571c8b7664f48dced"},
		{"evidence-v2.json", v2ReportData, "84275b2f4312cd4fc6cbe6b152ad3c3683e513d9f1e23c34fca160c8cca7a6a7"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			out, err := v.Evaluate(context.Background(), fixture(t, tc.file), verifier.Expected{ReportData: mustHex(t, tc.reportData)})
			if err != nil {
				t.Fatal(err)
			}
			c := out[0].Claims
			if c["report_data"] != tc.reportData || c["tpm"].(map[string]any)["pcr00"] != tc.pcr0 {
				t.Errorf("report_data %v, pcr00 %v", c["report_data"], c["tpm"].(map[string]any)["pcr00"])
			}
			t.Logf("%v", c)
		})
	}
}

// v1 is the decoded evidence-v1.json and the report data it binds.
func v1(t testing.TB) (*azvtpm.Evidence, verifier.Expected) {
	ev, err := azvtpm.ParseEvidence(fixture(t, "evidence-v1.json"))
	if err != nil {
		t.Fatal(err)
	}
	return ev, verifier.Expected{ReportData: []byte("challenge")}
}

// TestRefusals: each check refuses with its own error.
func TestRefusals(t *testing.T) {
	v := newVerifier(t)
	other := fixture(t, "../snp/test-vcek.der")
	tdx, err := azvtpm.ParseEvidence(fixture(t, "../az-tdx-vtpm/evidence-v0.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		edit func(ev *azvtpm.Evidence, want *verifier.Expected)
		err  error
	}{
		{"wrong nonce", func(_ *azvtpm.Evidence, w *verifier.Expected) { w.ReportData = []byte("egnellahc") }, azvtpm.ErrNonce},
		{"version 2 user data", func(ev *azvtpm.Evidence, _ *verifier.Expected) { ev.Version = 2 }, azvtpm.ErrUserData},
		{"initdata", func(_ *azvtpm.Evidence, w *verifier.Expected) { w.InitDataDigest = make([]byte, 32) }, verifier.ErrInitDataMismatch},
		{"another chip's VCEK", func(ev *azvtpm.Evidence, _ *verifier.Expected) { ev.VCEK = other }, snp.ErrReportSignature},
		{"no VCEK", func(ev *azvtpm.Evidence, _ *verifier.Expected) { ev.VCEK = nil }, snp.ErrNoEndorsementKey},
		{"another vTPM's quote", func(ev *azvtpm.Evidence, _ *verifier.Expected) { ev.TPMQuote = tdx.TPMQuote }, tpm.ErrQuoteSignature},
		{"a TDX HCL report", func(ev *azvtpm.Evidence, _ *verifier.Expected) { ev.HCLReport = tdx.HCLReport }, azvtpm.ErrHCLFormat},
		{"PCR value", func(ev *azvtpm.Evidence, _ *verifier.Expected) { ev.TPMQuote.PCRs[3][0] ^= 1 }, tpm.ErrPCRDigest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev, want := v1(t)
			tc.edit(ev, &want)
			if _, err := v.Verify(context.Background(), ev, want); !errors.Is(err, tc.err) {
				t.Errorf("%v, want %v", err, tc.err)
			}
		})
	}
	// After the VCEK expired.
	late, err := snp.New(snp.Options{DisableKDS: true, Now: func() time.Time { return time.Date(2060, 1, 1, 0, 0, 0, 0, time.UTC) }})
	if err != nil {
		t.Fatal(err)
	}
	ev, want := v1(t)
	if _, err := New(late).Verify(context.Background(), ev, want); !errors.Is(err, snp.ErrCertExpired) {
		t.Errorf("expired VCEK: %v, want ErrCertExpired", err)
	}
}

// TestTamper flips every byte the evidence's signatures cover: the SNP
// report and the runtime data in the HCL report, the quote's message and
// signature, the PCRs. The HCL header and the runtime data's header are
// covered by nothing (Trustee reads only their type and sizes), so they
// are left out.
func TestTamper(t *testing.T) {
	v := newVerifier(t)
	ev, want := v1(t)
	hcl, err := azvtpm.ParseHCLReport(ev.HCLReport)
	if err != nil {
		t.Fatal(err)
	}
	flipAll := func(name string, b []byte) {
		for i := range b {
			b[i] ^= 0xff
			_, err := v.Verify(context.Background(), ev, want)
			b[i] ^= 0xff
			if err == nil {
				t.Fatalf("%s byte %d flipped: verified", name, i)
			}
		}
	}
	flipAll("SNP report", hcl.HWReport)
	flipAll("runtime data", hcl.VarData)
	flipAll("quote message", ev.TPMQuote.Message)
	flipAll("quote signature", ev.TPMQuote.Signature)
	for i := range ev.TPMQuote.PCRs {
		flipAll(fmt.Sprintf("PCR %d", i), ev.TPMQuote.PCRs[i])
	}
}
