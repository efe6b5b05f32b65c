package azsnpvtpm

import (
	"context"
	"testing"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
)

// FuzzEvaluate runs whole evidence documents through the verifier.
func FuzzEvaluate(f *testing.F) {
	f.Add(fixture(f, "evidence-v1.json"))
	f.Add(fixture(f, "evidence-v2.json"))
	v := newVerifier(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := v.Evaluate(context.Background(), b, verifier.Expected{ReportData: []byte("challenge")})
		if err == nil && out[0].Claims["tpm"] == nil {
			t.Fatal("verified evidence without vTPM claims")
		}
	})
}
