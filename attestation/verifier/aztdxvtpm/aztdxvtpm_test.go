package aztdxvtpm

import (
	"context"
	"crypto/x509"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/azvtpm"
	"github.com/cocoon-cc/cocoon/attestation/verifier/dcap"
	"github.com/cocoon-cc/cocoon/attestation/verifier/dcap/dcaptest"
	"github.com/cocoon-cc/cocoon/attestation/verifier/tdx"
	"github.com/cocoon-cc/cocoon/internal/testutil"
)

// realEvidence is Trustee's captured evidence-v0.json, bound to the nonce
// "challenge".
func realEvidence(t testing.TB) (*azvtpm.Evidence, verifier.Expected) {
	ev, err := azvtpm.ParseEvidence(testutil.TrusteeVerifierData(t, "az-tdx-vtpm/evidence-v0.json"))
	if err != nil {
		t.Fatal(err)
	}
	return ev, verifier.Expected{ReportData: []byte("challenge")}
}

func newVerifier(t testing.TB, o tdx.Options) *azvtpm.Verifier {
	v, err := tdx.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return New(v)
}

// TestRealEvidence checks the captured evidence as far as it goes without
// the Intel collateral of its day: the vTPM quote, nonce and PCRs, the HCL
// binding, and the TD quote's real PCK chain and signatures (verification
// then stops at the collateral it has no copy of).
func TestRealEvidence(t *testing.T) {
	ev, want := realEvidence(t)
	v := newVerifier(t, tdx.Options{CollateralDir: t.TempDir(), Now: func() time.Time { return time.Date(2025, 11, 1, 0, 0, 0, 0, time.UTC) }})
	if _, err := v.Verify(context.Background(), ev, want); !errors.Is(err, dcap.ErrCollateralUnavailable) {
		t.Fatalf("%v, want ErrCollateralUnavailable (everything before it verified)", err)
	}
	vt, err := azvtpm.VerifyVTPM(ev, azvtpm.ReportTDX, want)
	if err != nil {
		t.Fatal(err)
	}
	q, err := tdx.ParseQuote(ev.TDQuote)
	if err != nil {
		t.Fatal(err)
	}
	if err := vt.HCL.CheckBinding(q.Body.ReportData[:]); err != nil {
		t.Fatal(err)
	}
}

// testPKI re-signs the real TD quote (body unchanged, so it still binds
// the HCL report) and signs collateral for its platform.
type testPKI struct {
	*dcaptest.PKI
	coll *dcaptest.Collateral
}

func newTestPKI(t testing.TB) *testPKI {
	q, err := tdx.ParseQuote(testutil.TrusteeVerifierData(t, "az-tdx-vtpm/td-quote.bin"))
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{PKI: dcaptest.New(t, dcaptest.SGXExtensionOf(t, q.PCKChain))}
	p.coll = dcaptest.TDXCollateral(t, testutil.TrusteeVerifierData(t, "tcbInfo.json"),
		testutil.TrusteeVerifierData(t, "enclaveIdentity.json"), q.PCKChain, q.Body.TeeTCBSVN)
	return p
}

func (p *testPKI) evidence(t testing.TB) *azvtpm.Evidence {
	ev, _ := realEvidence(t)
	q, err := tdx.ParseQuote(ev.TDQuote)
	if err != nil {
		t.Fatal(err)
	}
	ev.TDQuote = p.SignQuote(t, q.SignedData, &q.SignatureData)
	return ev
}

func (p *testPKI) verifier(t testing.TB) *azvtpm.Verifier {
	return newVerifier(t, tdx.Options{CollateralDir: p.Dir(t, p.coll), Roots: []*x509.Certificate{p.Root},
		Now: func() time.Time { return dcaptest.Time }})
}

// TestEvaluate verifies the captured evidence whole, its TD quote re-signed
// by the test PKI, with Trustee's claims.
func TestEvaluate(t *testing.T) {
	p := newTestPKI(t)
	ev := p.evidence(t)
	_, want := realEvidence(t)
	claims, err := p.verifier(t).Verify(context.Background(), ev, want)
	if err != nil {
		t.Fatal(err)
	}
	if claims["report_data"] != "6368616c6c656e6765" || claims["tcb_status"] != dcap.StatusUpToDate {
		t.Errorf("report_data %v, tcb_status %v", claims["report_data"], claims["tcb_status"])
	}
	if claims["quote"].(map[string]any)["header"].(map[string]any)["tee_type"] != "81000000" {
		t.Errorf("quote claims: %v", claims["quote"])
	}
	if _, ok := claims["tpm"].(map[string]any)["pcr11"]; !ok {
		t.Errorf("no tpm.pcr11 in %v", claims["tpm"])
	}
	// The JSON of versions 1 and 2 carries the same evidence.
	for version, wantErr := range map[int]error{1: nil, 2: azvtpm.ErrUserData} {
		ev := *ev
		ev.Version = version
		if _, err := p.verifier(t).Verify(context.Background(), &ev, want); !errors.Is(err, wantErr) {
			t.Errorf("version %d: %v, want %v", version, err, wantErr)
		}
	}
}

// TestTamper flips every byte of the TD quote's signed part and of the
// HCL runtime data it binds.
func TestTamper(t *testing.T) {
	p := newTestPKI(t)
	v := p.verifier(t)
	ev := p.evidence(t)
	_, want := realEvidence(t)
	q, err := tdx.ParseQuote(ev.TDQuote)
	if err != nil {
		t.Fatal(err)
	}
	hcl, err := azvtpm.ParseHCLReport(ev.HCLReport)
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"TD quote header and body": ev.TDQuote[:len(q.SignedData)], "HCL runtime data": hcl.VarData} {
		for i := range b {
			b[i] ^= 0xff
			_, err := v.Verify(context.Background(), ev, want)
			b[i] ^= 0xff
			if err == nil {
				t.Fatalf("%s byte %d flipped: verified", name, i)
			}
		}
	}
	// The real quote's TD report is not the one this HCL report binds.
	other := slices.Clone(ev.TDQuote)
	other[dcap.HeaderSize+520] ^= 1 // in REPORT_DATA
	q2, err := tdx.ParseQuote(other)
	if err != nil {
		t.Fatal(err)
	}
	ev.TDQuote = p.SignQuote(t, q2.SignedData, &q2.SignatureData)
	if _, err := v.Verify(context.Background(), ev, want); !errors.Is(err, azvtpm.ErrHCLBinding) {
		t.Errorf("TD quote of other report data: %v, want ErrHCLBinding", err)
	}
}
