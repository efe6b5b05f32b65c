package aztdxvtpm

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"testing"

	"github.com/cocoon-cc/cocoon/attestation/verifier/azvtpm"
	"github.com/cocoon-cc/cocoon/attestation/verifier/tdx"
	"github.com/cocoon-cc/cocoon/internal/testutil"
)

// BenchmarkVerifyAzTDXvTPM is a whole Verify of the captured evidence with
// its TD quote re-signed by the test PKI, collateral and PCK chain cached:
// HCL report, vTPM quote, DCAP quote verification, TCB, bindings, claims.
// Run with -cpu 1.
func BenchmarkVerifyAzTDXvTPM(b *testing.B) {
	p := newTestPKI(b)
	v := p.verifier(b)
	ev := p.evidence(b)
	_, want := realEvidence(b)
	ctx := context.Background()
	testutil.Bench(b, func() error {
		_, err := v.Verify(ctx, ev, want)
		return err
	})
}

// BenchmarkAzTDXvTPMSignatureFloor is only the signature checks the
// evidence needs, on inputs prepared beforehand: the DCAP quote's and its
// collateral's (dcaptest.FloorChecks) and the AK over the vTPM quote.
func BenchmarkAzTDXvTPMSignatureFloor(b *testing.B) {
	p := newTestPKI(b)
	ev := p.evidence(b)
	q, err := tdx.ParseQuote(ev.TDQuote)
	if err != nil {
		b.Fatal(err)
	}
	checks := p.FloorChecks(b, &q.Quote, p.coll)
	_, want := realEvidence(b)
	vt, err := azvtpm.VerifyVTPM(ev, azvtpm.ReportTDX, want)
	if err != nil {
		b.Fatal(err)
	}
	ak := vt.TPM.AK.(*rsa.PublicKey)
	quote := sha256.Sum256(ev.TPMQuote.Message)
	b.ReportAllocs()
	for b.Loop() {
		for _, c := range checks {
			if !c.Verify() {
				b.Fatalf("%s does not verify", c.Name)
			}
		}
		if rsa.VerifyPKCS1v15(ak, crypto.SHA256, quote[:], ev.TPMQuote.Signature) != nil {
			b.Fatal("quote")
		}
	}
}
