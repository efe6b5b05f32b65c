package sgx

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/dcap"
	"github.com/cocoon-cc/cocoon/attestation/verifier/dcap/dcaptest"
	"github.com/cocoon-cc/cocoon/internal/testutil"
)

// realTime is inside the validity of the Occlum quote's real PCK chain.
var realTime = time.Date(2025, time.November, 1, 0, 0, 0, 0, time.UTC)

// occlumQuote is Trustee's real SGX quote (v3) of an Occlum enclave. It is a
// debug enclave, its report data is "test".
func occlumQuote(t testing.TB) []byte { return testutil.TrusteeVerifierData(t, "occlum_quote.dat") }

func mustParse(t testing.TB, b []byte) *Quote {
	q, err := ParseQuote(b)
	noError(t, err)
	return q
}

func noError(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// marshalQuote serializes q, the inverse of ParseQuote.
func marshalQuote(q *Quote) []byte {
	return append(slices.Clone(q.SignedData), dcaptest.MarshalSignatureData(&q.SignatureData, q.Header.Version)...)
}

func evidenceJSON(quote []byte) json.RawMessage {
	b, _ := json.Marshal(map[string]string{"quote": base64.StdEncoding.EncodeToString(quote)})
	return b
}

func evaluate(t testing.TB, v *Verifier, quote []byte, want verifier.Expected) (verifier.Claims, error) {
	t.Helper()
	out, err := v.Evaluate(context.Background(), evidenceJSON(quote), want)
	if err != nil {
		return nil, err
	}
	if len(out) != 1 || out[0].Class != "cpu" {
		t.Fatalf("Evaluate returned %+v, want one cpu claim set", out)
	}
	return out[0].Claims, nil
}

// testPKI is dcaptest's PKI, which also re-signs SGX quotes.
type testPKI struct{ *dcaptest.PKI }

func newTestPKI(t testing.TB) *testPKI {
	return &testPKI{dcaptest.New(t, dcaptest.SGXExtensionOf(t, mustParse(t, occlumQuote(t)).PCKChain))}
}

// quote re-signs the Occlum quote after body edits its enclave report
// (offsets of the report, after the header): new attestation key, QE
// report bound to it and signed by the test PCK key, test PCK chain.
func (p *testPKI) quote(t testing.TB, body func(r []byte)) []byte {
	t.Helper()
	q := mustParse(t, occlumQuote(t))
	signed := slices.Clone(q.SignedData)
	if body != nil {
		body(signed[dcap.HeaderSize:])
	}
	return p.SignQuote(t, signed, &q.SignatureData)
}

// verifier verifies against the test PKI and collateral c at dcaptest.Time.
func (p *testPKI) verifier(t testing.TB, c *dcaptest.Collateral, allowDebug bool) *Verifier {
	t.Helper()
	v, err := New(Options{AllowDebug: allowDebug, DCAP: dcap.Options{
		CollateralDir: p.Dir(t, c), Roots: []*x509.Certificate{p.Root}, Now: func() time.Time { return dcaptest.Time }}})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Offsets in the enclave report.
const (
	offAttributes = 48
	offConfigID   = 192
	offReportData = 320
)

// sgxCollateral is SGX collateral for the Occlum quote's platform and QE.
func sgxCollateral(t testing.TB) *dcaptest.Collateral {
	q := mustParse(t, occlumQuote(t))
	return dcaptest.SGXCollateral(t, testutil.TrusteeVerifierData(t, "tcbInfo.json"), testutil.TrusteeVerifierData(t, "enclaveIdentity.json"), q.PCKChain, &q.QEReport)
}
