package csv

import (
	"context"
	"crypto/sha512"
	"os"
	"testing"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/csv/csvtest"
	"github.com/cocoon-cc/cocoon/internal/testutil"
)

var ctx = context.Background()

const fixture = "../../../../shared/fixtures/trustee/deps/verifier/test_data/csv_evidence.json"

func readFixture(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(fixture)
	if err != nil {
		t.Fatalf("Trustee's CSV evidence: %v", err)
	}
	return b
}

const testSerial = csvtest.Serial

// testVerifier trusts p's HRK; it reaches a KDS only when o names one.
func testVerifier(t testing.TB, p *csvtest.PKI, o Options) *Verifier {
	t.Helper()
	o.HRK = p.HRKCert
	o.DisableKDS = o.DisableKDS || o.KDSURL == ""
	v, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// binding is the report data of a KBS nonce: SHA-384 of the runtime data.
func binding(s string) []byte {
	h := sha512.Sum384([]byte(s))
	return h[:]
}

func writeFile(t testing.TB, path string, b []byte) { testutil.WriteFile(t, path, b) }

func expect(rd []byte) verifier.Expected { return verifier.Expected{ReportData: rd} }
