package e2e

import (
	"context"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	vazsnpvtpm "github.com/cocoon-cc/cocoon/attestation/verifier/azsnpvtpm"
	vazvtpm "github.com/cocoon-cc/cocoon/attestation/verifier/azvtpm"
	"github.com/cocoon-cc/cocoon/attestation/verifier/dcap"
	"github.com/cocoon-cc/cocoon/attestation/verifier/dcap/dcaptest"
	"github.com/cocoon-cc/cocoon/attestation/verifier/snp"
	"github.com/cocoon-cc/cocoon/attestation/verifier/snp/snptest"
	"github.com/cocoon-cc/cocoon/attestation/verifier/tdx"
	"github.com/cocoon-cc/cocoon/guest/attester"
	"github.com/cocoon-cc/cocoon/guest/attester/azsnpvtpm"
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

// TestVerifyOfflineAzTDXvTPM: attestation-service verify checks Trustee's
// captured Azure TDX evidence offline with its nonce: the TD quote
// re-signed by the DCAP test PKI (body unchanged, so it still binds the
// HCL report), its collateral and root given with --collateral and
// --dcap-root. It refuses a wrong nonce, a tampered HCL report and, with
// Intel's root (the default), the re-signed quote.
func TestVerifyOfflineAzTDXvTPM(t *testing.T) {
	var ev map[string]json.RawMessage
	if err := json.Unmarshal(testutil.TrusteeVerifierData(t, "az-tdx-vtpm/evidence-v0.json"), &ev); err != nil {
		t.Fatal(err)
	}
	var raw []byte
	if err := json.Unmarshal(ev["td_quote"], &raw); err != nil {
		t.Fatal(err)
	}
	q, err := tdx.ParseQuote(raw)
	if err != nil {
		t.Fatal(err)
	}
	pki := dcaptest.New(t, dcaptest.SGXExtensionOf(t, q.PCKChain))
	coll := pki.Dir(t, dcaptest.TDXCollateral(t, testutil.TrusteeVerifierData(t, "tcbInfo.json"),
		testutil.TrusteeVerifierData(t, "enclaveIdentity.json"), q.PCKChain, q.Body.TeeTCBSVN))
	dir := t.TempDir()
	root := filepath.Join(dir, "root.pem")
	if err := os.WriteFile(root, dcaptest.PEMCerts(pki.Root), 0o600); err != nil {
		t.Fatal(err)
	}
	// Version 0 carries bytes as arrays of numbers.
	numbers := func(b []byte) json.RawMessage {
		n := make([]int, len(b))
		for i, c := range b {
			n[i] = int(c)
		}
		j, _ := json.Marshal(n)
		return j
	}
	write := func(name string, edit func(map[string]json.RawMessage)) string {
		e := maps.Clone(ev)
		e["td_quote"] = numbers(pki.SignQuote(t, q.SignedData, &q.SignatureData))
		edit(e)
		b, _ := json.Marshal(e)
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	good := write("evidence.json", func(map[string]json.RawMessage) {})
	challenge := hex.EncodeToString([]byte("challenge"))
	args := []string{"verify", "--tee", "az-tdx-vtpm", "--collateral", coll, "--dcap-root", root,
		"--time", dcaptest.Time.Format(time.RFC3339), "--evidence"}
	out, err := attestationService(t, append(args, good, "--report-data", challenge)...)
	if err != nil || !strings.Contains(out, "pcr11") || !strings.Contains(out, "mr_td") || !strings.Contains(out, "UpToDate") {
		t.Fatalf("%v\n%s", err, out)
	}
	if _, err := attestationService(t, append(args, good, "--report-data", "00")...); err == nil || !strings.Contains(err.Error(), "nonce") {
		t.Errorf("wrong nonce: %v", err)
	}
	bad := write("bad.json", func(e map[string]json.RawMessage) {
		var hcl []byte
		json.Unmarshal(e["hcl_report"], &hcl)
		hcl[32+vazvtpm.SNPReportSize+20+5] ^= 1 // in the runtime data the TD quote binds
		e["hcl_report"] = numbers(hcl)
	})
	if _, err := attestationService(t, append(args, bad, "--report-data", challenge)...); err == nil {
		t.Error("tampered HCL report verified")
	}
	intel := []string{"verify", "--tee", "az-tdx-vtpm", "--collateral", coll, "--time", dcaptest.Time.Format(time.RFC3339),
		"--evidence", good, "--report-data", challenge}
	if _, err := attestationService(t, intel...); err == nil {
		t.Error("a quote of the test PKI verified with Intel's root")
	}
}

// paravisor plays Azure's paravisor in front of a real Azure attester on
// swtpm: before the attester reads the HCL report, it writes the one the
// paravisor would make of the report data (naming the vTPM's AK, carrying
// the report data, its hardware report binding both). For az-snp-vtpm the
// SNP report is snp's, re-signed by its test chain; for az-tdx-vtpm a TD
// report the stand-in IMDS quotes. One VM's vTPM answers one request at a
// time.
type paravisor struct {
	t   testing.TB
	mu  *sync.Mutex
	att *azvtpm.Attester
	snp *snptest.PKI
	// base is the SNP report re-signed with each report data.
	base []byte
}

func (p paravisor) Tee() protocol.Tee { return p.att.Tee() }

func (p paravisor) Evidence(ctx context.Context, reportData []byte) (json.RawMessage, error) {
	ak := p.att.AKPublic().(*rsa.PublicKey)
	hcl := azvtpmtest.SyntheticHCLReport(p.t, vazvtpm.ReportTDX, ak, reportData)
	if p.snp != nil {
		hcl = azvtpmtest.HCLReport(p.t, vazvtpm.ReportSNP, ak, reportData, func(rd []byte) []byte {
			return p.snp.Sign(p.t, p.base, rd)
		})
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.att.WriteNV(azvtpm.HCLReportIndex, hcl); err != nil {
		return nil, err
	}
	return p.att.Evidence(ctx, reportData)
}

// liveGuest is a guest making evidence for any nonce, the kbs's
// [attestation_service.verifiers] settings and the attestation-service
// verify flags that trust its test chain, and the reference values that
// make its evidence affirming.
type liveGuest struct {
	att       attester.Attester
	verifiers string
	verify    []string
	refs      map[string]string
}

// liveGuests are the live guests of a test chain, by TEE.
var liveGuests = []struct {
	tee   string
	guest func(testing.TB) liveGuest
}{{"sgx", sgxGuest}, {"az-snp-vtpm", azSNPGuest}, {"az-tdx-vtpm", azTDXGuest}}

// TestVerifyOfflineLiveEvidence: attestation-service verify checks live
// SGX, az-snp-vtpm and az-tdx-vtpm evidence with the flags that trust its
// test chain (--snp-roots, --dcap-root, --collateral), and refuses it
// with another nonce or without them.
func TestVerifyOfflineLiveEvidence(t *testing.T) {
	for _, tc := range liveGuests {
		t.Run(tc.tee, func(t *testing.T) {
			g := tc.guest(t)
			nonce := []byte("a live nonce's digest")
			ev, err := g.att.Evidence(context.Background(), nonce)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "evidence.json")
			if err := os.WriteFile(path, ev, 0o600); err != nil {
				t.Fatal(err)
			}
			args := []string{"verify", "--tee", tc.tee, "--evidence", path}
			if out, err := attestationService(t, append(append(args, g.verify...), "--report-data", hex.EncodeToString(nonce))...); err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			if _, err := attestationService(t, append(append(args, g.verify...), "--report-data", "00")...); err == nil {
				t.Error("another nonce verified")
			}
			if _, err := attestationService(t, append(args, "--report-data", hex.EncodeToString(nonce))...); err == nil {
				t.Error("the test chain verified without the flags trusting it")
			}
		})
	}
}

// azSNPGuest is an az-snp-vtpm VM: the real attester on swtpm, the HCL
// report's SNP report Trustee's Azure one re-signed for each nonce by a
// test VCEK (same chip and TCB), which a stand-in IMDS serves, and the kbs
// trusting the test ARK and ASK (snp_roots). The owner reads the reference
// values off the VM's evidence.
func azSNPGuest(t testing.TB) liveGuest {
	captured, err := vazvtpm.ParseEvidence(testutil.TrusteeVerifierData(t, "az-snp-vtpm/evidence-v2.json"))
	if err != nil {
		t.Fatal(err)
	}
	hcl, err := vazvtpm.ParseHCLReport(captured.HCLReport)
	if err != nil {
		t.Fatal(err)
	}
	pki := snptest.New(t, hcl.HWReport)
	roots := filepath.Join(t.TempDir(), "roots.pem")
	if err := os.WriteFile(roots, pki.Roots(), 0o600); err != nil {
		t.Fatal(err)
	}
	vcek := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: pki.VCEK()})
	imds := azvtpmtest.IMDS(t, "/metadata/THIM/amd/certification", func([]byte) any {
		return map[string]string{"vcekCert": string(vcek)}
	})
	sim := swtpmtest.Start(t)
	att, err := azsnpvtpm.Open(azvtpm.Options{TPM: sim.Addr, IMDS: imds, Refresh: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { att.Close() })
	p := paravisor{t: t, mu: &sync.Mutex{}, att: att, snp: pki, base: hcl.HWReport}

	s, err := snp.New(snp.Options{DisableKDS: true, Roots: pki.Roots()})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := p.Evidence(context.Background(), []byte("reference"))
	if err != nil {
		t.Fatal(err)
	}
	out, err := vazsnpvtpm.New(s).Evaluate(context.Background(), ev, verifier.Expected{ReportData: []byte("reference")})
	if err != nil {
		t.Fatal(err)
	}
	c := out[0].Claims
	refs := map[string]string{"snp_pcr11": c["tpm"].(map[string]any)["pcr11"].(string)}
	for name, claim := range map[string]string{
		"measurement": "measurement", "tcb_bootloader": "reported_tcb_bootloader", "tcb_microcode": "reported_tcb_microcode",
		"tcb_snp": "reported_tcb_snp", "tcb_tee": "reported_tcb_tee", "smt_enabled": "platform_smt_enabled",
		"tsme_enabled": "platform_tsme_enabled", "abi_major": "policy_abi_major", "abi_minor": "policy_abi_minor",
		"single_socket": "policy_single_socket", "smt_allowed": "policy_smt_allowed",
	} {
		refs[name] = c[claim].(string)
	}
	return liveGuest{att: p, verifiers: fmt.Sprintf("snp_roots = %q\noffline = true\n", roots),
		verify: []string{"--snp-roots", roots}, refs: refs}
}

// TestKBSReleasesToAzSNPvTPM runs the KBS protocol with live az-snp-vtpm
// evidence (azSNPGuest): nothing is released until the owner registers the
// VM's measurements under Trustee's names.
func TestKBSReleasesToAzSNPvTPM(t *testing.T) {
	g := azSNPGuest(t)
	releasedOnceRegistered(t, g.verifiers, g.att, g.refs)
}

// azTDXGuest is an az-tdx-vtpm VM: the real attester on swtpm, a stand-in
// IMDS quoting the TD report it is sent with Trustee's Azure TD quote
// re-signed by the DCAP test PKI, and the kbs trusting that PKI.
func azTDXGuest(t testing.TB) liveGuest {
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
	t.Cleanup(func() { att.Close() })
	dir := pki.Dir(t, coll)
	return liveGuest{att: paravisor{t: t, mu: &sync.Mutex{}, att: att}, verifiers: dcapVerifiers(dir, root),
		verify: []string{"--collateral", dir, "--dcap-root", root},
		refs: map[string]string{
			"tdx_pcr11": strings.Repeat("00", 32), // swtpm's PCR 11, never extended
			"mr_td":     hex.EncodeToString(base.Body.MrTD[:]),
			"xfam":      hex.EncodeToString(base.Body.XFAM[:]),
		}}
}

// TestKBSReleasesToAzTDXvTPM runs the KBS protocol with live az-tdx-vtpm
// evidence (azTDXGuest): nothing is released until the owner registers the
// TD's measurements under Trustee's names.
func TestKBSReleasesToAzTDXvTPM(t *testing.T) {
	g := azTDXGuest(t)
	releasedOnceRegistered(t, g.verifiers, g.att, g.refs)
}
