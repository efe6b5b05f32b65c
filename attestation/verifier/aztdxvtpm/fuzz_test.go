package aztdxvtpm

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/cocoon-cc/cocoon/internal/testutil"
)

// FuzzEvaluate runs whole evidence documents through the verifier with
// collateral for the test PKI.
func FuzzEvaluate(f *testing.F) {
	p := newTestPKI(f)
	ev, want := realEvidence(f)
	f.Add(testutil.TrusteeVerifierData(f, "az-tdx-vtpm/evidence-v0.json"))
	signed, err := json.Marshal(map[string]any{"tpm_quote": map[string]any{"signature": ev.TPMQuote.Signature,
		"message": ev.TPMQuote.Message, "pcrs": ev.TPMQuote.PCRs}, "hcl_report": ev.HCLReport, "td_quote": p.evidence(f).TDQuote})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(signed)
	v := p.verifier(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		out, err := v.Evaluate(context.Background(), b, want)
		if err == nil && out[0].Claims["tpm"] == nil {
			t.Fatal("verified evidence without vTPM claims")
		}
	})
}
