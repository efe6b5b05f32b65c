package e2e

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/cca/ccatest"
	"github.com/cocoon-cc/cocoon/initdata"
	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/cocoon-cc/cocoon/kbs/client"
	"github.com/cocoon-cc/cocoon/protocol"
)

const ccaData = "trustee/deps/verifier/test_data/cca"

// ccaRIM is the realm initial measurement of Trustee's example token, as
// its README registers it.
const ccaRIM = "rof79/EF5xp4J8tvCJaInHPSvq9IMNT5ywXj6Ww/x7T6oEyvNqJr0JTPnHtzhhfkwYmq7hhN7dpdegPDnb2sfA=="

// TestVerifyOfflineCCA verifies Trustee's example CCA token with the trust
// anchor and reference value stores it ships: its claims, the appraisal
// once the realm's measurement is a reference value, and refusals of a
// flipped byte, another report data and missing stores, each in one line.
func TestVerifyOfflineCCA(t *testing.T) {
	fx := testutil.Fixtures(t)
	token := filepath.Join(fx, ccaData, "misc/cca-example-token.cbor")
	stores := filepath.Join(fx, ccaData, "conf")
	rv := filepath.Join(t.TempDir(), "rv.json")
	os.WriteFile(rv, []byte(`{"cca.realm.cca-realm-initial-measurement":["`+ccaRIM+`"]}`), 0o600)

	out, err := attestationService(t, "verify", "--tee", "cca", "--evidence", token, "--certs", stores)
	if err != nil || !strings.Contains(out, "evidence verified; appraisal warning") || !strings.Contains(out, ccaRIM) {
		t.Fatalf("genuine token without reference values: %v\n%s", err, out)
	}
	out, err = attestationService(t, "verify", "--tee", "cca", "--evidence", token, "--certs", stores, "--reference-values", rv)
	if err != nil || !strings.Contains(out, "evidence verified; appraisal affirming") {
		t.Fatalf("genuine token with its RIM registered: %v\n%s", err, out)
	}

	raw, _ := os.ReadFile(token)
	for _, off := range []int{0x40, 0x300, 0x5c0, 0x700, len(raw) - 10} {
		bad := bytes.Clone(raw)
		bad[off] ^= 1
		path := filepath.Join(t.TempDir(), "token.cbor")
		os.WriteFile(path, bad, 0o600)
		if _, err := attestationService(t, "verify", "--tee", "cca", "--evidence", path, "--certs", stores); err == nil {
			t.Errorf("byte 0x%x flipped: accepted", off)
		} else if strings.Contains(strings.TrimSpace(err.Error()), "\n") {
			t.Errorf("byte 0x%x flipped: reason is not one line: %v", off, err)
		}
	}
	verifyRefusals(t, []string{"verify", "--tee", "cca", "--evidence", token}, map[string]refusal{
		"another report data": {[]string{"--certs", stores, "--report-data", strings.Repeat("00", 64)}, "report data"},
		"no stores":           {nil, "trust anchor"},
		"stores missing":      {[]string{"--certs", t.TempDir()}, "tastore.json"},
	})
}

// refusal is a verify run that must fail: its extra arguments and a word
// of the one-line reason.
type refusal struct {
	args []string
	want string
}

func verifyRefusals(t *testing.T, base []string, cases map[string]refusal) {
	t.Helper()
	for name, c := range cases {
		_, err := attestationService(t, append(append([]string{}, base...), c.args...)...)
		if err == nil || strings.Contains(strings.TrimSpace(err.Error()), "\n") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want one line with %q", name, err, c.want)
		}
	}
}

// ccaIssuer re-issues Trustee's example token's realm part with the RAK
// the platform part vouches for (the fixture has its private key).
func ccaIssuer(t *testing.T) *ccatest.Issuer {
	t.Helper()
	iss, err := ccatest.FromTrustee(filepath.Join(testutil.Fixtures(t), ccaData))
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

// TestKBSReleasesToCCARealm runs the whole protocol against the kbs binary
// with a live nonce: the example token's platform part as captured, its
// realm part re-issued for each challenge with the RAK it vouches for and
// the initdata's digest as personalization value. Nothing is released
// until the owner registers the realm's initial measurement.
func TestKBSReleasesToCCARealm(t *testing.T) {
	fx := testutil.Fixtures(t)
	iss := ccaIssuer(t)
	toml := []byte("version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\n")
	digest, _, err := initdata.Digest(toml)
	if err != nil {
		t.Fatal(err)
	}
	iss.Perso = verifier.Fit(digest, 64)

	data := t.TempDir()
	cfg, url := kbsConfig(t, data, "http", "[attestation_service.verifiers]\ncca_store_dir = \""+filepath.Join(fx, ccaData, "conf")+"\"\n")
	k := startKBS(t, cfg, url, data, nil)
	setResource(t, []string{"--url", url}, k.adminKey(), "default/key/cca", []byte("for the realm"))

	fetch := func(toml []byte) ([]byte, error) {
		return fetchAttested(url, ccatest.Attester{Issuer: iss}, client.Options{InitData: toml}, "default/key/cca")
	}
	var kerr *protocol.Error
	if _, err := fetch(toml); !errors.As(err, &kerr) || kerr.Kind != protocol.KindPolicyDeny {
		t.Fatalf("unregistered realm: %v, want PolicyDeny", err)
	}
	mustClient(t, "--url", url, "config", "--auth-private-key", k.adminKey(),
		"set-sample-reference-value", "cca.realm.cca-realm-initial-measurement", ccaRIM)
	got, err := fetch(toml)
	if err != nil || string(got) != "for the realm" {
		t.Fatalf("registered realm: %q, %v", got, err)
	}
	// Other initdata than the realm was personalized with.
	if _, err := fetch([]byte("version = \"0.1.0\"\nalgorithm = \"sha384\"\n[data]\nx = \"y\"\n")); !errors.As(err, &kerr) || kerr.Kind != protocol.KindAttestation {
		t.Fatalf("other initdata: %v, want AttestationError", err)
	}
}
