package snp_test

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-sev-guest/verify/trust"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/snp"
	"github.com/cocoon-cc/cocoon/attestation/verifier/snp/snptest"
	"github.com/cocoon-cc/cocoon/internal/testutil"
)

// TestRoots: with Options.Roots the verifier trusts a test chain instead
// of AMD's, for a report re-signed with live report data, and nothing
// else: not that chain by default, not AMD's chain, not another product.
func TestRoots(t *testing.T) {
	raw := fixture(t, "attestation-service/tests/e2e/evidence.json")
	genuine, err := snp.ParseEvidence(raw)
	if err != nil {
		t.Fatal(err)
	}
	pki := snptest.New(t, genuine.Report.Bytes())
	rd := []byte("a live nonce")
	signed := pki.Sign(t, genuine.Report.Bytes(), rd)
	want := verifier.Expected{ReportData: rd}
	ctx := context.Background()
	test, err := snp.New(snp.Options{DisableKDS: true, Roots: pki.Roots()})
	if err != nil {
		t.Fatal(err)
	}
	amd, err := snp.New(snp.Options{DisableKDS: true})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := test.VerifyReport(ctx, signed, snp.CertChain{VCEK: pki.VCEK()}, want); err != nil || c["report_data"] == nil {
		t.Fatalf("test chain with its roots: %v", err)
	}
	if _, err := test.VerifyReport(ctx, signed, snp.CertChain{VCEK: pki.VCEK()}, verifier.Expected{ReportData: []byte("another")}); !errors.Is(err, verifier.ErrReportDataMismatch) {
		t.Errorf("another nonce: %v", err)
	}
	tampered := append([]byte(nil), signed...)
	tampered[0x90] ^= 1 // MEASUREMENT
	if _, err := test.VerifyReport(ctx, tampered, snp.CertChain{VCEK: pki.VCEK()}, want); !errors.Is(err, snp.ErrReportSignature) {
		t.Errorf("tampered: %v", err)
	}
	if _, err := amd.VerifyReport(ctx, signed, snp.CertChain{VCEK: pki.VCEK()}, want); !errors.Is(err, snp.ErrEndorsementKeySignature) {
		t.Errorf("test chain with AMD's roots: %v", err)
	}
	if _, err := test.Verify(ctx, genuine.Report, genuine.Certs, verifier.Expected{}); !errors.Is(err, verifier.ErrEndorsement) {
		t.Errorf("AMD's chain with test roots: %v", err)
	}
	milan := fixture(t, "deps/verifier/test_data/snp/test-report.bin")
	vcek := fixture(t, "deps/verifier/test_data/snp/test-vcek.der")
	if _, err := test.VerifyReport(ctx, milan, snp.CertChain{VCEK: vcek}, verifier.Expected{}); !errors.Is(err, snp.ErrUntrustedRoot) {
		t.Errorf("a product without a root: %v", err)
	}
}

// TestRootsRefused: roots that are not an ARK with the ASK it signed are
// a configuration error.
func TestRootsRefused(t *testing.T) {
	raw := fixture(t, "deps/verifier/test_data/snp/test-report.bin")
	ask, ark := splitPEM(t, snptest.New(t, raw).Roots())
	_, amdARK := splitPEM(t, trust.AskArkMilanVcekBytes)
	for name, roots := range map[string][]byte{
		"not PEM":            []byte("roots"),
		"no ARK":             ask,
		"ARK without ASK":    ark,
		"ASK of another ARK": append(ask, amdARK...),
		"ARK twice":          append(append(ask, ark...), ark...),
		"trailing garbage":   append(append(ask, ark...), "x"...),
	} {
		if _, err := snp.New(snp.Options{DisableKDS: true, Roots: roots}); !errors.Is(err, snp.ErrCertificate) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// splitPEM splits a chain of two PEM certificates.
func splitPEM(t *testing.T, b []byte) (first, second []byte) {
	block, rest := pem.Decode(b)
	if block == nil {
		t.Fatal("no PEM")
	}
	return b[:len(b)-len(rest)], bytes.TrimSpace(rest)
}

func fixture(t *testing.T, rel string) []byte {
	b, err := os.ReadFile(filepath.Join(testutil.Fixtures(t), "trustee", rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
