package snp

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-sev-guest/verify/trust"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
)

var ctx = context.Background()

// jsonField decodes one array-of-bytes field of the e2e evidence's report
// with encoding/json, independently of the parser under test.
func jsonField(t *testing.T, name string) []byte {
	t.Helper()
	var ev struct {
		Report map[string]json.RawMessage `json:"attestation_report"`
	}
	if err := json.Unmarshal(trusteeEvidence(t), &ev); err != nil {
		t.Fatal(err)
	}
	var ints []int
	if err := json.Unmarshal(ev.Report[name], &ints); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, len(ints))
	for i, n := range ints {
		b[i] = byte(n)
	}
	return b
}

func TestEvaluateTrusteeEvidence(t *testing.T) {
	v := newVerifier(t, Options{DisableKDS: true})
	reportData := jsonField(t, "report_data")
	got, err := v.Evaluate(ctx, trusteeEvidence(t), verifier.Expected{
		ReportData:     reportData,
		InitDataDigest: make([]byte, 32),
	})
	if err != nil {
		t.Fatal(err)
	}
	// Values read off the report: policy 0x30000, plat_info 37, TCB
	// bl 10 tee 0 snp 23 ucode 25.
	want := verifier.Claims{
		"policy_abi_major":        0,
		"policy_abi_minor":        0,
		"policy_smt_allowed":      true,
		"policy_migrate_ma":       false,
		"policy_debug_allowed":    false,
		"policy_single_socket":    false,
		"reported_tcb_bootloader": 10,
		"reported_tcb_tee":        0,
		"reported_tcb_snp":        23,
		"reported_tcb_microcode":  25,
		"platform_smt_enabled":    true,
		"platform_tsme_enabled":   false,
		"measurement":             hex.EncodeToString(jsonField(t, "measurement")),
		"report_data":             hex.EncodeToString(reportData),
		"init_data":               strings.Repeat("00", 32),
		"chip_id":                 hex.EncodeToString(jsonField(t, "chip_id")),
	}
	if len(got) != 1 || got[0].Class != "cpu" || !reflect.DeepEqual(got[0].Claims, want) {
		t.Errorf("claims\n got %v\nwant %v", got, want)
	}
}

// TestClaimsShape checks what Trustee's own test checks and that the JSON
// types are those Trustee's policies compare against.
func TestClaimsShape(t *testing.T) {
	for _, s := range samples(t) {
		r, err := ParseReport(s.raw)
		if err != nil {
			t.Fatal(err)
		}
		c := Claims(r)
		hexLen := map[string]int{"measurement": 96, "report_data": 128, "init_data": 64, "chip_id": 128}
		for k, v := range c {
			switch v := v.(type) {
			case string:
				if _, err := hex.DecodeString(v); err != nil || len(v) != hexLen[k] || strings.ToLower(v) != v {
					t.Errorf("%s: %s: %q is not %d lowercase hex digits", s.name, k, v, hexLen[k])
				}
			case bool:
				if !strings.HasPrefix(k, "policy_") && !strings.HasPrefix(k, "platform_") || k == "policy_abi_major" {
					t.Errorf("%s: %s is a bool", s.name, k)
				}
			case int:
				if !strings.HasPrefix(k, "reported_tcb_") && !strings.HasPrefix(k, "policy_abi_") {
					t.Errorf("%s: %s is a number", s.name, k)
				}
			default:
				t.Errorf("%s: %s has type %T", s.name, k, v)
			}
		}
		if len(c) != 16 {
			t.Errorf("%s: %d claims, Trustee has 16", s.name, len(c))
		}
	}
}

func TestVerifyRealSamples(t *testing.T) {
	tcbs := map[string][4]int{ // bootloader, tee, snp, microcode, from the VCEK/VLEK
		"trustee-e2e-genoa-v3":  {10, 0, 23, 25},
		"trustee-vcek-milan-v2": {3, 0, 8, 115},
		"go-sev-guest-milan-v2": {2, 0, 5, 68},
	}
	for _, s := range samples(t) {
		t.Run(s.name, func(t *testing.T) {
			v := newVerifier(t, Options{DisableKDS: true, Now: at(s.now)})
			c, err := v.VerifyReport(ctx, s.raw, s.certs, verifier.Expected{})
			if !errors.Is(err, s.wantErr) || (err == nil) != (s.wantErr == nil) {
				t.Fatalf("err %v, want %v", err, s.wantErr)
			}
			if err != nil {
				return
			}
			tcb := tcbs[s.name]
			got := [4]int{c["reported_tcb_bootloader"].(int), c["reported_tcb_tee"].(int),
				c["reported_tcb_snp"].(int), c["reported_tcb_microcode"].(int)}
			if got != tcb {
				t.Errorf("TCB %v, want %v", got, tcb)
			}
		})
	}
}

// The VLEK sample was taken at VMPL 1 and its VLEK has expired: both must
// be reported as such, after every cryptographic check passed.
func TestVLEK(t *testing.T) {
	s := samples(t)[2]
	v := newVerifier(t, Options{DisableKDS: true, Now: at(s.now)})
	_, err := v.VerifyReport(ctx, s.raw, s.certs, verifier.Expected{})
	if !errors.Is(err, ErrVMPL) || !errors.Is(err, verifier.ErrUnexpectedTeeConfig) ||
		errors.Is(err, verifier.ErrEndorsement) || errors.Is(err, verifier.ErrSignature) {
		t.Errorf("VMPL 1: %v", err)
	}

	_, err = newVerifier(t, Options{DisableKDS: true}).VerifyReport(ctx, s.raw, s.certs, verifier.Expected{})
	if !errors.Is(err, ErrCertExpired) || !errors.Is(err, verifier.ErrEndorsement) ||
		!strings.Contains(err.Error(), "2025-12-10") {
		t.Errorf("today: %v", err)
	}

	// A VLEK cannot be fetched: the CSP must provide it.
	_, err = newVerifier(t, Options{Now: at(s.now), KDSURL: "http://127.0.0.1:1"}).VerifyReport(ctx, s.raw, CertChain{}, verifier.Expected{})
	if !errors.Is(err, ErrNoEndorsementKey) {
		t.Errorf("no VLEK: %v", err)
	}

	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "vlek.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.certs.VLEK}))
	_, err = newVerifier(t, Options{DisableKDS: true, Now: at(s.now), CertDir: dir}).VerifyReport(ctx, s.raw, CertChain{}, verifier.Expected{})
	if !errors.Is(err, ErrVMPL) {
		t.Errorf("VLEK from the directory: %v", err)
	}
}

func TestCertificateValidity(t *testing.T) {
	s := samples(t)[1] // VCEK valid 2023-01-24 to 2030-01-24
	for _, now := range []time.Time{
		time.Date(2022, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC),
	} {
		_, err := newVerifier(t, Options{DisableKDS: true, Now: at(now)}).VerifyReport(ctx, s.raw, s.certs, verifier.Expected{})
		if !errors.Is(err, ErrCertExpired) || !strings.Contains(err.Error(), "SEV-VCEK") {
			t.Errorf("at %v: %v", now, err)
		}
	}
}

func TestBindings(t *testing.T) {
	s := samples(t)[1] // report_data is a 32-byte digest zero-padded to 64
	r, err := ParseReport(s.raw)
	if err != nil {
		t.Fatal(err)
	}
	digest := r.Proto().ReportData[:32]
	v := newVerifier(t, Options{DisableKDS: true})
	cases := []struct {
		name string
		want verifier.Expected
		err  error
	}{
		{"digest", verifier.Expected{ReportData: digest}, nil},
		{"padded digest", verifier.Expected{ReportData: r.Proto().ReportData}, nil},
		{"other digest", verifier.Expected{ReportData: bytes.Repeat([]byte{1}, 48)}, verifier.ErrReportDataMismatch},
		{"digest prefix", verifier.Expected{ReportData: digest[:31]}, verifier.ErrReportDataMismatch},
		{"initdata", verifier.Expected{InitDataDigest: make([]byte, 32)}, nil},
		{"other initdata", verifier.Expected{InitDataDigest: []byte{1}}, verifier.ErrInitDataMismatch},
		{"both", verifier.Expected{ReportData: digest, InitDataDigest: bytes.Repeat([]byte{7}, 32)}, verifier.ErrInitDataMismatch},
	}
	for _, c := range cases {
		_, err := v.VerifyReport(ctx, s.raw, s.certs, c.want)
		if !errors.Is(err, c.err) || (err == nil) != (c.err == nil) {
			t.Errorf("%s: %v, want %v", c.name, err, c.err)
		}
	}
}

func TestProduct(t *testing.T) {
	ev := trusteeEvidence(t) // a Genoa report
	for _, c := range []struct {
		p   Product
		err error
	}{{Genoa, nil}, {Milan, ErrProductMismatch}, {Turin, ErrProductMismatch}} {
		_, err := newVerifier(t, Options{DisableKDS: true, Product: c.p}).Evaluate(ctx, ev, verifier.Expected{})
		if !errors.Is(err, c.err) || (err == nil) != (c.err == nil) {
			t.Errorf("Product %v: %v, want %v", c.p, err, c.err)
		}
	}
	// A version 2 Milan report forced to Genoa: the Milan VCEK does not fit.
	s := samples(t)[1]
	_, err := newVerifier(t, Options{DisableKDS: true, Product: Genoa}).VerifyReport(ctx, s.raw, s.certs, verifier.Expected{})
	if !errors.Is(err, ErrEndorsementProduct) {
		t.Errorf("v2 as Genoa: %v", err)
	}
	// A CPUID that names no SNP product (family 0x17, Zen 2).
	bad := setJSONField(t, ev, "cpuid_fam_id", "23")
	_, err = newVerifier(t, Options{DisableKDS: true}).Evaluate(ctx, bad, verifier.Expected{})
	if !errors.Is(err, ErrUnknownProduct) || !errors.Is(err, verifier.ErrUnexpectedTeeConfig) {
		t.Errorf("family 0x17: %v", err)
	}
}

func TestParseProduct(t *testing.T) {
	for in, want := range map[string]Product{"Milan": Milan, "genoa": Genoa, "TURIN": Turin} {
		if p, err := ParseProduct(in); err != nil || p != want || p.String() != productNames[want] {
			t.Errorf("%q: %v %v", in, p, err)
		}
	}
	for _, in := range []string{"", "Rome", "Milan-B0"} {
		if _, err := ParseProduct(in); !errors.Is(err, ErrUnknownProduct) {
			t.Errorf("%q: %v", in, err)
		}
	}
}

func TestProductFromCPUID(t *testing.T) {
	cases := []struct {
		family, model byte
		want          Product
	}{
		{0x19, 0x01, Milan}, {0x19, 0x0f, Milan}, {0x19, 0x11, Genoa}, {0x19, 0xa0, Genoa}, {0x19, 0xaf, Genoa},
		{0x19, 0x20, ProductUnknown}, {0x1a, 0x02, Turin}, {0x1a, 0x11, Turin}, {0x1a, 0x12, ProductUnknown},
		{0x17, 0x31, ProductUnknown}, {0, 0, ProductUnknown},
	}
	for _, c := range cases {
		if got := productFromCPUID(c.family, c.model); got != c.want {
			t.Errorf("%#x/%#x: %v, want %v", c.family, c.model, got, c.want)
		}
	}
}

func TestCertDir(t *testing.T) {
	s := samples(t)[1]
	r, err := ParseReport(s.raw)
	if err != nil {
		t.Fatal(err)
	}
	hwid := hex.EncodeToString(r.Proto().ChipId)
	vcekPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.certs.VCEK})
	milanASK, milanARK, _ := parseCertChainPEM(trust.AskArkMilanVcekBytes)
	genoaASK, genoaARK, _ := parseCertChainPEM(trust.AskArkGenoaVcekBytes)
	pemOf := func(der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}) }
	cases := []struct {
		name  string
		files map[string][]byte
		err   error
	}{
		{"snpguest der", map[string][]byte{"vcek.der": s.certs.VCEK}, nil},
		{"snpguest pem", map[string][]byte{"vcek.pem": vcekPEM}, nil},
		{"trustee store", map[string][]byte{"vcek/" + hwid + "/bl03_tee00_snp08_ucode115_vcek.der": s.certs.VCEK}, nil},
		{"trustee flat store", map[string][]byte{"vcek/" + hwid + "/vcek.der": s.certs.VCEK}, nil},
		{"with ask and ark", map[string][]byte{"vcek.der": s.certs.VCEK, "ask.pem": pemOf(milanASK), "ark.pem": pemOf(milanARK)}, nil},
		{"with cert_chain", map[string][]byte{"vcek.der": s.certs.VCEK, "cert_chain.pem": trust.AskArkMilanVcekBytes}, nil},
		{"other product's ask is ignored", map[string][]byte{"vcek.der": s.certs.VCEK, "ask.pem": pemOf(genoaASK)}, nil},
		{"other product's ark", map[string][]byte{"vcek.der": s.certs.VCEK, "ark.der": genoaARK}, ErrUntrustedRoot},
		{"empty", nil, ErrNoEndorsementKey},
		{"not PEM", map[string][]byte{"vcek.pem": []byte("-----BEGIN CERTIFICATE-----\nnot base64\n")}, ErrCertificate},
		{"bad cert_chain", map[string][]byte{"vcek.der": s.certs.VCEK, "cert_chain.pem": pemOf(milanASK)}, ErrCertificate},
	}
	for _, c := range cases {
		dir := t.TempDir()
		for name, b := range c.files {
			writeFile(t, filepath.Join(dir, name), b)
		}
		_, err := newVerifier(t, Options{DisableKDS: true, CertDir: dir}).VerifyReport(ctx, s.raw, CertChain{}, verifier.Expected{})
		if !errors.Is(err, c.err) || (err == nil) != (c.err == nil) {
			t.Errorf("%s: %v, want %v", c.name, err, c.err)
		}
	}
}

// selfSigned makes a certificate that looks like an AMD one but is not.
func selfSigned(t *testing.T, cn string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestSwappedCertificates(t *testing.T) {
	all := samples(t)
	genoa, milan, vlek, sevGuest := all[0], all[1], all[2], all[3]
	milanASK, milanARK, _ := parseCertChainPEM(trust.AskArkMilanVcekBytes)
	cases := []struct {
		name  string
		s     sample
		certs CertChain
		opts  Options
		err   error
	}{
		{"invalid VCEK, legacy hwID", milan, CertChain{VCEK: fixture(t, snpData+"test-vcek-invalid-legacy.der")}, Options{}, ErrEndorsementKeySignature},
		{"invalid VCEK, new hwID", milan, CertChain{VCEK: fixture(t, snpData+"test-vcek-invalid-new.der")}, Options{}, ErrEndorsementKeySignature},
		{"VCEK of another Milan chip", milan, sevGuest.certs, Options{}, ErrReportSignature},
		{"Genoa VCEK for a v2 report", milan, genoa.certs, Options{}, ErrReportSignature},
		{"Genoa VCEK for a Milan report", milan, genoa.certs, Options{Product: Milan}, ErrEndorsementProduct},
		{"Milan VCEK for a Genoa report", genoa, milan.certs, Options{}, ErrEndorsementProduct},
		{"VLEK as VCEK", milan, CertChain{VCEK: vlek.certs.VLEK}, Options{}, ErrEndorsementKeyForm},
		{"VCEK as VLEK", vlek, CertChain{VLEK: milan.certs.VCEK}, Options{Now: at(vlek.now)}, ErrEndorsementKeyForm},
		{"ASK as VCEK", milan, CertChain{VCEK: milanASK}, Options{}, ErrEndorsementKeyForm},
		{"truncated VCEK", milan, CertChain{VCEK: milan.certs.VCEK[:700]}, Options{}, ErrCertificate},
		{"forged ARK", milan, CertChain{VCEK: milan.certs.VCEK, ARK: selfSigned(t, "ARK-Milan")}, Options{}, ErrUntrustedRoot},
		{"ARK as ASK", milan, CertChain{VCEK: milan.certs.VCEK, ASK: milanARK}, Options{}, nil},
		{"forged ASK", milan, CertChain{VCEK: milan.certs.VCEK, ASK: selfSigned(t, "SEV-Milan")}, Options{}, ErrIntermediateSignature},
		{"genuine ASK and ARK", milan, CertChain{VCEK: milan.certs.VCEK, ASK: milanASK, ARK: milanARK}, Options{}, nil},
		{"garbage ASK", milan, CertChain{VCEK: milan.certs.VCEK, ASK: []byte{0x30, 0x03, 1, 2, 3}}, Options{}, ErrCertificate},
	}
	for _, c := range cases {
		c.opts.DisableKDS = true
		_, err := newVerifier(t, c.opts).VerifyReport(ctx, c.s.raw, c.certs, verifier.Expected{})
		if !errors.Is(err, c.err) || (err == nil) != (c.err == nil) {
			t.Errorf("%s: %v, want %v", c.name, err, c.err)
		}
	}
}

// TestCachedChainStillChecked makes sure a cached chain is not a shortcut
// around the checks that depend on the call.
func TestCachedChainStillChecked(t *testing.T) {
	s := samples(t)[1]
	now := s.now
	v := newVerifier(t, Options{DisableKDS: true, Now: func() time.Time { return now }})
	if _, err := v.VerifyReport(ctx, s.raw, s.certs, verifier.Expected{}); err != nil {
		t.Fatal(err)
	}
	vlek := samples(t)[2]
	if _, err := v.VerifyReport(ctx, vlek.raw, CertChain{VLEK: s.certs.VCEK}, verifier.Expected{}); !errors.Is(err, ErrEndorsementKeyForm) {
		t.Errorf("cached VCEK as a VLEK: %v", err)
	}
	forged := CertChain{VCEK: s.certs.VCEK, ASK: selfSigned(t, "SEV-Milan")}
	if _, err := v.VerifyReport(ctx, s.raw, forged, verifier.Expected{}); !errors.Is(err, ErrIntermediateSignature) {
		t.Errorf("forged ASK after a cached chain: %v", err)
	}
	now = time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, err := v.VerifyReport(ctx, s.raw, s.certs, verifier.Expected{}); !errors.Is(err, ErrCertExpired) {
		t.Errorf("expired after caching: %v", err)
	}
}

func TestKeyBinding(t *testing.T) {
	s := samples(t)[1]
	r, err := ParseReport(s.raw)
	if err != nil {
		t.Fatal(err)
	}
	e, err := parseEndorsement(s.certs.VCEK, r.Signer())
	if err != nil {
		t.Fatal(err)
	}
	if err := checkKeyBinding(r, e); err != nil {
		t.Fatal(err)
	}
	other := *e
	other.ext.hwid = bytes.Repeat([]byte{1}, 64)
	if err := checkKeyBinding(r, &other); !errors.Is(err, ErrHWIDMismatch) {
		t.Errorf("hwID: %v", err)
	}
	for _, bump := range []func(*TCB){
		func(t *TCB) { t.Bootloader++ }, func(t *TCB) { t.TEE++ }, func(t *TCB) { t.SNP++ }, func(t *TCB) { t.Microcode++ },
	} {
		other := *e
		bump(&other.ext.tcb)
		if err := checkKeyBinding(r, &other); !errors.Is(err, ErrTCBMismatch) {
			t.Errorf("TCB: %v", err)
		}
	}
}

func TestKeyExtensions(t *testing.T) {
	for _, name := range []string{"test-vcek.der", "test-vcek-invalid-legacy.der", "test-vcek-invalid-new.der"} {
		cert, err := x509.ParseCertificate(fixture(t, snpData+name))
		if err != nil {
			t.Fatal(err)
		}
		ext, err := parseKeyExtensions(cert)
		if err != nil || len(ext.hwid) != 64 || ext.productName != "Milan-B0" {
			t.Errorf("%s: %+v %v", name, ext, err)
		}
	}
	// The legacy certificate holds the hwID raw and a microcode SPL over 127.
	cert, _ := x509.ParseCertificate(fixture(t, snpData+"test-vcek-invalid-legacy.der"))
	if ext, _ := parseKeyExtensions(cert); ext.hwid[63] != 0x3f || ext.tcb.Microcode != 0xa9 {
		t.Errorf("legacy: %+v", ext)
	}
}

func TestUnsignedReport(t *testing.T) {
	s := samples(t)[1]
	raw := bytes.Clone(s.raw)
	raw[0x48] = 7 << 2 // SIGNING_KEY none
	_, err := newVerifier(t, Options{DisableKDS: true}).VerifyReport(ctx, raw, s.certs, verifier.Expected{})
	if !errors.Is(err, ErrUnsignedReport) || !errors.Is(err, verifier.ErrSignature) {
		t.Errorf("%v", err)
	}
}

func TestWrongTEE(t *testing.T) {
	v := newVerifier(t, Options{DisableKDS: true})
	for _, ev := range []string{
		`{"svn":"1","report_data":"AAAA"}`,
		`{"quote":"AAAA","cc_eventlog":null}`,
		`{"tpm_quote":{},"ak_public":""}`,
		`null`, `[]`, `"snp"`, `{}`, `{"attestation_report":null,"cert_chain":null}`, ``,
	} {
		if _, err := v.Evaluate(ctx, json.RawMessage(ev), verifier.Expected{}); !errors.Is(err, ErrEvidenceJSON) || !errors.Is(err, verifier.ErrMalformedEvidence) {
			t.Errorf("%s: %v", ev, err)
		}
	}
}

func TestTruncated(t *testing.T) {
	v := newVerifier(t, Options{DisableKDS: true})
	for _, s := range samples(t) {
		for _, n := range []int{0, 1, 0x2a0, len(s.raw) - 1} {
			if _, err := v.VerifyReport(ctx, s.raw[:n], s.certs, verifier.Expected{}); !errors.Is(err, ErrReportSize) {
				t.Errorf("%s[:%d]: %v", s.name, n, err)
			}
		}
		if _, err := v.VerifyReport(ctx, append(bytes.Clone(s.raw), 0), s.certs, verifier.Expected{}); !errors.Is(err, ErrReportSize) {
			t.Errorf("%s + 1 byte: %v", s.name, err)
		}
	}
	ev := trusteeEvidence(t)
	for n := 0; n < len(ev); n += 37 {
		if _, err := v.Evaluate(ctx, ev[:n], verifier.Expected{}); !errors.Is(err, verifier.ErrMalformedEvidence) {
			t.Fatalf("evidence[:%d]: %v", n, err)
		}
	}
}

func TestConcurrentEvaluate(t *testing.T) {
	v := newVerifier(t, Options{DisableKDS: true})
	ev := trusteeEvidence(t)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 8 {
				if _, err := v.Evaluate(ctx, ev, verifier.Expected{}); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
