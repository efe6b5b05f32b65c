package nvidia_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha512"
	"crypto/x509"
	"encoding/hex"
	"math/big"
	"testing"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/nvidia"
)

// BenchmarkVerifyNvidia is the whole Evaluate of Trustee's Hopper report:
// JSON, hex, SPDM and opaque data parsing, the report signature, the
// certificate chain (four signatures), the FWID, the nonce and the claims.
func BenchmarkVerifyNvidia(b *testing.B) {
	nonce, _ := hex.DecodeString(fixtureNonce)
	ev := evidenceJSON(b, fixtureDevice(b, "1"))
	v := nvidia.New(nvidia.Options{})
	for b.Loop() {
		if _, err := v.Evaluate(context.Background(), ev, verifier.Expected{ReportData: nonce}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNvidiaSignatureFloor is the signature checks alone: the
// report's (SHA-384 and ECDSA P-384) and each certificate's signature by
// its issuer, the floor under BenchmarkVerifyNvidia.
func BenchmarkNvidiaSignatureFloor(b *testing.B) {
	d := fixtureDevice(b, "1")
	raw, _ := hex.DecodeString(d.Evidence)
	r, err := nvidia.ParseReport(raw)
	if err != nil {
		b.Fatal(err)
	}
	certs, err := nvidia.ParseChain(fixture(b, nvData+"hopper_cert_chain_case1.txt"))
	if err != nil {
		b.Fatal(err)
	}
	key := certs[0].PublicKey.(*ecdsa.PublicKey)
	sr, ss := new(big.Int).SetBytes(r.Signature[:48]), new(big.Int).SetBytes(r.Signature[48:])
	for b.Loop() {
		d := sha512.Sum384(r.Signed)
		if !ecdsa.Verify(key, d[:], sr, ss) {
			b.Fatal("report signature")
		}
		for i, c := range certs {
			parent := certs[min(i+1, len(certs)-1)]
			if err := parent.CheckSignature(x509.ECDSAWithSHA384, c.RawTBSCertificate, c.Signature); err != nil {
				b.Fatal(err)
			}
		}
	}
}
