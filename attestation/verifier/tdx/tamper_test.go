package tdx

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/dcap"
	"github.com/cocoon-cc/cocoon/attestation/verifier/dcap/dcaptest"
)

// quoteRegions maps every byte of a quote's layout to the check that must
// catch a change to it.
func quoteRegions(q *Quote) dcaptest.Regions {
	var rs dcaptest.Regions
	rs.Header(dcap.ErrTeeType)
	if q.Header.Version == 5 {
		rs.Add("body type", 2, verifier.ErrMalformedEvidence)
		rs.Add("body size", 4, dcap.ErrQuoteFormat)
	}
	rs.Add("TD report", int(q.BodySize), dcap.ErrQuoteSignature)
	rs.Signature(&q.SignatureData, q.Header.Version)
	return rs
}

// tamperAll tampers with every region of a quote.
func tamperAll(t *testing.T, raw []byte, check func([]byte) error) {
	t.Helper()
	regions := quoteRegions(mustParse(t, raw))
	if end := regions[len(regions)-1].End; end != len(marshalQuote(mustParse(t, raw))) {
		t.Fatalf("regions end at %d, quote at %d", end, len(marshalQuote(mustParse(t, raw))))
	}
	dcaptest.TamperAll(t, raw, regions, check)
}

// TestTamperFullVerification tampers with a real quote that otherwise
// passes full DCAP verification with real collateral.
func TestTamperFullVerification(t *testing.T) {
	v := sampleVerifier(t)
	raw := sampleQuote(t)
	if _, err := v.VerifyQuote(context.Background(), raw, nil, verifier.Expected{}); err != nil {
		t.Fatal(err)
	}
	tamperAll(t, raw, func(b []byte) error {
		_, err := v.VerifyQuote(context.Background(), b, nil, verifier.Expected{})
		return err
	})
}

// TestTamperSignatures tampers with real quotes that have no collateral
// here: everything up to the QE report and quote signatures is checked.
func TestTamperSignatures(t *testing.T) {
	at := time.Date(2025, 11, 1, 0, 0, 0, 0, time.UTC)
	v, err := New(Options{Now: func() time.Time { return at }})
	if err != nil {
		t.Fatal(err)
	}
	check := func(b []byte) error {
		q, err := ParseQuote(b)
		if err != nil {
			return err
		}
		_, err = v.dcap.VerifySignatures(&q.Quote)
		return err
	}
	for _, name := range []string{"tdx_quote_5.dat", "cos"} {
		raw := trusteeData(t, "tdx_quote_5.dat")
		if name == "cos" {
			raw = goTDXData(t, "ccel/cos-113-tdx-quote.dat")
		}
		t.Run(name, func(t *testing.T) {
			if err := check(raw); err != nil {
				t.Fatal(err)
			}
			tamperAll(t, raw, check)
		})
	}
}

// TestSwapCertificates puts other valid chains into a valid quote.
func TestSwapCertificates(t *testing.T) {
	// Every swap fails before collateral is needed; both real chains are
	// valid at this time.
	v, err := New(Options{CollateralDir: t.TempDir(), Now: func() time.Time { return time.Date(2025, 11, 1, 0, 0, 0, 0, time.UTC) }})
	if err != nil {
		t.Fatal(err)
	}
	base := mustParse(t, sampleQuote(t))
	other := mustParse(t, trusteeData(t, "tdx_quote_5.dat"))
	chain, err := dcap.ParsePCKChain(base.PCKChain)
	if err != nil {
		t.Fatal(err)
	}
	certs := []*x509.Certificate{chain.Leaf, chain.Intermediate, chain.Root}
	testPKI := newTestPKI(t, sgxExtensionOf(t, sampleQuote(t)))
	tests := []struct {
		name  string
		chain []byte
		want  error
	}{
		{"another platform's Intel chain", other.PCKChain, dcap.ErrQEReportSignature},
		{"reversed order", dcaptest.PEMCerts(certs[2], certs[1], certs[0]), dcap.ErrPCKChain},
		{"no root", dcaptest.PEMCerts(certs[0], certs[1]), dcap.ErrPCKChainFormat},
		{"leaf twice", dcaptest.PEMCerts(certs[0], certs[0], certs[2]), dcap.ErrPCKChain},
		{"test PKI leaf under Intel's root", dcaptest.PEMCerts(testPKI.PCK, testPKI.CA, certs[2]), dcap.ErrPCKChain},
		{"test PKI chain", dcaptest.PEMCerts(testPKI.PCK, testPKI.CA, testPKI.Root), dcap.ErrPCKChain},
		{"PEM of another type", append(bytes.Clone(base.PCKChain[:len(base.PCKChain)-1]), []byte("-----BEGIN X-----\nAA==\n-----END X-----\n")...), dcap.ErrPCKChainFormat},
	}
	for _, tc := range tests {
		q := *base
		q.PCKChain = tc.chain
		if _, err := v.VerifyQuote(context.Background(), marshalQuote(&q), nil, verifier.Expected{}); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

// TestTamperEventLog flips bytes of a real event log that belongs to its
// real quote. Digests and framing are covered; event data is not covered
// by the RTMRs (digest_matches_event tells when it is) and may only fail
// to parse; every fifth byte of it is flipped.
func TestTamperEventLog(t *testing.T) {
	q := mustParse(t, goTDXData(t, "ccel/cos-113-tdx-quote.dat"))
	data := goTDXData(t, "ccel/ccel_data.dat")
	log, err := ParseEventLog(data)
	if err != nil {
		t.Fatal(err)
	}
	covered := make([]bool, len(data))
	off := 32 + len(specIDSignature) + 8 + 4 + 4 + 1 // Spec ID event with one algorithm, no vendor info
	for _, ev := range log.Events {
		header := 12 + len(ev.Digests)*(2+48) + 4
		for i := off; i < off+header; i++ {
			covered[i] = ev.Index >= 1 && ev.Index <= 4
		}
		off += header + len(ev.Data)
	}
	end := off
	for i := 0; i < end; i++ {
		if !covered[i] && i%5 != 0 {
			continue
		}
		data[i] ^= 0xff
		_, err := verifyEventLog(data, q)
		data[i] ^= 0xff
		switch {
		case covered[i] && !errors.Is(err, ErrRTMRMismatch) && !errors.Is(err, ErrEventLogFormat):
			t.Fatalf("byte %d: %v, want a mismatch or a malformed log", i, err)
		case err != nil && !errors.Is(err, ErrRTMRMismatch) && !errors.Is(err, ErrEventLogFormat):
			t.Fatalf("byte %d: unexpected error %v", i, err)
		}
	}
}

// TestTamperEvidenceJSON: truncated or re-encoded evidence never panics.
func TestTamperEvidenceJSON(t *testing.T) {
	v := sampleVerifier(t)
	ev := evidenceJSON(sampleQuote(t), nil)
	for n := 0; n < len(ev); n += 7 {
		out, err := v.Evaluate(context.Background(), ev[:n], verifier.Expected{})
		if err == nil || out != nil {
			t.Fatalf("evidence cut at %d accepted", n)
		}
		if !errors.Is(err, verifier.ErrMalformedEvidence) {
			t.Fatalf("evidence cut at %d: %v", n, err)
		}
	}
	wrongVersion := mustParse(t, sampleQuote(t))
	wrongVersion.Header.Version = 3
	if _, err := v.Evaluate(context.Background(), evidenceJSON(marshalQuote(wrongVersion), nil), verifier.Expected{}); !errors.Is(err, dcap.ErrQuoteVersion) {
		t.Errorf("version 3: %v", err)
	}
}
