package tdx

import (
	"crypto/x509"
	"slices"
	"testing"
	"time"

	"github.com/google/go-tdx-guest/testing/testdata"

	"github.com/cocoon-cc/cocoon/attestation/verifier/dcap"
	"github.com/cocoon-cc/cocoon/attestation/verifier/dcap/dcaptest"
)

// testTime is inside the validity of everything the test PKI issues.
var testTime = dcaptest.Time

// testPKI is dcaptest's PKI, which also re-signs TDX quotes.
type testPKI struct{ *dcaptest.PKI }

func newTestPKI(t testing.TB, sgxExt []byte) *testPKI {
	return &testPKI{dcaptest.New(t, sgxExt)}
}

// sgxExtensionOf returns the SGX extension of a real quote's PCK leaf.
func sgxExtensionOf(t testing.TB, quote []byte) []byte {
	return dcaptest.SGXExtensionOf(t, mustParse(t, quote).PCKChain)
}

func (p *testPKI) verifier(t testing.TB, dir string) *Verifier {
	t.Helper()
	v, err := New(Options{CollateralDir: dir, Roots: []*x509.Certificate{p.Root}, Now: func() time.Time { return testTime }})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// quote re-signs a real quote with the test PKI after mutate edits it: new
// attestation key, QE report bound to it and signed by the test PCK key,
// test PCK chain.
func (p *testPKI) quote(t testing.TB, base []byte, mutate func(*Quote)) []byte {
	t.Helper()
	q := mustParse(t, slices.Clone(base))
	if mutate != nil {
		mutate(q)
	}
	signedLen := dcap.HeaderSize + int(q.BodySize)
	if q.Header.Version == 5 {
		signedLen += 6
	}
	return p.SignQuote(t, marshalQuote(q)[:signedLen], &q.SignatureData)
}

// sampleTestCollateral is go-tdx-guest's sample collateral, for the
// platform of sampleQuote.
func sampleTestCollateral(t testing.TB) *dcaptest.Collateral {
	return dcaptest.NewCollateral(t, dcap.TDX, testdata.TcbInfoBody, testdata.QeIdentityBody, sampleFMSPC)
}
