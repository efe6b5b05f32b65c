package sgx

import (
	"bytes"
	"context"
	"crypto/sha512"
	"crypto/x509"
	"encoding/json"
	"errors"
	"math/big"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/dcap"
	"github.com/cocoon-cc/cocoon/attestation/verifier/dcap/dcaptest"
	"github.com/cocoon-cc/cocoon/internal/testutil"
)

// TestQuoteClaimsMatchTrustee compares the claims of the real Occlum quote
// with those Trustee's own test of it expects.
func TestQuoteClaimsMatchTrustee(t *testing.T) {
	q := mustParse(t, occlumQuote(t))
	chain, err := dcap.ParsePCKChain(q.PCKChain)
	if err != nil {
		t.Fatal(err)
	}
	got := quoteClaims(q, &chain.Platform)
	zeros := func(n int) string { return string(bytes.Repeat([]byte("00"), n)) }
	reportData := "74657374" + zeros(60)
	want := map[string]any{
		"header": map[string]any{
			"version": "0300", "att_key_type": "0200", "att_key_data_0": "00000000", "qe_svn": "0800", "pce_svn": "0d00",
			"vendor_id": "939a7233f79c4ca9940a0db3957f0607", "user_data": "dccde9b31ce8860548173bb4a2a57a1600000000",
		},
		"body": map[string]any{
			"cpu_svn": "06060c0cffff00000000000000000000", "misc_select": "01000000", "reserved1": zeros(12),
			"isv_ext_prod_id": zeros(16), "attributes.flags": "0700000000000000", "attributes.xfrm": "e700000000000000",
			"mr_enclave": "8f173e4613ff05c52aaf04162d234edae8c9977eae47eb2299ae16a553011c68", "reserved2": zeros(32),
			"mr_signer": "83d719e77deaca1470f6baf62a4d774303c899db69020f9c70ee1dfc08c7ce9e", "reserved3": zeros(32),
			"config_id": zeros(64), "isv_prod_id": "0000", "isv_svn": "0000", "config_svn": "0000", "reserved4": zeros(42),
			"isv_family_id": zeros(16), "report_data": reportData,
		},
		"report_data":          reportData,
		"init_data":            zeros(64),
		"platform_instance_id": "7a3a6941065cd5060bd93d3db2cfc0c8",
	}
	gotJSON, _ := json.Marshal(got)
	wantJSON, _ := json.Marshal(want)
	if !bytes.Equal(gotJSON, wantJSON) {
		t.Errorf("claims\n got %s\nwant %s", gotJSON, wantJSON)
	}
}

// TestRealQuote verifies what the real quote proves without SGX
// collateral (none was captured with it): Intel's PCK chain to the real
// SGX Root CA, the QE report signed by the PCK key and binding the
// attestation key, and the quote signature.
func TestRealQuote(t *testing.T) {
	at := func(when time.Time) *Verifier {
		v, err := New(Options{DCAP: dcap.Options{Now: func() time.Time { return when }}})
		noError(t, err)
		return v
	}
	raw := occlumQuote(t)
	v := at(realTime)
	noError(t, verifySignatures(v, raw))
	// Every byte flipped against the real chain and signatures.
	dcaptest.TamperAll(t, raw, quoteRegions(mustParse(t, raw)), func(b []byte) error { return verifySignatures(v, b) })
	// After the PCK certificate expired.
	if err := verifySignatures(at(time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)), raw); !errors.Is(err, dcap.ErrCertificateValidity) {
		t.Errorf("expired PCK certificate: %v, want ErrCertificateValidity", err)
	}
}

func verifySignatures(v *Verifier, raw []byte) error {
	q, err := ParseQuote(raw)
	if err != nil {
		return err
	}
	_, err = v.dcap.VerifySignatures(&q.Quote)
	return err
}

// TestEvaluate runs full verification of the real quote re-signed by the
// test PKI with SGX collateral for its platform.
func TestEvaluate(t *testing.T) {
	p := newTestPKI(t)
	coll := sgxCollateral(t)
	quote := p.quote(t, nil)
	claims, err := evaluate(t, p.verifier(t, coll, true), quote, verifier.Expected{ReportData: []byte("test")})
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"tcb_status": dcap.StatusUpToDate, "sgx_type": "Scalable", "tcb_eval_num": 17,
		"platform_instance_id": "7a3a6941065cd5060bd93d3db2cfc0c8", "collateral_expiration_status": "0"} {
		if claims[k] != want {
			t.Errorf("%s = %#v, want %#v", k, claims[k], want)
		}
	}
	body := claims["body"].(map[string]any)
	if body["mr_enclave"] != "8f173e4613ff05c52aaf04162d234edae8c9977eae47eb2299ae16a553011c68" {
		t.Errorf("mr_enclave = %v", body["mr_enclave"])
	}
	// The enclave runs in debug mode: refused unless allowed.
	if _, err := evaluate(t, p.verifier(t, coll, false), quote, verifier.Expected{}); !errors.Is(err, ErrDebugEnclave) {
		t.Errorf("debug enclave: %v, want ErrDebugEnclave", err)
	}
	production := p.quote(t, func(r []byte) { r[offAttributes] &^= attrDebug })
	if _, err := evaluate(t, p.verifier(t, coll, false), production, verifier.Expected{}); err != nil {
		t.Errorf("production enclave: %v", err)
	}
	uninit := p.quote(t, func(r []byte) { r[offAttributes] &^= attrInit })
	if _, err := evaluate(t, p.verifier(t, coll, true), uninit, verifier.Expected{}); !errors.Is(err, ErrEnclaveNotInitialized) {
		t.Errorf("no INIT attribute: %v, want ErrEnclaveNotInitialized", err)
	}
}

// TestBindings checks report data (the nonce's digest) and CONFIGID
// (initdata digest).
func TestBindings(t *testing.T) {
	p := newTestPKI(t)
	digest := sha512.Sum384([]byte("runtime data"))
	initdata := sha512.Sum384([]byte("initdata"))
	quote := p.quote(t, func(r []byte) {
		copy(r[offReportData:], verifier.Fit(digest[:], 64))
		copy(r[offConfigID:], verifier.Fit(initdata[:], 64))
	})
	v := p.verifier(t, sgxCollateral(t), true)
	claims, err := evaluate(t, v, quote, verifier.Expected{ReportData: digest[:], InitDataDigest: initdata[:]})
	if err != nil {
		t.Fatal(err)
	}
	if claims["init_data"] != claims["body"].(map[string]any)["config_id"] {
		t.Errorf("init_data %v is not config_id", claims["init_data"])
	}
	other := sha512.Sum384([]byte("another nonce"))
	if _, err := evaluate(t, v, quote, verifier.Expected{ReportData: other[:]}); !errors.Is(err, verifier.ErrReportDataMismatch) {
		t.Errorf("wrong nonce: %v, want ErrReportDataMismatch", err)
	}
	if _, err := evaluate(t, v, quote, verifier.Expected{InitDataDigest: other[:]}); !errors.Is(err, verifier.ErrInitDataMismatch) {
		t.Errorf("wrong initdata: %v, want ErrInitDataMismatch", err)
	}
}

// TestTCBStatus matches the platform against SGX TCB levels and folds the
// quoting enclave's status in.
func TestTCBStatus(t *testing.T) {
	p := newTestPKI(t)
	quote := p.quote(t, nil)
	tests := []struct {
		name string
		edit func(c *dcaptest.Collateral)
		want string
		err  error
	}{
		{"up to date", func(*dcaptest.Collateral) {}, dcap.StatusUpToDate, nil},
		{"only the older level applies", func(c *dcaptest.Collateral) {
			dcaptest.Level(c.TCBInfo, 0)["tcb"].(map[string]any)["pcesvn"] = 200
		}, dcap.StatusOutOfDate, nil},
		{"configuration needed", func(c *dcaptest.Collateral) {
			dcaptest.Level(c.TCBInfo, 0)["tcbStatus"] = dcap.StatusConfigurationNeeded
		}, dcap.StatusConfigurationNeeded, nil},
		{"QE out of date", func(c *dcaptest.Collateral) {
			dcaptest.Level(c.QEIdentity, 0)["tcbStatus"] = dcap.StatusOutOfDate
		}, dcap.StatusOutOfDate, nil},
		{"revoked", func(c *dcaptest.Collateral) {
			dcaptest.Level(c.TCBInfo, 0)["tcbStatus"] = dcap.StatusRevoked
		}, "", dcap.ErrTCBRevoked},
		{"below every level", func(c *dcaptest.Collateral) {
			for i := range 2 {
				dcaptest.Level(c.TCBInfo, i)["tcb"].(map[string]any)["pcesvn"] = 200
			}
		}, "", dcap.ErrTCBNotSupported},
		{"QE below every level", func(c *dcaptest.Collateral) {
			dcaptest.Level(c.QEIdentity, 0)["tcb"].(map[string]any)["isvsvn"] = 200
		}, "", dcap.ErrTCBNotSupported},
		{"another QE", func(c *dcaptest.Collateral) {
			c.QEIdentity["isvprodid"] = 2
		}, "", dcap.ErrQEIdentityMismatch},
		{"TDX collateral", func(c *dcaptest.Collateral) { c.TCBInfo["id"] = "TDX" }, "", dcap.ErrCollateralFormat},
		{"TD QE identity", func(c *dcaptest.Collateral) { c.QEIdentity["id"] = "TD_QE" }, "", dcap.ErrCollateralFormat},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := sgxCollateral(t)
			tc.edit(c)
			claims, err := evaluate(t, p.verifier(t, c, true), quote, verifier.Expected{})
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("%v, want %v", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if claims["tcb_status"] != tc.want {
				t.Errorf("tcb_status %v, want %v", claims["tcb_status"], tc.want)
			}
		})
	}
}

// TestEndorsements: revoked, expired and swapped certificates.
func TestEndorsements(t *testing.T) {
	p := newTestPKI(t)
	quote := p.quote(t, nil)
	revoked := func(edit func(c *dcaptest.Collateral)) *dcaptest.Collateral {
		c := sgxCollateral(t)
		edit(c)
		return c
	}
	for name, c := range map[string]*dcaptest.Collateral{
		"PCK certificate on the PCK CRL": revoked(func(c *dcaptest.Collateral) { c.PCKRevoked = []*big.Int{p.PCK.SerialNumber} }),
		"PCK CA on the root CRL":         revoked(func(c *dcaptest.Collateral) { c.RootRevoked = []*big.Int{p.CA.SerialNumber} }),
	} {
		if _, err := evaluate(t, p.verifier(t, c, true), quote, verifier.Expected{}); !errors.Is(err, dcap.ErrPCKRevoked) {
			t.Errorf("%s: %v, want ErrPCKRevoked", name, err)
		}
	}
	dir := p.Dir(t, sgxCollateral(t))
	at := func(when time.Time, roots ...*x509.Certificate) *Verifier {
		v, err := New(Options{AllowDebug: true, DCAP: dcap.Options{CollateralDir: dir, Roots: roots, Now: func() time.Time { return when }}})
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if _, err := evaluate(t, at(dcaptest.Time.AddDate(0, 2, 0), p.Root), quote, verifier.Expected{}); !errors.Is(err, dcap.ErrCollateralExpired) {
		t.Errorf("expired collateral: %v, want ErrCollateralExpired", err)
	}
	if _, err := evaluate(t, at(time.Date(2041, 1, 1, 0, 0, 0, 0, time.UTC), p.Root), quote, verifier.Expected{}); !errors.Is(err, dcap.ErrCertificateValidity) {
		t.Errorf("expired certificates: %v, want ErrCertificateValidity", err)
	}
	// The test PKI is not Intel's.
	if _, err := evaluate(t, at(dcaptest.Time), quote, verifier.Expected{}); !errors.Is(err, dcap.ErrPCKChain) {
		t.Errorf("test PKI against Intel's root: %v, want ErrPCKChain", err)
	}
	// Intel's real chain in a quote the test key signed, and the reverse.
	q := mustParse(t, quote)
	q.PCKChain = mustParse(t, occlumQuote(t)).PCKChain
	if _, err := evaluate(t, at(realTime), marshalQuote(q), verifier.Expected{}); !errors.Is(err, dcap.ErrQEReportSignature) {
		t.Errorf("Intel chain, test QE signature: %v, want ErrQEReportSignature", err)
	}
	other := newTestPKI(t)
	q.PCKChain = dcaptest.PEMCerts(other.PCK, other.CA, other.Root)
	if _, err := evaluate(t, at(dcaptest.Time, p.Root), marshalQuote(q), verifier.Expected{}); !errors.Is(err, dcap.ErrPCKChain) {
		t.Errorf("another PKI's chain: %v, want ErrPCKChain", err)
	}
}

func TestEvaluateRejectsBadEvidence(t *testing.T) {
	v, err := New(Options{DCAP: dcap.Options{CollateralDir: t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range []string{`[]`, `{"quote":1}`, `{"quote":"***"}`, `{"quote":""}`, `{}`} {
		if _, err := v.Evaluate(context.Background(), json.RawMessage(ev), verifier.Expected{}); !errors.Is(err, ErrEvidenceEncoding) {
			t.Errorf("%s: %v, want ErrEvidenceEncoding", ev, err)
		}
	}
	if _, err := evaluate(t, v, testutil.TrusteeVerifierData(t, "tdx_quote_4.dat"), verifier.Expected{}); !errors.Is(err, dcap.ErrTeeType) {
		t.Errorf("TDX quote: %v, want ErrTeeType", err)
	}
}

// quoteRegions maps every byte of a v3 quote to the check that catches a
// change to it.
func quoteRegions(q *Quote) dcaptest.Regions {
	var rs dcaptest.Regions
	rs.Header(dcap.ErrQuoteSignature) // reserved in v3, signed
	rs.Add("enclave report", dcap.EnclaveReportSize, dcap.ErrQuoteSignature)
	rs.Signature(&q.SignatureData, q.Header.Version)
	return rs
}

func TestRegionsCoverQuote(t *testing.T) {
	q := mustParse(t, occlumQuote(t))
	regions := quoteRegions(q)
	if end, n := regions[len(regions)-1].End, len(marshalQuote(q)); end != n {
		t.Fatalf("regions end at %d, quote at %d", end, n)
	}
}

// TestTamperFullVerification flips the bytes of a quote that passes full
// verification with collateral.
func TestTamperFullVerification(t *testing.T) {
	p := newTestPKI(t)
	v := p.verifier(t, sgxCollateral(t), true)
	raw := p.quote(t, nil)
	check := func(b []byte) error {
		_, err := v.VerifyQuote(context.Background(), b, verifier.Expected{})
		return err
	}
	if err := check(raw); err != nil {
		t.Fatal(err)
	}
	// The PEM of the test chain is left out: Go's test certificates end in
	// base64 whose unused low bits a one-bit flip may change without
	// changing the certificate (Intel's real chain is flipped above).
	regions := quoteRegions(mustParse(t, raw))
	last := &regions[len(regions)-1]
	last.End = last.Start
	dcaptest.TamperAll(t, raw, regions, check)
}
