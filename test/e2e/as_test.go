package e2e

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	tdxtesting "github.com/google/go-tdx-guest/testing"
	tdxdata "github.com/google/go-tdx-guest/testing/testdata"

	"github.com/cocoon-cc/cocoon/attestation/verifier/snp/snptest"
	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/cocoon-cc/cocoon/kbs/client"
	"github.com/cocoon-cc/cocoon/protocol"
)

// attestationService runs the attestation-service binary.
func attestationService(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(bin(t, "attestation-service"), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("%v: %s", err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

func TestVerifyOfflineSNP(t *testing.T) {
	fx := filepath.Join(testutil.Fixtures(t), "trustee")
	certs := t.TempDir()
	vcek, _ := os.ReadFile(filepath.Join(fx, "deps/verifier/test_data/snp/test-vcek.der"))
	os.WriteFile(filepath.Join(certs, "vcek.der"), vcek, 0o600)
	report := filepath.Join(fx, "deps/verifier/test_data/snp/test-report.bin")

	for name, args := range map[string][]string{
		"trustee-json": {"--evidence", filepath.Join(fx, "attestation-service/tests/e2e/evidence.json")},
		"raw+certs":    {"--evidence", report, "--certs", certs},
	} {
		out, err := attestationService(t, append([]string{"verify", "--tee", "snp"}, args...)...)
		if err != nil || !strings.Contains(out, "evidence verified") || !strings.Contains(out, `"measurement"`) {
			t.Errorf("%s: genuine evidence: err=%v\n%s", name, err, out)
		}
	}

	raw, _ := os.ReadFile(report)
	for _, off := range []int{0x00, 0x38, 0x50, 0x90, 0x1a0, 0x2a0} {
		bad := bytes.Clone(raw)
		bad[off] ^= 1
		path := filepath.Join(t.TempDir(), "report.bin")
		os.WriteFile(path, bad, 0o600)
		_, err := attestationService(t, "verify", "--tee", "snp", "--evidence", path, "--certs", certs)
		if err == nil {
			t.Errorf("byte 0x%x flipped: accepted", off)
		} else if strings.Count(strings.TrimSpace(err.Error()), "\n") > 0 {
			t.Errorf("byte 0x%x flipped: reason is not one line: %v", off, err)
		}
	}
	if _, err := attestationService(t, "verify", "--tee", "snp", "--evidence", report, "--certs", certs,
		"--report-data", strings.Repeat("00", 64)); err == nil || !strings.Contains(err.Error(), "report data") {
		t.Errorf("report data mismatch: %v", err)
	}
	if _, err := attestationService(t, "verify", "--tee", "tdx", "--evidence", report); err == nil {
		t.Error("an SNP report passed as TDX evidence")
	}

	// A raw report of a test chain verifies with --snp-roots trusting it,
	// and only then.
	pki := snptest.New(t, raw)
	testCerts, roots, signed := t.TempDir(), filepath.Join(t.TempDir(), "roots.pem"), filepath.Join(t.TempDir(), "report.bin")
	os.WriteFile(filepath.Join(testCerts, "vcek.der"), pki.VCEK(), 0o600)
	os.WriteFile(roots, pki.Roots(), 0o600)
	os.WriteFile(signed, pki.Sign(t, raw, []byte("raw")), 0o600)
	args := []string{"verify", "--tee", "snp", "--evidence", signed, "--certs", testCerts}
	if out, err := attestationService(t, append(args, "--snp-roots", roots)...); err != nil || !strings.Contains(out, "evidence verified") {
		t.Errorf("raw report of the test chain with --snp-roots: err=%v\n%s", err, out)
	}
	if _, err := attestationService(t, args...); err == nil {
		t.Error("raw report of the test chain verified without --snp-roots")
	}
}

func TestReferenceValuesFromInitData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "initdata.toml")
	os.WriteFile(path, []byte("version = \"0.1.0\"\nalgorithm = \"sha256\"\n[data]\n\"aa.toml\" = \"\"\n"), 0o600)
	out, err := attestationService(t, "reference-values", "--init-data", path)
	if err != nil || !strings.Contains(out, "snp_host_data") || !strings.Contains(out, "tpm_pcr08") {
		t.Fatalf("reference-values: %v\n%s", err, out)
	}
}

// TestKBSWithRemoteAttestationService runs the standalone attestation
// service and a KBS that uses it over its REST API: the secret is released
// only once the service's policy appraises the guest affirming.
func TestKBSWithRemoteAttestationService(t *testing.T) {
	asData := t.TempDir()
	asCfg, asURL := kbsConfig(t, asData, "http", "")
	startProcess(t, "attestation-service", asURL, nil, "serve", "--config", asCfg)

	kbsData := t.TempDir()
	cfg, url := kbsConfig(t, kbsData, "http", fmt.Sprintf("[attestation_service]\ntype = \"coco_as_restful\"\nas_addr = %q\n", asURL))
	k := startKBS(t, cfg, url, kbsData, nil)
	admin := []string{"--url", url, "config", "--auth-private-key", k.adminKey()}
	setResource(t, []string{"--url", url}, k.adminKey(), "default/key/remote", []byte("via remote AS"))
	mustClient(t, append(admin, "set-resource-policy", "--affirming")...)

	if _, err := kbsClient(t, "--url", url, "get-resource", "--path", "default/key/remote"); err == nil ||
		!strings.Contains(err.Error(), "PolicyDeny") {
		t.Fatalf("released before the AS knew any reference value: %v", err)
	}
	// The KBS refuses to manage what the remote service owns.
	if _, err := kbsClient(t, append(admin, "set-sample-reference-value", "svn", "1")...); err == nil {
		t.Fatal("the KBS accepted a reference value its remote AS owns")
	}

	// Register the reference values on the attestation service itself.
	key := loadKey(t, filepath.Join(asData, "admin", "private.key"))
	for name, v := range map[string]string{"launch_digest": `["abcde"]`, "svn": `["1"]`, "major_version": `1`, "minimum_minor_version": `1`} {
		registerRV(t, asURL, key, name, v)
	}
	out := mustClient(t, "--url", url, "get-resource", "--path", "default/key/remote")
	if b, _ := base64.StdEncoding.DecodeString(out); string(b) != "via remote AS" {
		t.Fatalf("get-resource = %q", out)
	}
}

func registerRV(t *testing.T, asURL string, key crypto.Signer, name, value string) {
	t.Helper()
	tok, err := client.SignAdminToken(key, protocol.AdminRole, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	payload := base64.StdEncoding.EncodeToString([]byte(fmt.Sprintf(`{%q: %s}`, name, value)))
	body := fmt.Sprintf(`{"version":"0.1.0","type":"sample","payload":%q}`, payload)
	if err := client.Do(context.Background(), http.DefaultClient, http.MethodPost, asURL+"/reference-value", tok,
		strings.NewReader(body), nil); err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
}

func loadKey(t *testing.T, path string) crypto.Signer {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k.(crypto.Signer)
}

// TestVerifyOfflineTDX verifies Trustee's real v4 quote with Intel's saved
// collateral (go-tdx-guest's testdata) as of the day the collateral was
// valid, and rejects it when a byte is flipped or the time is today.
func TestVerifyOfflineTDX(t *testing.T) {
	dir := t.TempDir()
	for name, b := range map[string][]byte{
		"tcb-info-50806F000000.json":              tdxdata.TcbInfoBody,
		"tcb-info-50806F000000.json.issuer-chain": []byte(tdxtesting.TcbInfoHeader["Tcb-Info-Issuer-Chain"][0]),
		"qe-identity.json":                        tdxdata.QeIdentityBody,
		"qe-identity.json.issuer-chain":           []byte(tdxtesting.QeIdentityHeader["Sgx-Enclave-Identity-Issuer-Chain"][0]),
		"pck-crl-platform.der":                    tdxdata.PckCrlBody,
		"root-ca-crl.der":                         tdxdata.RootCrlBody,
	} {
		os.WriteFile(filepath.Join(dir, name), b, 0o600)
	}
	quote := filepath.Join(testutil.Fixtures(t), "trustee/deps/verifier/test_data/tdx_quote_4.dat")
	args := []string{"verify", "--tee", "tdx", "--evidence", quote, "--collateral", dir, "--time", "2023-07-01T01:00:00Z"}
	out, err := attestationService(t, args...)
	if err != nil || !strings.Contains(out, `"tcb_status":"UpToDate"`) || !strings.Contains(out, `"mr_td"`) {
		t.Fatalf("genuine quote: %v\n%s", err, out)
	}
	if _, err := attestationService(t, args[:len(args)-2]...); err == nil {
		t.Error("collateral expired today, yet the quote verified")
	}
	raw, _ := os.ReadFile(quote)
	raw[200] ^= 1
	bad := filepath.Join(t.TempDir(), "quote.dat")
	os.WriteFile(bad, raw, 0o600)
	if _, err := attestationService(t, "verify", "--tee", "tdx", "--evidence", bad, "--collateral", dir, "--time", "2023-07-01T01:00:00Z"); err == nil {
		t.Error("a tampered quote verified")
	}
}

// TestVerifyRefusals: verify refuses what it cannot honour, each time with
// one line: an endorsement or collateral directory that is not there,
// another TEE's evidence passed as the sample TEE's, a policy that does
// not compile.
func TestVerifyRefusals(t *testing.T) {
	fx := filepath.Join(testutil.Fixtures(t), "trustee")
	snpJSON := filepath.Join(fx, "attestation-service/tests/e2e/evidence.json")
	report := filepath.Join(fx, "deps/verifier/test_data/snp/test-report.bin")
	tpm := filepath.Join(fx, "deps/verifier/test_data/tpm_evidence.json")
	quote := filepath.Join(fx, "deps/verifier/test_data/tdx_quote_4.dat")
	dir := t.TempDir()
	badPolicy := filepath.Join(dir, "bad.rego")
	os.WriteFile(badPolicy, []byte("package policy\nimport rego.v1\ntrust_claims := {\"hardware\": x} if { x := input.nope[0] + \"a\" }\nallow if {{\n"), 0o600)
	sample := filepath.Join(dir, "sample.json")
	ev, _ := json.Marshal(map[string]string{"svn": "1", "report_data": "AAAA"})
	os.WriteFile(sample, ev, 0o600)
	for name, c := range map[string]struct {
		args []string
		want string
	}{
		"missing --certs":          {[]string{"--tee", "snp", "--evidence", report, "--certs", filepath.Join(dir, "nothere")}, "--certs"},
		"--certs a file":           {[]string{"--tee", "snp", "--evidence", report, "--certs", report}, "not a directory"},
		"missing --collateral":     {[]string{"--tee", "tdx", "--evidence", quote, "--collateral", filepath.Join(dir, "nothere")}, "--collateral"},
		"SNP evidence as sample":   {[]string{"--tee", "sample", "--evidence", snpJSON}, "sample"},
		"TPM evidence as sample":   {[]string{"--tee", "sample", "--evidence", tpm}, "sample"},
		"policy that is not Rego":  {[]string{"--tee", "sample", "--evidence", sample, "--policy", badPolicy}, "rego_parse_error"},
		"evidence that is missing": {[]string{"--tee", "sample", "--evidence", filepath.Join(dir, "nothere")}, "no such file"},
	} {
		out, err := attestationService(t, append([]string{"verify"}, c.args...)...)
		if err == nil {
			t.Errorf("%s: accepted:\n%s", name, out)
			continue
		}
		msg := strings.TrimSpace(err.Error())
		if strings.Contains(msg, "\n") || !strings.Contains(msg, c.want) {
			t.Errorf("%s: want one line with %q, got:\n%s", name, c.want, msg)
		}
	}
	// The sample TEE's own evidence still verifies.
	if out, err := attestationService(t, "verify", "--tee", "sample", "--evidence", sample); err != nil || !strings.Contains(out, "evidence verified") {
		t.Errorf("sample evidence: %v\n%s", err, out)
	}
}
