package sgx

import (
	"context"
	"testing"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/internal/testutil"
)

// BenchmarkVerifySGX measures Evaluate of a quote with cached chain and
// collateral: decoding, parsing, the quote and QE report signatures,
// revocation, TCB evaluation and claims. Run with -cpu 1.
func BenchmarkVerifySGX(b *testing.B) {
	p := newTestPKI(b)
	v := p.verifier(b, sgxCollateral(b), true)
	ev := evidenceJSON(p.quote(b, nil))
	ctx := context.Background()
	want := verifier.Expected{ReportData: []byte("test")}
	testutil.Bench(b, func() error {
		_, err := v.Evaluate(ctx, ev, want)
		return err
	})
}

// BenchmarkSGXSignatureFloor does only the ECDSA P-256 verifications an
// SGX quote needs, on pre-parsed, pre-hashed inputs: quote and QE report
// signatures, PCK leaf and CA certificates, TCB signing certificate, TCB
// info and QE identity signatures, PCK and root CA CRLs. It is the floor
// BenchmarkVerifySGX is compared with.
func BenchmarkSGXSignatureFloor(b *testing.B) {
	p := newTestPKI(b)
	checks := p.FloorChecks(b, &mustParse(b, p.quote(b, nil)).Quote, sgxCollateral(b))
	b.ReportAllocs()
	for b.Loop() {
		for _, c := range checks {
			if !c.Verify() {
				b.Fatalf("%s does not verify", c.Name)
			}
		}
	}
}
