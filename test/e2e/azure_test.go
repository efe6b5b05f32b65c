package e2e

import (
	"context"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	vazvtpm "github.com/cocoon-cc/cocoon/attestation/verifier/azvtpm"

	"github.com/cocoon-cc/cocoon/attestation/verifier/dcap"
	"github.com/cocoon-cc/cocoon/attestation/verifier/dcap/dcaptest"
	"github.com/cocoon-cc/cocoon/attestation/verifier/tdx"
	"github.com/cocoon-cc/cocoon/guest/attester/aztdxvtpm"
	"github.com/cocoon-cc/cocoon/guest/attester/azvtpm"
	"github.com/cocoon-cc/cocoon/guest/attester/azvtpm/azvtpmtest"
	"github.com/cocoon-cc/cocoon/guest/attester/tpm/swtpmtest"
	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/cocoon-cc/cocoon/protocol"
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

// paravisor plays Azure's paravisor in front of a real az-tdx-vtpm
// attester on swtpm: before the attester reads the HCL report, it writes
// the one the paravisor would make of the report data (naming the vTPM's
// AK, carrying the report data, its TD report binding both).
type paravisor struct {
	t   *testing.T
	att *azvtpm.Attester
}

func (p paravisor) Tee() protocol.Tee { return p.att.Tee() }

func (p paravisor) Evidence(ctx context.Context, reportData []byte) (json.RawMessage, error) {
	hcl := azvtpmtest.SyntheticHCLReport(p.t, vazvtpm.ReportTDX, p.att.AKPublic().(*rsa.PublicKey), reportData)
	if err := p.att.WriteNV(azvtpm.HCLReportIndex, hcl); err != nil {
		return nil, err
	}
	return p.att.Evidence(ctx, reportData)
}

// TestKBSReleasesToAzTDXvTPM runs the KBS protocol with live az-tdx-vtpm
// evidence: the real attester on swtpm, a stand-in IMDS quoting the TD
// report it is sent with Trustee's Azure TD quote re-signed by the DCAP
// test PKI, and the kbs binary trusting that PKI. Nothing is released until
// the owner registers the TD's measurements under Trustee's names.
func TestKBSReleasesToAzTDXvTPM(t *testing.T) {
	base, err := tdx.ParseQuote(testutil.TrusteeVerifierData(t, "az-tdx-vtpm/td-quote.bin"))
	if err != nil {
		t.Fatal(err)
	}
	pki := dcaptest.New(t, dcaptest.SGXExtensionOf(t, base.PCKChain))
	coll := dcaptest.TDXCollateral(t, testutil.TrusteeVerifierData(t, "tcbInfo.json"),
		testutil.TrusteeVerifierData(t, "enclaveIdentity.json"), base.PCKChain, base.Body.TeeTCBSVN)
	coll.Redate(time.Now())
	root := filepath.Join(t.TempDir(), "root.pem")
	if err := os.WriteFile(root, dcaptest.PEMCerts(pki.Root), 0o600); err != nil {
		t.Fatal(err)
	}
	imds := azvtpmtest.IMDS(t, "/acc/tdquote", func(body []byte) any {
		var req struct{ Report string }
		json.Unmarshal(body, &req)
		report, _ := base64.RawURLEncoding.DecodeString(req.Report)
		signed := slices.Clone(base.SignedData)
		if len(report) == vazvtpm.TDReportSize {
			copy(signed[dcap.HeaderSize+520:dcap.HeaderSize+584], report[128:192]) // REPORT_DATA
		}
		return map[string]string{"quote": base64.RawURLEncoding.EncodeToString(pki.SignQuote(t, signed, &base.SignatureData))}
	})
	sim := swtpmtest.Start(t)
	att, err := aztdxvtpm.Open(azvtpm.Options{TPM: sim.Addr, IMDS: imds, Refresh: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer att.Close()

	releasedOnceRegistered(t, pki.Dir(t, coll), root, paravisor{t, att}, map[string]string{
		"tdx_pcr11": strings.Repeat("00", 32), // swtpm's PCR 11, never extended
		"mr_td":     hex.EncodeToString(base.Body.MrTD[:]),
		"xfam":      hex.EncodeToString(base.Body.XFAM[:]),
	})
}
