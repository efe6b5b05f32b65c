package e2e

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cocoon-cc/cocoon/internal/testutil"
)

// TestVerifyOfflineAzSNPvTPM: attestation-service verify checks Trustee's
// captured Azure SEV-SNP evidence of every version offline (the VCEK
// travels in it, AMD's roots are built in) with its nonce, and refuses a
// wrong nonce and a tampered HCL report.
func TestVerifyOfflineAzSNPvTPM(t *testing.T) {
	dir := filepath.Join(testutil.Fixtures(t), "trustee/deps/verifier/test_data/az-snp-vtpm")
	challenge := hex.EncodeToString([]byte("challenge"))
	for file, nonce := range map[string]string{
		"evidence-v0.json": challenge,
		"evidence-v1.json": challenge,
		"evidence-v2.json": "982f5c6e45df0ed3f10b6f60b02f0c8390e281300f3805e2279c16168cd6ae9aa398f647caa2338748cd0fd9f5f819ef",
	} {
		out, err := attestationService(t, "verify", "--tee", "az-snp-vtpm", "--evidence", filepath.Join(dir, file), "--report-data", nonce)
		if err != nil || !strings.Contains(out, "pcr11") || !strings.Contains(out, "reported_tcb_snp") {
			t.Errorf("%s: %v\n%s", file, err, out)
		}
	}
	v1 := filepath.Join(dir, "evidence-v1.json")
	if _, err := attestationService(t, "verify", "--tee", "az-snp-vtpm", "--evidence", v1, "--report-data", "00"); err == nil || !strings.Contains(err.Error(), "nonce") {
		t.Errorf("wrong nonce: %v", err)
	}
	raw, err := os.ReadFile(v1)
	if err != nil {
		t.Fatal(err)
	}
	// A character of the HCL report's base64, inside the SNP report.
	i := strings.Index(string(raw), `"hcl_report": "`) + len(`"hcl_report": "`) + 400
	raw[i] ^= 'A' ^ 'B'
	bad := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(bad, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := attestationService(t, "verify", "--tee", "az-snp-vtpm", "--evidence", bad, "--report-data", challenge); err == nil {
		t.Error("tampered evidence verified")
	}
}
