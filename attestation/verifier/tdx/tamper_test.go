package tdx

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
)

// region is a byte range of a quote and the errors a change in it may
// cause.
type region struct {
	name       string
	start, end int
	want       []error
}

// quoteRegions maps every byte of a quote's layout to the check that must
// catch a change to it.
func quoteRegions(q *Quote) []region {
	var rs []region
	off := 0
	add := func(name string, n int, want ...error) {
		rs = append(rs, region{name, off, off + n, want})
		off += n
	}
	add("version", 2, verifier.ErrMalformedEvidence)
	add("attestation key type", 2, ErrAttestationKey)
	add("tee type", 4, ErrTeeType)
	add("QE and PCE SVN", 4, ErrQuoteSignature)
	add("QE vendor", 16, ErrQEVendor)
	add("user data", 20, ErrQuoteSignature)
	if q.Header.Version == 5 {
		add("body type", 2, verifier.ErrMalformedEvidence)
		add("body size", 4, ErrQuoteFormat)
	}
	add("TD report", int(q.BodySize), ErrQuoteSignature)
	add("signature data size", 4, ErrQuoteFormat)
	add("quote signature", ecdsaSize, ErrQuoteSignature)
	add("attestation key", ecdsaSize, ErrQEReportData)
	add("certification data type", 2, ErrCertificationData)
	add("certification data size", 4, ErrQuoteFormat)
	add("QE report", qeReportSize, ErrQEReportSignature)
	add("QE report signature", ecdsaSize, ErrQEReportSignature)
	add("QE auth data size", 2, ErrQuoteFormat)
	add("QE auth data", len(q.QEAuthData), ErrQEReportData)
	add("PCK chain type", 2, ErrCertificationData)
	add("PCK chain size", 4, ErrQuoteFormat)
	add("PCK chain", len(q.PCKChain), ErrPCKChainFormat, ErrPCKChain)
	return rs
}

func isAny(err error, targets []error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}

// tamperAll flips bytes of every region and checks each change is caught
// by the region's check. Every byte is flipped with 0xff; every third byte
// also gets a one-bit flip.
func tamperAll(t *testing.T, raw []byte, check func([]byte) error) {
	t.Helper()
	regions := quoteRegions(mustParse(t, raw))
	if end := regions[len(regions)-1].end; end != len(marshalQuote(mustParse(t, raw))) {
		t.Fatalf("regions end at %d, quote at %d", end, len(marshalQuote(mustParse(t, raw))))
	}
	buf := bytes.Clone(raw)
	for _, r := range regions {
		for i := r.start; i < r.end; i++ {
			for _, mask := range []byte{0xff, 0x01} {
				if mask == 0x01 && i%3 != 0 {
					continue
				}
				buf[i] ^= mask
				err := check(buf)
				buf[i] ^= mask
				if !isAny(err, r.want) {
					t.Fatalf("%s byte %d ^ %#x: %v, want one of %v", r.name, i-r.start, mask, err, r.want)
				}
			}
		}
	}
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
	v, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2025, 11, 1, 0, 0, 0, 0, time.UTC)
	check := func(b []byte) error {
		q, err := ParseQuote(b)
		if err != nil {
			return err
		}
		chain, err := v.verifiedChain(q.PCKChain, at)
		if err != nil {
			return err
		}
		return verifyQuoteSignatures(q, chain.leafKey)
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
	certs, err := parsePEMCerts(base.PCKChain)
	if err != nil {
		t.Fatal(err)
	}
	testPKI := newTestPKI(t, sgxExtensionOf(t, sampleQuote(t)))
	tests := []struct {
		name  string
		chain []byte
		want  error
	}{
		{"another platform's Intel chain", other.PCKChain, ErrQEReportSignature},
		{"reversed order", pemCerts(certs[2], certs[1], certs[0]), ErrPCKChain},
		{"no root", pemCerts(certs[0], certs[1]), ErrPCKChainFormat},
		{"leaf twice", pemCerts(certs[0], certs[0], certs[2]), ErrPCKChain},
		{"test PKI leaf under Intel's root", pemCerts(testPKI.pck, testPKI.ca, certs[2]), ErrPCKChain},
		{"test PKI chain", pemCerts(testPKI.pck, testPKI.ca, testPKI.root), ErrPCKChain},
		{"PEM of another type", append(bytes.Clone(base.PCKChain[:len(base.PCKChain)-1]), []byte("-----BEGIN X-----\nAA==\n-----END X-----\n")...), ErrPCKChainFormat},
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
		case covered[i] && !isAny(err, []error{ErrRTMRMismatch, ErrEventLogFormat}):
			t.Fatalf("byte %d: %v, want a mismatch or a malformed log", i, err)
		case err != nil && !isAny(err, []error{ErrRTMRMismatch, ErrEventLogFormat}):
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
	if _, err := v.Evaluate(context.Background(), evidenceJSON(marshalQuote(wrongVersion), nil), verifier.Expected{}); !errors.Is(err, ErrQuoteVersion) {
		t.Errorf("version 3: %v", err)
	}
}
