package tpm_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"testing"

	vtpm "github.com/cocoon-cc/cocoon/attestation/verifier/tpm"
)

var benchSamples = []string{"rsa", "ecc"}

// BenchmarkVerifyTPM is the whole Evaluate: JSON, decoding, AK parsing,
// signature, PCR digest, nonce, initdata replay, claims.
func BenchmarkVerifyTPM(b *testing.B) {
	for _, name := range benchSamples {
		b.Run(name, func(b *testing.B) {
			s := loadSample(b, "swtpm-"+name+".json")
			v := vtpm.New(vtpm.Options{})
			for b.Loop() {
				if _, err := v.Evaluate(context.Background(), s.Evidence, s.expected()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkTPMSignatureFloor is the quote signature check alone (hash and
// public-key operation), the floor under BenchmarkVerifyTPM.
func BenchmarkTPMSignatureFloor(b *testing.B) {
	for _, name := range benchSamples {
		b.Run(name, func(b *testing.B) {
			rep, err := vtpm.ParseEvidence(loadSample(b, "swtpm-"+name+".json").Evidence)
			if err != nil {
				b.Fatal(err)
			}
			sig := rep.Signature
			for b.Loop() {
				h := sig.Hash.New()
				h.Write(rep.Message)
				digest := h.Sum(nil)
				switch key := rep.AK.(type) {
				case *rsa.PublicKey:
					err = rsa.VerifyPKCS1v15(key, sig.Hash, digest, sig.RSA)
				case *ecdsa.PublicKey:
					if !ecdsa.Verify(key, digest, sig.R, sig.S) {
						b.Fatal("ECDSA verification failed")
					}
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
