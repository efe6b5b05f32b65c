package snp

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/internal/testutil"
)

// sample is a report captured on real hardware with the certificates that
// endorse it.
type sample struct {
	name    string
	raw     []byte
	certs   CertChain
	now     time.Time // a time at which the whole chain is valid
	wantErr error     // what verifying the untouched sample gives
}

// fixture reads a file of the shared Trustee fixtures.
func fixture(t testing.TB, rel string) []byte {
	t.Helper()
	return readTestFile(t, filepath.Join(testutil.Fixtures(t), "trustee", rel))
}

// sevGuestData reads a file of go-sev-guest's verify/testdata.
func sevGuestData(t testing.TB, name string) []byte {
	t.Helper()
	return readTestFile(t, filepath.Join(testutil.ModuleDir(t, "github.com/google/go-sev-guest"), "verify", "testdata", name))
}

func readTestFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const snpData = "deps/verifier/test_data/snp/"

func trusteeEvidence(t testing.TB) []byte {
	return fixture(t, "attestation-service/tests/e2e/evidence.json")
}

// samples are every real report available: Trustee's e2e evidence (Genoa,
// report v3, VCEK in the evidence), Trustee's VCEK- and VLEK-signed Milan
// reports (v2 and v3) and go-sev-guest's Milan report (v2).
func samples(t testing.TB) []sample {
	ev, err := ParseEvidence(trusteeEvidence(t))
	if err != nil {
		t.Fatal(err)
	}
	today := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	return []sample{
		{name: "trustee-e2e-genoa-v3", raw: ev.Report.Bytes(), certs: ev.Certs, now: today},
		{name: "trustee-vcek-milan-v2", raw: fixture(t, snpData+"test-report.bin"),
			certs: CertChain{VCEK: fixture(t, snpData+"test-vcek.der")}, now: today},
		// Captured at VMPL 1: every check passes but the VMPL one. The VLEK
		// expired on 2025-12-10.
		{name: "trustee-vlek-milan-v3", raw: fixture(t, snpData+"test-vlek-report.bin"),
			certs: CertChain{VLEK: fixture(t, snpData+"test-vlek.der")},
			now:   time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC), wantErr: ErrVMPL},
		{name: "go-sev-guest-milan-v2", raw: sevGuestData(t, "attestation.bin"),
			certs: CertChain{VCEK: sevGuestData(t, "vcek.testcer")}, now: today},
	}
}

func at(now time.Time) func() time.Time { return func() time.Time { return now } }

func newVerifier(t testing.TB, o Options) *Verifier {
	t.Helper()
	v, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func writeFile(t testing.TB, path string, b []byte) { testutil.WriteFile(t, path, b) }
