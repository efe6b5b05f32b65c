package tpm_test

import (
	"encoding/base64"
	"errors"
	"slices"
	"testing"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	vtpm "github.com/cocoon-cc/cocoon/attestation/verifier/tpm"
)

// realEvidence is every real sample: Trustee's and the captured swtpm ones.
func realEvidence(t testing.TB) [][]byte {
	return [][]byte{
		fixture(t),
		loadSample(t, "swtpm-rsa.json").Evidence,
		loadSample(t, "swtpm-ecc.json").Evidence,
	}
}

// FuzzParseEvidence: run it with -fuzzminimizetime=1s; minimizing a 3 KB
// JSON input otherwise takes the worker's whole default minute, and a short
// -fuzztime then fuzzes nothing.
func FuzzParseEvidence(f *testing.F) {
	for _, raw := range realEvidence(f) {
		f.Add(raw)
	}
	v := vtpm.New(vtpm.Options{})
	f.Fuzz(func(t *testing.T, raw []byte) {
		rep, err := vtpm.ParseEvidence(raw)
		if err != nil {
			if !errors.Is(err, verifier.ErrMalformedEvidence) {
				t.Fatalf("parse error %v does not wrap ErrMalformedEvidence", err)
			}
			return
		}
		for _, i := range rep.Quoted() {
			if i >= len(rep.PCRs) {
				t.Fatalf("quoted PCR %d of %d accepted", i, len(rep.PCRs))
			}
		}
		// Verification of parsed evidence must fail cleanly, never panic.
		_ = v.Verify(rep, verifier.Expected{ReportData: []byte{1}, InitDataDigest: []byte{2}})
		_ = vtpm.Claims(rep)
	})
}

func FuzzParseAttest(f *testing.F) {
	for _, raw := range realEvidence(f) {
		ev := decodeEvidence(f, raw)
		msg, _ := base64.StdEncoding.DecodeString(ev.TPMQuote.Message)
		f.Add(msg)
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		a, err := vtpm.ParseAttest(msg)
		if err != nil {
			return
		}
		if len(a.ExtraData)+len(a.QualifiedSigner)+len(a.PCRDigest) > len(msg) {
			t.Fatal("decoded more bytes than given")
		}
		for _, sel := range a.Selection {
			if !slices.IsSorted(sel.PCRs) {
				t.Fatalf("selection %v not ascending", sel.PCRs)
			}
		}
	})
}

func FuzzParseSignature(f *testing.F) {
	for _, raw := range realEvidence(f) {
		ev := decodeEvidence(f, raw)
		sig, _ := base64.StdEncoding.DecodeString(ev.TPMQuote.Signature)
		f.Add(sig)
	}
	f.Fuzz(func(t *testing.T, sig []byte) {
		s, err := vtpm.ParseSignature(sig)
		if err == nil && (s.RSA == nil) == (s.R == nil) {
			t.Fatalf("signature %+v is neither RSA nor ECDSA", s)
		}
	})
}
