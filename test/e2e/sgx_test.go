package e2e

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/dcap"
	"github.com/cocoon-cc/cocoon/attestation/verifier/dcap/dcaptest"
	"github.com/cocoon-cc/cocoon/attestation/verifier/sgx"
	"github.com/cocoon-cc/cocoon/guest/attester"
	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/cocoon-cc/cocoon/kbs/client"
	"github.com/cocoon-cc/cocoon/protocol"
)

// sgxFixture is Trustee's real Occlum quote re-signed by a test PKI (no
// SGX collateral was captured with it), the PKI's root as a PEM file and
// SGX collateral for the quote's platform in a collateral directory.
type sgxFixture struct {
	pki        *dcaptest.PKI
	base       *sgx.Quote
	root, coll string
}

// newSGXFixture makes its collateral valid around at.
func newSGXFixture(t testing.TB, at time.Time) *sgxFixture {
	q, err := sgx.ParseQuote(testutil.TrusteeVerifierData(t, "occlum_quote.dat"))
	if err != nil {
		t.Fatal(err)
	}
	f := &sgxFixture{pki: dcaptest.New(t, dcaptest.SGXExtensionOf(t, q.PCKChain)), base: q}
	coll := dcaptest.SGXCollateral(t, testutil.TrusteeVerifierData(t, "tcbInfo.json"),
		testutil.TrusteeVerifierData(t, "enclaveIdentity.json"), q.PCKChain, &q.QEReport)
	coll.Redate(at)
	f.coll = f.pki.Dir(t, coll)
	f.root = filepath.Join(t.TempDir(), "root.pem")
	if err := os.WriteFile(f.root, dcaptest.PEMCerts(f.pki.Root), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// quote is the enclave's quote with reportData in REPORT_DATA; a production
// enclave unless debug.
func (f *sgxFixture) quote(t testing.TB, reportData []byte, debug bool) []byte {
	signed := slices.Clone(f.base.SignedData)
	body := signed[dcap.HeaderSize:]
	copy(body[320:384], verifier.Fit(reportData, 64))
	if !debug {
		body[48] &^= 2 // ATTRIBUTES.DEBUG
	}
	return f.pki.SignQuote(t, signed, &f.base.SignatureData)
}

// TestVerifyOfflineSGX: attestation-service verify checks an SGX quote
// with saved collateral and the roots given, its report data, and refuses
// a debug enclave unless asked, a tampered quote and Intel's real chain
// without collateral.
func TestVerifyOfflineSGX(t *testing.T) {
	f := newSGXFixture(t, dcaptest.Time)
	dir := t.TempDir()
	reportData := []byte("nonce digest")
	prod, debug, bad := filepath.Join(dir, "prod.dat"), filepath.Join(dir, "debug.dat"), filepath.Join(dir, "bad.dat")
	tampered := f.quote(t, reportData, false)
	tampered[100] ^= 1
	for path, quote := range map[string][]byte{prod: f.quote(t, reportData, false), debug: f.quote(t, reportData, true), bad: tampered} {
		if err := os.WriteFile(path, quote, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	common := []string{"--collateral", f.coll, "--dcap-root", f.root, "--time", dcaptest.Time.Format("2006-01-02T15:04:05Z07:00")}
	verify := func(evidence string, extra ...string) (string, error) {
		return attestationService(t, append(append([]string{"verify", "--tee", "sgx", "--evidence", evidence}, common...), extra...)...)
	}
	out, err := verify(prod, "--report-data", hex.EncodeToString(reportData))
	if err != nil || !strings.Contains(out, `"tcb_status":"UpToDate"`) && !strings.Contains(out, `tcb_status: "UpToDate"`) {
		t.Fatalf("genuine quote: %v\n%s", err, out)
	}
	if !strings.Contains(out, "8f173e4613ff05c52aaf04162d234edae8c9977eae47eb2299ae16a553011c68") {
		t.Errorf("no mr_enclave in\n%s", out)
	}
	if _, err := verify(prod, "--report-data", hex.EncodeToString([]byte("another nonce"))); err == nil || !strings.Contains(err.Error(), "report data") {
		t.Errorf("wrong report data: %v", err)
	}
	if _, err := verify(debug); err == nil || !strings.Contains(err.Error(), "debug") {
		t.Errorf("debug enclave: %v", err)
	}
	if _, err := verify(debug, "--sgx-allow-debug"); err != nil {
		t.Errorf("debug enclave allowed: %v", err)
	}
	if _, err := verify(bad); err == nil {
		t.Error("a tampered quote verified")
	}
	// The real quote under Intel's root: no SGX collateral is at hand.
	real := filepath.Join(testutil.Fixtures(t), "trustee/deps/verifier/test_data/occlum_quote.dat")
	if _, err := attestationService(t, "verify", "--tee", "sgx", "--evidence", real, "--collateral", t.TempDir(),
		"--time", "2025-11-01T00:00:00Z"); err == nil || !strings.Contains(err.Error(), "sgx-tcb-info-00606A000000.json") {
		t.Errorf("real quote without its collateral: %v", err)
	}
}

// sgxAttester makes quotes of the fixture's enclave carrying the report
// data it is asked for, as an SGX enclave's attester would.
type sgxAttester struct {
	t testing.TB
	f *sgxFixture
}

func (a sgxAttester) Tee() protocol.Tee { return protocol.TeeSGX }

func (a sgxAttester) Evidence(_ context.Context, reportData []byte) (json.RawMessage, error) {
	return json.Marshal(map[string]string{"quote": base64.StdEncoding.EncodeToString(a.f.quote(a.t, reportData, false))})
}

// TestKBSReleasesToSGX runs the KBS protocol with SGX evidence bound to
// the KBS's nonce: nothing is released until the owner registers the
// enclave's MRENCLAVE and MRSIGNER.
func TestKBSReleasesToSGX(t *testing.T) {
	g := sgxGuest(t)
	releasedOnceRegistered(t, g.verifiers, g.att, g.refs)
}

// sgxGuest is an enclave quoting any report data with the test PKI, and
// the kbs trusting that PKI.
func sgxGuest(t testing.TB) liveGuest {
	f := newSGXFixture(t, time.Now())
	return liveGuest{att: sgxAttester{t, f}, verifiers: dcapVerifiers(f.coll, f.root),
		verify: []string{"--collateral", f.coll, "--dcap-root", f.root}, refs: map[string]string{
			"mr_enclave": hex.EncodeToString(f.base.Body.MrEnclave[:]),
			"mr_signer":  hex.EncodeToString(f.base.Body.MrSigner[:]),
		}}
}

// dcapVerifiers are the kbs's verifier settings for a DCAP test hierarchy.
func dcapVerifiers(coll, root string) string {
	return fmt.Sprintf("tdx_collateral_dir = %q\ndcap_root_ca = %q\noffline = true\n", coll, root)
}

// releasedOnceRegistered runs the KBS protocol with att's evidence,
// the kbs's [attestation_service.verifiers] settings trusting its test
// chain: nothing is released until the owner registers refs as reference
// values.
func releasedOnceRegistered(t *testing.T, verifiers string, att attester.Attester, refs map[string]string) {
	data := t.TempDir()
	cfg, url := kbsConfig(t, data, "http", "[attestation_service.verifiers]\n"+verifiers)
	k := startKBS(t, cfg, url, data, nil)
	admin := []string{"--url", url, "config", "--auth-private-key", k.adminKey()}
	setResource(t, []string{"--url", url}, k.adminKey(), "default/key/tee", []byte("for the TEE"))
	var kerr *protocol.Error
	if _, err := fetchAttested(url, att, client.Options{}, "default/key/tee"); !errors.As(err, &kerr) || kerr.Kind != protocol.KindPolicyDeny {
		t.Fatalf("before registering: %v, want PolicyDeny", err)
	}
	for name, value := range refs {
		mustClient(t, append(admin, "set-sample-reference-value", name, value)...)
	}
	if got, err := fetchAttested(url, att, client.Options{}, "default/key/tee"); err != nil || string(got) != "for the TEE" {
		t.Fatalf("registered: %q, %v", got, err)
	}
}
