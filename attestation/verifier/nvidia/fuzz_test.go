package nvidia_test

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"testing"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/nvidia"
)

// FuzzParseReport: every input is a report or a typed refusal. Run with
// -fuzzminimizetime=1s.
func FuzzParseReport(f *testing.F) {
	report, _ := hex.DecodeString(fixtureDevice(f, "1").Evidence)
	f.Add(report)
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := nvidia.ParseReport(b)
		if err != nil {
			if !errors.Is(err, verifier.ErrMalformedEvidence) {
				t.Fatalf("parse error %v does not wrap ErrMalformedEvidence", err)
			}
			return
		}
		if len(r.Nonce) != nvidia.NonceSize || len(r.Signature) != 96 || len(r.Signed)+96 != len(b) {
			t.Fatalf("parsed report with nonce %d, signature %d bytes", len(r.Nonce), len(r.Signature))
		}
	})
}

func FuzzParseChain(f *testing.F) {
	for _, c := range []string{"1", "2", "3", "4"} {
		f.Add(fixture(f, nvData+"hopper_cert_chain_case"+c+".txt"))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := nvidia.ParseChain(b); err != nil && !errors.Is(err, nvidia.ErrCertificate) {
			t.Fatalf("untyped chain error %v", err)
		}
	})
}

// FuzzEvaluate feeds whole evidence documents; none may verify or panic.
func FuzzEvaluate(f *testing.F) {
	d := fixtureDevice(f, "1")
	ev, _ := json.Marshal(nvidia.Evidence{Devices: []nvidia.Device{d}})
	f.Add(ev, []byte(d.Evidence[:200]))
	v := nvidia.New(nvidia.Options{})
	f.Fuzz(func(t *testing.T, b, report []byte) {
		if _, err := v.Evaluate(context.Background(), b, verifier.Expected{ReportData: []byte{1}}); err == nil {
			t.Fatal("fuzzed evidence verified")
		}
		d.Evidence = base64.StdEncoding.EncodeToString(report)
		if _, err := v.VerifyDevice(context.Background(), d, verifier.Expected{}); err == nil {
			t.Fatal("fuzzed report verified")
		}
	})
}
