package snp

import (
	"bytes"
	"encoding/pem"
	"errors"
	"reflect"
	"testing"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/verify/trust"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
)

// FuzzParseReport: any input is parsed or refused as malformed, and what
// parses keeps its claims through the JSON form.
func FuzzParseReport(f *testing.F) {
	for _, s := range samples(f) {
		f.Add(s.raw)
		f.Add(s.raw[:0x2a0])
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, err := ParseReport(raw)
		if err != nil {
			if !errors.Is(err, verifier.ErrMalformedEvidence) {
				t.Fatalf("unclassified: %v", err)
			}
			return
		}
		Claims(r)
		j1, _ := (&Evidence{Report: r}).MarshalJSON()
		ev, err := ParseEvidence(j1)
		if err != nil {
			t.Fatalf("own JSON refused: %v\n%s", err, j1)
		}
		if j2, _ := ev.MarshalJSON(); !bytes.Equal(j1, j2) {
			t.Fatalf("JSON form not stable:\n%s\n%s", j1, j2)
		}
		if !reflect.DeepEqual(Claims(r), Claims(ev.Report)) {
			t.Fatal("JSON form changed the claims")
		}
	})
}

// FuzzParseEvidence: JSON evidence is parsed or refused as malformed, and
// parsed evidence round-trips.
func FuzzParseEvidence(f *testing.F) {
	f.Add(trusteeEvidence(f))
	for _, s := range samples(f) {
		r, err := ParseReport(s.raw)
		if err != nil {
			f.Fatal(err)
		}
		b, _ := (&Evidence{Report: r, Certs: s.certs}).MarshalJSON()
		f.Add(b)
	}
	f.Add([]byte(`{"attestation_report":{},"cert_chain":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := ParseEvidence(data)
		if err != nil {
			if !errors.Is(err, verifier.ErrMalformedEvidence) {
				t.Fatalf("unclassified: %v", err)
			}
			return
		}
		j, _ := ev.MarshalJSON()
		again, err := ParseEvidence(j)
		if err != nil {
			t.Fatalf("own JSON refused: %v", err)
		}
		if !bytes.Equal(again.Report.Bytes(), ev.Report.Bytes()) {
			t.Fatal("report changed through JSON")
		}
	})
}

// FuzzCertChainJSON covers the cert_chain member of the evidence.
func FuzzCertChainJSON(f *testing.F) {
	f.Add([]byte(`null`))
	f.Add([]byte(`[{"cert_type":"VCEK","data":[48,130]},{"cert_type":{"OTHER":"ecae0c0f-9502-43b1-afa2-0ae2e0d565b6"},"data":[]}]`))
	f.Add([]byte(`[{"cert_type":"ARK","data":[1]},{"cert_type":"ASK","data":[2]},{"cert_type":"VLEK","data":[3]},{"cert_type":"CRL","data":[]}]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := certChainFromJSON(data)
		if err != nil {
			return
		}
		var b bytes.Buffer
		certChainToJSON(&b, c)
		if again, err := certChainFromJSON(b.Bytes()); err != nil || !equalChains(c, again) {
			t.Fatalf("cert chain round trip: %v", err)
		}
	})
}

func equalChains(a, b CertChain) bool {
	return bytes.Equal(a.ARK, b.ARK) && bytes.Equal(a.ASK, b.ASK) && bytes.Equal(a.VCEK, b.VCEK) && bytes.Equal(a.VLEK, b.VLEK)
}

// FuzzCertificates covers what reads certificates from files and the
// evidence: PEM or DER, KDS cert_chain bundles, and VCEK/VLEK extensions.
func FuzzCertificates(f *testing.F) {
	for _, s := range samples(f) {
		f.Add(s.certs.VCEK)
		f.Add(s.certs.VLEK)
	}
	f.Add(fixture(f, snpData+"test-vcek-invalid-legacy.der"))
	f.Add(trust.AskArkTurinVcekBytes)
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: fixture(f, snpData+"test-vlek.der")}))
	f.Fuzz(func(t *testing.T, data []byte) {
		parseCertChainPEM(data)
		der, err := toDER(data)
		if err != nil {
			return
		}
		for _, signer := range []abi.ReportSigner{abi.VcekReportSigner, abi.VlekReportSigner} {
			if _, err := parseEndorsement(der, signer); err != nil && !errors.Is(err, verifier.ErrMalformedEvidence) && !errors.Is(err, verifier.ErrEndorsement) {
				t.Fatalf("unclassified: %v", err)
			}
		}
	})
}

// FuzzEvaluate runs the whole verification on mutated evidence: the
// verdict is a classified error, or claims for evidence that rebuilds the
// genuine report byte for byte.
func FuzzEvaluate(f *testing.F) {
	genuine := trusteeEvidence(f)
	f.Add(genuine)
	ev, err := ParseEvidence(genuine)
	if err != nil {
		f.Fatal(err)
	}
	v := newVerifier(f, Options{DisableKDS: true})
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := v.Evaluate(ctx, data, verifier.Expected{})
		if err != nil {
			if !classified(err) {
				t.Fatalf("unclassified: %v", err)
			}
			return
		}
		got, perr := ParseEvidence(data)
		if perr != nil || !bytes.Equal(got.Report.Bytes(), ev.Report.Bytes()) {
			t.Fatal("accepted evidence that is not the genuine report")
		}
	})
}
