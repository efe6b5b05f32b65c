package cca

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/cca/ccatest"
)

// FuzzParseToken: every input is a token or a typed refusal; parsed ones
// verify or fail cleanly. Run with -fuzzminimizetime=1s.
func FuzzParseToken(f *testing.F) {
	tok := exampleToken(f)
	f.Add(tok)
	f.Add(mustToken(f, issuer(f), make([]byte, 64)))
	v := fixtureVerifier(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := ParseToken(b); err != nil {
			if !errors.Is(err, verifier.ErrMalformedEvidence) {
				t.Fatalf("parse error %v does not wrap ErrMalformedEvidence", err)
			}
			return
		}
		_, _ = v.VerifyToken(b, verifier.Expected{ReportData: []byte{1}, InitDataDigest: []byte{2}})
	})
}

func FuzzEvaluate(f *testing.F) {
	f.Add([]byte(ccatest.Evidence(exampleToken(f))))
	f.Add([]byte(`{"token":"2QGPoA=="}`))
	v := fixtureVerifier(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := v.Evaluate(context.Background(), json.RawMessage(b), verifier.Expected{ReportData: []byte{1}}); err == nil {
			t.Fatal("fuzzed evidence verified")
		}
	})
}

func FuzzStores(f *testing.F) {
	f.Add(fixture(f, ccaData+"/conf/tastore.json"))
	f.Add(fixture(f, ccaData+"/conf/rvstore.json"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := ParseTrustAnchors(b); err != nil && !errors.Is(err, ErrStore) {
			t.Fatalf("untyped trust anchor error %v", err)
		}
		if _, err := ParseReferenceValues(b); err != nil && !errors.Is(err, ErrStore) {
			t.Fatalf("untyped reference value error %v", err)
		}
	})
}
