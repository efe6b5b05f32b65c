package cca

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha512"
	"math/big"
	"testing"

	"github.com/fxamacker/cbor/v2"
	"github.com/veraison/go-cose"

	"github.com/cocoon-cc/cocoon/attestation/verifier"
	"github.com/cocoon-cc/cocoon/attestation/verifier/cca/ccatest"
)

// BenchmarkVerifyCCA is the whole Evaluate of a live-challenge token: JSON,
// CBOR and COSE decoding, both signatures, the RAK binding, the reference
// values, the bindings and the claims.
func BenchmarkVerifyCCA(b *testing.B) {
	rd := make([]byte, 48)
	ev := ccatest.Evidence(mustToken(b, issuer(b), verifier.Fit(rd, 64)))
	v := fixtureVerifier(b)
	for b.Loop() {
		if _, err := v.Evaluate(context.Background(), ev, verifier.Expected{ReportData: rd}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCCASignatureFloor is the two signature checks alone (SHA-384 of
// each COSE Sig_structure and the ECDSA P-384 verification), the floor
// under BenchmarkVerifyCCA.
func BenchmarkCCASignatureFloor(b *testing.B) {
	tok, err := ParseToken(mustToken(b, issuer(b), make([]byte, 64)))
	if err != nil {
		b.Fatal(err)
	}
	ta, _ := fixtureVerifier(b).opts.TrustAnchors[string(tok.Platform.InstanceID)]
	rak, err := tok.Realm.rak()
	if err != nil {
		b.Fatal(err)
	}
	type check struct {
		key  *ecdsa.PublicKey
		tbs  []byte
		r, s *big.Int
	}
	var checks []check
	for _, c := range []struct {
		m   *cose.Sign1Message
		key *ecdsa.PublicKey
	}{{tok.PlatformMessage, ta.Key}, {tok.RealmMessage, rak}} {
		tbs, err := cbor.Marshal([]any{"Signature1", c.m.Headers.RawProtected, []byte{}, c.m.Payload})
		if err != nil {
			b.Fatal(err)
		}
		n := len(c.m.Signature) / 2
		checks = append(checks, check{c.key, tbs, new(big.Int).SetBytes(c.m.Signature[:n]), new(big.Int).SetBytes(c.m.Signature[n:])})
	}
	for b.Loop() {
		for _, c := range checks {
			d := sha512.Sum384(c.tbs)
			if !ecdsa.Verify(c.key, d[:], c.r, c.s) {
				b.Fatal("signature does not verify")
			}
		}
	}
}
