package nvidia_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/nvidia"
	"github.com/cocoon-cc/cocoon/attestation/verifier/nvidia/nvidiatest"
)

func TestFixtureClaims(t *testing.T) {
	nonce, _ := hex.DecodeString(fixtureNonce)
	ev, _ := json.Marshal(nvidia.Evidence{Devices: []nvidia.Device{fixtureDevice(t, "1")}})
	tcs, err := nvidia.New(nvidia.Options{}).Evaluate(context.Background(), ev, verifier.Expected{ReportData: nonce})
	if err != nil {
		t.Fatal(err)
	}
	if len(tcs) != 1 || tcs[0].Class != "gpu" {
		t.Fatalf("%+v", tcs)
	}
	var got, want any
	b, _ := json.Marshal(tcs[0].Claims)
	json.Unmarshal(b, &got)
	if err := json.Unmarshal(fixture(t, nvData+"hopperAttestationReport-claims.txt"), &want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("claims differ from Trustee's:\n%s", b)
	}
}

func testGPU(t testing.TB, leaf nvidiatest.Validity) *nvidiatest.GPU {
	t.Helper()
	report, _ := hex.DecodeString(strings.TrimSpace(string(fixture(t, nvData+"hopperAttestationReport.txt"))))
	g, err := nvidiatest.New(report, leaf)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

var valid = nvidiatest.Validity{NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}

// TestLiveNonce: a report for a fresh report data verifies against it (its
// first 32 bytes, as the attester sends them) and no other.
func TestLiveNonce(t *testing.T) {
	g := testGPU(t, valid)
	rd := make([]byte, 48)
	rand.Read(rd)
	ev, err := g.Evidence(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	v := nvidia.New(nvidia.Options{Roots: []*x509.Certificate{g.Root}})
	if _, err := v.Evaluate(context.Background(), ev, verifier.Expected{ReportData: rd}); err != nil {
		t.Fatal(err)
	}
	other := bytes.Clone(rd)
	other[31] ^= 1
	if _, err := v.Evaluate(context.Background(), ev, verifier.Expected{ReportData: other}); !errors.Is(err, nvidia.ErrNonce) || !errors.Is(err, verifier.ErrReportDataMismatch) {
		t.Errorf("another nonce: %v, want ErrNonce", err)
	}
	// NVIDIA's root does not vouch for the test GPU.
	if _, err := nvidia.New(nvidia.Options{}).Evaluate(context.Background(), ev, verifier.Expected{ReportData: rd}); !errors.Is(err, nvidia.ErrUntrustedRoot) {
		t.Errorf("test root without Options.Roots: %v, want ErrUntrustedRoot", err)
	}
}

// TestChainRefusals: Trustee's broken chains and expired or not yet valid
// certificates, each with its own error.
func TestChainRefusals(t *testing.T) {
	nonce, _ := hex.DecodeString(fixtureNonce)
	want := verifier.Expected{ReportData: nonce}
	for name, c := range map[string]struct {
		dev nvidia.Device
		now time.Time
		err error
	}{
		"root alone (case 2)":           {fixtureDevice(t, "2"), time.Now(), nvidia.ErrChainLength},
		"intermediate missing (case 3)": {fixtureDevice(t, "3"), time.Now(), nvidia.ErrChain},
		"another device's key (case 4)": {fixtureDevice(t, "4"), time.Now(), nvidia.ErrSignature},
		"before the chain was issued":   {fixtureDevice(t, "1"), time.Date(2021, 1, 1, 0, 0, 0, 0, time.UTC), nvidia.ErrChain},
	} {
		_, err := nvidia.New(nvidia.Options{Now: func() time.Time { return c.now }}).VerifyDevice(context.Background(), c.dev, want)
		if !errors.Is(err, c.err) {
			t.Errorf("%s: %v, want %v", name, err, c.err)
		}
	}

	rd := make([]byte, 32)
	for name, c := range map[string]struct {
		leaf nvidiatest.Validity
		edit func(g *nvidiatest.GPU)
		err  error
	}{
		"expired attestation key":       {nvidiatest.Validity{NotBefore: time.Now().AddDate(-2, 0, 0), NotAfter: time.Now().AddDate(-1, 0, 0)}, nil, nvidia.ErrChain},
		"attestation key not yet valid": {nvidiatest.Validity{NotBefore: time.Now().Add(time.Hour), NotAfter: time.Now().AddDate(1, 0, 0)}, nil, nvidia.ErrChain},
		"root only":                     {valid, func(g *nvidiatest.GPU) { g.Chain = pemOf(g.Root) }, nvidia.ErrChainLength},
		"attestation key and root": {valid, func(g *nvidiatest.GPU) {
			certs, _ := nvidia.ParseChain(g.Chain)
			g.Chain = append(pemOf(certs[0]), pemOf(g.Root)...)
		}, nvidia.ErrChain},
		"other firmware": {valid, func(g *nvidiatest.GPU) {
			other := testGPU(t, valid)
			other.Report = g.Report
			*g = *other
			g.Report = withFWID(t, g.Report)
		}, nvidia.ErrFWID},
	} {
		g := testGPU(t, c.leaf)
		if c.edit != nil {
			c.edit(g)
		}
		ev, err := g.Evidence(context.Background(), rd)
		if err != nil {
			t.Fatal(err)
		}
		_, err = nvidia.New(nvidia.Options{Roots: []*x509.Certificate{g.Root}}).Evaluate(context.Background(), ev, verifier.Expected{ReportData: rd})
		if !errors.Is(err, c.err) {
			t.Errorf("%s: %v, want %v", name, err, c.err)
		}
	}
}

func pemOf(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// withFWID changes the report's FWID item (the signature is redone by the
// test GPU).
func withFWID(t *testing.T, report []byte) []byte {
	r, err := nvidia.ParseReport(report)
	if err != nil {
		t.Fatal(err)
	}
	fwid, _ := hex.DecodeString(r.FWID)
	i := bytes.Index(report, fwid)
	out := bytes.Clone(report)
	out[i] ^= 0xff
	return out
}

// TestEveryByteFlipped: no byte of the report may change and still verify.
func TestEveryByteFlipped(t *testing.T) {
	nonce, _ := hex.DecodeString(fixtureNonce)
	d := fixtureDevice(t, "1")
	report, _ := hex.DecodeString(d.Evidence)
	v := nvidia.New(nvidia.Options{})
	classes := map[string]int{}
	for i := range report {
		b := bytes.Clone(report)
		b[i] ^= 1
		d.Evidence = hex.EncodeToString(b)
		_, err := v.VerifyDevice(context.Background(), d, verifier.Expected{ReportData: nonce})
		switch {
		case errors.Is(err, verifier.ErrMalformedEvidence):
			classes["malformed"]++
		case errors.Is(err, nvidia.ErrSignature):
			classes["signature"]++
		case errors.Is(err, nvidia.ErrNonce):
			classes["nonce"]++
		default:
			t.Fatalf("byte %d flipped: %v", i, err)
		}
	}
	t.Logf("refusals: %v", classes)
}

func TestEvidenceForms(t *testing.T) {
	nonce, _ := hex.DecodeString(fixtureNonce)
	d := fixtureDevice(t, "1")
	report, _ := hex.DecodeString(d.Evidence)
	d.Evidence = base64.StdEncoding.EncodeToString(report)
	if _, err := nvidia.New(nvidia.Options{}).VerifyDevice(context.Background(), d, verifier.Expected{ReportData: nonce}); err != nil {
		t.Errorf("base64 report: %v", err)
	}
	for name, c := range map[string]struct {
		ev  string
		err error
	}{
		"no devices":     {`{"device_evidence_list":[]}`, verifier.ErrMalformedEvidence},
		"unknown member": {`{"device_evidence_list":[],"x":1}`, verifier.ErrMalformedEvidence},
		"CCA evidence":   {`{"token":[1]}`, verifier.ErrMalformedEvidence},
		"not JSON":       {`nvidia`, verifier.ErrMalformedEvidence},
		"blackwell":      {`{"device_evidence_list":[{"arch":"BLACKWELL","evidence":"","certificate":""}]}`, nvidia.ErrUnsupportedArch},
		"switch":         {`{"device_evidence_list":[{"arch":"LS10","evidence":"","certificate":""}]}`, nvidia.ErrUnsupportedArch},
		"bad report":     {`{"device_evidence_list":[{"arch":"HOPPER","evidence":"11e0","certificate":""}]}`, nvidia.ErrReport},
		"bad chain":      {`{"device_evidence_list":[{"arch":"HOPPER","evidence":"` + hex.EncodeToString(report) + `","certificate":"AAAA"}]}`, nvidia.ErrCertificate},
	} {
		if _, err := nvidia.New(nvidia.Options{}).Evaluate(context.Background(), json.RawMessage(c.ev), verifier.Expected{ReportData: nonce}); !errors.Is(err, c.err) {
			t.Errorf("%s: %v, want %v", name, err, c.err)
		}
	}
}

// TestCachedChain: a chain verified once is not verified again, but its
// validity period and FWID are still checked against each report.
func TestCachedChain(t *testing.T) {
	g := testGPU(t, valid)
	now := time.Now()
	v := nvidia.New(nvidia.Options{Roots: []*x509.Certificate{g.Root}, Now: func() time.Time { return now }})
	rd := make([]byte, 32)
	verify := func() error {
		ev, err := g.Evidence(context.Background(), rd)
		if err != nil {
			t.Fatal(err)
		}
		_, err = v.Evaluate(context.Background(), ev, verifier.Expected{ReportData: rd})
		return err
	}
	if err := verify(); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Hour)
	if err := verify(); !errors.Is(err, nvidia.ErrChain) {
		t.Errorf("cached chain past its attestation key's validity: %v, want ErrChain", err)
	}
	now = now.Add(-2 * time.Hour)
	g.Report = withFWID(t, g.Report)
	if err := verify(); !errors.Is(err, nvidia.ErrFWID) {
		t.Errorf("cached chain, report of other firmware: %v, want ErrFWID", err)
	}
}

// TestOCSP: with a responder, a revoked certificate of the chain, an
// unknown one and an unreachable responder are refused; good answers are
// cached.
func TestOCSP(t *testing.T) {
	g := testGPU(t, valid)
	revoked := map[string]bool{}
	var asked atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		g.OCSP(func(c *x509.Certificate) bool { return revoked[c.Subject.CommonName] }).ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	evaluate := func(v *nvidia.Verifier) error {
		ev, err := g.Evidence(context.Background(), make([]byte, 32))
		if err != nil {
			t.Fatal(err)
		}
		_, err = v.Evaluate(context.Background(), ev, verifier.Expected{ReportData: make([]byte, 32)})
		return err
	}
	verify := func(url string) error {
		return evaluate(nvidia.New(nvidia.Options{Roots: []*x509.Certificate{g.Root}, OCSPURL: url}))
	}
	v := nvidia.New(nvidia.Options{Roots: []*x509.Certificate{g.Root}, OCSPURL: srv.URL})
	for range 2 {
		if err := evaluate(v); err != nil || asked.Load() != 1 {
			t.Fatalf("good chain: %v, %d requests (want 1: the attestation key and root are not asked about, a good answer is kept)", err, asked.Load())
		}
	}
	revoked[g.Certs[1].Subject.CommonName] = true
	if err := verify(srv.URL); !errors.Is(err, nvidia.ErrRevoked) {
		t.Errorf("revoked intermediate: %v, want ErrRevoked", err)
	}
	other := testGPU(t, valid) // the responder knows none of its certificates
	g.Certs, g.Keys = other.Certs, other.Keys
	if err := verify(srv.URL); !errors.Is(err, nvidia.ErrRevocationUnknown) {
		t.Errorf("certificate unknown to the responder: %v, want ErrRevocationUnknown", err)
	}
	if err := verify("http://127.0.0.1:1/"); !errors.Is(err, nvidia.ErrRevocationUnknown) {
		t.Errorf("responder unreachable: %v, want ErrRevocationUnknown", err)
	}
}
