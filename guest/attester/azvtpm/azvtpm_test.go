package azvtpm_test

import (
	"bytes"
	"context"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	vazvtpm "github.com/cocoon-cc/cocoon/attestation/verifier/azvtpm"
	"github.com/cocoon-cc/cocoon/guest/attester/azsnpvtpm"
	"github.com/cocoon-cc/cocoon/guest/attester/aztdxvtpm"
	"github.com/cocoon-cc/cocoon/guest/attester/azvtpm"
	"github.com/cocoon-cc/cocoon/guest/attester/azvtpm/azvtpmtest"
	"github.com/cocoon-cc/cocoon/guest/attester/tpm"
	"github.com/cocoon-cc/cocoon/internal/testutil"
	"github.com/cocoon-cc/cocoon/protocol"
)

// TestCollect collects the vTPM half from swtpm, where the test plays the
// paravisor's part (an HCL report naming the vTPM's AK and carrying the
// report data), and verifies it with the az-*-vtpm verifiers' checks.
func TestCollect(t *testing.T) {
	digest := sha512.Sum384([]byte("runtime data"))
	addr, hcl := azvtpmtest.VM(t, vazvtpm.ReportSNP, digest[:])
	v, err := azvtpm.Open(azvtpm.Options{TPM: addr, Refresh: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	c, err := v.Collect(context.Background(), digest[:])
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c.HCLReport, hcl) {
		t.Fatal("the HCL report read is not the one written")
	}
	raw, err := c.Evidence("vcek", []byte{1})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := vazvtpm.ParseEvidence(raw)
	if err != nil {
		t.Fatal(err)
	}
	vt, err := vazvtpm.VerifyVTPM(ev, vazvtpm.ReportSNP, verifier.Expected{ReportData: digest[:]})
	if err != nil {
		t.Fatal(err)
	}
	if err := vt.HCL.CheckBinding(vt.HCL.HWReport[0x50:0x90]); err != nil {
		t.Fatal(err)
	}
	other := sha512.Sum384([]byte("another nonce"))
	if _, err := vazvtpm.VerifyVTPM(ev, vazvtpm.ReportSNP, verifier.Expected{ReportData: other[:]}); !errors.Is(err, vazvtpm.ErrNonce) {
		t.Errorf("another nonce: %v, want ErrNonce", err)
	}
	// swtpm serves one connection at a time: probe once the vTPM is closed.
	v.Close()
	if tee, ok := azvtpm.Probe(addr); !ok || tee != protocol.TeeAzSNPvTPM {
		t.Errorf("Probe: %v %v, want az-snp-vtpm", tee, ok)
	}
	if rd, err := tpm.ReadNVIndex(addr, azvtpm.ReportDataIndex); err != nil || !bytes.Equal(rd, digest[:]) {
		t.Errorf("the report data index holds %x, %v", rd, err)
	}
}

// TestSNPEvidence collects az-snp-vtpm evidence from swtpm and a stand-in
// IMDS serving a real VCEK, and checks the verifier reads it back.
func TestSNPEvidence(t *testing.T) {
	digest := sha512.Sum384([]byte("runtime data"))
	addr, _ := azvtpmtest.VM(t, vazvtpm.ReportSNP, digest[:])
	vcekPEM := testutil.TrusteeVerifierData(t, "az-snp-vtpm/vcek.pem")
	imds := azvtpmtest.IMDS(t, "/metadata/THIM/amd/certification", func([]byte) any {
		return map[string]string{"vcekCert": string(vcekPEM), "certificateChain": ""}
	})
	ev := collect(t, azsnpvtpm.Open, azvtpm.Options{TPM: addr, IMDS: imds}, vazvtpm.ReportSNP, digest[:])
	block, _ := pem.Decode(vcekPEM)
	if ev.Version != 2 || !bytes.Equal(ev.VCEK, block.Bytes) {
		t.Errorf("version %d, VCEK from IMDS %v", ev.Version, bytes.Equal(ev.VCEK, block.Bytes))
	}
}

// collect opens an attester with open, collects its evidence for
// reportData and checks the vTPM half verifies.
func collect(t *testing.T, open func(azvtpm.Options) (*azvtpm.Attester, error), o azvtpm.Options, typ vazvtpm.ReportType, reportData []byte) *vazvtpm.Evidence {
	t.Helper()
	o.Refresh = time.Millisecond
	a, err := open(o)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	raw, err := a.Evidence(context.Background(), reportData)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := vazvtpm.ParseEvidence(raw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := vazvtpm.VerifyVTPM(ev, typ, verifier.Expected{ReportData: reportData}); err != nil {
		t.Fatal(err)
	}
	return ev
}

// TestTDXEvidence collects az-tdx-vtpm evidence from swtpm and a stand-in
// IMDS that quotes the TD report it is sent, and checks the verifier reads
// it back with the quote IMDS made of the HCL report's TD report.
func TestTDXEvidence(t *testing.T) {
	digest := sha512.Sum384([]byte("runtime data"))
	addr, hcl := azvtpmtest.VM(t, vazvtpm.ReportTDX, digest[:])
	quote := testutil.TrusteeVerifierData(t, "az-tdx-vtpm/td-quote.bin")
	var sent []byte
	imds := azvtpmtest.IMDS(t, "/acc/tdquote", func(body []byte) any {
		var req struct{ Report string }
		json.Unmarshal(body, &req)
		sent, _ = base64.RawURLEncoding.DecodeString(req.Report)
		return map[string]string{"quote": base64.RawURLEncoding.EncodeToString(quote)}
	})
	ev := collect(t, aztdxvtpm.Open, azvtpm.Options{TPM: addr, IMDS: imds}, vazvtpm.ReportTDX, digest[:])
	parsed, err := vazvtpm.ParseHCLReport(hcl)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sent, parsed.HWReport) || !bytes.Equal(ev.TDQuote, quote) {
		t.Errorf("IMDS got the TD report: %v; evidence has its quote: %v", bytes.Equal(sent, parsed.HWReport), bytes.Equal(ev.TDQuote, quote))
	}
	// An IMDS that does not answer makes no evidence.
	down := azvtpmtest.IMDS(t, "/elsewhere", func([]byte) any { return nil })
	b, err := aztdxvtpm.Open(azvtpm.Options{TPM: addr, IMDS: down, Refresh: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.Evidence(context.Background(), digest[:]); err == nil || !strings.Contains(err.Error(), "400") {
		t.Errorf("IMDS refusing: %v", err)
	}
}
