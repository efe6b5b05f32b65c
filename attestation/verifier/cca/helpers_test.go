package cca

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/cocoon-cc/cocoon/attestation/verifier/cca/ccatest"
	"github.com/cocoon-cc/cocoon/internal/testutil"
)

// ccaData is Trustee's CCA test data: an example token, the CPAK and RAK
// private keys it was made with, and the stores that endorse it.
const ccaData = "deps/verifier/test_data/cca"

func fixturePath(t testing.TB, rel string) string {
	t.Helper()
	return filepath.Join(testutil.Fixtures(t), "trustee", rel)
}

func fixture(t testing.TB, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(fixturePath(t, rel))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func exampleToken(t testing.TB) []byte {
	return fixture(t, ccaData+"/misc/cca-example-token.cbor")
}

// fixtureVerifier is configured with the fixture's stores.
func fixtureVerifier(t testing.TB) *Verifier {
	t.Helper()
	ta, rv, err := LoadDir(fixturePath(t, ccaData+"/conf"))
	if err != nil {
		t.Fatal(err)
	}
	return New(Options{TrustAnchors: ta, ReferenceValues: rv})
}

// issuer re-issues the example token's realm part with the fixture's RAK.
func issuer(t testing.TB) *ccatest.Issuer {
	t.Helper()
	i, err := ccatest.FromTrustee(fixturePath(t, ccaData))
	if err != nil {
		t.Fatal(err)
	}
	return i
}

func mustToken(t testing.TB, i *ccatest.Issuer, challenge []byte) []byte {
	t.Helper()
	tok, err := i.Token(challenge)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
