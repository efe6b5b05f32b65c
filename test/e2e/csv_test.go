package e2e

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cocoon-cc/cocoon/attestation/verifier/csv/csvtest"
	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/cocoon-cc/cocoon/kbs/client"
	"github.com/cocoon-cc/cocoon/protocol"
)

// TestVerifyOfflineCSV: Trustee's evidence from a Hygon machine carries
// only its PEK; offline, verify says the HSK/CEK are missing, and a pair
// of another root is refused at the HSK. A test chip's evidence without
// its pair verifies with the pair the operator puts in --certs, in either
// layout, and its root given with --csv-hrk.
func TestVerifyOfflineCSV(t *testing.T) {
	t.Run("operator pair", func(t *testing.T) {
		p := csvtest.New(t)
		dir := t.TempDir()
		ev, hrk := filepath.Join(dir, "evidence.json"), filepath.Join(dir, "hrk.cert")
		rd := []byte("a nonce's digest")
		os.WriteFile(ev, p.Evidence(t, 2, rd, false), 0o600)
		os.WriteFile(hrk, p.HRKCert, 0o600)
		args := []string{"verify", "--tee", "csv", "--evidence", ev, "--csv-hrk", hrk, "--report-data", hex.EncodeToString(rd)}
		if _, err := attestationService(t, append(args, "--certs", t.TempDir())...); err == nil || !strings.Contains(err.Error(), "no HSK/CEK") {
			t.Errorf("no pair: %v", err)
		}
		perChip, anyChip := t.TempDir(), t.TempDir()
		path := filepath.Join(perChip, "hsk_cek", csvtest.Serial, "hsk_cek.cert")
		os.MkdirAll(filepath.Dir(path), 0o755)
		os.WriteFile(path, p.HSKCEK(), 0o600)
		os.WriteFile(filepath.Join(anyChip, "hsk_cek.cert"), p.HSKCEK(), 0o600)
		for _, certs := range []string{perChip, anyChip} {
			out, err := attestationService(t, append(args, "--certs", certs)...)
			if err != nil || !strings.Contains(out, hex.EncodeToString(p.Measure)) {
				t.Errorf("pair in %s: %v\n%s", certs, err, out)
			}
		}
		if _, err := attestationService(t, "verify", "--tee", "csv", "--evidence", ev, "--certs", perChip); err == nil || !strings.Contains(err.Error(), "HSK not signed by the HRK") {
			t.Errorf("test pair under Hygon's HRK: %v", err)
		}
	})

	ev := filepath.Join(testutil.Fixtures(t), "trustee/deps/verifier/test_data/csv_evidence.json")
	if _, err := attestationService(t, "verify", "--tee", "csv", "--evidence", ev); err == nil || !strings.Contains(err.Error(), "no HSK/CEK") {
		t.Errorf("no HSK/CEK offline: %v", err)
	}
	certs := t.TempDir()
	p := csvtest.New(t)
	path := filepath.Join(certs, "hsk_cek", "KPA64911240507", "hsk_cek.cert")
	os.MkdirAll(filepath.Dir(path), 0o755)
	os.WriteFile(path, p.HSKCEK(), 0o600)
	if _, err := attestationService(t, "verify", "--tee", "csv", "--evidence", ev, "--certs", certs); err == nil || !strings.Contains(err.Error(), "HSK not signed by the HRK") {
		t.Errorf("foreign HSK: %v", err)
	}
}

// TestKBSReleasesOnlyToAffirmingCSV runs the protocol against the real kbs
// binary with CSV evidence of a test chip (the KBS trusts its root): each
// handshake's nonce is in a freshly signed report; nothing is released
// until the owner registers the guest's launch digest.
func TestKBSReleasesOnlyToAffirmingCSV(t *testing.T) {
	p := csvtest.New(t)
	root := filepath.Join(t.TempDir(), "hrk.cert")
	if err := os.WriteFile(root, p.HRKCert, 0o600); err != nil {
		t.Fatal(err)
	}
	// The operator's copy of the chip's HSK/CEK, for guests that send the
	// PEK only.
	certs := t.TempDir()
	pair := filepath.Join(certs, "hsk_cek", csvtest.Serial, "hsk_cek.cert")
	if err := os.MkdirAll(filepath.Dir(pair), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pair, p.HSKCEK(), 0o600); err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	cfg, url := kbsConfig(t, data, "http", fmt.Sprintf("[attestation_service.verifiers]\noffline = true\ncsv_hrk = %q\ncsv_cert_dir = %q\n", root, certs))
	k := startKBS(t, cfg, url, data, nil)
	admin := []string{"--url", url, "config", "--auth-private-key", k.adminKey()}
	setResource(t, []string{"--url", url}, k.adminKey(), "default/key/csv", []byte("for the CSV guest"))

	fetch := func(a csvtest.Attester) ([]byte, error) {
		return fetchAttested(url, a, client.Options{}, "default/key/csv")
	}
	guest := csvtest.Attester{PKI: p, T: t}
	var kerr *protocol.Error
	if _, err := fetch(guest); !errors.As(err, &kerr) || kerr.Kind != protocol.KindPolicyDeny {
		t.Fatalf("unknown launch digest: %v, want PolicyDeny", err)
	}
	mustClient(t, append(admin, "set-sample-reference-value", "csv_measure", hex.EncodeToString(p.Measure))...)
	for _, g := range []csvtest.Attester{guest, {PKI: p, T: t, NoChain: true}} {
		got, err := fetch(g)
		if err != nil || string(got) != "for the CSV guest" {
			t.Fatalf("affirming CSV guest (HSK/CEK in the evidence: %v): %q, %v", !g.NoChain, got, err)
		}
	}
	// A chip whose chain ends in another root does not attest.
	other := csvtest.New(t)
	other.Measure = p.Measure
	if _, err := fetch(csvtest.Attester{PKI: other, T: t}); !errors.As(err, &kerr) || kerr.Kind != protocol.KindAttestation {
		t.Fatalf("foreign chip: %v, want AttestationError", err)
	}
}
