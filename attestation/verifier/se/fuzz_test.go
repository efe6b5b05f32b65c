package se_test

import (
	"testing"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/se"
	"github.com/cocoon-cc/cocoon/attestation/verifier/se/sesttest"
)

// FuzzEvaluate: any evidence is parsed and verified without a panic, and
// only what the Ultravisor answered passes.
func FuzzEvaluate(f *testing.F) {
	v, uv, _ := setup(f)
	rd := reportData("n")
	_, r := evidence(f, v, uv, "s", rd)
	good, _ := r.MarshalJSON()
	f.Add(good)
	f.Add([]byte(`{"measurement":"","additional_data":"","user_data":"","cuid":"","encr_measurement_key":"","encr_request_nonce":"","image_hdr_tags":""}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, err := v.Evaluate(ctx, b, verifier.Expected{ReportData: rd})
		if err == nil {
			r2, _ := se.ParseEvidence(b)
			if string(r2.Measurement) != string(r.Measurement) {
				t.Fatalf("accepted a measurement the Ultravisor did not make")
			}
		}
	})
}

// FuzzParseHeader: any bytes parse as an SE header or fail, never panic.
func FuzzParseHeader(f *testing.F) {
	f.Add(sesttest.Header())
	f.Add([]byte("IBMSecEx"))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = se.ParseHeader(b)
	})
}

// FuzzCheckChallenge: only the challenges the verifier issued for the
// session pass.
func FuzzCheckChallenge(f *testing.F) {
	v, _, _ := setup(f)
	ch, _ := v.Challenge(ctx, "s")
	f.Add(ch, "s")
	f.Add(`{"encr_request_nonce":"AAAA"}`, "s")
	f.Fuzz(func(t *testing.T, nonce, base string) {
		if v.CheckChallenge(nonce, base) == nil && base != "s" {
			t.Fatalf("challenge of session %q accepted for %q", "s", base)
		}
	})
}
